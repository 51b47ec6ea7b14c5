{#- Inclusive-finance portfolio at the end of each month, by programme, loan product and
    the borrower's region (at that month's end), sex, age band and vulnerability tercile.
    Months run from the lender's first repayments delivery to the reference month (before
    it, instalments are unknown). At a month end m, a loan disbursed on or before m and
    neither closed nor written off by m:
    - outstanding principal = principal - principal repaid before its first delivered
      instalment (fct_loans) - principal of the instalments settled by m;
    - days past due = m - due date of its oldest instalment due before m and not settled
      by m; it is at risk (PAR30) when that exceeds 30 days;
    - repayment rate = amounts paid by m on instalments due by m / amounts due by m, both
      counting the instalments due from the first delivered month on (an instalment due
      before it is arrears in the opening balance: its payment is no collection on an
      amount due in the window).
    Write-offs and disbursements are counted in the month they happen. -#}
with

loans as (

    select * from {{ ref('fct_loans') }}

),

instalments as (

    select * from {{ ref('fct_loan_instalments') }}

),

dates as (

    select * from {{ ref('dim_dates') }}

),

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}

),

first_delivery as (

    select min(_batch) as first_month from instalments

),

months as (

    select
        dates.month,
        dates.month_start_date,
        dates.month_end_date

    from dates
    inner join first_delivery
        on dates.month >= first_delivery.first_month
    where dates.is_month_start
      and dates.is_delivered_period

),

loan_months as (

    select
        loans.loan_id,
        loans.person_key,
        loans.programme_code,
        loans.loan_product,
        loans.principal_mad,
        loans.opening_principal_repaid_mad,
        loans.disbursement_date,
        loans.written_off_date,
        loans.written_off_mad,
        loans.closed_date,
        months.month,
        months.month_start_date,
        months.month_end_date

    from loans
    inner join months
        on months.month_end_date >= loans.disbursement_date
        and (loans.written_off_date is null or months.month_start_date <= loans.written_off_date)
        and (loans.closed_date is null or months.month_start_date <= loans.closed_date)

),

principal_settled_by_month as (

    select
        loan_id,
        {{ jisr.month_start('settled_date') }} as month_start_date,
        sum(principal_due_mad) as principal_settled_mad

    from instalments
    where is_settled
    group by loan_id, {{ jisr.month_start('settled_date') }}

),

due_by_month as (

    select
        loan_id,
        {{ jisr.month_start('due_date') }} as month_start_date,
        sum(amount_due_mad) as amount_due_mad

    from instalments
    group by loan_id, {{ jisr.month_start('due_date') }}

),

{#- A payment counts for the repayment rate once its instalment is due (prepayments
    count in the month they fall due). -#}
collected_by_month as (

    select
        loan_id,
        {{ jisr.month_start('case when paid_date > due_date then paid_date else due_date end') }} as month_start_date,
        sum(amount_paid_mad) as amount_collected_mad

    from instalments
    where paid_date is not null
      and due_date >= (select min(month_start_date) from months)
    group by loan_id, {{ jisr.month_start('case when paid_date > due_date then paid_date else due_date end') }}

),

overdue as (

    select
        loan_months.loan_id,
        loan_months.month_start_date,
        max({{ jisr.days_between('instalments.due_date', 'loan_months.month_end_date') }}) as days_past_due

    from loan_months
    inner join instalments
        on loan_months.loan_id = instalments.loan_id
        and instalments.due_date < loan_months.month_end_date
        and (instalments.settled_date is null or instalments.settled_date > loan_months.month_end_date)
    group by loan_months.loan_id, loan_months.month_start_date

),

loan_month_flows as (

    select
        loan_months.*,
        coalesce(principal_settled_by_month.principal_settled_mad, 0) as principal_settled_mad,
        coalesce(due_by_month.amount_due_mad, 0) as amount_due_mad,
        coalesce(collected_by_month.amount_collected_mad, 0) as amount_collected_mad,
        coalesce(overdue.days_past_due, 0) as days_past_due

    from loan_months
    left join principal_settled_by_month
        on loan_months.loan_id = principal_settled_by_month.loan_id
        and loan_months.month_start_date = principal_settled_by_month.month_start_date
    left join due_by_month
        on loan_months.loan_id = due_by_month.loan_id
        and loan_months.month_start_date = due_by_month.month_start_date
    left join collected_by_month
        on loan_months.loan_id = collected_by_month.loan_id
        and loan_months.month_start_date = collected_by_month.month_start_date
    left join overdue
        on loan_months.loan_id = overdue.loan_id
        and loan_months.month_start_date = overdue.month_start_date

),

loan_month_positions as (

    select
        *,
        sum(principal_settled_mad) over (
            partition by loan_id order by month_start_date rows between unbounded preceding and current row
        ) as principal_repaid_to_date_mad,
        sum(amount_due_mad) over (
            partition by loan_id order by month_start_date rows between unbounded preceding and current row
        ) as amount_due_to_date_mad,
        sum(amount_collected_mad) over (
            partition by loan_id order by month_start_date rows between unbounded preceding and current row
        ) as amount_collected_to_date_mad

    from loan_month_flows

),

loan_month_states as (

    select
        loan_month_positions.*,
        written_off_date is not null and written_off_date <= month_end_date as is_written_off,
        closed_date is not null and closed_date <= month_end_date as is_closed,
        disbursement_date >= month_start_date as is_disbursed_in_month,
        written_off_date is not null and written_off_date >= month_start_date and written_off_date <= month_end_date
            as is_written_off_in_month,
        case
            when written_off_date is not null and written_off_date <= month_end_date then 0
            when closed_date is not null and closed_date <= month_end_date then 0
            when principal_mad - opening_principal_repaid_mad - principal_repaid_to_date_mad < 0 then 0
            else principal_mad - opening_principal_repaid_mad - principal_repaid_to_date_mad
        end as outstanding_principal_mad

    from loan_month_positions

),

attributed as (

    select
        loan_month_states.*,
        coalesce(beneficiaries.region_code, 'unknown') as region_code,
        coalesce(beneficiaries.sex, 'unknown') as sex,
        coalesce(beneficiaries.age_band, 'unknown') as age_band,
        coalesce(beneficiaries.vulnerability_tercile, 0) as vulnerability_tercile

    from loan_month_states
    left join beneficiaries
        on loan_month_states.person_key = beneficiaries.person_key
        and {{ valid_at('beneficiaries', 'loan_month_states.month_end_date') }}

),

final as (

    select
        month,
        month_end_date,
        programme_code,
        loan_product,
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        {{ jisr.count_if('outstanding_principal_mad > 0') }} as loans_active,
        count(distinct case when outstanding_principal_mad > 0 then person_key end) as borrowers_active,
        sum(outstanding_principal_mad) as outstanding_principal_mad,
        {{ jisr.count_if('outstanding_principal_mad > 0 and days_past_due > 30') }} as loans_par30,
        sum(case when outstanding_principal_mad > 0 and days_past_due > 30 then outstanding_principal_mad else 0 end)
            as par30_principal_mad,
        {{ jisr.safe_divide(
            'sum(case when outstanding_principal_mad > 0 and days_past_due > 30 then outstanding_principal_mad else 0 end)',
            'sum(outstanding_principal_mad)') }} as par30_rate,
        sum(case when not is_written_off and not is_closed then amount_due_to_date_mad else 0 end) as amount_due_to_date_mad,
        sum(case when not is_written_off and not is_closed then amount_collected_to_date_mad else 0 end) as amount_collected_to_date_mad,
        {{ jisr.safe_divide(
            'sum(case when not is_written_off and not is_closed then amount_collected_to_date_mad else 0 end)',
            'sum(case when not is_written_off and not is_closed then amount_due_to_date_mad else 0 end)') }} as repayment_rate,
        {{ jisr.count_if('is_disbursed_in_month') }} as loans_disbursed,
        sum(case when is_disbursed_in_month then principal_mad else 0 end) as disbursed_mad,
        {{ jisr.count_if('is_written_off_in_month') }} as loans_written_off,
        sum(case when is_written_off_in_month then coalesce(written_off_mad, 0) else 0 end) as written_off_mad

    from attributed
    group by
        month,
        month_end_date,
        programme_code,
        loan_product,
        region_code,
        sex,
        age_band,
        vulnerability_tercile

)

select * from final
