{#- Parts of a text signature of several columns (nulls made explicit), to compare rows
    for changes with plain equality on every engine. Use with dbt.concat. -#}
{% macro sql_signature_parts(columns) -%}
    {%- set parts = [] -%}
    {%- for column in columns -%}
        {%- if not loop.first -%}{%- do parts.append("'|'") -%}{%- endif -%}
        {%- do parts.append("coalesce(cast(" ~ column ~ " as " ~ dbt.type_string() ~ "), '~')") -%}
    {%- endfor -%}
    {{ return(parts) }}
{%- endmacro %}
