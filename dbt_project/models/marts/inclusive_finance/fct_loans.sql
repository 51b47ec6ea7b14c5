{#- Loans with their position on the reference date: principal repaid, outstanding
    principal (0 once closed or written off), the oldest unsettled instalment's days past
    due and the PAR30 flag.

    Opening position: a loan disbursed before the lender's first delivery arrives without
    its earlier instalments. The principal it repaid before the first delivered month is
    derived from its first instalment k due in or after that month: interest is charged on
    the outstanding balance, so the balance before instalment k is its interest due /
    monthly rate (without the interest or the rate: k - 1 instalments of the same principal
    as instalment k, exact for equal principal, an upper bound for equal instalments; a
    loan whose only delivered instalments are due before that month: its whole principal
    scheduled before it; a loan with no instalment delivered: nothing repaid). An
    instalment due before that month that is delivered all the same (paid late, it
    arrives in the file of the month it is paid) was not repaid at the opening: its
    principal is arrears inside the opening balance, and counts as repaid once settled.
    Principal repaid never exceeds the principal.

    Closing date: the last settlement of a loan the lender reports closed (the end of the
    month of the closing record when no instalment was delivered). -#}
with

loans as (

    select * from {{ ref('stg_cdg_finance__loans') }}

),

instalments as (

    select * from {{ ref('fct_loan_instalments') }}

),

first_delivered_month as (

    select {{ jisr.month_start_of_text('min(_batch)') }} as month_start_date from instalments

),

first_instalments as (

    select
        instalments.loan_id,
        instalments.instalment_number,
        instalments.principal_due_mad,
        instalments.interest_due_mad,
        row_number() over (partition by instalments.loan_id order by instalments.instalment_number) as rank_in_loan

    from instalments
    inner join first_delivered_month
        on instalments.due_date >= first_delivered_month.month_start_date

),

{#- Instalments due before the first delivered month, delivered because they were paid late. -#}
arrears_at_opening as (

    select
        instalments.loan_id,
        sum(instalments.principal_due_mad) as principal_due_mad

    from instalments
    inner join first_delivered_month
        on instalments.due_date < first_delivered_month.month_start_date
    group by instalments.loan_id

),

opening as (

    select
        loans.loan_id,
        case
            when arrears_at_opening.loan_id is not null and first_instalments.loan_id is null then loans.principal_mad
            when first_instalments.instalment_number is null or first_instalments.instalment_number <= 1 then 0
            when loans.annual_rate_pct > 0 and first_instalments.interest_due_mad > 0
                then loans.principal_mad - cast(
                    first_instalments.interest_due_mad / (loans.annual_rate_pct / 1200.0) as {{ jisr.type_money() }})
            else first_instalments.principal_due_mad * (first_instalments.instalment_number - 1)
        end - coalesce(arrears_at_opening.principal_due_mad, 0) as opening_principal_repaid_mad

    from loans
    left join first_instalments
        on loans.loan_id = first_instalments.loan_id
        and first_instalments.rank_in_loan = 1
    left join arrears_at_opening
        on loans.loan_id = arrears_at_opening.loan_id

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

positions as (

    select
        loans.*,
        case
            when opening.opening_principal_repaid_mad < 0 then 0
            when opening.opening_principal_repaid_mad > loans.principal_mad then loans.principal_mad
            else opening.opening_principal_repaid_mad
        end as opening_principal_repaid_mad,
        case
            when loans.loan_status = 'closed'
                then coalesce(repaid.last_settled_date, {{ jisr.month_end(jisr.month_start_of_text('loans._batch')) }})
        end as closed_date

    from loans
    left join opening
        on loans.loan_id = opening.loan_id
    left join repaid
        on loans.loan_id = repaid.loan_id

),

ended as (

    select
        *,
        (written_off_date is not null and written_off_date <= {{ jisr.reference_date() }})
            or (closed_date is not null and closed_date <= {{ jisr.reference_date() }}) as is_ended

    from positions

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
        loans.closed_date,
        coalesce(repaid.instalments_count, 0) as instalments_count,
        coalesce(repaid.instalments_settled_count, 0) as instalments_settled_count,
        loans.opening_principal_repaid_mad,
        least(loans.opening_principal_repaid_mad + coalesce(repaid.principal_repaid_mad, 0), loans.principal_mad)
            as principal_repaid_mad,
        coalesce(repaid.amount_paid_mad, 0) as amount_paid_mad,
        case
            when loans.is_ended then 0
            else greatest(loans.principal_mad - loans.opening_principal_repaid_mad - coalesce(repaid.principal_repaid_mad, 0), 0)
        end as outstanding_principal_mad,
        case
            when loans.is_ended then 0
            else coalesce(repaid.days_past_due, 0)
        end as days_past_due,
        case
            when loans.is_ended then false
            else coalesce(repaid.days_past_due, 0) > 30
                and loans.principal_mad - loans.opening_principal_repaid_mad - coalesce(repaid.principal_repaid_mad, 0) > 0
        end as is_par30,
        loans._delivery_id,
        loans._batch

    from ended as loans
    left join repaid
        on loans.loan_id = repaid.loan_id

)

select * from final
