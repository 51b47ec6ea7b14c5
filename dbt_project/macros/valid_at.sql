{#- Join condition: the version of a tracked history (a model with valid_from and valid_to,
    valid_to null for the version in effect; int_beneficiary_versions_tracked,
    int_establishment_capacities_tracked) that is valid at a date: valid_from included,
    valid_to excluded. -#}
{% macro valid_at(versions, date_expr) -%}
    {{ date_expr }} >= {{ versions }}.valid_from
        and ({{ versions }}.valid_to is null or {{ date_expr }} < {{ versions }}.valid_to)
{%- endmacro %}
