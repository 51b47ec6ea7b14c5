with

source as (

    select * from {{ source('raw', 'ventures') }}
    where _is_current

),

renamed as (

    select
        venture_id,
        person_key as promoter_person_key,
        programme_code,
        venture_name,
        legal_form,
        sector,
        cohort,
        region_code,
        incubation_start_date,
        incubation_end_date,
        status_12m,
        status_24m,
        jobs_created,
        cast(revenue_mad as {{ jisr.type_money() }}) as revenue_mad,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
