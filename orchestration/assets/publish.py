"""Write-audit-publish as assets: ``serving/candidate`` then ``serving/warehouse``.

``serving/candidate`` copies the published schemas of the build warehouse into a new file
and applies disclosure control (``jisr.publish.stage_candidate``); the candidate checks
(``orchestration/checks.py``) audit exactly that file. ``serving/warehouse`` publishes it
(``jisr.publish.commit``) only when:

1. every blocking check upstream of it (dbt tests of severity error included) has a
   passing result on the current data in the Dagster instance (so materialising the
   publish step alone after a failed run does not slip through), and
2. the publish step's own audit passes: every audit check (``quality.checks``) runs
   again, in plain Python, on the candidate and the build warehouse, on every table or
   source this run did not already evaluate it on (a normal refresh evaluates them all
   once, as asset checks; a fact without an asset check of its own is checked here).

Otherwise the step fails with a message naming the checks, and the serving file is not touched.
"""


from collections.abc import Iterable

import dagster as dg

from jisr.settings import get_settings
from orchestration.checks import CANDIDATE_KEY, CFG
from orchestration.metadata import markdown_table
from orchestration.runlock import RefreshLock

SERVING_KEY = dg.AssetKey(["serving", "warehouse"])
GROUP = "serving"


def _completed_evaluation(record):
    """The AssetCheckEvaluation of a completed check execution record, else None."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    if record is None or record.status == AssetCheckExecutionRecordStatus.PLANNED or record.event is None:
        return None
    return record.event.dagster_event.event_specific_data


def _latest_completed(instance, check_key):
    """The latest execution record of a check that has its evaluation (passed or failed), or None."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1, status=done)
    return history[0] if history else None


def _full_asset_graph(context: dg.AssetExecutionContext):
    """The asset graph of the whole code location, also when only this asset was selected."""
    try:
        return context.repository_def.asset_graph
    except Exception:  # not set when a job is executed in process outside a code location
        job = context.job_def
        while job.asset_selection_data is not None:
            job = job.asset_selection_data.parent_job_def
        return job.asset_layer.asset_graph


def gate_problems(context: dg.AssetExecutionContext) -> list[str]:
    """Blocking checks upstream of this asset without a passing result on the current data."""
    graph = _full_asset_graph(context)
    ancestors = graph.get_ancestor_asset_keys(context.asset_key)
    check_keys = [ck for ck in graph.asset_check_keys
                  if ck.asset_key in ancestors and graph.get_check_spec(ck).blocking]
    if not check_keys:
        return []
    instance = context.instance
    records = dict(instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys))
    for ck, record in list(records.items()):
        if _completed_evaluation(record) is None:  # planned by a run that failed or stopped first: the one before
            records[ck] = _latest_completed(instance, ck)
    materialized = instance.get_latest_materialization_events(list({ck.asset_key for ck in check_keys}))
    problems = []
    for ck in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        mat = materialized.get(ck.asset_key)
        if mat is None:
            continue  # never built: there is nothing of it to publish
        record = records.get(ck)
        evaluation = _completed_evaluation(record)
        label = f"{ck.name} on {ck.asset_key.to_user_string()}"
        if evaluation is None:
            problems.append(f"{label} has no completed result for the current data")
            continue
        current = record.run_id == mat.run_id or record.event.timestamp >= mat.timestamp
        if not current:
            problems.append(f"{label} was not evaluated since {ck.asset_key.to_user_string()} was last built")
        elif not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            why = f": {evaluation.description}" if getattr(evaluation, "description", None) else ""
            problems.append(f"{label} failed{why}")
    return problems


def run_check_results(context: dg.AssetExecutionContext) -> list[dict]:
    """Results of every check evaluated in this run (for the publish log)."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = []
    for rec in records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        out.append({"check": ev.check_name, "asset": ev.asset_key.to_user_string(), "passed": ev.passed,
                    "severity": ev.severity.value, "description": getattr(ev, "description", None)})
    return out


def _check_target(asset: str) -> str | None:
    """What a check on ``asset`` covers, as ``quality.checks`` names it: a table
    (``schema.table``), a source (``raw/<source>``: the source), or the whole candidate file
    (None: its checks read every published table)."""
    path = asset.split("/")
    if dg.AssetKey(path) == CANDIDATE_KEY:
        return None
    return path[-1] if path[0] == "raw" else ".".join(path)


def evaluated_audit_checks(check_results: list[dict]):
    """The run's evaluations of the audit checks (``quality.checks``) as CheckResults: the
    publish step does not run them again on the same candidate and warehouse, for the
    tables and sources they covered (a fact without a references check of its own is
    checked by the publish step)."""
    from quality.checks import CheckResult
    from quality.config import CHECK_NAMES

    return [CheckResult(r["check"], bool(r["passed"]), "block" if r["severity"] == "ERROR" else "warn",
                        r.get("description") or "", _check_target(r["asset"]))
            for r in check_results if r["check"] in CHECK_NAMES]


def build_publish_assets(upstream: Iterable[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """The candidate and serving assets, downstream of ``upstream`` (every published mart and
    impact asset, and the internal models whose checks gate publication)."""
    upstream = sorted(set(upstream), key=lambda k: k.to_user_string())

    @dg.asset(key=CANDIDATE_KEY, deps=upstream, group_name=GROUP, kinds={"duckdb", "python"},
              description="The warehouse about to be published: a new file with the schemas marts and impact of "
                          "the build warehouse, after disclosure control. Audited by the candidate checks.")
    def serving_candidate(context: dg.AssetExecutionContext, refresh_lock: RefreshLock) -> dg.MaterializeResult:
        from jisr.publish import stage_candidate

        candidate = stage_candidate(get_settings(), context.run.run_id)
        for note in candidate.disclosure_notes:  # internal: the run's log, not the published file
            context.log.warning(f"disclosure control: {note}")
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(candidate.path)),
            "tables": len(candidate.table_row_counts),
            "rows": sum(candidate.table_row_counts.values()),
            "disclosure": candidate.disclosure[:2000],
            "disclosure_notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in candidate.disclosure_notes) or "none"),
            "row_counts": dg.MetadataValue.md(markdown_table(["table", "rows"],
                                                             sorted(candidate.table_row_counts.items()), 500)),
        })

    @dg.asset(key=SERVING_KEY, deps=[CANDIDATE_KEY], group_name=GROUP, kinds={"duckdb", "python"},
              description="The serving warehouse (read-only for evaluators and BI): replaced atomically by the "
                          "audited candidate when every blocking check passed; the previous one is kept for "
                          "`jisr rollback`.")
    def serving_warehouse(context: dg.AssetExecutionContext, refresh_lock: RefreshLock) -> dg.MaterializeResult:
        from jisr.publish import commit, load_candidate, publish_log, record_path, stage_candidate
        from quality.checks import ChecksFailed
        from quality.report import write_report

        settings = get_settings()
        problems = gate_problems(context)
        if problems:
            report = write_report(settings, context.run.run_id)
            raise dg.Failure(description="Publication refused, the serving warehouse was not changed: "
                                         + "; ".join(problems),
                             metadata={"report": dg.MetadataValue.path(str(report))})
        candidate = load_candidate(settings, context.run.run_id)
        if candidate is None:
            context.log.warning("no candidate staged in this run: staging one now (its checks run inside publish)")
            candidate = stage_candidate(settings, context.run.run_id)
        try:
            given = run_check_results(context)
            result = commit(settings, candidate, settings.code_version, check_results=given,
                            evaluated=evaluated_audit_checks(given))
        except ChecksFailed as exc:
            report = write_report(settings, context.run.run_id, exc.failures)
            raise dg.Failure(description=f"{exc}; the serving warehouse was not changed",
                             metadata={"report": dg.MetadataValue.path(str(report))}) from exc
        report = write_report(settings, context.run.run_id, result.checks)
        log = publish_log(settings)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(result.serving_path)),
            "report": dg.MetadataValue.path(str(report)),
            "run_id": result.run_id,
            "code_version": settings.code_version,
            "deliveries": result.deliveries,
            "tables": len(result.table_row_counts),
            "rows": sum(result.table_row_counts.values()),
            "previous_kept_as": str(result.archived_path) if result.archived_path else "none (first publication)",
            "record": dg.MetadataValue.md(f"`{record_path(settings, result.run_id)}`: rebuilt and compared by "
                                          f"`jisr reproduce {result.run_id}`"),
            "seconds": round(result.seconds, 2),
            "warnings": dg.MetadataValue.md("\n".join(f"- {c.label}: {c.description}" for c in result.checks
                                                      if not c.passed) or "none"),
            "publish_log": dg.MetadataValue.md(markdown_table(
                ["event", "run", "code version", "published at (UTC)", "deliveries", "checks passed"],
                [[r["event"], r["run_id"], r["code_version"], r["published_at"], r["delivery_count"],
                  r["checks_passed"]] for r in log], 20)),
        })

    return [serving_candidate, serving_warehouse]


INTERNAL_GATED_SCHEMAS = ("detail",)  # not published, but their tests and checks gate publication


def published_upstream(asset_keys: Iterable[dg.AssetKey]) -> list:
    """The asset keys the publish step depends on (first path element = schema): the tables
    of the published schemas (``publish.schemas`` of config/quality.yml) and the internal
    person-level models (schema ``detail``), whose checks must pass before publishing."""
    wanted = set(CFG.publish_schemas) | set(INTERNAL_GATED_SCHEMAS)
    return [k for k in asset_keys if len(k.path) == 2 and k.path[0] in wanted]
