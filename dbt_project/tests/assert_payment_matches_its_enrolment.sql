-- A payment is made under its enrolment: to the person enrolled, by the programme of the
-- enrolment, for a month from the month of entry to the month of exit. Each file passes
-- its own row rules, but a payment file and an enrolment file can disagree (a transfer to
-- someone else under the enrolment, or for a month after the person left the programme):
-- the payments would reach the transfers and the programme costs (people paid above
-- people reached). Payments whose enrolment is not loaded are held at ingestion.
-- Reported in Dagster as a check of fct_payments (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'fct_payments'}}}) }}
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
    payments.enrolment_id,
    payments.payment_month,
    enrolments.entry_month,
    {{ jisr.month_text('enrolments.exit_date') }} as exit_month,
    case
        when payments.person_key <> enrolments.person_key then 'paid to another person than the one enrolled'
        when payments.programme_code <> enrolments.programme_code then 'paid by another programme than the enrolment'
        when payments.payment_month < enrolments.entry_month then 'paid for a month before the entry'
        else 'paid for a month after the exit'
    end as problem

from payments
inner join enrolments
    on payments.enrolment_id = enrolments.enrolment_id
where payments.person_key <> enrolments.person_key
   or payments.programme_code <> enrolments.programme_code
   or payments.payment_month < enrolments.entry_month
   or payments.payment_month > {{ jisr.month_text('enrolments.exit_date') }}
