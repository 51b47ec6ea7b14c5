with

source as (

    select * from {{ source('raw', 'service_requests') }}
    where _is_current

),

renamed as (

    select
        request_id,
        person_key as applicant_person_key,
        service_type,
        channel,
        region_code,
        submitted_at,
        resolved_at,
        status as request_status,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
