{#- The reference date of every "as of" figure (ages and age bands, enrolment status,
    days past due, venture follow-up): the last day of the last delivered month, computed
    once in int_reference_dates. `--vars '{reference_date: "YYYY-MM-DD"}'` pins it. -#}
{% macro reference_date() -%}
    {%- if var('reference_date', none) -%}
        cast('{{ var("reference_date") }}' as date)
    {%- else -%}
        (select reference_date from {{ ref('int_reference_dates') }})
    {%- endif -%}
{%- endmacro %}
