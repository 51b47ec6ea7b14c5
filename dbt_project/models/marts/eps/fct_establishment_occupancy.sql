{#- Monthly occupancy reports, incremental by month: a new month is appended, a corrected
    re-delivery of a month replaces it, a month with no current report any more is
    removed, other months are not rebuilt. Capacity and works periods come from
    dim_establishments when the marts are built. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=jisr.incremental_strategy('replace_period'),
        unique_key='report_month',
        partition_by=('report_month' if target.type == 'spark' else none),
        on_schema_change='append_new_columns',
        post_hook=["{{ jisr.delete_vanished(ref('stg_eps__occupancy_reports'), 'report_month') }}"],
    )
}}

with

occupancy_reports as (

    select * from {{ ref('stg_eps__occupancy_reports') }}
    {%- if is_incremental() %}
    where report_month in ({{ jisr.changed_periods(ref('stg_eps__occupancy_reports'), 'report_month') }})
    {%- endif %}

),

final as (

    select
        {{ dbt.concat(['establishment_id', "'/'", 'report_month']) }} as occupancy_report_id,
        establishment_id,
        report_month,
        {{ jisr.month_start_of_text('report_month') }} as month_start_date,
        residents,
        admissions,
        departures,
        inspection_score,
        inspection_score is not null as has_inspection,
        _delivery_id,
        _batch,
        _loaded_at,
        {{ jisr.build_lineage_columns() }}

    from occupancy_reports

)

select * from final
