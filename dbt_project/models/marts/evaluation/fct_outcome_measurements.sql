with

measurements as (

    select * from {{ ref('stg_surveys__measurements') }}

),

final as (

    select
        {{ dbt.concat(['study_id', "'/'", 'unit_id', "'/'", 'cast(round_index as ' ~ dbt.type_string() ~ ')', "'/'", 'variable']) }}
            as measurement_id,
        {{ dbt.concat(['study_id', "'/'", 'unit_id']) }} as study_unit_id,
        study_id,
        unit_id,
        round_index,
        round_label,
        variable,
        value,
        measured_date,
        _delivery_id,
        _batch

    from measurements

)

select * from final
