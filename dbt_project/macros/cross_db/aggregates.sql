{#- Continuous percentile (linear interpolation, like numpy's default and SQL's
    percentile_cont) of an expression, as an aggregate. `fraction` is a number in [0, 1]. -#}
{% macro percentile_cont(expression, fraction) -%}
    {{ return(adapter.dispatch('percentile_cont', 'jisr')(expression, fraction)) }}
{%- endmacro %}

{% macro default__percentile_cont(expression, fraction) -%}
    percentile_cont({{ fraction }}) within group (order by {{ expression }})
{%- endmacro %}

{% macro duckdb__percentile_cont(expression, fraction) -%}
    quantile_cont({{ expression }}, {{ fraction }})
{%- endmacro %}

{% macro spark__percentile_cont(expression, fraction) -%}
    percentile({{ expression }}, {{ fraction }})
{%- endmacro %}

{#- Median (50th continuous percentile). -#}
{% macro median(expression) -%}
    {{ jisr.percentile_cont(expression, 0.5) }}
{%- endmacro %}

{#- Count of rows where a condition holds, as a BIGINT. -#}
{% macro count_if(condition) -%}
    {{ jisr.sum_counts('case when ' ~ condition ~ ' then 1 else 0 end') }}
{%- endmacro %}

{#- Sum of counts, as a BIGINT: DuckDB adds integers up as HUGEINT (128 bits), which BI
    tools and pandas read as floats or 38-digit decimals (and PostgreSQL adds bigints up as
    numeric). A published count is a BIGINT on every engine. -#}
{% macro sum_counts(expression) -%}
    cast(sum({{ expression }}) as {{ dbt.type_bigint() }})
{%- endmacro %}

{#- Mean of a floating-point expression that does not depend on the order the rows arrive
    in. Doubles added in arrival order give a sum whose last bits change from one build to
    the next (a parallel engine adds partial sums in any order), and a household whose mean
    score sits on a tercile cut point could change tercile between two builds of the same
    delivery. The values are added as decimals with 10 places (exact on every engine), so
    the mean is the same on every build. For finite values whose sum stays below 1e27, where
    digits beyond the 10th decimal place do not matter (scores, rates): an infinity or NaN
    fails the cast (the contracts quarantine them; bounded columns such as the 0-100
    scores never hold one). -#}
{% macro exact_avg(expression) -%}
    cast(avg(cast({{ expression }} as decimal(38, 10))) as {{ jisr.type_double() }})
{%- endmacro %}
