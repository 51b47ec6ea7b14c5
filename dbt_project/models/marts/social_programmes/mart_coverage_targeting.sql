{#- Coverage and targeting of each programme against the current registry, on the
    reference date, by region, sex, age band and vulnerability tercile of the person.
    - registered_population: people in the current registry;
    - eligible_population: of them, those whose score is at or below the programme's
      eligibility threshold (null for programmes without a score rule);
    - beneficiaries_reached: registered people who ever took part in the programme
      (enrolment, loan or venture started on or before the reference date);
    - inclusion error = reached people above the threshold / reached people;
    - exclusion error = eligible people not reached / eligible people.
    Counts add up across cells (each person is in one cell); rates do not. -#}
with

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}
    where is_current

),

programmes as (

    select * from {{ ref('dim_programmes') }}

),

participations as (

    select * from {{ ref('int_programme_participations_unioned') }}

),

reached_people as (

    select distinct
        programme_code,
        person_key

    from participations
    where start_date <= {{ jisr.reference_date() }}

),

registry_cells as (

    select
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        count(*) as registered_population

    from beneficiaries
    group by region_code, sex, age_band, vulnerability_tercile

),

eligible_cells as (

    select
        programmes.programme_code,
        beneficiaries.region_code,
        beneficiaries.sex,
        beneficiaries.age_band,
        beneficiaries.vulnerability_tercile,
        count(*) as eligible_population

    from beneficiaries
    inner join programmes
        on beneficiaries.socio_economic_score <= programmes.eligibility_score_max
    group by
        programmes.programme_code,
        beneficiaries.region_code,
        beneficiaries.sex,
        beneficiaries.age_band,
        beneficiaries.vulnerability_tercile

),

reached_cells as (

    select
        reached_people.programme_code,
        beneficiaries.region_code,
        beneficiaries.sex,
        beneficiaries.age_band,
        beneficiaries.vulnerability_tercile,
        count(*) as beneficiaries_reached,
        {{ jisr.count_if('beneficiaries.socio_economic_score <= programmes.eligibility_score_max') }} as eligible_reached,
        {{ jisr.count_if('beneficiaries.socio_economic_score > programmes.eligibility_score_max') }} as reached_above_threshold

    from reached_people
    inner join beneficiaries
        on reached_people.person_key = beneficiaries.person_key
    inner join programmes
        on reached_people.programme_code = programmes.programme_code
    group by
        reached_people.programme_code,
        beneficiaries.region_code,
        beneficiaries.sex,
        beneficiaries.age_band,
        beneficiaries.vulnerability_tercile

),

cells as (

    select
        programmes.programme_code,
        programmes.action_line,
        programmes.has_eligibility_rule,
        programmes.eligibility_score_max,
        registry_cells.region_code,
        registry_cells.sex,
        registry_cells.age_band,
        registry_cells.vulnerability_tercile,
        registry_cells.registered_population

    from programmes
    cross join registry_cells

),

counted as (

    select
        cells.programme_code,
        cells.action_line,
        cells.region_code,
        cells.sex,
        cells.age_band,
        cells.vulnerability_tercile,
        cells.eligibility_score_max,
        cells.registered_population,
        case when cells.has_eligibility_rule then coalesce(eligible_cells.eligible_population, 0) end
            as eligible_population,
        coalesce(reached_cells.beneficiaries_reached, 0) as beneficiaries_reached,
        case when cells.has_eligibility_rule then coalesce(reached_cells.eligible_reached, 0) end
            as eligible_reached,
        case when cells.has_eligibility_rule then coalesce(reached_cells.reached_above_threshold, 0) end
            as reached_above_threshold

    from cells
    left join eligible_cells
        on cells.programme_code = eligible_cells.programme_code
        and cells.region_code = eligible_cells.region_code
        and cells.sex = eligible_cells.sex
        and cells.age_band = eligible_cells.age_band
        and cells.vulnerability_tercile = eligible_cells.vulnerability_tercile
    left join reached_cells
        on cells.programme_code = reached_cells.programme_code
        and cells.region_code = reached_cells.region_code
        and cells.sex = reached_cells.sex
        and cells.age_band = reached_cells.age_band
        and cells.vulnerability_tercile = reached_cells.vulnerability_tercile

),

final as (

    select
        programme_code,
        action_line,
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        eligibility_score_max,
        registered_population,
        eligible_population,
        beneficiaries_reached,
        eligible_reached,
        reached_above_threshold,
        eligible_population - eligible_reached as eligible_not_reached,
        {{ jisr.safe_divide('eligible_reached', 'eligible_population') }} as coverage_rate,
        {{ jisr.safe_divide('beneficiaries_reached', 'registered_population') }} as reach_rate,
        case when eligibility_score_max is not null
            then {{ jisr.safe_divide('reached_above_threshold', 'beneficiaries_reached') }}
        end as inclusion_error_rate,
        {{ jisr.safe_divide('eligible_population - eligible_reached', 'eligible_population') }} as exclusion_error_rate

    from counted

)

select * from final
