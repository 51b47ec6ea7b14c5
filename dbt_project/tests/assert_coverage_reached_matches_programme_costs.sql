-- People reached by a programme are the same in the coverage mart (people of the current
-- registry) and in the programme costs: nobody takes part without being registered.
-- Reported in Dagster as a check of mart_coverage_targeting (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'mart_coverage_targeting'}}}) }}
with

coverage as (

    select
        programme_code,
        sum(beneficiaries_reached) as beneficiaries_reached

    from {{ ref('mart_coverage_targeting') }}
    group by programme_code

),

costs as (

    select * from {{ ref('mart_programme_costs') }}

)

select
    costs.programme_code,
    costs.beneficiaries_reached as reached_in_costs,
    coverage.beneficiaries_reached as reached_in_coverage

from costs
left join coverage
    on costs.programme_code = coverage.programme_code
where coalesce(coverage.beneficiaries_reached, 0) <> costs.beneficiaries_reached
