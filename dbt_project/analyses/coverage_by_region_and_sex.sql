-- Coverage of each programme by region and sex, on the reference date of the last refresh.
--   jisr sql -f dbt_project/analyses/coverage_by_region_and_sex.sql
--
-- marts.mart_coverage_targeting has one row per programme x region x sex x age band x
-- vulnerability tercile. Cells of fewer than 10 people are suppressed (is_suppressed: counts
-- and rates NULL), so sums over published cells are lower bounds when suppressed_cells > 0,
-- and the rates below are those of the published cells.
with

coverage as (

    select * from {{ ref('mart_coverage_targeting').include(database=false) }}

),

regions as (

    select distinct
        region_code,
        region_name_fr

    from {{ ref('dim_geography').include(database=false) }}

),

by_region_and_sex as (

    select
        programme_code,
        region_code,
        sex,
        sum(registered_population) as registered_population,
        sum(eligible_population) as eligible_population,
        sum(beneficiaries_reached) as beneficiaries_reached,
        sum(eligible_reached) as eligible_reached,
        count(*) as cells,
        sum(case when is_suppressed then 1 else 0 end) as suppressed_cells

    from coverage
    group by programme_code, region_code, sex

),

final as (

    select
        by_region_and_sex.programme_code,
        by_region_and_sex.region_code,
        regions.region_name_fr,
        by_region_and_sex.sex,
        by_region_and_sex.registered_population,
        by_region_and_sex.eligible_population,
        by_region_and_sex.beneficiaries_reached,
        by_region_and_sex.eligible_reached,
        1.0 * by_region_and_sex.eligible_reached / nullif(by_region_and_sex.eligible_population, 0) as coverage_rate,
        1.0 * by_region_and_sex.beneficiaries_reached / nullif(by_region_and_sex.registered_population, 0) as reach_rate,
        by_region_and_sex.cells,
        by_region_and_sex.suppressed_cells

    from by_region_and_sex
    left join regions
        on by_region_and_sex.region_code = regions.region_code

)

select * from final
order by programme_code, region_code, sex
