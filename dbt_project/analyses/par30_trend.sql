-- Portfolio at risk (PAR30) of inclusive-finance loans, month by month and by programme.
--   jisr sql -f dbt_project/analyses/par30_trend.sql
--
-- PAR30 = outstanding principal of loans more than 30 days past due / outstanding principal,
-- at each month end; repayment rate = amounts collected / amounts due to date. From the
-- programme totals (marts.mart_finance_portfolio_programme_monthly): a month whose programme
-- counts fewer than 10 loans in one of its counts is suppressed (is_suppressed, figures
-- NULL). The breakdown by loan product and borrower cell is marts.mart_finance_portfolio_monthly.
with

portfolio as (

    select * from {{ ref('mart_finance_portfolio_programme_monthly').include(database=false) }}

),

final as (

    select
        month,
        programme_code,
        loans_active,
        outstanding_principal_mad,
        par30_principal_mad,
        par30_rate,
        repayment_rate,
        is_suppressed

    from portfolio

)

select * from final
order by programme_code, month
