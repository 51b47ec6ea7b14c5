{#- Data-quality scorecard of each partner, month by month. Rows are counted in the files
    that were read (rejected files count as files, not rows). A row failing several rules
    of one dimension counts once in that dimension:
      completeness = share of delivered rows with every required value,
      validity     = share of delivered rows breaking no type, format, code-list, range,
                     reference or contract rule,
      uniqueness   = share of delivered rows whose key is neither repeated in its delivery
                     nor current in another batch (key_in_other_batch),
      share_quarantined = rows set aside / rows delivered (a row can fail several dimensions),
      timeliness   = delivery lag in days after the end of the batch month.
    Trends compare each month with the partner's previous delivered month. -#}
with

deliveries as (

    select * from {{ ref('fct_deliveries') }}

),

quarantined_rows as (

    select * from {{ ref('fct_quarantined_rows') }}

),

delivered as (

    select
        partner,
        delivery_month,
        count(*) as files_count,
        {{ jisr.count_if('is_rejected') }} as rejected_files_count,
        {{ jisr.count_if('is_superseded') }} as superseded_files_count,
        {{ jisr.sum_counts('delivered_rows_count') }} as delivered_rows_count,
        {{ jisr.sum_counts('loaded_rows_count') }} as loaded_rows_count,
        {{ jisr.sum_counts('quarantined_rows_count') }} as quarantined_rows_count,
        {{ jisr.exact_avg('delivery_lag_days') }} as mean_delivery_lag_days,
        max(delivery_lag_days) as max_delivery_lag_days

    from deliveries
    group by partner, delivery_month

),

failing_rows as (

    select distinct
        quarantined_rows.delivery_id,
        quarantined_rows.source_row,
        quarantined_rows.quality_dimension,
        deliveries.partner,
        deliveries.delivery_month

    from quarantined_rows
    inner join deliveries
        on quarantined_rows.delivery_id = deliveries.delivery_id
    where not quarantined_rows.is_cleared

),

failing as (

    select
        partner,
        delivery_month,
        {{ jisr.count_if("quality_dimension = 'completeness'") }} as incomplete_rows_count,
        {{ jisr.count_if("quality_dimension = 'validity'") }} as invalid_rows_count,
        {{ jisr.count_if("quality_dimension = 'uniqueness'") }} as duplicate_rows_count

    from failing_rows
    group by partner, delivery_month

),

scored as (

    select
        delivered.partner,
        delivered.delivery_month,
        {{ jisr.month_start_of_text('delivered.delivery_month') }} as delivery_month_start_date,
        delivered.files_count,
        delivered.rejected_files_count,
        delivered.superseded_files_count,
        delivered.delivered_rows_count,
        delivered.loaded_rows_count,
        delivered.quarantined_rows_count,
        coalesce(failing.incomplete_rows_count, 0) as incomplete_rows_count,
        coalesce(failing.invalid_rows_count, 0) as invalid_rows_count,
        coalesce(failing.duplicate_rows_count, 0) as duplicate_rows_count,
        1 - {{ jisr.safe_divide('coalesce(failing.incomplete_rows_count, 0)', 'delivered.delivered_rows_count') }}
            as completeness,
        1 - {{ jisr.safe_divide('coalesce(failing.invalid_rows_count, 0)', 'delivered.delivered_rows_count') }}
            as validity,
        1 - {{ jisr.safe_divide('coalesce(failing.duplicate_rows_count, 0)', 'delivered.delivered_rows_count') }}
            as uniqueness,
        {{ jisr.safe_divide('delivered.quarantined_rows_count', 'delivered.delivered_rows_count') }}
            as share_quarantined,
        {{ jisr.safe_divide('delivered.rejected_files_count', 'delivered.files_count') }} as share_files_rejected,
        delivered.mean_delivery_lag_days,
        delivered.max_delivery_lag_days

    from delivered
    left join failing
        on delivered.partner = failing.partner
        and delivered.delivery_month = failing.delivery_month

),

{#- Over the calendar months: this month and the two before it (a month without delivered
    rows adds nothing; with none in the three months, null). -#}
three_months as (

    select
        scored.partner,
        scored.delivery_month,
        {{ jisr.exact_avg('earlier.share_quarantined') }} as share_quarantined_3_month_mean

    from scored
    inner join scored as earlier
        on earlier.partner = scored.partner
        and earlier.delivery_month_start_date <= scored.delivery_month_start_date
        and earlier.delivery_month_start_date
            >= {{ jisr.add_months('scored.delivery_month_start_date', -2) }}
    group by scored.partner, scored.delivery_month

),

trended as (

    select
        scored.*,
        lag(scored.delivery_month) over by_partner as previous_delivery_month,
        scored.share_quarantined - lag(scored.share_quarantined) over by_partner as share_quarantined_change,
        scored.completeness - lag(scored.completeness) over by_partner as completeness_change,
        scored.validity - lag(scored.validity) over by_partner as validity_change,
        scored.mean_delivery_lag_days - lag(scored.mean_delivery_lag_days) over by_partner
            as delivery_lag_change_days,
        three_months.share_quarantined_3_month_mean

    from scored
    left join three_months
        on scored.partner = three_months.partner
        and scored.delivery_month = three_months.delivery_month
    window by_partner as (partition by scored.partner order by scored.delivery_month)

),

final as (

    select
        partner,
        delivery_month,
        delivery_month_start_date,
        files_count,
        rejected_files_count,
        superseded_files_count,
        delivered_rows_count,
        loaded_rows_count,
        quarantined_rows_count,
        incomplete_rows_count,
        invalid_rows_count,
        duplicate_rows_count,
        completeness,
        validity,
        uniqueness,
        share_quarantined,
        share_files_rejected,
        mean_delivery_lag_days,
        max_delivery_lag_days,
        previous_delivery_month,
        share_quarantined_change,
        completeness_change,
        validity_change,
        delivery_lag_change_days,
        share_quarantined_3_month_mean,
        case
            when previous_delivery_month is null then 'first month'
            when share_quarantined_change is null then 'not comparable'
            when share_quarantined_change < -0.001 then 'improving'
            when share_quarantined_change > 0.001 then 'worsening'
            else 'stable'
        end as quality_trend

    from trended

)

select * from final
