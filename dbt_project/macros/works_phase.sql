{#- Phase of modernisation works of an establishment in a month: a month that ends before
    the works start is 'before_works', one that starts after they end 'after_works', one
    that overlaps them 'during_works' (works without an end date are still running);
    'no_works' when the establishment has none. -#}
{% macro works_phase(month_start_date, works_start_date, works_end_date) -%}
    case
        when {{ works_start_date }} is null then 'no_works'
        when {{ jisr.month_end(month_start_date) }} < {{ works_start_date }} then 'before_works'
        when {{ works_end_date }} is not null and {{ month_start_date }} > {{ works_end_date }} then 'after_works'
        else 'during_works'
    end
{%- endmacro %}
