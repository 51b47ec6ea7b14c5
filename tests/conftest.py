"""Shared fixtures: contracts, a tmp JISR_HOME, and writers of hand-made deliveries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingestion.contracts import load_contracts
from jisr.settings import PROJECT_DIR, Settings
from tests.require_services import pytest_runtest_makereport  # noqa: F401 (a hook: skips fail in service suites)

TEST_KEY = b"test-key-0123456789abcdef-not-secret"


@pytest.fixture(scope="session")
def contracts():
    return load_contracts(PROJECT_DIR / "contracts")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
    return Settings(home=tmp_path, key_value=TEST_KEY.decode())


def write_delivery(landing: Path, contract, file_name: str, rows: list[dict], *, encoding: str | None = None,
                   delimiter: str | None = None, headers: list[str] | None = None) -> Path:
    """Write rows (dicts keyed by contract column names) in the contract's own format."""
    path = Path(landing) / contract.partner / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [c.name for c in contract.columns]
    names = headers or [contract.column(c).header for c in columns]
    if contract.format == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({n: row.get(c) for n, c in zip(names, columns)}, ensure_ascii=False) + "\n")
        return path
    if contract.format == "xlsx":
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        ws = wb.create_sheet(contract.xlsx.get("sheet", "Sheet1"))
        ws.append(names)
        for row in rows:
            ws.append([row.get(c) for c in columns])
        wb.save(path)
        return path
    delim = delimiter or contract.delimiter
    lines = [delim.join(names)] + [delim.join("" if row.get(c) is None else str(row.get(c)) for c in columns) for row in rows]
    enc = encoding or {"windows-1252": "cp1252"}.get(contract.encoding, contract.encoding)
    path.write_bytes(("\n".join(lines) + "\n").encode(enc))
    return path


PROGRAMME = {"programme_code": "DSD-01", "name_fr": "Aide sociale directe", "action_line": "social_programmes",
             "start_date": "01/01/2024", "budget_mad": "1 500 000,50", "eligibility_score_max": "9,3",
             "unit_cost_mad": "350,00"}


def person(i: int, **over) -> dict:
    row = {"cin": f"AB{100000 + i}", "household_id": f"M{i // 3:05d}", "first_name_fr": f"Hélène{i}",
           "last_name_fr": "Aït Benhaddou", "sex": "F" if i % 2 else "M", "birth_date": "12/03/1980",
           "region_code": "06", "province_code": "0601", "commune_code": "0601001", "area_type": "urban",
           "socio_economic_score": "8,5", "has_disability": "0", "phone": f"06{12000000 + i}",
           "registered_date": "01/01/2024"}
    row.update(over)
    return row


def enrolment(i: int, **over) -> dict:
    row = {"enrolment_id": f"E{i}", "cin": f"AB{100000 + i}", "programme_code": "DSD-01", "entry_date": "01/02/2024"}
    row.update(over)
    return row


def payment(i: int, month: str = "2025-01", **over) -> dict:
    row = {"payment_id": f"P{month}-{i}", "enrolment_id": f"E{i}", "cin": f"AB{100000 + i}",
           "programme_code": "DSD-01", "payment_month": month, "amount_mad": "350,00",
           "paid_date": f"05/{month[5:]}/{month[:4]}", "channel": "bank"}
    row.update(over)
    return row
