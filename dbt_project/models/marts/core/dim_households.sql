{#- Households of the current registry. A household's place is that of its members (the
    registry gives every member the household's address); its score is the mean of its
    members' scores, and its tercile places that mean against the cut points of all
    current households (1 = poorest third). -#}
with

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}
    where is_current

),

aggregated as (

    select
        household_key,
        count(*) as members_count,
        {{ jisr.count_if("sex = 'F'") }} as women_count,
        {{ jisr.count_if('age_years < 18') }} as children_count,
        {{ jisr.count_if('age_years >= 65') }} as elderly_count,
        {{ jisr.count_if('has_disability') }} as members_with_disability_count,
        max(region_code) as region_code,
        max(province_code) as province_code,
        max(commune_code) as commune_code,
        max(area_type) as area_type,
        {{ jisr.exact_avg('socio_economic_score') }} as socio_economic_score,
        min(registered_date) as first_registered_date

    from beneficiaries
    group by household_key

),

tercile_cut_points as (

    select
        {{ jisr.percentile_cont('socio_economic_score', 1 / 3) }} as first_cut_point,
        {{ jisr.percentile_cont('socio_economic_score', 2 / 3) }} as second_cut_point

    from aggregated

),

final as (

    select
        aggregated.household_key,
        aggregated.members_count,
        aggregated.women_count,
        aggregated.children_count,
        aggregated.elderly_count,
        aggregated.members_with_disability_count,
        aggregated.members_with_disability_count > 0 as has_member_with_disability,
        aggregated.region_code,
        aggregated.province_code,
        aggregated.commune_code,
        aggregated.area_type,
        aggregated.socio_economic_score,
        case
            when aggregated.socio_economic_score <= tercile_cut_points.first_cut_point then 1
            when aggregated.socio_economic_score <= tercile_cut_points.second_cut_point then 2
            else 3
        end as vulnerability_tercile,
        aggregated.first_registered_date

    from aggregated
    cross join tercile_cut_points

)

select * from final
