{#- Survival and jobs of each programme's incubation cohorts: the totals of
    mart_incubation_cohorts's cells (every region and promoter cell of the cohort), with
    the rates recomputed from them. The cell table's disclosure control treats these totals
    as known already (config/disclosure.yml), so publishing them hides nothing more there;
    a cohort counting fewer than 10 ventures in one of its counts is suppressed here. -#}
with

cells as (

    select * from {{ ref('mart_incubation_cohorts') }}

),

final as (

    select
        programme_code,
        cohort,
        {{ jisr.sum_counts('ventures') }} as ventures,
        {{ jisr.sum_counts('ventures_followed_12m') }} as ventures_followed_12m,
        {{ jisr.sum_counts('ventures_active_12m') }} as ventures_active_12m,
        {{ jisr.safe_divide('sum(ventures_active_12m)', 'sum(ventures_followed_12m)') }} as survival_rate_12m,
        {{ jisr.sum_counts('ventures_followed_24m') }} as ventures_followed_24m,
        {{ jisr.sum_counts('ventures_active_24m') }} as ventures_active_24m,
        {{ jisr.safe_divide('sum(ventures_active_24m)', 'sum(ventures_followed_24m)') }} as survival_rate_24m,
        {{ jisr.sum_counts('jobs_created') }} as jobs_created,
        {{ jisr.safe_divide('sum(jobs_created)', 'sum(ventures)') }} as jobs_per_venture,
        sum(revenue_mad) as revenue_mad

    from cells
    group by
        programme_code,
        cohort

)

select * from final
