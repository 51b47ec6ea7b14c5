"""Dirty rows: each one breaks exactly one row rule of its contract.

Two ways of planting, chosen per source so that a dirty row never makes another row fail:

* ``insert`` (most sources): the dirty row is an *extra* record, a copy of a random clean
  row of the chunk given a fresh key that nothing references, then altered to break one
  rule. The clean rows are therefore exactly the rows of the same run with
  ``dirty_rate=0``, and all referential chains stay intact.
* ``replace`` (occupancy, whose key is (establishment, month) and has no free key): the
  altered row replaces the clean row; nothing references occupancy rows.

``duplicate_key`` plants two rows with the same key (both are recorded, as ingestion
quarantines every row sharing a duplicated key).

Each rule below was checked against ingestion's rule semantics: required = empty text,
type = non-empty text that does not parse, contract ``rules`` pass when they evaluate to
NULL, and every failing rule of a row is reported, so a dirty row must fail only one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ingestion.generate.writers import python_value


class Ctx:
    def __init__(self, contract, rng, month_index: int, month_str: str, prev_month_str: str, geo):
        self.contract = contract
        self.rng = rng
        self.m = month_index
        self.month = month_str
        self.prev_month = prev_month_str
        self.geo = geo
        self.counter = 0

    def v(self, chunk, col: str, b: int):
        return python_value(self.contract.column(col), chunk[col][b])

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def unknown_cin(self) -> str:
        return f"ZY{int(self.rng.integers(1_000_000)):06d}"

    def other_region_province(self, region: str) -> str:
        g = self.geo
        cands = np.nonzero(g.region_code != region)[0]
        return g.province_code[cands[int(self.rng.integers(len(cands)))]]

    def days(self, lo: int, hi: int) -> dt.timedelta:
        return dt.timedelta(days=int(self.rng.integers(lo, hi + 1)))


def _fresh_key(source: str, c: Ctx) -> str:
    n = c.next()
    m = c.m
    return {
        "beneficiaries": lambda: f"ZZ{(m * 100_003 + n) % 1_000_000:06d}",
        "enrolments": lambda: f"INS-X{m:03d}{n:06d}",
        "payments": lambda: f"PAY-X{m:03d}{n:07d}",
        "loans": lambda: f"LN-X{m:03d}{n:06d}",
        "repayments": lambda: f"LN-X{m:03d}{n:06d}-01",
        "service_requests": lambda: f"REQ-X{m:03d}{n:07d}",
        "ventures": lambda: f"VEN-X{m:03d}{n:05d}",
        "establishments": lambda: f"EPS-{9000 + (m * 37 + n) % 1000:04d}",
    }[source]()


# --- per-source catalogues: rule -> function(ctx, chunk, b) -> overrides -----------------

def _bad_date_text(d: dt.date | None, fmt: str) -> str:
    year = d.year if d else 2025
    text = dt.date(year, 2, 1).strftime(fmt)
    return text.replace("01", "31", 1) if fmt.startswith("%d") else text.replace("-01", "-31", 1).replace("-02-", "-02-", 1)


def _registry(c: Ctx):
    def region13(ch, b):
        p, cm = c.v(ch, "province_code", b), c.v(ch, "commune_code", b)
        return {"region_code": "13", "province_code": "13" + p[2:], "commune_code": "13" + cm[2:]}

    def prov_other(ch, b):
        p = c.other_region_province(c.v(ch, "region_code", b))
        return {"province_code": p, "commune_code": p + "001"}

    return {
        "pattern:cin": lambda ch, b: {"cin": f"ZZZ{c.next():05d}"},
        "required:sex": lambda ch, b: {"sex": None},
        "allowed:sex": lambda ch, b: {"sex": "H"},
        "type:birth_date": lambda ch, b: {"birth_date": _bad_date_text(c.v(ch, "birth_date", b), c.contract.date_format)},
        "min:socio_economic_score": lambda ch, b: {"socio_economic_score": -float(c.rng.integers(1, 40)) / 4},
        "max:socio_economic_score": lambda ch, b: {"socio_economic_score": 100.0 + float(c.rng.integers(1, 40)) / 4},
        "allowed:region_code": region13,
        "pattern:phone": lambda ch, b: {"phone": f"06{int(c.rng.integers(10_000, 99_999))}"},
        "rule:born_before_registration": lambda ch, b: {"birth_date": c.v(ch, "registered_date", b) + c.days(1, 400)},
        "rule:province_in_region": prov_other,
    }


def _enrolments(c: Ctx):
    no_exit = {"exit_date": None, "exit_reason": None}
    return {
        "references:cin": lambda ch, b: {"cin": c.unknown_cin()},
        "references:programme_code": lambda ch, b: {"programme_code": "PRG-99"},
        "type:entry_date": lambda ch, b: {**no_exit, "entry_date": _bad_date_text(c.v(ch, "entry_date", b), c.contract.date_format)},
        "required:entry_date": lambda ch, b: {**no_exit, "entry_date": None},
        "rule:exit_not_before_entry": lambda ch, b: {"exit_date": c.v(ch, "entry_date", b) - c.days(1, 90), "exit_reason": "dropped_out"},
        "rule:exit_reason_with_exit": lambda ch, b: {"exit_date": c.v(ch, "entry_date", b) + c.days(1, 90), "exit_reason": None},
        "allowed:exit_reason": lambda ch, b: {"exit_date": c.v(ch, "entry_date", b) + c.days(1, 90), "exit_reason": "abandon"},
    }


def _payments(c: Ctx):
    return {
        "references:enrolment_id": lambda ch, b: {"enrolment_id": f"INS-Y{c.next():08d}"},
        "references:programme_code": lambda ch, b: {"programme_code": "PRG-99"},
        "pattern:cin": lambda ch, b: {"cin": c.v(ch, "cin", b) + "99"},
        "min:amount_mad": lambda ch, b: {"amount_mad": -c.v(ch, "amount_mad", b)},
        "required:amount_mad": lambda ch, b: {"amount_mad": None},
        "type:paid_date": lambda ch, b: {"paid_date": _bad_date_text(c.v(ch, "paid_date", b), c.contract.date_format)},
        "allowed:channel": lambda ch, b: {"channel": "cheque"},
        "rule:month_matches_file": lambda ch, b: {"payment_month": c.prev_month},
    }


def _loans(c: Ctx):
    active = {"status": "active", "written_off_date": None, "written_off_mad": None}
    return {
        "references:borrower_cin": lambda ch, b: {**active, "borrower_cin": c.unknown_cin()},
        "references:programme_code": lambda ch, b: {**active, "programme_code": "PRG-99"},
        "allowed:product": lambda ch, b: {**active, "product": "consumer_credit"},
        "min:principal_mad": lambda ch, b: {**active, "principal_mad": float(c.rng.integers(1, 9) * 50)},
        "max:principal_mad": lambda ch, b: {**active, "principal_mad": float(c.rng.integers(6, 20) * 100_000)},
        "max:term_months": lambda ch, b: {**active, "term_months": int(c.rng.integers(121, 240))},
        "type:disbursement_date": lambda ch, b: {**active, "disbursement_date": _bad_date_text(c.v(ch, "disbursement_date", b), c.contract.date_format)},
        "rule:write_off_consistent": lambda ch, b: {"status": "written_off", "written_off_date": None, "written_off_mad": None},
        "rule:write_off_after_disbursement": lambda ch, b: {
            "status": "written_off", "written_off_date": c.v(ch, "disbursement_date", b) - c.days(5, 60),
            "written_off_mad": c.v(ch, "principal_mad", b)},
    }


def _repayments(c: Ctx):
    return {
        "references:loan_id": lambda ch, b: {"loan_id": f"LN-Y{c.next():07d}"},
        "rule:paid_amount_with_date": lambda ch, b: {"paid_date": c.v(ch, "due_date", b), "amount_paid_mad": 0.0},
        "min:principal_due_mad": lambda ch, b: {"principal_due_mad": -abs(c.v(ch, "principal_due_mad", b) or 100.0)},
        "min:instalment_number": lambda ch, b: {"instalment_number": 0},
        "type:due_date": lambda ch, b: {"due_date": _bad_date_text(c.v(ch, "due_date", b), c.contract.date_format)},
        "type:amount_paid_mad": lambda ch, b: {"paid_date": None, "amount_paid_mad": "n/a"},
    }


def _requests(c: Ctx):
    def backwards(ch, b):
        sub = c.v(ch, "submitted_at", b)
        return {"status": "resolved", "resolved_at": sub - dt.timedelta(hours=int(c.rng.integers(1, 72)))}

    return {
        "pattern:applicant_cin": lambda ch, b: {"applicant_cin": f"{int(c.rng.integers(10_000, 99_999))}AB"},
        "allowed:service_type": lambda ch, b: {"service_type": "passport"},
        "allowed:channel": lambda ch, b: {"channel": "email"},
        "allowed:region_code": lambda ch, b: {"region_code": "13"},
        "rule:resolved_after_submitted": backwards,
        "rule:resolution_status": lambda ch, b: {"status": "submitted", "resolved_at": c.v(ch, "submitted_at", b) + c.days(1, 5)},
        "type:submitted_at": lambda ch, b: {"submitted_at": "2025-02-30T10:00:00Z", "resolved_at": None, "status": "submitted"},
    }


def _ventures(c: Ctx):
    return {
        "references:promoter_cin": lambda ch, b: {"promoter_cin": c.unknown_cin()},
        "references:programme_code": lambda ch, b: {"programme_code": "PRG-99"},
        "allowed:legal_form": lambda ch, b: {"legal_form": "gie"},
        "allowed:sector": lambda ch, b: {"sector": "mining"},
        "pattern:cohort": lambda ch, b: {"cohort": c.v(ch, "cohort", b)[:5] + "C"},
        "allowed:region_code": lambda ch, b: {"region_code": "13"},
        "rule:end_not_before_start": lambda ch, b: {"incubation_end_date": c.v(ch, "incubation_start_date", b) - c.days(1, 60)},
        "min:jobs_created": lambda ch, b: {"jobs_created": -int(c.rng.integers(1, 4))},
        "type:incubation_start_date": lambda ch, b: {"incubation_start_date": "31/02/2024", "incubation_end_date": None},
    }


def _establishments(c: Ctx):
    def prov_other(ch, b):
        p = c.other_region_province(c.v(ch, "region_code", b))
        return {"province_code": p, "commune_code": p + "001"}

    def bad_works(ch, b):
        start = dt.date(2024, 1, 1) + c.days(0, 600)
        return {"works_start_date": start, "works_end_date": start - c.days(1, 90)}

    return {
        "allowed:establishment_type": lambda ch, b: {"establishment_type": "orphanage"},
        "pattern:establishment_id": lambda ch, b: {"establishment_id": f"EPS-{10_000 + c.next():05d}"},
        "max:capacity": lambda ch, b: {"capacity": int(c.rng.integers(5001, 9000))},
        "min:capacity": lambda ch, b: {"capacity": 0},
        "rule:province_in_region": prov_other,
        "rule:works_end_after_start": bad_works,
        "references:programme_code": lambda ch, b: {"programme_code": "PRG-99"},
    }


def _occupancy(c: Ctx):
    return {
        "min:residents": lambda ch, b: {"residents": -int(c.rng.integers(1, 10))},
        "min:admissions": lambda ch, b: {"admissions": -int(c.rng.integers(1, 5))},
        "max:inspection_score": lambda ch, b: {"inspection_score": 100.0 + float(c.rng.integers(5, 60))},
        "rule:month_matches_file": lambda ch, b: {"month": c.prev_month},
        "type:residents": lambda ch, b: {"residents": "douze"},
        "required:residents": lambda ch, b: {"residents": None},
    }


CATALOGUES = {
    "beneficiaries": (_registry, "insert"),
    "enrolments": (_enrolments, "insert"),
    "payments": (_payments, "insert"),
    "loans": (_loans, "insert"),
    "repayments": (_repayments, "insert"),
    "service_requests": (_requests, "insert"),
    "ventures": (_ventures, "insert"),
    "establishments": (_establishments, "insert"),
    "occupancy": (_occupancy, "replace"),
}
NEVER_DIRTY = {"programmes", "survey_units", "survey_measurements"}


def rules_for(source: str) -> list[str]:
    """Rule names a source's dirty rows may be recorded under (for docs and tests)."""
    factory, _ = CATALOGUES[source]
    return sorted(factory(Ctx(None, None, 0, "", "", None))) + ["duplicate_key"]


class DirtyPlanter:
    """Plants dirty rows into the chunks of one file and records them."""

    def __init__(self, source: str, contract, rate: float, rng: np.random.Generator, *, month_index: int,
                 month_str: str, prev_month_str: str, geo, file_label: str, records: list):
        factory, self.mode = CATALOGUES[source]
        self.source = source
        self.rate = rate
        self.rng = rng
        self.ctx = Ctx(contract, rng, month_index, month_str, prev_month_str, geo)
        self.kinds = factory(self.ctx)
        self.rule_names = sorted(self.kinds) + ["duplicate_key"]
        self.key = contract.primary_key[0]
        self.file_label = file_label
        self.records = records

    def plant(self, writer, chunk: dict, rows: list) -> list:
        n = len(rows)
        k = int(self.rng.binomial(n, self.rate)) if self.rate > 0 else 0
        if k == 0:
            return rows
        inserts: list[tuple[int, object, str]] = []  # (position before clean row, row, rule)
        replaced: dict[int, str] = {}
        for _ in range(k):
            rule = self.rule_names[int(self.rng.integers(len(self.rule_names)))]
            b = int(self.rng.integers(n))
            if self.mode == "replace":
                if b in replaced:
                    continue
                if rule == "duplicate_key":
                    replaced[b] = rule
                    inserts.append((b + 1, rows[b], rule))
                else:
                    rows[b] = writer.render_row(chunk, b, self.kinds[rule](chunk, b))
                    replaced[b] = rule
                continue
            pos = int(self.rng.integers(n + 1))
            if rule == "duplicate_key":
                row = writer.render_row(chunk, b, {self.key: _fresh_key(self.source, self.ctx)})
                inserts.append((pos, row, rule))
                inserts.append((pos, row, rule))
            else:
                overrides = self.kinds[rule](chunk, b)
                if self.key not in overrides:
                    overrides[self.key] = _fresh_key(self.source, self.ctx)
                inserts.append((pos, writer.render_row(chunk, b, overrides), rule))
        inserts.sort(key=lambda t: t[0])  # stable: pairs stay adjacent
        out: list = []
        prev = 0
        offset = writer.rows
        positions = np.array([p for p, _, _ in inserts], dtype=np.int64)
        for pos, row, rule in inserts:
            out.extend(rows[prev:pos])
            prev = pos
            out.append(row)
            self.records.append({"file": self.file_label, "source": self.source, "row": offset + len(out), "rule": rule})
        out.extend(rows[prev:])
        for b, rule in replaced.items():
            new_index = b + int(np.searchsorted(positions, b, side="right"))
            self.records.append({"file": self.file_label, "source": self.source, "row": offset + new_index + 1, "rule": rule})
        return out
