-- A payment is for a month from the month of entry to the month of exit of its enrolment.
-- One for a month after the exit (after a death, say) or before the entry is money paid all
-- the same, and the marts count it where it was paid: a warning for the data engineers and
-- the ministry (leakage to follow up), not a reason to stop the publication.
-- Reported in Dagster as a check of fct_payments (it reads several models).
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'fct_payments'}}}) }}
with

payments as (

    select * from {{ ref('fct_payments') }}

),

enrolments as (

    select * from {{ ref('fct_enrolments') }}

)

select
    payments.payment_id,
    payments._batch as payment_file_month,
    payments._delivery_id,
    payments.enrolment_id,
    payments.payment_month,
    enrolments.entry_month,
    {{ jisr.month_text('enrolments.exit_date') }} as exit_month,
    case
        when payments.payment_month < enrolments.entry_month then 'paid for a month before the entry'
        else 'paid for a month after the exit'
    end as problem

from payments
inner join enrolments
    on payments.enrolment_id = enrolments.enrolment_id
where payments.payment_month < enrolments.entry_month
   or payments.payment_month > {{ jisr.month_text('enrolments.exit_date') }}
