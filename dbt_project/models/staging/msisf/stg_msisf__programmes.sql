with

source as (

    select * from {{ source('raw', 'programmes') }}
    where _is_current

),

renamed as (

    select
        programme_code,
        name_fr as programme_name_fr,
        name_ar as programme_name_ar,
        action_line,
        start_date,
        end_date,
        cast(budget_mad as {{ jisr.type_money() }}) as budget_mad,
        cast(eligibility_score_max as {{ jisr.type_double() }}) as eligibility_score_max,
        cast(unit_cost_mad as {{ jisr.type_money() }}) as unit_cost_mad,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
