{#- The combination of columns is unique (the primary key of a model with a composite
    grain). Nulls count as values, so two rows that differ only by null cells fail. -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set columns_csv = combination_of_columns | join(', ') %}

with

grouped as (

    select
        {{ columns_csv }},
        count(*) as n_records

    from {{ model }}
    group by {{ columns_csv }}

)

select * from grouped
where n_records > 1

{% endtest %}
