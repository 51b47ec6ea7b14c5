-- No establishment reports more residents than its places that month allow, give or take
-- overcrowding (var max_occupancy_rate, dbt_project.yml). The occupancy file and the
-- establishments registry each pass their own rules, but 8900 residents in 105 places
-- (a figure typed twice, a code of another establishment) made an occupancy rate of 85
-- reach the occupancy mart.
-- Reported in Dagster as a check of fct_establishment_occupancy (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'fct_establishment_occupancy'}}}) }}
{%- set max_rate = var('max_occupancy_rate') %}
with

occupancy as (

    select * from {{ ref('fct_establishment_occupancy') }}

),

capacities as (

    select * from {{ ref('int_establishment_capacities_tracked') }}

)

select
    occupancy.establishment_id,
    occupancy.report_month,
    occupancy._batch as occupancy_file_month,
    occupancy._delivery_id,
    occupancy.residents,
    capacities.capacity

from occupancy
inner join capacities
    on occupancy.establishment_id = capacities.establishment_id
    and {{ valid_at('capacities', 'occupancy.month_start_date') }}
where occupancy.residents > capacities.capacity * {{ max_rate }}
