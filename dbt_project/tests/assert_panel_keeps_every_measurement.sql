-- Every delivered measurement of a known study unit is in the evaluation panel with its
-- value, and the panel has exactly units x rounds x variables rows per study.
-- Reported in Dagster as a check of mart_evaluation_panel (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'mart_evaluation_panel'}}}) }}
with

measurements as (

    select * from {{ ref('fct_outcome_measurements') }}

),

units as (

    select * from {{ ref('dim_study_units') }}

),

panel as (

    select * from {{ ref('mart_evaluation_panel') }}

),

missing_measurements as (

    select
        measurements.study_id,
        'measurement missing from the panel' as problem

    from measurements
    inner join units
        on measurements.study_unit_id = units.study_unit_id
    left join panel
        on measurements.study_id = panel.study_id
        and measurements.unit_id = panel.unit_id
        and measurements.round_index = panel.round_index
        and measurements.variable = panel.variable
    where panel.study_id is null
       or not (measurements.value = panel.value or (measurements.value is null and panel.value is null))

),

expected_sizes as (

    select
        units.study_id,
        count(*) * max(shape.rounds_count) * max(shape.variables_count) as expected_rows

    from units
    inner join (
        select
            study_id,
            count(distinct round_index) as rounds_count,
            count(distinct variable) as variables_count
        from measurements
        group by study_id
    ) as shape
        on units.study_id = shape.study_id
    group by units.study_id

),

panel_sizes as (

    select
        study_id,
        count(*) as panel_rows

    from panel
    group by study_id

),

wrong_sizes as (

    select
        expected_sizes.study_id,
        'panel size is not units x rounds x variables' as problem

    from expected_sizes
    left join panel_sizes
        on expected_sizes.study_id = panel_sizes.study_id
    where coalesce(panel_sizes.panel_rows, 0) <> expected_sizes.expected_rows

)

select * from missing_measurements
union all
select * from wrong_sizes
