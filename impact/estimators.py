"""Impact estimators on a unit-level analysis frame.

Every regression and standard error comes from statsmodels; this module only builds the
samples and design matrices, checks that an estimate is meaningful before computing it,
and turns each case into an :class:`Estimate` whose ``status`` says what happened:

``ok``             a finite estimate with its standard error and confidence interval
                   (``reason`` may carry a warning, e.g. a propensity logit that did not
                   converge);
``not_estimable``  the data cannot support the estimate (a group with no units, an outcome
                   with no variance, a subgroup below the minimum size, too few clusters,
                   perfect separation in the propensity model, ...): numbers are NULL and
                   ``reason`` says why;
``failed``         the computation itself raised or produced non-finite numbers: numbers
                   are NULL and ``reason`` carries the error.

Inputs
------
``units``: one row per unit (index ``unit_id``) with ``treated`` (0/1), ``cluster`` (the
clustering variable) and one column per baseline covariate.
``y``: the outcome by round, one row per unit (same index) and one column per
``round_index`` (0 = baseline, the largest = endline); NaN = not measured.

statsmodels is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from impact.config import EstimatorSpec, Propensity

STATUS_OK = "ok"
STATUS_NOT_ESTIMABLE = "not_estimable"
STATUS_FAILED = "failed"


class NotEstimable(Exception):
    """The data cannot support this estimate; the message is the recorded reason."""


@dataclass
class Estimate:
    estimator: str
    status: str = STATUS_OK
    reason: str | None = None
    estimate: float | None = None
    std_error: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n_treated: int | None = None
    n_comparison: int | None = None
    n_clusters: int | None = None
    baseline_mean_treated: float | None = None
    baseline_mean_comparison: float | None = None
    endline_mean_treated: float | None = None
    endline_mean_comparison: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # event study only: one dict per round, and the joint pre-trend test
    event_coefficients: list[dict[str, Any]] = field(default_factory=list)
    pretrend_test: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inference:
    """How standard errors are computed and what an estimate needs to exist."""

    cov_type: str = "cluster"  # cluster | hc1 | nonrobust
    alpha: float = 0.05
    min_per_group: int = 2  # units per group (treated, comparison) in the estimation sample
    min_clusters_per_group: int = 2


# --------------------------------------------------------------------------------------
# helpers


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _group_counts(sample: pd.DataFrame) -> tuple[int, int]:
    treated = int(np.count_nonzero(sample["treated"].to_numpy() == 1))
    return treated, int(len(sample) - treated)


def _nunique(values: np.ndarray) -> int:
    """Distinct values, missing ones not counted (``Series.nunique``, on an array)."""
    distinct = pd.unique(values)
    return int(len(distinct) - np.count_nonzero(pd.isna(distinct)))


def _columns_at(frame: pd.DataFrame, columns: tuple, index: pd.Index) -> list[np.ndarray]:
    """``frame[column].reindex(index)`` for each column, as floats (NaN where ``index`` has no
    row): looked up once, then taken by position."""
    if index.equals(frame.index):
        return [frame[column].to_numpy(dtype=float) for column in columns]
    rows = frame.index.get_indexer(index)
    missing = rows < 0
    out = []
    for column in columns:
        values = frame[column].to_numpy(dtype=float)[rows]
        values[missing] = np.nan
        out.append(values)
    return out


def _check_sample(sample: pd.DataFrame, what: str, inference: Inference) -> None:
    """Raise NotEstimable unless both groups have enough units and clusters."""
    n_t, n_c = _group_counts(sample)
    if n_t == 0 or n_c == 0:
        missing = "treated" if n_t == 0 else "comparison"
        raise NotEstimable(f"no {missing} units with {what} (treated: {n_t}, comparison: {n_c})")
    if min(n_t, n_c) < inference.min_per_group:
        raise NotEstimable(
            f"too few units with {what}: {n_t} treated, {n_c} comparison "
            f"(minimum {inference.min_per_group} per group)"
        )
    if inference.cov_type == "cluster":
        treated = sample["treated"].to_numpy()
        clusters = sample["cluster"].to_numpy()
        k_t = _nunique(clusters[treated == 1])
        k_c = _nunique(clusters[treated == 0])
        if min(k_t, k_c) < inference.min_clusters_per_group:
            raise NotEstimable(
                f"too few clusters for clustered standard errors: {k_t} treated, {k_c} comparison "
                f"(minimum {inference.min_clusters_per_group} per group)"
            )


def _check_variance(values: pd.Series | np.ndarray, label: str) -> None:
    finite = np.asarray(values, dtype=float)
    finite = finite[~np.isnan(finite)]
    if len(np.unique(finite)) <= 1:
        level = f" (every value is {finite[0]:g})" if len(finite) else ""
        raise NotEstimable(f"{label} has no variance in the estimation sample{level}: no effect can be estimated")


def _usable_covariates(sample: pd.DataFrame, covariates: list[str], fixed: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Covariates that add information to a constant and the ``fixed`` columns, in order.

    A covariate that is constant in the sample, or a linear combination of the columns
    already kept (e.g. the same characteristic delivered twice), is dropped and listed as
    ``"<name> (constant)"`` or ``"<name> (collinear)"``.
    """
    keep: list[str] = []
    dropped: list[str] = []
    varying = [c for c in covariates if sample[c].nunique() > 1]
    current = np.column_stack([np.ones(len(sample))] + [sample[c].to_numpy(dtype=float) for c in fixed])
    if len(sample) == 0:
        return varying, [f"{c} (constant)" for c in covariates if c not in varying]
    full = np.column_stack([current] + [sample[c].to_numpy(dtype=float) for c in varying])
    if np.linalg.matrix_rank(full) == full.shape[1]:  # the usual case: nothing collinear
        return varying, [f"{c} (constant)" for c in covariates if c not in varying]
    rank = np.linalg.matrix_rank(current)
    for name in covariates:
        values = sample[name].to_numpy(dtype=float)
        if pd.Series(values).nunique() <= 1:
            dropped.append(f"{name} (constant)")
            continue
        trial = np.column_stack([current, values])
        trial_rank = np.linalg.matrix_rank(trial)
        if trial_rank > rank:
            keep.append(name)
            current, rank = trial, trial_rank
        else:
            dropped.append(f"{name} (collinear)")
    return keep, dropped


class _Fitted:
    """A statsmodels fit on plain arrays, its figures looked up by design column name.

    statsmodels wraps every result of a fit on pandas objects back into pandas objects
    (most of the cost of an estimate on a few thousand units); the arrays it computes are
    the same either way.
    """

    def __init__(self, result, names: list[str]):
        self.result = result
        self.names = list(names)
        self.params = dict(zip(self.names, result.params))
        self.bse = dict(zip(self.names, result.bse))
        self.pvalues = dict(zip(self.names, result.pvalues))

    def conf_int(self, alpha: float) -> dict[str, tuple[float, float]]:
        return {name: (low, high) for name, (low, high) in zip(self.names, self.result.conf_int(alpha=alpha))}


def _fit(endog, exog: pd.DataFrame, sample: pd.DataFrame, inference: Inference, weights=None) -> _Fitted:
    import statsmodels.api as sm

    names = ["const", *exog.columns]
    x = np.column_stack([np.ones(len(exog)), exog.to_numpy(dtype=float)])
    rank = np.linalg.matrix_rank(x)
    if rank < x.shape[1]:
        raise NotEstimable(
            f"design matrix is rank-deficient ({rank} of {x.shape[1]} columns independent): "
            f"treatment is collinear with {names[1:]}"
        )
    endog = np.asarray(endog, dtype=float)
    model = sm.OLS(endog, x) if weights is None else sm.WLS(endog, x, weights=weights)
    return _Fitted(_fit_model(model, sample["cluster"], inference), names)


def _fit_model(model, clusters: pd.Series, inference: Inference):
    if inference.cov_type == "cluster":
        codes = pd.factorize(clusters)[0]
        return model.fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    if inference.cov_type == "hc1":
        return model.fit(cov_type="HC1", use_t=True)
    return model.fit(use_t=True)


def _fill(result: Estimate, fitted: _Fitted, term: str, inference: Inference) -> Estimate:
    """The estimate of ``term``; the caller has described the sample (:func:`_describe_sample`)."""
    estimate = _clean(fitted.params[term])
    std_error = _clean(fitted.bse[term])
    if estimate is None or std_error is None or std_error <= 0:
        raise ArithmeticError(
            f"non-finite or zero standard error (estimate {fitted.params[term]!r}, SE {fitted.bse[term]!r})"
        )
    low, high = fitted.conf_int(alpha=inference.alpha)[term]
    result.estimate = estimate
    result.std_error = std_error
    result.ci_low = _clean(low)
    result.ci_high = _clean(high)
    result.p_value = _clean(fitted.pvalues[term])
    return result


def _describe_sample(result: Estimate, sample: pd.DataFrame, y: pd.DataFrame) -> None:
    n_t, n_c = _group_counts(sample)
    result.n_treated, result.n_comparison = n_t, n_c
    result.n_clusters = _nunique(sample["cluster"].to_numpy())
    end = int(max(y.columns))
    treated = sample["treated"].to_numpy() == 1
    has_base = 0 in y.columns
    endline, *base = _columns_at(y, (end, 0) if has_base else (end,), sample.index)
    result.endline_mean_treated = _mean(endline[treated])
    result.endline_mean_comparison = _mean(endline[~treated])
    if has_base:
        base = base[0]
        result.baseline_mean_treated = _mean(base[treated])
        result.baseline_mean_comparison = _mean(base[~treated])


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return _clean(values.mean()) if len(values) else None


def _run(spec: EstimatorSpec, inference: Inference, body) -> Estimate:
    """Run an estimator body, turning every problem into a recorded status."""
    result = Estimate(estimator=spec.name)
    result.options = {**spec.options(), "cov_type": inference.cov_type, "ci_level": 1 - inference.alpha}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            body(result)
    except NotEstimable as exc:
        _blank(result, STATUS_NOT_ESTIMABLE, str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded, never raised: one estimate must not stop a refresh
        _blank(result, STATUS_FAILED, f"{type(exc).__name__}: {exc}")
    return result


def _blank(result: Estimate, status: str, reason: str) -> None:
    result.status = status
    result.reason = reason
    for name in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
        setattr(result, name, None)


# --------------------------------------------------------------------------------------
# estimators


def endline_round(y: pd.DataFrame) -> int:
    return int(max(y.columns))


def diff_in_means(spec: EstimatorSpec, units: pd.DataFrame, y: pd.DataFrame, covariates: list[str], inference: Inference) -> Estimate:
    """Endline outcome regressed on treatment (difference in endline means)."""

    def body(result: Estimate) -> None:
        end = endline_round(y)
        (endline,) = _columns_at(y, (end,), units.index)
        observed = ~np.isnan(endline)
        sample = units.iloc[np.flatnonzero(observed)]
        _describe_sample(result, sample, y)
        _check_sample(sample, "an endline value", inference)
        outcome = endline[observed]
        _check_variance(outcome, "the endline outcome")
        fitted = _fit(outcome, sample[["treated"]], sample, inference)
        _fill(result, fitted, "treated", inference)

    return _run(spec, inference, body)


def _panel_sample(units: pd.DataFrame, y: pd.DataFrame, covariates: list[str]) -> pd.DataFrame:
    end = endline_round(y)
    if 0 not in y.columns:
        raise NotEstimable("the outcome is not measured at the baseline round (round_index 0)")
    if end <= 0:
        raise NotEstimable("the outcome is not measured after the baseline round")
    base, endline = _columns_at(y, (0, end), units.index)
    observed = ~np.isnan(base) & ~np.isnan(endline)
    for name in covariates:
        observed &= units[name].notna().to_numpy()
    return units.iloc[np.flatnonzero(observed)]


def did(spec: EstimatorSpec, units: pd.DataFrame, y: pd.DataFrame, covariates: list[str], inference: Inference) -> Estimate:
    """First difference (endline - baseline) on treatment [+ baseline covariates].

    With two periods this is the unit fixed-effects DiD estimate.
    """

    def body(result: Estimate) -> None:
        use = covariates if spec.covariates else []
        sample = _panel_sample(units, y, use)
        _describe_sample(result, sample, y)
        _check_sample(sample, "baseline and endline values" + (" and all covariates" if use else ""), inference)
        end = endline_round(y)
        baseline, endline = _columns_at(y, (0, end), sample.index)
        change = endline - baseline
        _check_variance(change, "the change in the outcome (endline - baseline)")
        keep, dropped = _usable_covariates(sample, use, fixed=("treated",))
        result.options.update({"method": "first_differences", "covariates_used": keep, "covariates_dropped": dropped})
        fitted = _fit(change, sample[["treated", *keep]], sample, inference)
        _fill(result, fitted, "treated", inference)

    return _run(spec, inference, body)


def ancova(spec: EstimatorSpec, units: pd.DataFrame, y: pd.DataFrame, covariates: list[str], inference: Inference) -> Estimate:
    """Endline outcome on treatment and the baseline outcome [+ baseline covariates]."""

    def body(result: Estimate) -> None:
        use = covariates if spec.covariates else []
        sample = _panel_sample(units, y, use)
        _describe_sample(result, sample, y)
        _check_sample(sample, "baseline and endline values" + (" and all covariates" if use else ""), inference)
        end = endline_round(y)
        baseline, outcome = _columns_at(y, (0, end), sample.index)
        _check_variance(outcome, "the endline outcome")
        fixed: tuple[str, ...] = ("treated",)
        with_baseline = sample.assign(baseline_outcome=baseline)
        dropped: list[str] = []
        if _nunique(baseline) > 1:
            fixed = ("treated", "baseline_outcome")
        else:
            dropped.append("baseline_outcome (constant)")
        keep, dropped_cov = _usable_covariates(with_baseline, use, fixed=fixed)
        exog = with_baseline[[*fixed, *keep]]
        result.options.update({"covariates_used": keep, "covariates_dropped": dropped + dropped_cov})
        fitted = _fit(outcome, exog, sample, inference)
        _fill(result, fitted, "treated", inference)

    return _run(spec, inference, body)


# --------------------------------------------------------------------------------------
# propensity score


@dataclass
class PropensityFit:
    score: pd.Series  # propensity score by unit (all units of the sample)
    keep: pd.Series  # bool by unit: inside the trimming bounds
    weight: pd.Series  # ATT weight by unit (0 for trimmed units)
    bounds: tuple[float, float]
    covariates_used: list[str]
    covariates_dropped: list[str]
    converged: bool = True


def crump_alpha(score: np.ndarray) -> float:
    """Crump, Hotz, Imbens & Mitnik (2009) optimal trimming threshold.

    With g = 1 / (p (1 - p)): no trimming when max g <= 2 E[g]; otherwise gamma solves
    gamma = 2 E[g | g <= gamma] and units with p outside [a, 1 - a] are dropped, where
    a (1 - a) = 1 / gamma.
    """
    g = 1.0 / (score * (1.0 - score))
    if g.max() <= 2.0 * g.mean():
        return 0.0
    g_sorted = np.sort(g)
    cum_mean = np.cumsum(g_sorted) / np.arange(1, len(g_sorted) + 1)
    ok = g_sorted <= 2.0 * cum_mean
    k = int(np.argmin(ok)) if not ok.all() else len(ok)  # length of the prefix that satisfies
    gamma = 2.0 * cum_mean[max(k - 1, 0)]
    return float(0.5 - math.sqrt(max(0.25 - 1.0 / gamma, 0.0)))


def fit_propensity(sample: pd.DataFrame, covariates: list[str], rule: Propensity) -> PropensityFit:
    """Logit of treatment on baseline covariates, trimming and ATT weights.

    Raises NotEstimable on perfect separation (no overlap: weights are undefined), when no
    covariate varies, or when trimming leaves a group empty.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    keep_cov, dropped = _usable_covariates(sample, covariates)
    if not keep_cov:
        raise NotEstimable(
            "no baseline covariate with variance for the propensity score"
            + (f" (dropped: {dropped})" if dropped else " (none configured or measured)")
        )
    x = sample[keep_cov].astype(float)
    x = (x - x.mean()) / x.std(ddof=0)
    # a constant, then the standardised covariates; column by column in memory, as statsmodels
    # lays out a DataFrame's (the logit's products round alike: the same scores to the last digit)
    exog = np.asfortranarray(np.column_stack([np.ones(len(x)), x.to_numpy()]))
    treated = sample["treated"].to_numpy(dtype=float)
    separated = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fitted = sm.Logit(treated, exog).fit(disp=0, maxiter=200)
        except PerfectSeparationError:
            separated = True
        except np.linalg.LinAlgError as exc:
            raise NotEstimable(f"propensity model cannot be fitted (singular: collinear covariates {keep_cov}): {exc}") from None
    separated = separated or any(issubclass(w.category, PerfectSeparationWarning) for w in caught)
    converged = bool(not separated and fitted.mle_retvals.get("converged", True))
    if not separated:
        score = np.asarray(fitted.predict(exog), dtype=float)
        t = treated == 1
        low_t = score[t].min() if t.any() else np.nan
        high_c = score[~t].max() if not t.all() else np.nan
        # complete separation also shows as every treated unit at p ~ 1 and comparison at p ~ 0
        separated = bool(low_t >= 1 - 1e-6 and high_c <= 1e-6) or bool(low_t > high_c)
    if separated:
        raise NotEstimable(
            f"perfect separation in the propensity model: covariates {keep_cov} predict treatment exactly, "
            "so the groups do not overlap and inverse-probability weights are undefined"
        )
    score = np.clip(score, 1e-12, 1 - 1e-12)
    if rule.trim == "fixed":
        bounds = (rule.low, rule.high)
    elif rule.trim == "crump":
        a = crump_alpha(score)
        bounds = (a, 1.0 - a)
    else:
        bounds = (0.0, 1.0)
    keep = (score >= bounds[0]) & (score <= bounds[1])
    n_t = int(np.count_nonzero(keep & (treated == 1)))
    n_c = int(np.count_nonzero(keep & (treated == 0)))
    if n_t == 0 or n_c == 0:
        # the group left empty, not the units left in the other (published beside the sizes
        # before trimming, they would count the trimmed units)
        empty = " or ".join(g for g, n in (("treated", n_t), ("comparison", n_c)) if n == 0)
        raise NotEstimable(
            f"no overlap: after trimming propensity scores to [{bounds[0]:.3f}, {bounds[1]:.3f}] no {empty} unit remains"
        )
    odds = score / (1.0 - score)
    weight = np.where(treated == 1, 1.0, odds)
    weight[~keep] = 0.0
    comp = (treated == 0) & keep
    weight[comp] = weight[comp] * (n_t / weight[comp].sum())  # comparison weights sum to n treated
    index = sample.index
    return PropensityFit(pd.Series(score, index=index), pd.Series(keep, index=index), pd.Series(weight, index=index),
                         bounds, keep_cov, dropped, converged)


def ipw_did(
    spec: EstimatorSpec,
    units: pd.DataFrame,
    y: pd.DataFrame,
    covariates: list[str],
    inference: Inference,
    propensity: Propensity,
) -> Estimate:
    """Inverse-probability-weighted DiD (ATT): first difference on treatment by WLS.

    The propensity score is a logit on baseline covariates; comparison units get weight
    p / (1 - p), treated units 1; units outside the trimming bounds are dropped. The
    standard error is WLS clustered on ``cluster`` and treats the weights as known.
    """

    def body(result: Estimate) -> None:
        result.options.update(
            {
                "propensity_model": "logit",
                "weights": "ATT: treated 1, comparison p/(1-p)",
                "trimming": propensity.describe(),
                "include_baseline_outcome": propensity.include_baseline_outcome,
                "se_note": "propensity score treated as known",
            }
        )
        sample = _panel_sample(units, y, covariates)
        _describe_sample(result, sample, y)
        if not covariates:
            raise NotEstimable("no baseline covariates configured or measured for the propensity score")
        _check_sample(sample, "baseline and endline values and all covariates", inference)
        end = endline_round(y)
        baseline, endline = _columns_at(y, (0, end), sample.index)
        change = endline - baseline
        _check_variance(change, "the change in the outcome (endline - baseline)")
        ps_sample = sample.copy()
        ps_covariates = list(covariates)
        if propensity.include_baseline_outcome:
            ps_sample["baseline_outcome"] = baseline
            ps_covariates.append("baseline_outcome")
        ps = fit_propensity(ps_sample, ps_covariates, propensity)
        kept = sample.loc[ps.keep]
        n_trim_t = int(((~ps.keep) & (sample["treated"] == 1)).sum())
        n_trim_c = int(((~ps.keep) & (sample["treated"] == 0)).sum())
        w = ps.weight[ps.keep]
        comp_w = w[kept["treated"] == 0]
        result.options.update(
            {
                "covariates_used": ps.covariates_used,
                "covariates_dropped": ps.covariates_dropped,
                "trim_bounds": [round(ps.bounds[0], 6), round(ps.bounds[1], 6)],
                "trimmed_treated": n_trim_t,
                "trimmed_comparison": n_trim_c,
                "comparison_effective_n": round(float(comp_w.sum() ** 2 / (comp_w**2).sum()), 1),
                "propensity_converged": ps.converged,
            }
        )
        if not ps.converged:
            result.reason = "warning: the propensity logit did not converge (near-separation); check overlap and balance"
        _describe_sample(result, kept, y)
        _check_sample(kept, "baseline and endline values inside the propensity trimming bounds", inference)
        fitted = _fit(change[ps.keep.to_numpy()], kept[["treated"]], kept, inference, weights=w.to_numpy())
        _fill(result, fitted, "treated", inference)

    return _run(spec, inference, body)


# --------------------------------------------------------------------------------------
# event study


def event_study(
    spec: EstimatorSpec,
    units: pd.DataFrame,
    y: pd.DataFrame,
    covariates: list[str],
    inference: Inference,
    round_labels: dict[int, str] | None = None,
) -> Estimate:
    """Leads and lags relative to the baseline round, with a joint pre-trend Wald test.

    For every unit observed at baseline, the difference of each other round from the
    baseline is stacked (one row per unit x round) and regressed on round dummies and
    treatment x round dummies, clustered on ``cluster`` (so a unit's rounds are
    correlated). For units observed at baseline this is the two-way fixed-effects event
    study with the baseline as reference period. Its row in impact_estimates is the
    endline coefficient.

    The round dummies are saturated and there are no covariates, so the endline coefficient
    is the difference between the groups in the mean change from baseline to endline of the
    units observed at both (the estimate of the DiD without covariates): the rows of the
    other rounds add nothing to it, nor to its clustered variance, only to the small-sample
    correction (G / (G - 1) x (N - 1) / (N - K)) and the G - 1 degrees of freedom of the
    stacked fit.
    The row's sizes and means are those units' (the sample behind the estimate); the units
    and clusters of the stack (observed at baseline and in any other round) are in the
    options ``stacked_treated``, ``stacked_comparison`` and ``stacked_clusters``.
    """
    labels = round_labels or {}

    def body(result: Estimate) -> None:
        import statsmodels.api as sm

        rounds = sorted(int(r) for r in y.columns if y[r].notna().any())
        result.options.update({"reference_round": 0, "rounds": rounds, "method": "stacked differences from baseline"})
        if 0 not in rounds:
            raise NotEstimable("the outcome is not measured at the baseline round (round_index 0)")
        if len(rounds) <= 2:
            raise NotEstimable(
                f"only {len(rounds)} rounds {rounds}: the event study needs more than two (with two it is the DiD)"
            )
        base = y[0].reindex(units.index)
        rows = []
        for r in rounds:
            if r == 0:
                continue
            diff = y[r].reindex(units.index) - base
            part = units.loc[diff.notna(), ["treated", "cluster"]].copy()
            part["round_index"] = r
            part["change"] = diff[diff.notna()]
            rows.append(part)
        stacked = pd.concat(rows) if rows else pd.DataFrame()
        if stacked.empty:
            raise NotEstimable("no unit is observed both at baseline and in another round")
        per_unit = stacked.groupby(level=0).agg(treated=("treated", "first"), cluster=("cluster", "first"))
        stacked_t, stacked_c = _group_counts(per_unit)
        result.options.update({"stacked_treated": stacked_t, "stacked_comparison": stacked_c,
                               "stacked_clusters": _nunique(per_unit["cluster"].to_numpy())})
        end = max(rounds)
        # the units behind the endline coefficient: observed at baseline and endline (a
        # subset of the stack's units: when they pass the check, so does the stack)
        sample = units.loc[stacked.index[stacked["round_index"] == end]]
        _describe_sample(result, sample, y)
        _check_sample(sample, "baseline and endline values", inference)
        kept_rounds, skipped = [], []
        for r in rounds:
            if r == 0:
                continue
            part = stacked[stacked["round_index"] == r]
            n_t = int((part["treated"] == 1).sum())
            if n_t == 0 or n_t == len(part):
                skipped.append(r)
            else:
                kept_rounds.append(r)
        if skipped:  # never the endline: the sample check above saw both groups there
            result.options["rounds_without_both_groups"] = skipped
            stacked = stacked[stacked["round_index"].isin(kept_rounds)]
        _check_variance(stacked["change"], "the change in the outcome from baseline")
        exog = pd.DataFrame(index=stacked.index)
        for r in kept_rounds:
            exog[f"round_{r}"] = (stacked["round_index"] == r).astype(float)
        for r in kept_rounds:
            exog[f"treated_x_round_{r}"] = exog[f"round_{r}"] * stacked["treated"]
        names = list(exog.columns)
        model = sm.OLS(stacked["change"].astype(float).to_numpy(), exog.to_numpy(dtype=float))
        groups = stacked["cluster"]
        fit_inference = inference
        if inference.cov_type != "cluster":
            # a unit's stacked rounds are correlated: SEs that ignore it would be too small
            groups = pd.Series(stacked.index.astype(str), index=stacked.index)
            fit_inference = Inference("cluster", inference.alpha, inference.min_per_group, inference.min_clusters_per_group)
            result.options["cov_type"] = "cluster"
            result.options["clustered_on"] = f"unit (stacked rounds of a unit are correlated; {inference.cov_type} not valid here)"
        fitted = _Fitted(_fit_model(model, groups.reset_index(drop=True), fit_inference), names)
        conf = fitted.conf_int(alpha=inference.alpha)
        coefficients = [
            {"round_index": 0, "round_label": labels.get(0), "is_pre": False, "is_reference": True, "estimate": 0.0,
             "std_error": None, "ci_low": None, "ci_high": None, "p_value": None}
        ]
        for r in kept_rounds:
            term = f"treated_x_round_{r}"
            coefficients.append(
                {
                    "round_index": r,
                    "round_label": labels.get(r),
                    "is_pre": r < 0,
                    "is_reference": False,
                    "estimate": _clean(fitted.params[term]),
                    "std_error": _clean(fitted.bse[term]),
                    "ci_low": _clean(conf[term][0]),
                    "ci_high": _clean(conf[term][1]),
                    "p_value": _clean(fitted.pvalues[term]),
                }
            )
        result.event_coefficients = sorted(coefficients, key=lambda c: c["round_index"])
        leads = [r for r in kept_rounds if r < 0]
        if leads:
            restriction = np.zeros((len(leads), len(names)))
            for i, r in enumerate(leads):
                restriction[i, names.index(f"treated_x_round_{r}")] = 1.0
            test = fitted.result.wald_test(restriction, scalar=True)
            stat, p = _clean(test.statistic), _clean(test.pvalue)
            if stat is None or p is None:
                result.pretrend_test = {"status": STATUS_FAILED, "reason": "non-finite Wald statistic", "n_leads": len(leads)}
            else:
                result.pretrend_test = {
                    "status": STATUS_OK,
                    "reason": None,
                    "test": "Wald F (cluster-robust)" if inference.cov_type == "cluster" else "Wald F",
                    "statistic": stat,
                    "df": len(leads),
                    "p_value": p,
                    "n_leads": len(leads),
                }
        else:
            result.pretrend_test = {
                "status": STATUS_NOT_ESTIMABLE,
                "reason": "no pre-treatment round before the baseline: pre-trends cannot be tested",
                "n_leads": 0,
            }
        _fill(result, fitted, f"treated_x_round_{end}", inference)

    return _run(spec, inference, body)


# --------------------------------------------------------------------------------------
# dispatch


def estimate(
    spec: EstimatorSpec,
    units: pd.DataFrame,
    y: pd.DataFrame,
    covariates: list[str],
    inference: Inference,
    propensity: Propensity,
    round_labels: dict[int, str] | None = None,
) -> Estimate:
    """Run one configured estimator; never raises (problems become a status)."""
    if spec.type == "diff_in_means":
        return diff_in_means(spec, units, y, covariates, inference)
    if spec.type == "did":
        return did(spec, units, y, covariates, inference)
    if spec.type == "ancova":
        return ancova(spec, units, y, covariates, inference)
    if spec.type == "ipw_did":
        return ipw_did(spec, units, y, covariates, inference, propensity)
    if spec.type == "event_study":
        return event_study(spec, units, y, covariates, inference, round_labels)
    raise ValueError(f"unknown estimator type {spec.type!r}")


# --------------------------------------------------------------------------------------
# balance


def standardized_mean_difference(x_t: pd.Series, x_c: pd.Series, w_c: pd.Series | None = None, sd_pooled: float | None = None) -> float | None:
    """(mean treated - [weighted] mean comparison) / sqrt((var treated + var comparison) / 2).

    The denominator uses the unweighted variances, so before/after values are comparable.
    """
    if sd_pooled is None:
        sd_pooled = math.sqrt((x_t.var(ddof=1) + x_c.var(ddof=1)) / 2.0)
    mean_c = float(np.average(x_c, weights=w_c)) if w_c is not None else float(x_c.mean())
    if not sd_pooled or not math.isfinite(sd_pooled):
        return 0.0 if math.isclose(float(x_t.mean()), mean_c) else None
    return (float(x_t.mean()) - mean_c) / sd_pooled


@dataclass
class LeeBounds:
    """Lee (2009) trimming bounds on the endline difference in means (treated - comparison)."""

    low: float
    high: float
    trimmed_group: str   # "treated" or "comparison": the group whose outcomes are observed more often
    trimmed_share: float  # p: the share of that group's observed outcomes trimmed
    n_trimmed: float      # p x its observed units (a fraction of a unit too), from the top for one bound, the bottom for the other
    # the trimmed group's values where the trimming cuts: the largest kept without the top
    # (its 1 - p quantile) and the smallest kept without the bottom (its p quantile)
    cut_top: float = math.nan
    cut_bottom: float = math.nan


def _trimmed_means(values: np.ndarray, drop: float) -> tuple[float, float, float, float]:
    """The mean of sorted ``values`` without their top ``drop`` units, and without their bottom
    ``drop`` units, ``drop`` a fraction of a unit too (0 <= drop < len(values)), with the value
    each is cut at: the unit cut through counts for the part of it kept. These are the means of
    the sample's quantile function over [0, 1 - p] and [p, 1] (p = drop / n), the trimmed means
    of Lee (2009, Proposition 1) for the sample's distribution."""
    n = len(values)
    keep = n - drop
    whole = min(int(math.floor(keep + 1e-9)), n)  # units kept whole
    part = keep - whole if keep - whole > 1e-9 else 0.0  # and the part kept of the next one
    at_top, at_bottom = values[min(whole, n - 1)], values[max(n - whole - 1, 0)]
    without_top = (values[:whole].sum() + part * at_top) / keep
    without_bottom = (values[n - whole:].sum() + part * at_bottom) / keep
    cut_top = values[whole] if part else values[whole - 1]
    cut_bottom = values[n - whole - 1] if part else values[n - whole]
    return float(without_top), float(without_bottom), float(cut_top), float(cut_bottom)


def lee_bounds(y_treated, y_comparison, observed_treated: float, observed_comparison: float) -> LeeBounds | None:
    """Lee's bounds on the effect among the units that would be observed whatever their group,
    assuming random assignment and that assignment moves attrition one way only: the group
    observed more often (share ``observed_*`` of its units) has its observed outcomes trimmed
    by ``p = (q_more - q_less) / q_more``, from the top for the lower bound of the effect and
    from the bottom for the upper bound when the treated group is trimmed (the reverse when
    the comparison group is). ``p x n`` units are trimmed, a fraction of one too (the unit at
    the p quantile counts for the part of it kept): rounded to whole units, a p x n below one
    half trimmed nothing, and the bounds were one value however much attrition differed.
    None when a group has no observed outcome or every one would be trimmed."""
    y_t = np.sort(np.asarray(y_treated, dtype=float))
    y_c = np.sort(np.asarray(y_comparison, dtype=float))
    if not len(y_t) or not len(y_c) or observed_treated <= 0 or observed_comparison <= 0:
        return None
    trim_treated = observed_treated >= observed_comparison
    more, less = (observed_treated, observed_comparison) if trim_treated else (observed_comparison, observed_treated)
    share = (more - less) / more
    values = y_t if trim_treated else y_c
    n_trim = round(share * len(values), 9)  # not 1.9999999999999996 units for 2
    if n_trim >= len(values):
        return None
    without_top, without_bottom, cut_top, cut_bottom = _trimmed_means(values, n_trim)
    if trim_treated:
        low, high = without_top - y_c.mean(), without_bottom - y_c.mean()
    else:
        low, high = y_t.mean() - without_bottom, y_t.mean() - without_top
    return LeeBounds(float(low), float(high), "treated" if trim_treated else "comparison", float(share), float(n_trim),
                     cut_top, cut_bottom)


def lee_standard_errors(bounds: LeeBounds, endline, treated, clusters=None) -> tuple[float, float]:
    """Standard errors of Lee's bounds (low, high), from the bounds' influence on each unit.

    ``endline``: the outcome at endline of every unit measured at baseline (NaN: lost),
    ``treated``: its group (1 = treated). A bound is a trimmed mean of the group observed more
    often against the other group's mean, and the trimmed share ``p`` is itself estimated from
    the shares observed, so a unit counts for the trimmed mean (its outcome clipped at the
    cut), for ``p`` (whether it was observed: a bound moves by (mean kept - cut) / (1 - p) per
    unit of p) and for the other mean. Summed over units their squares are Lee's (2009,
    Proposition 3) asymptotic variance (times n / (n - 1)); with ``clusters`` the influence is
    summed by cluster first and the squares of the sums are added (times G / (G - 1), as the
    clustered standard errors of the estimates): units of a cluster are alike.
    Raises NotEstimable when the outcome observed does not vary, there are fewer than two
    units or clusters, or a standard error is zero or not finite."""
    y = np.asarray(endline, dtype=float)
    seen = ~np.isnan(y)
    more = (np.asarray(treated) == 1) == (bounds.trimmed_group == "treated")  # the group trimmed
    less = ~more
    n_more, n_less = int(np.count_nonzero(more)), int(np.count_nonzero(less))
    seen_more, seen_less = more & seen, less & seen
    k_more, k_less = int(np.count_nonzero(seen_more)), int(np.count_nonzero(seen_less))
    p = bounds.trimmed_share
    y_more, y_less = y[seen_more], y[seen_less]
    if y_more.min() == y_more.max() == y_less.min() == y_less.max():
        raise NotEstimable("the outcome observed at endline does not vary: no standard errors")
    other = y_less - y_less.mean()
    if clusters is None:
        groups, n_groups = None, len(y)
    else:
        groups = pd.factorize(np.asarray(clusters), use_na_sentinel=False)[0]
        n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < 2:
        raise NotEstimable("fewer than two units or clusters: no standard errors")
    out = {}
    for kept, cut in (("bottom", bounds.cut_top), ("top", bounds.cut_bottom)):
        clipped = np.minimum(y_more, cut) if kept == "bottom" else np.maximum(y_more, cut)
        mean_clipped = clipped.mean()
        slope = (mean_clipped - p * cut) / (1 - p) - cut  # the mean kept - the cut
        influence = np.zeros(len(y))
        influence[seen_more] = (clipped - mean_clipped) / ((1 - p) * k_more) + slope * (n_more - k_more) / (n_more * k_more)
        influence[more & ~seen] = -slope / n_more
        influence[seen_less] = -other / k_less - slope * (n_less - k_less) / (n_less * k_less)
        influence[less & ~seen] = slope / n_less
        sums = influence if groups is None else np.bincount(groups, weights=influence, minlength=n_groups)
        out[kept] = math.sqrt(n_groups / (n_groups - 1) * float(np.dot(sums, sums)))
    # the treated group trimmed: the lower bound keeps its bottom; the comparison group: its top
    se_low, se_high = (out["bottom"], out["top"]) if bounds.trimmed_group == "treated" else (out["top"], out["bottom"])
    if not all(math.isfinite(se) and se > 0 for se in (se_low, se_high)):
        raise NotEstimable("their standard errors are zero or not finite")
    return se_low, se_high


def imbens_manski_interval(low: float, high: float, se_low: float, se_high: float, alpha: float) -> tuple[float, float]:
    """Imbens and Manski's (2004, "Confidence Intervals for Partially Identified Parameters",
    Econometrica 72(6)) confidence interval for an effect known to lie between two estimated
    bounds: ``[low - c se_low, high + c se_high]``, which covers the effect (not every point
    between the bounds) with probability ``1 - alpha`` wherever it lies between them. ``c``
    solves Phi(c + (high - low) / max(se_low, se_high)) - Phi(-c) = 1 - alpha (their C_N,
    with sqrt(N) (high - low) / max(sigma_l, sigma_u) written in standard errors): the
    two-sided critical value when the bounds meet, the one-sided one when they are far apart,
    as only one can then be on the wrong side of the effect: the interval Lee (2009) reports
    for his bounds. It assumes the width is estimated precisely where the bounds meet
    (superefficiently, Stoye 2009): with a trimmed share near 0 its coverage can fall short
    of 1 - alpha."""
    from scipy.optimize import brentq
    from scipy.special import ndtr, ndtri

    spread = max(high - low, 0.0) / max(se_low, se_high)
    c = brentq(lambda c: ndtr(c + spread) - ndtr(-c) - (1 - alpha), ndtri(1 - alpha), ndtri(1 - alpha / 2), xtol=1e-12)
    return low - c * se_low, high + c * se_high
