{#- Places of each establishment over time (slowly changing, type 2), rebuilt from every
    delivered establishments record like the beneficiary history
    (int_beneficiary_versions_tracked):
    1. only the records of deliveries the delivery log shows as `loaded` count (a
       corrected re-delivery of a month replaces the earlier one as a whole);
    2. the latest record of an establishment in a batch wins (load time, then row), and
       consecutive batches stating the same capacity are merged;
    3. a capacity holds from the first day of the month of the file that first stated it
       (the first one from 1900-01-01, so every report finds a capacity) until the next. -#}
with

establishment_versions as (

    select * from {{ ref('stg_eps__establishment_versions') }}

),

loaded_deliveries as (

    select delivery_id

    from {{ ref('stg_ingest__deliveries') }}
    where status = 'loaded'

),

live_records as (

    select establishment_versions.*

    from establishment_versions
    inner join loaded_deliveries
        on establishment_versions._delivery_id = loaded_deliveries.delivery_id

),

ranked_in_batch as (

    select
        *,
        row_number() over (
            partition by establishment_id, _batch
            order by _loaded_at desc, _source_row desc
        ) as rank_in_batch

    from live_records

),

latest_in_batch as (

    select * from ranked_in_batch
    where rank_in_batch = 1

),

compared as (

    select
        *,
        lag(capacity) over (partition by establishment_id order by _batch) as previous_capacity

    from latest_in_batch

),

changes as (

    select * from compared
    where previous_capacity is null
       or previous_capacity <> capacity

),

numbered as (

    select
        *,
        row_number() over (partition by establishment_id order by _batch) as version_number,
        lead({{ jisr.month_start_of_text('_batch') }}) over (
            partition by establishment_id
            order by _batch
        ) as next_version_from

    from changes

),

final as (

    select
        {{ dbt.concat(['establishment_id', "'-'", 'cast(version_number as ' ~ dbt.type_string() ~ ')']) }} as capacity_version_id,
        establishment_id,
        version_number,
        capacity,
        case
            when version_number = 1 then cast('1900-01-01' as date)
            else {{ jisr.month_start_of_text('_batch') }}
        end as valid_from,
        next_version_from as valid_to,
        next_version_from is null as is_current,
        _batch as first_seen_batch,
        _delivery_id as first_seen_delivery_id

    from numbered

)

select * from final
