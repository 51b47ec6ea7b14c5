"""Plain-text reports on deliveries, quarantine and the published warehouse."""

from __future__ import annotations

import json

from jisr.settings import Settings
from jisr.sql import text_table


def _open_store(settings: Settings):
    from ingestion import store

    if not settings.store_path.exists():
        return None
    return store.connect(settings.store_path, read_only=True)




def run_report(settings: Settings, run_id: str, not_loaded: list[tuple[str, str]] = (),
               skipped: list[str] = (), failed: bool = False) -> str:
    """What one refresh run loaded, quarantined and rejected, and where the warehouse is;
    ``not_loaded``: (partner/file, reason) of the landing files the run did not load as
    they repeat a rejected delivery; ``skipped``: the messages naming the landing files it
    skipped, as they left the landing area before they were read or are where nothing reads
    them (outside the partner folders); ``failed``: the run
    failed (a run that loaded nothing then says so, not that nothing was new)."""
    con = _open_store(settings)
    if con is None:
        return "Nothing was ingested (no raw store yet)."
    try:
        rows = con.execute(
            """select source, count(*) filter (where status != 'rejected') as files_loaded,
                      count(*) filter (where status = 'rejected') as files_rejected,
                      coalesce(sum(rows_delivered), 0), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0)
               from meta.deliveries where run_id = ? group by source order by source""", [run_id]).fetchall()
        rejected = con.execute(
            "select partner, file_name, reason from meta.deliveries where run_id = ? and status = 'rejected' order by 1, 2",
            [run_id]).fetchall()
        warned = con.execute(
            "select partner, file_name, warnings from meta.deliveries where run_id = ? and status != 'rejected' "
            "and warnings is not null order by 1, 2", [run_id]).fetchall()
        set_aside = con.execute(  # a store written before meta.rechecks existed has none
            "select d.partner, d.file_name, r.rows_quarantined, r.contract_version from meta.rechecks r "
            "join meta.deliveries d using (delivery_id) where r.run_id = ? and r.rows_quarantined > 0 order by 1, 2",
            [run_id]).fetchall() if con.execute(
            "select count(*) from duckdb_tables() where schema_name = 'meta' and table_name = 'rechecks'").fetchone()[0] \
            else []
    finally:
        con.close()
    out = []
    if rows:
        out.append("Deliveries ingested by this run:")
        out.append(text_table(["source", "files", "rejected", "rows delivered", "loaded", "quarantined"], rows))
        totals = [sum(r[i] for r in rows) for i in range(1, 6)]
        out.append(f"Total: {totals[0]} file(s) loaded, {totals[1]} rejected; {totals[2]} rows delivered = "
                   f"{totals[3]} loaded + {totals[4]} quarantined.")
    elif failed:
        out.append("No delivery was loaded by this run (it failed: see below).")
    else:
        out.append("No new delivery in the landing area (files already loaded are not loaded twice).")
    if rejected:
        out.append("\nRejected files (moved to " + str(settings.rejected_dir) + "):")
        out += [f"  {p}/{f}: {r}" for p, f, r in rejected]
    if warned:
        out.append("\nLoaded with warnings (also in the partner's summary):")
        out += [f"  {p}/{f}: {w}" for p, f, text in warned for w in text.splitlines()]
    if set_aside:
        out.append("\nLoaded rows set aside after a contract changed (they fail its rules as they are now, or refer to "
                   "a row that does; the partner's feedback lists them):")
        out += [f"  {p}/{f}: {n} row{'s' if n != 1 else ''} (contract version {v})" for p, f, n, v in set_aside]
    if not_loaded:
        out.append(f"\nFiles not loaded, as they repeat a rejected delivery (left in {settings.landing_dir}):")
        out += [f"  {f}: {r}" for f, r in not_loaded]
    if skipped:
        out.append("\nFiles skipped (nothing of them was loaded or recorded):")
        out += [f"  {m}" for m in skipped]
    out.append(f"\nQuarantined rows and partner reports: {settings.feedback_dir}")
    out.append(_warehouse_line(settings))
    return "\n".join(out)


def _warehouse_line(settings: Settings, details: list[str] = ()) -> str:
    if settings.serving_path.exists():
        return "\n".join([f"Serving warehouse (read-only for evaluators and BI): {settings.serving_path}", *details,
                          "  try: jisr sql \"select * from marts.mart_transfers_monthly where not is_suppressed limit 5\""])
    return f"Raw store (internal): {settings.store_path}; no warehouse has been published yet."


def _busy(settings: Settings, exc: Exception) -> str:
    import duckdb

    if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
        # DuckDB names the process that holds the lock ("... is held in <program> (PID n)")
        holder = str(exc).split("held in ", 1)[1].split(". ", 1)[0] if "held in " in str(exc) else "unknown"
        return (f"The raw store is busy: another process holds its write lock ({holder}), most likely a refresh "
                f"loading deliveries;\n  try `jisr status` again when the refresh has finished "
                f"({settings.store_path}).")
    return f"The raw store is busy ({exc}); try again when the refresh has finished."


def _serving_busy(settings: Settings, exc: Exception) -> str:
    holder = str(exc).split("held in ", 1)[1].split(". ", 1)[0] if "held in " in str(exc) else str(exc)
    return (f"The serving warehouse cannot be read: another process holds it open for writing ({holder}). Only "
            "publication writes it; a tool that opened it read-write (not read_only) keeps readers out: close it, "
            f"or open the file read-only ({settings.serving_path}).")


# `jisr status` exit codes, for monitoring: everything delivered is published and every
# landing file is read; something needs attention (a NOT PUBLISHED line, files nothing reads,
# deliveries loaded but nothing published); the state could not be read (no raw store yet, or
# a process holds it).
STATUS_OK, STATUS_ATTENTION, STATUS_UNKNOWN = 0, 1, 2


def status_report(settings: Settings) -> str:
    """What ``jisr status`` prints."""
    return status(settings)[0]


def status(settings: Settings) -> tuple[str, int]:
    """(the report, its exit code: ``STATUS_OK``, ``STATUS_ATTENTION`` or ``STATUS_UNKNOWN``)."""
    from ingestion.contracts import misplaced_files

    con = None
    try:
        con = _open_store(settings)  # fails while another process writes the store
        if con is None:
            return f"No raw store at {settings.store_path}: run `jisr refresh` (or `make run`) first.", STATUS_UNKNOWN
        deliveries = con.execute(
            """select source, count(*) filter (where status = 'loaded'), count(*) filter (where status = 'superseded'),
                      count(*) filter (where status = 'rejected'), max(batch) filter (where status = 'loaded'),
                      strftime(max(loaded_at), '%Y-%m-%d %H:%M')
               from meta.deliveries group by source order by source""").fetchall()
        quarantine = con.execute(
            """select count(distinct (delivery_id, source_row)) filter (where resolved_by_delivery is null),
                      count(*) filter (where resolved_by_delivery is null),
                      count(distinct (delivery_id, source_row)), count(*)
               from quarantine.rows""").fetchone()
        try:
            published = _publication(settings)
        except Exception as exc:  # noqa: BLE001  the serving file, not the store, is what is held
            return _serving_busy(settings, exc), STATUS_UNKNOWN
        current = con.execute("select delivery_id, rows_loaded, loaded_at, run_id from meta.deliveries "
                              "where status = 'loaded'").fetchall()
    except Exception as exc:  # a refresh holds the write lock
        return _busy(settings, exc), STATUS_UNKNOWN
    finally:
        if con is not None:
            con.close()
    unpublished, grown = [], 0
    if published:  # current deliveries the served warehouse was not built from, or not in full
        built_from = {d["delivery_id"]: d.get("rows_loaded") for d in json.loads(published.get("deliveries") or "[]")}
        unpublished = sorted((loaded_at, run_id) for d, _, loaded_at, run_id in current if d not in built_from)
        # rows loaded since into served deliveries (held rows released; older publications do not say)
        grown = sum(d in built_from and built_from[d] not in (None, n) for d, n, _, _ in current)
    out = ["Deliveries by source:",
           text_table(["source", "loaded", "superseded", "rejected", "latest batch", "last load (UTC)"], deliveries),
           f"\nQuarantine: {quarantine[0]} delivered row(s) set aside, not yet resolved (by a re-delivery, or "
           "loaded once the row they wait for arrived) "
           f"({quarantine[1]} rule failure(s):\n  a row can break several rules, and the contract's rules and the "
           f"Great Expectations suites both check most); {quarantine[2]} row(s) recorded in all."]
    served = []
    if published:
        what = "published by" if published["event"] == "publish" else "rolled back to the warehouse of"
        served.append(f"  served: {what} run {published['run_id']} at {published['published_at']:%Y-%m-%d %H:%M} "
                      f"UTC (code {published['code_version']})")
        from jisr.publish import publication_record, record_path

        record = record_path(settings, published["run_id"])
        served.append(f"  `jisr reproduce` rebuilds it from its delivered files and compares its figures (record: "
                      f"{record})" if publication_record(settings, published["run_id"]) is not None else
                      "  no record of its figures for `jisr reproduce` (published before publications were recorded)")
    if unpublished:
        last_run = unpublished[-1][1]
        served.append(f"  NOT PUBLISHED: {len(unpublished)} current delivery(ies) the served warehouse was not built "
                      f"from; the last refresh that loaded some (run {last_run}) did not build or did not publish "
                      f"them, or was rolled back,\n  see its quality report: "
                      f"{settings.reports_dir / str(last_run) / 'quality' / 'index.html'}")
    if grown:
        served.append(f"  NOT PUBLISHED: rows held for a reference or a key were loaded since into {grown} "
                      "delivery(ies) the served warehouse was built from; the next refresh that passes its "
                      "checks publishes them")
    misplaced = misplaced_files(settings.landing_dir)
    if misplaced:
        out.append("\nFiles in the landing area that nothing reads (left where they are):")
        out += [f"  {m}" for m in misplaced]
    out.append(_warehouse_line(settings, served))
    attention = bool(unpublished or grown or misplaced or (current and not published))
    return "\n".join(out), STATUS_ATTENTION if attention else STATUS_OK


def _publication(settings: Settings) -> dict | None:
    """The serving warehouse's last publish-log event (publish or rollback), or None."""
    from jisr.publish import publish_log

    log = publish_log(settings)
    return log[0] if log else None
