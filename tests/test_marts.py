"""The dbt warehouse built end to end on a small hand-made raw layer.

The raw layer is written directly (``raw.<source>`` tables with the contract's raw columns
and lineage, ``_is_current`` set by the contracts' supersede rules, and the delivery log
``meta.deliveries`` with each delivery loaded or superseded), so every figure the
marts publish can be recomputed here in plain Python from the same hand-made rows:
coverage counts, transfers paid, PAR30 of a small loan portfolio, occupancy rates,
processing-time percentiles, the evaluation panel, and what an incremental refresh keeps.

dbt runs once for the module (a session fixture); the incremental test copies that build
and refreshes it after one more month of deliveries.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from ingestion import store
from ingestion.contracts import load_contracts
from jisr.settings import PROJECT_DIR

DBT_PROJECT = PROJECT_DIR / "dbt_project"
CONTRACTS = load_contracts(PROJECT_DIR / "contracts")
AGE_BANDS = [(18, "0-17"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64")]


# --------------------------------------------------------------------------------------
# A hand-made raw layer
# --------------------------------------------------------------------------------------

def _month_end(month: str) -> date:
    y, m = map(int, month.split("-"))
    nxt = date(y + (m == 12), m % 12 + 1, 1)
    return nxt - timedelta(days=1)


def _month_start(month: str) -> date:
    y, m = map(int, month.split("-"))
    return date(y, m, 1)


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, d.day)


def _geo() -> dict[str, dict[str, tuple[str, str]]]:
    """Per region: one urban and one rural (province, commune) from the geography seeds."""
    with open(DBT_PROJECT / "seeds" / "geo_communes.csv", encoding="utf-8", newline="") as fh:
        communes = list(csv.DictReader(fh))
    out: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for row in communes:
        region = row["province_code"][:2]
        out[region].setdefault(row["area_type"], (row["province_code"], row["commune_code"]))
    return out


@dataclass
class RawLayer:
    """Deliveries appended to ``raw.<source>`` and logged in ``meta.deliveries`` the way
    ingestion appends and logs them."""

    path: Path
    deliveries: list[tuple[str, str, str, datetime]] = field(default_factory=list)

    def __post_init__(self) -> None:
        con = store.connect(self.path)
        store.ensure_schema(con, CONTRACTS)
        con.close()

    def deliver(self, source: str, batch: str, rows: list[dict], loaded_at: datetime) -> str:
        contract = CONTRACTS[source]
        columns = list(contract.raw_columns)
        delivery_id = f"{source}-{batch}-{len([d for d in self.deliveries if d[0] == source and d[1] == batch])}"
        self.deliveries.append((source, batch, delivery_id, loaded_at))
        values = []
        for i, row in enumerate(rows, start=1):
            unknown = set(row) - set(columns)
            assert not unknown, f"{source}: not raw columns {unknown}"
            lineage = {"_delivery_id": delivery_id, "_batch": batch, "_file_name": f"{source}_{batch}",
                       "_content_hash": delivery_id, "_source_row": i, "_loaded_at": loaded_at,
                       "_run_id": "handmade", "_is_current": True}
            values.append([{**row, **lineage}.get(c) for c in columns])
        con = store.connect(self.path)
        try:
            if values:
                con.executemany(
                    f"insert into raw.{source} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})", values)
            self._supersede(con, source)
            self._log(con, contract, batch, delivery_id, len(values), loaded_at)
        finally:
            con.close()
        return delivery_id

    @staticmethod
    def _log(con, contract, batch: str, delivery_id: str, rows: int, loaded_at: datetime) -> None:
        """Log the delivery as loaded; the earlier loaded delivery of its batch is superseded."""
        con.execute("update meta.deliveries set status = 'superseded', superseded_by = ? "
                    "where source = ? and batch = ? and status = 'loaded'", [delivery_id, contract.source, batch])
        con.execute(
            "insert into meta.deliveries (delivery_id, source, partner, file_name, batch, content_hash, received_at, "
            "loaded_at, run_id, status, rows_delivered, rows_loaded, rows_quarantined, contract_version) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, 'handmade', 'loaded', ?, ?, 0, ?)",
            [delivery_id, contract.source, contract.partner, f"{contract.source}_{batch}", batch, delivery_id,
             loaded_at, loaded_at, rows, rows, contract.version])

    def _supersede(self, con, source: str) -> None:
        """Recompute ``_is_current``: a later delivery of a batch replaces the earlier one;
        under latest_per_key the latest (batch, load time, row) of each key is current."""
        contract = CONTRACTS[source]
        latest = {}
        for src, batch, delivery_id, _ in self.deliveries:
            if src == source:
                latest[batch] = delivery_id
        live = ", ".join(f"'{d}'" for d in latest.values())
        con.execute(f"update raw.{source} set _is_current = _delivery_id in ({live})")
        if contract.supersede == "latest_per_key":
            keys = ", ".join(contract.raw_primary_key)
            con.execute(f"""
                update raw.{source} set _is_current = ranked.rn = 1 from (
                    select rowid as rid, row_number() over (
                        partition by {keys} order by _batch desc, _loaded_at desc, _source_row desc) as rn
                    from raw.{source} where _delivery_id in ({live})
                ) ranked where raw.{source}.rowid = ranked.rid""")


@dataclass
class HandMade:
    """The hand-made partner data, kept as Python rows to compute expected figures."""

    geo: dict = field(default_factory=_geo)

    # --- registry ---------------------------------------------------------------------
    def person(self, i: int, region: str | None = None, household: int | None = None) -> dict:
        region = region or ["01", "06", "07"][i % 3]
        area = "urban" if (i // 3) % 2 == 0 else "rural"
        province, commune = self.geo[region][area]
        return {
            "person_key": 1000 + i,
            "household_key": household if household is not None else 500 + i // 2,
            "sex": "F" if i % 2 == 0 else "M",
            "birth_date": date(1950 + (i * 7) % 66, 1 + i % 12, 1 + i % 28),
            "region_code": region, "province_code": province, "commune_code": commune, "area_type": area,
            "socio_economic_score": float((i * 37) % 100) + 0.5,
            "has_disability": i % 7 == 0,
            "registered_date": date(2020, 1, 15),
        }

    MOVER = 4  # moves from region 06 to region 07 in the 2025-02 registry extract
    NEW_HOUSEHOLD = 5  # joins another household in 2025-02

    def registry(self, batch: str) -> list[dict]:
        if batch == "2025-01":
            return [self.person(i) for i in range(28)]
        if batch == "2025-02":
            return [self.person(self.MOVER, region="07"), self.person(self.NEW_HOUSEHOLD, household=900),
                    self.person(28), self.person(29)]
        return []

    def current_people(self, as_of_batch: str) -> dict[int, dict]:
        people = {}
        for batch in ("2025-01", "2025-02", "2025-03"):
            if batch <= as_of_batch:
                for p in self.registry(batch):
                    people[p["person_key"]] = p
        return people

    # --- programmes -------------------------------------------------------------------
    PROGRAMMES = [
        ("SP-01", "Transferts monétaires conditionnels", "social_programmes", date(2024, 1, 1), "100000.00", 40.0, "500.00"),
        ("SP-02", "Accompagnement des familles", "social_programmes", date(2024, 6, 1), "50000.00", None, None),
        ("IF-01", "Microcrédit solidaire", "inclusive_finance", date(2024, 1, 1), "2000000.00", None, None),
        ("INC-01", "Incubateur social", "social_incubation", date(2023, 1, 1), "300000.00", None, None),
        ("EPS-01", "Modernisation des EPS", "eps_modernisation", date(2024, 1, 1), "5000000.00", None, None),
        ("DIG-01", "Guichet numérique", "digital_services", date(2024, 1, 1), "1000000.00", None, None),
    ]

    def programmes(self) -> list[dict]:
        return [{"programme_code": c, "name_fr": n, "name_ar": None, "action_line": a, "start_date": s,
                 "end_date": None, "budget_mad": Decimal(b), "eligibility_score_max": t,
                 "unit_cost_mad": Decimal(u) if u else None} for c, n, a, s, b, t, u in self.PROGRAMMES]

    # --- enrolments and payments ------------------------------------------------------
    SP01 = [0, 1, 2, 4, 6, 7, 9, 10, 12, 15]
    SP02 = [20, 21]

    def enrolments(self) -> list[dict]:
        rows = []
        for i in self.SP01:
            exit_date, reason = (date(2025, 1, 31), "completed") if i == 10 else (None, None)
            rows.append({"enrolment_id": f"E{i:03d}", "person_key": 1000 + i, "programme_code": "SP-01",
                         "entry_date": date(2024, 12, 1), "exit_date": exit_date, "exit_reason": reason})
        for i in self.SP02:
            rows.append({"enrolment_id": f"F{i:03d}", "person_key": 1000 + i, "programme_code": "SP-02",
                         "entry_date": date(2025, 1, 10), "exit_date": None, "exit_reason": None})
        return rows

    def payments(self, month: str, corrected: bool = False) -> list[dict]:
        rows = []
        channels = ["bank", "mobile_wallet", "post_office", "cash_agent"]
        for n, i in enumerate(self.SP01):
            if i == 10 and month > "2025-01":
                continue  # exited at the end of January
            amount = Decimal("450.00") if i == self.MOVER else Decimal("500.00")
            if month == "2025-01" and corrected:
                if i == 1:
                    continue  # the corrected January file drops a payment made in error
                if i == 0:
                    amount = Decimal("550.00")
            if month == "2025-02" and corrected:
                if i == 15:
                    continue  # the corrected February file drops a payment...
                if i == 2:
                    amount = Decimal("525.00")  # ...and corrects another
            rows.append({"payment_id": f"P{month}-{i:03d}", "enrolment_id": f"E{i:03d}", "person_key": 1000 + i,
                         "programme_code": "SP-01", "payment_month": month, "amount_mad": amount,
                         "paid_date": _month_start(month) + timedelta(days=4), "channel": channels[n % 4]})
        return rows

    # --- inclusive finance ------------------------------------------------------------
    # loan_id: (person, principal, instalment principal, interest, disbursed, first due,
    #            number of instalments, written off (date, amount))
    LOANS = {
        "L1": (2, "12000.00", "1000.00", "100.00", date(2024, 10, 1), date(2024, 11, 1), 12, None),
        "L2": (8, "6000.00", "1000.00", "50.00", date(2024, 10, 15), date(2024, 11, 15), 6, None),
        "L3": (11, "3000.00", "500.00", "30.00", date(2024, 11, 1), date(2024, 12, 1), 6, None),
        "L4": (14, "5000.00", "1000.00", "60.00", date(2024, 9, 1), date(2024, 10, 1), 5, (date(2025, 1, 20), "4000.00")),
        "L5": (17, "2400.00", "400.00", "40.00", date(2024, 12, 1), date(2025, 1, 1), 6, None),
        # disbursed before the lender's first repayments file (2024-10): instalments 1-3
        # are never delivered; interest is 1% a month of the balance (declining balance)
        "L6": (19, "6000.00", "1000.00", None, date(2024, 6, 1), date(2024, 7, 1), 6, None),
    }
    FIRST_REPAYMENTS_BATCH = "2024-10"

    def loans(self, batch: str) -> list[dict]:
        rows = []
        for loan_id, (i, principal, _, _, disbursed, _, term, wo) in self.LOANS.items():
            if disbursed > _month_end(batch):
                continue
            written_off = wo if wo and wo[0] <= _month_end(batch) else None
            settled = [r["settled_date"] for r in self.instalments() if r["loan_id"] == loan_id]
            closed = all(settled) and max(settled) <= _month_end(batch)
            rows.append({"loan_id": loan_id, "person_key": 1000 + i, "programme_code": "IF-01",
                         "product": "income_generating" if i % 2 == 0 else "solidarity_group",
                         "principal_mad": Decimal(principal), "term_months": term, "annual_rate_pct": 12.0,
                         "disbursement_date": disbursed,
                         "status": "written_off" if written_off else ("closed" if closed else "active"),
                         "written_off_date": written_off[0] if written_off else None,
                         "written_off_mad": Decimal(written_off[1]) if written_off else None})
        return rows

    def payment_of(self, loan_id: str, number: int, due: date, amount_due: Decimal) -> tuple[date | None, Decimal | None]:
        """When (and how much) each instalment is paid in this portfolio."""
        if loan_id == "L2" and number >= 2:
            return None, None  # stops paying after the first instalment
        if loan_id == "L3" and number == 1:
            return date(2025, 1, 10), amount_due  # 40 days late
        if loan_id == "L4":
            return (due, amount_due) if number == 1 else (None, None)
        if loan_id == "L5" and number == 1:
            return due, Decimal("200.00")  # partial payment: not settled
        return due, amount_due

    def instalments(self) -> list[dict]:
        """Every instalment of the portfolio, delivered or not, with its true settlement."""
        rows = []
        for loan_id, (_, loan_principal, principal, interest, _, first_due, term, _) in self.LOANS.items():
            for k in range(term):
                due = _add_months(first_due, k)
                if interest is None:  # 1% a month of the balance before the instalment
                    interest_k = (Decimal(loan_principal) - k * Decimal(principal)) / 100
                else:
                    interest_k = Decimal(interest)
                amount_due = Decimal(principal) + interest_k
                paid, amount = self.payment_of(loan_id, k + 1, due, amount_due)
                rows.append({"instalment_id": f"{loan_id}-{k + 1:02d}", "loan_id": loan_id, "instalment_number": k + 1,
                             "due_date": due, "principal_due_mad": Decimal(principal),
                             "interest_due_mad": interest_k, "paid_date": paid, "amount_paid_mad": amount,
                             "settled_date": paid if paid is not None and amount >= amount_due else None})
        return rows

    def repayments(self, batch: str) -> list[dict]:
        """A month's file: instalments due that month as known at its end, plus the
        instalments of earlier months paid during it (updated lines)."""
        start, end = _month_start(batch), _month_end(batch)
        rows = []
        for row in self.instalments():
            row = {k: v for k, v in row.items() if k != "settled_date"}
            if start <= row["due_date"] <= end:
                shown = dict(row)
                if row["paid_date"] is not None and row["paid_date"] > end:
                    shown["paid_date"], shown["amount_paid_mad"] = None, None
                rows.append(shown)
            elif row["due_date"] < start and row["paid_date"] is not None and start <= row["paid_date"] <= end:
                rows.append(dict(row))
        return rows

    # --- incubation -------------------------------------------------------------------
    VENTURES = [
        ("V1", 3, "2023-A", date(2023, 3, 1), "active", "active", 4, "120000.00", "agriculture"),
        ("V2", 6, "2023-A", date(2023, 3, 1), "active", "closed", 2, "40000.00", "handicraft"),
        ("V3", 9, "2023-B", date(2023, 9, 1), "closed", "closed", 0, None, "services"),
        ("V4", 13, "2024-A", date(2024, 3, 1), "unknown", None, 1, "15000.00", "textile"),
        ("V5", 16, "2024-B", date(2024, 9, 1), None, None, None, None, "digital"),
    ]

    def ventures(self) -> list[dict]:
        return [{"venture_id": v, "person_key": 1000 + i, "programme_code": "INC-01", "venture_name": f"Coop {v}",
                 "legal_form": "cooperative", "sector": sector, "cohort": cohort,
                 "region_code": ["01", "06", "07"][i % 3], "incubation_start_date": start,
                 "incubation_end_date": _add_months(start, 12), "status_12m": s12, "status_24m": s24,
                 "jobs_created": jobs, "revenue_mad": Decimal(rev) if rev else None}
                for v, i, cohort, start, s12, s24, jobs, rev, sector in self.VENTURES]

    # --- establishments ---------------------------------------------------------------
    ESTABLISHMENTS = {
        "EPS-0001": ("children", "01", 50, date(2024, 12, 5), date(2025, 1, 20)),
        "EPS-0002": ("elderly", "06", 40, None, None),
        "EPS-0003": ("disability", "07", 20, date(2025, 2, 10), None),
    }
    RESIDENTS = {  # month -> establishment -> residents
        "2024-11": {"EPS-0001": 30, "EPS-0002": 35, "EPS-0003": 12},
        "2024-12": {"EPS-0001": 20, "EPS-0002": 36, "EPS-0003": 14},
        "2025-01": {"EPS-0001": 25, "EPS-0002": 38, "EPS-0003": 15},
        "2025-02": {"EPS-0001": 45, "EPS-0002": 39, "EPS-0003": 10},
        "2025-03": {"EPS-0001": 48, "EPS-0002": 40, "EPS-0003": 9},
    }
    CORRECTED_RESIDENTS = {("2025-01", "EPS-0002"): 32}
    # A month's establishments file carries the establishments that changed: EPS-0001 has
    # 60 places from February, after its works (ended 20 January).
    CAPACITY_CHANGES = {"2025-02": {"EPS-0001": 60}}

    def capacity(self, month: str, eid: str) -> int:
        """Places of an establishment in a month, as its files state them."""
        places = self.ESTABLISHMENTS[eid][2]
        for changed in sorted(m for m in self.CAPACITY_CHANGES if m <= month):
            places = self.CAPACITY_CHANGES[changed].get(eid, places)
        return places

    def establishments(self, month: str = "2025-01") -> list[dict]:
        rows = []
        for eid, (kind, region, _, ws, we) in self.ESTABLISHMENTS.items():
            if month != "2025-01" and eid not in self.CAPACITY_CHANGES.get(month, {}):
                continue
            capacity = self.capacity(month, eid)
            province, commune = self.geo[region]["urban"]
            rows.append({"establishment_id": eid, "establishment_name": f"Centre {eid}", "establishment_type": kind,
                         "region_code": region, "province_code": province, "commune_code": commune,
                         "capacity": capacity, "programme_code": "EPS-01", "works_start_date": ws,
                         "works_end_date": we})
        return rows

    def residents(self, month: str, eid: str, corrected: bool = True) -> int:
        if corrected and (month, eid) in self.CORRECTED_RESIDENTS:
            return self.CORRECTED_RESIDENTS[(month, eid)]
        return self.RESIDENTS[month][eid]

    def occupancy(self, month: str, corrected: bool = False) -> list[dict]:
        return [{"establishment_id": eid, "month": month, "residents": self.residents(month, eid, corrected),
                 "admissions": 3, "departures": 2, "inspection_score": 70.0 + n if month == "2024-11" else None}
                for n, eid in enumerate(self.ESTABLISHMENTS)]

    # --- digital services -------------------------------------------------------------
    def requests(self) -> list[dict]:
        """Final state of every request: (id, channel, region, submitted, hours to close or None)."""
        spec = [
            ("R01", "web", "01", datetime(2025, 1, 2, 9), 5.0),
            ("R02", "web", "01", datetime(2025, 1, 3, 10), 30.0),
            ("R03", "mobile", "06", datetime(2025, 1, 5, 8), 2.5),
            ("R04", "counter", "07", datetime(2025, 1, 8, 14), 72.0),
            ("R05", "web", "06", datetime(2025, 1, 20, 11), 400.0),  # resolved in February
            ("R06", "mobile", "01", datetime(2025, 1, 25, 16), None),  # still open
            ("R07", "counter", "06", datetime(2025, 1, 28, 9), 1.0),
            ("R08", "web", "07", datetime(2025, 2, 1, 9), 12.0),
            ("R09", "mobile", "07", datetime(2025, 2, 3, 13), 48.0),
            ("R10", "mobile", "01", datetime(2025, 2, 10, 10), 6.0),
            ("R11", "web", "06", datetime(2025, 2, 14, 15), None),
            ("R12", "counter", "01", datetime(2025, 2, 20, 8), 3.0),
            ("R13", "web", "01", datetime(2025, 2, 26, 9), 120.0),  # resolved in March
        ]
        rows = []
        for n, (rid, channel, region, submitted, hours) in enumerate(spec):
            resolved = submitted + timedelta(hours=hours) if hours is not None else None
            rows.append({"request_id": rid, "person_key": 1000 + n if n % 3 else None,
                         "service_type": ["certificate", "benefit_claim", "registry_update"][n % 3],
                         "channel": channel, "region_code": region, "submitted_at": submitted,
                         "resolved_at": resolved,
                         "status": ("rejected" if n == 6 else "resolved") if resolved else "in_progress"})
        return rows

    def requests_file(self, batch: str) -> list[dict]:
        """A month's file: requests submitted or changed in the month, as known at its end."""
        start, end = _month_start(batch), _month_end(batch) + timedelta(days=1)
        out = []
        for row in self.requests():
            sub, res = row["submitted_at"], row["resolved_at"]
            submitted_now = start <= sub.date() < end
            resolved_now = res is not None and start <= res.date() < end
            if not (submitted_now or resolved_now):
                continue
            shown = dict(row)
            if res is not None and res.date() >= end:
                shown["resolved_at"], shown["status"] = None, "in_progress"
            out.append(shown)
        return out

    # --- surveys ----------------------------------------------------------------------
    UNITS = [  # unit, group, cluster, sex, age, score, person index
        ("U01", "treated", "C1", "F", 34, 20.0, 0),
        ("U02", "treated", "C1", "M", 41, 35.0, 1),
        ("U03", "treated", "C2", "F", 22, 50.0, None),
        ("U04", "treated", "C2", "M", 67, 65.0, None),
        ("U05", "comparison", "C3", "F", 29, 30.0, None),
        ("U06", "comparison", "C3", "M", 52, 45.0, None),
        ("U07", "comparison", None, "F", 16, 70.0, None),
        ("U08", "comparison", None, "M", 38, 80.0, None),
    ]

    def survey_units(self) -> list[dict]:
        return [{"study_id": "sp01_eval", "unit_id": u, "unit_type": "household",
                 "person_key": 1000 + p if p is not None else None, "programme_code": "SP-01",
                 "treatment_group": g, "cluster_id": c, "sex": s, "age": a, "region_code": "06",
                 "vulnerability_score": v} for u, g, c, s, a, v, p in self.UNITS]

    def survey_measurements(self) -> list[dict]:
        rows = []
        for n, (u, g, *_rest) in enumerate(self.UNITS):
            for round_index, label in ((0, "baseline"), (1, "endline")):
                if u == "U08" and round_index == 1:
                    continue  # attrition: not reached at endline
                for variable in ("income_mad", "employed"):
                    value = (1000.0 + 100 * n + (300 if g == "treated" and round_index else 0)
                             if variable == "income_mad" else float((n + round_index) % 2))
                    if u == "U07" and round_index == 1 and variable == "employed":
                        value = None  # delivered without a value
                    rows.append({"study_id": "sp01_eval", "unit_id": u, "round_index": round_index,
                                 "round_label": label, "variable": variable, "value": value,
                                 "measured_date": date(2024 + round_index, 3, 1)})
        return rows


def load_months(raw: RawLayer, data: HandMade, months: list[str], start_hour: int = 0) -> None:
    """Deliver every source's files for the given months, in contract dependency order."""
    t = datetime(2025, 3, 1) + timedelta(hours=start_hour)

    def tick():
        nonlocal t
        t += timedelta(minutes=1)
        return t

    for month in months:
        if month == "2025-01":
            raw.deliver("programmes", month, data.programmes(), tick())
        if data.registry(month):
            raw.deliver("beneficiaries", month, data.registry(month), tick())
        if month == "2025-01":
            raw.deliver("enrolments", month, data.enrolments(), tick())
            raw.deliver("establishments", month, data.establishments(), tick())
            raw.deliver("ventures", month, data.ventures(), tick())
            raw.deliver("repayments", "2024-10", data.repayments("2024-10"), tick())
            for earlier in ("2024-11", "2024-12"):
                raw.deliver("occupancy", earlier, data.occupancy(earlier), tick())
                raw.deliver("repayments", earlier, data.repayments(earlier), tick())
            raw.deliver("survey_units", "sp01_eval", data.survey_units(), tick())
            raw.deliver("survey_measurements", "sp01_eval", data.survey_measurements(), tick())
        if month in data.CAPACITY_CHANGES:
            raw.deliver("establishments", month, data.establishments(month), tick())
        raw.deliver("loans", month, data.loans(month), tick())
        raw.deliver("payments", month, data.payments(month), tick())
        raw.deliver("repayments", month, data.repayments(month), tick())
        raw.deliver("occupancy", month, data.occupancy(month), tick())
        raw.deliver("service_requests", month, data.requests_file(month), tick())
        if month == "2025-01":
            # corrected re-deliveries of January (replace_batch): payments and occupancy
            raw.deliver("payments", month, data.payments(month, corrected=True), tick())
            raw.deliver("occupancy", month, data.occupancy(month, corrected=True), tick())


# --------------------------------------------------------------------------------------
# Running dbt
# --------------------------------------------------------------------------------------

def run_dbt(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JISR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="False")
    env.pop("JISR_DBT_TARGET", None)
    cmd = [str(Path(sys.executable).with_name("dbt")), "--no-version-check", *args,
           "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
           "--target-path", str(home / "dbt_target"), "--log-path", str(home / "dbt_logs")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} failed:\n{done.stdout[-8000:]}\n{done.stderr[-2000:]}")
    return done


def make_home(home: Path, months: list[str]) -> tuple[RawLayer, HandMade]:
    (home / "warehouse").mkdir(parents=True, exist_ok=True)
    raw = RawLayer(home / "store" / "ingest.duckdb")
    data = HandMade()
    load_months(raw, data, months)
    return raw, data


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The hand-made raw layer for January and February 2025, built with `dbt build`."""
    home = tmp_path_factory.mktemp("jisr_home")
    raw, data = make_home(home, ["2025-01", "2025-02"])
    run_dbt(home, "build")
    return home, raw, data


def query(home: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse" / "build.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def records(home: Path, sql: str, params=None) -> list[dict]:
    con = duckdb.connect(str(home / "warehouse" / "build.duckdb"), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


# --------------------------------------------------------------------------------------
# Expected figures, computed from the hand-made rows (never from the warehouse)
# --------------------------------------------------------------------------------------

REFERENCE = date(2025, 2, 28)


def age_band(birth: date, on: date) -> str:
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return next((band for limit, band in AGE_BANDS if age < limit), "65+")


def terciles(scores) -> tuple[float, float]:
    low, high = np.quantile(np.asarray(scores, dtype=float), [1 / 3, 2 / 3])
    return float(low), float(high)


def tercile(score: float, cuts: tuple[float, float]) -> int:
    return 1 if score <= cuts[0] else 2 if score <= cuts[1] else 3


def portfolio_at(data: HandMade, month_end: date) -> dict[str, tuple[Decimal, int, Decimal, Decimal]]:
    """Per loan in the portfolio at a month end: (outstanding principal, days past due,
    amount due by then, amount paid by then on it), from the full true history."""
    out = {}
    instalments = data.instalments()
    for loan_id, (_, principal, *_rest, written_off) in data.LOANS.items():
        disbursed = _rest[2]
        if disbursed > month_end or (written_off and written_off[0] <= month_end):
            continue
        mine = [r for r in instalments if r["loan_id"] == loan_id]
        settled = [r for r in mine if r["settled_date"] is not None and r["settled_date"] <= month_end]
        if len(settled) == len(mine):
            continue  # closed
        outstanding = Decimal(principal) - sum(r["principal_due_mad"] for r in settled)
        overdue = [(month_end - r["due_date"]).days for r in mine if r["due_date"] < month_end and r not in settled]
        delivered = [r for r in mine if r["due_date"] >= _month_start(data.FIRST_REPAYMENTS_BATCH)]
        due = sum(r["principal_due_mad"] + r["interest_due_mad"] for r in delivered if r["due_date"] <= month_end)
        paid = sum(r["amount_paid_mad"] for r in delivered
                   if r["due_date"] <= month_end and r["paid_date"] is not None and r["paid_date"] <= month_end)
        out[loan_id] = (outstanding, max(overdue, default=0), Decimal(due), Decimal(paid))
    return out


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------

def test_marts_are_tables_not_views(built):
    home, _, _ = built
    kinds = dict(query(home, "select table_schema || '.' || table_name, table_type from information_schema.tables "
                             "where table_schema in ('marts', 'detail')"))
    assert {"detail.mart_evaluation_panel", "marts.mart_programme_costs", "detail.dim_beneficiaries",
            "detail.fct_payments"} <= set(kinds)
    assert set(kinds.values()) == {"BASE TABLE"}, {k: v for k, v in kinds.items() if v != "BASE TABLE"}


def test_published_counts_are_bigint_not_hugeint(built):
    """DuckDB adds integers up as HUGEINT (128 bits), which BI tools and pandas read as
    floats or 38-digit decimals: every count a mart publishes is a BIGINT."""
    home, _, _ = built
    huge = query(home, "select table_schema || '.' || table_name || '.' || column_name from information_schema.columns "
                       "where table_schema in ('marts', 'detail', 'intermediate') and data_type = 'HUGEINT' order by 1")
    assert huge == [], " ".join(h[0] for h in huge)


def test_documented_columns_are_the_built_columns(built):
    home, _, _ = built
    manifest = json.loads((home / "dbt_target" / "manifest.json").read_text())
    built_columns = defaultdict(list)
    for schema, table, column in query(home, "select table_schema, table_name, column_name from information_schema.columns "
                                             "where table_schema in ('staging', 'intermediate', 'detail', 'marts') "
                                             "order by table_schema, table_name, ordinal_position"):
        built_columns[table].append(column)
    documented = {n["name"]: list(n["columns"]) for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert set(documented) == set(built_columns)
    mismatched = {name: (cols, built_columns[name]) for name, cols in documented.items() if cols != built_columns[name]}
    assert not mismatched


def test_coverage_counts_match_registry_and_enrolments(built):
    home, _, data = built
    people = data.current_people("2025-02")
    threshold = 40.0
    reached = {1000 + i for i in data.SP01}
    eligible = {k for k, p in people.items() if p["socio_economic_score"] <= threshold}
    rows = query(home, """
        select region_code, sum(registered_population), sum(eligible_population), sum(beneficiaries_reached),
               sum(eligible_reached), sum(reached_above_threshold), sum(eligible_not_reached)
        from marts.mart_coverage_targeting where programme_code = 'SP-01' group by region_code""")
    got = {r[0]: tuple(int(x) for x in r[1:]) for r in rows}
    expected = {}
    for region in {p["region_code"] for p in people.values()}:
        here = {k for k, p in people.items() if p["region_code"] == region}
        expected[region] = (len(here), len(here & eligible), len(here & reached), len(here & reached & eligible),
                            len(here & reached - eligible), len(here & eligible - reached))
    assert got == expected
    # the rates of the whole programme, from the same counts
    total = query(home, """
        select sum(reached_above_threshold) * 1.0 / sum(beneficiaries_reached),
               sum(eligible_not_reached) * 1.0 / sum(eligible_population)
        from marts.mart_coverage_targeting where programme_code = 'SP-01'""")[0]
    assert total[0] == pytest.approx(len(reached - eligible) / len(reached))
    assert total[1] == pytest.approx(len(eligible - reached) / len(eligible))
    # a programme without a score rule has no eligibility figures
    assert query(home, "select count(*) from marts.mart_coverage_targeting where programme_code = 'SP-02' "
                       "and eligible_population is not null")[0][0] == 0


def test_coverage_cells_use_sex_age_band_and_tercile_of_the_current_registry(built):
    home, _, data = built
    people = data.current_people("2025-02")
    cuts = terciles([p["socio_economic_score"] for p in people.values()])
    expected = defaultdict(int)
    for p in people.values():
        expected[(p["sex"], age_band(p["birth_date"], REFERENCE), tercile(p["socio_economic_score"], cuts))] += 1
    rows = query(home, """
        select sex, age_band, vulnerability_tercile, sum(registered_population)
        from marts.mart_coverage_targeting where programme_code = 'SP-01' group by all""")
    assert {(s, a, t): int(n) for s, a, t, n in rows} == dict(expected)


def test_transfers_equal_current_payment_deliveries(built):
    home, _, data = built
    expected = {m: sum(p["amount_mad"] for p in data.payments(m, corrected=(m == "2025-01")))
                for m in ("2025-01", "2025-02")}
    rows = query(home, "select payment_month, sum(transfers_paid_mad), sum(payments_count) "
                       "from marts.mart_transfers_monthly group by 1")
    assert {m: a for m, a, _ in rows} == expected
    assert {m: int(n) for m, _, n in rows} == {m: len(data.payments(m, corrected=(m == "2025-01")))
                                               for m in expected}


def test_transfers_follow_the_region_a_person_lived_in_when_paid(built):
    home, _, data = built
    mover = 1000 + data.MOVER
    versions = query(home, "select region_code, valid_from, valid_to, is_current from detail.dim_beneficiaries "
                           "where person_key = ? order by valid_from", [mover])
    assert versions == [("06", date(1900, 1, 1), date(2025, 2, 1), False), ("07", date(2025, 2, 1), None, True)]
    # the mover is the only person paid 450 MAD: find their cell in each month
    rows = query(home, "select payment_month, region_code from marts.mart_transfers_monthly "
                       "where mean_payment_mad = 450 order by 1")
    assert rows == [("2025-01", "06"), ("2025-02", "07")]


def test_programme_costs_per_person_paid_else_unit_cost_never_budget_over_people_seen(built):
    home, _, data = built
    rows = {r[0]: r[1:] for r in query(home, "select programme_code, transfers_paid_mad, beneficiaries_reached, "
                                             "people_paid, cost_basis, cost_per_beneficiary_mad "
                                             "from marts.mart_programme_costs")}
    payments = [p for m in ("2025-01", "2025-02") for p in data.payments(m, corrected=(m == "2025-01"))]
    paid, people = sum(p["amount_mad"] for p in payments), len({p["person_key"] for p in payments})
    assert rows["SP-01"] == (paid, len(data.SP01), people, "transfers_paid_per_person_paid",
                             (paid / people).quantize(Decimal("0.01")))
    # no payments and no unit cost: a budget of the programme's life over 2 people seen is no cost per person
    assert rows["SP-02"] == (0, 2, 0, None, None)
    assert rows["IF-01"][1:] == (len(data.LOANS), 0, None, None)
    assert rows["INC-01"][1] == len(data.VENTURES)
    assert rows["EPS-01"] == (0, 0, 0, None, None)


def test_programme_cost_without_payments_is_its_unit_cost(tmp_path):
    home = tmp_path / "home"
    raw, data = make_home(home, ["2025-01"])
    with duckdb.connect(str(home / "store" / "ingest.duckdb")) as con:
        con.execute("update raw.programmes set unit_cost_mad = 1200 where programme_code = 'SP-02'")
    run_dbt(home, "build")
    assert query(home, "select cost_basis, cost_per_beneficiary_mad from marts.mart_programme_costs "
                       "where programme_code = 'SP-02'") == [("unit_cost", Decimal("1200.00"))]


@pytest.mark.parametrize("month", ["2024-10", "2024-11", "2024-12", "2025-01", "2025-02"])
def test_portfolio_par30_matches_hand_made_loans(built, month):
    home, _, data = built
    loans = portfolio_at(data, _month_end(month))
    outstanding = sum(o for o, *_ in loans.values())
    at_risk = sum(o for o, dpd, *_ in loans.values() if dpd > 30)
    got = query(home, """
        select sum(loans_active), sum(outstanding_principal_mad), sum(par30_principal_mad), sum(loans_par30),
               sum(par30_principal_mad) / sum(outstanding_principal_mad),
               sum(amount_due_to_date_mad), sum(amount_collected_to_date_mad)
        from marts.mart_finance_portfolio_monthly where month = ?""", [month])[0]
    assert got[:4] == (len(loans), outstanding, at_risk, sum(dpd > 30 for _, dpd, *_ in loans.values()))
    assert float(got[4]) == pytest.approx(float(at_risk / outstanding))
    assert got[5:] == (sum(d for *_, d, _p in loans.values()), sum(p for *_, p in loans.values()))


def test_incubation_cohorts_count_survival_among_the_ventures_followed(built):
    home, _, _ = built
    rows = query(home, """
        select cohort, sum(ventures), sum(ventures_followed_12m), sum(ventures_active_12m),
               sum(ventures_followed_24m), sum(ventures_active_24m), sum(jobs_created), sum(revenue_mad),
               max(survival_rate_12m), max(survival_rate_24m)
        from marts.mart_incubation_cohorts where programme_code = 'INC-01' group by cohort order by cohort""")
    assert rows == [
        ("2023-A", 2, 2, 2, 2, 1, 6, Decimal("160000.00"), 1.0, 1.0),  # V1 and V2, in two regions
        ("2023-B", 1, 1, 0, 1, 0, 0, None, 0.0, 0.0),
        ("2024-A", 1, 0, 0, 0, 0, 1, Decimal("15000.00"), None, None),  # status `unknown`: not followed
        ("2024-B", 1, 0, 0, 0, 0, 0, None, None, None),
    ]


def test_jobs_per_venture_counts_only_the_ventures_whose_jobs_are_reported(built):
    """Jobs are reported at the 12- and 24-month follow-ups: a venture not followed up
    yet has no jobs figure, not zero jobs. Dividing by every venture made a cohort not
    followed yet show 0 jobs per venture, and a cohort half followed half its jobs."""
    home, _, data = built
    got = {(c, s): j for c, s, j in query(home, """
        select cohort, sex, jobs_per_venture from marts.mart_incubation_cohorts where programme_code = 'INC-01'""")}
    people = data.current_people("2025-02")
    reported = defaultdict(list)
    ventures = defaultdict(int)
    for venture in data.ventures():
        cell = (venture["cohort"], people[venture["person_key"]]["sex"])
        ventures[cell] += 1
        if venture["jobs_created"] is not None:
            reported[cell].append(venture["jobs_created"])
    assert set(got) == set(ventures) and all(n == 1 for n in ventures.values())
    # V5 (2024-B) is not followed up yet: no figure, not 0 jobs per venture
    assert got[("2024-B", "F")] is None
    assert {cell: j for cell, j in got.items() if j is not None} == {
        cell: pytest.approx(sum(jobs) / len(jobs)) for cell, jobs in reported.items()}


def test_portfolio_counts_partial_payments_as_arrears_and_write_offs_in_their_month(built):
    home, _, data = built
    # L5 paid 200 of its 440 MAD instalment due 1 January: 30 days past due at the end of
    # January (not yet PAR30), 58 days at the end of February (PAR30).
    assert portfolio_at(data, date(2025, 1, 31))["L5"][1] == 30
    assert query(home, "select days_past_due, is_par30 from detail.fct_loans where loan_id = 'L5'") == [(58, True)]
    rows = query(home, "select month, sum(loans_written_off), sum(written_off_mad) from marts.mart_finance_portfolio_monthly "
                       "group by 1 having sum(loans_written_off) > 0")
    assert rows == [("2025-01", 1, Decimal("4000.00"))]


def test_loan_opening_position_is_derived_from_its_first_delivered_instalment(built):
    home, _, _ = built
    # L6: instalments 1-3 (1,000 MAD of principal each) predate the first delivery
    assert query(home, "select opening_principal_repaid_mad, outstanding_principal_mad, loan_status, closed_date "
                       "from detail.fct_loans where loan_id = 'L6'") == [(Decimal("3000.00"), 0, "closed", date(2024, 12, 1))]


def test_occupancy_rate_and_works_phases(built):
    home, _, data = built
    for month in ("2024-11", "2024-12", "2025-01", "2025-02"):
        # each month's residents over the places of that month, not the current ones
        residents = sum(data.residents(month, eid) for eid in data.ESTABLISHMENTS)
        places = sum(data.capacity(month, eid) for eid in data.ESTABLISHMENTS)
        got = query(home, "select sum(residents), sum(capacity), sum(residents) * 1.0 / sum(capacity) "
                          "from marts.mart_establishment_occupancy_monthly where report_month = ?", [month])[0]
        assert got[:2] == (residents, places)
        assert float(got[2]) == pytest.approx(residents / places)
    assert places == 120 and query(home, "select sum(capacity) from marts.dim_establishments") == [(120,)]
    children = query(home, "select report_month, capacity, occupancy_rate from marts.mart_establishment_occupancy_monthly "
                           "where establishment_type = 'children' order by 1")
    assert children == [("2024-11", 50, pytest.approx(30 / 50)), ("2024-12", 50, pytest.approx(20 / 50)),
                        ("2025-01", 50, pytest.approx(25 / 50)), ("2025-02", 60, pytest.approx(45 / 60))]
    phases = query(home, "select report_month, works_phase, occupancy_rate from marts.mart_establishment_occupancy_monthly "
                         "where establishment_type = 'children' order by 1")
    assert [(m, p) for m, p, _ in phases] == [("2024-11", "before_works"), ("2024-12", "during_works"),
                                              ("2025-01", "during_works"), ("2025-02", "after_works")]
    works = {r[0]: r[1:] for r in query(home, "select establishment_id, occupancy_rate_before, occupancy_rate_after, "
                                              "months_before, months_after from detail.mart_establishment_works")}
    assert set(works) == {"EPS-0001", "EPS-0003"}
    # before the works over 50 places, after them over 60: the extension is no change of occupancy
    assert works["EPS-0001"] == (pytest.approx(30 / 50), pytest.approx(45 / 60), 1, 1)
    before = [data.residents(m, "EPS-0003") / 20 for m in ("2024-11", "2024-12", "2025-01")]
    assert works["EPS-0003"] == (pytest.approx(np.mean(before)), None, 3, 0)


def test_digital_services_percentiles_shares_and_backlog(built):
    home, _, data = built
    requests = data.requests()
    for month in ("2025-01", "2025-02"):
        start, end = _month_start(month), _month_end(month) + timedelta(days=1)
        closed = [(r["resolved_at"] - r["submitted_at"]).total_seconds() / 3600 for r in requests
                  if r["resolved_at"] is not None and start <= r["resolved_at"].date() < end]
        submitted = [r for r in requests if start <= r["submitted_at"].date() < end]
        backlog = [r for r in requests if r["submitted_at"].date() < end
                   and (r["resolved_at"] is None or r["resolved_at"].date() >= end)]
        got = query(home, "select requests_submitted, requests_closed, median_processing_hours, p90_processing_hours, "
                          "backlog_end_of_month from marts.mart_digital_services_monthly "
                          "where month = ? and region_code = 'all' and channel = 'all'", [month])
        assert got == [(len(submitted), len(closed), pytest.approx(np.median(closed)),
                        pytest.approx(np.quantile(closed, 0.9)), len(backlog))]
        shares = dict(query(home, "select channel, share_of_requests from marts.mart_digital_services_monthly "
                                  "where month = ? and region_code = 'all' and channel <> 'all'", [month]))
        for channel in ("web", "mobile", "counter"):
            n = sum(r["channel"] == channel for r in submitted)
            assert shares.get(channel, 0) == pytest.approx(n / len(submitted))


def test_evaluation_panel_is_units_by_rounds_by_variables(built):
    home, _, data = built
    cols = [r[0] for r in query(home, "select column_name from information_schema.columns where table_schema = 'detail' "
                                      "and table_name = 'mart_evaluation_panel' order by ordinal_position")]
    assert cols == ["study_id", "programme_code", "unit_id", "unit_type", "person_key", "treatment_group", "is_treated",
                    "cluster_id", "sex", "age", "age_band", "region_code", "vulnerability_score",
                    "vulnerability_tercile", "round_index", "round_label", "variable", "value"]
    rows = query(home, "select unit_id, round_index, round_label, variable, value, is_treated, cluster_id, "
                       "vulnerability_tercile, age_band from detail.mart_evaluation_panel")
    assert len(rows) == len(data.UNITS) * 2 * 2
    measured = {(m["unit_id"], m["round_index"], m["variable"]): m["value"] for m in data.survey_measurements()}
    cuts = terciles([u[5] for u in data.UNITS])
    units = {u[0]: u for u in data.UNITS}
    for unit, round_index, label, variable, value, treated, cluster, terc, band in rows:
        assert value == measured.get((unit, round_index, variable))
        assert label == ("baseline" if round_index == 0 else "endline")
        assert treated == (units[unit][1] == "treated")
        assert cluster == (units[unit][2] or unit)
        assert terc == tercile(units[unit][5], cuts)
        assert band == age_band(date(2000, 1, 1), date(2000 + units[unit][4], 1, 1))
    assert sum(r[4] is None for r in rows if r[0] == "U08") == 2  # attrition: endline rows kept, without values


INCREMENTAL_FACTS = {"fct_payments": "detail", "fct_establishment_occupancy": "detail",  # fact -> its schema
                     "fct_loan_instalments": "detail", "fct_service_requests": "detail"}


@pytest.fixture(scope="module")
def refreshed(built, tmp_path_factory):
    """A copy of the built warehouse refreshed after March arrives with a corrected
    February payments file; the facts as they were before and after the refresh."""
    source_home, source_raw, data = built
    home = tmp_path_factory.mktemp("refreshed") / "home"
    shutil.copytree(source_home, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    raw = RawLayer(home / "store" / "ingest.duckdb", deliveries=list(source_raw.deliveries))
    before = {fact: records(home, f"select * from {INCREMENTAL_FACTS[fact]}.{fact}") for fact in INCREMENTAL_FACTS}
    t = datetime(2025, 4, 1)
    raw.deliver("loans", "2025-03", data.loans("2025-03"), t)
    raw.deliver("payments", "2025-03", data.payments("2025-03"), t + timedelta(minutes=1))
    raw.deliver("payments", "2025-02", data.payments("2025-02", corrected=True), t + timedelta(minutes=2))
    raw.deliver("repayments", "2025-03", data.repayments("2025-03"), t + timedelta(minutes=3))
    raw.deliver("occupancy", "2025-03", data.occupancy("2025-03"), t + timedelta(minutes=4))
    raw.deliver("service_requests", "2025-03", data.requests_file("2025-03"), t + timedelta(minutes=5))
    # a corrected February registry extract without person 29 (registered in error)
    raw.deliver("beneficiaries", "2025-02", [p for p in data.registry("2025-02") if p["person_key"] != 1029],
                t + timedelta(minutes=6))
    # a corrected February requests file that no longer carries R11 (sent in error)
    raw.deliver("service_requests", "2025-02", [r for r in data.requests_file("2025-02") if r["request_id"] != "R11"],
                t + timedelta(minutes=6))
    run_dbt(home, "build")  # its reconciliation test checks raw == marts after the refresh too
    built_tables = {f"{schema}.{name}": records(home, f"select * from {schema}.{name}")
                    for schema, name in query(home, BUILT_TABLES)}
    after = {fact: built_tables[f"{schema}.{fact}"] for fact, schema in INCREMENTAL_FACTS.items()}
    return home, data, before, after, built_tables


# Every table dbt builds (marts and intermediate, whatever the marts' schema), not views.
BUILT_TABLES = ("select table_schema, table_name from information_schema.tables "
                "where table_type = 'BASE TABLE' and table_schema not in ('main', 'seeds', 'impact') "
                "and table_catalog = current_database() order by all")
LINEAGE = ("_dbt_invocation_id", "_dbt_refreshed_at")


def content(rows: list[dict]) -> list[dict]:
    """Rows without the lineage of the dbt run that wrote them, in a stable order."""
    return sorted(({k: v for k, v in r.items() if k not in LINEAGE} for r in rows),
                  key=lambda r: tuple(map(str, r.values())))


def pick(rows: list[dict], test) -> list[dict]:
    return sorted((r for r in rows if test(r)), key=lambda r: tuple(map(str, r.values())))


def test_incremental_refresh_keeps_history_and_adds_the_new_month(refreshed):
    _, data, before, after, _ = refreshed
    # payments: January untouched (same rows, written by the same dbt invocation), March added
    jan = lambda r: r["payment_month"] == "2025-01"  # noqa: E731
    assert pick(after["fct_payments"], jan) == pick(before["fct_payments"], jan) != []
    march = pick(after["fct_payments"], lambda r: r["payment_month"] == "2025-03")
    assert sorted(r["payment_id"] for r in march) == sorted(p["payment_id"] for p in data.payments("2025-03"))
    # occupancy: earlier months untouched, March added
    old = lambda r: r["report_month"] < "2025-03"  # noqa: E731
    assert pick(after["fct_establishment_occupancy"], old) == pick(before["fct_establishment_occupancy"], old) != []
    new = pick(after["fct_establishment_occupancy"], lambda r: r["report_month"] == "2025-03")
    assert [r["residents"] for r in new] == [data.residents("2025-03", e) for e in sorted(data.ESTABLISHMENTS)]
    # instalments: settled history untouched; March instalments added
    settled = lambda r: r["is_settled"] and r["due_month"] < "2025-03"  # noqa: E731
    assert pick(after["fct_loan_instalments"], settled) == pick(before["fct_loan_instalments"], settled) != []
    assert pick(after["fct_loan_instalments"], lambda r: r["due_month"] == "2025-03")
    # requests: those without news untouched; R13 (resolved in March) replaced
    quiet = lambda r: r["request_id"] in {"R01", "R02", "R03", "R04"}  # noqa: E731
    assert pick(after["fct_service_requests"], quiet) == pick(before["fct_service_requests"], quiet) != []
    (r13,) = pick(after["fct_service_requests"], lambda r: r["request_id"] == "R13")
    assert r13["request_status"] == "resolved" and r13["processing_hours"] == pytest.approx(120.0)


def test_incremental_refresh_replaces_a_corrected_month_as_a_whole(refreshed):
    _, data, before, after, _ = refreshed
    feb = pick(after["fct_payments"], lambda r: r["payment_month"] == "2025-02")
    corrected = data.payments("2025-02", corrected=True)
    assert sorted((r["payment_id"], r["amount_mad"]) for r in feb) == sorted((p["payment_id"], p["amount_mad"]) for p in corrected)
    old_runs = {r["_dbt_invocation_id"] for r in before["fct_payments"]}
    assert {r["_dbt_invocation_id"] for r in feb}.isdisjoint(old_runs)


def test_incremental_refresh_follows_corrections_that_drop_records(refreshed):
    _, _, before, after, _ = refreshed
    assert "R11" in {r["request_id"] for r in before["fct_service_requests"]}
    assert "R11" not in {r["request_id"] for r in after["fct_service_requests"]}
    # R10 and R12 now come from the corrected February file: same content, new delivery
    again = {r["request_id"]: r for r in after["fct_service_requests"] if r["request_id"] in {"R10", "R12"}}
    assert {r["_delivery_id"] for r in again.values()} == {"service_requests-2025-02-1"}


def test_a_row_released_into_a_built_delivery_reaches_its_incremental_fact(refreshed, tmp_path):
    """Ingestion loads a row held for a reference into its delivery once the reference
    arrives (ingestion.load.Ingestor._release), with the release's ``_loaded_at``: the next
    incremental build rebuilds that row's month, as a full rebuild would have it."""
    source_home, _, _, after, _ = refreshed
    home = tmp_path / "home"
    shutil.copytree(source_home, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    con = store.connect(home / "store" / "ingest.duckdb")
    con.execute("insert into raw.payments select * replace ('P-RELEASED' as payment_id, "
                "(select max(_source_row) + 1 from raw.payments where payment_month = '2025-01' and _is_current) "
                "as _source_row, timestamp '2025-04-02 08:00:00' as _loaded_at, 'released' as _run_id) "
                "from raw.payments where payment_month = '2025-01' and _is_current order by _source_row limit 1")
    con.execute("update meta.deliveries set rows_delivered = rows_delivered + 1, rows_loaded = rows_loaded + 1 "
                "where delivery_id = (select any_value(_delivery_id) from raw.payments where payment_id = 'P-RELEASED')")
    con.close()
    run_dbt(home, "build")
    january = lambda r: r["payment_month"] == "2025-01"  # noqa: E731
    rebuilt = pick(records(home, "select * from detail.fct_payments"), january)
    assert sorted(r["payment_id"] for r in rebuilt) == sorted(
        [r["payment_id"] for r in pick(after["fct_payments"], january)] + ["P-RELEASED"])


def test_beneficiary_history_drops_records_of_a_replaced_delivery(refreshed):
    home, data, _, _, _ = refreshed
    assert query(home, "select count(*) from detail.dim_beneficiaries where person_key = 1029") == [(0,)]
    assert query(home, "select region_code, is_current from detail.dim_beneficiaries where person_key = ? "
                       "order by valid_from", [1000 + data.MOVER]) == [("06", False), ("07", True)]


def test_a_relation_no_model_defines_any_more_is_dropped(tmp_path):
    """A model removed from the project (or moved to another schema) leaves no table behind
    for the publish step to copy; what the impact stage writes is not dbt's to drop."""
    home = tmp_path / "home"
    make_home(home, ["2025-01"])
    run_dbt(home, "build", "--select", "+dim_programmes", "--exclude-resource-type", "test")
    con = duckdb.connect(str(home / "warehouse" / "build.duckdb"))
    con.execute("create table marts.fct_withdrawn as select 1 as n")
    con.execute("create view staging.stg_renamed as select 1 as n")
    con.execute("create schema if not exists impact")
    con.execute("create table impact.impact_estimates as select 1 as n")
    con.close()
    done = run_dbt(home, "run", "--select", "dim_programmes")
    assert "Dropping" in done.stdout and "fct_withdrawn" in done.stdout
    left = {f"{s}.{t}" for s, t in query(home, "select schema_name, table_name from duckdb_tables() "
                                               "union all select schema_name, view_name from duckdb_views() "
                                               "where not internal")}
    assert not {"marts.fct_withdrawn", "staging.stg_renamed"} & left
    assert {"marts.dim_programmes", "staging.stg_msisf__programmes", "impact.impact_estimates"} <= left


def test_not_null_columns_counts_the_null_cells_of_every_column_that_has_some(tmp_path):
    """One test per model checks every column the model promises is never null; a failure
    says which columns, and how many cells."""
    home = tmp_path / "home"
    make_home(home, ["2025-01"])
    run_dbt(home, "build", "--select", "+dim_programmes", "--exclude-resource-type", "test")
    assert "PASS not_null_dim_programmes" in run_dbt(home, "test", "--select", "not_null_dim_programmes").stdout
    con = duckdb.connect(str(home / "warehouse" / "build.duckdb"))
    n = con.execute("select count(*) from marts.dim_programmes").fetchone()[0]
    con.execute("update marts.dim_programmes set programme_name = null")
    con.execute("update marts.dim_programmes set action_line = null "
                "where programme_code = (select min(programme_code) from marts.dim_programmes)")
    con.close()
    with pytest.raises(AssertionError, match=f"FAIL {n + 1} not_null_dim_programmes"):
        run_dbt(home, "test", "--select", "not_null_dim_programmes")
    compiled = next((home / "dbt_target" / "compiled").rglob("not_null_dim_programmes.sql")).read_text()
    assert sorted(query(home, compiled)) == [("action_line", 1), ("programme_name", n)]


def test_an_incremental_build_at_an_earlier_reference_date_equals_a_full_rebuild(refreshed, tmp_path):
    """Days past due depend on the reference date; pinned earlier (--vars), an instalment
    settled after it is overdue again, in an incremental build as in a full rebuild."""
    source, _, _, _, _ = refreshed
    home = tmp_path / "home"
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    pinned = ("--select", "fct_loan_instalments fct_loans", "--vars", "{reference_date: 2025-01-05}")
    run_dbt(home, "run", *pinned)
    incremental = {t: records(home, f"select * from detail.{t}") for t in ("fct_loan_instalments", "fct_loans")}
    assert query(home, "select count(*) from detail.fct_loan_instalments "
                       "where is_settled and paid_date > date '2025-01-05' and days_past_due > 0") != [(0,)]
    run_dbt(home, "run", "--full-refresh", *pinned)
    for table, rows in incremental.items():
        assert content(records(home, f"select * from detail.{table}")) == content(rows), table


def test_an_incremental_build_follows_a_loan_moved_to_another_programme(refreshed, tmp_path):
    """A corrected loans file that moves a loan to another programme reaches its settled
    instalments too, as in a full rebuild."""
    source, data, _, _, _ = refreshed
    home = tmp_path / "home"
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    with duckdb.connect(str(home / "store" / "ingest.duckdb"), read_only=True) as con:
        delivered = con.execute("select source, batch, delivery_id, loaded_at from meta.deliveries").fetchall()
    raw = RawLayer(home / "store" / "ingest.duckdb", deliveries=delivered)
    loans = [dict(r, programme_code="SP-02") if r["loan_id"] == "L1" else r for r in data.loans("2025-03")]
    raw.deliver("loans", "2025-03", loans, datetime(2025, 4, 2))
    run_dbt(home, "run", "--select", "fct_loan_instalments")
    assert query(home, "select distinct programme_code from detail.fct_loan_instalments where loan_id = 'L1'") == [("SP-02",)]
    incremental = records(home, "select * from detail.fct_loan_instalments")
    run_dbt(home, "run", "--full-refresh", "--select", "fct_loan_instalments")
    assert content(records(home, "select * from detail.fct_loan_instalments")) == content(incremental)


def test_full_refresh_rebuilds_the_same_tables_as_incremental_refreshes(refreshed):
    home, _, _, after, built_tables = refreshed
    assert {f"{schema}.{fact}" for fact, schema in INCREMENTAL_FACTS.items()} <= set(built_tables)
    assert len(built_tables) > 20
    log = home / "dbt_logs" / "dbt.log"
    start = log.stat().st_size if log.exists() else 0
    run_dbt(home, "run", "--full-refresh")
    with open(log, "rb") as fh:
        fh.seek(start)
        full_refresh_log = fh.read().decode("utf-8", errors="replace")
    # the statements are logged; the vanished-rows post-hook has nothing to do after a full refresh
    assert re.search(r'create\s+table\s+"build"\."detail"\."fct_payments', full_refresh_log)
    assert " not in (select " not in full_refresh_log, "delete_vanished ran after a full refresh"
    rebuilt = {f"{schema}.{name}": records(home, f"select * from {schema}.{name}") for schema, name in query(home, BUILT_TABLES)}
    assert set(rebuilt) == set(built_tables)
    for table, rows in built_tables.items():
        assert content(rebuilt[table]) == content(rows), f"{table}: the incremental refresh differs from a full rebuild"
    assert {r["_dbt_invocation_id"] for r in rebuilt["detail.fct_payments"]}.isdisjoint(
        {r["_dbt_invocation_id"] for r in after["fct_payments"]})


# --------------------------------------------------------------------------------------
# The generator's deliveries, through the real ingestion
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Three months of generated deliveries (no planted errors), ingested and built."""
    from ingestion.generate import generate
    from ingestion.load import Ingestor

    home = tmp_path_factory.mktemp("generated")
    (home / "warehouse").mkdir()
    truth_path = home / "truth.json"
    generate(home / "landing", beneficiaries=600, seed=5, months=3, dirty_rate=0.0, truth_path=truth_path)
    ingestor = Ingestor(home / "store" / "ingest.duckdb", CONTRACTS, b"test-key-for-the-warehouse-tests",
                        seeds_dir=DBT_PROJECT / "seeds", rejected_dir=home / "rejected", feedback_dir=home / "feedback")
    summary = ingestor.ingest(home / "landing")
    assert summary.totals["rows_quarantined"] == 0 and summary.totals["files_rejected"] == 0
    run_dbt(home, "build")
    return home, json.loads(truth_path.read_text())


def test_marts_match_the_generator_ground_truth(generated):
    home, truth = generated
    agg, monthly = truth["aggregates"], truth["monthly"]
    last = truth["parameters"]["last_month"]
    by_region_sex = query(home, "select region_code, sex, count(*) from detail.dim_beneficiaries where is_current group by all")
    assert {(r, s): n for r, s, n in by_region_sex} == {
        (r, s): n for r, sexes in agg["registered_people_by_region_sex"].items() for s, n in sexes.items()}
    transfers = query(home, "select payment_month, programme_code, sum(transfers_paid_mad), sum(payments_count) "
                            "from marts.mart_transfers_monthly group by all")
    assert {(m, p): float(a) for m, p, a, _ in transfers} == {
        (m, p): a for m, v in monthly.items() for p, a in v["payments"]["amount_mad_by_programme"].items()}
    paid_rows = defaultdict(int)
    for m, _, _, n in transfers:
        paid_rows[m] += n
    assert dict(paid_rows) == {m: v["payments"]["rows"] for m, v in monthly.items()}
    digital = query(home, "select month, channel, requests_submitted, backlog_end_of_month "
                          "from marts.mart_digital_services_monthly where region_code = 'all'")
    assert {(m, c): n for m, c, n, _ in digital if c != "all"} == {
        (m, c): n for m, v in monthly.items() for c, n in v["service_requests"]["by_channel"].items()}
    assert {m: b for m, c, _, b in digital if c == "all"} == {
        m: v["service_requests"]["open_at_month_end"] for m, v in monthly.items()}
    active = query(home, "select programme_code, count(*) from detail.fct_enrolments where is_active group by 1")
    assert dict(active) == agg["active_enrolments_by_programme"]
    assert query(home, "select sum(residents) from detail.fct_establishment_occupancy where report_month = ?",
                 [last]) == [(agg["residents_last_month"],)]
    assert query(home, "select count(*), count(*) filter (where works_status = 'completed') "
                       "from marts.dim_establishments") == [(agg["establishments"], agg["establishments_modernised_by_last_month"])]
    statuses = query(home, "select status_12m, count(*) from detail.fct_ventures where status_12m is not null group by 1")
    assert dict(statuses) == {k: v for k, v in agg["ventures_status_12m"].items() if v}
    # The portfolio, though the lender's first delivery lacks the instalments due before it
    # (paid on time; one paid late arrives in the month it is paid): the opening balance is
    # derived from each loan's first instalment due from that month on (its interest, rounded
    # to the centime, gives the balance within 0.005 / monthly rate: under 1 MAD a loan here).
    portfolio = agg["portfolio_last_month"]
    (active, outstanding, at_risk), = query(home, "select sum(loans_active), sum(outstanding_principal_mad), "
                                                  "sum(par30_principal_mad) from marts.mart_finance_portfolio_monthly "
                                                  "where month = ?", [last])
    assert active == portfolio["active_loans"]
    assert float(outstanding) == pytest.approx(portfolio["outstanding_principal_mad"], abs=active)
    assert float(at_risk) == pytest.approx(portfolio["par30_outstanding_mad"], abs=active)
    # No instalment is overpaid: what is collected on the amounts due never exceeds them.
    assert query(home, "select count(*) from detail.fct_loan_instalments where amount_paid_mad > amount_due_mad") == [(0,)]
    assert query(home, "select count(*) from marts.mart_finance_portfolio_monthly "
                       "where amount_collected_to_date_mad > amount_due_to_date_mad") == [(0,)]


def test_evaluation_panel_matches_the_generated_studies(generated):
    home, truth = generated
    for study, spec in truth["studies"].items():
        units = query(home, "select count(distinct unit_id), count(distinct unit_id) filter (where is_treated), "
                            "count(distinct cluster_id) from detail.mart_evaluation_panel where study_id = ?", [study])
        assert units[0][:2] == (spec["n_units"], spec["n_treated"])
        if spec["n_clusters"]:
            assert units[0][2] == spec["n_clusters"]
        missing = query(home, """
            select treatment_group, count(*) from (
                select unit_id, treatment_group from detail.mart_evaluation_panel
                where study_id = ? and round_index = ? group by all having count(value) = 0
            ) group by 1""", [study, spec["endline_round"]])
        assert dict(missing) == {g: n for g, n in spec["attrition_endline"].items() if n}


def test_household_scores_and_terciles_do_not_depend_on_the_order_rows_arrive_in(tmp_path):
    """A household's score is the mean of its members' scores. Doubles added in the order
    the rows arrive give sums whose last bits change from one build of the same delivery to
    the next (DuckDB adds partial sums in any order), and a household on a tercile cut point
    could then change tercile: the same members in any order give the same score and tercile."""
    home = tmp_path / "home"
    make_home(home, ["2025-01"])
    run_dbt(home, "compile", "--select", "dim_households")
    model = next((home / "dbt_target" / "compiled").rglob("dim_households.sql")).read_text()
    rng = np.random.default_rng(7)
    scores = [float(s) for s in rng.uniform(0, 100, 6)]
    households = [("h-many", s) for s in scores] + [("h-low", scores[1]), ("h-high", scores[4])]
    seen = set()
    for order in range(30):
        rows = [households[i] for i in rng.permutation(len(households))]
        con = duckdb.connect()
        con.execute("set threads = 1")  # arrival order = insertion order
        con.execute("attach ':memory:' as build")
        con.execute("create schema build.detail")
        con.execute("create table build.detail.dim_beneficiaries (is_current boolean, household_key varchar, "
                    "sex varchar, age_years integer, has_disability boolean, region_code varchar, "
                    "province_code varchar, commune_code varchar, area_type varchar, "
                    "socio_economic_score double, registered_date date)")
        con.executemany("insert into build.detail.dim_beneficiaries values "
                        "(true, ?, 'F', 30, false, '01', '011', '01101', 'urban', ?, date '2025-01-01')", rows)
        seen.add(tuple(con.execute(f"select household_key, socio_economic_score, vulnerability_tercile "
                                   f"from ({model}) order by household_key").fetchall()))
        con.close()
    assert len(seen) == 1, f"{len(seen)} different results for the same households in 30 orders"


def test_a_delivery_rejected_for_an_impossible_month_does_not_stop_the_build(tmp_path):
    """A file named for month 13 is rejected and logged with the batch it carried: the
    delivery log's mart reads that batch as no month instead of failing the build."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01"])
    con = duckdb.connect(str(raw.path))
    con.execute("insert into meta.deliveries select * replace ('payments-2025-13-0123456789ab' as delivery_id, "
                "'rejected' as status, '2025-13' as batch, 'paiements_2025-13.csv' as file_name, 0 as rows_loaded, "
                "0 as rows_quarantined, 'the month 2025-13 in the file name is not a calendar month' as reason) "
                "from meta.deliveries where source = 'payments' limit 1")
    con.close()
    run_dbt(home, "run", "--select", "+fct_deliveries")
    assert query(home, "select batch_month, delivery_status from marts.fct_deliveries "
                       "where delivery_id = 'payments-2025-13-0123456789ab'") == [(None, "rejected")]


def test_the_scorecard_three_month_mean_spans_calendar_months(tmp_path):
    """A partner's share quarantined over this month and the two before: months, not the
    previous rows of the scorecard (a month after a gap is not averaged with older ones)."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01"])
    con = duckdb.connect(str(raw.path))
    for month, delivered, quarantined in (("2025-02", 100, 50), ("2025-03", 100, 10), ("2025-07", 100, 0)):
        con.execute("insert into meta.deliveries select * replace (? as delivery_id, ? as batch, "
                    "'etablissements_' || ? || '.csv' as file_name, ? as rows_delivered, ? as rows_loaded, "
                    "? as rows_quarantined) from meta.deliveries where source = 'establishments' limit 1",
                    [f"establishments-{month}-0", month, month, delivered, delivered - quarantined, quarantined])
    con.close()
    run_dbt(home, "run", "--select", "+mart_quality_scorecard")
    means = dict(query(home, "select delivery_month, share_quarantined_3_month_mean from marts.mart_quality_scorecard "
                             "where partner = 'eps' and delivery_month >= '2025-02'"))
    assert means["2025-03"] == pytest.approx((0.0 + 0.5 + 0.1) / 3)  # January (make_home), February, March
    assert means["2025-07"] == pytest.approx(0.0)  # May and June had no delivery: not March's shares



def test_a_loan_never_repays_more_principal_than_it_lent(tmp_path):
    """Without interest delivered, the opening balance is k - 1 instalments of the first
    delivered one's principal, too much for a schedule whose principal grows: what is
    repaid stops at the principal (a dbt test on every build checks it)."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01"])
    with duckdb.connect(str(raw.path)) as con:
        con.execute("update raw.repayments set interest_due_mad = null, principal_due_mad = 2500 "
                    "where instalment_id = 'L6-04'")
    run_dbt(home, "build")  # assert_loan_principal_repaid_within_principal passes
    assert query(home, "select principal_mad, principal_repaid_mad, outstanding_principal_mad from detail.fct_loans "
                       "where loan_id = 'L6'") == [(Decimal("6000.00"), Decimal("6000.00"), 0)]


def test_a_payment_that_disagrees_with_its_enrolment_fails_the_build(tmp_path):
    """Each file passes its own rules, but a payment can disagree with its enrolment: to
    another person than the one enrolled (a broken reference: it reached the transfers and
    the programme costs, more people paid than reached), or for a month after the person left
    the programme (money paid all the same: leakage to follow up). The dbt test
    assert_payment_matches_its_enrolment (severity error) stops the build on the first;
    assert_payment_within_its_enrolment warns of the second."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01", "2025-02"])
    run_dbt(home, "build", "--select", "+assert_payment_matches_its_enrolment", "assert_payment_within_its_enrolment",
            "--indirect-selection", "cautious")  # consistent: passes
    with duckdb.connect(str(raw.path)) as con:
        # E010 exited on 2025-01-31; E000 is person 1000's enrolment
        con.execute("insert into raw.payments select * replace ('P2025-02-X10' as payment_id, 'E010' as enrolment_id, "
                    "1010 as person_key, 9001 as _source_row) from raw.payments where payment_id = 'P2025-02-000'")
        con.execute("insert into raw.payments select * replace ('P2025-02-X01' as payment_id, 1001 as person_key, "
                    "9002 as _source_row) from raw.payments where payment_id = 'P2025-02-000'")
    env = dict(os.environ, JISR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="False")
    env.pop("JISR_DBT_TARGET", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "--no-version-check", "build", "--full-refresh", "--select",
         "+assert_payment_matches_its_enrolment", "assert_payment_within_its_enrolment", "--indirect-selection", "cautious",
         "--project-dir", str(DBT_PROJECT), "--profiles-dir",
         str(DBT_PROJECT), "--target-path", str(home / "dbt_target"), "--log-path", str(home / "dbt_logs")],
        env=env, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout[-3000:]
    # the payment to another person blocks; the one after the exit is money paid: a warning
    assert re.search(r"FAIL 1 assert_payment_matches_its_enrolment", done.stdout), done.stdout[-3000:]
    assert re.search(r"WARN 1 assert_payment_within_its_enrolment", done.stdout), done.stdout[-3000:]
    def failing(test):
        compiled = home / "dbt_target" / "compiled" / "jisr" / "tests" / f"{test}.sql"
        return sorted(query(home, f"select payment_id, problem from ({compiled.read_text()})"))

    assert failing("assert_payment_matches_its_enrolment") == [
        ("P2025-02-X01", "paid to another person than the one enrolled")]
    assert failing("assert_payment_within_its_enrolment") == [("P2025-02-X10", "paid for a month after the exit")]


def test_an_occupancy_report_far_above_the_places_fails_the_build(tmp_path):
    """8900 residents reported in an establishment of 40 places passed the occupancy
    contract (residents >= 0) and reached the occupancy mart as a rate of 222; the dbt test
    assert_occupancy_within_capacity (severity error) now stops the build."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01", "2025-02"])
    select = ["--select", "+assert_occupancy_within_capacity", "--indirect-selection", "cautious"]
    run_dbt(home, "build", *select)  # every report within its places: passes
    with duckdb.connect(str(raw.path)) as con:
        con.execute("update raw.occupancy set residents = 8900 where _is_current and establishment_id = 'EPS-0002' "
                    "and month = '2025-02'")
    with pytest.raises(AssertionError, match=r"FAIL 1 assert_occupancy_within_capacity"):
        run_dbt(home, "build", "--full-refresh", *select)
    # the refresh's error and quality report name the row it failed on, and its file
    from quality.checks import dbt_build_results

    results = dbt_build_results(home / "dbt_target" / "run_results.json", warehouse=home / "warehouse" / "build.duckdb",
                                store=raw.path)
    [failed] = [r for r in results if r.check == "dbt test assert_occupancy_within_capacity"]
    assert failed.blocks and [(r["establishment_id"], r["report_month"], r["residents"]) for r in failed.metadata["rows"]] \
        == [("EPS-0002", "2025-02", 8900)]
    with duckdb.connect(str(raw.path), read_only=True) as con:
        file_name = con.execute("select file_name from meta.deliveries where delivery_id = ?",
                                [failed.metadata["rows"][0]["_delivery_id"]]).fetchone()[0]
    assert failed.metadata["rows"][0]["_file_name"] == file_name
    assert "the row it failed on: establishment_id=EPS-0002, report_month=2025-02" in failed.description
    assert "residents=8900, capacity=" in failed.description and f"_file_name={file_name}" in failed.description


def test_loaded_rows_a_new_contract_rule_sets_aside_leave_the_incremental_facts(tmp_path):
    """A payment loaded before its contract gained the rule it fails is moved to quarantine
    by the next ingestion pass (ingestion.load.Ingestor._recheck); the next build drops it
    from fct_payments (incremental by month: the month's rows left are loaded anew) and the
    totals still reconcile with the raw layer."""
    import dataclasses

    from ingestion.contracts import Rule
    from ingestion.generate import generate
    from ingestion.load import Ingestor

    home = tmp_path / "home"
    (home / "warehouse").mkdir(parents=True)
    generate(home / "landing", beneficiaries=300, seed=7, months=2, dirty_rate=0.0)

    def ingest(contracts):
        return Ingestor(home / "store" / "ingest.duckdb", contracts, b"test-key-for-the-warehouse-tests",
                        seeds_dir=DBT_PROJECT / "seeds", rejected_dir=home / "rejected",
                        feedback_dir=home / "feedback").ingest(home / "landing")

    ingest(CONTRACTS)
    run_dbt(home, "build", "--select", "+fct_payments", "--indirect-selection", "cautious")
    with duckdb.connect(str(home / "store" / "ingest.duckdb"), read_only=True) as con:
        month, payment_id, amount = con.execute(
            "select payment_month, payment_id, amount_mad from raw.payments where _is_current "
            "order by amount_mad desc, payment_id limit 1").fetchone()
    changed = dict(CONTRACTS)
    changed["payments"] = dataclasses.replace(CONTRACTS["payments"], version="v2", rules=CONTRACTS["payments"].rules + (
        Rule("below_the_largest", f"amount_mad < {amount}"),))
    assert ingest(changed).totals["rows_set_aside"] >= 1
    run_dbt(home, "build", "--select", "+fct_payments", "--indirect-selection", "cautious")
    assert query(home, "select count(*) from detail.fct_payments where payment_id = ?", [payment_id]) == [(0,)]
    with duckdb.connect(str(home / "store" / "ingest.duckdb"), read_only=True) as con:
        raw = con.execute("select payment_month, count(*), sum(amount_mad) from raw.payments where _is_current "
                          "group by 1 order by 1").fetchall()
    assert query(home, "select payment_month, count(*), sum(amount_mad) from detail.fct_payments group by 1 "
                       "order by 1") == raw and month in {m for m, _, _ in raw}


def test_a_date_centuries_early_fails_the_build_rather_than_empty_the_monthly_marts(tmp_path):
    """The calendar starts at the earliest date delivered and holds at most 100,000 days: a
    payment dated in year 205 (a contract without a lower bound let it through) left 2025
    out of it, and the monthly marts built empty with every test passing. The dbt test
    assert_calendar_covers_the_reference_year (severity error) stops the build."""
    home = tmp_path / "home"
    raw, _ = make_home(home, ["2025-01"])
    select = ["--select", "+assert_calendar_covers_the_reference_year", "--indirect-selection", "cautious"]
    run_dbt(home, "build", *select)  # dates of 2025: passes
    with duckdb.connect(str(raw.path)) as con:
        con.execute("update raw.payments set paid_date = date '0205-01-05' where payment_id = 'P2025-01-000'")
    with pytest.raises(AssertionError, match=r"FAIL 1 assert_calendar_covers_the_reference_year"):
        run_dbt(home, "build", "--full-refresh", *select)
