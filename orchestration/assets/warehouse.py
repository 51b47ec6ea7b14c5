"""The dbt warehouse as Dagster assets; dbt tests appear as asset checks.

Asset keys mirror the warehouse path: ``raw/<table>`` for dbt sources (the same nodes as
the ingestion assets), ``<schema>/<model>`` for models and seeds. Groups follow the dbt
folders (``meta.dagster.group`` in dbt_project.yml).
"""

import contextlib
import os
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from importlib.metadata import version as package_version
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import dagster as dg
from packaging.version import Version
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.core import dbt_cli_invocation as _dbt_cli_invocation

from jisr.dbt import (
    dbt_executable,
    dies_with_this_process,
    dbt_schemas,
    docs_are_current,
    docs_fingerprint,
    ensure_manifest,
    keep_docs,
    manifest_is_stale,
    prune_run_targets,
    restore_partial_parse,
    RUN_TARGETS_KEPT,
    run_target_path,
    save_partial_parse,
)
from jisr.publish import current_deliveries, record_build_deliveries, recorded_build_deliveries
from jisr.settings import export_environment, get_settings
from orchestration.runlock import RefreshLock
from quality.checks import dbt_test_description

PROJECT = get_settings()  # only project-relative paths are read at import; JISR_HOME is read per run
DBT_PROJECT = DbtProject(project_dir=PROJECT.dbt_project_dir, profiles_dir=PROJECT.dbt_project_dir)
MANIFEST = ensure_manifest(PROJECT)


class JisrDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        schema = dbt_resource_props.get("config", {}).get("schema") or "main"
        return dg.AssetKey([schema, dbt_resource_props["name"]])

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        """dbt's tests as asset checks, each with a description (dbt gives none to a generic
        test, nor to a singular one, whose explanation is its leading SQL comment)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        return spec._replace(description=dbt_test_description(manifest["nodes"][unique_id]))


TRANSLATOR = JisrDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


class WarehouseConfig(dg.Config):
    full_refresh: bool = False
    """Rebuild incremental models from scratch instead of adding the new deliveries."""


class JisrDbtCliResource(DbtCliResource):
    """dbt's CLI without two costs dagster-dbt 0.29 adds to every run: the in-process dbt
    adapter it builds before each invocation (loading the profile, the project and every
    macro: 0.4-0.9 s each time; it only serves ``fetch_row_counts()`` and
    ``fetch_column_metadata()``, which this project does not call: dbt logs the row counts
    itself, see ``_with_row_counts``; dagster-dbt runs without it when it is None), and a
    ``dbt --version`` subprocess to learn the version."""

    def _initialize_dbt_core_adapter(self, args):  # private hook of dagster_dbt.DbtCliResource.cli
        return None

    @cached_property
    def _cli_version(self) -> Version:
        """The version of this environment's dbt-core (``dbt_executable()`` is its CLI), read
        from the installed package instead of running ``dbt --version`` in every run (1-2 s)."""
        return Version(package_version("dbt-core"))


class _SubprocessBoundToItsParent:
    """The ``subprocess`` module as dagster-dbt's dbt invocations see it: a dbt started by a
    step is killed when the process that started it dies. A run killed outright (SIGKILL,
    the out-of-memory killer) releases the refresh lock with its process, but the dbt it
    started kept building for minutes, holding DuckDB's locks on the raw store and the build
    warehouse: the next refresh took the lock and failed on DuckDB's. The step's thread waits
    for its dbt to end, so the signal (sent when that thread's process goes) only comes from
    a death of the run."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def Popen(self, *args, **kwargs):  # noqa: N802 - subprocess.Popen's name
        bind = dies_with_this_process()
        if bind is None or "preexec_fn" in kwargs:
            return subprocess.Popen(*args, **kwargs)
        return subprocess.Popen(*args, preexec_fn=bind, **kwargs)


_dbt_cli_invocation.subprocess = _SubprocessBoundToItsParent()


def dbt_resource() -> DbtCliResource:
    return JisrDbtCliResource(project_dir=DBT_PROJECT, profiles_dir=str(PROJECT.dbt_project_dir),
                              dbt_executable=str(dbt_executable()), global_config_flags=["--no-version-check"])


@dbt_assets(manifest=MANIFEST, project=DBT_PROJECT, dagster_dbt_translator=TRANSLATOR, name="warehouse_dbt")
def warehouse_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, config: WarehouseConfig,
                  refresh_lock: RefreshLock):
    """One `dbt build` per refresh (models, seeds and tests), the open raw layer (the Parquet
    lake) brought up to date beside it, then the dbt docs when they changed. A successful
    build records the deliveries it was built from in the build warehouse
    (``meta.build_deliveries``), which the publish log lists."""
    settings = get_settings()
    export_environment(settings)  # dbt's profiles.yml reads the same JISR_HOME
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    if manifest_is_stale(settings):
        raise dg.Failure(
            "The dbt project changed after this code location was loaded, so Dagster's view of the "
            "models and tests is out of date. Reload the code location (UI: Deployment > Reload) or "
            "run the command again; nothing was built."
        )
    args = ["build"] + (["--full-refresh"] if config.full_refresh else [])
    # This home's parse state: dbt re-parses everything when the state comes from another home.
    target_path = run_target_path(settings, f"{context.op_execution_context.op.name}-{context.run.run_id[:7]}-"
                                            f"{uuid.uuid4().hex[:7]}")
    prune_run_targets(settings, keep=RUN_TARGETS_KEPT - 1)  # with this run's: the last RUN_TARGETS_KEPT
    restore_partial_parse(settings, target_path)
    built_from = current_deliveries(settings)  # what dbt reads (one refresh at a time: nothing is ingested meanwhile)
    # A run of some of the dbt assets only (a model or a check materialised from the UI)
    # rebuilds nothing else: the rest of the build warehouse is the build before it, so a
    # delivery ingested since is in none of those tables. Such a run keeps the record of
    # that build (a delivery stays NOT PUBLISHED until a whole build includes it).
    whole = set(context.selected_asset_keys) >= set(warehouse_dbt.keys)  # the whole project, not the subset run
    if not whole:
        built_from = recorded_build_deliveries(settings)
    record_build_deliveries(settings, None)  # until this build succeeds, the build warehouse is no earlier build
    with _raw_lake_export(context, settings) as lake:
        build = dbt.cli(args, context=context, target_path=target_path)
        try:
            yield from _with_row_counts(context, build)
        except BaseException as exc:
            # the run's quality report says what the build's gates found, failed, interrupted
            # or not; the step's error names the failing tests with the rows they failed on
            blocking = [r for r in _report_build(context, settings, build.target_path) if r.blocks]
            if not blocking or not isinstance(exc, Exception):
                raise
            raise dg.Failure(
                "dbt build failed, nothing was published:\n" + "\n".join(f"    * {r.check}: {r.description}"
                                                                         for r in blocking)
                + f"\n  dbt's log of this build: {Path(build.target_path) / 'dbt.log'}") from None
        _report_build(context, settings, build.target_path)
    record_build_deliveries(settings, built_from)  # the build succeeded: its publish log lists these
    save_partial_parse(settings, build.target_path)
    _refresh_docs(context, dbt, settings, build.target_path)
    lake.check()  # a failed export fails the step, once the build's state and docs are kept


# What dbt_project/macros/row_count.sql logs, a post-hook of every model and seed.
ROW_COUNT_LOGGED = re.compile(r"Rows of .+: (?P<rows>[0-9]+)")


def _with_row_counts(context: dg.AssetExecutionContext, build):
    """The Dagster events of a dbt invocation (``build.stream()``), each materialisation of a
    table, incremental table or seed with its row count (``dagster/row_count``), which the
    Dagster UI shows on the asset's page and plots across materialisations.

    The counts are dbt's own, logged by a post-hook as each model ends (its macro: 34 counts
    take dbt 0.11 s at 1,000,000 beneficiaries, spread over its threads; the bare build's
    median time did not change). While dbt builds, its process holds the DuckDB build
    warehouse, so this process cannot count then, and counting after the build would mean
    holding every event until dbt ends (as dagster-dbt's ``fetch_row_counts()`` does on
    DuckDB; it also needs the in-process adapter ``JisrDbtCliResource`` turns off): the UI
    would see the models materialise only at the end, and Dagster's handling of the build's
    ~270 events, done while dbt runs, would come after it (1.0-1.5 s more at that scale).
    Events come as dbt gives them, a failure is raised where it was; a view, and every model
    on other targets than DuckDB, has no count."""
    if dbt_target() != "duckdb":
        context.log.info(f"dbt models' row counts (dagster/row_count) are logged by builds on DuckDB only, "
                         f"not on {dbt_target()}")
    rows = {}  # unique_id -> rows of its relation, as logged by dbt
    for raw in build.stream_raw_events():
        node = raw.raw_event["data"].get("node_info") or {}
        if raw.raw_event["info"]["name"] == "JinjaLogInfo" and node.get("unique_id"):
            logged = ROW_COUNT_LOGGED.fullmatch(raw.raw_event["info"]["msg"])
            if logged is not None:
                rows[node["unique_id"]] = int(logged["rows"])
            continue
        # as DbtCliInvocation.stream() turns dbt's events into Dagster's
        for event in raw.to_default_asset_events(manifest=build.manifest,
                                                 dagster_dbt_translator=build.dagster_dbt_translator,
                                                 context=build.context, target_path=build.target_path,
                                                 project=build.project):
            if isinstance(event, (dg.Output, dg.AssetMaterialization)) and node.get("unique_id") in rows:
                event = event.with_metadata({**event.metadata, "dagster/row_count": rows[node["unique_id"]]})
            yield event


def _report_build(context: dg.AssetExecutionContext, settings, target_path) -> list:
    """Add the dbt build's failing tests and nodes to the run's quality report (written by
    the delivery checks before the build, and by the publish step after it), with the first
    rows each failing test found (on DuckDB: its query run again on the build warehouse);
    log the tests that warn. Returns the results (quality.checks.CheckResult)."""
    from quality.checks import dbt_build_results
    from quality.report import write_report

    results = []
    try:
        on_duckdb = dbt_target() == "duckdb"
        results = dbt_build_results(Path(target_path) / "run_results.json",
                                    warehouse=settings.build_path if on_duckdb else None,
                                    store=settings.store_path if on_duckdb else None)
        for r in results:
            if not r.passed and not r.blocks:
                context.log.warning(f"{r.check}: {r.description}")
        write_report(settings, context.run.run_id, results)
    except Exception as exc:  # noqa: BLE001 - the report must not hide the build's own outcome
        context.log.warning(f"the quality report could not record the dbt build's results: {exc}")
    return results


def dbt_target() -> str:
    """The dbt target a build uses (``JISR_DBT_TARGET``, as dbt_project/profiles.yml reads it)."""
    return os.environ.get("JISR_DBT_TARGET") or "duckdb"


class _LakeExport:
    """The outcome of a lake export run beside the build (see :func:`_raw_lake_export`)."""

    def __init__(self, lake_dir):
        self.lake_dir = lake_dir
        self.error: BaseException | None = None

    def check(self) -> None:
        if self.error is not None:
            raise dg.Failure(f"the warehouse was built, but the open raw layer (Parquet lake under "
                             f"{self.lake_dir}) could not be exported: {self.error}") from self.error


@contextlib.contextmanager
def _raw_lake_export(context: dg.AssetExecutionContext, settings):
    """Bring the open raw layer (``ingestion/lake.py``) up to date with the raw store while
    dbt builds: so the lake holds the raw rows this build read.

    dbt on DuckDB reads the raw store itself (attached read-only), so the export runs beside
    the build, in a thread, where its Parquet writing takes what the build leaves of the
    cores (refreshes at 1,000,000 beneficiaries, four each way: the ingestion and dbt steps
    together took 2.0 s less on average for a full refresh, 2.5 s for an incremental one,
    than with the export inside ingestion). On any other target (Spark reads
    the lake) it runs before the build, and its failure stops the step there. Beside the
    build, a failure is kept in the object this yields (``check()`` raises it), so the step
    keeps the build's parse state and docs before it fails; the build's own error, if any,
    comes first. Leaving the block waits for the export (a DuckDB COPY cannot be stopped).
    """
    from ingestion.lake import export_raw
    from orchestration.assets.ingest import CONTRACTS

    outcome = _LakeExport(settings.lake_dir)

    def export():
        return export_raw(settings.store_path, settings.lake_dir, CONTRACTS)

    if dbt_target() != "duckdb":
        context.log.info(f"open raw layer (Parquet), before dbt reads it: {export().summary()}")
        yield outcome
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jisr-lake") as pool:
        future = pool.submit(export)
        try:
            yield outcome
        except BaseException:
            if future.exception() is not None:  # waits for the export; the build's error wins
                context.log.error(f"open raw layer (Parquet) export failed too: {future.exception()}")
            raise
    outcome.error = future.exception()
    if outcome.error is None:  # logged here: Dagster's log is written from the step's thread
        context.log.info(f"open raw layer (Parquet): {future.result().summary()}")


def _refresh_docs(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings, target_path) -> None:
    """The dbt docs page, generated again only when the project or the warehouse's schema
    (what the page shows: models, tests, descriptions, columns and types) changed."""
    docs_dir = settings.reports_dir / "dbt-docs"
    try:
        fingerprint = docs_fingerprint(settings, dbt_schemas(MANIFEST))
    except Exception as exc:  # noqa: BLE001 - the docs are secondary: generate them anyway
        context.log.warning(f"dbt docs: could not read the warehouse schema ({exc}); generating the docs")
        fingerprint = None
    if fingerprint is not None and docs_are_current(docs_dir, fingerprint):
        context.log.info(f"dbt docs unchanged (same project and warehouse schema): {docs_dir / 'static_index.html'}")
        return
    # Docs from the build's own manifest (--no-compile: nothing is compiled twice).
    docs = dbt.cli(["docs", "generate", "--static", "--no-compile"], raise_on_error=False, manifest=MANIFEST,
                   dagster_dbt_translator=TRANSLATOR, target_path=target_path)
    docs.wait()
    page = target_path / "static_index.html"
    if docs.is_successful() and page.exists():
        context.log.info(f"dbt docs: {keep_docs(page, docs_dir, fingerprint or '')}")
    else:
        context.log.warning("dbt docs generate failed; the warehouse itself was built")
