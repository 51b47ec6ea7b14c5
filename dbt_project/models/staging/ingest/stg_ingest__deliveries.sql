{#- The raw store's delivery log (internal), passed through for the quality marts and for
    the beneficiary history (which deliveries are still loaded). -#}
with

source as (

    select * from {{ source('meta', 'deliveries') }}

),

renamed as (

    select
        delivery_id,
        source,
        partner,
        file_name,
        batch,
        content_hash,
        size_bytes,
        received_at,
        modified_at,
        loaded_at,
        run_id,
        status,
        rows_delivered,
        rows_loaded,
        rows_quarantined,
        reason,
        warnings,
        contract_version,
        code_version,
        superseded_by

    from source

)

select * from renamed
