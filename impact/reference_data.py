"""Published reference studies as ordinary outcome-survey deliveries.

A reference study's public data (shipped in the ``causaldata`` package) is converted
into the two files of the outcome-survey contract (``contracts/survey_units.yml`` and
``contracts/survey_measurements.yml``): ``<study>_units.csv`` and
``<study>_measurements.csv``. Those files go through ingestion like any partner
delivery, so a reproduction of the published estimates checks the whole path.

The reference tests deliver these files to the landing area, ingest them, build
``detail.mart_evaluation_panel`` with dbt and run the impact stage on it.

NSW (LaLonde 1986; Dehejia & Wahba 1999)
-----------------------------------------
``causaldata.nsw_mixtape`` is the Dehejia-Wahba subsample of the National Supported Work
demonstration: 445 men, 185 randomly assigned to the programme and 260 controls, with
real earnings in 1974, 1975 and 1978. Mapping:

- study ``nsw_dw``, programme ``NSW-01``, one individual unit per row, assigned
  individually (no cluster), sex ``M`` (the sample is men), age in years;
- variable ``earnings`` (real earnings, US dollars) at round -1 (1974), 0 (1975, the
  baseline: last pre-programme year) and 1 (1978, the endline);
- baseline characteristics at round 0: ``educ`` (years of schooling), ``black``, ``hisp``,
  ``marr`` (married), ``nodegree`` (no high-school degree), 0/1.

Thornton (2008), learning HIV status (Malawi)
---------------------------------------------
``causaldata.thornton_hiv``: people tested for HIV in rural Malawi and randomly offered a
monetary incentive to learn their result at a results centre. Only people with an
assigned incentive status are kept. Mapping:

- study ``thornton_hiv``, programme ``HIV-01``, individual units; treated = offered any
  incentive; cluster = village (``villnum``; empty when unknown); age in years;
- baseline (round 0, testing in 2004): ``hiv_positive`` (test result, 0/1) and
  ``distance_km`` (randomly assigned distance to the results centre);
- endline (round 1, results centre visits): ``got_results`` (learned the result, 0/1).
  There is no baseline measure of the outcome, so only the endline difference in means
  is estimable.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = PROJECT_DIR / "contracts"

NSW_STUDY = "nsw_dw"
NSW_PROGRAMME = "NSW-01"
NSW_ROUNDS = {"re74": (-1, "1974"), "re75": (0, "1975"), "re78": (1, "1978")}
NSW_BASELINE = ("educ", "black", "hisp", "marr", "nodegree")
THORNTON_STUDY = "thornton_hiv"
THORNTON_PROGRAMME = "HIV-01"


def _contract_columns(source: str) -> list[str]:
    from ingestion.contracts import load_contract

    contract = load_contract(CONTRACTS_DIR / f"{source}.yml")
    return [c.header for c in contract.columns]


def nsw_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The NSW Dehejia-Wahba sample as survey_units and survey_measurements tables."""
    from causaldata import nsw_mixtape

    data = nsw_mixtape.load_pandas().data.reset_index(drop=True)
    unit_ids = [f"nsw{i + 1:04d}" for i in range(len(data))]
    units = pd.DataFrame(
        {
            "study_id": NSW_STUDY,
            "unit_id": unit_ids,
            "unit_type": "individual",
            "cin": None,
            "programme_code": NSW_PROGRAMME,
            "treatment_group": np.where(data["treat"] == 1, "treated", "comparison"),
            "cluster_id": None,
            "sex": "M",
            "age": data["age"].astype(int),
            "region_code": None,
            "vulnerability_score": None,
        }
    )
    rows = []
    for column, (round_index, label) in NSW_ROUNDS.items():
        rows.append(pd.DataFrame({"unit_id": unit_ids, "round_index": round_index, "round_label": label,
                                  "variable": "earnings", "value": data[column].astype(float)}))
    for column in NSW_BASELINE:
        rows.append(pd.DataFrame({"unit_id": unit_ids, "round_index": 0, "round_label": "1975",
                                  "variable": column, "value": data[column].astype(float)}))
    measurements = pd.concat(rows, ignore_index=True)
    measurements.insert(0, "study_id", NSW_STUDY)
    measurements["measured_date"] = None
    return units, measurements


def thornton_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Thornton (2008) incentive experiment as survey_units and survey_measurements."""
    from causaldata import thornton_hiv

    data = thornton_hiv.load_pandas().data
    data = data[data["any"].notna()].reset_index(drop=True)
    unit_ids = [f"thiv{i + 1:05d}" for i in range(len(data))]
    village = data["villnum"].map(lambda v: None if pd.isna(v) else f"village{int(v):03d}")
    units = pd.DataFrame(
        {
            "study_id": THORNTON_STUDY,
            "unit_id": unit_ids,
            "unit_type": "individual",
            "cin": None,
            "programme_code": THORNTON_PROGRAMME,
            "treatment_group": np.where(data["any"] == 1, "treated", "comparison"),
            "cluster_id": village,
            "sex": None,
            "age": data["age"].round().astype("Int64"),
            "region_code": None,
            "vulnerability_score": None,
        }
    )
    parts = [
        (0, "testing_2004", "hiv_positive", data["hiv2004"]),
        (0, "testing_2004", "distance_km", data["distvct"]),
        (1, "results_2004", "got_results", data["got"]),
    ]
    measurements = pd.concat(
        [pd.DataFrame({"unit_id": unit_ids, "round_index": r, "round_label": label, "variable": name,
                       "value": values.astype(float)}) for r, label, name, values in parts],
        ignore_index=True,
    )
    measurements.insert(0, "study_id", THORNTON_STUDY)
    measurements["measured_date"] = None
    return units, measurements


def thornton_to_survey_files(out_dir: Path) -> tuple[Path, Path]:
    """Convert the Thornton (2008) data into the two outcome-survey contract files."""
    units, measurements = thornton_frames()
    return write_survey_files(units, measurements, out_dir, THORNTON_STUDY)


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # shortest text that reads back as the same double
    return str(value)


def write_survey_files(units: pd.DataFrame, measurements: pd.DataFrame, out_dir: Path, study_id: str) -> tuple[Path, Path]:
    """Write ``<study>_units.csv`` and ``<study>_measurements.csv`` in the contracts' format
    (comma-separated UTF-8, the contract's header names and column order)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, frame, name in (("survey_units", units, f"{study_id}_units.csv"),
                                ("survey_measurements", measurements, f"{study_id}_measurements.csv")):
        columns = _contract_columns(source)
        path = out_dir / name
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            for row in frame.reindex(columns=columns).itertuples(index=False):
                writer.writerow([_text(v) for v in row])
        paths.append(path)
    return paths[0], paths[1]


def nsw_to_survey_files(out_dir: Path) -> tuple[Path, Path]:
    """Convert the NSW reference data into the two outcome-survey contract files."""
    units, measurements = nsw_frames()
    return write_survey_files(units, measurements, out_dir, NSW_STUDY)


def read_survey_files(units_path: Path, measurements_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    units = pd.read_csv(units_path, dtype=str, keep_default_na=False, na_values=[""])
    measurements = pd.read_csv(measurements_path, dtype=str, keep_default_na=False, na_values=[""])
    units["age"] = pd.to_numeric(units["age"])
    units["vulnerability_score"] = pd.to_numeric(units["vulnerability_score"])
    measurements["round_index"] = pd.to_numeric(measurements["round_index"]).astype(int)
    measurements["value"] = pd.to_numeric(measurements["value"])
    return units, measurements
