{#- Digital services by month, region and channel, with 'all' rows for every region and
    every channel (percentiles cannot be added up, so the totals are computed here):
    - requests_submitted in the month and their share of the month's requests (by region);
    - requests_closed in the month (resolved or rejected) with the median and 90th
      percentile of their processing time in hours (continuous percentiles);
    - backlog: requests submitted by the month end and not closed by then. -#}
with

requests as (

    select * from {{ ref('fct_service_requests') }}

),

dates as (

    select * from {{ ref('dim_dates') }}

),

months as (

    select
        month,
        month_start_date,
        month_end_date,
        {{ jisr.add_months('month_start_date', 1) }} as next_month_start_date

    from dates
    where is_month_start
      and is_delivered_period

),

{#- One row per request and month from the month it was submitted to the month it was
    closed (or the last delivered month while it is open). -#}
request_months as (

    select
        months.month,
        requests.region_code as request_region_code,
        requests.channel as request_channel,
        requests.request_id,
        requests.processing_hours,
        requests.submitted_at >= months.month_start_date as is_submitted_in_month,
        requests.resolved_at is not null
            and requests.resolved_at >= months.month_start_date
            and requests.resolved_at < months.next_month_start_date as is_closed_in_month,
        requests.resolved_at is null or requests.resolved_at >= months.next_month_start_date as is_open_at_month_end

    from requests
    inner join months
        on requests.submitted_at < months.next_month_start_date
        and (requests.resolved_at is null or requests.resolved_at >= months.month_start_date)

),

aggregated as (

    select
        month,
        coalesce(request_region_code, 'all') as region_code,
        coalesce(request_channel, 'all') as channel,
        {{ jisr.count_if('is_submitted_in_month') }} as requests_submitted,
        {{ jisr.count_if('is_closed_in_month') }} as requests_closed,
        {{ jisr.count_if('is_open_at_month_end') }} as backlog_end_of_month,
        {{ jisr.median('case when is_closed_in_month then processing_hours end') }} as median_processing_hours,
        {{ jisr.percentile_cont('case when is_closed_in_month then processing_hours end', 0.9) }}
            as p90_processing_hours

    from request_months
    group by grouping sets (
        (month, request_region_code, request_channel),
        (month, request_region_code),
        (month, request_channel),
        (month)
    )

),

final as (

    select
        month,
        region_code,
        channel,
        requests_submitted,
        {{ jisr.safe_divide('requests_submitted', "sum(case when channel = 'all' then requests_submitted end) over (partition by month, region_code)") }}
            as share_of_requests,
        requests_closed,
        median_processing_hours,
        p90_processing_hours,
        backlog_end_of_month

    from aggregated

)

select * from final
