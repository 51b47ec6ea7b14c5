with

source as (

    select * from {{ source('raw', 'occupancy') }}
    where _is_current

),

renamed as (

    select
        establishment_id,
        month as report_month,
        residents,
        admissions,
        departures,
        cast(inspection_score as {{ jisr.type_double() }}) as inspection_score,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
