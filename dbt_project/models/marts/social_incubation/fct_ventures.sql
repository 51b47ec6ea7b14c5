{#- Incubated ventures with their follow-up: survival is known at 12 (24) months when the
    partner reports the venture active or closed then; `unknown` or a missing status is
    not counted as a failure. -#}
with

ventures as (

    select * from {{ ref('stg_cdg_incubation__ventures') }}

),

final as (

    select
        venture_id,
        promoter_person_key,
        programme_code,
        venture_name,
        legal_form,
        sector,
        cohort,
        region_code,
        incubation_start_date,
        incubation_end_date,
        {{ jisr.months_between(jisr.month_start('incubation_start_date'), jisr.month_start(jisr.reference_date())) }}
            as months_since_start,
        status_12m,
        status_24m,
        case when status_12m = 'active' then true when status_12m = 'closed' then false end as survived_12m,
        case when status_24m = 'active' then true when status_24m = 'closed' then false end as survived_24m,
        jobs_created,
        revenue_mad,
        _delivery_id,
        _batch

    from ventures

)

select * from final
