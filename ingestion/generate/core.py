"""``generate()``: write a landing area of partner deliveries and its ground truth."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingestion.contracts import Contract, load_contracts
from ingestion.generate import catalogue, surveys
from ingestion.generate.dirty import NEVER_DIRTY, DirtyPlanter
from ingestion.generate.geo import load_geo
from ingestion.generate.rand import rng_for
from ingestion.generate.world import CHUNK, NULL_INT, World, month
from ingestion.generate.writers import FileWriter, day

REPO = Path(__file__).resolve().parents[2]
TRUTH_VERSION = 1


@dataclass
class GenerationSummary:
    landing_dir: Path
    files: dict[str, int] = field(default_factory=dict)  # "<partner>/<file>" -> data rows
    bytes: dict[str, int] = field(default_factory=dict)
    dirty_rows: int = 0
    seconds: float = 0.0
    truth_path: Path | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.files.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def describe(self) -> str:
        """A short table of rows and bytes per source file family."""
        import re

        fam: dict[str, list[int]] = {}
        for label, rows in self.files.items():
            key = re.sub(r"_?\d{4}-\d{2}", "_*", label)
            acc = fam.setdefault(key, [0, 0, 0])
            acc[0] += 1
            acc[1] += rows
            acc[2] += self.bytes.get(label, 0)
        lines = [f"{'files':40s} {'n':>4s} {'rows':>11s} {'MB':>8s}"]
        lines += [f"{k:40s} {n:4d} {r:11,d} {b / 1e6:8.1f}" for k, (n, r, b) in sorted(fam.items())]
        return "\n".join(lines + [str(self)])

    def __str__(self) -> str:
        return (f"{len(self.files)} files, {self.total_rows:,} rows ({self.dirty_rows:,} dirty), "
                f"{self.total_bytes / 1e6:.1f} MB in {self.seconds:.1f} s -> {self.landing_dir}")


def _file_name(contract: Contract, batch: str) -> str:
    """The file name for a batch, derived from the contract's file_pattern."""
    import re

    name = re.sub(r"\(\?P<batch>[^)]*\)", batch, contract.file_pattern)
    name = name.replace("\\.", ".")
    if not contract.matches(name):
        raise ValueError(f"cannot derive a file name for {contract.source} batch {batch!r} from {contract.file_pattern!r}")
    return name


def _encodable(values, encoding: str) -> bool:
    try:
        for v in values:
            if v is not None:
                str(v).encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


class _Run:
    def __init__(self, landing: Path, contracts: dict[str, Contract], geo, *, seed: int, population: int,
                 dirty_rate: float, summary: GenerationSummary):
        self.landing = landing
        self.contracts = contracts
        self.geo = geo
        self.seed = seed
        self.N = population
        self.dirty_rate = dirty_rate
        self.summary = summary
        self.dirty_records: list[dict] = []
        self.blanked: set[str] = set()

    def writer(self, source: str, batch: str, mo=None, prev_label: str = "") -> FileWriter:
        c = self.contracts[source]
        name = _file_name(c, batch)
        label = f"{c.partner}/{name}"
        planter = None
        if self.dirty_rate > 0 and source not in NEVER_DIRTY:
            rng = rng_for(self.seed, self.N, "dirty:" + source, mo.index if mo else 0)
            planter = DirtyPlanter(source, c, self.dirty_rate, rng, month_index=mo.index if mo else 0,
                                   month_str=mo.label if mo else batch, prev_month_str=prev_label, geo=self.geo,
                                   file_label=label, records=self.dirty_records)
        decimals = {"value": 3} if source == "survey_measurements" else None
        w = FileWriter(self.landing / c.partner / name, c, batch=batch, dirty=planter, decimals=decimals)
        w.label = label
        return w

    def blank_unencodable(self, source: str, chunk: dict) -> dict:
        """Columns a file's encoding cannot represent (Arabic in windows-1252) are left empty."""
        c = self.contracts[source]
        if c.format != "csv" or c.encoding != "windows-1252":
            return chunk
        for col in c.columns:
            if col.type == "varchar" and col.name.endswith("_ar"):
                sample = chunk[col.name][:50]
                if not _encodable(sample, "cp1252"):
                    chunk[col.name] = np.full(len(chunk[col.name]), None, dtype=object)
                    self.blanked.add(f"{source}.{col.name}")
        return chunk

    def write(self, source: str, batch: str, chunks, mo=None, prev_label: str = "") -> None:
        w = self.writer(source, batch, mo, prev_label)
        for chunk in chunks:
            w.write(self.blank_unencodable(source, chunk))
        size = w.close()
        if w.rows == 0:  # nothing happened this month: a partner sends no file
            w.path.unlink()
            return
        self.summary.files[w.label] = w.rows
        self.summary.bytes[w.label] = size


def _chunked(idx: np.ndarray, fn, size: int = CHUNK):
    for start in range(0, len(idx), size):
        yield fn(idx[start: start + size])


def _programmes_chunk() -> dict:
    P = catalogue.PROGRAMMES
    o = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    return {
        "programme_code": o([p.code for p in P]),
        "name_fr": o([p.name_fr for p in P]),
        "name_ar": o([p.name_ar for p in P]),
        "action_line": o([p.action_line for p in P]),
        "start_date": np.array([day(p.start) for p in P], dtype=np.int64),
        "end_date": np.array([day(p.end) if p.end else NULL_INT for p in P], dtype=np.int64),
        "budget_mad": np.array([p.budget_mad for p in P], dtype=float),
        "eligibility_score_max": np.array([np.nan if p.eligibility_score_max is None else p.eligibility_score_max for p in P]),
        "unit_cost_mad": np.array([np.nan if p.unit_cost_mad is None else p.unit_cost_mad for p in P]),
    }


def generate(landing_dir: Path, *, beneficiaries: int = 5000, seed: int = 42, months: int = 12,
             start_month: str = "2025-01", dirty_rate: float = 0.002, truth_path: Path | None = None,
             contracts_dir: Path = REPO / "contracts", seeds_dir: Path = REPO / "dbt_project" / "seeds",
             progress: bool = False) -> GenerationSummary:
    """Write ``months`` monthly deliveries of every contract source into ``landing_dir``.

    See the package docstring for what is generated and the ground-truth format.
    """
    t0 = time.perf_counter()
    if beneficiaries < 100:
        raise ValueError("beneficiaries must be at least 100")
    if months < 1:
        raise ValueError("months must be at least 1")
    if not 0 <= dirty_rate < 0.5:
        raise ValueError("dirty_rate must be in [0, 0.5)")
    landing = Path(landing_dir)
    contracts = load_contracts(Path(contracts_dir))
    geo = load_geo(Path(seeds_dir))
    summary = GenerationSummary(landing_dir=landing)
    run = _Run(landing, contracts, geo, seed=seed, population=beneficiaries, dirty_rate=dirty_rate, summary=summary)
    world = World(geo, population=beneficiaries, seed=seed, start_month=start_month)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=months + 1, desc="jisr generate", unit="month")

    truth: dict = {"monthly": {}, "studies": {}}
    mo1 = month(start_month, 1)
    # Catalogue (never dirty) and surveys: independent of the number of months.
    run.write("programmes", mo1.label, [_programmes_chunk()], mo1)
    for study in surveys.STUDIES:
        units, meas, st = surveys.build_study(world, study)
        run.write("survey_units", study, [units])
        run.write("survey_measurements", study, _chunked(np.arange(len(meas["unit_id"])),
                                                         lambda ix: {k: v[ix] for k, v in meas.items()}))
        truth["studies"][study] = st
    if bar:
        bar.update(1)

    for m in range(1, months + 1):
        mo = month(start_month, m)
        prev = month(start_month, m - 1).label
        if m > 1:
            world.registry_step(mo)
        run.write("beneficiaries", mo.label, _chunked(world.registry_rows(mo), world.registry_chunk), mo, prev)
        world.enrolment_step(mo)
        run.write("enrolments", mo.label, _chunked(world.enrol_rows, world.enrolment_chunk), mo, prev)
        pay_idx = world.payment_rows(mo)
        run.write("payments", mo.label,
                  (world.payment_chunk(pay_idx[s: s + CHUNK], mo, s) for s in range(0, len(pay_idx), CHUNK)), mo, prev)
        world.loan_step(mo)
        run.write("loans", mo.label, _chunked(world.loan_rows(mo), lambda ix: world.loan_chunk(ix, mo)), mo, prev)
        li, kk = world.repayment_rows(mo)
        run.write("repayments", mo.label,
                  (world.repayment_chunk(li[s: s + CHUNK], kk[s: s + CHUNK], mo) for s in range(0, len(li), CHUNK)), mo, prev)
        req = world.request_step(mo)
        n_req = len(world.req_rows["id"])
        run.write("service_requests", mo.label,
                  (world.request_chunk(slice(s, s + CHUNK), mo) for s in range(0, n_req, CHUNK)), mo, prev)
        eps_rows = world.establishment_rows(mo)
        if len(eps_rows):
            run.write("establishments", mo.label, [world.establishment_chunk(eps_rows, mo)], mo, prev)
        run.write("occupancy", mo.label, [world.occupancy_chunk(mo)], mo, prev)
        world.venture_step(mo)
        v_rows = world.venture_rows(mo)
        if len(v_rows):
            run.write("ventures", mo.label, _chunked(v_rows, lambda ix: world.venture_chunk(ix, mo)), mo, prev)
        e = world.e
        amounts = e.amount[pay_idx]
        truth["monthly"][mo.label] = {
            "payments": {"rows": int(len(pay_idx)), "amount_mad": round(float(amounts.sum()), 2),
                         "amount_mad_by_programme": {code: round(float(amounts[e.prog[pay_idx] == i].sum()), 2)
                                                     for i, code in enumerate(catalogue.CASH_PROGRAMMES)}},
            "service_requests": req,
        }
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    summary.dirty_rows = len(run.dirty_records)
    summary.seconds = time.perf_counter() - t0
    if truth_path is not None:
        last = month(start_month, months)
        truth.update(_final_truth(world, last, run, summary, seed, beneficiaries, months, start_month, dirty_rate,
                                  truth["monthly"]))
        truth_path = Path(truth_path)
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_path.write_text(json.dumps(truth, indent=1, ensure_ascii=False, sort_keys=False), encoding="utf-8")
        summary.truth_path = truth_path
    return summary


def _final_truth(world: World, last, run: _Run, summary: GenerationSummary, seed, N, months, start_month, rate,
                 monthly: dict) -> dict:
    p, e, geo = world.p, world.e, world.geo
    region = geo.region_code[p.commune]
    sex = np.where(p.sex == 1, "M", "F")
    by_region_sex: dict = {}
    for r in geo.region_codes:
        m = region == r
        by_region_sex[r] = {"F": int((m & (sex == "F")).sum()), "M": int((m & (sex == "M")).sum())}
    active = (e.entry <= last.last) & (e.exit == NULL_INT)
    progs = catalogue.ENROLMENT_PROGRAMMES
    s = world.eps
    res, after, _ = world._residents(last.mabs)
    v = world.v
    known12 = v.start + 365 <= last.last
    st = np.array(["active", "closed", "unknown"])
    return {
        "version": TRUTH_VERSION,
        "parameters": {"beneficiaries": N, "seed": seed, "months": months, "start_month": start_month,
                       "last_month": last.label, "dirty_rate": rate},
        "files": dict(summary.files),
        "bytes": dict(summary.bytes),
        "blank_columns": sorted(run.blanked),
        "dirty_rows": run.dirty_records,
        "aggregates": {
            "registered_people": int(p.n),
            "registered_people_by_region_sex": by_region_sex,
            "active_enrolments_by_programme": {code: int((active & (e.prog == i)).sum()) for i, code in enumerate(progs)},
            "enrolments_total": int(e.n),
            "payments_mad_by_month": {k: v2["payments"]["amount_mad"] for k, v2 in monthly.items()},
            "loans_total": int(world.loans.n),
            "portfolio_last_month": world.portfolio(last),
            "establishments": int(len(s["id"])),
            "establishments_modernised_by_last_month": int(after.sum()),
            "residents_last_month": int(res.sum()),
            "ventures_total": int((v.start <= last.last).sum()),
            "ventures_status_12m": {str(k): int(((v.s12 == i) & known12).sum()) for i, k in enumerate(st)},
        },
    }
