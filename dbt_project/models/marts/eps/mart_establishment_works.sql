{#- Before/after comparison for each establishment with modernisation works: occupancy
    rate (mean of monthly residents / the places of that month, which works often change)
    and mean inspection score over the months reported before the works started and after
    they ended. capacity is the current one. -#}
with

occupancy as (

    select * from {{ ref('fct_establishment_occupancy') }}

),

establishments as (

    select * from {{ ref('dim_establishments') }}
    where has_works

),

capacities as (

    select * from {{ ref('int_establishment_capacities_tracked') }}

),

phased as (

    select
        occupancy.establishment_id,
        occupancy.residents,
        occupancy.inspection_score,
        capacities.capacity,
        {{ works_phase('occupancy.month_start_date', 'establishments.works_start_date', 'establishments.works_end_date') }}
            as works_phase

    from occupancy
    inner join establishments
        on occupancy.establishment_id = establishments.establishment_id
    inner join capacities
        on occupancy.establishment_id = capacities.establishment_id
        and {{ valid_at('capacities', 'occupancy.month_start_date') }}

),

compared as (

    select
        establishment_id,
        {{ jisr.count_if("works_phase = 'before_works'") }} as months_before,
        {{ jisr.count_if("works_phase = 'after_works'") }} as months_after,
        {{ jisr.exact_avg("case when works_phase = 'before_works' then " ~ jisr.to_double('residents') ~ " / capacity end") }}
            as occupancy_rate_before,
        {{ jisr.exact_avg("case when works_phase = 'after_works' then " ~ jisr.to_double('residents') ~ " / capacity end") }}
            as occupancy_rate_after,
        {{ jisr.exact_avg("case when works_phase = 'before_works' then inspection_score end") }} as mean_inspection_score_before,
        {{ jisr.exact_avg("case when works_phase = 'after_works' then inspection_score end") }} as mean_inspection_score_after

    from phased
    group by establishment_id

),

final as (

    select
        establishments.establishment_id,
        establishments.establishment_type,
        establishments.region_code,
        establishments.capacity,
        establishments.works_start_date,
        establishments.works_end_date,
        establishments.works_status,
        coalesce(compared.months_before, 0) as months_before,
        coalesce(compared.months_after, 0) as months_after,
        compared.occupancy_rate_before,
        compared.occupancy_rate_after,
        compared.occupancy_rate_after - compared.occupancy_rate_before as occupancy_rate_change,
        compared.mean_inspection_score_before,
        compared.mean_inspection_score_after

    from establishments
    left join compared
        on establishments.establishment_id = compared.establishment_id

)

select * from final
