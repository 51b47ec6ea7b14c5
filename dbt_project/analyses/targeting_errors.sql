-- Targeting errors of each programme with an eligibility score rule, by vulnerability tercile.
--   jisr sql -f dbt_project/analyses/targeting_errors.sql
--
-- Inclusion error: people reached whose score is above the programme's threshold, over the
-- people reached. Exclusion error: eligible people (score at or below the threshold) not
-- reached, over the eligible people. Counts of suppressed cells (fewer than 10 people) are
-- NULL and left out: suppressed_cells > 0 means the rates describe the published cells.
with

coverage as (

    select * from {{ ref('mart_coverage_targeting').include(database=false) }}
    where eligibility_score_max is not null

),

final as (

    select
        programme_code,
        vulnerability_tercile,
        max(eligibility_score_max) as eligibility_score_max,
        sum(beneficiaries_reached) as beneficiaries_reached,
        sum(reached_above_threshold) as reached_above_threshold,
        1.0 * sum(reached_above_threshold) / nullif(sum(beneficiaries_reached), 0) as inclusion_error_rate,
        sum(eligible_population) as eligible_population,
        sum(eligible_not_reached) as eligible_not_reached,
        1.0 * sum(eligible_not_reached) / nullif(sum(eligible_population), 0) as exclusion_error_rate,
        sum(case when is_suppressed then 1 else 0 end) as suppressed_cells

    from coverage
    group by programme_code, vulnerability_tercile

)

select * from final
order by programme_code, vulnerability_tercile
