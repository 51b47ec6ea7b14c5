{#- History of each registered person (slowly changing dimension, type 2), rebuilt from
    every record the registry delivered, current or superseded:
    1. a corrected re-delivery of a month replaces the earlier delivery of that month as
       a whole: ingestion marks the earlier delivery `superseded` in its delivery log, so
       only the records of deliveries the log (stg_ingest__deliveries) shows as `loaded`
       count;
    2. records are ordered like ingestion's supersede rule (batch, then load time, then
       row) and consecutive records with identical attributes are merged;
    3. a version is valid from the first day of the month of the extract that first showed
       it until the next version starts; the first version of a person is taken to hold
       since 1900-01-01 so that every event of the person finds a version. -#}
{%- set tracked = ['household_key', 'sex', 'birth_date', 'region_code', 'province_code', 'commune_code',
                   'area_type', 'socio_economic_score', 'has_disability', 'registered_date'] %}

with

beneficiary_versions as (

    select * from {{ ref('stg_msisf__beneficiary_versions') }}

),

loaded_deliveries as (

    select delivery_id

    from {{ ref('stg_ingest__deliveries') }}
    where status = 'loaded'

),

live_records as (

    select beneficiary_versions.*

    from beneficiary_versions
    inner join loaded_deliveries
        on beneficiary_versions._delivery_id = loaded_deliveries.delivery_id

),

records_per_person as (

    select
        person_key,
        count(*) as records_count

    from live_records
    group by person_key

),

{#- Most people have a single record: one version, no window needed. -#}
single_records as (

    select
        live_records.*,
        1 as version_number,
        cast(null as date) as next_version_from

    from live_records
    inner join records_per_person
        on live_records.person_key = records_per_person.person_key
    where records_per_person.records_count = 1

),

repeated_records as (

    select live_records.*

    from live_records
    inner join records_per_person
        on live_records.person_key = records_per_person.person_key
    where records_per_person.records_count > 1

),

ranked_in_batch as (

    select
        *,
        row_number() over (
            partition by person_key, _batch
            order by _loaded_at desc, _source_row desc
        ) as rank_in_batch

    from repeated_records

),

latest_in_batch as (

    select * from ranked_in_batch
    where rank_in_batch = 1

),

signed as (

    select
        *,
        {{ dbt.concat(sql_signature_parts(tracked)) }} as attribute_signature

    from latest_in_batch

),

compared as (

    select
        *,
        lag(attribute_signature) over (
            partition by person_key
            order by _batch, _loaded_at, _source_row
        ) as previous_signature

    from signed

),

changes as (

    select * from compared
    where previous_signature is null
       or previous_signature <> attribute_signature

),

numbered as (

    select
        *,
        row_number() over (partition by person_key order by _batch, _loaded_at, _source_row) as version_number,
        lead({{ jisr.month_start_of_text('_batch') }}) over (
            partition by person_key
            order by _batch, _loaded_at, _source_row
        ) as next_version_from

    from changes

),

versions as (

    {%- set columns = ['person_key', 'version_number', 'next_version_from', '_batch', '_delivery_id'] + tracked %}
    select {{ columns | join(', ') }} from single_records
    union all
    select {{ columns | join(', ') }} from numbered

),

final as (

    select
        {{ dbt.concat(['cast(person_key as ' ~ dbt.type_string() ~ ')', "'-'", 'cast(version_number as ' ~ dbt.type_string() ~ ')']) }} as beneficiary_version_id,
        person_key,
        version_number,
        {%- for column in tracked %}
        {{ column }},
        {%- endfor %}
        case
            when version_number = 1 then cast('1900-01-01' as date)
            else {{ jisr.month_start_of_text('_batch') }}
        end as valid_from,
        next_version_from as valid_to,
        next_version_from is null as is_current,
        _batch as first_seen_batch,
        _delivery_id as first_seen_delivery_id

    from versions

)

select * from final
