with

source as (

    select * from {{ source('raw', 'establishments') }}
    where _is_current

),

renamed as (

    select
        establishment_id,
        establishment_name,
        establishment_type,
        region_code,
        province_code,
        commune_code,
        capacity,
        programme_code,
        works_start_date,
        works_end_date,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
