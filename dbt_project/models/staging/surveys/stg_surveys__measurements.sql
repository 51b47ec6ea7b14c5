with

source as (

    select * from {{ source('raw', 'survey_measurements') }}
    where _is_current

),

renamed as (

    select
        study_id,
        unit_id,
        round_index,
        round_label,
        variable,
        cast(value as {{ jisr.type_double() }}) as value,
        measured_date,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
