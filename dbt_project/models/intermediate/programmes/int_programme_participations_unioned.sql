{#- Every way a person takes part in a programme, across action lines: an enrolment
    (social programmes), a loan (inclusive finance) or a venture they promote (social
    incubation). The basis of "beneficiaries reached". -#}
with

enrolments as (

    select * from {{ ref('stg_msisf__enrolments') }}

),

loans as (

    select * from {{ ref('stg_cdg_finance__loans') }}

),

ventures as (

    select * from {{ ref('stg_cdg_incubation__ventures') }}

),

unioned as (

    select
        'enrolment' as participation_type,
        enrolment_id as participation_source_id,
        person_key,
        programme_code,
        entry_date as start_date,
        exit_date as end_date

    from enrolments

    union all

    select
        'loan' as participation_type,
        loan_id as participation_source_id,
        person_key,
        programme_code,
        disbursement_date as start_date,
        written_off_date as end_date

    from loans

    union all

    select
        'venture' as participation_type,
        venture_id as participation_source_id,
        promoter_person_key as person_key,
        programme_code,
        incubation_start_date as start_date,
        incubation_end_date as end_date

    from ventures

),

final as (

    select
        {{ dbt.concat(['participation_type', "':'", 'participation_source_id']) }} as participation_id,
        participation_type,
        participation_source_id,
        person_key,
        programme_code,
        start_date,
        end_date

    from unioned

)

select * from final
