"""Small groups in the impact tables: what is not published, and why.

The impact tables are published (schema ``impact`` of the serving warehouse) with the
marts, under the rule the README states for every disaggregated table: no figure about
fewer than ``k`` people (``k`` of ``config/disclosure.yml``, read by :func:`threshold`).
A *group* here is the treated or the comparison units of a row (of a subgroup, or of the
whole programme). When a group has from 1 to ``k - 1`` units, its size and every figure
computed from its people (means, shares, standardised differences) are NULL, and so is
the row's estimate with its standard error, interval and p-value (an effect is a
difference of the group means: with the other group's mean it would give this one back).
The row's ``status`` is then ``not_estimable`` and ``reason`` says why (it replaces any
other reason, which could quote the group's size). An empty group (0 units) singles out
nobody: its size is published, as in the marts.

Subgroup rows add up: the levels of one dimension (region_code, sex, ...) partition the
units of the whole-programme row (``subgroup = 'all'``), so a lone withheld level would be
the whole-programme figure minus the other levels. As in ``quality/disclosure.py``, the
smallest other level of that dimension is then withheld too (*complementary*), for the
same group; a level withheld in one estimator's row is withheld in every estimator's row
of the same study x programme x outcome (their samples overlap). Each dimension's levels
form one line with the whole-programme total, so no lone withheld level per line means no
withheld size can be recomputed from the published ones.

The propensity-weighted estimator and the balance table count the units trimmed outside
the propensity bounds (``trimmed_treated`` / ``trimmed_comparison`` in the estimator
options, ``n_trimmed``): a count of 1 to ``k - 1`` is NULL and the reason says so (0
stays). So are the figures that give it back by difference: the group's size, means and
the cluster count of the weighted row (its size before trimming is the covariate-adjusted
estimators'), the balance table's treated mean after weighting (an unweighted mean of the
treated units kept), and the balance table's total ``n_trimmed`` whenever one group's
count is withheld, in the balance sample or in a whole-programme weighted row (the total
minus the other group's published count). The weighted estimate stays (its comparison
half is weighted by unpublished propensity scores).

The event study's row counts the units behind its endline coefficient (measured at
baseline and endline, as the DiD's); its options count the units and clusters of its
stacked regression (measured at baseline and in any other round: ``stacked_treated``,
``stacked_comparison``, ``stacked_clusters``). Those are published in the whole-programme
row only (the levels' would add up to it, and need complementary withholding of their
own); a group's count of 1 to ``k - 1`` is NULL with the stack's cluster count and the
reason says so (0 stays).

Samples that differ by a few units (:func:`protect_differences`, over every outcome of a
study x programme at once). A group's figures are published on several samples of its
units: each estimator's row of each outcome (units measured at baseline and endline, with
every covariate, inside the propensity bounds, ...), each outcome's group means by round
(units measured in that round), the attrition table's units at baseline and at endline,
the balance table's units with every covariate (one sample per programme: it does not
depend on the outcome) and the event study's stacked sample (its options). The outcomes
are measured on the same people. Two published sizes that differ by 1 to ``k - 1`` give
those units' count back, and two means of the same outcome and round their mean: with
three treated units lost at endline, the treated baseline mean of ``impact_group_means``
(every unit measured at baseline) and that of the estimates (units measured at baseline
and endline) give the three units' baseline mean.
So, per subgroup and group, the samples are kept in a fixed order, and one whose size
differs by 1 to ``k - 1`` from a sample kept before it is withheld. When the two publish
means of the same outcome, its size and means go (a group-mean row's size, mean and
standard error; an estimate row's group size and means and its cluster count, and its
estimate too when it is a difference of the group means: ``diff_in_means``, ``did``
without covariates, ``event_study``, whose endline coefficient in ``impact_pretrends``
goes with it; the others' estimates are regression coefficients and stay); otherwise
only its size goes (another outcome's row or group means keep their means and
estimates; the balance table its covariate means; the attrition table's counts of the
group go with its test; the event study's stacked count goes with the stack's cluster
count). The reason names the sample kept. The order does not depend on the configured
order of the estimators: first the estimate rows whose estimate would go with their
means (a difference of the group means), then the other estimate rows, the group means
by round, the balance table, the attrition table, the event study's stacked samples (a
detail beside the units behind its estimate); within each, the samples whose size most
samples share first, then by outcome and estimator name (rounds by index). A subgroup
level so withheld alone in its line (outcome x dimension x estimator x group) has the
smallest other level withheld with it (only its size when the lone level's means are
published). Withholding the descriptive rows before the estimates keeps the evaluation's
results where it can: the group means are a picture, the balance table and the
attrition counts diagnostics.

A reason published beside a withheld size does not count that group's units
(:func:`protect_reasons`): "121 treated, 158 comparison (minimum 125 per group)" becomes
"fewer than 125 treated, 158 comparison (minimum 125 per group)"; no overlap after
trimming names the group left empty, not how many units of the other remain.

The notes published with the tables (and in the report) count units the same way: 1 to
``k - 1`` of them are "fewer than k units" (:func:`count_text`).

Limits. Samples whose sizes differ by 1 to ``k - 1`` are withheld even when neither holds
the other (units missing in one round and other units in another): their difference then
mixes two sets of units and counts nobody, so this over-withholds; samples of equal size
that hold different units are not compared. A group's cluster count is withheld with its
size, but is not compared with a cluster count known from the design (clusters sampled,
villages of the programme): a study whose evaluators know it could learn from
``n_clusters`` how many clusters a few units left.

Nothing here imports more than pandas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

DEFAULT_K = 10  # as quality.disclosure.DEFAULT_K
DISCLOSURE_FILE = "disclosure.yml"

# per group: its size, then the figures computed from its people
ESTIMATE_GROUPS = {
    "treated": ("n_treated", "baseline_mean_treated", "endline_mean_treated"),
    "comparison": ("n_comparison", "baseline_mean_comparison", "endline_mean_comparison"),
}
BALANCE_GROUPS = {
    "treated": ("n_treated", "mean_treated", "mean_treated_weighted"),
    "comparison": ("n_comparison", "mean_comparison", "mean_comparison_weighted"),
}
ATTRITION_GROUPS = {
    "treated": ("n_baseline_treated", "n_missing_treated", "share_missing_treated"),
    "comparison": ("n_baseline_comparison", "n_missing_comparison", "share_missing_comparison"),
}
# figures of a row computed from both groups (the clusters of both groups: with one group's
# size published, a cluster count of one unit per cluster would give the other's back)
ESTIMATE_RESULTS = ("estimate", "std_error", "ci_low", "ci_high", "p_value", "n_clusters")
BALANCE_RESULTS = ("smd_before", "smd_after", "n_trimmed")
# the Lee bounds and their confidence interval: withheld together (the interval's ends are
# the bounds widened by a multiple of their standard errors)
LEE = ("lee_bound_low", "lee_bound_high", "lee_trimmed_group", "lee_trimmed_share", "lee_ci_low", "lee_ci_high")
ATTRITION_RESULTS = ("difference", "std_error", "p_value", *LEE)
# per group: the event study's option counting its units in the stacked regression
# (observed at baseline and in any other round; the row's sizes count those behind its
# endline coefficient, observed at baseline and endline), and the option counting the
# stack's clusters
STACKED = {"treated": "stacked_treated", "comparison": "stacked_comparison"}
STACKED_CLUSTERS = "stacked_clusters"
# estimator options that count units of a group
SAMPLE_OPTIONS = ("trimmed_treated", "trimmed_comparison", "comparison_effective_n", *STACKED.values(),
                  STACKED_CLUSTERS)
# per group: the option (ipw_did) and the balance key counting its units outside the
# propensity trimming bounds
TRIMMED = {"treated": "trimmed_treated", "comparison": "trimmed_comparison"}


def threshold(config_dir: str | Path | None) -> int:
    """``k`` of ``<config_dir>/disclosure.yml`` (the project's small-cell threshold), or
    the default when there is no such file."""
    path = Path(config_dir) / DISCLOSURE_FILE if config_dir is not None else None
    if path is None or not path.exists():
        return DEFAULT_K
    from quality.disclosure import load_config

    return load_config(path).k


def finite(value: Any) -> float | None:
    """A value as a finite float, or None (missing, not a number, infinite)."""
    if value is None or value is pd.NA:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def is_small(n: Any, k: int) -> bool:
    """A group of 1 to k - 1 units (0 singles out nobody; None is not published anyway)."""
    n = finite(n)
    return n is not None and 1 <= n < k


def count_text(n: int, k: int, what: str = "units") -> str:
    """A count of people for a published note: "fewer than k units" when it is 1 to k - 1."""
    return f"fewer than {k} {what}" if is_small(n, k) else f"{int(n)} {what}"


def small_reason(group: str, k: int) -> str:
    return (f"fewer than {k} units in the {group} group: its size, means and the estimate are not published "
            "(disclosure control)")


def _complement_reason(group: str, level: str, k: int) -> str:
    return (f"not published (disclosure control): withheld with subgroup {level}, whose {group} group has fewer "
            f"than {k} units, so that its figures cannot be recomputed from the whole-sample row")


def protect_estimates(est_rows: list[dict], pre_rows: list[dict], k: int) -> None:
    """Withhold small groups in the estimate rows of one study x programme x outcome (and
    the pre-trend rows of the withheld event-study estimates), in place."""
    _protect_stacked(est_rows, k)
    withheld: dict[tuple[str, str], str] = {}  # (subgroup, group) -> reason
    own: set[tuple[str, str, str]] = set()  # (subgroup, estimator, group): small in that row itself
    for row in est_rows:
        for group, (size, *_) in ESTIMATE_GROUPS.items():
            if is_small(row.get(size), k):
                own.add((row["subgroup"], row["estimator"], group))
                if row.get("subgroup_dimension") is not None:  # a level: withheld in every estimator's row
                    withheld[(row["subgroup"], group)] = small_reason(group, k)
    # complementary: a dimension x group with exactly one level withheld
    sizes: dict[tuple[str, str], dict[str, float]] = {}
    for row in est_rows:
        if row.get("subgroup_dimension") is None:
            continue
        for group, (size, *_) in ESTIMATE_GROUPS.items():
            n = row.get(size)
            if n is None or n is pd.NA:
                continue
            levels = sizes.setdefault((row["subgroup_dimension"], group), {})
            levels[row["subgroup"]] = min(levels.get(row["subgroup"], math.inf), float(n))
    # units without a value of the dimension are in the whole-sample row and in no level: an
    # unpublished level of their own, small when 1 to k - 1 of them. A propensity-weighted
    # row counts its sample before trimming (every level fits and trims its own propensity
    # score: the units trimmed differ between the levels and the whole sample, and their
    # difference is no unit without a value)
    unvalued: dict[tuple[str, str], bool] = {}
    wholes = {(row["estimator"], g): _untrimmed_size(row, g) for row in est_rows if row.get("subgroup_dimension") is None
              for g in ESTIMATE_GROUPS}
    level_sums: dict[tuple[str, str, str], float] = {}
    for row in est_rows:
        dim = row.get("subgroup_dimension")
        if dim is None:
            continue
        for group in ESTIMATE_GROUPS:
            n = _untrimmed_size(row, group)
            if n is not None:
                key = (dim, group, row["estimator"])
                level_sums[key] = level_sums.get(key, 0.0) + n
    for (dim, group, estimator), total in level_sums.items():
        whole = wholes.get((estimator, group))
        if finite(whole) is not None:
            unvalued[(dim, group)] = unvalued.get((dim, group), False) or is_small(float(whole) - total, k)
    for (dim, group), levels in sizes.items():
        alone = [level for level in levels if (level, group) in withheld]
        others = [level for level in levels if (level, group) not in withheld]
        if len(alone) == 1 and others and not unvalued.get((dim, group)):
            pick = min(others, key=lambda level: levels[level])  # ties: the first level
            withheld[(pick, group)] = _complement_reason(group, alone[0], k)
        elif not alone and others and unvalued.get((dim, group)):
            pick = min(others, key=lambda level: levels[level])
            withheld[(pick, group)] = (f"not published (disclosure control): withheld so that the {group} units "
                                       f"with no {dim} value, fewer than {k}, cannot be recomputed from the "
                                       "whole-sample row")
    if not withheld and not own:
        return
    hidden_estimates: dict[tuple[str, str], str] = {}  # (subgroup, estimator) -> reason
    for row in est_rows:
        # a level is withheld in every estimator's row (their samples overlap); the whole
        # sample only in the rows whose own group is small (an estimator that drops units
        # with missing covariates can be small where the others are not)
        groups = [g for g in ESTIMATE_GROUPS
                  if (row["subgroup"], g) in withheld or (row["subgroup"], row["estimator"], g) in own]
        if not groups:
            continue
        reasons = list(dict.fromkeys(withheld.get((row["subgroup"], g)) or small_reason(g, k) for g in groups))
        _not_estimable(row, [*(c for g in groups for c in ESTIMATE_GROUPS[g]), *ESTIMATE_RESULTS], reasons)
        row["estimator_options"] = _without_sample_options(row.get("estimator_options"))
        hidden_estimates[(row["subgroup"], row["estimator"])] = row["reason"]
    kept, collapsed = [], set()
    for row in pre_rows:
        key = (row["subgroup"], row["estimator"])
        if key not in hidden_estimates:
            kept.append(row)
        elif key not in collapsed:
            collapsed.add(key)
            base = {c: row[c] for c in ("study_id", "programme_code", "outcome", "estimator", "subgroup")}
            reason = hidden_estimates[key]
            kept.append({**base, "status": "not_estimable", "reason": reason,
                         "joint_status": "not_estimable", "joint_reason": reason})
    pre_rows[:] = kept


def _untrimmed_size(row: dict, group: str) -> float | None:
    """A row's size of ``group`` before propensity trimming: its size plus the units of the
    group it trimmed (``trimmed_treated`` / ``trimmed_comparison``; none in the rows of
    estimators that do not trim); None when the size is not known."""
    n = finite(row.get(ESTIMATE_GROUPS[group][0]))
    if n is None:
        return None
    options = json.loads(row.get("estimator_options") or "{}")
    return n + (finite(options.get(TRIMMED[group])) or 0.0)


def _protect_stacked(est_rows: list[dict], k: int) -> None:
    """The event study's stacked-sample sizes (options ``stacked_*``), in place: published in
    the whole-sample row only (the levels' would add up to it: one withheld alone would need
    another withheld with it, and units with no value of the dimension their count checked,
    as the rows' sizes have), a group's withheld with the stack's cluster count when it is
    1 to k - 1 units (0 stays)."""
    keys = (*STACKED.values(), STACKED_CLUSTERS)
    for row in est_rows:
        options = json.loads(row.get("estimator_options") or "{}")
        if not any(key in options for key in keys):
            continue
        if row.get("subgroup_dimension") is not None:
            row["estimator_options"] = json.dumps({key: value for key, value in options.items() if key not in keys},
                                                  sort_keys=True, default=str)
            continue
        for group, key in STACKED.items():
            if is_small(options.get(key), k):
                _withhold_stacked(row, group, f"fewer than {k} {group} units in the event study's stacked sample "
                                              "(observed at baseline and in any other round): their count and the "
                                              "stack's cluster count are not published (disclosure control)")


def _stacked_size(row: dict, group: str) -> float | None:
    """A row's published count of ``group`` in the event study's stacked sample (None: none)."""
    options = row.get("estimator_options")
    return finite(json.loads(options).get(STACKED[group])) if options else None


def _withhold_stacked(row: dict, group: str, reason: str) -> None:
    """Withhold a group's count in the event study's stacked sample (an option of its row),
    with the stack's cluster count (with the other group's count and one unit per cluster,
    it would give this one back), in place; the row's sizes, means and estimate stay."""
    options = json.loads(row.get("estimator_options") or "{}")
    if finite(options.get(STACKED[group])) is None:
        return
    options[STACKED[group]] = options[STACKED_CLUSTERS] = None
    row["estimator_options"] = json.dumps(options, sort_keys=True, default=str)
    _add_reason(row, reason)


def _without_sample_options(options: str | None) -> str | None:
    if not options:
        return options
    parsed = json.loads(options)
    return json.dumps({k: v for k, v in parsed.items() if k not in SAMPLE_OPTIONS}, sort_keys=True, default=str)


def _trimmed_reason(group: str, k: int, what: str) -> str:
    return (f"fewer than {k} {group} units outside the propensity trimming bounds: {what} not published "
            "(disclosure control)")


def _add_reason(row: dict, reason: str) -> None:
    row["reason"] = f"{row['reason']}; {reason}" if row.get("reason") else reason


def protect_trimmed(est_rows: list[dict], k: int) -> None:
    """Withhold the counts of 1 to k - 1 units a propensity-weighted row trimmed, in place.

    A trimmed count is a count of people (0 singles out nobody and stays). The row's size
    of that group is its size before trimming minus the trimmed units, and its size before
    trimming is published by the covariate-adjusted estimators (the same units): so the
    group's size, means and the row's cluster count are withheld with the count. The
    estimate stays: its comparison half is weighted by propensity scores that are not
    published, so it does not give a group mean back."""
    for row in est_rows:
        options = row.get("estimator_options")
        if not options:
            continue
        parsed = json.loads(options)
        small = [g for g, option in TRIMMED.items() if is_small(parsed.get(option), k)]
        if not small:
            continue
        for group in small:
            parsed[TRIMMED[group]] = None
            for column in ESTIMATE_GROUPS[group]:
                row[column] = None
            _add_reason(row, _trimmed_reason(group, k, f"their count, and the {group} group's size, means and the "
                                                       "cluster count of this row, are"))
        row["n_clusters"] = None
        row["estimator_options"] = json.dumps(parsed, sort_keys=True, default=str)


def _protect_trimmed_balance(row: dict, k: int) -> dict:
    """A balance row without the trimmed count (of both groups) when 1 to k - 1 units, or
    1 to k - 1 of a group, were trimmed (the total minus the other group's count, published
    by the propensity-weighted estimate, would give the group's back), and without the treated mean after weighting (an unweighted mean of the treated units kept:
    against the mean before, it gives the trimmed ones' back) when 1 to k - 1 treated
    units were trimmed. The comparison mean after weighting is weighted by unpublished
    propensity scores and stays."""
    row = {**row}
    if is_small(row.get("n_trimmed"), k) or any(is_small(row.get(key), k) for key in TRIMMED.values()):
        _withhold_trimmed_total(row, k)
    if is_small(row.get(TRIMMED["treated"]), k) and finite(row.get("mean_treated_weighted")) is not None:
        row["mean_treated_weighted"] = row["smd_after"] = None
        _add_reason(row, _trimmed_reason("treated", k, "the treated mean and the standardised difference after "
                                                        "weighting are"))
    return row


def _withhold_trimmed_total(row: dict, k: int) -> None:
    if row.get("n_trimmed") is None:
        return
    row["n_trimmed"] = None
    _add_reason(row, f"fewer than {k} units of a group, or in all, outside the propensity trimming bounds: the "
                     "count of units trimmed is not published (disclosure control)")


def protect_trimmed_total(balance_rows: list[dict], est_rows: list[dict], k: int) -> list[dict]:
    """Balance rows of one study x programme without the count of units trimmed (both
    groups) when a whole-programme propensity-weighted row withholds one group's count and
    publishes the other's: the total minus the published count would give the withheld one
    back (:func:`protect_trimmed`)."""
    for row in est_rows:
        if row["subgroup"] != "all" or not row.get("estimator_options"):
            continue
        options = json.loads(row["estimator_options"])
        withheld = [key for key in TRIMMED.values() if key in options and options[key] is None]
        if withheld and len(withheld) < len(TRIMMED):
            balance_rows = [dict(r) for r in balance_rows]
            for r in balance_rows:
                _withhold_trimmed_total(r, k)
            break
    return balance_rows


def protect_reasons(est_rows: list[dict], pre_rows: list[dict], balance_rows: list[dict]) -> None:
    """Reasons that count the units of a group whose size is withheld in their row, without
    the count, in place (estimates, their pre-trend rows, balance): "121 treated, 158
    comparison (minimum 125 per group)" beside a withheld treated size becomes "fewer than
    125 treated, 158 comparison (minimum 125 per group)", "(treated: 12, comparison: 0)"
    becomes "(treated: not published, comparison: 0)". Disclosure control's reasons count
    nobody and stay."""
    sizes = {}
    for row in est_rows:
        withheld = [g for g, (size, *_) in ESTIMATE_GROUPS.items() if finite(row.get(size)) is None]
        sizes[(row["outcome"], row["subgroup"], row["estimator"])] = withheld
        row["reason"] = _uncounted(row.get("reason"), withheld)
    for row in pre_rows:
        withheld = sizes.get((row.get("outcome"), row["subgroup"], row["estimator"]), list(ESTIMATE_GROUPS))
        for column in ("reason", "joint_reason"):
            row[column] = _uncounted(row.get(column), withheld)
    for row in balance_rows:
        withheld = [g for g, (size, *_) in BALANCE_GROUPS.items() if finite(row.get(size)) is None]
        row["reason"] = _uncounted(row.get("reason"), withheld)


def _uncounted(reason: str | None, groups: list[str]) -> str | None:
    """A reason without the counts of ``groups`` in its parts other than disclosure
    control's (:func:`protect_reasons`)."""
    if not reason or not groups:
        return reason
    import re

    parts = reason.split("; ")
    for i, part in enumerate(parts):
        if "(disclosure control)" in part:
            continue
        minimum = re.search(r"\(minimum (\d+) per group\)", part)
        for group in groups:
            def bound(match: re.Match, group: str = group) -> str:
                if minimum is None:
                    return f"an unpublished number of {group}"
                m = int(minimum.group(1))
                return f"fewer than {m} {group}" if int(match.group(1)) < m else f"at least {m} {group}"

            part = re.sub(rf"(?<![\w.])(\d+) {group}\b", bound, part)
            part = re.sub(rf"\b{group}: \d+", f"{group}: not published", part)
        parts[i] = part
    return "; ".join(parts)


def _not_estimable(row: dict, columns: Iterable[str], reasons: Iterable[str]) -> None:
    """In place: ``columns`` NULL (a group's figures and the row's results), the row
    ``not_estimable`` with ``reasons``."""
    for column in columns:
        row[column] = None
    row["status"] = "not_estimable"
    row["reason"] = "; ".join(reasons)


def _protect_row(row: dict, groups: dict[str, tuple[str, ...]], results: tuple[str, ...], k: int) -> dict:
    small = [g for g, (size, *_) in groups.items() if is_small(row.get(size), k)]
    if not small:
        return row
    row = dict(row)
    _not_estimable(row, [*(c for g in small for c in groups[g]), *results],
                   (f"fewer than {k} units in the {group} group: its size and figures are not published "
                    "(disclosure control)" for group in small))
    return row


def _from_means(row: dict) -> bool:
    """Whether a row's estimate is the difference of its group means: the endline difference
    in means, the DiD without covariates and the event study's endline coefficient (of the
    mean changes from baseline to endline; the event study's row describes the units
    observed at both)."""
    options = json.loads(row.get("estimator_options") or "{}")
    kind = options.get("type")
    return kind in ("diff_in_means", "event_study") or (kind == "did" and not options.get("covariates_used"))


def _difference_reason(group: str, other: str, k: int) -> str:
    return (f"the {group} group's size and means are not published (disclosure control): its units and those "
            f"of {other} differ by fewer than {k}, whose count and means the difference would give back")


def _count_reason(group: str, other: str, k: int) -> str:
    return (f"the {group} group's size is not published (disclosure control): its units and those of {other} "
            f"differ by fewer than {k}, whose count the difference would give back")


def _stacked_reason(group: str, other: str, k: int) -> str:
    return (f"the {group} units of the event study's stacked sample ({STACKED[group]}) and the stack's clusters are "
            f"not published (disclosure control): they and the units of {other} differ by fewer than {k}, whose "
            "count the difference would give back")


def _attrition_reason(group: str, other: str, k: int) -> str:
    return (f"the {group} group's counts at baseline and endline are not published (disclosure control): they "
            f"differ by fewer than {k} units from those of {other}, whose count the difference would give")


def _withhold_group(row: dict, group: str, reason: str) -> None:
    """Withhold a group's size and means in an estimate row, in place, and the cluster
    count and the counting options with them; the estimate too when it is a difference of
    the group means (:func:`_from_means`). A reason other than disclosure control's is
    kept only beside a published estimate (a warning), as it could quote the group's size."""
    for column in ESTIMATE_GROUPS[group]:
        row[column] = None
    _withhold_count(row, group, reason, from_means=_from_means(row))


def _withhold_count(row: dict, group: str, reason: str, from_means: bool = False) -> None:
    """Withhold a group's size in an estimate row, in place, with the cluster count and the
    counting options (its means stay); with ``from_means`` the estimate too."""
    row[ESTIMATE_GROUPS[group][0]] = None
    row["n_clusters"] = None
    row["estimator_options"] = _without_sample_options(row.get("estimator_options"))
    published = row.get("status") == "ok" and not from_means
    reasons = [part for part in (row.get("reason") or "").split("; ")
               if part and (published or "(disclosure control)" in part)]
    if from_means and row.get("estimate") is not None:
        reason += ", and the estimate, a difference of the group means"
    if from_means:
        for column in ESTIMATE_RESULTS:
            row[column] = None
        row["status"] = "not_estimable"
    row["reason"] = "; ".join(reasons + [reason])


@dataclass
class _Sample:
    """A published sample of a group: its size(s), the outcome whose means it publishes
    (None: no outcome's), what the reasons call it, its rows, its kind and its rank, outcome
    and name for :func:`_keep_order`."""

    kind: str  # "estimate", "means", "balance", "attrition", "stacked"
    sizes: tuple[float, ...]
    outcome: str | None
    label: str
    rows: list[dict]
    order: tuple = ()


def _samples(subgroup: str, group: str, est_rows: list[dict], mean_rows: list[dict], attrition_rows: list[dict],
             balance_rows: list[dict]) -> list[_Sample]:
    """The published samples of a subgroup x group, in the order they are kept
    (:func:`_keep_order`)."""
    size = ESTIMATE_GROUPS[group][0]
    out = [_Sample("estimate", (finite(row.get(size)),), row["outcome"], f"the {row['estimator']} estimate", [row],
                   (0 if _estimate_at_stake(row) else 1, row["outcome"], row["estimator"]))
           for row in est_rows if row["subgroup"] == subgroup and finite(row.get(size)) is not None]
    if subgroup == "all":
        out += [_Sample("means", (finite(row["n_units"]),), row["outcome"],
                        f"the group means of round {row['round_index']}", [row], (2, row["outcome"], row["round_index"]))
                for row in mean_rows if row.get("treatment_group") == group and finite(row.get("n_units")) is not None]
        for n in dict.fromkeys(finite(row.get(size)) for row in balance_rows):
            if n is not None:
                out.append(_Sample("balance", (n,), None, "the balance table",
                                   [row for row in balance_rows if finite(row.get(size)) == n], (3, "", "")))
        baseline, missing, _share = ATTRITION_GROUPS[group]
        for row in attrition_rows:
            n, m = finite(row.get(baseline)), finite(row.get(missing))
            sizes = tuple(v for v in (n, n - m if n is not None and m is not None else None) if v is not None)
            if sizes:
                out.append(_Sample("attrition", sizes, None, "the attrition table", [row], (4, row["outcome"], "")))
    out += [_Sample("stacked", (n,), None, f"the {row['estimator']} estimate's stacked sample", [row],
                    (5, row["outcome"], row["estimator"]))
            for row in est_rows if row["subgroup"] == subgroup and (n := _stacked_size(row, group)) is not None]
    return _keep_order(out)


def _estimate_at_stake(row: dict) -> bool:
    """Whether withholding a group's means in an estimate row would withhold its published
    estimate too (a difference of the group means, :func:`_from_means`)."""
    return row.get("status") == "ok" and finite(row.get("estimate")) is not None and _from_means(row)


def _keep_order(samples: list[_Sample]) -> list[_Sample]:
    """Samples in the order they are kept, whatever the order of the estimators in the
    configuration: the estimate rows whose estimate would be withheld with their means (a
    difference of the group means) first, the other estimate rows, the group means (by
    round), the balance table, the attrition table, the event study's stacked samples
    (units observed at baseline and in any other round: an option of its row, beside the
    units behind its estimate); among those, the samples whose size most samples share
    first, then by outcome and estimator name."""
    shared: dict[float, int] = {}
    for sample in samples:
        for n in set(sample.sizes):
            shared[n] = shared.get(n, 0) + 1
    return sorted(samples, key=lambda s: (s.order[0], -max(shared[n] for n in s.sizes), *s.order[1:]))


def protect_differences(est_rows: list[dict], pre_rows: list[dict], mean_rows: list[dict], attrition_rows: list[dict],
                        balance_rows: list[dict], k: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Samples of one group that differ by a few units, in the rows of one study x programme:
    the estimate and pre-trend rows are changed in place; the group-mean, attrition and
    balance rows are returned (in that order).

    A group's figures are published on several samples of its units: each estimator's
    (units measured at baseline and endline, with every covariate, inside the propensity
    bounds, ...), for the whole programme each round's group means (units measured in that
    round), the attrition table's units at baseline and at endline, the balance table's
    units with every covariate, and the event study's stacked sample (its whole-sample
    row's options). Two published sizes that differ by 1 to ``k - 1`` units
    give those units' count back, and two means of the same outcome and round their mean
    (three units lost at endline: the baseline mean of every unit minus that of the units
    measured at endline). So the samples of a subgroup x group are taken in order
    (:func:`_samples`) and one that differs by 1 to ``k - 1`` from a sample kept before it
    is withheld: with its means when that sample publishes means of the same outcome
    (:func:`_withhold_group`; a group-mean row: size, mean and standard error), else its
    size (the balance table's means are of covariates, the attrition table's counts are
    withheld with its test; the stacked sample's count is an option of the event study's
    row: it goes alone). A subgroup level withheld so, alone in its line (dimension x
    estimator x group) beside a published whole-sample row, has the smallest other level
    of the line withheld with it. An event study's estimate withheld with its means takes
    its endline coefficient in the pre-trend rows with it (the same number)."""
    mean_rows = [dict(row) for row in mean_rows]
    attrition_rows = [dict(row) for row in attrition_rows]
    balance_rows = [dict(row) for row in balance_rows]
    estimated = {_line(row) for row in est_rows if finite(row.get("estimate")) is not None}
    before = _withheld_levels(est_rows)
    subgroups = list(dict.fromkeys(row["subgroup"] for row in est_rows)) or ["all"]
    if "all" not in subgroups:
        subgroups.insert(0, "all")
    for subgroup in subgroups:
        for group in ESTIMATE_GROUPS:
            counted: list[tuple[float, str]] = []  # (size, which sample) of the sizes published
            measured: list[tuple[float, str, str]] = []  # (size, outcome, which sample) of the means published
            for sample in _samples(subgroup, group, est_rows, mean_rows, attrition_rows, balance_rows):
                if sample.kind == "stacked" and _stacked_size(sample.rows[0], group) is None:
                    continue  # withheld with the row's size, earlier in this loop
                other = next((label for n in sample.sizes for m, outcome, label in measured
                              if outcome == sample.outcome and 1 <= abs(n - m) < k), None)
                if other is not None:
                    _withhold_sample(sample, group, _difference_reason(group, other, k), k)
                    continue
                other = next((label for n in sample.sizes if (label := _clash(n, counted, k))), None)
                if other is not None:
                    why = {"attrition": _attrition_reason, "stacked": _stacked_reason}.get(sample.kind, _count_reason)
                    _withhold_sample(sample, group, why(group, other, k), k, means=False)
                else:
                    counted += [(n, sample.label) for n in sample.sizes]
                if sample.outcome is not None:
                    measured += [(n, sample.outcome, sample.label) for n in sample.sizes]
    _protect_lines(est_rows, before, k)
    _withhold_endline_coefficients(pre_rows, {line for row in est_rows if (line := _line(row)) in estimated
                                              and finite(row.get("estimate")) is None})
    return mean_rows, attrition_rows, balance_rows


def _line(row: dict) -> tuple[str, str, str]:
    """The outcome, subgroup and estimator of an estimate or pre-trend row."""
    return row["outcome"], row["subgroup"], row["estimator"]


def _withhold_endline_coefficients(pre_rows: list[dict], withheld: set[tuple[str, str, str]]) -> None:
    """The endline coefficient of the event-study lines (outcome, subgroup, estimator) whose
    estimate, the same number, is ``withheld``, in place: its figures NULL, the round
    ``not_estimable``; the other rounds and the pre-trend test stay (their samples are other
    units, and no group means of theirs are published)."""
    ends: dict[tuple[str, str, str], int] = {}
    for row in pre_rows:
        if (line := _line(row)) in withheld and finite(row.get("round_index")) is not None:
            ends[line] = max(ends.get(line, row["round_index"]), row["round_index"])
    for row in pre_rows:
        if (line := _line(row)) in ends and row.get("round_index") == ends[line] and not row.get("is_reference"):
            for column in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
                row[column] = None
            row["status"] = "not_estimable"
            row["reason"] = ("not published (disclosure control): the endline coefficient is the event study's "
                             "estimate, withheld in impact_estimates as a difference of the group means")


def _withhold_sample(sample: _Sample, group: str, reason: str, k: int, means: bool = True) -> None:
    """Withhold a sample's size (and its means with ``means``), in place."""
    for row in sample.rows:
        if sample.kind == "estimate":
            if means:
                _withhold_group(row, group, reason)
            else:
                _withhold_count(row, group, reason)
        elif sample.kind == "means":
            row.update({"n_units": None, "reason": reason})
            if means:
                row.update({"mean": None, "std_error": None})
        elif sample.kind == "balance":
            row[BALANCE_GROUPS[group][0]] = None
            _add_reason(row, reason)
        elif sample.kind == "stacked":
            _withhold_stacked(row, group, reason)
        else:
            _withhold_attrition(row, group, reason)


def _withhold_attrition(row: dict, group: str, reason: str) -> None:
    """Withhold a group's counts and shares in an attrition row, with its test, in place."""
    reasons = [part for part in (row.get("reason") or "").split("; ") if "(disclosure control)" in part]
    _not_estimable(row, [*ATTRITION_GROUPS[group], *ATTRITION_RESULTS], reasons + [reason])


def _protect_lines(est_rows: list[dict], before: dict, k: int) -> None:
    """The smallest other level of a line (outcome x dimension x estimator x group) withheld
    with a level withheld alone in it by :func:`protect_differences`, in place: its size and
    means, or its size only when the lone level's means are published."""
    after = _withheld_levels(est_rows)
    wholes = {(row["outcome"], row["estimator"], g) for row in est_rows if row["subgroup"] == "all"
              for g, (size, *_) in ESTIMATE_GROUPS.items() if finite(row.get(size)) is not None}
    for line, levels in after.items():
        outcome, dim, estimator, group = line
        if len(levels) != 1 or before.get(line) or (outcome, estimator, group) not in wholes:
            continue
        size = ESTIMATE_GROUPS[group][0]
        others = [row for row in est_rows if row.get("subgroup_dimension") == dim and row["estimator"] == estimator
                  and row["outcome"] == outcome and finite(row.get(size)) is not None]
        if not others:
            continue
        pick = min(others, key=lambda row: float(row[size]))  # ties: the first level
        lone = next(row for row in est_rows if row["subgroup"] == levels[0] and row["estimator"] == estimator
                    and row["outcome"] == outcome)
        if any(finite(lone.get(column)) is not None for column in ESTIMATE_GROUPS[group][1:]):
            _withhold_count(pick, group, _line_reason(group, levels[0], k))  # its size only: so is the lone one
        else:
            _withhold_group(pick, group, _line_reason(group, levels[0], k))


def _clash(n: float, kept: list[tuple[float, str]], k: int) -> str | None:
    """The first kept sample whose size differs from ``n`` by 1 to k - 1 units, if any."""
    return next((label for m, label in kept if 1 <= abs(n - m) < k), None)


def _line_reason(group: str, level: str, k: int) -> str:
    return (f"the {group} group's size and means are not published (disclosure control): withheld with subgroup "
            f"{level}, whose {group} figures differ by fewer than {k} units from another sample, so that they "
            "cannot be recomputed from the whole-sample row")


def _withheld_levels(est_rows: list[dict]) -> dict[tuple[str, str, str, str], list[str]]:
    """Per outcome x dimension x estimator x group: its levels whose size is not published."""
    out: dict[tuple[str, str, str, str], list[str]] = {}
    for row in est_rows:
        if row.get("subgroup_dimension") is None:
            continue
        for group, (size, *_) in ESTIMATE_GROUPS.items():
            line = out.setdefault((row["outcome"], row["subgroup_dimension"], row["estimator"], group), [])
            if finite(row.get(size)) is None:
                line.append(row["subgroup"])
    return out


def protect_balance(rows: list[dict], k: int) -> list[dict]:
    """Balance rows with the figures of a group of fewer than ``k`` units withheld."""
    return [_protect_trimmed_balance(_protect_row(row, BALANCE_GROUPS, BALANCE_RESULTS, k), k) for row in rows]


def protect_attrition(rows: list[dict], k: int) -> list[dict]:
    """Attrition rows with the figures of a group withheld when its baseline units, the units
    of it missing at endline or those still observed number from 1 to ``k - 1`` (three
    missing units out of 465 are three people)."""
    out = []
    for row in rows:
        small = []
        for group, (baseline, missing, _share) in ATTRITION_GROUPS.items():
            n, m = row.get(baseline), row.get(missing)
            observed = finite(n) - finite(m) if finite(n) is not None and finite(m) is not None else None
            if is_small(n, k) or is_small(m, k) or is_small(observed, k):
                small.append(group)
        if not small:
            out.append(_protect_lee(row, k))
            continue
        row = dict(row)
        _not_estimable(row, [*(c for g in small for c in ATTRITION_GROUPS[g]), *ATTRITION_RESULTS],
                       (f"fewer than {k} units in the {group} group, or among its units missing or observed at "
                        "endline: its counts and shares are not published (disclosure control)" for group in small))
        out.append(row)
    return out


def _protect_lee(row: dict, k: int) -> dict:
    """The Lee bounds withheld when the outcomes they trim, or those they keep of the group
    trimmed, are those of fewer than k units but more than none: with the group's mean over the
    same units, a bound gives back the mean of the few trimmed; a bound is the mean of the few
    kept against the other group's mean, and the two bounds' width the mean of the top few minus
    the bottom few's. The bounds trim p x n units, a fraction of one too
    (:func:`impact.estimators.lee_bounds`), and the rule is on that amount: with 0.3 of a unit
    trimmed a bound gives that unit's outcome back, with 9.3 units mostly the nine's."""
    group, share = row.get("lee_trimmed_group"), finite(row.get("lee_trimmed_share"))
    if group not in ATTRITION_GROUPS or share is None:
        return row
    baseline, missing, _share = ATTRITION_GROUPS[group]
    n, m = finite(row.get(baseline)), finite(row.get(missing))
    if n is None or m is None:
        return row
    trimmed = round(share * (n - m), 9)  # as the bounds count them
    if 0 < trimmed < k:
        what = "trim"
    elif 0 < round(n - m - trimmed, 9) < k:
        what = "keep"
    else:
        return row
    row = {**row, **{column: None for column in LEE}}
    _add_reason(row, f"the Lee bounds {what} the outcomes of fewer than {k} units: not published (disclosure control)")
    return row



# cost-effectiveness: the programme's people reached, and what is computed from them
COST_FIGURES = ("beneficiaries_reached", "transfers_paid_mad", "cost_per_beneficiary_mad", "cost_per_unit_impact_mad",
                "cost_per_unit_impact_ci_low", "cost_per_unit_impact_ci_high")


def protect_costs(rows: list[dict], k: int) -> list[dict]:
    """Cost-effectiveness rows of a programme that reached 1 to k - 1 people: its count and
    the costs computed from them withheld (the cost mart is protected the same way when
    published)."""
    out = []
    for row in rows:
        if is_small(row.get("beneficiaries_reached"), k):
            row = {**row, **{c: None for c in COST_FIGURES}, "status": "not_estimable",
                   "reason": f"the programme reached fewer than {k} people: its cost figures are not published "
                             "(disclosure control)"}
        out.append(row)
    return out


def protect_group_means(rows: list[dict], k: int) -> list[dict]:
    """Group-mean rows of fewer than ``k`` units: size, mean and standard error withheld."""
    out = []
    for row in rows:
        if is_small(row.get("n_units"), k):
            row = {**row, "n_units": None, "mean": None, "std_error": None,
                   "reason": f"fewer than {k} units: size and mean not published (disclosure control)"}
        out.append(row)
    return out
