{#- Cost per beneficiary of each programme (consumed by the impact stage for
    cost-effectiveness). Spend is the transfers paid when the programme has payments,
    otherwise its budget; beneficiaries reached are the distinct people who took part
    (enrolment, loan or venture). The cost is null when nobody was reached. -#}
with

programmes as (

    select * from {{ ref('dim_programmes') }}

),

payments as (

    select * from {{ ref('fct_payments') }}

),

participations as (

    select * from {{ ref('int_programme_participations_unioned') }}

),

paid as (

    select
        programme_code,
        count(*) as payments_count,
        sum(amount_mad) as transfers_paid_mad

    from payments
    group by programme_code

),

reached as (

    select
        programme_code,
        count(distinct person_key) as beneficiaries_reached

    from participations
    where start_date <= {{ jisr.reference_date() }}
    group by programme_code

),

final as (

    select
        programmes.programme_code,
        programmes.programme_name,
        programmes.action_line,
        programmes.budget_mad,
        coalesce(paid.transfers_paid_mad, 0) as transfers_paid_mad,
        coalesce(reached.beneficiaries_reached, 0) as beneficiaries_reached,
        cast(
            case
                when coalesce(reached.beneficiaries_reached, 0) = 0 then null
                when coalesce(paid.payments_count, 0) > 0
                    then paid.transfers_paid_mad / reached.beneficiaries_reached
                else programmes.budget_mad / reached.beneficiaries_reached
            end as {{ jisr.type_money() }}
        ) as cost_per_beneficiary_mad

    from programmes
    left join paid
        on programmes.programme_code = paid.programme_code
    left join reached
        on programmes.programme_code = reached.programme_code

)

select * from final
