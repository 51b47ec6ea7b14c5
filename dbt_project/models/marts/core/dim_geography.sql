{#- Administrative geography from the reference seeds: commune > province > region. -#}
with

regions as (

    select * from {{ ref('geo_regions') }}

),

provinces as (

    select * from {{ ref('geo_provinces') }}

),

communes as (

    select * from {{ ref('geo_communes') }}

),

final as (

    select
        communes.commune_code,
        communes.commune_name_fr,
        communes.area_type,
        provinces.province_code,
        provinces.province_name_fr,
        regions.region_code,
        regions.region_name_fr,
        regions.region_name_ar

    from communes
    inner join provinces
        on communes.province_code = provinces.province_code
    inner join regions
        on provinces.region_code = regions.region_code

)

select * from final
