"""The quality report of a refresh: ``<reports_dir>/<run_id>/quality/index.html``.

One self-contained HTML page per run: the Great Expectations validation of every delivery
of the run (from ``quality.gx_results`` in the raw store), the rows quarantined by the run
(counts per source and rule, no values), and the audit checks (``quality.checks``). Each
stage that has something to add calls :func:`write_report`; check results are kept in
``checks.json`` next to the page so later stages add to, not replace, earlier ones.
Values of direct identifiers never appear (they are withheld when the results are made).
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import duckdb

from quality.checks import CheckResult


def report_dir(settings, run_id: str) -> Path:
    return Path(settings.reports_dir) / run_id / "quality"


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: Iterable[Iterable], classes: Iterable[str] | None = None) -> str:
    rows = list(rows)
    classes = list(classes) if classes is not None else [""] * len(rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(f"<tr class='{c}'>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
                   for row, c in zip(rows, classes))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _store_rows(settings, run_id: str) -> tuple[list[dict], list[tuple], list[tuple]]:
    """(suite results, quarantine counts, deliveries) of a run from the raw store."""
    store = Path(settings.store_path)
    if not store.exists():
        return [], [], []
    try:
        con = duckdb.connect(str(store), read_only=True)
    except duckdb.Error:
        return [], [], []
    try:
        tables = {tuple(r) for r in con.execute("select schema_name, table_name from duckdb_tables()").fetchall()}
        gx = []
        if ("quality", "gx_results") in tables:
            cur = con.execute("select * from quality.gx_results where run_id = ? order by source, batch, rule", [run_id])
            names = [d[0] for d in cur.description]
            gx = [dict(zip(names, r)) for r in cur.fetchall()]
        quarantine = []
        if ("quarantine", "rows") in tables:
            quarantine = con.execute(
                "select source, file_name, rule, count(*), count(distinct source_row) from quarantine.rows "
                "where run_id = ? group by all order by 1, 2, 3", [run_id]).fetchall()
        deliveries = []
        if ("meta", "deliveries") in tables:
            deliveries = con.execute(
                "select source, file_name, batch, status, rows_delivered, rows_loaded, rows_quarantined, reason "
                "from meta.deliveries where run_id = ? order by source, batch, file_name", [run_id]).fetchall()
        return gx, quarantine, deliveries
    finally:
        con.close()


def _merge_checks(path: Path, results: Iterable[CheckResult]) -> list[dict]:
    existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    new = [r.as_dict() for r in results]
    keys = {(r["check"], r["target"]) for r in new}
    merged = [r for r in existing if (r["check"], r["target"]) not in keys] + new
    path.write_text(json.dumps(merged, indent=1, default=str), encoding="utf-8")
    return merged


def write_report(settings, run_id: str, checks: Iterable[CheckResult] = ()) -> Path:
    """(Re)write the run's quality report; returns the path of ``index.html``."""
    out = report_dir(settings, run_id)
    out.mkdir(parents=True, exist_ok=True)
    merged = _merge_checks(out / "checks.json", checks)
    gx, quarantine, deliveries = _store_rows(settings, run_id)
    parts = [f"<h1>Quality report of refresh {_esc(run_id)}</h1>",
             f"<p class='muted'>Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC. Severities and "
             "parameters: <code>config/quality.yml</code>. Values of direct identifiers are never shown.</p>"]

    failing = [c for c in merged if not c["passed"]]
    blocking = [c for c in failing if c["severity"] == "block"]
    verdict = ("BLOCKED: publication refused" if blocking else
               "passed with warnings" if failing else "all checks passed") if merged else "no audit check has run yet"
    parts.append(f"<p class='verdict {'fail' if blocking else 'ok'}'>Audit: {_esc(verdict)} "
                 f"({len(merged)} results, {len(failing)} failing, {len(blocking)} blocking)</p>")

    parts.append("<h2>Deliveries of this run</h2>")
    parts.append(_table(["source", "file", "batch", "status", "delivered", "loaded", "quarantined", "reason"],
                        deliveries, ["fail" if d[3] == "rejected" else "" for d in deliveries])
                 if deliveries else "<p>No new delivery in this run.</p>")

    parts.append("<h2>Great Expectations validation of each delivery</h2>")
    if not gx:
        parts.append("<p>No suite result recorded for this run.</p>")
    batches: dict[tuple, list[dict]] = {}
    for r in gx:
        batches.setdefault((r["source"], r["batch"]), []).append(r)
    summary_rows, summary_classes = [], []
    for (source, batch), rs in batches.items():
        failed = [r for r in rs if not r["success"]]
        errored = [r for r in rs if r["raised_exception"]]
        summary_rows.append([f"{source} {batch}", rs[0]["suite"], rs[0]["rows"], rs[0]["chunks"], len(rs), len(failed),
                             len(errored), sum(r["unexpected_count"] or 0 for r in rs), f"{rs[0]['seconds']:.2f}"])
        summary_classes.append("fail" if failed else "ok")
    if summary_rows:
        parts.append(_table(["delivery", "suite", "rows", "chunks", "expectations", "failed", "errored",
                             "failing (row, expectation)", "seconds"], summary_rows, summary_classes))
    for (source, batch), rs in batches.items():
        detail = []
        for r in rs:
            examples = ", ".join(json.loads(r["unexpected_examples"])) if r["unexpected_examples"] else ""
            pct = (100.0 * r["unexpected_count"] / r["element_count"]) if r["element_count"] else 0.0
            status = "ERROR" if r["raised_exception"] else ("ok" if r["success"] else "FAILED")
            detail.append([r["expectation"], r["column_name"] or "(table)", status, r["element_count"],
                           r["unexpected_count"], f"{pct:.2f} %", examples, r["exception_message"] or ""])
        parts.append(f"<details><summary>{_esc(source)} {_esc(batch)}: {len(rs)} expectations</summary>"
                     + _table(["expectation", "column", "status", "rows", "unexpected", "share", "examples", "error"],
                              detail, ["fail" if d[2] != "ok" else "" for d in detail]) + "</details>")

    parts.append("<h2>Rows quarantined by this run</h2>")
    parts.append(_table(["source", "file", "rule", "failures", "rows"], quarantine)
                 if quarantine else "<p>None.</p>")
    parts.append("<p class='muted'>Every quarantined row, with its values (identifiers pseudonymised), is in "
                 "<code>quarantine.rows</code> of the raw store; partners get "
                 f"<code>{_esc(settings.feedback_dir)}/&lt;partner&gt;/&lt;file&gt;.rejected_rows.csv</code>.</p>")

    parts.append("<h2>Audit checks</h2>")
    if merged:
        order = sorted(merged, key=lambda c: (c["passed"], c["severity"] != "block", c["check"], c["target"] or ""))
        parts.append(_table(["check", "about", "result", "severity", "description"],
                            [[c["check"], c["target"] or "warehouse", "passed" if c["passed"] else "FAILED",
                              c["severity"], c["description"]] for c in order],
                            ["ok" if c["passed"] else ("fail" if c["severity"] == "block" else "warn") for c in order]))
    else:
        parts.append("<p>No audit check has run yet in this refresh.</p>")

    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Jisr quality report "
            f"{_esc(run_id)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:80em}}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;"
            "font-size:90%;vertical-align:top}th{background:#f3f3f3}tr.fail td{background:#fde8e8}"
            "tr.warn td{background:#fff6dd}.verdict{font-size:120%;font-weight:bold}.verdict.fail{color:#a00}"
            ".verdict.ok{color:#070}.muted{color:#666}details{margin:.3em 0}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path = out / "index.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
