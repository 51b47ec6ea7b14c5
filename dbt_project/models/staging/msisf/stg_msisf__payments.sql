with

source as (

    select * from {{ source('raw', 'payments') }}
    where _is_current

),

renamed as (

    select
        payment_id,
        enrolment_id,
        person_key,
        programme_code,
        payment_month,
        cast(amount_mad as {{ jisr.type_money() }}) as amount_mad,
        paid_date,
        channel as payment_channel,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
