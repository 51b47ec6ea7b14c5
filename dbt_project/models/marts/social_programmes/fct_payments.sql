{#- Benefit payments, incremental by payment month: a new month is appended; a corrected
    re-delivery of a month (replace_batch) replaces that month as a whole; a month with no
    current payment any more is removed; other months are not rebuilt.
    `dbt build --full-refresh` rebuilds everything. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=jisr.incremental_strategy('replace_period'),
        unique_key='payment_month',
        partition_by=('payment_month' if target.type == 'spark' else none),
        on_schema_change='append_new_columns',
        post_hook=["{{ jisr.delete_vanished(ref('stg_msisf__payments'), 'payment_month') }}"],
    )
}}

with

payments as (

    select * from {{ ref('stg_msisf__payments') }}
    {%- if is_incremental() %}
    where payment_month in ({{ jisr.changed_periods(ref('stg_msisf__payments'), 'payment_month') }})
    {%- endif %}

),

final as (

    select
        payment_id,
        enrolment_id,
        person_key,
        programme_code,
        payment_month,
        paid_date,
        amount_mad,
        payment_channel,
        _delivery_id,
        _batch,
        _loaded_at,
        {{ jisr.build_lineage_columns() }}

    from payments

)

select * from final
