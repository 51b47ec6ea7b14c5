with

source as (

    select * from {{ source('raw', 'loans') }}
    where _is_current

),

renamed as (

    select
        loan_id,
        person_key,
        programme_code,
        product as loan_product,
        cast(principal_mad as {{ jisr.type_money() }}) as principal_mad,
        term_months,
        cast(annual_rate_pct as {{ jisr.type_double() }}) as annual_rate_pct,
        disbursement_date,
        status as loan_status,
        written_off_date,
        cast(written_off_mad as {{ jisr.type_money() }}) as written_off_mad,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
