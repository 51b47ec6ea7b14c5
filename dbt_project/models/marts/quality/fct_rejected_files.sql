{#- Files rejected as a whole (unreadable under their contract): no row of them was
    loaded. The file itself is in rejected/<partner>/ with a report. -#}
with

deliveries as (

    select * from {{ ref('fct_deliveries') }}

),

final as (

    select
        delivery_id,
        source_name,
        partner,
        file_name,
        batch,
        delivery_month,
        content_hash,
        size_bytes,
        loaded_at as rejected_at,
        run_id,
        rejection_reason

    from deliveries
    where is_rejected

)

select * from final
