{#- Double-precision floating point type (dbt's type_float is 32-bit FLOAT on DuckDB). -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'jisr')()) }}
{%- endmacro %}

{% macro default__type_double() -%}double precision{%- endmacro %}
{% macro duckdb__type_double() -%}double{%- endmacro %}
{% macro spark__type_double() -%}double{%- endmacro %}

{#- Money in MAD: exact decimal with two places. -#}
{% macro type_money() -%}decimal(18, 2){%- endmacro %}

{#- Cast an expression to double precision. -#}
{% macro to_double(expression) -%}
    cast({{ expression }} as {{ jisr.type_double() }})
{%- endmacro %}

{#- Ratio of two numbers as a double, null when the denominator is 0 or null. -#}
{% macro safe_divide(numerator, denominator) -%}
    case when {{ denominator }} = 0 then null
         else cast({{ numerator }} as {{ jisr.type_double() }}) / cast({{ denominator }} as {{ jisr.type_double() }})
    end
{%- endmacro %}
