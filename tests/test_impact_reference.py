"""Cross-check of the impact stage against a published study, on its public data.

Study: the National Supported Work (NSW) demonstration, Dehejia-Wahba subsample
(185 men randomly assigned to job training, 260 controls), shipped in the ``causaldata``
package as ``nsw_mixtape``. ``impact.reference_data`` converts it into the two
outcome-survey contract files; here they are delivered to the landing area, ingested like
any partner delivery, built into ``detail.mart_evaluation_panel`` by dbt, and run through
``run_impact``.

Published figures reproduced
----------------------------
- Dehejia, R. H. and Wahba, S. (1999), "Causal Effects in Nonexperimental Studies:
  Reevaluating the Evaluation of Training Programs", Journal of the American Statistical
  Association 94(448): 1053-1062, Table 3, row "NSW": experimental (unadjusted) effect of
  training on 1978 earnings 1,794 with standard error 633 (the difference in means with
  the classical OLS standard error: 1794.34 and 632.85 on this sample).
- Imbens, G. W. (2015), "Matching Methods in Practice: Three Examples", Journal of Human
  Resources 50(2), summary statistics of the experimental Lalonde (Dehejia-Wahba) data:
  the largest normalised difference between the groups is 0.30, for "no degree".

Second study, a cluster design: Thornton, R. L. (2008), "The Demand for, and Impact of,
Learning HIV Status", American Economic Review 98(5): 1829-1863 (``causaldata``
``thornton_hiv``). Published: without any incentive 34 percent learned their HIV result
(abstract); any incentive raised attendance at the results centre by 0.431, standard
error 0.023 clustered by village (Table 4, column 1). That column adds controls (sex,
age, HIV status, distance, district) that the packaged data do not all carry, so only the
comparison mean (34%) and the clustered standard error (0.023) are compared exactly; the
unadjusted difference in means is checked to lie inside the published 95% interval.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from impact.reference_data import (
    NSW_PROGRAMME,
    NSW_STUDY,
    THORNTON_PROGRAMME,
    THORNTON_STUDY,
    nsw_to_survey_files,
    read_survey_files,
    thornton_to_survey_files,
)
from impact.run import run_impact
from ingestion.contracts import load_contracts
from ingestion.load import Ingestor
from jisr.settings import PROJECT_DIR, Settings
from tests.conftest import TEST_KEY

PUBLISHED_EFFECT = 1794.34  # DW (1999) Table 3: 1,794
PUBLISHED_SE = 632.85  # DW (1999) Table 3: (633)
DBT_PROJECT = PROJECT_DIR / "dbt_project"


@pytest.fixture(scope="module")
def nsw_warehouse(tmp_path_factory) -> Path:
    """NSW and Thornton delivered as survey files, ingested, and built into the evaluation panel by dbt."""
    home = tmp_path_factory.mktemp("nsw_home")
    settings = Settings(home=home, key_value=TEST_KEY.decode())
    contracts = load_contracts(PROJECT_DIR / "contracts")
    landing = settings.landing_dir / contracts["survey_units"].partner
    for convert in (nsw_to_survey_files, thornton_to_survey_files):
        units_csv, measurements_csv = convert(landing)
        assert contracts["survey_units"].matches(units_csv.name)
        assert contracts["survey_measurements"].matches(measurements_csv.name)
    ingestor = Ingestor(settings.store_path, contracts, TEST_KEY, seeds_dir=settings.seeds_dir,
                        rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, code_version="test")
    summary = ingestor.ingest(settings.landing_dir, sources=["survey_units", "survey_measurements"])
    for result in summary.files:
        assert result.status == "loaded", (result.file_name, result.reason)
        assert result.rows_quarantined == 0, (result.file_name, result.rules_failed)
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JISR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="False")
    env.pop("JISR_DBT_TARGET", None)
    cmd = [str(Path(sys.executable).with_name("dbt")), "--no-version-check", "run", "--select", "+mart_evaluation_panel",
           "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
           "--target-path", str(home / "dbt_target"), "--log-path", str(home / "dbt_logs")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return settings.build_path


def warehouse_copy(nsw_warehouse: Path, tmp_path: Path) -> Path:
    db = tmp_path / "warehouse.duckdb"
    shutil.copyfile(nsw_warehouse, db)
    return db


def test_reference_nsw_files_follow_the_survey_contracts(tmp_path):
    contracts = load_contracts(PROJECT_DIR / "contracts")
    units_csv, measurements_csv = nsw_to_survey_files(tmp_path)
    assert units_csv.name == f"{NSW_STUDY}_units.csv" and measurements_csv.name == f"{NSW_STUDY}_measurements.csv"
    for path, source in ((units_csv, "survey_units"), (measurements_csv, "survey_measurements")):
        header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert header == [c.header for c in contracts[source].columns]
    units, measurements = read_survey_files(units_csv, measurements_csv)
    assert len(units) == 445 and (units["treatment_group"] == "treated").sum() == 185
    earnings = measurements[measurements["variable"] == "earnings"]
    assert sorted(earnings["round_index"].unique()) == [-1, 0, 1]


def test_reference_nsw_reproduces_dehejia_wahba_experimental_estimate(nsw_warehouse, tmp_path):
    db = warehouse_copy(nsw_warehouse, tmp_path)
    cfg = tmp_path / "evaluation.yml"
    # the published table uses classical OLS standard errors
    cfg.write_text(f"studies: [{NSW_STUDY}]\noutcomes: [earnings]\ncov_type: nonrobust\nsubgroups: {{dimensions: []}}\n")
    run_impact(db, cfg, "ref", "test", tmp_path / "report")
    con = duckdb.connect(str(db), read_only=True)
    row = con.execute(
        "select estimate, std_error, n_treated, n_comparison, status from impact.impact_estimates "
        "where estimator = 'diff_in_means' and subgroup = 'all' and programme_code = ?", [NSW_PROGRAMME]).fetchone()
    smd = dict(con.execute("select covariate, abs(smd_before) from impact.impact_balance").fetchall())
    con.close()
    estimate, std_error, n_treated, n_comparison, status = row
    assert status == "ok" and (n_treated, n_comparison) == (185, 260)
    assert estimate == pytest.approx(PUBLISHED_EFFECT, abs=0.01)
    assert std_error == pytest.approx(PUBLISHED_SE, abs=0.01)
    assert round(estimate) == 1794 and round(std_error) == 633  # as printed in the paper
    # Imbens (2015): the largest normalised difference is 0.30, for no degree
    assert max(smd, key=smd.get) == "nodegree"
    assert round(smd["nodegree"], 2) == 0.30


def test_reference_nsw_default_settings_give_robust_standard_errors(nsw_warehouse, tmp_path):
    db = warehouse_copy(nsw_warehouse, tmp_path)
    summary = run_impact(db, PROJECT_DIR / "config" / "evaluation.yml", "ref", "test", tmp_path / "report")
    con = duckdb.connect(str(db), read_only=True)
    rows = {r[0]: r[1:] for r in con.execute(
        "select estimator, estimate, std_error, n_clusters, status from impact.impact_estimates "
        "where subgroup = 'all' and programme_code = ?", [NSW_PROGRAMME]).fetchall()}
    pretrend = con.execute("select distinct joint_p_value from impact.impact_pretrends where subgroup = 'all' "
                           "and programme_code = ?", [NSW_PROGRAMME]).fetchall()
    con.close()
    estimate, std_error, n_clusters, status = rows["diff_in_means"]
    # units assigned individually are their own clusters (cluster_id falls back to unit_id
    # in the mart), so the clustered SE is the HC1 one: larger than the classical SE
    # because treated earnings vary more (Welch SE 671.0)
    assert status == "ok" and n_clusters == 445
    assert estimate == pytest.approx(PUBLISHED_EFFECT, abs=0.01)
    assert 665 < std_error < 675
    assert all(r[3] == "ok" for r in rows.values()), rows
    # 1974 earnings give the event study one lead; a randomised experiment shows no pre-trend
    assert len(pretrend) == 1 and pretrend[0][0] > 0.05
    assert summary["estimate_status"].get("failed", 0) == 0


def test_reference_thornton_cluster_design_matches_published_figures(nsw_warehouse, tmp_path):
    db = warehouse_copy(nsw_warehouse, tmp_path)
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text(f"studies: [{THORNTON_STUDY}]\nsubgroups: {{dimensions: []}}\n")
    run_impact(db, cfg, "ref", "test", tmp_path / "report")
    con = duckdb.connect(str(db), read_only=True)
    rows = {r[0]: r[1:] for r in con.execute(
        "select estimator, estimate, std_error, ci_low, ci_high, endline_mean_comparison, n_clusters, status, reason "
        "from impact.impact_estimates where subgroup = 'all' and programme_code = ?", [THORNTON_PROGRAMME]).fetchall()}
    con.close()
    estimate, std_error, ci_low, ci_high, control_mean, n_clusters, status, _ = rows["diff_in_means"]
    assert status == "ok"
    assert round(control_mean, 2) == 0.34  # "without any incentive, 34 percent ... learned their HIV results"
    assert round(std_error, 3) == 0.023  # Table 4, column 1: (0.023), clustered by village
    assert 0.431 - 1.96 * 0.023 < estimate < 0.431 + 1.96 * 0.023  # Table 4, column 1: 0.431
    assert n_clusters > 119  # 119 villages; people without a village are their own cluster
    # a single outcome round: the panel estimators are recorded as not estimable, not run
    for name in ("did", "ancova", "ipw_did", "event_study"):
        assert rows[name][6] == "not_estimable" and "baseline" in rows[name][7], (name, rows[name])
