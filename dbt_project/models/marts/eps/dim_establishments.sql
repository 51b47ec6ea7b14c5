with

establishments as (

    select * from {{ ref('stg_eps__establishments') }}

),

final as (

    select
        establishment_id,
        establishment_name,
        establishment_type,
        region_code,
        province_code,
        commune_code,
        capacity,
        programme_code,
        works_start_date,
        works_end_date,
        works_start_date is not null as has_works,
        case
            when works_start_date is null then 'none'
            when works_start_date > {{ jisr.reference_date() }} then 'planned'
            when works_end_date is null or works_end_date > {{ jisr.reference_date() }} then 'in_progress'
            else 'completed'
        end as works_status

    from establishments

)

select * from final
