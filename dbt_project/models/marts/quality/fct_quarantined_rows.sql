{#- The quarantine ledger: every delivered row set aside, once per rule it broke, across all
    runs. The rule kind groups rules for the scorecard: completeness (a required value is
    missing), uniqueness (a key appears twice in a delivery, or is already loaded from
    another batch) and validity (everything else:
    type, pattern, code list, range, reference, contract rule, Great Expectations). The
    row's values and the message stay in the raw store (and the partner's feedback file). -#}
with

quarantined as (

    select * from {{ ref('stg_ingest__quarantined_rows') }}

),

classified as (

    select
        quarantined.*,
        case
            when rule like 'gx:%' then 'gx'
            when rule = 'duplicate_key' then 'duplicate_key'
            else {{ dbt.split_part('rule', "':'", 1) }}
        end as rule_kind,
        case
            when rule like 'required:%' then 'completeness'
            when rule like 'gx:expect_column_values_to_not_be_null:%'
                and {{ dbt.right('rule', 7) }} != '__typed' then 'completeness'
            when rule in ('duplicate_key', 'key_in_other_batch') or rule like 'gx:expect_%_to_be_unique:%' then 'uniqueness'
            else 'validity'
        end as quality_dimension

    from quarantined

),

final as (

    select
        delivery_id,
        source_row,
        rule,
        rule_kind,
        quality_dimension,
        rule like 'gx:%' as is_great_expectations_rule,
        source as source_name,
        file_name,
        content_hash,
        column_name,
        run_id,
        first_seen_at,
        resolved_by_delivery as resolved_by_delivery_id,
        resolved_by_delivery is not null as is_resolved,
        -- the reason stopped holding at a later pass (the row it depended on was loaded); the
        -- row was loaded into its own delivery once it had no reason left
        coalesce(resolved_by_delivery = delivery_id, false) as is_cleared

    from classified

)

select * from final
