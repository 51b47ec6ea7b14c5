{#- Survival and jobs of incubated ventures by programme, cohort, the venture's region
    and the promoter's sex, age band and vulnerability tercile (current registry).
    Survival at 12 (24) months = ventures reported active then / ventures whose status
    then is known (active or closed); ventures not yet followed up, or reported
    `unknown`, are left out of that rate. Jobs are reported at those follow-ups: jobs per
    venture = jobs created / ventures whose jobs are reported (a venture not followed up
    yet has no jobs figure, which is not zero jobs; null when none is reported). -#}
with

ventures as (

    select * from {{ ref('fct_ventures') }}

),

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}
    where is_current

),

attributed as (

    select
        ventures.*,
        coalesce(beneficiaries.sex, 'unknown') as sex,
        coalesce(beneficiaries.age_band, 'unknown') as age_band,
        coalesce(beneficiaries.vulnerability_tercile, 0) as vulnerability_tercile

    from ventures
    left join beneficiaries
        on ventures.promoter_person_key = beneficiaries.person_key

),

final as (

    select
        programme_code,
        cohort,
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        count(*) as ventures,
        {{ jisr.count_if('survived_12m is not null') }} as ventures_followed_12m,
        {{ jisr.count_if('survived_12m') }} as ventures_active_12m,
        {{ jisr.safe_divide(jisr.count_if('survived_12m'), jisr.count_if('survived_12m is not null')) }}
            as survival_rate_12m,
        {{ jisr.count_if('survived_24m is not null') }} as ventures_followed_24m,
        {{ jisr.count_if('survived_24m') }} as ventures_active_24m,
        {{ jisr.safe_divide(jisr.count_if('survived_24m'), jisr.count_if('survived_24m is not null')) }}
            as survival_rate_24m,
        coalesce({{ jisr.sum_counts('jobs_created') }}, 0) as jobs_created,
        {{ jisr.safe_divide('sum(jobs_created)', 'count(jobs_created)') }} as jobs_per_venture,
        sum(revenue_mad) as revenue_mad

    from attributed
    group by
        programme_code,
        cohort,
        region_code,
        sex,
        age_band,
        vulnerability_tercile

)

select * from final
