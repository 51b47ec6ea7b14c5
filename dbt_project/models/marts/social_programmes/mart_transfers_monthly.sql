{#- Transfers paid by programme and payment month, by the region the person lived in
    when paid (beneficiary history), sex, age band (on the reference date) and
    vulnerability tercile. Amounts add up across cells; people paid add up too (a person
    is paid in one place in a month). -#}
with

payments as (

    select * from {{ ref('fct_payments') }}

),

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}

),

attributed as (

    select
        payments.programme_code,
        payments.payment_month,
        payments.person_key,
        payments.amount_mad,
        coalesce(beneficiaries.region_code, 'unknown') as region_code,
        coalesce(beneficiaries.sex, 'unknown') as sex,
        coalesce(beneficiaries.age_band, 'unknown') as age_band,
        coalesce(beneficiaries.vulnerability_tercile, 0) as vulnerability_tercile

    from payments
    left join beneficiaries
        on payments.person_key = beneficiaries.person_key
        and {{ valid_at('beneficiaries', 'payments.paid_date') }}

),

aggregated as (

    select
        programme_code,
        payment_month,
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        count(*) as payments_count,
        count(distinct person_key) as beneficiaries_paid,
        sum(amount_mad) as transfers_paid_mad,
        cast(avg(amount_mad) as {{ jisr.type_money() }}) as mean_payment_mad

    from attributed
    group by
        programme_code,
        payment_month,
        region_code,
        sex,
        age_band,
        vulnerability_tercile

),

final as (

    select
        programme_code,
        payment_month,
        {{ jisr.month_start_of_text('payment_month') }} as payment_month_start_date,
        region_code,
        sex,
        age_band,
        vulnerability_tercile,
        payments_count,
        beneficiaries_paid,
        transfers_paid_mad,
        mean_payment_mad

    from aggregated

)

select * from final
