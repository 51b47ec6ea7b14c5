{#- Conformed beneficiary dimension with history. Age and age band are as of the
    reference date; the vulnerability tercile places each version's score against the
    cut points of the current registry (tercile 1 = poorest third, lower score = poorer). -#}
with

beneficiary_versions as (

    select * from {{ ref('int_beneficiary_versions_tracked') }}

),

current_registry as (

    select * from beneficiary_versions
    where is_current

),

tercile_cut_points as (

    select
        {{ jisr.percentile_cont('socio_economic_score', 1 / 3) }} as first_cut_point,
        {{ jisr.percentile_cont('socio_economic_score', 2 / 3) }} as second_cut_point

    from current_registry

),

aged as (

    select
        beneficiary_versions.*,
        {{ jisr.age_in_years('beneficiary_versions.birth_date', jisr.reference_date()) }} as age_years

    from beneficiary_versions

),

final as (

    select
        aged.beneficiary_version_id,
        aged.person_key,
        aged.version_number,
        aged.sex,
        aged.birth_date,
        aged.age_years,
        {{ jisr.age_band('aged.age_years') }} as age_band,
        aged.region_code,
        aged.province_code,
        aged.commune_code,
        aged.area_type,
        aged.household_key,
        aged.socio_economic_score,
        case
            when aged.socio_economic_score is null then null
            when aged.socio_economic_score <= tercile_cut_points.first_cut_point then 1
            when aged.socio_economic_score <= tercile_cut_points.second_cut_point then 2
            else 3
        end as vulnerability_tercile,
        aged.has_disability,
        aged.registered_date,
        aged.valid_from,
        aged.valid_to,
        aged.is_current,
        aged.first_seen_batch,
        aged.first_seen_delivery_id

    from aged
    cross join tercile_cut_points

)

select * from final
