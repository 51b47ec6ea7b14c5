{#- The inclusive-finance portfolio of each programme at each month end: the totals of
    mart_finance_portfolio_monthly's cells (every loan product and borrower cell of the
    month and programme), with the rates recomputed from them. The cell table's disclosure
    control treats these totals as known already (config/disclosure.yml), so publishing
    them hides nothing more there; a month whose programme counts fewer than 10 loans in
    one of its counts is suppressed here. Borrowers are not totalled: one with loans of two
    products is in two cells. -#}
with

cells as (

    select * from {{ ref('mart_finance_portfolio_monthly') }}

),

final as (

    select
        month,
        month_end_date,
        programme_code,
        {{ jisr.sum_counts('loans_active') }} as loans_active,
        sum(outstanding_principal_mad) as outstanding_principal_mad,
        {{ jisr.sum_counts('loans_par30') }} as loans_par30,
        sum(par30_principal_mad) as par30_principal_mad,
        {{ jisr.safe_divide('sum(par30_principal_mad)', 'sum(outstanding_principal_mad)') }} as par30_rate,
        sum(amount_due_to_date_mad) as amount_due_to_date_mad,
        sum(amount_collected_to_date_mad) as amount_collected_to_date_mad,
        {{ jisr.safe_divide('sum(amount_collected_to_date_mad)', 'sum(amount_due_to_date_mad)') }} as repayment_rate,
        {{ jisr.sum_counts('loans_disbursed') }} as loans_disbursed,
        sum(disbursed_mad) as disbursed_mad,
        {{ jisr.sum_counts('loans_written_off') }} as loans_written_off,
        sum(written_off_mad) as written_off_mad

    from cells
    group by
        month,
        month_end_date,
        programme_code

)

select * from final
