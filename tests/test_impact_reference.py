"""Cross-check of the impact stage against a published study, on its public data.

Study: the National Supported Work (NSW) demonstration, Dehejia-Wahba subsample
(185 men randomly assigned to job training, 260 controls), shipped in the ``causaldata``
package as ``nsw_mixtape``. The data are converted into the two outcome-survey contract
files, ingested like any partner delivery, shaped into the evaluation panel, and run
through the impact estimators.

Published figures reproduced
----------------------------
- Dehejia, R. H. and Wahba, S. (1999), "Causal Effects in Nonexperimental Studies:
  Reevaluating the Evaluation of Training Programs", Journal of the American Statistical
  Association 94(448): 1053-1062, Table 3, row "NSW": experimental (unadjusted) effect of
  training on 1978 earnings 1,794 with standard error 633 (difference in means with the
  classical OLS standard error: 1794.34, SE 632.85 on this sample).
- Imbens, G. W. (2015), "Matching Methods in Practice: Three Examples", Journal of Human
  Resources 50(2), summary statistics of the experimental Lalonde (Dehejia-Wahba) data:
  the largest normalised difference between groups is 0.30, for "no degree".
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from impact.config import parse_config
from impact.reference_data import NSW_PROGRAMME, NSW_STUDY, nsw_to_survey_files, panel_from_survey, read_survey_files
from impact.run import evaluate, run_impact
from ingestion.load import Ingestor
from tests.conftest import TEST_KEY

PUBLISHED_EFFECT = 1794.34  # DW (1999) Table 3: 1,794
PUBLISHED_SE = 632.85  # DW (1999) Table 3: (633)


def ingest_nsw(settings, contracts) -> pd.DataFrame:
    """Deliver the converted files to the landing area, ingest them, read the panel back."""
    landing = settings.landing_dir / contracts["survey_units"].partner
    units_csv, measurements_csv = nsw_to_survey_files(landing)
    assert contracts["survey_units"].matches(units_csv.name)
    assert contracts["survey_measurements"].matches(measurements_csv.name)
    ingestor = Ingestor(settings.store_path, contracts, TEST_KEY, seeds_dir=settings.seeds_dir,
                        rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, code_version="test")
    summary = ingestor.ingest(settings.landing_dir, sources=["survey_units", "survey_measurements"])
    results = {f.source: f for f in summary.files}
    for source in ("survey_units", "survey_measurements"):
        assert results[source].status == "loaded", (source, results[source].reason)
        assert results[source].rows_quarantined == 0, results[source].rules_failed
    con = duckdb.connect(str(settings.store_path), read_only=True)
    units = con.execute("select * from raw.survey_units where _is_current").df()
    measurements = con.execute("select * from raw.survey_measurements where _is_current").df()
    con.close()
    return panel_from_survey(units, measurements)


def test_reference_nsw_files_follow_the_survey_contracts(tmp_path, contracts):
    units_csv, measurements_csv = nsw_to_survey_files(tmp_path)
    assert units_csv.name == f"{NSW_STUDY}_units.csv" and measurements_csv.name == f"{NSW_STUDY}_measurements.csv"
    for path, source in ((units_csv, "survey_units"), (measurements_csv, "survey_measurements")):
        header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert header == [c.header for c in contracts[source].columns]
    units, measurements = read_survey_files(units_csv, measurements_csv)
    assert len(units) == 445 and (units["treatment_group"] == "treated").sum() == 185
    assert sorted(measurements.loc[measurements["variable"] == "earnings", "round_index"].unique()) == [-1, 0, 1]


def test_reference_nsw_reproduces_dehejia_wahba_experimental_estimate(settings, contracts, tmp_path):
    panel = ingest_nsw(settings, contracts)
    assert panel["unit_id"].nunique() == 445
    cfg = parse_config({"cov_type": "nonrobust", "outcomes": ["earnings"], "subgroups": {"dimensions": []}})
    tables = evaluate(panel, None, cfg)
    est = tables.estimates.set_index("estimator")
    dim = est.loc["diff_in_means"]
    assert dim["status"] == "ok"
    assert (dim["n_treated"], dim["n_comparison"]) == (185, 260)
    assert dim["estimate"] == pytest.approx(PUBLISHED_EFFECT, abs=0.01)
    assert dim["std_error"] == pytest.approx(PUBLISHED_SE, abs=0.01)
    # the published table rounds to whole dollars
    assert round(dim["estimate"]) == 1794 and round(dim["std_error"]) == 633

    # balance: Imbens (2015) — largest normalised difference 0.30, for no degree
    bal = tables.balance.set_index("covariate")
    smd = bal["smd_before"].astype(float).abs()
    assert smd.idxmax() == "nodegree"
    assert round(smd.max(), 2) == 0.30


def test_reference_nsw_default_settings_give_robust_standard_errors(settings, contracts, tmp_path):
    panel = ingest_nsw(settings, contracts)
    db = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema marts")
    con.register("panel_df", panel)
    con.execute("create table marts.mart_evaluation_panel as select * from panel_df")
    cfg = tmp_path / "evaluation.yml"
    cfg.write_text("studies: [nsw_dw]\nsubgroups: {dimensions: [age_band], min_size: 30}\n")
    summary = run_impact(con, cfg, "ref", "test", tmp_path / "report")
    rows = con.execute(
        "select estimator, estimate, std_error, n_clusters from impact.impact_estimates "
        "where subgroup = 'all' and programme_code = ?", [NSW_PROGRAMME]).df().set_index("estimator")
    con.close()
    # individually assigned units are their own clusters: the clustered SE is the HC1 one,
    # larger than the classical SE because treated earnings vary more (Welch SE: 671.0)
    assert rows.loc["diff_in_means", "estimate"] == pytest.approx(PUBLISHED_EFFECT, abs=0.01)
    assert rows.loc["diff_in_means", "n_clusters"] == 445
    assert 665 < rows.loc["diff_in_means", "std_error"] < 675
    # earnings of 1974 give the event study a lead; it should show no pre-trend in an experiment
    assert summary["estimate_status"].get("failed", 0) == 0
    assert "NSW-01" in summary["report"]["summaries"][f"{NSW_STUDY}/{NSW_PROGRAMME}"]
