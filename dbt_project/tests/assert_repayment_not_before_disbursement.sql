-- A repayment cannot precede its loan's disbursement, and no instalment falls due before it.
-- Reported in Dagster as a check of fct_loan_instalments (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'fct_loan_instalments'}}}) }}
with

instalments as (

    select * from {{ ref('fct_loan_instalments') }}

),

loans as (

    select * from {{ ref('fct_loans') }}

)

select
    instalments.instalment_id,
    instalments.loan_id,
    loans.disbursement_date,
    instalments.due_date,
    instalments.paid_date,
    instalments._delivery_id

from instalments
inner join loans
    on instalments.loan_id = loans.loan_id
where instalments.paid_date < loans.disbursement_date
   or instalments.due_date < loans.disbursement_date
