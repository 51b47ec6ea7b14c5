"""Impact stage: estimators on simulated panels with planted effects, degenerate inputs,
settings validation and the tables written to the warehouse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from impact.config import EvaluationConfigError, load_config, parse_config
from impact.estimators import NotEstimable, crump_alpha, fit_propensity
from impact.panel import PanelError
from impact.run import TABLES, cost_effectiveness, evaluate, run_impact

PROJECT = Path(__file__).resolve().parent.parent
EFFECT = 2.0


def simulate_panel(
    seed: int,
    *,
    n_clusters: int = 60,
    units_per_cluster: int = 15,
    effect: float = EFFECT,
    selection: float = 0.0,
    trend_from_x: float = 0.0,
    rounds: tuple[int, ...] = (-1, 0, 1),
    attrition: float = 0.0,
    study_id: str = "sim",
    programme: str = "PRG-01",
) -> pd.DataFrame:
    """A panel in the shape of detail.mart_evaluation_panel with a planted effect.

    Treatment is assigned by cluster with P(treated) = logistic(selection * x), where x is
    a cluster characteristic measured at baseline (``poverty_index``). The outcome
    ``income`` has cluster and unit effects, grows by ``trend_from_x * x`` per round (so
    with selection the groups trend apart without treatment), and rises by ``effect`` for
    treated units after the baseline. ``attrition``: share of units whose endline value is
    missing.
    """
    rng = np.random.default_rng(seed)
    n = n_clusters * units_per_cluster
    cluster = np.repeat(np.arange(n_clusters), units_per_cluster)
    x_c = rng.normal(size=n_clusters)
    d_c = rng.random(n_clusters) < 1 / (1 + np.exp(-selection * x_c))
    a_c = rng.normal(size=n_clusters)
    x, d, a = x_c[cluster], d_c[cluster].astype(int), a_c[cluster]
    z = rng.normal(size=n)
    u = rng.normal(size=n)
    age = rng.integers(18, 70, size=n)
    vulnerability = rng.uniform(0, 100, size=n)
    units = pd.DataFrame(
        {
            "study_id": study_id,
            "programme_code": programme,
            "unit_id": [f"u{i:05d}" for i in range(n)],
            "unit_type": "household",
            "person_key": pd.array([None] * n, dtype="Int64"),
            "treatment_group": np.where(d == 1, "treated", "comparison"),
            "is_treated": d == 1,
            "cluster_id": [f"c{c:03d}" for c in cluster],
            "sex": np.where(rng.random(n) < 0.5, "F", "M"),
            "age": age,
            "age_band": np.select([age < 30, age < 45], ["18-29", "30-44"], "45+"),
            "region_code": np.array([f"{r:02d}" for r in rng.integers(1, 4, size=n)]),
            "vulnerability_score": vulnerability,
            "vulnerability_tercile": pd.qcut(vulnerability, 3, labels=[1, 2, 3]).astype(int),
        }
    )
    end = max(rounds)
    lost = rng.random(n) < attrition
    parts = []
    for t in rounds:
        y = 10 + a + u + 0.5 * z + x + t * (0.3 + trend_from_x * x) + effect * d * (t > 0) + rng.normal(size=n)
        if t == end:
            y = np.where(lost, np.nan, y)
        label = {0: "baseline", end: "endline"}.get(t, f"round {t}")
        parts.append(units.assign(round_index=t, round_label=label, variable="income", value=y))
    for name, values in (("poverty_index", x), ("household_size", z)):
        parts.append(units.assign(round_index=0, round_label="baseline", variable=name, value=values))
    return pd.concat(parts, ignore_index=True)


def config(**overrides) -> object:
    settings = {"subgroups": {"dimensions": []}}
    settings.update(overrides)
    return parse_config(settings)


def whole_sample(tables) -> pd.DataFrame:
    est = tables.estimates
    return est[est["subgroup"] == "all"].set_index("estimator")


# --------------------------------------------------------------------------------------
# planted effects


def test_estimators_ci_contains_planted_effect(tmp_path):
    # A 95% CI misses the truth in 1 panel out of 20 by construction, so each estimator is
    # checked on 5 independent panels and must cover the planted effect in at least 4
    # (probability 0.977 for a correct 95% interval; the slow test measures the rate).
    covered: dict[str, int] = {}
    for seed in range(5):
        est = whole_sample(evaluate(simulate_panel(100 + seed, attrition=0.05), None, config()))
        assert set(est.index) == {"diff_in_means", "did", "ancova", "ancova_covariates", "ipw_did", "event_study"}
        for name, row in est.iterrows():
            assert row["status"] == "ok", (name, row["reason"])
            assert row["n_clusters"] == 60 and row["std_error"] > 0
            covered[name] = covered.get(name, 0) + int(row["ci_low"] < EFFECT < row["ci_high"])
    assert all(n >= 4 for n in covered.values()), covered


def test_estimators_selection_biases_naive_but_not_weighted(tmp_path):
    panel = simulate_panel(5, n_clusters=100, selection=1.5, trend_from_x=1.0)
    tables = evaluate(panel, None, config())
    est = whole_sample(tables)
    # the naive comparisons are pulled away from the planted effect by the selection
    for naive in ("diff_in_means", "did"):
        assert not est.loc[naive, "ci_low"] < EFFECT < est.loc[naive, "ci_high"], naive
        assert abs(est.loc[naive, "estimate"] - EFFECT) > 0.5
    # adjusting for the baseline covariate that drives selection and trends recovers it
    for adjusted in ("ipw_did", "ancova_covariates"):
        assert est.loc[adjusted, "status"] == "ok"
        assert est.loc[adjusted, "ci_low"] < EFFECT < est.loc[adjusted, "ci_high"], adjusted
    # the event study's joint test sees the diverging pre-treatment trend
    pre = tables.pretrends
    assert pre["joint_p_value"].dropna().iloc[0] < 0.01
    # and weighting removes most of the imbalance in the covariate that drove selection
    bal = tables.balance.set_index("covariate")
    assert abs(bal.loc["poverty_index", "smd_before"]) > 0.5
    assert abs(bal.loc["poverty_index", "smd_after"]) < 0.25 * abs(bal.loc["poverty_index", "smd_before"])


def test_event_study_coefficients_per_round(tmp_path):
    panel = simulate_panel(3, rounds=(-2, -1, 0, 1, 2))
    tables = evaluate(panel, None, config())
    rows = tables.pretrends[tables.pretrends["subgroup"] == "all"].set_index("round_index")
    assert list(rows.index) == [-2, -1, 0, 1, 2]
    assert bool(rows.loc[0, "is_reference"]) and rows.loc[0, "estimate"] == 0
    for r in (-2, -1):
        assert bool(rows.loc[r, "is_pre"])
        assert rows.loc[r, "ci_low"] < 0 < rows.loc[r, "ci_high"]
    for r in (1, 2):
        assert rows.loc[r, "ci_low"] < EFFECT < rows.loc[r, "ci_high"]
    assert rows["joint_df"].dropna().iloc[0] == 2
    est = whole_sample(tables)
    assert est.loc["event_study", "estimate"] == pytest.approx(rows.loc[2, "estimate"])


def test_event_study_row_counts_the_units_behind_its_endline_coefficient(tmp_path):
    """30 treated and 20 comparison units missing at endline are observed at baseline and
    at the midline: they are in the stacked regression but add nothing to the endline
    coefficient (its round dummies are apart from the midline's), which is the DiD's on the
    units observed at baseline and endline. The row counts those units, with their means;
    the stack's units and clusters are in the options."""
    panel = lose_at_endline(simulate_panel(31, rounds=(-1, 0, 1, 2)), treated=30, comparison=20)
    tables = evaluate(panel, None, config())
    est = whole_sample(tables)
    es, did = est.loc["event_study"], est.loc["did"]
    assert es["status"] == "ok" and did["status"] == "ok"
    values = panel[panel["variable"] == "income"].pivot_table(index="unit_id", columns="round_index", values="value")
    units = panel.drop_duplicates("unit_id").set_index("unit_id")
    both = values.index[values[0].notna() & values[2].notna()]
    treated = units.loc[both, "treatment_group"] == "treated"
    assert (es["n_treated"], es["n_comparison"]) == (treated.sum(), (~treated).sum())
    assert es["n_clusters"] == units.loc[both, "cluster_id"].nunique()
    for column in ("n_treated", "n_comparison", "n_clusters", "baseline_mean_treated", "baseline_mean_comparison",
                   "endline_mean_treated", "endline_mean_comparison"):
        assert es[column] == pytest.approx(did[column]), column
    # the estimate is the DiD's; its standard error differs only by the stacked fit's
    # small-sample correction (more rows and clusters)
    assert es["estimate"] == pytest.approx(did["estimate"], rel=1e-9)
    assert es["std_error"] == pytest.approx(did["std_error"], rel=1e-3)
    stacked = values.index[values[0].notna() & values[[-1, 1, 2]].notna().any(axis=1)]
    options = json.loads(es["estimator_options"])
    assert options["stacked_treated"] == (units.loc[stacked, "treatment_group"] == "treated").sum()
    assert options["stacked_comparison"] == (units.loc[stacked, "treatment_group"] == "comparison").sum()
    assert options["stacked_clusters"] == units.loc[stacked, "cluster_id"].nunique()
    assert options["stacked_treated"] == es["n_treated"] + 30
    assert options["stacked_comparison"] == es["n_comparison"] + 20
    # the endline coefficient of impact_pretrends is the row's estimate
    pre = tables.pretrends[tables.pretrends["subgroup"] == "all"].set_index("round_index")
    assert pre.loc[2, "estimate"] == pytest.approx(es["estimate"])


def test_event_study_two_rounds_not_estimable(tmp_path):
    tables = evaluate(simulate_panel(4, rounds=(0, 1)), None, config())
    est = whole_sample(tables)
    assert est.loc["event_study", "status"] == "not_estimable"
    assert "more than two" in est.loc["event_study", "reason"]
    assert pd.isna(est.loc["event_study", "estimate"])
    assert est.loc["did", "status"] == "ok"


def test_group_means_standard_errors_are_clustered_like_the_estimates():
    """Units of a cluster are alike (the simulated outcome has a cluster effect): the
    parallel-trends picture's bands use the cluster-robust standard error of each mean, the
    same as statsmodels gives for the study's estimates, not sd / sqrt(n)."""
    import statsmodels.api as sm

    panel = simulate_panel(7)
    for cov_type in ("cluster", "nonrobust"):
        means = evaluate(panel, None, config(cov_type=cov_type)).group_means.set_index(["treatment_group", "round_index"])
        for (group, round_index), row in means.iterrows():
            part = panel[(panel["variable"] == "income") & (panel["round_index"] == round_index)
                         & (panel["treatment_group"] == group) & panel["value"].notna()]
            ones = np.ones((len(part), 1))
            fit = (sm.OLS(part["value"].to_numpy(), ones).fit(cov_type="cluster", use_t=True,
                                                              cov_kwds={"groups": pd.factorize(part["cluster_id"])[0]})
                   if cov_type == "cluster" else sm.OLS(part["value"].to_numpy(), ones).fit())
            assert row["n_units"] == len(part) and row["mean"] == pytest.approx(part["value"].mean())
            assert row["std_error"] == pytest.approx(float(fit.bse[0]), rel=1e-9)
            naive = part["value"].std(ddof=1) / np.sqrt(len(part))
            if cov_type == "cluster":
                assert row["std_error"] > 1.5 * naive, "15 alike units per cluster: the naive error is far too small"
            else:
                assert row["std_error"] == pytest.approx(naive, rel=1e-9)


# --------------------------------------------------------------------------------------
# degenerate inputs


def test_degenerate_group_with_no_units(tmp_path):
    panel = simulate_panel(6)
    panel = panel[panel["treatment_group"] == "treated"]
    tables = evaluate(panel, None, config())
    est = tables.estimates
    assert len(est) == 6
    assert (est["status"] == "not_estimable").all()
    assert est["reason"].str.contains("no comparison units").all()
    assert est["estimate"].isna().all()
    assert tables.attrition["status"].iloc[0] == "not_estimable"


@pytest.mark.parametrize("comparison", ["same_programme", "whole_study"])
def test_degenerate_study_without_treated_units(tmp_path, comparison):
    panel = simulate_panel(6, rounds=(0, 1))
    panel = panel[panel["treatment_group"] == "comparison"]
    tables = evaluate(panel, None, config(comparison=comparison))
    est = tables.estimates
    assert len(est) == 6 and set(est["programme_code"]) == {"PRG-01"}
    assert (est["status"] == "not_estimable").all()
    assert est.loc[est["estimator"] != "event_study", "reason"].str.contains("no treated units").all()
    assert tables.attrition["status"].tolist() == ["not_estimable"]
    assert any("sim" in note and "no treated units" in note for note in tables.notes), tables.notes


def test_degenerate_outcome_without_variance(tmp_path):
    panel = simulate_panel(7)
    flat = panel[panel["variable"] == "income"].assign(variable="meals_per_day", value=3.0)
    tables = evaluate(pd.concat([panel, flat]), None, config())
    est = tables.estimates
    flat_rows = est[est["outcome"] == "meals_per_day"]
    assert (flat_rows["status"] == "not_estimable").all()
    assert flat_rows["reason"].str.contains("no variance").all()
    assert flat_rows["estimate"].isna().all() and flat_rows["std_error"].isna().all()
    assert (est.loc[est["outcome"] == "income", "status"] == "ok").all()


def test_degenerate_subgroup_below_minimum_size(tmp_path):
    panel = simulate_panel(8)
    small = panel["unit_id"].isin(panel["unit_id"].unique()[::40])  # about 22 units
    panel.loc[small, "region_code"] = "09"
    tables = evaluate(panel, None, config(subgroups={"dimensions": ["region_code"], "min_size": 30}))
    est = tables.estimates
    tiny = est[est["subgroup"] == "region_code=09"]
    assert len(tiny) == 6
    assert (tiny["status"] == "not_estimable").all()
    assert tiny["reason"].str.contains("below the minimum size").all()
    assert tiny["estimate"].isna().all() and tiny["ci_low"].isna().all()
    assert (tiny["n_treated"] < 30).all() or (tiny["n_comparison"] < 30).all()
    big = est[est["subgroup"] == "region_code=01"]
    assert (big.loc[big["estimator"] != "event_study", "status"] == "ok").all()
    assert (big["subgroup_dimension"] == "region_code").all() and (big["subgroup_value"] == "01").all()


def test_degenerate_perfect_separation_in_propensity(tmp_path):
    panel = simulate_panel(9)
    units = panel.drop_duplicates("unit_id")
    flag = units.assign(variable="eligibility_flag", round_index=0, round_label="baseline", value=units["is_treated"].astype(float))
    tables = evaluate(pd.concat([panel, flag]), None, config())
    est = whole_sample(tables)
    assert est.loc["ipw_did", "status"] == "not_estimable"
    assert "perfect separation" in est.loc["ipw_did", "reason"]
    assert pd.isna(est.loc["ipw_did", "estimate"])
    assert est.loc["did", "status"] == "ok"
    bal = tables.balance.set_index("covariate")
    assert bal["smd_after"].isna().all()
    assert "perfect separation" in bal.loc["eligibility_flag", "reason"]


def test_degenerate_units_with_baseline_but_no_endline(tmp_path):
    panel = simulate_panel(10, attrition=0.2)
    # some units have no endline row at all (not only a null value)
    gone = panel["unit_id"].isin(panel["unit_id"].unique()[:30]) & (panel["round_index"] == 1)
    panel = panel[~gone]
    tables = evaluate(panel, None, config())
    att = tables.attrition.iloc[0]
    units = panel.drop_duplicates("unit_id")
    assert att["n_baseline_treated"] + att["n_baseline_comparison"] == len(units)
    endline = panel[(panel["round_index"] == 1) & panel["value"].notna()]
    assert att["n_missing_treated"] + att["n_missing_comparison"] == len(units) - endline["unit_id"].nunique()
    assert 0.15 < att["share_missing_treated"] < 0.3 and att["p_value"] is not pd.NA
    est = whole_sample(tables)
    assert (est["status"] == "ok").all()
    assert est.loc["did", "n_treated"] + est.loc["did", "n_comparison"] == endline["unit_id"].nunique()
    assert est.loc["did", "ci_low"] < EFFECT < est.loc["did", "ci_high"]


def test_degenerate_covariate_delivered_twice_is_dropped_not_fatal(tmp_path):
    panel = simulate_panel(22)
    twice = panel[panel["variable"] == "household_size"].assign(variable="household_members")
    tables = evaluate(pd.concat([panel, twice]), None, config())
    est = whole_sample(tables)
    assert (est["status"] == "ok").all(), est["reason"].to_dict()
    for name in ("ancova_covariates", "ipw_did"):
        options = json.loads(est.loc[name, "estimator_options"])
        assert "household_size (collinear)" in options["covariates_dropped"] or "household_members (collinear)" in options["covariates_dropped"]
        assert "poverty_index" in options["covariates_used"]


def test_degenerate_single_cluster_per_group_not_estimable(tmp_path):
    panel = simulate_panel(12, n_clusters=2, units_per_cluster=40)
    if panel["treatment_group"].nunique() < 2:  # both clusters drew the same arm
        panel.loc[panel["cluster_id"] == "c000", "treatment_group"] = "treated"
        panel.loc[panel["cluster_id"] == "c001", "treatment_group"] = "comparison"
    tables = evaluate(panel, None, config())
    est = whole_sample(tables)
    assert (est["status"] == "not_estimable").all()
    assert est["reason"].str.contains("too few clusters").all()


def test_attrition_test_with_one_cluster_per_group_not_estimable(tmp_path):
    panel = simulate_panel(12, n_clusters=2, units_per_cluster=40, rounds=(0, 1))
    panel.loc[panel["cluster_id"] == "c000", "treatment_group"] = "treated"
    panel.loc[panel["cluster_id"] == "c001", "treatment_group"] = "comparison"
    units = panel["unit_id"].unique()
    lost = list(units[:30]) + list(units[40:50])  # 30 treated and 10 comparison units lost at endline
    panel.loc[panel["unit_id"].isin(lost) & (panel["round_index"] == 1), "value"] = np.nan
    att = evaluate(panel, None, config()).attrition.iloc[0]
    assert att["status"] == "not_estimable"
    assert att["reason"].startswith("too few clusters for clustered standard errors: 1 treated, 1 comparison")
    assert pd.isna(att["std_error"]) and pd.isna(att["p_value"])
    assert att["share_missing_treated"] == pytest.approx(0.75) and att["share_missing_comparison"] == pytest.approx(0.25)
    # the Lee bounds are published, not their confidence interval (for the test's reason, not said twice)
    assert pd.notna(att["lee_bound_low"]) and pd.isna(att["lee_ci_low"]) and pd.isna(att["lee_ci_high"])
    assert "Lee" not in att["reason"]
    # with one cluster per group but heteroskedasticity-robust SEs the test runs
    att = evaluate(panel, None, config(cov_type="hc1")).attrition.iloc[0]
    assert att["status"] == "ok" and att["std_error"] > 0 and 0 <= att["p_value"] < 0.05
    assert att["lee_ci_low"] < att["lee_bound_low"] and pd.isna(att["reason"])


def test_attrition_counts_of_fewer_than_k_units_are_not_published(tmp_path):
    """Three treated units lost at endline are three people: their count, share and the
    test are withheld; the comparison group's, larger, are published."""
    panel = simulate_panel(12, rounds=(0, 1))
    units = panel.drop_duplicates("unit_id")
    treated = units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()
    comparison = units.loc[units["treatment_group"] == "comparison", "unit_id"].tolist()
    lost = treated[:3] + comparison[:40]
    panel.loc[panel["unit_id"].isin(lost) & (panel["round_index"] == 1), "value"] = np.nan
    att = evaluate(panel, None, config(cov_type="hc1")).attrition.iloc[0]
    assert att["status"] == "not_estimable" and "fewer than 10 units in the treated group" in att["reason"]
    for column in ("n_baseline_treated", "n_missing_treated", "share_missing_treated", "difference", "std_error",
                   "p_value", "lee_bound_low", "lee_bound_high", "lee_ci_low", "lee_ci_high"):
        assert pd.isna(att[column]), column
    assert att["n_missing_comparison"] == 40


def test_attrition_test_with_missingness_constant_within_groups_reports_no_standard_error(tmp_path):
    panel = simulate_panel(13, rounds=(0, 1))
    treated = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()
    panel.loc[panel["unit_id"].isin(treated) & (panel["round_index"] == 1), "value"] = np.nan
    att = evaluate(panel, None, config()).attrition.iloc[0]
    assert att["share_missing_treated"] == 1 and att["share_missing_comparison"] == 0
    assert att["status"] != "ok" and pd.isna(att["std_error"]) and pd.isna(att["p_value"])


# --------------------------------------------------------------------------------------
# small groups (disclosure control, k = 10 by default)


def panel_with_small_region(seed: int = 8, comparison_units: int = 5) -> pd.DataFrame:
    """A panel whose region 09 has 40 treated units and ``comparison_units`` comparison units."""
    panel = simulate_panel(seed)
    units = panel.drop_duplicates("unit_id")
    chosen = (list(units.loc[units["treatment_group"] == "comparison", "unit_id"][:comparison_units])
              + list(units.loc[units["treatment_group"] == "treated", "unit_id"][:40]))
    panel.loc[panel["unit_id"].isin(chosen), "region_code"] = "09"
    return panel


def published_small_groups(tables, k: int = 10) -> list:
    """Published sizes of 1 to k - 1 units in any impact table."""
    found = []
    for name, frame in tables.by_table().items():
        for column in [c for c in frame.columns if c.startswith("n_") and c not in ("n_clusters", "n_trimmed")
                       and not c.startswith("n_missing")]:
            small = frame[(frame[column] >= 1) & (frame[column] < k)]
            found += [(name, column, int(v)) for v in small[column]]
    return found


def test_small_subgroup_groups_are_not_published(tmp_path):
    cfg = config(cov_type="hc1", subgroups={"dimensions": ["region_code"], "min_size": 2})
    tables = evaluate(panel_with_small_region(), None, cfg)
    est = tables.estimates
    assert published_small_groups(tables) == []
    small = est[est["subgroup"] == "region_code=09"]
    assert len(small) == 6 and (small["status"] == "not_estimable").all()
    assert small["reason"].str.contains("fewer than 10 units in the comparison group").all()
    for column in ("n_comparison", "baseline_mean_comparison", "endline_mean_comparison", "estimate", "std_error",
                   "ci_low", "ci_high", "p_value", "n_clusters"):  # clusters of both groups: n_treated + n_comparison
        assert small[column].isna().all(), column
    assert (small["n_treated"] >= 10).all() and small["endline_mean_treated"].notna().all()
    assert not small["estimator_options"].str.contains("trimmed_comparison").any()
    # one other region is withheld with it (else: the whole-sample row minus the published regions)
    other = est[(est["subgroup_dimension"] == "region_code") & (est["subgroup"] != "region_code=09")
                & est["n_comparison"].isna()]
    assert other["subgroup"].nunique() == 1 and len(other) == 6
    assert other["reason"].str.contains("withheld with subgroup region_code=09").all()
    assert other["estimate"].isna().all() and other["endline_mean_comparison"].isna().all()
    rest = est[(est["subgroup_dimension"] == "region_code") & ~est["subgroup"].isin(["region_code=09", *other["subgroup"]])]
    assert (rest.loc[rest["estimator"] != "event_study", "status"] == "ok").all() and rest["n_comparison"].notna().all()
    assert (whole_sample(tables)["status"] == "ok").all()
    # the event study's coefficients of a withheld subgroup are withheld too
    pre = tables.pretrends[tables.pretrends["subgroup"].isin(["region_code=09", *other["subgroup"]])]
    assert len(pre) == 2 and pre["estimate"].isna().all() and pre["joint_p_value"].isna().all()
    assert (pre["status"] == "not_estimable").all()
    # with a smaller threshold, the same subgroup is published
    published = evaluate(panel_with_small_region(), None, cfg, min_cell=5).estimates
    small = published[published["subgroup"] == "region_code=09"]
    assert (small["n_comparison"] == 5).all() and small.set_index("estimator").loc["did", "status"] == "ok"


def test_a_whole_programme_estimate_is_withheld_only_where_its_own_group_is_small(tmp_path):
    """A covariate missing for all but 8 treated units makes the estimators that need it
    small; the difference-in-differences on every unit is not, and is published."""
    panel = simulate_panel(21)
    units = panel.drop_duplicates("unit_id")
    dropped = units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()[8:]
    panel = panel[~(panel["unit_id"].isin(dropped) & (panel["variable"] == "household_size"))]
    est = whole_sample(evaluate(panel, None, config(cov_type="hc1")))
    assert est.loc["did", "status"] == "ok" and est.loc["did", "n_treated"] > 100
    small = est[est["reason"].fillna("").str.contains("fewer than 10 units in the treated group")]
    assert set(small.index) == {"ancova_covariates", "ipw_did"}
    assert small["estimate"].isna().all() and small["n_treated"].isna().all()


def test_units_without_a_subgroup_value_are_not_given_back_by_the_whole_sample_row(tmp_path):
    """Four treated units with no sex are in the whole-sample row and in no level: the whole
    sample minus the published levels would give their count and mean back, so one level is
    withheld with them."""
    panel = simulate_panel(21)
    units = panel.drop_duplicates("unit_id")
    treated = units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()
    panel.loc[panel["unit_id"].isin(treated[:4]), "sex"] = None
    est = evaluate(panel, None, config(cov_type="hc1", subgroups={"dimensions": ["sex"], "min_size": 2})).estimates
    did = est[est["estimator"] == "did"].set_index("subgroup")
    levels = did[did["subgroup_dimension"] == "sex"]
    assert levels["n_treated"].isna().sum() == 1  # one level withheld: two unknowns in the line
    assert levels["reason"].dropna().str.contains("with no sex value").all()
    assert did.loc["all", "status"] == "ok"


def test_propensity_trimming_of_the_levels_is_not_taken_for_units_without_a_subgroup_value(tmp_path):
    """Every unit has a sex; each level of sex fits and trims its own propensity score, so
    the weighted rows of the levels do not add up to the whole-sample weighted row. Their
    sizes before trimming do: no level is withheld for units with no sex value."""
    panel = simulate_panel(5, n_clusters=100, selection=2.0)
    assert panel["sex"].notna().all()
    est = evaluate(panel, None, config(cov_type="hc1", subgroups={"dimensions": ["sex"], "min_size": 2},
                                       propensity={"low": 0.1, "high": 0.9})).estimates
    ipw = est[est["estimator"] == "ipw_did"].set_index("subgroup")
    trimmed = ipw["estimator_options"].map(lambda o: json.loads(o).get("trimmed_treated"))
    kept = ipw["n_treated"].astype(float)
    # the levels trim other units than the whole sample does
    assert kept.loc[["sex=F", "sex=M"]].sum() != kept.loc["all"]
    assert (kept + trimmed).loc[["sex=F", "sex=M"]].sum() == (kept + trimmed).loc["all"]
    levels = est[est["subgroup_dimension"] == "sex"]
    assert not levels["reason"].fillna("").str.contains("with no sex value").any()
    assert (levels["status"] == "ok").all() and levels["n_treated"].notna().all()


def test_a_baseline_variable_named_like_a_unit_covariate_is_one_covariate(tmp_path):
    """A study that delivers `female` at baseline (as microcredit_2025 does) has it once
    among the automatic covariates, beside the unit columns: one balance row, not two."""
    panel = simulate_panel(3)
    base = panel[(panel["round_index"] == 0) & (panel["variable"] == "income")]
    panel = pd.concat([panel, base.assign(variable="female", value=(base["sex"] == "F").astype(float))],
                      ignore_index=True)
    tables = evaluate(panel, None, config(cov_type="hc1"))
    covariates = tables.balance["covariate"].tolist()
    assert sorted(covariates) == sorted(set(covariates))
    assert "female" in covariates


def test_small_whole_programme_group_is_not_published_in_any_table(tmp_path):
    panel = simulate_panel(14, attrition=0.2)
    treated = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()
    panel.loc[panel["unit_id"].isin(treated[6:]), "treatment_group"] = "comparison"  # 6 treated units
    tables = evaluate(panel, costs_frame(800.0), config(cov_type="hc1"))
    assert published_small_groups(tables) == []
    est = tables.estimates
    assert (est["status"] == "not_estimable").all() and est["reason"].str.contains("fewer than 10 units in the treated group").all()
    assert est[["n_treated", "baseline_mean_treated", "endline_mean_treated", "estimate"]].isna().all().all()
    assert (est["n_comparison"] > 10).all() and est["endline_mean_comparison"].notna().all()
    bal = tables.balance
    assert (bal["status"] == "not_estimable").all() and bal["reason"].str.contains("fewer than 10 units in the treated group").all()
    assert bal[["n_treated", "mean_treated", "mean_treated_weighted", "smd_before", "smd_after"]].isna().all().all()
    assert bal["mean_comparison"].notna().all()
    att = tables.attrition.iloc[0]
    assert att["status"] == "not_estimable" and "fewer than 10 units in the treated group" in att["reason"]
    for column in ("n_baseline_treated", "n_missing_treated", "share_missing_treated", "difference", "p_value"):
        assert pd.isna(att[column]), column
    assert att["n_baseline_comparison"] > 10 and pd.notna(att["share_missing_comparison"])
    means = tables.group_means
    t = means[means["treatment_group"] == "treated"]
    assert t[["n_units", "mean", "std_error"]].isna().all().all() and t["reason"].str.contains("fewer than 10 units").all()
    c = means[means["treatment_group"] == "comparison"]
    assert c["mean"].notna().all() and c["reason"].isna().all()
    assert (tables.cost_effectiveness["status"] == "not_estimable").all()



def test_trimmed_counts_of_fewer_than_k_units_are_not_published(tmp_path):
    """Five comparison units outside the propensity trimming bounds are five people: their
    count is withheld, and so are the figures that would give it back (the weighted row's
    comparison size against the covariate-adjusted ANCOVA's, the balance table's count)."""
    tables = evaluate(simulate_panel(6, selection=1.5), None, config(cov_type="hc1"))
    est = whole_sample(tables)
    ipw = est.loc["ipw_did"]
    options = json.loads(ipw["estimator_options"])
    assert options["trimmed_comparison"] is None and options["trimmed_treated"] == 0  # 0 singles out nobody
    assert "fewer than 10 comparison units outside the propensity trimming bounds" in ipw["reason"]
    assert ipw["status"] == "ok" and pd.notna(ipw["estimate"]) and pd.notna(ipw["std_error"])
    for column in ("n_comparison", "baseline_mean_comparison", "endline_mean_comparison", "n_clusters"):
        assert pd.isna(ipw[column]), column
    assert ipw["n_treated"] == est.loc["ancova_covariates", "n_treated"] and pd.notna(ipw["endline_mean_treated"])
    bal = tables.balance
    assert bal["n_trimmed"].isna().all() and bal["reason"].str.contains("outside the propensity trimming bounds").all()
    assert bal["smd_after"].notna().all() and bal["mean_treated_weighted"].notna().all()
    # ten treated units trimmed, with k = 11: the treated side's, and the treated mean after
    # weighting (an unweighted mean of the treated units kept) against the one before
    tables = evaluate(simulate_panel(5, selection=1.5), None, config(cov_type="hc1"), min_cell=11)
    ipw = whole_sample(tables).loc["ipw_did"]
    options = json.loads(ipw["estimator_options"])
    assert options["trimmed_treated"] is None and options["trimmed_comparison"] == 0
    assert pd.isna(ipw["n_treated"]) and pd.isna(ipw["baseline_mean_treated"]) and pd.notna(ipw["n_comparison"])
    bal = tables.balance
    assert bal[["n_trimmed", "mean_treated_weighted", "smd_after"]].isna().all().all()
    assert bal["mean_comparison_weighted"].notna().all() and bal["mean_treated"].notna().all()
    # with k = 10 the ten trimmed units are published
    ipw = whole_sample(evaluate(simulate_panel(5, selection=1.5), None, config(cov_type="hc1"))).loc["ipw_did"]
    assert json.loads(ipw["estimator_options"])["trimmed_treated"] == 10 and pd.notna(ipw["n_treated"])



def test_a_withheld_trimmed_count_is_not_the_total_minus_the_other_group(tmp_path):
    """Four treated and 79 comparison units trimmed: the weighted row withholds the four,
    and the balance table's total (83) minus the 79 would give them back: the total is
    withheld too."""
    tables = evaluate(simulate_panel(22, selection=1.5), None, config())
    options = json.loads(whole_sample(tables).loc["ipw_did", "estimator_options"])
    assert options["trimmed_treated"] is None and options["trimmed_comparison"] == 79
    bal = tables.balance
    assert bal["n_trimmed"].isna().all() and bal["mean_comparison_weighted"].notna().all()
    assert bal["reason"].str.contains("outside the propensity trimming bounds").all()
    # with k = 4 the four are published, and the total with them
    tables = evaluate(simulate_panel(22, selection=1.5), None, config(), min_cell=4)
    assert (tables.balance["n_trimmed"] == 83).all()


def counts_beside_withheld_sizes(tables) -> list:
    """Reasons (other than disclosure control's) that quote a count of a group whose size
    is withheld in their row (estimates, their pre-trend rows, balance)."""
    import re

    found = []
    est = tables.estimates
    sizes = {(r.outcome, r.subgroup, r.estimator): r for r in est.itertuples()}
    rows = [(r, r) for r in est.itertuples()]
    rows += [(r, sizes.get((r.outcome, r.subgroup, r.estimator))) for r in tables.pretrends.itertuples()]
    rows += [(r, r) for r in tables.balance.itertuples()]
    for row, sized in rows:
        for group in ("treated", "comparison"):
            if sized is None or pd.notna(getattr(sized, f"n_{group}")):
                continue
            pattern = re.compile(rf"(?<!fewer than )(?<!at least )\b\d+ {group}\b|\b{group}: \d+")
            for text in (getattr(row, "reason", None), getattr(row, "joint_reason", None)):
                parts = [] if pd.isna(text) else [p for p in text.split("; ") if "(disclosure control)" not in p]
                found += [(group, part) for part in parts if pattern.search(part)]
    return found


def test_reasons_beside_a_withheld_size_do_not_count_its_units(tmp_path):
    """In region 01, 121 treated units of 125 remain inside the propensity bounds: too few
    for the weighted estimate (minimum 125 per group), whose reason said "121 treated";
    with the four trimmed units withheld, the 125 of the covariate-adjusted ANCOVA and the
    121 would give them back. The reason says "fewer than 125 treated" instead."""
    cfg = config(subgroups={"dimensions": ["region_code"], "min_size": 125},
                 estimators=[{"name": "ancova_covariates", "type": "ancova", "covariates": True}, "ipw_did"],
                 cost_effectiveness={"estimator": "ipw_did"})
    tables = evaluate(simulate_panel(22, selection=1.5), None, cfg)
    assert counts_beside_withheld_sizes(tables) == []
    est = tables.estimates.set_index(["subgroup", "estimator"])
    ipw = est.loc[("region_code=01", "ipw_did")]
    assert pd.isna(ipw["n_treated"]) and ipw["n_comparison"] == 158 and "121" not in ipw["reason"]
    assert "fewer than 125 treated, 158 comparison (minimum 125 per group)" in ipw["reason"]


def test_no_overlap_names_the_group_left_empty_not_the_units_left():
    """Trimming that leaves a group empty: the reason (published in the estimates and the
    balance table beside the sizes before trimming) names the empty group, not how many
    units of the other remain (the sizes minus those would count the trimmed units)."""
    from impact.config import Propensity

    x = np.r_[np.full(60, -1.0), np.full(40, 0.0), np.full(50, 1.0), np.full(5, 1.0)]
    sample = pd.DataFrame({"treated": np.r_[np.zeros(100), np.ones(50), np.zeros(5)].astype(int), "x": x})
    with pytest.raises(NotEstimable) as error:
        fit_propensity(sample, ["x"], Propensity("fixed", 0.0, 0.5))
    assert str(error.value) == "no overlap: after trimming propensity scores to [0.000, 0.500] no treated unit remains"


def test_notes_do_not_count_fewer_than_k_units(tmp_path):
    """The notes are published with the tables (and in the report): a count of 1 to k - 1
    units in a note is a small cell too."""
    panel = simulate_panel(26, rounds=(0, 1))
    ids = panel["unit_id"].unique()
    panel.loc[panel["unit_id"].isin(ids[:3]), "cluster_id"] = None
    notes = evaluate(panel, None, config(estimators=["did"])).notes
    assert "fewer than 10 units without cluster_id: each is its own cluster" in notes, notes
    assert not any("3 units" in note for note in notes), notes
    assert "3 units without cluster_id: each is its own cluster" in evaluate(panel, None, config(estimators=["did"]),
                                                                            min_cell=3).notes
    panel.loc[panel["unit_id"].isin(ids[:12]), "cluster_id"] = None
    assert "12 units without cluster_id: each is its own cluster" in evaluate(panel, None, config(estimators=["did"])).notes



def differencing_pairs(tables, k: int = 10) -> list:
    """Two published samples of one group (an estimator's row of one subgroup and outcome, the
    event study's stacked sample in its options, a round of an outcome's group means, the
    attrition table's units at baseline and at endline, the balance table's units with every
    covariate) whose sizes differ by 1 to k - 1 units: their difference gives those units'
    count (and mean) back. The outcomes of
    a programme are measured on the same units: their samples are compared too. And lines
    of subgroup levels of one estimator with a lone withheld level beside a published
    whole-sample row (the whole minus the others)."""
    found = []
    est, means, att, bal = tables.estimates, tables.group_means, tables.attrition, tables.balance
    for (study, programme, subgroup), rows in est.groupby(["study_id", "programme_code", "subgroup"]):
        for group in ("treated", "comparison"):
            sizes = [(f"{outcome}: {name}", n) for outcome, name, n
                     in zip(rows["outcome"], rows["estimator"], rows[f"n_{group}"]) if pd.notna(n)]
            sizes += [(f"{outcome}: {name}: stacked", n) for outcome, name, options
                      in zip(rows["outcome"], rows["estimator"], rows["estimator_options"])
                      if (n := json.loads(options).get(f"stacked_{group}")) is not None]
            if subgroup == "all":
                own = means[(means["study_id"] == study) & (means["programme_code"] == programme)
                            & (means["treatment_group"] == group)]
                sizes += [(f"{o}: round {r}", n) for o, r, n in zip(own["outcome"], own["round_index"], own["n_units"])
                          if pd.notna(n)]
                own = att[(att["study_id"] == study) & (att["programme_code"] == programme)]
                for o, n, m in zip(own["outcome"], own[f"n_baseline_{group}"], own[f"n_missing_{group}"]):
                    sizes += [(f"{o}: attrition: at baseline", n)] if pd.notna(n) else []
                    sizes += [(f"{o}: attrition: observed", n - m)] if pd.notna(n) and pd.notna(m) else []
                own = bal[(bal["study_id"] == study) & (bal["programme_code"] == programme)]
                sizes += [("balance", n) for n in own[f"n_{group}"].dropna().unique()]
            found += [(subgroup, group, a, b) for i, (a, m) in enumerate(sizes) for b, n in sizes[i + 1:]
                      if 1 <= abs(m - n) < k]
    levels = est[est["subgroup_dimension"].notna()]
    for (outcome, estimator, dim), line in levels.groupby(["outcome", "estimator", "subgroup_dimension"]):
        whole = est[(est["outcome"] == outcome) & (est["estimator"] == estimator) & (est["subgroup"] == "all")]
        for group in ("treated", "comparison"):
            if whole[f"n_{group}"].notna().all() and line[f"n_{group}"].isna().sum() == 1:
                found.append((outcome, dim, group, estimator, "lone withheld level"))
    return found


def lose_at_endline(panel: pd.DataFrame, treated: int, comparison: int, region: str | None = None) -> pd.DataFrame:
    """The panel with the endline value of the first ``treated`` and ``comparison`` units
    (of a region) missing."""
    units = panel.drop_duplicates("unit_id")
    if region is not None:
        units = units[units["region_code"] == region]
    lost = (units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()[:treated]
            + units.loc[units["treatment_group"] == "comparison", "unit_id"].tolist()[:comparison])
    panel = panel.copy()
    panel.loc[panel["unit_id"].isin(lost) & (panel["round_index"] == panel["round_index"].max()), "value"] = np.nan
    return panel


def test_a_few_units_lost_at_endline_are_not_given_back_by_difference(tmp_path):
    """Three treated units missing at endline: the group means' treated baseline (every unit
    measured at baseline) minus the estimates' (units measured at baseline and endline)
    would give the three units' baseline mean back. The group-mean row is withheld; the
    estimates are published."""
    panel = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=3, comparison=40)
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    means = tables.group_means.set_index(["treatment_group", "round_index"])
    withheld = means.loc[("treated", 0)]
    assert pd.isna(withheld["n_units"]) and pd.isna(withheld["mean"]) and pd.isna(withheld["std_error"])
    assert "differ by fewer than 10" in withheld["reason"]
    assert pd.notna(means.loc[("treated", 1), "mean"]) and means.loc["comparison", "mean"].notna().all()
    est = whole_sample(tables)
    two_round = est[est.index != "event_study"]  # two rounds: no event study
    assert (two_round["status"] == "ok").all() and two_round["n_treated"].notna().all()
    # with more rounds the event study's row counts the units behind its endline coefficient
    # (measured at baseline and endline), as the DiD's: published; its stacked sample (units
    # measured at baseline and in another round, an option of its row) keeps the three: its
    # treated count is withheld, with the stack's cluster count
    panel = lose_at_endline(simulate_panel(12), treated=3, comparison=40)
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    es = whole_sample(tables).loc["event_study"]
    assert es["n_treated"] == 417 and pd.notna(es["baseline_mean_treated"]) and es["n_comparison"] == 440
    options = json.loads(es["estimator_options"])
    assert options["stacked_treated"] is None and options["stacked_clusters"] is None
    assert options["stacked_comparison"] == 480
    assert es["status"] == "ok" and pd.notna(es["estimate"]) and "stacked sample" in es["reason"]
    assert "differ by fewer than 10" in es["reason"]
    # units measured at endline but not at baseline: the difference in means (endline) is
    # the one sample of its size, the other estimators share theirs; a difference of the
    # group means (endline difference in means, DiD without covariates) is withheld with them
    panel = simulate_panel(12, rounds=(0, 1))
    units = panel.drop_duplicates("unit_id")
    late = units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()[:4]
    panel.loc[panel["unit_id"].isin(late) & (panel["round_index"] == 0) & (panel["variable"] == "income"), "value"] = np.nan
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    est = whole_sample(tables)
    dim = est.loc["diff_in_means"]
    assert dim["status"] == "not_estimable" and pd.isna(dim["estimate"]) and pd.isna(dim["n_treated"])
    assert "differ by fewer than 10" in dim["reason"] and pd.notna(dim["endline_mean_comparison"])
    panel_rows = est[~est.index.isin(["diff_in_means", "event_study"])]
    assert (panel_rows["status"] == "ok").all() and panel_rows["n_treated"].notna().all()


def test_the_balance_table_sizes_are_not_given_back_by_difference(tmp_path):
    """Three treated units lost at endline: the balance table counts every unit with the
    covariates (420 treated), the estimates the units measured at baseline and endline
    (417): the difference would count the three. The balance table's sizes are withheld
    (its means are of covariates, which no other sample publishes: they stay); the
    estimates are published."""
    panel = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=3, comparison=40)
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    bal = tables.balance
    assert bal["n_treated"].isna().all() and bal["n_comparison"].notna().all()
    assert bal["mean_treated"].notna().all() and bal["smd_before"].notna().all() and (bal["status"] == "ok").all()
    assert bal["reason"].str.contains("differ by fewer than 10").all()
    est = whole_sample(tables)
    assert (est.loc[est.index != "event_study", "n_treated"] == 417).all()


def test_the_samples_of_other_outcomes_are_not_given_back_by_difference(tmp_path):
    """Two outcomes measured on the same units, three treated units without consumption at
    endline: income's samples count 420 treated units, consumption's 417; the difference
    would count the three. Consumption's sizes are withheld, its means and estimates (of
    another variable than income's) are published."""
    income = simulate_panel(12, rounds=(0, 1))
    consumption = income[income["variable"] == "income"].assign(variable="consumption")
    consumption = consumption.assign(value=consumption["value"] * 0.8)
    units = consumption.drop_duplicates("unit_id")
    lost = units.loc[units["treatment_group"] == "treated", "unit_id"][:3]
    consumption.loc[consumption["unit_id"].isin(lost) & (consumption["round_index"] == 1), "value"] = np.nan
    tables = evaluate(pd.concat([income, consumption], ignore_index=True), None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    est = tables.estimates[(tables.estimates["subgroup"] == "all") & (tables.estimates["estimator"] != "event_study")]
    by_outcome = est.set_index(["outcome", "estimator"])
    assert (by_outcome.loc["income", "n_treated"] == 420).all()
    withheld = by_outcome.loc["consumption"]
    assert withheld["n_treated"].isna().all() and withheld["endline_mean_treated"].notna().all()
    assert (withheld["status"] == "ok").all() and withheld["estimate"].notna().all()
    assert withheld["reason"].str.contains("differ by fewer than 10").all()
    assert (withheld["n_comparison"] == 480).all()


def test_a_level_whose_size_alone_is_withheld_has_only_the_size_of_another_withheld_with_it(tmp_path):
    """Region 01's treated units number 162 for income and 159 for consumption (three
    without consumption at endline): one of the two sizes is withheld, its means and
    estimates (of another variable) stay. So that the whole-sample row minus the other
    regions does not give it back, the smallest other region's size is withheld with it,
    and its estimate, a difference of means, stays too."""
    income = lose_at_endline(simulate_panel(8), treated=20, comparison=0, region="02")
    consumption = simulate_panel(8)
    consumption = consumption[consumption["variable"] == "income"].assign(variable="consumption")
    consumption = lose_at_endline(consumption, treated=3, comparison=0, region="01")
    cfg = config(cov_type="hc1", estimators=["did"], subgroups={"dimensions": ["region_code"], "min_size": 2})
    tables = evaluate(pd.concat([income, consumption], ignore_index=True), None, cfg)
    assert differencing_pairs(tables) == []
    levels = tables.estimates[tables.estimates["subgroup"] != "all"]
    withheld = levels[levels["n_treated"].isna()]
    assert len(withheld) == 2 and withheld["outcome"].nunique() == 1
    assert (withheld["status"] == "ok").all() and withheld["estimate"].notna().all()
    assert withheld["endline_mean_treated"].notna().all()


def test_the_sample_withheld_is_the_one_whose_estimate_survives_whatever_the_configured_order(tmp_path):
    """Three treated units without a covariate: the estimators with covariates count 417
    treated units, the DiD (a difference of the group means) 420. Withholding the DiD's
    means would withhold its estimate, the cost-effectiveness estimator's; the covariate
    estimators' sizes and means are withheld instead (their estimates stay), and the
    published tables are the same whatever the order of the estimators in the config."""
    panel = simulate_panel(12, rounds=(0, 1))
    ids = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()[:3]
    panel.loc[panel["unit_id"].isin(ids) & (panel["variable"] == "household_size"), "value"] = np.nan
    covariates = [{"name": "ancova_covariates", "type": "ancova", "covariates": True},
                  {"name": "ancova_covariates_classical", "type": "ancova", "covariates": True, "cov_type": "nonrobust"},
                  "ipw_did"]
    published = []
    for estimators in ([*covariates, "did"], ["did", *covariates[::-1]]):
        cfg = config(cov_type="hc1", estimators=estimators, cost_effectiveness={"estimator": "did"})
        tables = evaluate(panel, costs_frame(1000.0), cfg)
        assert differencing_pairs(tables) == []
        est = whole_sample(tables)
        assert est.loc["did", "status"] == "ok" and pd.notna(est.loc["did", "estimate"])
        assert est.loc["did", "n_treated"] == 420
        adjusted = est.loc[[e for e in est.index if e != "did"]]
        assert adjusted["n_treated"].isna().all() and adjusted["estimate"].notna().all()
        assert tables.cost_effectiveness.loc[0, "status"] == "ok"
        published.append(tables.estimates.sort_values(["estimator", "subgroup"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(*published)


def test_attrition_counts_are_not_given_back_by_difference(tmp_path):
    """Three treated units measured at baseline only (and twenty more lost at endline): the
    attrition table's count of treated units at baseline minus the event study's stacked
    sample (units measured at baseline and in another round, an option of its row) would
    give the three back. The stacked count is withheld (it is kept last); the attrition
    table and the event study's row (the units measured at baseline and endline) stay."""
    panel = lose_at_endline(simulate_panel(12), treated=23, comparison=40)
    units = panel.drop_duplicates("unit_id")
    only_baseline = units.loc[units["treatment_group"] == "treated", "unit_id"].tolist()[:3]
    panel.loc[panel["unit_id"].isin(only_baseline) & (panel["round_index"] == -1), "value"] = np.nan
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    es = whole_sample(tables).loc["event_study"]
    att = tables.attrition.iloc[0]
    assert es["n_treated"] == 397 and json.loads(es["estimator_options"])["stacked_treated"] is None
    assert att["n_baseline_treated"] == 420 and att["n_missing_treated"] == 23 and att["status"] == "ok"
    # two outcomes, 20 and 23 treated units lost at endline: one outcome's treated units
    # observed at endline (400 or 397, its attrition table's and its estimates') minus the
    # other's would give the three back: one attrition row is withheld
    income = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=20, comparison=0)
    consumption = simulate_panel(12, rounds=(0, 1))
    consumption = lose_at_endline(consumption[consumption["variable"] == "income"].assign(variable="consumption"),
                                  treated=23, comparison=0)
    tables = evaluate(pd.concat([income, consumption], ignore_index=True), None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    att = tables.attrition.set_index("outcome")
    withheld = att[att["n_baseline_treated"].isna()]
    assert len(withheld) == 1
    withheld = withheld.iloc[0]
    assert pd.isna(withheld["n_missing_treated"]) and pd.isna(withheld["difference"])
    assert "differ by fewer than 10" in withheld["reason"] and withheld["n_missing_comparison"] == 0
    assert att["n_missing_treated"].dropna().isin([20, 23]).all() and att["status"].tolist().count("ok") == 1
    # the treated units at baseline and at endline otherwise: published
    tables = evaluate(lose_at_endline(simulate_panel(12), treated=23, comparison=40), None, config(cov_type="hc1"))
    att = tables.attrition.iloc[0]
    assert att["n_missing_treated"] == 23 and att["status"] == "ok"


def test_the_event_study_sizes_go_through_the_differencing_checks(tmp_path):
    """The event study's row counts the units measured at baseline and endline, and its
    endline coefficient is the difference of their group mean changes: its samples are
    compared with the other estimators' as the DiD's are."""
    # three treated units without a covariate: the covariate-adjusted estimators count 417
    # treated units, the DiD and the event study 420; the adjusted ones are withheld
    panel = simulate_panel(12)
    ids = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()[:3]
    panel.loc[panel["unit_id"].isin(ids) & (panel["variable"] == "household_size"), "value"] = np.nan
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert differencing_pairs(tables) == []
    est = whole_sample(tables)
    assert (est.loc[["did", "event_study"], "n_treated"] == 420).all()
    assert (est.loc[["did", "event_study"], "status"] == "ok").all()
    adjusted = est.loc[["ancova_covariates", "ipw_did"]]
    assert adjusted["n_treated"].isna().all() and adjusted["estimate"].notna().all()
    # four treated units measured at endline (and before baseline) but not at baseline: the
    # endline difference in means counts 420 treated units, the event study 416. Its size
    # and means are withheld, and its estimate with them (the treated mean change would be
    # the estimate plus the comparison's), in impact_estimates and as the endline
    # coefficient of impact_pretrends; its pre-baseline coefficient and the test stay
    panel = simulate_panel(12)
    late = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()[:4]
    at_baseline = (panel["round_index"] == 0) & (panel["variable"] == "income")
    panel.loc[panel["unit_id"].isin(late) & at_baseline, "value"] = np.nan
    tables = evaluate(panel, None, config(cov_type="hc1", estimators=["diff_in_means", "event_study"],
                                          cost_effectiveness={"estimator": "diff_in_means"}))
    assert differencing_pairs(tables) == []
    est = whole_sample(tables)
    assert est.loc["diff_in_means", "n_treated"] == 420 and est.loc["diff_in_means", "status"] == "ok"
    es = est.loc["event_study"]
    assert es["status"] == "not_estimable" and "a difference of the group means" in es["reason"]
    for column in ("n_treated", "baseline_mean_treated", "endline_mean_treated", "estimate", "std_error", "n_clusters"):
        assert pd.isna(es[column]), column
    assert es["n_comparison"] == 480 and pd.notna(es["endline_mean_comparison"])
    pre = tables.pretrends.set_index("round_index")
    assert pd.isna(pre.loc[1, "estimate"]) and pre.loc[1, "status"] == "not_estimable"
    assert "(disclosure control)" in pre.loc[1, "reason"]
    assert pre.loc[-1, "status"] == "ok" and pd.notna(pre.loc[-1, "estimate"])
    assert pd.notna(pre.loc[-1, "joint_p_value"])


def test_a_small_stacked_sample_of_the_event_study_is_not_published(tmp_path):
    """Six treated units, every one lost at endline: the event study's row counts no treated
    unit (0 singles out nobody) and is not estimable; its stacked sample (units measured at
    baseline and in another round) counts the six: withheld, with the stack's clusters."""
    panel = simulate_panel(14)
    treated = panel.loc[panel["treatment_group"] == "treated", "unit_id"].unique()
    panel.loc[panel["unit_id"].isin(treated[6:]), "treatment_group"] = "comparison"
    panel = lose_at_endline(panel, treated=6, comparison=0)
    tables = evaluate(panel, None, config(cov_type="hc1"))
    assert published_small_groups(tables) == []
    es = whole_sample(tables).loc["event_study"]
    assert es["status"] == "not_estimable" and es["n_treated"] == 0
    options = json.loads(es["estimator_options"])
    assert options["stacked_treated"] is None and options["stacked_clusters"] is None
    assert options["stacked_comparison"] > 10
    assert "fewer than 10 treated units in the event study's stacked sample" in es["reason"]
    # with a threshold of 6 they are published
    es = whole_sample(evaluate(panel, None, config(cov_type="hc1"), min_cell=6)).loc["event_study"]
    assert json.loads(es["estimator_options"])["stacked_treated"] == 6


def test_a_few_units_lost_in_one_subgroup_level_are_not_given_back_by_difference(tmp_path):
    """Within a region, the event study's stacked sample (units measured at baseline and in
    another round) and the DiD's (baseline and endline) differ by three lost treated units.
    The event study's rows count the units behind its endline coefficient, the DiD's: they
    are published in every region. The stacked sample's counts are published in the
    whole-sample row only (thirteen more than its row's there): a region's, withheld alone,
    would be the whole sample's minus the other regions'."""
    panel = lose_at_endline(simulate_panel(8), treated=3, comparison=0, region="01")
    panel = lose_at_endline(panel, treated=10, comparison=0, region="02")
    cfg = config(cov_type="hc1", subgroups={"dimensions": ["region_code"], "min_size": 2})
    tables = evaluate(panel, None, cfg)
    assert differencing_pairs(tables) == []
    est = tables.estimates.set_index(["subgroup", "estimator"])
    for subgroup in est.index.get_level_values("subgroup").unique():
        es, did = est.loc[(subgroup, "event_study")], est.loc[(subgroup, "did")]
        assert es["status"] == "ok" and pd.isna(es["reason"]), subgroup
        assert (es["n_treated"], es["n_comparison"]) == (did["n_treated"], did["n_comparison"]), subgroup
        options = json.loads(es["estimator_options"])
        if subgroup == "all":
            assert options["stacked_treated"] == es["n_treated"] + 13
        else:
            assert not any(key.startswith("stacked_") for key in options), subgroup


# --------------------------------------------------------------------------------------
# cost-effectiveness


def costs_frame(cost_per_beneficiary: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "programme_code": ["PRG-01"],
            "programme_name": ["Cash transfer"],
            "action_line": ["social_programmes"],
            "budget_mad": [1_000_000.0],
            "transfers_paid_mad": [800_000.0],
            "beneficiaries_reached": [1000],
            "cost_basis": ["transfers_paid_per_person_paid"],
            "cost_per_beneficiary_mad": [cost_per_beneficiary],
        }
    )


def test_cost_effectiveness_interval_from_effect_ci(tmp_path):
    tables = evaluate(simulate_panel(13), costs_frame(800.0), config())
    ce = tables.cost_effectiveness.iloc[0]
    did = whole_sample(tables).loc["did"]
    assert ce["status"] == "ok"
    assert ce["cost_per_unit_impact_mad"] == pytest.approx(800.0 / did["estimate"])
    assert ce["cost_per_unit_impact_ci_low"] == pytest.approx(800.0 / did["ci_high"])
    assert ce["cost_per_unit_impact_ci_high"] == pytest.approx(800.0 / did["ci_low"])
    assert ce["cost_basis"] == "mart: transfers_paid_per_person_paid"
    budget = evaluate(simulate_panel(13), costs_frame(800.0), config(cost_effectiveness={"cost_basis": "budget"}))
    assert budget.cost_effectiveness.iloc[0]["cost_per_beneficiary_mad"] == pytest.approx(1000.0)
    # the cost mart says how its figure is computed: the table says it too
    unit = evaluate(simulate_panel(13), costs_frame(800.0).assign(cost_basis="unit_cost"), config())
    assert unit.cost_effectiveness.iloc[0]["cost_basis"] == "mart: unit_cost"
    # a programme that reached fewer than k people: its count and costs are not published
    few = evaluate(simulate_panel(13), costs_frame(800.0).assign(beneficiaries_reached=8), config())
    row = few.cost_effectiveness.iloc[0]
    assert row["status"] == "not_estimable" and "reached fewer than 10 people" in row["reason"]
    assert all(pd.isna(row[c]) for c in ("beneficiaries_reached", "cost_per_beneficiary_mad", "cost_per_unit_impact_mad"))


def test_cost_effectiveness_uses_the_adjusted_headline_when_pre_trends_diverge(tmp_path):
    # selection on a covariate that also drives the trend: the configured did is biased and
    # the pre-trend test says so; the report's headline is then a covariate-adjusted
    # estimate, and the cost per unit of impact divides by that one, not by the biased did
    panel = simulate_panel(5, n_clusters=100, selection=1.5, trend_from_x=1.0)
    tables = evaluate(panel, costs_frame(800.0), config())
    assert tables.pretrends["joint_p_value"].dropna().iloc[0] < 0.05
    est = whole_sample(tables)
    ce = tables.cost_effectiveness.iloc[0]
    assert ce["estimator"] == "ipw_did"
    assert ce["estimate"] == pytest.approx(est.loc["ipw_did", "estimate"])
    assert ce["cost_per_unit_impact_mad"] == pytest.approx(800.0 / est.loc["ipw_did", "estimate"])
    # recomputed from kept estimates and new costs: the same choice
    again = cost_effectiveness(tables, costs_frame(400.0), config())
    assert again.iloc[0]["estimator"] == "ipw_did"
    assert again.iloc[0]["cost_per_unit_impact_mad"] == pytest.approx(400.0 / est.loc["ipw_did", "estimate"])
    # parallel trends (randomised): the configured estimator is kept
    randomised = evaluate(simulate_panel(13), costs_frame(800.0), config())
    assert randomised.cost_effectiveness.iloc[0]["estimator"] == "did"


def test_cost_effectiveness_ci_crossing_zero_is_unbounded(tmp_path):
    panel = simulate_panel(14, effect=0.15, n_clusters=30, units_per_cluster=5)
    tables = evaluate(panel, costs_frame(800.0), config())
    did = whole_sample(tables).loc["did"]
    ce = tables.cost_effectiveness.iloc[0]
    if did["estimate"] <= 0:
        assert ce["status"] == "no_beneficial_effect" and pd.isna(ce["cost_per_unit_impact_mad"])
    else:
        assert did["ci_low"] < 0 < did["ci_high"]
        assert ce["status"] == "ci_unbounded"
        assert ce["cost_per_unit_impact_ci_low"] == pytest.approx(800.0 / did["ci_high"])
        assert pd.isna(ce["cost_per_unit_impact_ci_high"])
        assert "no finite upper bound" in ce["reason"]


def test_cost_effectiveness_lower_is_better_outcome(tmp_path):
    panel = simulate_panel(15, effect=-2.0)
    tables = evaluate(panel, costs_frame(500.0), config(outcome_direction={"income": "lower_is_better"}))
    ce = tables.cost_effectiveness.iloc[0]
    assert ce["status"] == "ok" and ce["outcome_direction"] == "lower_is_better"
    assert ce["cost_per_unit_impact_mad"] == pytest.approx(500.0 / -ce["estimate"])
    assert 0 < ce["cost_per_unit_impact_ci_low"] < ce["cost_per_unit_impact_mad"] < ce["cost_per_unit_impact_ci_high"]


# --------------------------------------------------------------------------------------
# propensity trimming


def test_crump_alpha_trims_only_extreme_scores(tmp_path):
    assert crump_alpha(np.full(100, 0.5)) == 0.0
    score = np.concatenate([np.full(95, 0.5), np.full(5, 0.001)])
    a = crump_alpha(score)
    assert 0.001 < a < 0.5
    crump = evaluate(simulate_panel(16, selection=3.0), None, config(propensity={"trim": "crump"}))
    options = whole_sample(crump).loc["ipw_did", "estimator_options"]
    assert '"trimming": "Crump' in options


# --------------------------------------------------------------------------------------
# settings


def test_config_shipped_file_is_valid(tmp_path):
    cfg = load_config(PROJECT / "config" / "evaluation.yml")
    assert cfg.studies is None and cfg.alpha == 0.05
    assert [s.name for s in cfg.default.estimators] == ["diff_in_means", "did", "ancova", "ancova_covariates", "ipw_did", "event_study"]
    assert cfg.subgroup_dimensions == ("sex", "age_band", "region_code", "vulnerability_tercile")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"estimaters": []}, "unknown key"),
        ({"alpha": 1.5}, "alpha"),
        ({"propensity": {"trim": "sometimes"}}, "propensity.trim"),
        ({"propensity": {"low": 0.9, "high": 0.1}}, "low"),
        ({"estimators": [{"name": "did", "bandwidth": 3}]}, "unknown key"),
        ({"estimators": [{"name": "magic"}]}, "type"),
        ({"cost_effectiveness": {"estimator": "matching"}}, "cost_effectiveness.estimator"),
        ({"subgroups": {"dimensions": ["religion"]}}, "subgroups.dimensions"),
        ({"subgroups": {"min_size": 1}}, "min_size"),
        ({"cluster": "household"}, "cluster"),
        ({"overrides": {"nsw": {"alpha": 0.1}}}, "overrides.nsw"),
        ({"studies": "some"}, "studies"),
    ],
)
def test_config_invalid_settings_name_the_key(tmp_path, settings, message):
    path = tmp_path / "evaluation.yml"
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(EvaluationConfigError, match=message.replace(".", r"\.")):
        load_config(path)


def test_config_study_override_applies_to_that_study_only(tmp_path):
    panel = pd.concat([simulate_panel(17), simulate_panel(18, study_id="other")])
    cfg = config(overrides={"other": {"cov_type": "nonrobust", "estimators": ["did"]}})
    est = evaluate(panel, None, cfg).estimates
    assert set(est.loc[est["study_id"] == "other", "estimator"]) == {"did"}
    assert '"cov_type": "nonrobust"' in est.loc[est["study_id"] == "other", "estimator_options"].iloc[0]
    assert len(est[est["study_id"] == "sim"]) == 6


# --------------------------------------------------------------------------------------
# warehouse and report


def warehouse(path: Path, panel: pd.DataFrame, costs: pd.DataFrame | None = None) -> None:
    con = duckdb.connect(str(path))
    con.execute("create schema marts; create schema detail")
    con.register("panel_df", panel)
    con.execute("create table detail.mart_evaluation_panel as select * from panel_df")
    if costs is not None:
        con.register("costs_df", costs)
        con.execute("create table marts.mart_programme_costs as select * from costs_df")
    con.close()


def test_run_impact_writes_documented_tables_and_report(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    warehouse(db, simulate_panel(19, attrition=0.1), costs_frame(800.0))
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(yaml.safe_dump({"subgroups": {"dimensions": ["sex", "vulnerability_tercile"]}}))
    summary = run_impact(db, cfg, "run-a", "v1", tmp_path / "report")
    con = duckdb.connect(str(db))
    for table, columns in TABLES.items():
        described = con.execute(f"describe impact.{table}").fetchall()
        assert [(r[0], r[1]) for r in described] == list(columns.items()), table
        assert con.execute(f"select count(*) from impact.{table} where run_id <> 'run-a' or code_version <> 'v1'").fetchone()[0] == 0
        assert summary["tables"][f"impact.{table}"] == con.execute(f"select count(*) from impact.{table}").fetchone()[0]
    n_est = con.execute("select count(*) from impact.impact_estimates").fetchone()[0]
    assert n_est == 6 * (1 + 2 + 3)
    assert con.execute("select count(*) from impact.impact_estimates where status = 'ok' and (estimate is null or isnan(estimate))").fetchone()[0] == 0
    con.close()

    # a second run replaces the tables rather than appending
    summary = run_impact(db, cfg, "run-b", "v2", tmp_path / "report")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select count(*), min(run_id), max(run_id) from impact.impact_estimates").fetchone() == (n_est, "run-b", "run-b")
    con.close()

    report = summary["report"]
    page = Path(report["html_path"]).read_text(encoding="utf-8")
    assert set(report["images"]) == {"forest", "trends", "event_study", "balance"}
    for image in report["images"].values():
        assert Path(image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("data:image/png;base64,") == 4
    assert "sim/PRG-01" in report["summaries"] and "income" in report["summaries"]["sim/PRG-01"]
    assert report["markdown"]["attrition"].startswith("| study_id")


@pytest.mark.parametrize("alpha, p_value, flagged", [(0.1, 0.07, True), (0.01, 0.03, False), (0.05, 0.03, True)])
def test_report_summary_reads_pretrends_and_attrition_at_the_configured_alpha(tmp_path, alpha, p_value, flagged):
    from impact.report import write_report

    cfg = config(alpha=alpha)
    tables = evaluate(simulate_panel(25, attrition=0.1), None, cfg)
    tables.pretrends["joint_p_value"] = pd.array([p_value] * len(tables.pretrends), dtype="Float64")
    tables.attrition["p_value"] = pd.array([p_value] * len(tables.attrition), dtype="Float64")
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert ("Pre-treatment trends differ between groups" in text) is flagged, text
    assert ("No evidence of diverging pre-treatment trends" in text) is not flagged, text
    assert ("difference significant" in text) is flagged, text


def test_run_impact_reads_the_small_cell_threshold_beside_its_config(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    warehouse(db, panel_with_small_region())
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(yaml.safe_dump({"cov_type": "hc1", "estimators": ["did"],
                                   "subgroups": {"dimensions": ["region_code"], "min_size": 2}}))
    query = "select n_comparison, status from impact.impact_estimates where subgroup = 'region_code=09'"

    def small_region() -> tuple:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return con.execute(query).fetchone()
        finally:
            con.close()

    run_impact(db, cfg, "run-a", "v1", tmp_path / "report")  # no disclosure.yml: k = 10
    assert small_region() == (None, "not_estimable")
    (tmp_path / "disclosure.yml").write_text(yaml.safe_dump({"k": 5}))
    summary = run_impact(db, cfg, "run-b", "v1", tmp_path / "report")
    assert summary["reused"] is None, "a new threshold re-estimates"
    assert small_region() == (5, "ok")
    shipped = yaml.safe_load((PROJECT / "config" / "disclosure.yml").read_text())["k"]
    from impact.disclosure import threshold

    assert threshold(PROJECT / "config") == shipped


def test_run_impact_accepts_open_connection(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    warehouse(db, simulate_panel(20))
    con = duckdb.connect(str(db))
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(yaml.safe_dump({"subgroups": {"dimensions": []}, "estimators": ["did"]}))
    summary = run_impact(con, cfg, "run-c", "v1", tmp_path / "report")
    assert summary["estimate_status"] == {"ok": 1}
    assert con.execute("select status from impact.impact_cost_effectiveness").fetchone()[0] == "not_estimable"
    con.close()


def test_run_impact_without_panel_is_a_clear_error(tmp_path):
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(PanelError, match="mart_evaluation_panel does not exist"):
        run_impact(db, PROJECT / "config" / "evaluation.yml", "r", "v", tmp_path / "report")


def test_run_impact_unknown_study_in_config_is_an_error(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    warehouse(db, simulate_panel(21))
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(yaml.safe_dump({"studies": ["nowhere"]}))
    with pytest.raises(PanelError, match="nowhere"):
        run_impact(db, cfg, "r", "v", tmp_path / "report")


def test_evaluate_unknown_programme_in_config_is_an_error(tmp_path):
    with pytest.raises(PanelError, match="XYZ-99"):
        evaluate(simulate_panel(23), None, config(programmes=["PRG-01", "XYZ-99"]))
    only = evaluate(pd.concat([simulate_panel(23), simulate_panel(24, programme="PRG-02", study_id="other")]), None,
                    config(programmes=["PRG-02"], comparison="same_programme"))
    assert set(only.estimates["programme_code"]) == {"PRG-02"}


def test_import_impact_does_not_load_heavy_libraries(tmp_path):
    code = (
        "import sys, impact, impact.run, impact.report, impact.estimators, impact.reference_data; "
        "heavy = [m for m in ('statsmodels', 'matplotlib', 'dagster') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------------------
# coverage over many generator seeds


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "selection", "trend_from_x", "unbiased"),
    [
        ("randomised", 0.0, 0.0, ("diff_in_means", "did", "ancova", "ancova_covariates", "ipw_did", "event_study")),
        ("selection_on_observables", 1.0, 0.5, ("ancova_covariates", "ipw_did")),
    ],
)
def test_estimators_ci_coverage_close_to_nominal(tmp_path, scenario, selection, trend_from_x, unbiased):
    seeds = range(200)
    hits = dict.fromkeys(unbiased, 0)
    specs = [{"name": n, "type": n.removesuffix("_covariates")} | ({"covariates": True} if n.endswith("_covariates") else {})
             for n in unbiased]
    coverage_config = config(estimators=specs, cost_effectiveness={"estimator": unbiased[0]})
    for seed in seeds:
        panel = simulate_panel(1000 + seed, n_clusters=40, units_per_cluster=10, selection=selection, trend_from_x=trend_from_x)
        est = whole_sample(evaluate(panel, None, coverage_config))
        for name, row in est.iterrows():
            assert row["status"] == "ok", (seed, name, row["reason"])
            hits[name] += int(row["ci_low"] < EFFECT < row["ci_high"])
    coverage = {name: n / len(seeds) for name, n in hits.items()}
    (tmp_path / "coverage.txt").write_text(f"{scenario}: {coverage}")
    print(scenario, coverage)
    # with 200 draws, a true 95% coverage falls inside [0.91, 0.985] with probability > 0.99
    for name in unbiased:
        assert 0.91 <= coverage[name] <= 0.985, (name, coverage)


# --------------------------------------------------------------------------------------
# skipping re-estimation when the inputs did not change

def impact_content(db: Path) -> dict[str, list[tuple]]:
    """Every impact table's figures in written order, without the run that wrote them."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table, columns in TABLES.items():
            own = [c for c in columns if c not in ("run_id", "code_version", "estimated_at")]
            out[table] = con.execute(f"select {', '.join(own)} from impact.{table} order by rowid").fetchall()
        return out
    finally:
        con.close()


def impact_runs(db: Path) -> dict[str, set[str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: {r[0] for r in con.execute(f"select distinct run_id from impact.{t}").fetchall()} for t in TABLES}
    finally:
        con.close()


@pytest.fixture
def estimated(tmp_path):
    """A warehouse estimated once (run-a), and a copy of it to estimate from scratch."""
    db = tmp_path / "warehouse.duckdb"
    warehouse(db, simulate_panel(21, attrition=0.1), costs_frame(800.0))
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(yaml.safe_dump({"subgroups": {"dimensions": ["sex"]}}))
    first = run_impact(db, cfg, "run-a", "v1", tmp_path / "report-a")
    assert first["reused"] is None
    return db, cfg


def fresh(tmp_path: Path, db: Path, cfg: Path, code_version: str = "v1") -> dict[str, list[tuple]]:
    copy = tmp_path / "fresh.duckdb"
    shutil.copyfile(db, copy)
    summary = run_impact(copy, cfg, "run-fresh", code_version, tmp_path / "report-fresh", force=True)
    assert summary["reused"] is None
    return impact_content(copy)


def test_run_impact_keeps_the_tables_when_panel_costs_config_and_code_are_unchanged(tmp_path, estimated):
    db, cfg = estimated
    before = impact_content(db)
    summary = run_impact(db, cfg, "run-b", "v1", tmp_path / "report-b")
    assert summary["reused"] and "nothing re-estimated" in summary["reused"] and "run-a" in summary["reused"]
    assert impact_runs(db) == {t: {"run-a"} for t in TABLES}, "kept tables still name the run that estimated them"
    assert impact_content(db) == before == fresh(tmp_path, db, cfg)
    assert summary["tables"] == {f"impact.{t}": len(rows) for t, rows in before.items()}
    # the run still has its own report, with the same figures and plots
    page = Path(summary["report"]["html_path"]).read_text(encoding="utf-8")
    assert "run-b" in page and summary["report"]["summaries"] and page.count("data:image/png;base64,") == 4
    for name, image in summary["report"]["images"].items():
        assert Path(image).parent == tmp_path / "report-b"
        assert Path(image).read_bytes() == (tmp_path / "report-a" / f"{name}.png").read_bytes()


def test_impact_tables_describe_themselves_and_keep_their_inputs_out_of_sight(tmp_path, estimated):
    """Every impact table and column carries its description (BI tools and `jisr sql` show
    them); the fingerprints of the inputs, with the report's folder on this machine, are kept
    in a schema that is never published, not in a comment of a published table."""
    from impact.descriptions import COLUMN_DESCRIPTIONS, PER_TABLE, TABLE_DESCRIPTIONS, describe

    db, cfg = estimated
    assert set(TABLE_DESCRIPTIONS) == set(TABLES)
    used = {c for columns in TABLES.values() for c in columns}
    assert set(COLUMN_DESCRIPTIONS) <= used and {c for _, c in PER_TABLE} <= used, "no description of a column that is gone"
    assert {t for t, _ in PER_TABLE} <= set(TABLES)
    for kept in (False, True):  # as estimated, then kept by a run with the same inputs
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables = dict(con.execute("select table_name, comment from duckdb_tables() where schema_name = 'impact'").fetchall())
            columns = con.execute("select table_name, column_name, comment from duckdb_columns() "
                                  "where schema_name = 'impact'").fetchall()
            state = con.execute("select schema_name, table_name from duckdb_tables() "
                                "where schema_name not in ('impact', 'detail', 'marts')").fetchall()
        finally:
            con.close()
        assert tables == {t: describe(t, [])[0] for t in TABLES}
        assert len(columns) == sum(map(len, TABLES.values()))
        assert all(text == describe(table, [column])[1][column] for table, column, text in columns)
        assert state == [("impact_state", "fingerprints")]
        assert not any(str(tmp_path) in (text or "") for _, _, text in columns) and not any(
            str(tmp_path) in text for text in tables.values())
        if not kept:
            assert "nothing re-estimated" in run_impact(db, cfg, "run-b", "v1", tmp_path / "report-b")["reused"]


def test_the_report_names_its_settings_file_without_a_path_of_the_server(tmp_path, estimated):
    """Evaluators read the report: it names the settings file relative to the project, or by
    its name, never by where it lies on the server."""
    from jisr.settings import PROJECT_DIR

    db, cfg = estimated
    page = Path(run_impact(db, cfg, "run-b", "v1", tmp_path / "report-b")["report"]["html_path"]).read_text(encoding="utf-8")
    assert "settings evaluation.yml</p>" in page and str(tmp_path) not in page
    page = Path(run_impact(db, PROJECT_DIR / "config" / "evaluation.yml", "run-c", "v1", tmp_path / "report-c")
                ["report"]["html_path"]).read_text(encoding="utf-8")
    assert "settings config/evaluation.yml</p>" in page and str(PROJECT_DIR) not in page


def test_run_impact_recomputes_only_cost_effectiveness_when_costs_change(tmp_path, estimated):
    db, cfg = estimated
    before = impact_content(db)
    con = duckdb.connect(str(db))
    con.execute("update marts.mart_programme_costs set cost_per_beneficiary_mad = 1200.0")
    con.close()
    summary = run_impact(db, cfg, "run-b", "v1", tmp_path / "report-b")
    assert summary["reused"] and "cost-effectiveness recomputed" in summary["reused"]
    runs = impact_runs(db)
    assert runs.pop("impact_cost_effectiveness") == {"run-b"}
    assert runs == {t: {"run-a"} for t in TABLES if t != "impact_cost_effectiveness"}
    after = impact_content(db)
    assert after["impact_cost_effectiveness"] != before["impact_cost_effectiveness"]
    assert after == fresh(tmp_path, db, cfg), "the same figures as estimating everything again"
    # and a third run with the new costs keeps everything
    assert "nothing re-estimated" in run_impact(db, cfg, "run-c", "v1", tmp_path / "report-c")["reused"]


@pytest.mark.parametrize("change", ["panel value", "panel row", "config", "code version"])
def test_run_impact_estimates_again_when_panel_config_or_code_change(tmp_path, estimated, change):
    db, cfg = estimated
    code_version = "v1"
    con = duckdb.connect(str(db))
    if change == "panel value":
        con.execute("update detail.mart_evaluation_panel set value = value + 1 "
                    "where rowid = (select min(rowid) from detail.mart_evaluation_panel where value is not null)")
    elif change == "panel row":
        con.execute("delete from detail.mart_evaluation_panel where rowid = (select max(rowid) from detail.mart_evaluation_panel)")
    elif change == "config":
        cfg.write_text(yaml.safe_dump({"subgroups": {"dimensions": ["sex"]}, "alpha": 0.1}))
    else:
        code_version = "v2"
    con.close()
    summary = run_impact(db, cfg, "run-b", code_version, tmp_path / "report-b")
    assert summary["reused"] is None
    assert impact_runs(db) == {t: {"run-b"} for t in TABLES}
    assert impact_content(db) == fresh(tmp_path, db, cfg, code_version)


@pytest.mark.parametrize("engine", ["statsmodels", "scipy", "numpy", "pandas", "duckdb"])
def test_estimation_fingerprint_changes_with_the_engines_that_compute_the_estimates(tmp_path, monkeypatch, engine):
    import importlib

    from impact.run import input_fingerprints

    con = duckdb.connect()
    cfg = PROJECT / "config" / "evaluation.yml"
    before = input_fingerprints(con, cfg, "v1")
    monkeypatch.setattr(importlib.import_module(engine), "__version__", "99.0")
    after = input_fingerprints(con, cfg, "v1")
    assert after["estimation"] != before["estimation"] and after["costs"] != before["costs"]
    con.close()


def test_run_impact_estimates_again_when_its_code_changes_under_the_same_code_version(tmp_path, estimated, monkeypatch):
    """A working copy with uncommitted edits keeps one code version ("...-dirty")."""
    import impact.run

    db, cfg = estimated
    edited = tmp_path / "impact"
    shutil.copytree(Path(impact.run.__file__).parent, edited, ignore=shutil.ignore_patterns("__pycache__"))
    (edited / "estimators.py").write_text((edited / "estimators.py").read_text() + "\n# an edit\n")
    monkeypatch.setattr(impact.run, "__file__", str(edited / "run.py"))
    summary = run_impact(db, cfg, "run-b", "v1", tmp_path / "report-b")
    assert summary["reused"] is None
    assert impact_runs(db) == {t: {"run-b"} for t in TABLES}


def test_estimation_fingerprint_changes_with_the_impact_code_and_the_blas_threads_module(tmp_path, monkeypatch):
    """The estimates follow from the impact package and from jisr/blas.py (how many BLAS
    threads they run on): an edit of either estimates again, a copy of both does not."""
    import impact.run
    import jisr.blas
    from impact.run import input_fingerprints

    shutil.copytree(Path(impact.run.__file__).parent, tmp_path / "impact", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "jisr").mkdir()
    shutil.copyfile(jisr.blas.__file__, tmp_path / "jisr" / "blas.py")
    con = duckdb.connect()
    cfg = PROJECT / "config" / "evaluation.yml"
    here = input_fingerprints(con, cfg, "v1")
    monkeypatch.setattr(impact.run, "__file__", str(tmp_path / "impact" / "run.py"))
    assert input_fingerprints(con, cfg, "v1") == here
    seen = {here["estimation"]}
    for edited in (tmp_path / "jisr" / "blas.py", tmp_path / "impact" / "report.py"):
        edited.write_text(edited.read_text() + "\n# an edit\n")
        seen.add(input_fingerprints(con, cfg, "v1")["estimation"])
    assert len(seen) == 3
    con.close()


# --------------------------------------------------------------------------------------
# estimating in worker processes


def test_worker_processes_compute_items_in_order_and_the_same_values():
    from impact.run import _map_in_processes, _Workers

    items = [-3, 4, -5, 6, -7]
    with _Workers(1, wait=True) as workers:  # ready before the first item: the last goes to it
        assert _map_in_processes(abs, items, workers) == [3, 4, 5, 6, 7]
        assert workers.items_done >= 1
    assert _map_in_processes(abs, items, _Workers(0)) == [3, 4, 5, 6, 7]


def test_estimates_from_worker_processes_equal_those_from_one_process():
    import impact.run as run

    panel = pd.concat([simulate_panel(21, study_id="s1"), simulate_panel(22, study_id="s2", programme="PRG-02")])
    cfg = config(subgroups={"dimensions": ["sex"], "min_size": 30})
    alone = evaluate(panel, costs_frame(800.0), cfg)
    with run._Workers(1, wait=True) as workers:  # ready before the first group: the last goes to it
        shared = run._evaluate(panel, costs_frame(800.0), cfg, workers)
    assert alone.groups_in_workers == 0 and shared.groups_in_workers >= 1
    for name, frame in alone.by_table().items():
        pd.testing.assert_frame_equal(shared.by_table()[name], frame, check_exact=True, obj=name)


def test_a_small_panel_is_estimated_without_a_worker(monkeypatch):
    import impact.run as run

    started = []

    class Recorded(run._Workers):
        def __init__(self, count, wait=False):
            started.append(count)
            super().__init__(0)

    monkeypatch.setattr(run, "_Workers", Recorded)
    evaluate(simulate_panel(23), None, config(), workers=1)
    assert started == [0]  # under WORKER_PANEL_ROWS rows: no worker asked for


def test_blas_runs_on_one_thread_inside_the_block_and_as_before_after_it():
    import numpy  # noqa: F401 - loads numpy's OpenBLAS

    from jisr.blas import _openblas_threads, single_threaded_blas

    found = _openblas_threads()
    assert found, "numpy's OpenBLAS was not found: the thread setting would silently do nothing"
    for set_, _ in found:
        set_(2)  # so that restoring is seen on a one-core machine too
    try:
        with single_threaded_blas():
            assert [threads for _, threads in _openblas_threads()] == [1] * len(found)
        assert [threads for _, threads in _openblas_threads()] == [2] * len(found)
    finally:
        for set_, threads in found:
            set_(threads)


def test_estimators_read_the_outcome_by_unit_not_by_row_position():
    """An outcome matrix in another row order, with a unit the analysis frame does not hold
    and without a unit it does hold, gives every estimator the figures of the aligned matrix
    (the estimators take outcomes by position once they have looked the units up)."""
    from dataclasses import asdict

    from impact.config import EstimatorSpec, Propensity
    from impact.estimators import Inference, estimate

    rng = np.random.default_rng(7)
    n = 240
    index = pd.Index([f"u{i:04d}" for i in range(n)], name="unit_id")
    cluster = np.repeat(np.arange(24), 10)
    treated = (cluster % 2).astype(int)
    x = rng.normal(size=n)
    units = pd.DataFrame({"treated": treated, "cluster": [f"c{c:02d}" for c in cluster], "x": x}, index=index)
    y = pd.DataFrame({r: 5 + x + 0.4 * r + 1.5 * treated * (r > 0) + rng.normal(size=n) for r in (-1, 0, 1, 2)},
                     index=index)
    y.loc["u0003", 2] = np.nan
    absent = "u0010"
    aligned = y.copy()
    aligned.loc[absent] = np.nan  # a unit with no outcome row reads as not measured
    delivered = pd.concat([y.drop(index=absent), pd.DataFrame({r: [99.0] for r in y.columns}, index=["stranger"])])
    delivered = delivered.sample(frac=1.0, random_state=3)
    subgroup = units.iloc[::2]  # a subgroup: its index is not the matrix's
    specs = [EstimatorSpec("dim", "diff_in_means"), EstimatorSpec("did", "did", covariates=True),
             EstimatorSpec("ancova", "ancova", covariates=True), EstimatorSpec("ipw", "ipw_did"),
             EstimatorSpec("es", "event_study")]
    for frame in (units, subgroup):
        for spec in specs:
            expected = asdict(estimate(spec, frame, aligned, ["x"], Inference(), Propensity(), None))
            got = asdict(estimate(spec, frame, delivered, ["x"], Inference(), Propensity(), None))
            assert expected["status"] == "ok", (spec.name, expected["reason"])
            assert got == expected, spec.name


@pytest.mark.parametrize("covariates", [["x1"], ["x1", "x2"]])
def test_propensity_scores_are_statsmodels_logit_on_the_covariates_to_the_last_digit(covariates):
    """The scores behind ipw_did and the balance table are those of statsmodels' Logit on a
    constant and the standardised covariates, exactly: published figures do not move in
    their last digits with how the design matrix is laid out in memory."""
    import statsmodels.api as sm

    from impact.config import Propensity
    from impact.estimators import fit_propensity

    rng = np.random.default_rng(0)
    n = 40
    sample = pd.DataFrame({"treated": (np.arange(n) % 2).astype(int), "x1": rng.normal(size=n),
                           "x2": rng.normal(size=n)}, index=[f"u{i:02d}" for i in range(n)])
    x = sample[covariates].astype(float)
    x = (x - x.mean()) / x.std(ddof=0)
    exog = sm.add_constant(x, has_constant="add")
    expected = sm.Logit(sample["treated"].astype(float), exog).fit(disp=0, maxiter=200).predict(exog)
    fit = fit_propensity(sample, covariates, Propensity(trim="none"))
    assert fit.score.tolist() == np.clip(expected.to_numpy(), 1e-12, 1 - 1e-12).tolist()


# --------------------------------------------------------------------------------------
# differential attrition: Lee (2009) bounds


def test_lee_bounds_trim_the_group_observed_more_often_by_the_excess_share():
    from impact.estimators import lee_bounds

    # treated all observed (10 of 10), comparison 4 of 5: p = (1 - 0.8) / 1 = 0.2, two of ten trimmed
    bounds = lee_bounds(np.arange(1, 11), [2, 4, 6, 8], 1.0, 0.8)
    assert (bounds.trimmed_group, bounds.trimmed_share, bounds.n_trimmed) == ("treated", pytest.approx(0.2), 2)
    assert (bounds.low, bounds.high) == (pytest.approx(np.mean(np.arange(1, 9)) - 5), pytest.approx(np.mean(np.arange(3, 11)) - 5))
    # the comparison group observed more often: its top trimmed for the upper bound of the effect
    bounds = lee_bounds([2, 4, 6, 8], np.arange(1, 11), 0.8, 1.0)
    assert (bounds.trimmed_group, bounds.low, bounds.high) == ("comparison", pytest.approx(5 - 6.5), pytest.approx(5 - 4.5))
    # the same attrition in both groups: nothing trimmed, both bounds the difference in means
    bounds = lee_bounds([1, 2, 3], [1, 1, 1], 0.9, 0.9)
    assert (bounds.low, bounds.high, bounds.n_trimmed) == (pytest.approx(1.0), pytest.approx(1.0), 0)
    assert lee_bounds([], [1.0], 0.0, 1.0) is None
    # one outcome observed, 0.9 of it trimmed: what is left of it is what both bounds keep
    bounds = lee_bounds([1.0], [2.0], 1.0, 0.1)
    assert (bounds.low, bounds.high, bounds.n_trimmed) == (pytest.approx(-1.0), pytest.approx(-1.0), pytest.approx(0.9))


def _quantile_mean(values, low: float, high: float) -> float:
    """The mean over [low, high] of the sample quantile function of ``values`` (y_(i) on
    ((i - 1) / n, i / n]), integrated exactly: Lee's trimmed mean of the sample's distribution."""
    y = np.sort(np.asarray(values, dtype=float))
    edges = np.arange(len(y) + 1) / len(y)
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return float((y * overlap).sum() / (high - low))


def test_lee_bounds_trim_a_fraction_of_a_unit_as_the_quantile_does():
    """Lee's bounds are trimmed means of the group observed more often: the means of its
    quantile function over [0, 1 - p] and [p, 1]. When p x n is not a whole number the unit at
    the quantile counts for the part of it kept; rounded to whole units, 0.37 of a unit trimmed
    was none, and both bounds were the difference in means with a trimmed share above zero."""
    from impact.estimators import lee_bounds

    rng = np.random.default_rng(7)
    y_t, y_c = rng.normal(1.0, 1.0, 37), rng.normal(0.0, 1.0, 30)
    for observed in (0.99, 0.9, 0.8123, 0.5):
        p = 1 - observed
        bounds = lee_bounds(y_t, y_c, 1.0, observed)  # the treated group trimmed
        assert bounds.n_trimmed == pytest.approx(p * 37)
        assert bounds.low == pytest.approx(_quantile_mean(y_t, 0.0, 1 - p) - y_c.mean(), rel=1e-12)
        assert bounds.high == pytest.approx(_quantile_mean(y_t, p, 1.0) - y_c.mean(), rel=1e-12)
        bounds = lee_bounds(y_c, y_t, observed, 1.0)  # the comparison group trimmed
        assert bounds.low == pytest.approx(y_c.mean() - _quantile_mean(y_t, p, 1.0), rel=1e-12)
        assert bounds.high == pytest.approx(y_c.mean() - _quantile_mean(y_t, 0.0, 1 - p), rel=1e-12)
    assert lee_bounds(y_t, y_c, 1.0, 0.99).low < lee_bounds(y_t, y_c, 1.0, 0.99).high
    # every unit ten times: 37 whole units trimmed where 3.7 were, the same bounds
    once, ten = lee_bounds(y_t, y_c, 1.0, 0.9), lee_bounds(np.repeat(y_t, 10), y_c, 1.0, 0.9)
    assert (ten.n_trimmed, ten.low, ten.high) == (pytest.approx(37), pytest.approx(once.low), pytest.approx(once.high))
    # a rate (ties everywhere): 20 of 37 enrolled, 7.4 trimmed from the top or the bottom
    enrolled = np.array([1.0] * 20 + [0.0] * 17)
    bounds = lee_bounds(enrolled, [0.0, 1.0], 1.0, 0.8)
    assert (bounds.low, bounds.high) == (pytest.approx(12.6 / 29.6 - 0.5), pytest.approx(20 / 29.6 - 0.5))


def _selective_attrition(panel: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The endline value missing for comparison units the more often the lower it is (about a
    fifth of them); treated units all observed: differential and selective attrition."""
    rng = np.random.default_rng(seed)
    end = panel["round_index"].max()
    at_end = (panel["round_index"] == end) & (panel["variable"] == "income") & (panel["treatment_group"] == "comparison")
    values = panel.loc[at_end, "value"]
    drop = rng.random(len(values)) < 1 / (1 + np.exp(values - values.quantile(0.1)))
    panel = panel.copy()
    panel.loc[values.index[drop], "value"] = np.nan
    return panel


def test_lee_bounds_cover_the_planted_effect_where_selective_attrition_biases_the_estimates(tmp_path):
    """A randomised study whose comparison units with low outcomes are lost at endline: the
    difference in means is biased (the comparison units left are the better-off), Lee's
    bounds cover the planted effect, and the report says so beside the significant attrition."""
    from impact.report import fmt, write_report

    # units assigned one by one (a cluster each): the difference in means of the whole panel
    # is within 0.06 of the planted effect, so what the test sees is the attrition's doing
    panel = _selective_attrition(simulate_panel(31, n_clusters=6000, units_per_cluster=1, rounds=(0, 1)), seed=5)
    cfg = config(cov_type="hc1")
    tables = evaluate(panel, None, cfg)
    att = tables.attrition.iloc[0]
    assert att["status"] == "ok" and att["p_value"] < 0.001 and att["share_missing_comparison"] > 0.1
    assert att["lee_trimmed_group"] == "treated"
    assert att["lee_trimmed_share"] == pytest.approx(att["share_missing_comparison"])  # no treated unit lost
    assert att["lee_bound_low"] < EFFECT < att["lee_bound_high"]
    naive = whole_sample(tables).loc["diff_in_means"]
    assert naive["ci_high"] < EFFECT  # the estimate the attrition biases misses the truth
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "difference significant" in text and "Lee (2009) bounds on the endline difference in means" in text
    assert f"are {fmt(att['lee_bound_low'])} to {fmt(att['lee_bound_high'])}" in text
    assert f"(95% CI {fmt(att['lee_ci_low'])} to {fmt(att['lee_ci_high'])}; random assignment" in text
    assert att["lee_ci_low"] > 0 and "they and their confidence interval exclude zero, and the sign of the effect holds" in text
    tables.attrition["lee_bound_low"] = pd.array([-0.5], dtype="Float64")  # bounds across zero
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "they include zero, so the sign of the effect is not established" in text


def test_lee_bounds_trimming_fewer_than_k_units_are_not_published(tmp_path):
    """Three treated units more lost than comparison ones out of some 450 each: the bounds
    trim three comparison outcomes, whose mean a bound and the group's mean would give back."""
    panel = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=43, comparison=40)
    att = evaluate(panel, None, config(cov_type="hc1")).attrition.iloc[0]
    assert att["n_missing_treated"] == 43 and att["n_missing_comparison"] == 40
    assert pd.isna(att["lee_bound_low"]) and pd.isna(att["lee_bound_high"]) and pd.isna(att["lee_trimmed_share"])
    assert pd.isna(att["lee_ci_low"]) and pd.isna(att["lee_ci_high"])  # the bounds widened: withheld with them
    assert "the Lee bounds trim the outcomes of fewer than 10 units" in att["reason"]
    assert att["status"] == "ok" and pd.notna(att["p_value"])  # the rest of the row is published
    att = evaluate(lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=63, comparison=40), None,
                   config(cov_type="hc1")).attrition.iloc[0]
    assert pd.notna(att["lee_bound_low"]) and att["lee_trimmed_group"] == "comparison"
    assert pd.notna(att["lee_ci_low"]) and pd.notna(att["lee_ci_high"])


def test_lee_bounds_trimming_a_fraction_of_one_unit_are_not_published(tmp_path):
    """Fifteen of 420 treated units lost and seventeen of 480 comparison ones: the bounds
    trim 0.14 of the top and of the bottom comparison outcome. Rounded to whole units they
    trimmed none, both bounds the difference in means beside a trimmed share above zero;
    trimmed in part, a bound and the group's mean give that unit's outcome back."""
    panel = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=15, comparison=17)
    att = evaluate(panel, None, config(cov_type="hc1")).attrition.iloc[0]
    assert (att["n_baseline_treated"], att["n_baseline_comparison"]) == (420, 480)
    assert pd.isna(att["lee_bound_low"]) and pd.isna(att["lee_bound_high"]) and pd.isna(att["lee_trimmed_share"])
    assert "the Lee bounds trim the outcomes of fewer than 10 units" in att["reason"]


def test_the_cost_of_a_rate_is_given_per_percentage_point(tmp_path):
    """A binary outcome (enrolled or not) or a proportion (a share of children enrolled): its
    estimate is a share, and the cost per unit of impact is per 1.0 = 100 percentage points;
    the table says the outcome's scale and the report gives the cost per percentage point."""
    from impact.report import fmt, write_report

    panel = simulate_panel(13)
    income = panel["variable"] == "income"
    panel.loc[income, "value"] = (panel.loc[income, "value"] > 11.5).astype(float)  # a rate
    cfg = config()
    tables = evaluate(panel, costs_frame(800.0), cfg)
    ce = tables.cost_effectiveness.iloc[0]
    assert ce["outcome_scale"] == "binary" and ce["status"] == "ok" and 0 < ce["estimate"] < 1
    assert ce["cost_per_unit_impact_mad"] == pytest.approx(800.0 / ce["estimate"])
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert (f"cost per percentage point of impact (did estimate) {fmt(800.0 / ce['estimate'] / 100)} MAD "
            f"(CI {fmt(ce['cost_per_unit_impact_ci_low'] / 100)} to {fmt(ce['cost_per_unit_impact_ci_high'] / 100)})"
            ) in text
    continuous = evaluate(simulate_panel(13), costs_frame(800.0), cfg).cost_effectiveness.iloc[0]
    assert continuous["outcome_scale"] == "continuous"
    shares = simulate_panel(13)  # a household's share of children enrolled: a proportion, per point too
    shares.loc[shares["variable"] == "income", "value"] = (shares.loc[shares["variable"] == "income", "value"] / 20).clip(0, 1)
    share = evaluate(shares, costs_frame(800.0), cfg)
    assert share.cost_effectiveness.iloc[0]["outcome_scale"] == "proportion"
    assert "cost per percentage point of impact" in write_report(
        share, tmp_path / "r3", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    again = cost_effectiveness(tables, costs_frame(400.0), cfg)  # kept estimates, new costs: the scale kept
    assert again.iloc[0]["outcome_scale"] == "binary"
    text = write_report(evaluate(simulate_panel(13), costs_frame(800.0), cfg), tmp_path / "r2", run_id="r",
                        code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert f"cost per unit of impact (did estimate) {fmt(continuous['cost_per_unit_impact_mad'])} MAD" in text


def test_lee_bounds_keeping_fewer_than_k_units_of_the_trimmed_group_are_not_published(tmp_path):
    """Comparison units half as many as treated ones and twelve treated units observed at
    endline: the bounds trim all but seven of the comparison group's 230 observed outcomes,
    so each bound is the mean of those seven (the lowest or the highest) against the treated
    mean the estimates publish, and the bounds' width their top seven's minus bottom seven's."""
    panel = simulate_panel(12, rounds=(0, 1))
    units = panel.drop_duplicates("unit_id")
    comparison = units.loc[units["treatment_group"] == "comparison", "unit_id"].tolist()
    panel = panel[~panel["unit_id"].isin(comparison[len(comparison) // 2:])]
    n_treated = int((units["treatment_group"] == "treated").sum())
    tables = evaluate(lose_at_endline(panel, treated=n_treated - 12, comparison=10), None, config(cov_type="hc1"))
    att = tables.attrition.iloc[0]
    assert att["n_baseline_comparison"] - att["n_missing_comparison"] == 230
    assert att["n_baseline_treated"] - att["n_missing_treated"] == 12
    assert pd.isna(att["lee_bound_low"]) and pd.isna(att["lee_bound_high"]) and pd.isna(att["lee_trimmed_share"])
    assert pd.isna(att["lee_ci_low"]) and pd.isna(att["lee_ci_high"])
    assert "the Lee bounds keep the outcomes of fewer than 10 units" in att["reason"]
    assert att["status"] == "ok" and pd.notna(att["p_value"])


def _lee_draw(seed: int, n: int = 2000, units_per_cluster: int = 1, icc: float = 0.0):
    """A randomised study of ``n`` units (assigned by cluster) with an effect of 1 and selective
    attrition: a unit's endline outcome is observed when its outcome without treatment is above
    0 (comparison) or -0.5 (treated; monotone: treatment keeps more units). The units observed
    whatever their group are those above 0, and trimming the treated outcomes from the bottom
    keeps exactly them: the effect, 1, is the upper Lee bound, and the estimated bounds miss
    it in about half the samples. Returns the endline outcomes (NaN: lost), the groups and
    the clusters."""
    rng = np.random.default_rng(seed)
    n_clusters = n // units_per_cluster
    treated = np.repeat(rng.random(n_clusters) < 0.5, units_per_cluster)
    untreated = (np.repeat(rng.normal(size=n_clusters), units_per_cluster) * np.sqrt(icc)
                 + rng.normal(size=n) * np.sqrt(1 - icc))
    observed = untreated > np.where(treated, -0.5, 0.0)
    endline = np.where(observed, untreated + treated, np.nan)
    return endline, treated.astype(int), np.repeat(np.arange(n_clusters), units_per_cluster)


def _lee_interval(endline, treated, clusters=None, alpha=0.05):
    from impact.estimators import imbens_manski_interval, lee_bounds, lee_standard_errors

    t, seen = treated == 1, ~np.isnan(endline)
    bounds = lee_bounds(endline[t & seen], endline[~t & seen], seen[t].mean(), seen[~t].mean())
    se = lee_standard_errors(bounds, endline, treated, clusters)
    return bounds, se, imbens_manski_interval(bounds.low, bounds.high, *se, alpha)


def test_the_lee_confidence_interval_covers_the_effect_at_its_level_where_the_bounds_miss_it():
    """Selective attrition that puts the effect at the upper Lee bound: the estimated bounds
    exclude it in about half of 1,000 samples; the Imbens-Manski 95% interval covers it in
    about 95% (the one-sided rate: the bounds are far apart). Assigned by cluster with units
    of a cluster alike, the interval clustered like the estimates covers it as often, one
    whose standard errors ignore the clusters far less often."""
    for units_per_cluster, icc in ((1, 0.0), (20, 0.3)):
        missed = covered = covered_by_unit = 0
        for seed in range(1000):
            endline, treated, clusters = _lee_draw(seed, units_per_cluster=units_per_cluster, icc=icc)
            bounds, _se, (low, high) = _lee_interval(endline, treated, clusters if units_per_cluster > 1 else None)
            missed += not bounds.low <= 1.0 <= bounds.high
            covered += low <= 1.0 <= high
            if units_per_cluster > 1:
                by_unit = _lee_interval(endline, treated)[2]
                covered_by_unit += by_unit[0] <= 1.0 <= by_unit[1]
        assert 0.4 < missed / 1000 < 0.6
        assert 0.93 <= covered / 1000 <= 0.97, (units_per_cluster, covered)
        if units_per_cluster > 1:
            assert covered_by_unit / 1000 < 0.9


def test_the_lee_standard_errors_are_lees_asymptotic_variance():
    """By unit, the bounds' standard errors are Lee's (2009, Proposition 3) asymptotic variance
    written out (times n / (n - 1)): the trimmed outcomes' variance, the cut's distance from
    their mean, the variance of the trimmed share p and the other group's variance."""
    rng = np.random.default_rng(11)
    n_t = n_c = 100
    treated = np.repeat([1, 0], [n_t, n_c])
    endline = rng.normal(size=n_t + n_c) + treated
    endline[rng.permutation(n_t)[:10]] = np.nan  # 90 treated observed
    endline[n_t + rng.permutation(n_c)[:28]] = np.nan  # 72 comparison: p = 0.2, 18 treated outcomes trimmed
    bounds, (se_low, se_high), _ = _lee_interval(endline, treated)
    y_t, y_c = np.sort(endline[:n_t][~np.isnan(endline[:n_t])]), endline[n_t:][~np.isnan(endline[n_t:])]
    p, q_t, q_c = 0.2, 0.9, 0.72
    var_p = (1 - p) ** 2 * ((1 - q_t) / (n_t * q_t) + (1 - q_c) / (n_c * q_c))
    for kept, cut, se in ((y_t[:72], y_t[71], se_low), (y_t[18:], y_t[18], se_high)):
        variance = ((kept.var() + p * (cut - kept.mean()) ** 2) / ((1 - p) * len(y_t))
                    + ((cut - kept.mean()) / (1 - p)) ** 2 * var_p + y_c.var() / len(y_c))
        assert se == pytest.approx(np.sqrt(variance * 200 / 199), rel=1e-12)
    assert (bounds.low, bounds.high) == (pytest.approx(y_t[:72].mean() - y_c.mean()), pytest.approx(y_t[18:].mean() - y_c.mean()))


def test_the_imbens_manski_critical_value_goes_from_two_sided_to_one_sided():
    from scipy.stats import norm

    from impact.estimators import imbens_manski_interval

    assert imbens_manski_interval(1.0, 1.0, 0.5, 0.5, 0.05) == pytest.approx((1 - 0.5 * norm.ppf(0.975), 1 + 0.5 * norm.ppf(0.975)))
    assert imbens_manski_interval(0.0, 100.0, 1.0, 2.0, 0.05) == pytest.approx((-norm.ppf(0.95), 100 + 2 * norm.ppf(0.95)))
    low, high = imbens_manski_interval(0.0, 1.0, 0.4, 0.5, 0.1)  # in between: Phi(c + 1 / 0.5) - Phi(-c) = 0.9
    c = -low / 0.4
    assert norm.ppf(0.9) < c < norm.ppf(0.95) and (high - 1.0) / 0.5 == pytest.approx(c)
    assert norm.cdf(c + 2.0) - norm.cdf(-c) == pytest.approx(0.9, abs=1e-10)


def test_the_lee_confidence_interval_is_published_around_the_bounds_and_the_same_in_every_run(tmp_path):
    """impact_attrition gives the interval at the configured level: it holds the bounds, is
    narrower at a lower level, and two runs give the same figures (standard errors computed, not
    bootstrapped). Clustered standard errors: the interval is that of the bounds' influence
    summed by cluster."""
    panel = lose_at_endline(simulate_panel(12, rounds=(0, 1)), treated=63, comparison=40)
    cfg = config()
    att = evaluate(panel, None, cfg).attrition.iloc[0]
    columns = ["lee_bound_low", "lee_bound_high", "lee_ci_low", "lee_ci_high"]
    assert att["lee_ci_low"] < att["lee_bound_low"] < att["lee_bound_high"] < att["lee_ci_high"]
    again = evaluate(panel, None, cfg).attrition.iloc[0]
    assert again[columns].tolist() == att[columns].tolist()
    narrower = evaluate(panel, None, config(alpha=0.2)).attrition.iloc[0]
    assert att["lee_ci_low"] < narrower["lee_ci_low"] < att["lee_bound_low"]
    assert att["lee_bound_high"] < narrower["lee_ci_high"] < att["lee_ci_high"]
    by_unit = evaluate(panel, None, config(cov_type="hc1")).attrition.iloc[0]
    assert by_unit["lee_bound_low"] == att["lee_bound_low"] and by_unit["lee_ci_low"] != att["lee_ci_low"]
    units = panel.drop_duplicates("unit_id").set_index("unit_id")
    end = panel[(panel["round_index"] == 1) & (panel["variable"] == "income")].set_index("unit_id")["value"]
    treated = (units["treatment_group"] == "treated").astype(int).to_numpy()
    _, _, expected = _lee_interval(end.reindex(units.index).to_numpy(), treated, units["cluster_id"].to_numpy())
    assert (att["lee_ci_low"], att["lee_ci_high"]) == pytest.approx(expected, rel=1e-12)
    # an outcome every unit observed has alike: bounds, no interval, and the reason says why
    panel.loc[(panel["round_index"] == 1) & panel["value"].notna(), "value"] = 5.0
    att = evaluate(panel, None, cfg).attrition.iloc[0]
    assert att["lee_bound_low"] == att["lee_bound_high"] == 0 and pd.isna(att["lee_ci_low"]) and pd.isna(att["lee_ci_high"])
    assert att["reason"] == "no confidence interval for the Lee bounds: the outcome observed at endline does not vary: no standard errors"


def test_lee_bounds_of_the_other_sign_than_the_headline_do_not_confirm_it(tmp_path):
    """Bounds that exclude zero on the other side of the headline estimate contradict it:
    the summary says so, and does not say the sign of the effect holds."""
    from impact.report import write_report

    panel = _selective_attrition(simulate_panel(31, n_clusters=6000, units_per_cluster=1, rounds=(0, 1)), seed=5)
    cfg = config(cov_type="hc1")
    tables = evaluate(panel, None, cfg)
    assert whole_sample(tables).loc["did", "estimate"] > 0
    tables.attrition["lee_bound_low"] = pd.array([-3.0], dtype="Float64")
    tables.attrition["lee_bound_high"] = pd.array([-1.0], dtype="Float64")
    tables.attrition["lee_ci_low"] = pd.array([-3.5], dtype="Float64")
    tables.attrition["lee_ci_high"] = pd.array([-0.5], dtype="Float64")
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "the sign of the effect holds" not in text
    assert ("they and their confidence interval are below zero, while the did estimate is an increase: the sign of "
            "the effect is not established") in text


def test_lee_bounds_are_not_read_as_bounds_of_the_effect_when_pre_trends_diverge(tmp_path):
    """Treatment selected on a characteristic that moves the outcome's trend, and comparison
    units lost more often: the bounds of the unadjusted endline difference in means assume
    random assignment, which the diverging pre-treatment trends contradict (here they exclude
    the planted effect). The summary does not give them as bounds of the effect."""
    from impact.report import fmt, write_report

    panel = lose_at_endline(simulate_panel(5, n_clusters=100, selection=1.5, trend_from_x=1.0), treated=20, comparison=150)
    cfg = config()
    tables = evaluate(panel, None, cfg)
    att = tables.attrition.iloc[0]
    assert att["p_value"] < 0.05 and not att["lee_bound_low"] < EFFECT < att["lee_bound_high"]
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "Pre-treatment trends differ between groups" in text and "difference significant" in text
    assert "the sign of the effect holds" not in text and f"are {fmt(att['lee_bound_low'])} to" not in text
    assert "Lee (2009) bounds and their confidence interval are not given here: they assume random assignment" in text
    assert f"{fmt(att['lee_ci_low'])} to {fmt(att['lee_ci_high'])}" not in text


def test_lee_bounds_beside_a_headline_not_distinguishable_from_zero_do_not_establish_its_sign(tmp_path):
    """The bounds are estimated without a confidence interval: with no effect and a few
    per cent more comparison units lost, bounds of 300 units a group exclude zero in about a
    quarter of samples. Beside a headline estimate not distinguishable from zero, bounds on
    its side of zero do not establish the sign of the effect."""
    from impact.report import write_report

    panel = _selective_attrition(simulate_panel(31, n_clusters=6000, units_per_cluster=1, rounds=(0, 1)), seed=5)
    cfg = config(cov_type="hc1")
    tables = evaluate(panel, None, cfg)
    head = whole_sample(tables).loc["did"]
    assert head["estimate"] > 0
    tables.estimates.loc[tables.estimates["estimator"] == "did", "p_value"] = 0.4  # not significant
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "not statistically distinguishable from zero" in text
    assert "the sign of the effect holds" not in text
    assert tables.attrition.iloc[0]["lee_ci_low"] > 0
    assert ("they and their confidence interval exclude zero, but the did estimate is not statistically "
            "distinguishable from zero: the sign of the effect is not established") in text


def test_lee_bounds_whose_confidence_interval_includes_zero_do_not_establish_the_sign(tmp_path):
    """Bounds that exclude zero beside a significant headline of their sign, with a confidence
    interval that includes zero (few units, or bounds near zero): with no effect and attrition
    not by it, the bounds alone exclude zero in 10-30% of samples. The summary gives the
    interval and does not say the sign holds; with no interval (see the attrition table's
    reason) it does not either."""
    from impact.report import fmt, write_report

    panel = _selective_attrition(simulate_panel(31, n_clusters=6000, units_per_cluster=1, rounds=(0, 1)), seed=5)
    cfg = config(cov_type="hc1")
    tables = evaluate(panel, None, cfg)
    head = whole_sample(tables).loc["did"]
    assert head["estimate"] > 0 and head["p_value"] < 0.05
    tables.attrition["lee_bound_low"] = pd.array([0.2], dtype="Float64")
    tables.attrition["lee_ci_low"] = pd.array([-0.1], dtype="Float64")
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert f"(95% CI -0.1 to {fmt(tables.attrition.iloc[0]['lee_ci_high'])}; random assignment" in text
    assert "the sign of the effect holds" not in text
    assert ("they exclude zero, but their 95% confidence interval does not: the sign of the effect is not "
            "established") in text
    tables.attrition["lee_ci_low"] = pd.array([None], dtype="Float64")
    tables.attrition["lee_ci_high"] = pd.array([None], dtype="Float64")
    text = write_report(tables, tmp_path / "report", run_id="r", code_version="v", config=cfg)["summaries"]["sim/PRG-01"]
    assert "(no confidence interval: see the attrition table's reason; random assignment" in text
    assert "the sign of the effect holds" not in text
    assert "they exclude zero, but without a confidence interval the sign of the effect is not established" in text
