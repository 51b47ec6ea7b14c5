{#- The reference period of the warehouse: the last month delivered by any partner
    (monthly batches are named YYYY-MM; study batches are not months and are ignored),
    and the first day of the calendar the date dimension covers. -#}
with

programmes as (

    select * from {{ ref('stg_msisf__programmes') }}

),

beneficiaries as (

    select * from {{ ref('stg_msisf__beneficiaries') }}

),

enrolments as (

    select * from {{ ref('stg_msisf__enrolments') }}

),

payments as (

    select * from {{ ref('stg_msisf__payments') }}

),

loans as (

    select * from {{ ref('stg_cdg_finance__loans') }}

),

repayments as (

    select * from {{ ref('stg_cdg_finance__repayments') }}

),

ventures as (

    select * from {{ ref('stg_cdg_incubation__ventures') }}

),

establishments as (

    select * from {{ ref('stg_eps__establishments') }}

),

occupancy_reports as (

    select * from {{ ref('stg_eps__occupancy_reports') }}

),

service_requests as (

    select * from {{ ref('stg_digital__service_requests') }}

),

delivered_batches as (

    select max(_batch) as last_batch, min(start_date) as first_date from programmes
    union all
    select max(_batch), min(registered_date) from beneficiaries
    union all
    select max(_batch), min(entry_date) from enrolments
    union all
    select max(_batch), min(paid_date) from payments
    union all
    select max(_batch), min(disbursement_date) from loans
    union all
    select max(_batch), min(due_date) from repayments
    union all
    select max(_batch), min(incubation_start_date) from ventures
    union all
    select max(_batch), min(works_start_date) from establishments
    union all
    select max(_batch), min({{ jisr.month_start_of_text('report_month') }}) from occupancy_reports
    union all
    select max(_batch), min(cast(submitted_at as date)) from service_requests

),

last_month as (

    select
        max(last_batch) as reference_month,
        min(first_date) as first_date

    from delivered_batches

),

final as (

    select
        {%- if var('reference_date', none) %}
        {{ jisr.month_text("cast('" ~ var('reference_date') ~ "' as date)") }} as reference_month,
        cast('{{ var("reference_date") }}' as date) as reference_date,
        {%- else %}
        reference_month,
        {{ jisr.month_end(jisr.month_start_of_text('reference_month')) }} as reference_date,
        {%- endif %}
        cast({{ dbt.date_trunc('year', 'first_date') }} as date) as calendar_start_date,
        {{ jisr.add_days(jisr.add_months(dbt.date_trunc('year', jisr.month_start_of_text('reference_month')), 12), -1) }} as calendar_end_date

    from last_month

)

select * from final
