with

source as (

    select * from {{ source('raw', 'repayments') }}
    where _is_current

),

renamed as (

    select
        instalment_id,
        loan_id,
        instalment_number,
        due_date,
        cast(principal_due_mad as {{ jisr.type_money() }}) as principal_due_mad,
        cast(interest_due_mad as {{ jisr.type_money() }}) as interest_due_mad,
        paid_date,
        cast(amount_paid_mad as {{ jisr.type_money() }}) as amount_paid_mad,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
