{#- None of the columns holds a null. One test per model instead of one `not_null` test per
    column: the same promise, read in one scan of the model, and one dbt node and one Dagster
    asset check instead of one per column (each costs a fixed ~30 ms in dbt and three events
    in Dagster's run log, whatever the size of the table).
    A failure returns one row per column that holds nulls (column_name, null_rows); the
    failure count dbt reports is the number of null cells. -#}
{% test not_null_columns(model, column_names) %}

{{ config(fail_calc='coalesce(sum(null_rows), 0)') }}

with

counted as (

    select
    {%- for column in column_names %}
        sum(case when {{ column }} is null then 1 else 0 end) as {{ column }}{{ "," if not loop.last }}
    {%- endfor %}

    from {{ model }}

)
{% for column in column_names %}
select '{{ column }}' as column_name, {{ column }} as null_rows from counted where {{ column }} > 0
{% if not loop.last %}union all{% endif %}
{%- endfor %}

{% endtest %}
