{#- Every row satisfies a SQL predicate (rows where it is false are failures; null counts
    as true, so optional columns only fail when set). -#}
{% test expression_is_true(model, expression) %}

select * from {{ model }}
where not coalesce(({{ expression }}), true)

{% endtest %}
