with

programmes as (

    select * from {{ ref('stg_msisf__programmes') }}

),

final as (

    select
        programme_code,
        programme_name_fr as programme_name,
        programme_name_fr,
        programme_name_ar,
        action_line,
        start_date,
        end_date,
        budget_mad,
        eligibility_score_max,
        eligibility_score_max is not null as has_eligibility_rule,
        unit_cost_mad,
        start_date <= {{ jisr.reference_date() }}
            and (end_date is null or end_date >= {{ jisr.reference_date() }}) as is_active

    from programmes

)

select * from final
