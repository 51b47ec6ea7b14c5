"""The impact stage: panel in, estimates, diagnostics and a report out.

``run_impact`` reads ``detail.mart_evaluation_panel`` (and ``marts.mart_programme_costs``)
from a DuckDB warehouse, runs the configured estimators for every study x programme x
outcome x subgroup, and replaces the tables of schema ``impact`` in the same database:

``impact_estimates``           one row per study x programme x outcome x estimator x subgroup
``impact_pretrends``           event-study coefficients per round and the joint pre-trend test
``impact_balance``             standardised mean differences of baseline covariates, before
                               and after propensity weighting
``impact_attrition``           share of baseline units missing at endline, by group, and a test
``impact_group_means``         outcome means by group and round (parallel-trends picture)
``impact_cost_effectiveness``  cost per beneficiary and per unit of impact with its interval

A treated or comparison group of fewer than k units (k of ``config/disclosure.yml``) has
its size and means withheld in every table, and its row ``not_estimable`` with the reason.
Counts of 1 to k - 1 trimmed units are withheld with the figures that give them back, and
so is the size (with the means, when they are of the same outcome) of a sample of a group
that differs from another published one of the study x programme by 1 to k - 1 units
(every outcome, the group means, the balance and attrition tables, the event study's
stacked sample): such a row stays ``ok`` with NULL sizes, unless its estimate is a
difference of the group means (``diff_in_means``, ``did`` without covariates,
``event_study``, with its endline coefficient in ``impact_pretrends``), which is withheld
with them (:mod:`impact.disclosure`).

Every row carries ``run_id`` and ``code_version``. Nothing here imports dagster.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from impact import disclosure
from impact.config import EvaluationConfig, Propensity, load_config
from impact.descriptions import describe
from impact.estimators import (
    STATUS_NOT_ESTIMABLE,
    STATUS_OK,
    Estimate,
    Inference,
    NotEstimable,
    _check_sample,
    estimate,
    fit_propensity,
    standardized_mean_difference,
)
from impact.panel import COST_COLUMNS, COSTS_TABLE, PANEL_COLUMNS, PANEL_TABLE, PanelError, StudyData, build_study, check_panel

SCHEMA = "impact"

# Column name -> DuckDB type, in order: the documented shape of every output table.
TABLES: dict[str, dict[str, str]] = {
    "impact_estimates": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "outcome": "VARCHAR",
        "estimator": "VARCHAR",
        "subgroup": "VARCHAR",
        "subgroup_dimension": "VARCHAR",
        "subgroup_value": "VARCHAR",
        "estimate": "DOUBLE",
        "std_error": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "ci_level": "DOUBLE",
        "p_value": "DOUBLE",
        "n_treated": "BIGINT",
        "n_comparison": "BIGINT",
        "n_clusters": "BIGINT",
        "baseline_mean_treated": "DOUBLE",
        "baseline_mean_comparison": "DOUBLE",
        "endline_mean_treated": "DOUBLE",
        "endline_mean_comparison": "DOUBLE",
        "estimator_options": "VARCHAR",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
        "estimated_at": "TIMESTAMP",
    },
    "impact_pretrends": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "outcome": "VARCHAR",
        "estimator": "VARCHAR",
        "subgroup": "VARCHAR",
        "round_index": "BIGINT",
        "round_label": "VARCHAR",
        "is_pre": "BOOLEAN",
        "is_reference": "BOOLEAN",
        "estimate": "DOUBLE",
        "std_error": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "p_value": "DOUBLE",
        "joint_test": "VARCHAR",
        "joint_statistic": "DOUBLE",
        "joint_df": "BIGINT",
        "joint_p_value": "DOUBLE",
        "joint_status": "VARCHAR",
        "joint_reason": "VARCHAR",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
    },
    "impact_balance": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "covariate": "VARCHAR",
        "n_treated": "BIGINT",
        "n_comparison": "BIGINT",
        "mean_treated": "DOUBLE",
        "mean_comparison": "DOUBLE",
        "smd_before": "DOUBLE",
        "mean_treated_weighted": "DOUBLE",
        "mean_comparison_weighted": "DOUBLE",
        "smd_after": "DOUBLE",
        "n_trimmed": "BIGINT",
        "weighting": "VARCHAR",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
    },
    "impact_attrition": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "outcome": "VARCHAR",
        "endline_round": "BIGINT",
        "n_baseline_treated": "BIGINT",
        "n_missing_treated": "BIGINT",
        "share_missing_treated": "DOUBLE",
        "n_baseline_comparison": "BIGINT",
        "n_missing_comparison": "BIGINT",
        "share_missing_comparison": "DOUBLE",
        "difference": "DOUBLE",
        "std_error": "DOUBLE",
        "p_value": "DOUBLE",
        "test": "VARCHAR",
        "lee_bound_low": "DOUBLE",
        "lee_bound_high": "DOUBLE",
        "lee_trimmed_group": "VARCHAR",
        "lee_trimmed_share": "DOUBLE",
        "lee_ci_low": "DOUBLE",
        "lee_ci_high": "DOUBLE",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
    },
    "impact_group_means": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "outcome": "VARCHAR",
        "treatment_group": "VARCHAR",
        "round_index": "BIGINT",
        "round_label": "VARCHAR",
        "n_units": "BIGINT",
        "mean": "DOUBLE",
        "std_error": "DOUBLE",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
    },
    "impact_cost_effectiveness": {
        "study_id": "VARCHAR",
        "programme_code": "VARCHAR",
        "programme_name": "VARCHAR",
        "action_line": "VARCHAR",
        "outcome": "VARCHAR",
        "outcome_direction": "VARCHAR",
        "outcome_scale": "VARCHAR",
        "estimator": "VARCHAR",
        "estimate": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "cost_basis": "VARCHAR",
        "budget_mad": "DOUBLE",
        "transfers_paid_mad": "DOUBLE",
        "beneficiaries_reached": "BIGINT",
        "cost_per_beneficiary_mad": "DOUBLE",
        "cost_per_unit_impact_mad": "DOUBLE",
        "cost_per_unit_impact_ci_low": "DOUBLE",
        "cost_per_unit_impact_ci_high": "DOUBLE",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "run_id": "VARCHAR",
        "code_version": "VARCHAR",
    },
}

# impact_cost_effectiveness.status values
CE_OK = "ok"  # effect and its whole CI beneficial: finite interval
CE_UNBOUNDED = "ci_unbounded"  # beneficial point estimate, CI reaches zero: no finite upper bound
CE_NO_BENEFIT = "no_beneficial_effect"  # point estimate not beneficial: ratio not defined
CE_NOT_ESTIMABLE = "not_estimable"  # no usable estimate or no cost data


def _cost_estimate(estimates: list[dict], joint_p: float | None, config: EvaluationConfig) -> dict | None:
    """The whole-sample estimate of one outcome that cost-effectiveness divides by: the
    configured estimator's, unless the event study's joint pre-trend test rejects at
    ``alpha`` and it is not covariate-adjusted; then the first ``ok`` covariate-adjusted
    estimate (:data:`impact.report.ADJUSTED`), as the report's headline (an unadjusted
    DiD is biased when the groups trend apart)."""
    from impact.report import ADJUSTED

    whole = [r for r in estimates if r["subgroup"] == "all"]
    chosen = next((r for r in whole[::-1] if r["estimator"] == config.cost_estimator), None)
    diverging = joint_p is not None and not pd.isna(joint_p) and joint_p < config.alpha
    if diverging and config.cost_estimator not in ADJUSTED:
        for name in ADJUSTED:
            adjusted = next((r for r in whole[::-1] if r["estimator"] == name and r["status"] == STATUS_OK), None)
            if adjusted is not None:
                return adjusted
    return chosen


def _joint_p(pretrends: list[dict], outcome: str) -> float | None:
    """The joint pre-trend test's p-value of the whole sample for ``outcome`` (None: no test)."""
    for r in pretrends:
        if r["outcome"] == outcome and r["subgroup"] == "all" and _num(r.get("joint_p_value")) is not None:
            return _num(r["joint_p_value"])
    return None


@dataclass
class ImpactTables:
    estimates: pd.DataFrame
    pretrends: pd.DataFrame
    balance: pd.DataFrame
    attrition: pd.DataFrame
    group_means: pd.DataFrame
    cost_effectiveness: pd.DataFrame
    notes: list[str]
    # how the estimates were computed (not stored): study x programme x outcome groups, and
    # how many of them a worker process estimated (see evaluate)
    groups: int = 0
    groups_in_workers: int = 0

    def by_table(self) -> dict[str, pd.DataFrame]:
        return {
            "impact_estimates": self.estimates,
            "impact_pretrends": self.pretrends,
            "impact_balance": self.balance,
            "impact_attrition": self.attrition,
            "impact_group_means": self.group_means,
            "impact_cost_effectiveness": self.cost_effectiveness,
        }


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the table's columns and nullable dtypes."""
    columns = TABLES[table]
    frame = pd.DataFrame(rows, columns=list(columns))
    for name, sql_type in columns.items():
        if sql_type == "DOUBLE":
            frame[name] = pd.array([_num(v) for v in frame[name]], dtype="Float64")
        elif sql_type == "BIGINT":
            frame[name] = pd.array([None if _num(v) is None else int(v) for v in frame[name]], dtype="Int64")
        elif sql_type == "BOOLEAN":
            frame[name] = pd.array([None if v is None or v is pd.NA else bool(v) for v in frame[name]], dtype="boolean")
        elif sql_type == "VARCHAR":
            frame[name] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[name]], dtype="string")
    return frame


_num = disclosure.finite


# --------------------------------------------------------------------------------------
# evaluation


def _subgroups(units: pd.DataFrame, dimensions: tuple[str, ...]) -> list[tuple[str, str | None, str | None, pd.Index]]:
    out = [("all", None, None, units.index)]
    for dim in dimensions:
        values = units[dim].dropna()
        for level in sorted(values.unique(), key=lambda v: str(v)):
            label = str(int(level)) if isinstance(level, (float, np.floating)) and float(level).is_integer() else str(level)
            out.append((f"{dim}={label}", dim, label, values.index[values == level]))
    return out


def _programme_units(study: StudyData, programme: str, comparison: str) -> pd.DataFrame:
    units = study.units
    treated = (units["treated"] == 1) & (units["programme_code"] == programme)
    if comparison == "whole_study":
        comp = units["treated"] == 0
    else:
        comp = (units["treated"] == 0) & (units["programme_code"] == programme)
    return units.loc[treated | comp]


def _balance_rows(study_id: str, programme: str, units: pd.DataFrame, covariates: list[str], propensity: Propensity) -> list[dict]:
    rows: list[dict] = []
    base = {"study_id": study_id, "programme_code": programme}
    if not covariates:
        return [{**base, "covariate": None, "status": STATUS_NOT_ESTIMABLE, "reason": "no baseline covariates configured or measured"}]
    sample = units.dropna(subset=covariates)
    fit, fit_reason = None, None
    try:
        if (sample["treated"] == 1).sum() == 0 or (sample["treated"] == 0).sum() == 0:
            raise NotEstimable("a group has no units with every covariate observed")
        fit = fit_propensity(sample, covariates, propensity)
    except NotEstimable as exc:
        fit_reason = f"after-weighting balance not available: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        fit_reason = f"after-weighting balance not available: propensity model failed: {type(exc).__name__}: {exc}"
    t = sample["treated"] == 1
    for name in covariates:
        x_t, x_c = sample.loc[t, name], sample.loc[~t, name]
        row = {**base, "covariate": name, "n_treated": len(x_t), "n_comparison": len(x_c)}
        if len(x_t) == 0 or len(x_c) == 0:
            rows.append({**row, "status": STATUS_NOT_ESTIMABLE, "reason": "a group has no units with every covariate observed"})
            continue
        sd = math.sqrt((x_t.var(ddof=1) + x_c.var(ddof=1)) / 2.0) if len(x_t) > 1 and len(x_c) > 1 else float("nan")
        row.update(
            {
                "mean_treated": x_t.mean(),
                "mean_comparison": x_c.mean(),
                "smd_before": standardized_mean_difference(x_t, x_c, sd_pooled=sd),
                "weighting": "ATT inverse-probability weights (" + propensity.describe() + ")",
                "status": STATUS_OK,
                "reason": fit_reason,
            }
        )
        if sd == 0:
            note = (
                "covariate is constant in the sample: no imbalance possible" if row["smd_before"] == 0
                else "covariate is constant within each group but differs between them: SMD infinite"
            )
            row["reason"] = f"{note}; {fit_reason}" if fit_reason else note
        if fit is not None:
            kt = fit.keep & t
            kc = fit.keep & ~t
            row["mean_treated_weighted"] = sample.loc[kt, name].mean()
            row["mean_comparison_weighted"] = float(np.average(sample.loc[kc, name], weights=fit.weight[kc]))
            row["smd_after"] = standardized_mean_difference(sample.loc[kt, name], sample.loc[kc, name], fit.weight[kc], sd_pooled=sd)
            row["n_trimmed"] = int((~fit.keep).sum())
            # by group, for disclosure control only (not a column of the table)
            row[disclosure.TRIMMED["treated"]] = int((~fit.keep & t).sum())
            row[disclosure.TRIMMED["comparison"]] = int((~fit.keep & ~t).sum())
        rows.append(row)
    return rows


def _lee_columns(sample: pd.DataFrame, endline: pd.Series, treated: pd.Series, inference: Inference) -> tuple[dict, str | None]:
    """The Lee bounds of an attrition row and their confidence interval at ``1 - alpha``
    (Imbens and Manski's, from the bounds' standard errors: clustered like the estimates' when
    they are, by unit otherwise), and why there is no interval when there is none (None when
    there is). The interval needs what the attrition test needs (the estimators' minimum units
    and clusters per group)."""
    from impact.estimators import imbens_manski_interval, lee_bounds, lee_standard_errors

    observed = endline.notna()
    bounds = lee_bounds(endline[treated & observed], endline[~treated & observed],
                        float(observed[treated].mean()), float(observed[~treated].mean()))
    if bounds is None:
        return {}, None
    columns = {"lee_bound_low": bounds.low, "lee_bound_high": bounds.high,
               "lee_trimmed_group": bounds.trimmed_group, "lee_trimmed_share": bounds.trimmed_share}
    try:
        _check_sample(sample, "a baseline value", inference)
        clusters = sample["cluster"].to_numpy() if inference.cov_type == "cluster" else None
        se_low, se_high = lee_standard_errors(bounds, endline.to_numpy(dtype=float), treated.to_numpy(), clusters)
    except NotEstimable as exc:
        return columns, str(exc)
    columns["lee_ci_low"], columns["lee_ci_high"] = imbens_manski_interval(bounds.low, bounds.high, se_low, se_high,
                                                                           inference.alpha)
    return columns, None


def _attrition_row(study_id: str, programme: str, outcome: str, units: pd.DataFrame, y: pd.DataFrame, inference: Inference) -> dict:
    """The attrition row of one outcome: the units measured at baseline missing at endline by
    group, the test of their difference, and the Lee bounds with their confidence interval."""
    end = int(max(y.columns))
    row: dict[str, Any] = {"study_id": study_id, "programme_code": programme, "outcome": outcome, "endline_round": end}
    if 0 not in y.columns or end <= 0:
        return {**row, "status": STATUS_NOT_ESTIMABLE, "reason": "the outcome is not measured at both baseline and a later round"}
    at_base = y[0].notna()
    sample = units.loc[at_base.reindex(units.index, fill_value=False)].copy()
    sample["missing"] = y.loc[sample.index, end].isna().astype(float)
    t = sample["treated"] == 1
    why = None
    if t.any() and not t.all():
        lee, why = _lee_columns(sample, y.loc[sample.index, end], t, inference)
        row.update(lee)
    row = _attrition_test(row, sample, inference)
    if why is not None and why != row.get("reason"):  # the test's reason already says it
        note = f"no confidence interval for the Lee bounds: {why}"
        row["reason"] = f"{row['reason']}; {note}" if row.get("reason") else note
    return row


def _attrition_test(row: dict, sample: pd.DataFrame, inference: Inference) -> dict:
    """``row`` with the units missing at endline by group and the test of their difference."""
    from impact.estimators import _fit  # statsmodels-backed OLS with the configured SEs

    t = sample["treated"] == 1
    for group, mask in (("treated", t), ("comparison", ~t)):
        n = int(mask.sum())
        k = int(sample.loc[mask, "missing"].sum())
        row[f"n_baseline_{group}"] = n
        row[f"n_missing_{group}"] = k
        row[f"share_missing_{group}"] = k / n if n else None
    if not t.any() or t.all():
        group = "treated" if not t.any() else "comparison"
        return {**row, "status": STATUS_NOT_ESTIMABLE, "reason": f"no {group} units measured at baseline"}
    row["difference"] = row["share_missing_treated"] - row["share_missing_comparison"]
    row["test"] = f"linear probability model of missing on treatment, {inference.cov_type} SEs"
    if sample["missing"].nunique() == 1:
        share = sample["missing"].iloc[0]
        what = "no baseline unit is missing" if share == 0 else "every baseline unit is missing"
        return {**row, "status": STATUS_OK, "reason": f"{what} at endline in both groups: nothing to test"}
    try:
        # the estimators' rule: at least min_per_group units and (clustered SEs)
        # min_clusters_per_group clusters in each group, else no test
        _check_sample(sample, "a baseline value", inference)
    except NotEstimable as exc:
        return {**row, "status": STATUS_NOT_ESTIMABLE, "reason": str(exc)}
    if sample.groupby("treated")["missing"].nunique().max() == 1:
        return {**row, "status": STATUS_NOT_ESTIMABLE,
                "reason": "missing at endline is the same for every unit of each group: the test has no standard error"}
    try:
        fitted = _fit(sample["missing"], sample[["treated"]], sample, Inference(cov_type=inference.cov_type, alpha=inference.alpha))
        std_error, p_value = _num(fitted.bse["treated"]), _num(fitted.pvalues["treated"])
        if std_error is None or std_error <= 0 or p_value is None:
            raise ArithmeticError(f"non-finite or zero standard error (SE {fitted.bse['treated']!r})")
        row["std_error"] = std_error
        row["p_value"] = p_value
        row["status"] = STATUS_OK
    except Exception as exc:  # noqa: BLE001 - recorded
        row.update({"status": "failed", "reason": f"attrition test failed: {type(exc).__name__}: {exc}"})
    return row


def _mean_std_error(values: pd.Series, clusters: pd.Series, inference: Inference) -> float | None:
    """Standard error of the mean of ``values``, of the study's type (clustered on the unit of
    assignment like its estimates: units of a cluster are alike, so sd / sqrt(n) would be too
    small): statsmodels' OLS of the values on a constant. None when it cannot be computed
    (one unit, or one cluster when clustered)."""
    import statsmodels.api as sm

    from impact.estimators import _fit_model

    if len(values) < 2 or (inference.cov_type == "cluster" and clusters.nunique() < 2):
        return None
    fit = _fit_model(sm.OLS(values.to_numpy(dtype=float), np.ones((len(values), 1))), clusters, inference)
    se = float(fit.bse[0])
    return se if math.isfinite(se) else None


def _group_mean_rows(study_id: str, programme: str, outcome: str, units: pd.DataFrame, y: pd.DataFrame,
                     labels: dict[int, str], inference: Inference) -> list[dict]:
    rows = []
    for group, flag in (("treated", 1), ("comparison", 0)):
        ids = units.index[units["treated"] == flag]
        block = y.loc[ids]
        for r in y.columns:
            v = block[r].dropna()
            rows.append(
                {
                    "study_id": study_id,
                    "programme_code": programme,
                    "outcome": outcome,
                    "treatment_group": group,
                    "round_index": int(r),
                    "round_label": labels.get(int(r)),
                    "n_units": len(v),
                    "mean": v.mean() if len(v) else None,
                    "std_error": _mean_std_error(v, units.loc[v.index, "cluster"], inference),
                }
            )
    return rows


def _estimate_row(study_id, programme, outcome, subgroup, dim, value, est: Estimate, ci_level: float) -> dict:
    return {
        "study_id": study_id,
        "programme_code": programme,
        "outcome": outcome,
        "estimator": est.estimator,
        "subgroup": subgroup,
        "subgroup_dimension": dim,
        "subgroup_value": value,
        "estimate": est.estimate,
        "std_error": est.std_error,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "ci_level": ci_level,
        "p_value": est.p_value,
        "n_treated": est.n_treated,
        "n_comparison": est.n_comparison,
        "n_clusters": est.n_clusters,
        "baseline_mean_treated": est.baseline_mean_treated,
        "baseline_mean_comparison": est.baseline_mean_comparison,
        "endline_mean_treated": est.endline_mean_treated,
        "endline_mean_comparison": est.endline_mean_comparison,
        "estimator_options": json.dumps(est.options, sort_keys=True, default=str),
        "status": est.status,
        "reason": est.reason,
    }


def _pretrend_rows(study_id, programme, outcome, subgroup, est: Estimate) -> list[dict]:
    base = {"study_id": study_id, "programme_code": programme, "outcome": outcome, "estimator": est.estimator, "subgroup": subgroup}
    test = est.pretrend_test
    joint = {
        "joint_test": test.get("test"),
        "joint_statistic": test.get("statistic"),
        "joint_df": test.get("df"),
        "joint_p_value": test.get("p_value"),
        "joint_status": test.get("status"),
        "joint_reason": test.get("reason"),
    }
    if est.status != STATUS_OK or not est.event_coefficients:
        return [{**base, **joint, "status": est.status, "reason": est.reason, "joint_status": est.status, "joint_reason": est.reason}]
    return [{**base, **coef, **joint, "status": STATUS_OK, "reason": None} for coef in est.event_coefficients]


def outcome_scale(y: pd.DataFrame) -> str:
    """``binary`` when every value of the outcome measured is 0 or 1, ``proportion`` when every
    one is between 0 and 1 (a household's share of children enrolled); for both an effect of
    1.0 is 100 percentage points. Else ``continuous``."""
    values = pd.unique(y.to_numpy(dtype=float).ravel())
    values = values[~np.isnan(values)]
    if not len(values):
        return "continuous"
    if np.isin(values, (0.0, 1.0)).all():
        return "binary"
    return "proportion" if ((values >= 0) & (values <= 1)).all() else "continuous"


def _cost_row(study_id: str, programme: str, outcome: str, direction: str, est: dict | None, costs: pd.DataFrame | None,
              config: EvaluationConfig, scale: str | None = None) -> dict:
    row: dict[str, Any] = {
        "study_id": study_id,
        "programme_code": programme,
        "outcome": outcome,
        "outcome_direction": direction,
        "outcome_scale": scale,
        "estimator": est["estimator"] if est is not None else config.cost_estimator,
        "cost_basis": config.cost_basis,
    }
    if costs is None:
        return {**row, "status": CE_NOT_ESTIMABLE, "reason": f"{COSTS_TABLE} is not in the warehouse"}
    match = costs[costs["programme_code"] == programme]
    cost = None
    if len(match):
        c = match.iloc[0]
        row.update({k: (None if pd.isna(c[k]) else c[k]) for k in ("programme_name", "action_line", "budget_mad", "transfers_paid_mad", "beneficiaries_reached")})
        reached = _num(c["beneficiaries_reached"])
        if config.cost_basis == "mart":
            cost = _num(c["cost_per_beneficiary_mad"])
            if c.get("cost_basis") is not None and not pd.isna(c["cost_basis"]):
                row["cost_basis"] = f"mart: {c['cost_basis']}"  # what the mart's figure is
        else:
            spend = _num(c["transfers_paid_mad"] if config.cost_basis == "transfers_paid" else c["budget_mad"])
            cost = spend / reached if spend is not None and reached else None
        row["cost_per_beneficiary_mad"] = cost
    if est is None:
        return {**row, "status": CE_NOT_ESTIMABLE, "reason": f"estimator {config.cost_estimator!r} did not run for this study"}
    row.update({"estimate": est["estimate"], "ci_low": est["ci_low"], "ci_high": est["ci_high"]})
    if est["status"] != STATUS_OK:
        return {**row, "status": CE_NOT_ESTIMABLE, "reason": f"the {est['estimator']} estimate is {est['status']}: {est['reason']}"}
    if not len(match):
        return {**row, "status": CE_NOT_ESTIMABLE, "reason": f"no cost data for programme {programme} in {COSTS_TABLE}"}
    if cost is None or cost <= 0:
        return {**row, "status": CE_NOT_ESTIMABLE, "reason": f"cost per beneficiary ({config.cost_basis}) is missing or not positive"}
    sign = -1.0 if direction == "lower_is_better" else 1.0
    gain = sign * est["estimate"]
    lo, hi = sorted((sign * est["ci_low"], sign * est["ci_high"]))
    if gain <= 0:
        return {**row, "status": CE_NO_BENEFIT, "reason": "the point estimate shows no beneficial effect: cost per unit of impact is not defined"}
    row["cost_per_unit_impact_mad"] = cost / gain
    row["cost_per_unit_impact_ci_low"] = cost / hi
    if lo <= 0:
        row["status"] = CE_UNBOUNDED
        row["reason"] = (
            "the effect's confidence interval includes zero: the cost per unit of impact has no finite upper "
            "bound (ci_high is NULL, read it as +infinity); ci_low = cost / upper effect bound"
        )
    else:
        row["cost_per_unit_impact_ci_high"] = cost / lo
        row["status"] = CE_OK
    return row


# Panels of at least this many rows are estimated by this process and ``workers`` worker
# processes at once (a worker costs about 1.5 s to start and import statsmodels; the
# estimates of a 116,000-row panel 5-7 s on one core, that import included): small panels
# stay in one process.
WORKER_PANEL_ROWS = 50_000


@dataclass
class _OutcomeTask:
    """Every estimate of one study x programme x outcome: what a worker process receives."""

    study_id: str
    programme: str
    outcome: str
    units: pd.DataFrame
    y: pd.DataFrame
    covariates: list[str]
    round_labels: dict[int, str]
    settings: Any  # the study's settings (impact.config)
    direction: str
    costs: pd.DataFrame | None
    config: EvaluationConfig
    min_cell: int = disclosure.DEFAULT_K  # groups of fewer units are not published (impact.disclosure)


def _outcome_rows(task: _OutcomeTask) -> dict[str, Any]:
    """Attrition, group means, estimates (every subgroup and estimator), pre-trends and the
    cost-effectiveness row of one study x programme x outcome."""
    study_id, programme, outcome, units, y = task.study_id, task.programme, task.outcome, task.units, task.y
    settings, config = task.settings, task.config
    inference_all = Inference(settings.cov_type, config.alpha, 2, config.min_clusters_per_group)
    est_rows, pre_rows = [], []
    for subgroup, dim, value, ids in _subgroups(units, config.subgroup_dimensions):
        sub_units = units.loc[ids]
        min_n = 2 if dim is None else config.subgroup_min_size
        for spec in settings.estimators:
            if dim is not None and config.subgroup_estimators is not None and spec.name not in config.subgroup_estimators:
                continue
            inference = Inference(spec.cov_type or settings.cov_type, config.alpha, min_n, config.min_clusters_per_group)
            est = estimate(spec, sub_units, y, task.covariates, inference, config.propensity, task.round_labels)
            if dim is not None and est.status == STATUS_NOT_ESTIMABLE and est.reason and est.reason.startswith("too few units"):
                est.reason = f"subgroup {subgroup} below the minimum size: {est.reason}"
            est_rows.append(_estimate_row(study_id, programme, outcome, subgroup, dim, value, est, config.ci_level))
            if spec.type == "event_study":
                pre_rows.extend(_pretrend_rows(study_id, programme, outcome, subgroup, est))
    disclosure.protect_estimates(est_rows, pre_rows, task.min_cell)
    disclosure.protect_trimmed(est_rows, task.min_cell)
    return {
        "attrition": disclosure.protect_attrition(
            [_attrition_row(study_id, programme, outcome, units, y, inference_all)], task.min_cell),
        "group_means": disclosure.protect_group_means(
            _group_mean_rows(study_id, programme, outcome, units, y, task.round_labels, inference_all), task.min_cell),
        "estimates": est_rows,
        "pretrends": pre_rows,
    }


def _protect_programme(tasks: list[_OutcomeTask], parts: list[dict[str, Any]], balance: list[dict],
                       min_cell: int) -> dict[str, list[dict]]:
    """The rows of one study x programme (its outcomes' ``parts``, in the order of their
    ``tasks``, and its balance rows) with the samples of a group that differ by a few units
    withheld across them (:func:`impact.disclosure.protect_differences`), and the
    cost-effectiveness row of each outcome, from its estimate as published."""
    rows = {name: [row for part in parts for row in part[name]]
            for name in ("estimates", "pretrends", "attrition", "group_means")}
    rows["group_means"], rows["attrition"], rows["balance"] = disclosure.protect_differences(
        rows["estimates"], rows["pretrends"], rows["group_means"], rows["attrition"], balance, min_cell)
    rows["balance"] = disclosure.protect_trimmed_total(rows["balance"], rows["estimates"], min_cell)
    disclosure.protect_reasons(rows["estimates"], rows["pretrends"], rows["balance"])
    rows["cost_effectiveness"] = []
    for task in tasks:
        config = task.config
        chosen = _cost_estimate([r for r in rows["estimates"] if r["outcome"] == task.outcome],
                                _joint_p(rows["pretrends"], task.outcome), config)
        rows["cost_effectiveness"].extend(disclosure.protect_costs(
            [_cost_row(task.study_id, task.programme, task.outcome, task.direction, chosen, task.costs, config,
                       outcome_scale(task.y))],
            min_cell))
    return rows


def _warm_up() -> None:
    """Run in a new worker: import what estimating needs; one BLAS thread (the worker and
    this process share the cores: with OpenBLAS's threads as well, the estimates of a
    116,000-row panel took longer on two processes than on one)."""
    from jisr.blas import use_one_blas_thread

    _warm_up_imports()
    use_one_blas_thread()


def _warm_up_imports() -> None:
    import statsmodels.api  # noqa: F401 - with scipy and its BLAS


class _Workers:
    """Worker processes for :func:`_map_in_processes`, started at once: they import what
    estimating needs while this process shapes the studies and computes their balance."""

    def __init__(self, count: int, wait: bool = False):
        self.count = max(int(count), 0)
        self.pool = None
        self.warm: list = []
        self.items_done = 0  # items a worker computed (and returned)
        if self.count:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fork would copy the threads of the process (Dagster's, DuckDB's) mid-work
            self.pool = ProcessPoolExecutor(max_workers=self.count, mp_context=multiprocessing.get_context("spawn"))
            self.warm = [self.pool.submit(_warm_up) for _ in range(self.count)]
            if wait:
                for future in self.warm:
                    future.exception()

    def ready(self) -> bool:
        return self.pool is not None and all(f.done() and f.exception() is None for f in self.warm)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)  # an idle worker's exit is not waited for
            self.pool = None

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _map_in_processes(fn, items: list, workers: _Workers) -> list:
    """``[fn(item) for item in items]``, computed by this process and the workers at once:
    this process takes items from the front, the workers (once they have imported what
    ``fn`` needs) from the back. Results keep the order of ``items`` and do not depend on
    where an item was computed. An item whose worker died is computed here; an error raised
    by ``fn`` in either process is raised here (with several, not necessarily the first in
    ``items`` order)."""
    from concurrent.futures.process import BrokenProcessPool

    results: list = [None] * len(items)
    pending: dict[int, Any] = {}
    front, back = 0, len(items) - 1

    def collect(i: int, future) -> None:
        try:
            results[i] = future.result()
            workers.items_done += 1
        except BrokenProcessPool:
            results[i] = fn(items[i])

    while front <= back:
        for i in [i for i, f in pending.items() if f.done()]:
            collect(i, pending.pop(i))
        while workers.ready() and len(pending) < workers.count and front < back:
            try:
                pending[back] = workers.pool.submit(fn, items[back])
            except BrokenProcessPool:  # a worker died while idle: no more workers
                workers.close()
                break
            back -= 1
        results[front] = fn(items[front])
        front += 1
    for i, future in pending.items():
        collect(i, future)
    return results


def evaluate(panel: pd.DataFrame, costs: pd.DataFrame | None, config: EvaluationConfig,
             workers: int = 0, min_cell: int = disclosure.DEFAULT_K) -> ImpactTables:
    """Run every configured estimate on a panel DataFrame (the shape of the mart).

    ``workers``: processes estimating beside this one (:func:`_map_in_processes`), for a
    panel of at least ``WORKER_PANEL_ROWS`` rows; the tables are the same either way.
    ``min_cell``: the small-cell threshold k; the figures of a group of fewer units are
    not published (:mod:`impact.disclosure`).
    """
    check_panel(panel)
    with _Workers(workers if len(panel) >= WORKER_PANEL_ROWS else 0) as pool:
        return _evaluate(panel, costs, config, pool, min_cell)


def _evaluate(panel: pd.DataFrame, costs: pd.DataFrame | None, config: EvaluationConfig, workers: _Workers,
              min_cell: int = disclosure.DEFAULT_K) -> ImpactTables:
    notes: list[str] = []
    bal_rows: dict[tuple[str, str], list[dict]] = {}  # per study x programme
    tasks: list[_OutcomeTask] = []
    available = sorted(panel["study_id"].dropna().unique())
    studies = available if config.studies is None else list(config.studies)
    unknown = [s for s in studies if s not in available]
    if unknown:
        raise PanelError(f"studies {unknown} in the evaluation config are not in {PANEL_TABLE} (available: {available})")
    seen_programmes: set[str] = set()
    for study_id in studies:
        settings = config.for_study(study_id)
        study = build_study(panel, study_id, settings, settings.cluster, min_cell)
        notes.extend(study.notes)
        codes = sorted(study.units["programme_code"].dropna().unique())
        treated = study.units["treated"] == 1
        if settings.comparison == "whole_study" and treated.any():
            # the programmes with treated units; with none at all, every programme of the
            # study is listed (and not estimable), as with same_programme
            codes = sorted(study.units.loc[treated, "programme_code"].dropna().unique())
        for group, present in (("treated", treated.any()), ("comparison", (~treated).any())):
            if len(study.units) and not present:
                notes.append(f"study {study_id}: no {group} units: no effect can be estimated")
        seen_programmes.update(codes)
        programmes = codes if config.programmes is None else [p for p in config.programmes if p in codes]
        if not study.outcomes:
            notes.append(f"study {study_id}: no outcome measured at its endline (round {study.endline})")
        for programme in programmes:
            units = _programme_units(study, programme, settings.comparison)
            bal_rows[(study_id, programme)] = disclosure.protect_balance(
                _balance_rows(study_id, programme, units, study.covariates, config.propensity), min_cell)
            for outcome in study.outcomes:
                tasks.append(_OutcomeTask(study_id, programme, outcome, units, study.outcome_matrix(outcome, units.index),
                                          study.covariates, study.round_labels, settings, settings.direction(outcome),
                                          costs, config, min_cell))
    missing = sorted(set(config.programmes or ()) - seen_programmes)
    if missing:
        raise PanelError(f"programmes {missing} in the evaluation config are in none of the evaluated studies "
                         f"(found: {sorted(seen_programmes)})")
    from jisr.blas import single_threaded_blas

    # One BLAS thread here as in the workers (_warm_up), with or without them: the figures
    # do not depend on where a group was estimated. The setting reaches the BLAS libraries
    # loaded when it is made: statsmodels (scipy's) first, as in _warm_up.
    _warm_up_imports()
    with single_threaded_blas():
        parts = _map_in_processes(_outcome_rows, tasks, workers)
    names = ("estimates", "pretrends", "balance", "attrition", "group_means", "cost_effectiveness")
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for programme, balance in bal_rows.items():  # a programme's tasks follow each other
        mine = [i for i, task in enumerate(tasks) if (task.study_id, task.programme) == programme]
        protected = _protect_programme([tasks[i] for i in mine], [parts[i] for i in mine], balance, min_cell)
        for name in names:
            rows[name].extend(protected[name])
    return ImpactTables(
        estimates=_frame("impact_estimates", rows["estimates"]),
        pretrends=_frame("impact_pretrends", rows["pretrends"]),
        balance=_frame("impact_balance", rows["balance"]),
        attrition=_frame("impact_attrition", rows["attrition"]),
        group_means=_frame("impact_group_means", rows["group_means"]),
        cost_effectiveness=_frame("impact_cost_effectiveness", rows["cost_effectiveness"]),
        notes=notes,
        groups=len(tasks),
        groups_in_workers=workers.items_done,
    )


# --------------------------------------------------------------------------------------
# warehouse I/O


def _table_exists(con, qualified: str) -> bool:
    schema, name = qualified.split(".")
    found = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, name]
    ).fetchone()[0]
    return bool(found)


def _columns(con, qualified: str) -> list[str]:
    schema, name = qualified.split(".")
    return [r[0] for r in con.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, name]
    ).fetchall()]


def read_panel(con, config: EvaluationConfig | None = None) -> pd.DataFrame:
    if not _table_exists(con, PANEL_TABLE):
        raise PanelError(f"{PANEL_TABLE} does not exist in this warehouse: build the evaluation marts first")
    have = _columns(con, PANEL_TABLE)
    missing = [c for c in PANEL_COLUMNS if c not in have]
    if missing:
        raise PanelError(f"{PANEL_TABLE} lacks columns {missing}")
    sql = f"select {', '.join(PANEL_COLUMNS)} from {PANEL_TABLE}"
    params: list = []
    if config is not None and config.studies is not None:
        sql += f" where study_id in ({', '.join('?' for _ in config.studies)})"
        params = list(config.studies)
    return con.execute(sql + " order by study_id, unit_id, round_index, variable", params).df()


def read_costs(con) -> pd.DataFrame | None:
    if not _table_exists(con, COSTS_TABLE):
        return None
    return con.execute(f"select {', '.join(COST_COLUMNS)} from {COSTS_TABLE}").df()


def write_tables(con, tables: ImpactTables, run_id: str, code_version: str, inputs: dict | None = None,
                 only: tuple[str, ...] | None = None) -> dict[str, int]:
    """Replace the tables of schema ``impact`` (every one, or those in ``only``) in one
    transaction; ``inputs`` (see :func:`input_fingerprints`) is stored with them."""
    counts = {}
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute("begin transaction")
    try:
        con.execute(f"create schema if not exists {SCHEMA}")
        for table, frame in tables.by_table().items():
            if only is not None and table not in only:
                continue
            columns = TABLES[table]
            frame = frame.copy()
            frame["run_id"] = pd.array([run_id] * len(frame), dtype="string")
            frame["code_version"] = pd.array([code_version] * len(frame), dtype="string")
            if "estimated_at" in columns:
                frame["estimated_at"] = pd.Series([stamp] * len(frame), dtype="datetime64[us]")
            ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
            con.execute(f"create or replace table {SCHEMA}.{table} ({ddl})")
            about, about_columns = describe(table, list(columns))
            con.execute(f"comment on table {SCHEMA}.{table} is {_sql_text(about)}")
            for column, text in about_columns.items():
                con.execute(f'comment on column {SCHEMA}.{table}."{column}" is {_sql_text(text)}')
            if len(frame):
                con.register("_impact_frame", frame)
                select = ", ".join(f'cast("{c}" as {t})' for c, t in columns.items())
                con.execute(f"insert into {SCHEMA}.{table} select {select} from _impact_frame")
                con.unregister("_impact_frame")
            counts[table] = len(frame)
        if inputs is not None:
            stored = json.dumps({**inputs, "notes": tables.notes}, sort_keys=True)
            con.execute(f"create schema if not exists {STATE_SCHEMA}")
            con.execute(f"create or replace table {STATE_TABLE} (stored json, stored_at timestamp)")
            con.execute(f"insert into {STATE_TABLE} values (?, ?)", [stored, stamp])
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return counts


# --------------------------------------------------------------------------------------
# skipping unchanged work

# The fingerprints of the inputs the impact tables were computed from, with the run's notes
# and report folder: written in the transaction that writes the tables, in a schema of its
# own that is never published (the tables' comments describe them to their readers).
STATE_SCHEMA = "impact_state"
STATE_TABLE = f"{STATE_SCHEMA}.fingerprints"
FINGERPRINT_VERSION = 3  # bump when what the fingerprints cover changes


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _table_fingerprint(con, qualified: str, columns: tuple[str, ...]) -> str:
    """Content hash of a table's columns, independent of row order: row count, sum and xor
    of DuckDB's 64-bit row hashes (a re-delivery of the same rows hashes the same)."""
    if not _table_exists(con, qualified):
        return "absent"
    types = con.execute(
        "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ? "
        "order by column_name", qualified.split(".")).fetchall()
    have = {name for name, _ in types}
    present = [c for c in columns if c in have]
    row_hash = f"hash({', '.join(present)})"
    count, total, xor = con.execute(
        f"select count(*), coalesce(sum({row_hash}::hugeint), 0), coalesce(bit_xor({row_hash}), 0) from {qualified}"
    ).fetchone()
    return f"{present}:{types}:{count}:{total}:{xor}"


def input_fingerprints(con, config_path, code_version: str, min_cell: int | None = None) -> dict[str, str]:
    """What the impact tables are a function of.

    ``estimation``: the evaluation panel's content, ``config/evaluation.yml``, the code
    version, the source of this package (and of ``jisr/blas.py``) and the versions of the engines
    (DuckDB, pandas, NumPy, statsmodels, SciPy) and the small-cell threshold ``min_cell`` (by
    default ``k`` of the ``disclosure.yml`` beside the config): every table but
    cost-effectiveness follows from them.
    ``costs``: the programme costs' content (cost-effectiveness follows from the estimates,
    the config and the costs).
    """
    import duckdb

    config_hash = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()
    # The code of this package too: a working copy with uncommitted changes keeps one
    # code version ("...-dirty") across edits.
    from jisr.settings import hash_files  # (with jisr/blas.py: how many BLAS threads the estimates run on)

    root = Path(__file__).parent.parent
    source = hashlib.sha256()
    hash_files(source, root, [p.relative_to(root).as_posix() for p in Path(__file__).parent.rglob("*.py")]
               + ["jisr/blas.py"])
    # statsmodels (and scipy under it) computes every estimate, standard error and p-value
    # (importing the top-level packages is cheap: their submodules load when used)
    import scipy
    import statsmodels

    versions = (f"duckdb {duckdb.__version__}, pandas {pd.__version__}, numpy {np.__version__}, "
                f"statsmodels {statsmodels.__version__}, scipy {scipy.__version__}")
    estimation = json.dumps({
        "fingerprint_version": FINGERPRINT_VERSION,
        "panel": _table_fingerprint(con, PANEL_TABLE, PANEL_COLUMNS),
        "config": config_hash,
        "code_version": code_version,
        "impact_source": source.hexdigest(),
        "engines": versions,
        "min_cell": disclosure.threshold(Path(config_path).parent) if min_cell is None else int(min_cell),
    }, sort_keys=True)
    costs = json.dumps({"costs": _table_fingerprint(con, COSTS_TABLE, COST_COLUMNS), "estimation": estimation}, sort_keys=True)
    return {
        "estimation": hashlib.sha256(estimation.encode()).hexdigest(),
        "costs": hashlib.sha256(costs.encode()).hexdigest(),
    }


def stored_fingerprints(con) -> dict[str, Any] | None:
    """The fingerprints stored with the impact tables, when every table is there."""
    if not all(_table_exists(con, f"{SCHEMA}.{t}") for t in TABLES) or not _table_exists(con, STATE_TABLE):
        return None
    found = con.execute(f"select stored from {STATE_TABLE}").fetchone()
    if not found or not found[0]:
        return None
    try:
        stored = json.loads(found[0])
    except ValueError:
        return None
    return stored if isinstance(stored, dict) and {"estimation", "costs"} <= set(stored) else None


def read_tables(con, notes: list[str]) -> tuple[ImpactTables, dict[str, str]]:
    """The impact tables as written (row order kept), and the run that wrote each."""
    frames, runs = {}, {}
    for table, columns in TABLES.items():
        own = [c for c in columns if c not in ("run_id", "code_version", "estimated_at")]
        cur = con.execute(f"select {', '.join(own)}, run_id from {SCHEMA}.{table} order by rowid")
        names = [d[0] for d in cur.description]
        fetched = cur.fetchall()
        rows = [dict(zip(names[:-1], r[:-1])) for r in fetched]
        frames[table] = _frame(table, rows).drop(columns=[c for c in columns if c not in own])
        runs[table] = min((r[-1] for r in fetched if r[-1] is not None), default=None)
    tables = ImpactTables(
        estimates=frames["impact_estimates"], pretrends=frames["impact_pretrends"], balance=frames["impact_balance"],
        attrition=frames["impact_attrition"], group_means=frames["impact_group_means"],
        cost_effectiveness=frames["impact_cost_effectiveness"], notes=list(notes),
    )
    return tables, runs


def _value(v: Any) -> Any:
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v


def cost_effectiveness(tables: ImpactTables, costs: pd.DataFrame | None, config: EvaluationConfig,
                       min_cell: int = disclosure.DEFAULT_K) -> pd.DataFrame:
    """Cost-effectiveness again from kept estimates and new costs: the same rows, in the same
    order, as :func:`evaluate` gives for these estimates (the rows of the kept table say
    which study x programme x outcome they are)."""
    keys = ["study_id", "programme_code", "outcome"]
    estimates: dict[tuple, list[dict]] = {}
    est = tables.estimates
    for row in est[est["subgroup"] == "all"].to_dict("records"):
        estimates.setdefault(tuple(row[k] for k in keys), []).append({k: _value(v) for k, v in row.items()})
    pretrends: dict[tuple, list[dict]] = {}
    for row in tables.pretrends.to_dict("records"):
        pretrends.setdefault(tuple(row[k] for k in keys), []).append({k: _value(v) for k, v in row.items()})
    rows = []
    for row in tables.cost_effectiveness.to_dict("records"):
        key = (row["study_id"], row["programme_code"], row["outcome"])
        chosen = _cost_estimate(estimates.get(key, []), _joint_p(pretrends.get(key, []), row["outcome"]), config)
        rows.append(_cost_row(*key, row["outcome_direction"], chosen, costs, config, _value(row.get("outcome_scale"))))
    return _frame("impact_cost_effectiveness", disclosure.protect_costs(rows, min_cell))


def _status_counts(frame: pd.DataFrame) -> dict[str, int]:
    if frame.empty:
        return {}
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()}


def run_impact(con_or_db_path, config_path, run_id: str, code_version: str, report_dir, *,
               force: bool = False, workers: int = 1, min_cell: int | None = None) -> dict[str, Any]:
    """Read the panel, estimate, replace schema ``impact`` and write the report.

    Unchanged inputs are not estimated again: when the inputs (see :func:`input_fingerprints`:
    the evaluation panel, the config file, the code version, the impact package's source and
    the engines' versions) hash as they did for the impact tables in the warehouse (their
    fingerprints are stored with them), the tables are kept (the same inputs and code give
    the same figures) and only cost-effectiveness is recomputed if the programme costs
    changed. ``summary["reused"]`` then says so; ``force`` re-estimates anyway.

    ``con_or_db_path``: an open DuckDB connection (left open) or a database file path.
    ``workers``: worker processes estimating beside this one on a large panel (:func:`evaluate`).
    ``min_cell``: the small-cell threshold k (:mod:`impact.disclosure`); by default ``k`` of
    the ``disclosure.yml`` in the config's directory (``config/disclosure.yml``), else 10.
    Returns a summary: row counts per table, status counts of the estimates, notes, and
    the report's paths, markdown tables and image paths (for Dagster metadata).
    Raises EvaluationConfigError / PanelError for a bad config or a missing panel;
    problems with individual estimates are recorded in the tables instead.
    """
    import duckdb

    from impact.report import write_report

    config = load_config(config_path)
    if min_cell is None:
        min_cell = disclosure.threshold(Path(config_path).parent)
    own = not hasattr(con_or_db_path, "execute")
    con = duckdb.connect(str(con_or_db_path)) if own else con_or_db_path
    try:
        inputs = input_fingerprints(con, config_path, code_version, min_cell)
        stored = None if force else stored_fingerprints(con)
        if stored is not None and stored["estimation"] == inputs["estimation"]:
            tables, runs = read_tables(con, stored.get("notes") or [])
            if stored["costs"] == inputs["costs"]:
                reused = (f"impact: inputs unchanged since run {runs['impact_estimates']} (evaluation panel, programme "
                          f"costs, {Path(config_path).name}, code version {code_version}): tables kept, nothing re-estimated")
            else:
                tables.cost_effectiveness = cost_effectiveness(tables, read_costs(con), config, min_cell)
                keep = {**inputs, "report_dir": stored.get("report_dir")}
                write_tables(con, tables, run_id, code_version, keep, only=("impact_cost_effectiveness",))
                runs["impact_cost_effectiveness"] = run_id
                reused = (f"impact: evaluation panel, {Path(config_path).name} and code version unchanged since run "
                          f"{runs['impact_estimates']}: estimates kept; programme costs changed: cost-effectiveness recomputed")
            counts = {name: len(frame) for name, frame in tables.by_table().items()}
        else:
            panel = read_panel(con, config)
            costs = read_costs(con)
            tables = evaluate(panel, costs, config, workers=workers, min_cell=min_cell)
            counts = write_tables(con, tables, run_id, code_version, {**inputs, "report_dir": str(report_dir)})
            runs, reused = dict.fromkeys(TABLES, run_id), None
    finally:
        if own:
            con.close()
    plots_from = Path(stored["report_dir"]) if reused and stored.get("report_dir") else None
    report = write_report(tables, Path(report_dir), run_id=run_id, code_version=code_version, config=config,
                         plots_from=plots_from)
    return {
        "reused": reused,
        "estimated_by_run": runs,
        "fingerprints": inputs,
        "run_id": run_id,
        "code_version": code_version,
        "config": str(config_path),
        "tables": {f"{SCHEMA}.{name}": n for name, n in counts.items()},
        "estimate_status": _status_counts(tables.estimates),
        "studies": sorted(tables.estimates["study_id"].dropna().unique().tolist()) if len(tables.estimates) else [],
        "notes": tables.notes,
        "estimation_processes": (f"{tables.groups_in_workers} of {tables.groups} study x programme x outcome "
                                 "groups estimated by the worker process" if tables.groups_in_workers else None),
        "report": report,
    }
