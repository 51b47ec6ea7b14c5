{#- Every delivered establishment record, current or superseded: the input of the
    capacity history (int_establishment_capacities_tracked). It reads the same source as
    stg_eps__establishments on purpose (see the source's meta.history_model). -#}
with

source as (

    select * from {{ source('raw', 'establishments') }}

),

renamed as (

    select
        establishment_id,
        capacity,
        _is_current as is_current_record,
        _delivery_id,
        _batch,
        _loaded_at,
        _source_row

    from source

)

select * from renamed
