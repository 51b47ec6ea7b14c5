{#- Portable date helpers. Engine-specific spellings go through adapter.dispatch. -#}

{#- 'YYYY-MM' text of a date. -#}
{% macro month_text(date_expression) -%}
    {{ return(adapter.dispatch('month_text', 'jisr')(date_expression)) }}
{%- endmacro %}

{% macro default__month_text(date_expression) -%}
    to_char({{ date_expression }}, 'YYYY-MM')
{%- endmacro %}

{% macro duckdb__month_text(date_expression) -%}
    strftime(cast({{ date_expression }} as date), '%Y-%m')
{%- endmacro %}

{% macro spark__month_text(date_expression) -%}
    date_format({{ date_expression }}, 'yyyy-MM')
{%- endmacro %}

{#- First day of a 'YYYY-MM' month text. -#}
{% macro month_start_of_text(month_expression) -%}
    cast({{ dbt.concat([month_expression, "'-01'"]) }} as date)
{%- endmacro %}

{#- First day of the month of a date or timestamp, as a date. -#}
{% macro month_start(date_expression) -%}
    cast({{ dbt.date_trunc('month', date_expression) }} as date)
{%- endmacro %}

{#- Last day of the month of a date, as a date. -#}
{% macro month_end(date_expression) -%}
    cast({{ dbt.last_day(jisr.month_start(date_expression), 'month') }} as date)
{%- endmacro %}

{#- A date plus a number of days / months, as a date. -#}
{% macro add_days(date_expression, days) -%}
    cast({{ dbt.dateadd('day', days, date_expression) }} as date)
{%- endmacro %}

{% macro add_months(date_expression, months) -%}
    cast({{ dbt.dateadd('month', months, date_expression) }} as date)
{%- endmacro %}

{#- Whole days from one date to another (negative when `end` is earlier). -#}
{% macro days_between(start_date, end_date) -%}
    {{ dbt.datediff('cast(' ~ start_date ~ ' as date)', 'cast(' ~ end_date ~ ' as date)', 'day') }}
{%- endmacro %}

{#- Whole months between two month-start dates. -#}
{% macro months_between(start_month, end_month) -%}
    {{ dbt.datediff(start_month, end_month, 'month') }}
{%- endmacro %}

{#- Elapsed hours between two timestamps, as a double. -#}
{% macro hours_between(start_timestamp, end_timestamp) -%}
    {{ return(adapter.dispatch('hours_between', 'jisr')(start_timestamp, end_timestamp)) }}
{%- endmacro %}

{% macro default__hours_between(start_timestamp, end_timestamp) -%}
    (extract(epoch from ({{ end_timestamp }} - {{ start_timestamp }})) / 3600.0)
{%- endmacro %}

{% macro duckdb__hours_between(start_timestamp, end_timestamp) -%}
    (epoch({{ end_timestamp }}) - epoch({{ start_timestamp }})) / 3600.0
{%- endmacro %}

{% macro spark__hours_between(start_timestamp, end_timestamp) -%}
    ((unix_micros(cast({{ end_timestamp }} as timestamp)) - unix_micros(cast({{ start_timestamp }} as timestamp))) / 3600000000.0D)
{%- endmacro %}

{#- Age in completed years on a date (birthday counted on the day itself). -#}
{% macro age_in_years(birth_date, as_of_date) -%}
    {{ return(adapter.dispatch('age_in_years', 'jisr')(birth_date, as_of_date)) }}
{%- endmacro %}

{% macro default__age_in_years(birth_date, as_of_date) -%}
    (
        extract(year from {{ as_of_date }}) - extract(year from {{ birth_date }})
        - case
            when extract(month from {{ as_of_date }}) * 100 + extract(day from {{ as_of_date }})
                 < extract(month from {{ birth_date }}) * 100 + extract(day from {{ birth_date }})
            then 1 else 0
          end
    )
{%- endmacro %}

{% macro postgres__age_in_years(birth_date, as_of_date) -%}
    cast(extract(year from age({{ as_of_date }}, {{ birth_date }})) as integer)
{%- endmacro %}

{#- Age band of an age in years; the bands of every disaggregated mart. -#}
{% macro age_band(age_expression) -%}
    case
        when {{ age_expression }} is null then null
        when {{ age_expression }} < 18 then '0-17'
        when {{ age_expression }} < 25 then '18-24'
        when {{ age_expression }} < 35 then '25-34'
        when {{ age_expression }} < 45 then '35-44'
        when {{ age_expression }} < 55 then '45-54'
        when {{ age_expression }} < 65 then '55-64'
        else '65+'
    end
{%- endmacro %}

{% macro age_bands() -%}
    {{ return(['0-17', '18-24', '25-34', '35-44', '45-54', '55-64', '65+']) }}
{%- endmacro %}
