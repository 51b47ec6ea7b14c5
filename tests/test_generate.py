"""Tests of the sample delivery generator (ingestion.generate)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from ingestion.contracts import contract_for, load_contracts
from ingestion.generate import generate
from ingestion.generate.dirty import CATALOGUES

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = load_contracts(REPO / "contracts")
SEEDS = REPO / "dbt_project" / "seeds"
SMALL = dict(beneficiaries=1500, seed=11, months=3)


def _run(root: Path, **kw) -> tuple[Path, dict]:
    args = {**SMALL, **kw}
    landing, truth_path = root / "landing", root / "truth.json"
    generate(landing, truth_path=truth_path, **args)
    return landing, json.loads(truth_path.read_text(encoding="utf-8"))


def _files(landing: Path) -> dict[str, bytes]:
    return {str(p.relative_to(landing)): p.read_bytes() for p in sorted(landing.glob("*/*"))}


def _read(landing: Path, label: str) -> pd.DataFrame:
    """A delivered file as text columns named by the contract (header names mapped)."""
    partner, name = label.split("/")
    contract, _ = contract_for(CONTRACTS, partner, name)
    path = landing / label
    if contract.format == "csv":
        df = pd.read_csv(path, sep=contract.delimiter, encoding=contract.encoding, dtype=str, keep_default_na=False)
        df.columns = [c.name for c in contract.columns]
    elif contract.format == "jsonl":
        df = pd.read_json(path, lines=True, dtype=False)
    else:
        ws = load_workbook(path, read_only=True)[contract.xlsx["sheet"]]
        rows = list(ws.iter_rows(values_only=True))
        df = pd.DataFrame(rows[1:], columns=[c.name for c in contract.columns])
    return df


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("dirty"), dirty_rate=0.03)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("clean"), dirty_rate=0.0)


def test_generate_is_byte_identical_for_the_same_arguments(tmp_path):
    a, truth_a = _run(tmp_path / "a", dirty_rate=0.01)
    b, truth_b = _run(tmp_path / "b", dirty_rate=0.01)
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []
    assert truth_a == truth_b
    c, _ = _run(tmp_path / "c", dirty_rate=0.01, seed=12)
    assert _files(c)["msisf/registre_2025-01.csv"] != files_a["msisf/registre_2025-01.csv"]


def test_generate_extra_month_keeps_earlier_months_identical(tmp_path):
    short, _ = _run(tmp_path / "short", months=2)
    long, truth = _run(tmp_path / "long", months=3)
    before, after = _files(short), _files(long)
    assert before.items() <= after.items()
    added = set(after) - set(before)
    assert "msisf/registre_2025-03.csv" in added and "msisf/paiements_2025-03.csv" in added
    assert all("2025-03" in name for name in added)
    assert truth["parameters"]["last_month"] == "2025-03"


def test_generate_files_follow_their_contracts(dirty_run):
    landing, truth = dirty_run
    seen = set()
    for label, data in _files(landing).items():
        partner, name = label.split("/")
        match = contract_for(CONTRACTS, partner, name)
        assert match is not None, f"{label} matches no contract"
        contract, _ = match
        seen.add(contract.source)
        headers = [c.header for c in contract.columns]
        if contract.format == "csv":
            if contract.encoding == "utf-8-sig":
                assert data.startswith(b"\xef\xbb\xbf"), label
            text = data.decode({"windows-1252": "cp1252"}.get(contract.encoding, contract.encoding))
            first = next(csv.reader(io.StringIO(text), delimiter=contract.delimiter))
            assert first == headers, label
            widths = {len(r) for r in csv.reader(io.StringIO(text), delimiter=contract.delimiter)}
            assert widths == {len(headers)}, label
        elif contract.format == "jsonl":
            lines = data.decode("utf-8").splitlines()
            assert lines and all(list(json.loads(line)) == [c.name for c in contract.columns] for line in lines), label
        else:
            wb = load_workbook(landing / label, read_only=True)
            assert contract.xlsx["sheet"] in wb.sheetnames
            header = next(wb[contract.xlsx["sheet"]].iter_rows(values_only=True))
            assert list(header) == headers, label
        assert truth["files"][label] > 0
    assert seen == set(CONTRACTS)
    programmes = (landing / "msisf" / "programmes_2025-01.csv").read_bytes()
    assert "ménages".encode("cp1252") in programmes  # a real cp1252 é, not UTF-8
    assert "ménages".encode("utf-8") not in programmes


def test_generate_months_and_batches_match_file_names(clean_run):
    landing, _ = clean_run
    pay = _read(landing, "msisf/paiements_2025-02.csv")
    assert set(pay["payment_month"]) == {"2025-02"}
    dates = pd.to_datetime(pay["paid_date"], format="%d/%m/%Y")
    assert dates.dt.strftime("%Y-%m").eq("2025-02").all()
    occ = _read(landing, "eps/occupation_2025-03.csv")
    assert set(occ["month"]) == {"2025-03"}
    req = _read(landing, "digital/requests_2025-02.jsonl")
    assert req["submitted_at"].str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all()
    closed = req["status"].isin(["resolved", "rejected"])
    assert (req["resolved_at"].notna() == closed).all()


def test_generate_identifiers_and_codes_are_well_formed(clean_run):
    landing, truth = clean_run
    reg = pd.concat([_read(landing, f"msisf/registre_2025-0{m}.csv") for m in (1, 2, 3)])
    cin = re.compile(CONTRACTS["beneficiaries"].column("cin").pattern)
    assert reg["cin"].map(lambda v: bool(cin.fullmatch(v))).all()
    assert reg["cin"].str.len().between(6, 8).all()
    phone = re.compile(CONTRACTS["beneficiaries"].column("phone").pattern)
    phones = reg.loc[reg["phone"] != "", "phone"]
    assert len(phones) > 0 and phones.map(lambda v: bool(phone.fullmatch(v))).all()
    assert (reg["province_code"].str[:2] == reg["region_code"]).all()
    assert (reg["commune_code"].str[:4] == reg["province_code"]).all()
    communes = pd.read_csv(SEEDS / "geo_communes.csv", dtype=str)
    assert set(reg["commune_code"]) <= set(communes["commune_code"])
    first = _read(landing, "msisf/registre_2025-01.csv")
    assert first["cin"].is_unique and len(first) == 1500
    assert (first["first_name_ar"] == "").all()  # cp1252 cannot carry Arabic script
    assert "beneficiaries.first_name_ar" in truth["blank_columns"]
    units = _read(landing, "surveys/asd_2025_units.csv")
    linked = units.loc[units["cin"] != "", "cin"]
    assert len(linked) > 0 and set(linked) <= set(reg["cin"])


def test_generate_geo_seeds_have_the_2015_division():
    regions = pd.read_csv(SEEDS / "geo_regions.csv", dtype=str)
    provinces = pd.read_csv(SEEDS / "geo_provinces.csv", dtype=str)
    communes = pd.read_csv(SEEDS / "geo_communes.csv", dtype=str)
    assert len(provinces) == 75 and provinces["province_code"].is_unique
    assert provinces["province_code"].str.fullmatch(r"\d{4}").all()
    assert (provinces["province_code"].str[:2] == provinces["region_code"]).all()
    assert set(provinces["region_code"]) == set(regions["region_code"])
    assert 1300 <= len(communes) <= 1700 and communes["commune_code"].is_unique
    assert (communes["commune_code"].str[:4]).isin(provinces["province_code"]).all()
    assert set(communes["area_type"]) == {"urban", "rural"}


def test_generate_without_dirty_rate_plants_nothing(clean_run):
    _, truth = clean_run
    assert truth["dirty_rows"] == []


def test_generate_dirty_rows_are_extra_rows_at_the_recorded_positions(dirty_run, clean_run):
    """Removing the recorded rows of an inserted-dirty file gives back the clean file."""
    dirty_landing, truth = dirty_run
    clean_landing, _ = clean_run
    records = truth["dirty_rows"]
    assert len(records) > 20
    by_file: dict[str, set[int]] = {}
    for r in records:
        by_file.setdefault(r["file"], set()).add(r["row"])
    checked = 0
    for label, rows in by_file.items():
        source = records[[r["file"] for r in records].index(label)]["source"]
        if CATALOGUES[source][1] != "insert" or label.endswith(".xlsx"):
            continue
        dirty_lines = (dirty_landing / label).read_bytes().splitlines()
        clean_lines = (clean_landing / label).read_bytes().splitlines()
        header = 0 if label.endswith(".jsonl") else 1  # data row r is line r - 1 + header
        kept = [line for i, line in enumerate(dirty_lines) if i < header or i + 1 - header not in rows]
        assert kept == clean_lines, label
        assert truth["files"][label] == len(dirty_lines) - header
        checked += 1
    assert checked >= 5
    dup = [r for r in records if r["rule"] == "duplicate_key"]
    assert len(dup) % 2 == 0


def test_generate_dirty_rows_are_quarantined_under_the_recorded_rule(tmp_path):
    """The real ingestion quarantines exactly the recorded rows, under the recorded rules."""
    duckdb = pytest.importorskip("duckdb")
    from ingestion.load import Ingestor

    landing, truth = _run(tmp_path, beneficiaries=1200, months=2, dirty_rate=0.04)
    ingestor = Ingestor(tmp_path / "store.duckdb", CONTRACTS, b"k" * 32, seeds_dir=SEEDS,
                        rejected_dir=tmp_path / "rejected", feedback_dir=tmp_path / "feedback")
    ingestor.ingest(landing)
    con = duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True)
    assert con.execute("select count(*) from meta.deliveries where status = 'rejected'").fetchone()[0] == 0
    got = sorted(con.execute(
        "select d.partner || '/' || q.file_name, q.source_row, q.rule from quarantine.rows q "
        "join meta.deliveries d using (delivery_id)").fetchall())
    want = sorted((r["file"], r["row"], r["rule"]) for r in truth["dirty_rows"])
    assert got == want


def test_generate_truth_aggregates_match_the_files(clean_run):
    landing, truth = clean_run
    agg = truth["aggregates"]
    for m in ("2025-01", "2025-03"):
        pay = _read(landing, f"msisf/paiements_{m}.csv")
        total = pay["amount_mad"].str.replace(",", ".").astype(float).sum()
        assert total == pytest.approx(agg["payments_mad_by_month"][m])
    reg = pd.concat([_read(landing, f"msisf/registre_2025-0{m}.csv") for m in (1, 2, 3)])
    current = reg.drop_duplicates("cin", keep="last")
    counts = current.groupby(["region_code", "sex"]).size()
    expected = {(r, s): n for r, d in agg["registered_people_by_region_sex"].items() for s, n in d.items() if n}
    assert counts.to_dict() == expected
    enr = pd.concat([_read(landing, f"msisf/inscriptions_2025-0{m}.csv") for m in (1, 2, 3)])
    enr = enr.drop_duplicates("enrolment_id", keep="last")
    active = enr[enr["exit_date"] == ""].groupby("programme_code").size().to_dict()
    assert active == {k: v for k, v in agg["active_enrolments_by_programme"].items() if v}


def _naive(units: pd.DataFrame, meas: pd.DataFrame, var: str, endline: int) -> tuple[float, float]:
    end = meas[(meas["variable"] == var) & (meas["round_index"] == endline)].dropna(subset=["value"])
    d = end.merge(units[["unit_id", "treatment_group"]], on="unit_id")
    g = d.groupby("treatment_group")["value"]
    diff = g.mean()["treated"] - g.mean()["comparison"]
    se = float(np.sqrt((g.var() / g.count()).sum()))
    return diff, se


def test_generate_selection_study_is_biased_and_randomised_ones_are_not(clean_run):
    landing, truth = clean_run
    studies = truth["studies"]
    kinds = {s: st["design"] for s, st in studies.items()}
    assert "selection_on_observables" in kinds.values() and "randomised" in kinds.values()
    assert any(st["clustered"] for st in studies.values())
    assert any(len(st["pre_rounds"]) >= 2 and len(st["post_rounds"]) >= 2 for st in studies.values())
    for study, st in studies.items():
        units = pd.read_csv(landing / "surveys" / f"{study}_units.csv", dtype={"cluster_id": str})
        meas = pd.read_csv(landing / "surveys" / f"{study}_measurements.csv")
        assert 1500 <= len(units) <= 3000
        assert meas["round_index"].max() == st["endline_round"]
        missing = meas[(meas["round_index"] == st["endline_round"]) & meas["value"].isna()]
        assert missing["unit_id"].nunique() == sum(st["attrition_endline"].values())
        var, effect = next(iter(st["planted_effects"].items()))
        diff, se = _naive(units, meas, var, st["endline_round"])
        if st["design"] == "selection_on_observables":
            assert abs(diff - effect) > 5 * se, (study, diff, effect, se)
        else:
            # a clustered design needs a design effect; 4 SE keeps the check robust yet tight
            factor = 3.0 if st["clustered"] else 1.0
            assert abs(diff - effect) < 4 * se * factor, (study, diff, effect, se)
