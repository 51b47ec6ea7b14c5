-- Impact estimates of a programme: every outcome and estimator, whole sample and subgroups.
--   jisr sql -f dbt_project/analyses/programme_impact_estimates.sql
-- To look at one programme, add `where programme_code = 'XXX-01'` before the final `order by`.
--
-- Written by the impact stage (config/evaluation.yml): estimate with its standard error and
-- confidence interval, the number of treated and comparison units, and the cost per unit of
-- impact where it is defined. Rows that could not be estimated keep their status and reason.
-- The impact tables are written by the Python impact stage, not by dbt: their schema is the
-- dbt var `impact_schema` (default `impact`).
--
-- Which row to read: the estimators answer under different assumptions, and they disagree
-- when the comparison group differs from the treated one. The rows of each outcome come in
-- the order the evaluation report (var/reports/<run id>/impact/) picks its headline from:
-- inverse-probability-weighted difference-in-differences (ipw_did: the groups made alike on
-- baseline covariates, then their trends compared), ANCOVA with covariates, plain DiD
-- (parallel trends assumed), ANCOVA, the endline difference in means (valid when assignment
-- was random), the event study; the report's summary says when a pre-trend test makes it
-- prefer an estimator adjusted for covariates.
with

estimates as (

    select * from {{ var('impact_schema', 'impact') }}.impact_estimates

),

cost_effectiveness as (

    select * from {{ var('impact_schema', 'impact') }}.impact_cost_effectiveness

),

final as (

    select
        estimates.programme_code,
        estimates.study_id,
        estimates.outcome,
        estimates.estimator,
        estimates.subgroup,
        estimates.estimate,
        estimates.std_error,
        estimates.ci_low,
        estimates.ci_high,
        estimates.p_value,
        estimates.n_treated,
        estimates.n_comparison,
        cost_effectiveness.cost_per_unit_impact_mad,
        estimates.status,
        estimates.reason

    from estimates
    left join cost_effectiveness
        on estimates.study_id = cost_effectiveness.study_id
        and estimates.programme_code = cost_effectiveness.programme_code
        and estimates.outcome = cost_effectiveness.outcome
        and estimates.estimator = cost_effectiveness.estimator
        and estimates.subgroup = 'all'

)

select * from final
order by
    programme_code,
    study_id,
    outcome,
    subgroup <> 'all',
    subgroup,
    case estimator
        when 'ipw_did' then 1
        when 'ancova_covariates' then 2
        when 'did' then 3
        when 'ancova' then 4
        when 'diff_in_means' then 5
        when 'event_study' then 6
        else 7
    end,
    estimator
