{#- Enrolments with their status on the reference date and the targeting score of the
    person when they entered (from the beneficiary version valid on the entry date). -#}
with

enrolments as (

    select * from {{ ref('stg_msisf__enrolments') }}

),

programmes as (

    select * from {{ ref('dim_programmes') }}

),

beneficiaries as (

    select * from {{ ref('dim_beneficiaries') }}

),

at_entry as (

    select
        enrolments.enrolment_id,
        beneficiaries.socio_economic_score

    from enrolments
    inner join beneficiaries
        on enrolments.person_key = beneficiaries.person_key
        and {{ valid_at('beneficiaries', 'enrolments.entry_date') }}

),

final as (

    select
        enrolments.enrolment_id,
        enrolments.person_key,
        enrolments.programme_code,
        enrolments.entry_date,
        {{ jisr.month_text('enrolments.entry_date') }} as entry_month,
        enrolments.exit_date,
        enrolments.exit_reason,
        case
            when enrolments.entry_date > {{ jisr.reference_date() }} then 'not_started'
            when enrolments.exit_date is null or enrolments.exit_date > {{ jisr.reference_date() }} then 'active'
            else 'exited'
        end as enrolment_status,
        enrolments.entry_date <= {{ jisr.reference_date() }}
            and (enrolments.exit_date is null or enrolments.exit_date > {{ jisr.reference_date() }}) as is_active,
        {{ jisr.days_between('enrolments.entry_date', 'coalesce(enrolments.exit_date, ' ~ jisr.reference_date() ~ ')') }} as days_enrolled,
        at_entry.socio_economic_score as socio_economic_score_at_entry,
        case
            when programmes.eligibility_score_max is null or at_entry.socio_economic_score is null then null
            else at_entry.socio_economic_score <= programmes.eligibility_score_max
        end as is_eligible_at_entry,
        enrolments._delivery_id,
        enrolments._batch

    from enrolments
    left join at_entry
        on enrolments.enrolment_id = at_entry.enrolment_id
    left join programmes
        on enrolments.programme_code = programmes.programme_code

)

select * from final
