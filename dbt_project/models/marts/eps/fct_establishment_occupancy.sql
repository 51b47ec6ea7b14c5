{#- Monthly occupancy reports, incremental by month: a new month is appended, a corrected
    re-delivery of a month replaces it, earlier months are not rebuilt. Capacity and works
    periods come from dim_establishments when the marts are built. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy=jisr.incremental_strategy('replace_period'),
        unique_key='report_month',
        partition_by=('report_month' if target.type == 'spark' else none),
        on_schema_change='append_new_columns',
    )
}}

with

occupancy_reports as (

    select * from {{ ref('stg_eps__occupancy_reports') }}
    {%- if is_incremental() %}
    where report_month in (
        select report_month from {{ ref('stg_eps__occupancy_reports') }}
        where {{ jisr.loaded_since_last_refresh() }}
    )
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
