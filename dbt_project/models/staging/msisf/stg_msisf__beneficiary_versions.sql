{#- Every delivered registry record, current or superseded: the input of the beneficiary
    history (SCD type 2). This is the one staging model that does not filter `_is_current`;
    it reads the same source as stg_msisf__beneficiaries on purpose (see the source's
    meta.history_model). -#}
with

source as (

    select * from {{ source('raw', 'beneficiaries') }}

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
        _is_current as is_current_record,
        _delivery_id,
        _batch,
        _loaded_at,
        _source_row

    from source

)

select * from renamed
