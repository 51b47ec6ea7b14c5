with

source as (

    select * from {{ source('raw', 'survey_units') }}
    where _is_current

),

renamed as (

    select
        study_id,
        unit_id,
        unit_type,
        person_key,
        programme_code,
        treatment_group,
        cluster_id,
        sex,
        age,
        region_code,
        cast(vulnerability_score as {{ jisr.type_double() }}) as vulnerability_score,
        _delivery_id,
        _batch,
        _loaded_at

    from source

)

select * from renamed
