"""Raw-layer assets: one asset per contract source, keyed ``raw/<source>``, and the raw
store's delivery log and quarantine ledger (``meta/deliveries``, ``quarantine/rows``).

The dbt sources are named ``raw.<source>``, ``meta.deliveries`` and ``quarantine.rows`` too,
so each Python asset and the dbt source that reads it are the same node in the asset graph.
All of them are produced by one multi-asset step (one pass over the landing area, in
contract dependency order).
"""

from collections import Counter

import dagster as dg

from ingestion.contracts import load_contracts
from jisr.settings import get_settings
from orchestration.metadata import markdown_table
from orchestration.runlock import RefreshLock

PROJECT = get_settings()  # only project-relative paths are read at import; JISR_HOME is read per run
CONTRACTS = load_contracts(PROJECT.contracts_dir)
RAW_GROUP = "raw"


def raw_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source])


DELIVERY_LOG = dg.AssetKey(["meta", "deliveries"])
QUARANTINE = dg.AssetKey(["quarantine", "rows"])
LEDGERS = [
    dg.AssetSpec(key=DELIVERY_LOG, group_name=RAW_GROUP, kinds={"duckdb", "python"},
                 description="The raw store's delivery log: one row per delivered file, whatever became of it "
                             "(loaded, superseded, rejected), with its content hash, rows delivered = loaded + "
                             "quarantined, the reason of a rejection and the contract and code versions. Written "
                             "by the ingestion, read by the quality marts (marts.fct_deliveries)."),
    dg.AssetSpec(key=QUARANTINE, group_name=RAW_GROUP, kinds={"duckdb", "python"},
                 description="The raw store's quarantine ledger, kept across runs: one row per delivered row set "
                             "aside and rule it breaks (contract rules and Great Expectations suites), with the "
                             "message naming the file, the row and the rule, the row's values (identifiers "
                             "pseudonymised) and the delivery that resolved it. Internal: the quality marts "
                             "count it; partners get their rows in var/feedback."),
]


def _spec(contract) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=raw_key(contract.source),
        group_name=RAW_GROUP,
        description=f"{contract.title}. {contract.grain} Partner: {contract.partner}. {contract.description}",
        kinds={"duckdb", "python"},
        owners=[],
        tags={"partner": contract.partner},
        metadata={
            "contract": dg.MetadataValue.path(str(contract.path.relative_to(PROJECT.project_dir))),
            "file_pattern": contract.file_pattern,
            "format": contract.format,
            "primary_key": ", ".join(contract.primary_key),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, typ) for name, typ in contract.raw_columns.items()]
            ),
        },
    )


def check_configuration(settings) -> None:
    """Read the files users tune (``config/``) before anything is ingested: an error in one of
    them would otherwise stop the run only at the stage that reads it, after the ingestion
    and the build (``evaluation.yml``: the impact stage, well into a refresh)."""
    from impact.config import load_config as evaluation_config
    from quality.config import config_for
    from quality.disclosure import load_config as disclosure_config

    problems = []
    for name, read in (("quality.yml", lambda: config_for(settings)),
                       ("disclosure.yml", lambda: disclosure_config(None, settings)),
                       ("evaluation.yml", lambda: evaluation_config(settings.config_dir / "evaluation.yml"))):
        try:
            read()
        except Exception as exc:  # noqa: BLE001 - each file's own error, reported together
            problems.append(f"config/{name}: {exc}")
    if problems:
        raise dg.Failure("The configuration has errors, so nothing was ingested and nothing will be published:\n"
                         + "\n".join(problems))


def run_ingestion(settings, run_id: str, sources=None, validators=()):
    """Ingest the landing area; returns the ingestion summary."""
    from ingestion.load import Ingestor
    from quality.config import config_for

    ingestor = Ingestor(
        settings.store_path, CONTRACTS, settings.pseudonym_key(), seeds_dir=settings.seeds_dir,
        rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, run_id=run_id,
        code_version=settings.code_version, validators=validators, volume=config_for(settings).deliveries,
    )
    return ingestor.ingest(settings.landing_dir, sources=sources)


@dg.multi_asset(
    name="ingest_landing",
    specs=[_spec(c) for c in CONTRACTS.values()] + LEDGERS,
    can_subset=True,
    description="Reads new partner files from the landing area, checks them against their contracts, "
                "pseudonymises direct identifiers and appends them to the raw layer. (The Parquet copy of "
                "the raw layer, the lake, is brought up to date by the warehouse step, with the dbt build.)",
)
def ingest_landing(context: dg.AssetExecutionContext, refresh_lock: RefreshLock):
    settings = get_settings()
    check_configuration(settings)
    selected = {key.path[-1] for key in context.selected_asset_keys if key not in (DELIVERY_LOG, QUARANTINE)}
    from quality.expectations import suite_validator

    # Contract rules in SQL and the Great Expectations suites both route failing rows to quarantine.
    # The Parquet lake is exported by the warehouse step, beside dbt (orchestration/assets/warehouse.py).
    # A whole refresh also rejects the files no contract matches (moved to rejected/ with a
    # report); a run of some sources only leaves them for a run that selects every source.
    sources = None if selected >= set(CONTRACTS) else selected
    summary = run_ingestion(settings, context.run.run_id, sources=sources,
                            validators=[suite_validator(settings, context.run.run_id)])
    context.log.info(f"{summary.files_hashed} landing file(s) read to compute their content hash; "
                     f"{summary.hashes_reused} with size, times, inode and device unchanged kept their recorded hash")
    for message in summary.skipped:  # gone before it was read, or outside the partner folders: nothing loaded
        context.log.warning(message)
    by_source = summary.by_source()
    released = Counter()  # rows of earlier deliveries loaded once the rows they depend on were
    for f in summary.released:
        released[f.source] += f.rows_released
        context.log.info(f"{f.partner}/{f.file_name}: {f.rows_released} row(s) held for a row not loaded then "
                         "(a reference, a key in another batch) are now loaded")
    set_aside = Counter()  # loaded rows that fail their contract as it is now (a rule added since)
    for f in summary.rechecked:
        set_aside[f.source] += f.rows_set_aside
        context.log.warning(f"{f.partner}/{f.file_name}: {f.rows_set_aside} loaded row(s) moved to quarantine after a "
                            "contract changed (they fail its rules as they are now, or refer to a row that does); "
                            f"the partner's feedback lists them: {f.report_path}")
    from ingestion import store

    con = store.connect(settings.store_path, read_only=True)  # the previews and counts: one connection
    try:
        for source in CONTRACTS:
            if source not in selected:
                continue
            files = by_source.get(source, [])
            loaded = [f for f in files if f.status == "loaded"]
            rejected = [f for f in files if f.status == "rejected"]
            for f in rejected:
                context.log.warning(f"{f.file_name} rejected: {f.reason}")
            repeated = [f for f in files if f.repeats_rejected]  # left in the landing area, not loaded
            for f in repeated:
                context.log.warning(f"{f.partner}/{f.file_name} not loaded: {f.reason}")
            preview, current = _preview(con, source)
            yield dg.MaterializeResult(
                asset_key=raw_key(source),
                metadata={
                    "dagster/row_count": current,  # rows in effect (every version is kept: _is_current)
                    "files_loaded": len(loaded),
                    "files_rejected": len(rejected),
                    "files_unchanged": sum(f.status == "duplicate" for f in files),
                    # read by `jisr refresh` for its report (jisr.refresh.run_outcome)
                    "files_not_loaded": dg.MetadataValue.json(
                        [{"file": f"{f.partner}/{f.file_name}", "reason": f.reason} for f in repeated]),
                    # the files of the pass gone from the landing area before they were read, whatever
                    # their source (one may have no contract): every source's materialization has them
                    # (jisr.refresh.run_skipped)
                    "files_skipped": dg.MetadataValue.json(list(summary.skipped)),
                    "rows_delivered": sum(f.rows_delivered for f in loaded),
                    "rows_loaded": sum(f.rows_loaded for f in loaded),
                    "rows_quarantined": sum(f.rows_quarantined for f in loaded),
                    "rows_released": released[source],
                    "rows_set_aside": set_aside[source],
                    "files": dg.MetadataValue.md(markdown_table(
                        ["file", "status", "delivered", "loaded", "quarantined", "reason"],
                        [[f.file_name, f.status, f.rows_delivered, f.rows_loaded, f.rows_quarantined,
                          f.reason or ", ".join(f"{k}: {v}" for k, v in f.rules_failed.items())] for f in files],
                    )) if files else dg.MetadataValue.md("No new file."),
                    "preview": dg.MetadataValue.md(preview),
                },
            )
        if {DELIVERY_LOG, QUARANTINE} & context.selected_asset_keys:
            yield from _ledgers(context, con, summary)
    finally:
        con.close()
    unmatched = by_source.get("(no contract)", [])
    for f in unmatched:
        context.log.warning(f"{f.partner}/{f.file_name} rejected: {f.reason}")


def _ledgers(context, con, summary):
    """The materializations of the delivery log and the quarantine ledger the run selected
    (``con``: the raw store, read-only)."""
    files, loaded, rejected = con.execute(
        "select count(*), count(*) filter (where status = 'loaded'), count(*) filter (where status = 'rejected') "
        "from meta.deliveries").fetchone()
    rows, unresolved = con.execute(
        "select count(*), count(distinct (delivery_id, source_row)) filter (where resolved_by_delivery is null) "
        "from quarantine.rows").fetchone()
    totals = summary.totals
    if DELIVERY_LOG in context.selected_asset_keys:
        yield dg.MaterializeResult(asset_key=DELIVERY_LOG, metadata={
            "dagster/row_count": files, "deliveries_in_effect": loaded, "files_rejected_in_all": rejected,
            "files_this_run": totals["files_loaded"] + totals["files_rejected"]})
    if QUARANTINE in context.selected_asset_keys:
        yield dg.MaterializeResult(asset_key=QUARANTINE, metadata={
            "dagster/row_count": rows, "rows_set_aside_unresolved": unresolved,
            "rows_quarantined_this_run": totals["rows_quarantined"] + totals["rows_set_aside"]})


def _preview(con, source: str, limit: int = 5) -> tuple[str, int]:
    """The latest rows in effect of a raw table (a markdown table), and how many rows are in
    effect (``con``: the raw store, read-only)."""
    cur = con.execute(f"select * exclude (_content_hash, _run_id) from raw.{source} where _is_current "
                      f"order by _loaded_at desc, _source_row limit {limit}")
    preview = markdown_table([d[0] for d in cur.description], cur.fetchall())
    return preview, con.execute(f"select count(*) from raw.{source} where _is_current").fetchone()[0]
