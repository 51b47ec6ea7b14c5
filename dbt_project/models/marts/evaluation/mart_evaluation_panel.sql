{#- Panel-ready evaluation table consumed by the impact stage: every unit of a study in
    every round and for every variable the study measured, with its group, unit of
    assignment and baseline covariates. A unit not measured in a round (attrition) keeps
    its rows, with a null value. -#}
with

units as (

    select * from {{ ref('dim_study_units') }}

),

measurements as (

    select * from {{ ref('fct_outcome_measurements') }}

),

study_rounds as (

    select
        study_id,
        round_index,
        max(round_label) as round_label

    from measurements
    group by study_id, round_index

),

study_variables as (

    select distinct
        study_id,
        variable

    from measurements

),

grid as (

    select
        units.study_unit_id,
        units.study_id,
        units.programme_code,
        units.unit_id,
        units.unit_type,
        units.person_key,
        units.treatment_group,
        units.is_treated,
        units.cluster_id,
        units.sex,
        units.age,
        units.age_band,
        units.region_code,
        units.vulnerability_score,
        units.vulnerability_tercile,
        study_rounds.round_index,
        study_rounds.round_label,
        study_variables.variable

    from units
    inner join study_rounds
        on units.study_id = study_rounds.study_id
    inner join study_variables
        on units.study_id = study_variables.study_id

),

final as (

    select
        grid.study_id,
        grid.programme_code,
        grid.unit_id,
        grid.unit_type,
        grid.person_key,
        grid.treatment_group,
        grid.is_treated,
        grid.cluster_id,
        grid.sex,
        grid.age,
        grid.age_band,
        grid.region_code,
        grid.vulnerability_score,
        grid.vulnerability_tercile,
        grid.round_index,
        grid.round_label,
        grid.variable,
        measurements.value

    from grid
    left join measurements
        on grid.study_unit_id = measurements.study_unit_id
        and grid.round_index = measurements.round_index
        and grid.variable = measurements.variable

)

select * from final
