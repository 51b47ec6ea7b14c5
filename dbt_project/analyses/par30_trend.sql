-- Portfolio at risk (PAR30) of inclusive-finance loans, month by month and by programme.
--   jisr sql -f dbt_project/analyses/par30_trend.sql
--
-- PAR30 = outstanding principal of loans more than 30 days past due / outstanding principal,
-- at each month end; repayment rate = amounts collected / amounts due to date. Amounts of
-- suppressed cells (fewer than 10 borrowers or loans) are NULL and left out of the sums.
with

portfolio as (

    select * from {{ ref('mart_finance_portfolio_monthly').include(database=false) }}

),

final as (

    select
        month,
        programme_code,
        sum(loans_active) as loans_active,
        sum(outstanding_principal_mad) as outstanding_principal_mad,
        sum(par30_principal_mad) as par30_principal_mad,
        1.0 * sum(par30_principal_mad) / nullif(sum(outstanding_principal_mad), 0) as par30_rate,
        1.0 * sum(amount_collected_to_date_mad) / nullif(sum(amount_due_to_date_mad), 0) as repayment_rate,
        sum(case when is_suppressed then 1 else 0 end) as suppressed_cells

    from portfolio
    group by month, programme_code

)

select * from final
order by programme_code, month
