-- A payment is made under its enrolment: to the person enrolled, by the programme of the
-- enrolment. Each file passes its own row rules, but a payment file and an enrolment file can
-- disagree (a transfer to someone else, or by another programme, under the enrolment): the
-- payments would reach the transfers and the programme costs under the wrong person or
-- programme (people paid above people reached). Payments whose enrolment is not loaded are
-- held at ingestion. A payment for a month outside the enrolment is a real payment, not a
-- broken reference: assert_payment_within_its_enrolment reports it without blocking.
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
    payments._delivery_id,
    payments.enrolment_id,
    case
        when payments.person_key <> enrolments.person_key then 'paid to another person than the one enrolled'
        else 'paid by another programme than the enrolment'
    end as problem

from payments
inner join enrolments
    on payments.enrolment_id = enrolments.enrolment_id
where payments.person_key <> enrolments.person_key
   or payments.programme_code <> enrolments.programme_code
