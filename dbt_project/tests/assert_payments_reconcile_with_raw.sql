-- Transfers in the marts equal the raw total of the current deliveries, month by month:
-- in the payment fact (incremental: a wrong merge shows here) and in the monthly mart.
-- Reported in Dagster as a check of fct_payments (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'fct_payments'}}}) }}
{%- set tolerance = var('reconciliation_tolerance_mad') %}
with

raw_payments as (

    select
        payment_month,
        count(*) as payments_count,
        sum(amount_mad) as amount_mad

    from {{ source('raw', 'payments') }}
    where _is_current
    group by payment_month

),

fact_payments as (

    select
        payment_month,
        count(*) as payments_count,
        sum(amount_mad) as amount_mad

    from {{ ref('fct_payments') }}
    group by payment_month

),

mart_transfers as (

    select
        payment_month,
        sum(payments_count) as payments_count,
        sum(transfers_paid_mad) as amount_mad

    from {{ ref('mart_transfers_monthly') }}
    group by payment_month

),

months as (

    select payment_month from raw_payments
    union
    select payment_month from fact_payments
    union
    select payment_month from mart_transfers

),

compared as (

    select
        months.payment_month,
        coalesce(raw_payments.payments_count, 0) as raw_payments_count,
        coalesce(fact_payments.payments_count, 0) as fact_payments_count,
        coalesce(mart_transfers.payments_count, 0) as mart_payments_count,
        coalesce(raw_payments.amount_mad, 0) as raw_amount_mad,
        coalesce(fact_payments.amount_mad, 0) as fact_amount_mad,
        coalesce(mart_transfers.amount_mad, 0) as mart_amount_mad

    from months
    left join raw_payments
        on months.payment_month = raw_payments.payment_month
    left join fact_payments
        on months.payment_month = fact_payments.payment_month
    left join mart_transfers
        on months.payment_month = mart_transfers.payment_month

)

select * from compared
where raw_payments_count <> fact_payments_count
   or raw_payments_count <> mart_payments_count
   or abs(raw_amount_mad - fact_amount_mad) > {{ tolerance }}
   or abs(raw_amount_mad - mart_amount_mad) > {{ tolerance }}
