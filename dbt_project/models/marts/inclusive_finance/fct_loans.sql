{#- Loans with their position on the reference date: principal repaid by settled
    instalments, outstanding principal (0 once written off), the oldest unpaid
    instalment's days past due and the PAR30 flag. -#}
with

loans as (

    select * from {{ ref('stg_cdg_finance__loans') }}

),

instalments as (

    select * from {{ ref('fct_loan_instalments') }}

),

repaid as (

    select
        loan_id,
        count(*) as instalments_count,
        {{ jisr.count_if('is_settled') }} as instalments_settled_count,
        sum(case when is_settled and settled_date <= {{ jisr.reference_date() }} then principal_due_mad else 0 end)
            as principal_repaid_mad,
        sum(case when paid_date <= {{ jisr.reference_date() }} then coalesce(amount_paid_mad, 0) else 0 end)
            as amount_paid_mad,
        max(days_past_due) as days_past_due,
        max(case when is_settled then settled_date end) as last_settled_date

    from instalments
    group by loan_id

),

final as (

    select
        loans.loan_id,
        loans.person_key,
        loans.programme_code,
        loans.loan_product,
        loans.principal_mad,
        loans.term_months,
        loans.annual_rate_pct,
        loans.disbursement_date,
        {{ jisr.month_text('loans.disbursement_date') }} as disbursement_month,
        loans.loan_status,
        loans.written_off_date,
        loans.written_off_mad,
        coalesce(repaid.instalments_count, 0) as instalments_count,
        coalesce(repaid.instalments_settled_count, 0) as instalments_settled_count,
        coalesce(repaid.principal_repaid_mad, 0) as principal_repaid_mad,
        coalesce(repaid.amount_paid_mad, 0) as amount_paid_mad,
        case
            when loans.written_off_date is not null and loans.written_off_date <= {{ jisr.reference_date() }} then 0
            else greatest(loans.principal_mad - coalesce(repaid.principal_repaid_mad, 0), 0)
        end as outstanding_principal_mad,
        case
            when loans.written_off_date is not null and loans.written_off_date <= {{ jisr.reference_date() }} then 0
            else coalesce(repaid.days_past_due, 0)
        end as days_past_due,
        case
            when loans.written_off_date is not null and loans.written_off_date <= {{ jisr.reference_date() }} then false
            else coalesce(repaid.days_past_due, 0) > 30
                and loans.principal_mad - coalesce(repaid.principal_repaid_mad, 0) > 0
        end as is_par30,
        loans._delivery_id,
        loans._batch

    from loans
    left join repaid
        on loans.loan_id = repaid.loan_id

)

select * from final
