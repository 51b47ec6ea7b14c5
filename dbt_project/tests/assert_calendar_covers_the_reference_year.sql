-- The calendar reaches the end of the reference year. It starts at the earliest date any
-- delivery refers to and holds at most 100,000 days (dim_dates): a date centuries too early
-- that a contract let through (0205 typed for 2025) would leave the reference period out of
-- it and build the monthly marts empty.
-- Reported in Dagster as a check of dim_dates (it reads the reference dates too).
{{ config(meta={'dagster': {'ref': {'name': 'dim_dates'}}}) }}
with

reference_dates as (

    select * from {{ ref('int_reference_dates') }}

),

calendar as (

    select max(date_day) as last_day from {{ ref('dim_dates') }}

)

select
    reference_dates.calendar_start_date,
    reference_dates.calendar_end_date,
    calendar.last_day

from reference_dates
cross join calendar
where calendar.last_day is null or calendar.last_day < reference_dates.calendar_end_date
