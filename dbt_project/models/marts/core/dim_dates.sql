{#- Calendar from the first year any delivery refers to until the end of the reference
    year. The day numbers come from a portable cross join of digits (up to 100,000 days). -#}
with

reference_dates as (

    select * from {{ ref('int_reference_dates') }}

),

digits as (

    {%- for digit in range(10) %}
    select {{ digit }} as digit{% if not loop.last %} union all{% endif %}
    {%- endfor %}

),

day_numbers as (

    select
        ones.digit
        + 10 * tens.digit
        + 100 * hundreds.digit
        + 1000 * thousands.digit
        + 10000 * ten_thousands.digit as day_number

    from digits as ones
    cross join digits as tens
    cross join digits as hundreds
    cross join digits as thousands
    cross join digits as ten_thousands

),

days as (

    select
        {{ jisr.add_days('reference_dates.calendar_start_date', 'day_numbers.day_number') }} as date_day

    from day_numbers
    cross join reference_dates
    where day_numbers.day_number <= {{ jisr.days_between('reference_dates.calendar_start_date', 'reference_dates.calendar_end_date') }}

),

final as (

    select
        date_day,
        {{ jisr.month_text('date_day') }} as month,
        {{ jisr.month_start('date_day') }} as month_start_date,
        {{ jisr.month_end('date_day') }} as month_end_date,
        cast(extract(year from date_day) as {{ dbt.type_int() }}) as year_number,
        cast(extract(quarter from date_day) as {{ dbt.type_int() }}) as quarter_number,
        cast(extract(month from date_day) as {{ dbt.type_int() }}) as month_number,
        cast(extract(day from date_day) as {{ dbt.type_int() }}) as day_of_month,
        date_day = {{ jisr.month_start('date_day') }} as is_month_start,
        date_day = {{ jisr.month_end('date_day') }} as is_month_end,
        date_day <= {{ jisr.reference_date() }} as is_delivered_period

    from days

)

select * from final
