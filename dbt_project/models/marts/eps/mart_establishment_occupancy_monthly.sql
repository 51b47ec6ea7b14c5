{#- Occupancy of social protection establishments by month, region, establishment type
    and phase of modernisation works (before, during, after works, or no works).
    Occupancy rate = residents at month end / capacity, over the establishments that
    reported that month, each with the places it had that month
    (int_establishment_capacities_tracked). -#}
with

occupancy as (

    select * from {{ ref('fct_establishment_occupancy') }}

),

establishments as (

    select * from {{ ref('dim_establishments') }}

),

capacities as (

    select * from {{ ref('int_establishment_capacities_tracked') }}

),

phased as (

    select
        occupancy.*,
        establishments.region_code,
        establishments.establishment_type,
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

final as (

    select
        report_month,
        month_start_date,
        region_code,
        establishment_type,
        works_phase,
        count(*) as establishments_reporting,
        {{ jisr.sum_counts('capacity') }} as capacity,
        {{ jisr.sum_counts('residents') }} as residents,
        {{ jisr.sum_counts('admissions') }} as admissions,
        {{ jisr.sum_counts('departures') }} as departures,
        {{ jisr.safe_divide('sum(residents)', 'sum(capacity)') }} as occupancy_rate,
        {{ jisr.count_if('has_inspection') }} as inspections,
        {{ jisr.exact_avg('inspection_score') }} as mean_inspection_score

    from phased
    group by
        report_month,
        month_start_date,
        region_code,
        establishment_type,
        works_phase

)

select * from final
