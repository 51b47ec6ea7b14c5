{#- Loan instalments with their settlement and days past due on the reference date.
    An instalment is settled when a payment of at least the amount due (principal +
    interest, to the centime) is recorded; a partial payment leaves it overdue.
    Incremental by instalment: instalments whose current record is not the one the fact
    holds are replaced (latest_per_key), and so are those whose days past due can move
    with the reference date (still unsettled, or settled after it: a reference date
    pinned earlier, --vars '{reference_date: ...}') and those of a loan whose borrower or
    programme changed; instalments with no current record any more are removed; other
    settled history is not rebuilt. -#}
{{
    config(
        materialized=jisr.incremental_materialization('upsert_key'),
        incremental_strategy=jisr.incremental_strategy('upsert_key'),
        unique_key='instalment_id',
        on_schema_change='append_new_columns',
        post_hook=["{{ jisr.delete_vanished(ref('stg_cdg_finance__repayments'), 'instalment_id') }}"],
    )
}}

with

repayments as (

    select * from {{ ref('stg_cdg_finance__repayments') }}
    {%- if is_incremental() %}
    where instalment_id in ({{ jisr.changed_keys(ref('stg_cdg_finance__repayments'), 'instalment_id') }})
       or instalment_id in (
           select instalment_id from {{ this }}
           where not is_settled or paid_date > {{ jisr.reference_date() }}
       )
       or loan_id in (
           select changed.loan_id
           from {{ ref('stg_cdg_finance__loans') }} as changed
           inner join {{ this }} as existing
               on existing.loan_id = changed.loan_id
           where existing.person_key <> changed.person_key  -- both required by the loans contract
              or existing.programme_code <> changed.programme_code
       )
    {%- endif %}

),

loans as (

    select * from {{ ref('stg_cdg_finance__loans') }}

),

settled as (

    select
        repayments.*,
        repayments.principal_due_mad + coalesce(repayments.interest_due_mad, 0) as amount_due_mad,
        repayments.paid_date is not null
            and coalesce(repayments.amount_paid_mad, 0)
                >= repayments.principal_due_mad + coalesce(repayments.interest_due_mad, 0) as is_settled

    from repayments

),

final as (

    select
        settled.instalment_id,
        settled.loan_id,
        loans.person_key,
        loans.programme_code,
        settled.instalment_number,
        settled.due_date,
        {{ jisr.month_text('settled.due_date') }} as due_month,
        settled.principal_due_mad,
        settled.interest_due_mad,
        settled.amount_due_mad,
        settled.paid_date,
        settled.amount_paid_mad,
        settled.is_settled,
        case when settled.is_settled then settled.paid_date end as settled_date,
        case
            when settled.is_settled
                then greatest({{ jisr.days_between('settled.due_date', 'settled.paid_date') }}, 0)
        end as days_late_at_settlement,
        case
            when settled.due_date >= {{ jisr.reference_date() }} then 0
            when settled.is_settled and settled.paid_date <= {{ jisr.reference_date() }} then 0
            else {{ jisr.days_between('settled.due_date', jisr.reference_date()) }}
        end as days_past_due,
        settled._delivery_id,
        settled._batch,
        settled._loaded_at,
        {{ jisr.build_lineage_columns() }}

    from settled
    left join loans
        on settled.loan_id = loans.loan_id

)

select * from final
