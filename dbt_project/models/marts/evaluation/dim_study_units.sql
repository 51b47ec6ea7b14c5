{#- Units of the impact-evaluation studies with their group, unit of assignment and
    baseline covariates. Units assigned individually are their own cluster. The
    vulnerability tercile places the baseline score against the cut points of the units
    of the same study (1 = poorest third). -#}
with

units as (

    select * from {{ ref('stg_surveys__units') }}

),

tercile_cut_points as (

    select
        study_id,
        {{ jisr.percentile_cont('vulnerability_score', 1 / 3) }} as first_cut_point,
        {{ jisr.percentile_cont('vulnerability_score', 2 / 3) }} as second_cut_point

    from units
    group by study_id

),

final as (

    select
        {{ dbt.concat(['units.study_id', "'/'", 'units.unit_id']) }} as study_unit_id,
        units.study_id,
        units.unit_id,
        units.unit_type,
        units.person_key,
        units.programme_code,
        units.treatment_group,
        units.treatment_group = 'treated' as is_treated,
        coalesce(units.cluster_id, units.unit_id) as cluster_id,
        units.sex,
        units.age,
        {{ jisr.age_band('units.age') }} as age_band,
        units.region_code,
        units.vulnerability_score,
        case
            when units.vulnerability_score is null then null
            when units.vulnerability_score <= tercile_cut_points.first_cut_point then 1
            when units.vulnerability_score <= tercile_cut_points.second_cut_point then 2
            else 3
        end as vulnerability_tercile,
        units._delivery_id,
        units._batch

    from units
    left join tercile_cut_points
        on units.study_id = tercile_cut_points.study_id

)

select * from final
