with

source as (

    select * from {{ source('raw', 'enrolments') }}
    where _is_current

),

renamed as (

    select
        enrolment_id,
        person_key,
        programme_code,
        entry_date,
        exit_date,
        exit_reason,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
