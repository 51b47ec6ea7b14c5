{#- The raw store's quarantine ledger (internal), passed through for the quality marts. -#}
with

source as (

    select * from {{ source('quarantine', 'rows') }}

),

renamed as (

    select
        delivery_id,
        source,
        file_name,
        content_hash,
        source_row,
        rule,
        column_name,
        message,
        values_json,
        run_id,
        first_seen_at,
        resolved_by_delivery

    from source

)

select * from renamed
