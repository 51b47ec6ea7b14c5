-- The current version of every person in the beneficiary history is the current
-- registry record (same place, household and score), and nobody is missing.
-- Reported in Dagster as a check of dim_beneficiaries (it reads several models).
{{ config(meta={'dagster': {'ref': {'name': 'dim_beneficiaries'}}}) }}
with

registry as (

    select * from {{ ref('stg_msisf__beneficiaries') }}

),

current_versions as (

    select * from {{ ref('dim_beneficiaries') }}
    where is_current

)

select
    coalesce(registry.person_key, current_versions.person_key) as person_key,
    registry.commune_code as registry_commune_code,
    current_versions.commune_code as dimension_commune_code

from registry
full outer join current_versions
    on registry.person_key = current_versions.person_key
where registry.person_key is null
   or current_versions.person_key is null
   or registry.commune_code <> current_versions.commune_code
   or registry.household_key <> current_versions.household_key
   or registry.socio_economic_score <> current_versions.socio_economic_score
