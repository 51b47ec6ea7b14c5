{#- Service requests in their latest known state, with processing time for closed ones
    (resolved or rejected). Incremental by request: a request whose current record is not
    the one the fact holds is replaced (latest_per_key), a request with no current record
    any more is removed, others are not rebuilt. -#}
{{
    config(
        materialized=jisr.incremental_materialization('upsert_key'),
        incremental_strategy=jisr.incremental_strategy('upsert_key'),
        unique_key='request_id',
        on_schema_change='append_new_columns',
        post_hook=["{{ jisr.delete_vanished(ref('stg_digital__service_requests'), 'request_id') }}"],
    )
}}

with

service_requests as (

    select * from {{ ref('stg_digital__service_requests') }}
    {%- if is_incremental() %}
    where request_id in ({{ jisr.changed_keys(ref('stg_digital__service_requests'), 'request_id') }})
    {%- endif %}

),

final as (

    select
        request_id,
        applicant_person_key,
        service_type,
        channel,
        region_code,
        request_status,
        submitted_at,
        cast(submitted_at as date) as submitted_date,
        {{ jisr.month_text('submitted_at') }} as submitted_month,
        resolved_at,
        {{ jisr.month_text('resolved_at') }} as resolved_month,
        resolved_at is not null as is_closed,
        {{ jisr.hours_between('submitted_at', 'resolved_at') }} as processing_hours,
        _delivery_id,
        _batch,
        _loaded_at,
        {{ jisr.build_lineage_columns() }}

    from service_requests

)

select * from final
