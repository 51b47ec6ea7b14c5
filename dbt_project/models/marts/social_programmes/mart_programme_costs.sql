{#- Cost per beneficiary of each programme (consumed by the impact stage for
    cost-effectiveness), on one basis for every programme: what one person costs over the
    same period. A programme with payments: the transfers paid in the delivered months /
    the distinct people paid in them. Without payments: the programme's unit cost per
    beneficiary (programme reference), when it gives one. Otherwise null: the budget
    covers the programme's whole life and population, and the people the deliveries show
    are neither (dividing one by the other gave costs of millions per person).
    beneficiaries_reached: the distinct people who took part (enrolment, loan or venture)
    by the reference date. -#}
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
        count(distinct person_key) as people_paid,
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
        coalesce(paid.people_paid, 0) as people_paid,
        case
            when coalesce(paid.payments_count, 0) > 0 then 'transfers_paid_per_person_paid'
            when coalesce(reached.beneficiaries_reached, 0) > 0 and programmes.unit_cost_mad is not null
                then 'unit_cost'
        end as cost_basis,
        cast(
            case
                when coalesce(paid.payments_count, 0) > 0 then paid.transfers_paid_mad / paid.people_paid
                when coalesce(reached.beneficiaries_reached, 0) > 0 then programmes.unit_cost_mad
            end as {{ jisr.type_money() }}
        ) as cost_per_beneficiary_mad

    from programmes
    left join paid
        on programmes.programme_code = paid.programme_code
    left join reached
        on programmes.programme_code = reached.programme_code

)

select * from final
