"""What each table and column of schema ``impact`` holds, for the people who read them.

The impact stage writes these as table and column comments (DuckDB's ``COMMENT ON``), as
dbt's ``persist_docs`` does for the marts; the publication copies them into the serving
warehouse and ``jisr publish-postgres`` into PostgreSQL, where BI tools and ``jisr sql``
show them as descriptions. A column is described once by its name; :data:`PER_TABLE`
overrides a name whose meaning differs in one table. ``tests/test_impact.py`` checks that
every column of :data:`impact.run.TABLES` has a description.
"""

from __future__ import annotations

TABLE_DESCRIPTIONS: dict[str, str] = {
    "impact_estimates": (
        "One row per study x programme x outcome x estimator x subgroup: the estimated impact of the "
        "programme on the outcome (treated against comparison units of the study), its standard error, "
        "confidence interval, p-value, sample sizes and group means. Rows that the data cannot support "
        "are not_estimable with the reason; groups of fewer than k units are withheld."
    ),
    "impact_pretrends": (
        "One row per study x programme x outcome x event-study estimator x subgroup x round: the "
        "treated-comparison difference in the change of the outcome since baseline at each round "
        "(round 0, the baseline, is the reference), and on every row of a line the joint test that the "
        "pre-baseline differences are zero (parallel trends before the programme)."
    ),
    "impact_balance": (
        "One row per study x programme x baseline covariate: the covariate's means in the treated and "
        "comparison groups and their standardised mean difference, before and after inverse-probability "
        "weighting of the comparison group."
    ),
    "impact_attrition": (
        "One row per study x programme x outcome: the share of the units measured at baseline that are "
        "missing at endline in each group, the difference between the groups and its test."
    ),
    "impact_group_means": (
        "One row per study x programme x outcome x group (treated or comparison) x round: the mean of "
        "the outcome and its standard error (the parallel-trends picture of the evaluation report)."
    ),
    "impact_cost_effectiveness": (
        "One row per study x programme x outcome: the programme's cost per beneficiary and the cost "
        "per unit of impact (cost per beneficiary / the estimate of the estimator chosen in "
        "config/evaluation.yml, cost_effectiveness.estimator, or of a covariate-adjusted one, as "
        "the report's headline, when the pre-trend test rejects; column estimator says which), "
        "with the interval the estimate's confidence interval gives."
    ),
}

COLUMN_DESCRIPTIONS: dict[str, str] = {
    # keys
    "study_id": "Study (evaluation survey) the figures come from.",
    "programme_code": "Programme evaluated.",
    "outcome": "Outcome variable of the study's survey.",
    "estimator": "Estimator name, as configured in config/evaluation.yml (its type and options: estimator_options).",
    "subgroup": "Units estimated on: all, or one level of a subgroup dimension written dimension=value (sex=F).",
    "subgroup_dimension": "Dimension of the subgroup (sex, age_band, region_code, vulnerability_tercile); null for all units.",
    "subgroup_value": "Level of the subgroup dimension; null for all units.",
    "round_index": "Survey round: 0 the baseline, negative before it, the largest the endline.",
    "round_label": "Name of the survey round (pre_baseline, baseline, midline, endline, ...).",
    # estimates
    "estimate": "Estimated impact: treated minus comparison, in the outcome's unit.",
    "std_error": "Standard error of the estimate (of the configured type: cov_type in estimator_options).",
    "ci_low": "Lower bound of the confidence interval of the estimate.",
    "ci_high": "Upper bound of the confidence interval of the estimate.",
    "ci_level": "Confidence level of the interval (0.95: 95%).",
    "p_value": "Two-sided p-value of the estimate against no effect.",
    "n_treated": (
        "Treated units in the estimation sample, the units the estimate rests on (the event study's: those observed "
        "at baseline and endline, behind its endline coefficient, as the DiD's; its stacked regression's are in "
        "estimator_options). Null when withheld: fewer than k, or it would give back such a group."
    ),
    "n_comparison": "Comparison units in the estimation sample (as n_treated; null when withheld).",
    "n_clusters": "Clusters of the estimation sample, which the standard errors are clustered on (null when withheld).",
    "baseline_mean_treated": "Mean of the outcome at baseline, treated units of the sample.",
    "baseline_mean_comparison": "Mean of the outcome at baseline, comparison units of the sample.",
    "endline_mean_treated": "Mean of the outcome at endline, treated units of the sample.",
    "endline_mean_comparison": "Mean of the outcome at endline, comparison units of the sample.",
    "estimator_options": (
        "How the estimate was computed (JSON): estimator type, standard errors, covariates used and dropped, propensity "
        "model, ... The event study's whole-sample row also counts the units and clusters of its stacked regression "
        "(observed at baseline and in any other round): stacked_treated, stacked_comparison, stacked_clusters (null "
        "when withheld; not given for subgroups). Its endline coefficient rests on the row's units: the other rounds' "
        "only enter its standard error's small-sample correction and degrees of freedom."
    ),
    "status": "ok (figures computed), not_estimable (the data cannot support them, or a group is withheld: see reason) or failed (the computation raised: see reason).",
    "reason": "Why a row is not_estimable or failed, or a warning on an ok row; null otherwise.",
    # pre-trends
    "is_pre": "The round is before the baseline (its coefficient tests parallel trends).",
    "is_reference": "The reference round (the baseline): its coefficient is 0 by construction.",
    "joint_test": "Test of the pre-baseline coefficients being all zero.",
    "joint_statistic": "Statistic of the joint pre-trend test.",
    "joint_df": "Degrees of freedom of the joint pre-trend test (pre-baseline rounds tested).",
    "joint_p_value": "p-value of the joint pre-trend test (a small value casts doubt on parallel trends).",
    "joint_status": "ok, not_estimable or failed, for the joint pre-trend test.",
    "joint_reason": "Why the joint pre-trend test is not_estimable or failed.",
    # balance
    "covariate": "Baseline covariate compared between the groups.",
    "mean_treated": "Mean of the covariate, treated units.",
    "mean_comparison": "Mean of the covariate, comparison units.",
    "smd_before": "Standardised mean difference before weighting: (mean treated - mean comparison) / pooled standard deviation.",
    "mean_treated_weighted": "Mean of the covariate, treated units kept within the propensity bounds.",
    "mean_comparison_weighted": "Weighted mean of the covariate, comparison units (inverse-probability weights).",
    "smd_after": "Standardised mean difference after weighting (same denominator as smd_before, so the two compare).",
    "n_trimmed": "Units dropped by the propensity bounds (null when it would give back a count of fewer than k).",
    "weighting": "The weighting applied (ATT inverse-probability weights and the propensity bounds).",
    # attrition
    "endline_round": "Round counted as the endline.",
    "n_baseline_treated": "Treated units measured at baseline.",
    "n_missing_treated": "Of those, units missing at endline.",
    "share_missing_treated": "n_missing_treated / n_baseline_treated.",
    "n_baseline_comparison": "Comparison units measured at baseline.",
    "n_missing_comparison": "Of those, units missing at endline.",
    "share_missing_comparison": "n_missing_comparison / n_baseline_comparison.",
    "difference": "share_missing_treated - share_missing_comparison (differential attrition).",
    "test": "Test of the difference (a linear probability model of missing on treatment, and its standard errors).",
    # group means
    "treatment_group": "treated or comparison.",
    "n_units": "Units of the group measured in the round (null when withheld).",
    "mean": "Mean of the outcome in the group and round.",
    # cost-effectiveness
    "programme_name": "Name of the programme.",
    "action_line": "Action line of the partnership the programme belongs to.",
    "outcome_direction": "higher_is_better or lower_is_better: which sign of the estimate is a benefit.",
    "cost_basis": "What the cost per beneficiary is: mart (marts.mart_programme_costs, with its own basis), transfers_paid or budget per beneficiary reached.",
    "budget_mad": "Programme budget (MAD).",
    "transfers_paid_mad": "Transfers paid by the programme (MAD).",
    "beneficiaries_reached": "People the programme reached.",
    "cost_per_beneficiary_mad": "Cost per beneficiary (MAD), on cost_basis.",
    "cost_per_unit_impact_mad": (
        "Cost per beneficiary / the benefit the estimate measures (MAD per unit of the outcome; for an outcome "
        "of outcome_scale binary or proportion, per 1.0 = 100 percentage points: a hundredth of it per point)."
    ),
    "outcome_scale": (
        "binary when every measured value of the outcome is 0 or 1, proportion when every one is between 0 and 1 "
        "(a rate or a share: estimates are shares, 0.05 = 5 percentage points), else continuous."
    ),
    "cost_per_unit_impact_ci_low": "Cost per unit of impact at the upper end of the estimate's confidence interval.",
    "cost_per_unit_impact_ci_high": "Cost per unit of impact at the lower end of the estimate's confidence interval (null when that end is no benefit: ci_unbounded).",
    # lineage
    "run_id": "Dagster run (refresh) that computed the row.",
    "code_version": "Version of the Jisr code that computed the row (git describe: commit, -dirty.<hash of the local changes> with local changes).",
    "estimated_at": "When the estimates were computed (UTC).",
}

PER_TABLE: dict[tuple[str, str], str] = {
    ("impact_pretrends", "estimate"): (
        "Treated-comparison difference in the change of the outcome from baseline to this round (0 for the reference)."
    ),
    ("impact_pretrends", "std_error"): "Standard error of the round's coefficient.",
    ("impact_pretrends", "ci_low"): "Lower bound of the confidence interval of the round's coefficient.",
    ("impact_pretrends", "ci_high"): "Upper bound of the confidence interval of the round's coefficient.",
    ("impact_pretrends", "p_value"): "p-value of the round's coefficient against zero.",
    ("impact_pretrends", "status"): (
        "ok, not_estimable or failed, for the event study of the line; not_estimable on the endline round alone when "
        "its coefficient, the line's estimate in impact_estimates, is withheld there (see reason)."
    ),
    ("impact_balance", "n_treated"): "Treated units with every covariate observed (null when withheld).",
    ("impact_balance", "n_comparison"): "Comparison units with every covariate observed (null when withheld).",
    ("impact_balance", "status"): "ok (means and differences computed) or not_estimable (see reason).",
    ("impact_attrition", "std_error"): "Standard error of the difference.",
    ("impact_attrition", "p_value"): "p-value of the difference against no differential attrition.",
    ("impact_attrition", "lee_bound_low"): (
        "Lee (2009) lower bound of the endline difference in means (treated - comparison) of the units measured at "
        "baseline, for the units observed whatever their group: the outcomes of the group observed more often trimmed "
        "by lee_trimmed_share. Valid under random assignment and attrition moved one way only by it."
    ),
    ("impact_attrition", "lee_bound_high"): "Lee (2009) upper bound of that difference (see lee_bound_low).",
    ("impact_attrition", "lee_trimmed_group"): "The group whose observed outcomes the Lee bounds trim (the one observed more often).",
    ("impact_attrition", "lee_trimmed_share"): (
        "Share of that group's observed outcomes trimmed: (its share observed - the other's) / its share observed; "
        "0 when both are observed alike (both bounds are then the difference in means). The share times its observed "
        "units are trimmed, a fraction of a unit too (the unit at the quantile counts for the part of it kept)."
    ),
    ("impact_attrition", "lee_ci_low"): (
        "Lower end of the Imbens-Manski (2004) confidence interval of the effect bounded by the Lee bounds, at the "
        "configured level (1 - alpha, the estimates' ci_level): it covers the effect, wherever it lies between the bounds, "
        "with that probability. From the bounds' standard errors (Lee 2009), clustered like the estimates' when they "
        "are. Null with the bounds, or when they have no standard error (see reason)."
    ),
    ("impact_attrition", "lee_ci_high"): "Upper end of that confidence interval (see lee_ci_low).",
    ("impact_attrition", "status"): "ok (shares computed, and tested where there is anything to test: see reason) or not_estimable.",
    ("impact_group_means", "std_error"): (
        "Standard error of the mean, of the study's type (clustered on the unit of assignment, like its estimates)."
    ),
    ("impact_group_means", "reason"): "Why the group's figures are withheld; null otherwise.",
    ("impact_cost_effectiveness", "estimator"): "Estimator whose estimate the cost is divided by (cost_effectiveness.estimator).",
    ("impact_cost_effectiveness", "estimate"): "That estimator's estimate on all units of the study (subgroup all).",
    ("impact_cost_effectiveness", "ci_low"): "Lower bound of its confidence interval.",
    ("impact_cost_effectiveness", "ci_high"): "Upper bound of its confidence interval.",
    ("impact_cost_effectiveness", "status"): (
        "ok (benefit over the whole interval: finite bounds), ci_unbounded (beneficial estimate whose interval "
        "reaches no benefit), no_beneficial_effect (no ratio) or not_estimable (no usable estimate or cost: see reason)."
    ),
}


def describe(table: str, columns: list[str] | tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The comment of ``table`` and of each of its ``columns`` (KeyError for one not described)."""
    return TABLE_DESCRIPTIONS[table], {c: PER_TABLE.get((table, c)) or COLUMN_DESCRIPTIONS[c] for c in columns}
