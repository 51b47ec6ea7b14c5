{#- Every delivered file with what became of it. The delivery month is the batch when the
    batch is a month (YYYY-MM), else the month the file was received. The delivery lag is
    the number of days between the end of the batch month and the file's arrival: when
    ingestion first saw it in the landing area (received_at, the same clock for loaded and
    rejected files), not its modification time (modified_at), which copies that keep times
    carry from the partner's machine. -#}
with

deliveries as (

    select * from {{ ref('stg_ingest__deliveries') }}

),

months as (

    select
        deliveries.*,
        -- a calendar month only: a file named for month 13 is rejected, and its batch kept as delivered
        case when batch like '____-__' and substr(batch, 6, 2) between '01' and '12' then batch end as batch_month,
        coalesce(received_at, loaded_at) as arrived_at

    from deliveries

),

final as (

    select
        delivery_id,
        source as source_name,
        partner,
        file_name,
        batch,
        batch_month,
        coalesce(batch_month, {{ jisr.month_text('arrived_at') }}) as delivery_month,
        content_hash,
        size_bytes,
        received_at,
        modified_at,
        loaded_at,
        run_id,
        status as delivery_status,
        status = 'rejected' as is_rejected,
        status = 'superseded' as is_superseded,
        superseded_by as superseded_by_delivery_id,
        case when status = 'rejected' then reason end as rejection_reason,
        coalesce(rows_delivered, 0) as delivered_rows_count,
        coalesce(rows_loaded, 0) as loaded_rows_count,
        coalesce(rows_quarantined, 0) as quarantined_rows_count,
        contract_version,
        code_version,
        case
            when batch_month is not null
                then {{ jisr.days_between(jisr.month_end(jisr.month_start_of_text('batch_month')), 'arrived_at') }}
        end as delivery_lag_days

    from months

)

select * from final
