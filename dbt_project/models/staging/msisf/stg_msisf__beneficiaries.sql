{#- Current registry: the latest record of each person. Names and phone pseudonyms stay in
    the raw layer: no mart needs them. -#}
with

source as (

    select * from {{ source('raw', 'beneficiaries') }}
    where _is_current

),

renamed as (

    select
        person_key,
        household_key,
        sex,
        birth_date,
        region_code,
        province_code,
        commune_code,
        area_type,
        cast(socio_economic_score as {{ jisr.type_double() }}) as socio_economic_score,
        has_disability,
        registered_date,
        _delivery_id,
        _batch,
        _loaded_at,
        _source_row

    from source

)

select * from renamed
