"""Quality gates as Dagster asset checks: thin wrappers over ``quality.checks``.

- ``delivery_checks`` on each ``raw/<source>``: ``partner_deliveries_are_fresh`` and
  ``deliveries_validated_by_suite``; this step also writes the run's quality report (the
  Great Expectations validation of every delivery), so it exists even when a later step fails.
- ``warehouse_checks`` on the build warehouse: ``references_resolve_to_dimensions`` on every
  ``fct_*`` of ``detail`` (internal, person-level) and ``marts``, and
  ``totals_reconcile_with_raw`` on the reconciled tables.
- ``candidate_checks`` on ``serving/candidate`` (the file about to be published, after
  disclosure control): ``row_counts_within_tolerance``, ``no_direct_identifiers_published``,
  ``no_person_level_data_published``, ``no_small_cells_published``.

A check is blocking when its severity in ``config/quality.yml`` is ``block``: a failure
stops every downstream step, the publish step among them. Each result links the quality
report (``report`` metadata).
"""


from collections.abc import Iterable

import dagster as dg

from jisr.settings import get_settings
from orchestration.metadata import markdown_table
from orchestration.runlock import RefreshLock
from quality.config import (FRESHNESS, MONTHLY_VOLUME, NO_IDENTIFIERS, NO_PERSON_LEVEL, NO_SMALL_CELLS,
                            REFERENCES_RESOLVE, ROW_COUNTS, SUITE_VALIDATED, TOTALS_RECONCILE, config_for)

PROJECT = get_settings()  # project-relative paths only (config, contracts); JISR_HOME is read per run
CFG = config_for(PROJECT)
CANDIDATE_KEY = dg.AssetKey(["serving", "candidate"])


def _severity(severity: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if severity == "block" else dg.AssetCheckSeverity.WARN


def _metadata(results, report=None) -> dict:
    meta: dict = {}
    if report is not None:
        meta["report"] = dg.MetadataValue.path(str(report))
    if len(results) > 1 or any(r.target for r in results):
        meta["results"] = dg.MetadataValue.md(markdown_table(
            ["about", "result", "description"],
            [[r.target or "warehouse", "passed" if r.passed else "FAILED", r.description]
             for r in sorted(results, key=lambda r: (r.passed, r.target or ""))], max_rows=200))
    details = {r.target or "warehouse": r.metadata for r in results if r.metadata}
    if details:
        meta["details"] = dg.MetadataValue.json(details)
    return meta


def check_result(asset_key: dg.AssetKey, check: str, results: list, report=None) -> dg.AssetCheckResult:
    """One Dagster result from one or more ``quality.checks.CheckResult`` of the same check."""
    severity = CFG.severity(check)
    if not results:
        return dg.AssetCheckResult(asset_key=asset_key, check_name=check, passed=True, severity=_severity(severity),
                                   description="nothing to check", metadata=_metadata([], report))
    failing = [r for r in results if not r.passed]
    passed = not failing
    description = (results[0].description if len(results) == 1 else
                   "; ".join(r.description for r in failing) if failing else
                   f"{len(results)} results, all passed")
    return dg.AssetCheckResult(asset_key=asset_key, check_name=check, passed=passed,
                               severity=_severity(severity), description=description[:2000],
                               metadata=_metadata(results, report))


def _selected(context, key: dg.AssetKey, check: str) -> bool:
    return dg.AssetCheckKey(key, check) in context.selected_asset_check_keys


# --- deliveries ------------------------------------------------------------------------------
def build_delivery_checks(contracts: dict) -> dg.AssetChecksDefinition:
    fresh_sources = [s for s in contracts if s not in set(CFG.params(FRESHNESS).get("exclude") or ())]
    specs = [dg.AssetCheckSpec(FRESHNESS, asset=dg.AssetKey(["raw", s]), blocking=CFG.blocking(FRESHNESS),
                               description=f"The last monthly delivery of {s} is recent enough (config/quality.yml).")
             for s in fresh_sources]
    volume_sources = [s for s in contracts if s not in set(CFG.params(MONTHLY_VOLUME).get("exclude") or ())]
    specs += [dg.AssetCheckSpec(MONTHLY_VOLUME, asset=dg.AssetKey(["raw", s]), blocking=CFG.blocking(MONTHLY_VOLUME),
                                description=f"No month of {s} has far fewer rows than the months before it "
                                            "(config/quality.yml).")
              for s in volume_sources]
    specs += [dg.AssetCheckSpec(SUITE_VALIDATED, asset=dg.AssetKey(["raw", s]), blocking=CFG.blocking(SUITE_VALIDATED),
                                description=f"Every delivery of {s} in the run was validated by its Great "
                                            "Expectations suite without errors.")
              for s in contracts]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="delivery_checks",
                          description="Freshness and monthly volume of partner deliveries and Great Expectations "
                                      "validation; "
                                      "writes the run's quality report.")
    def delivery_checks(context: dg.AssetCheckExecutionContext, refresh_lock: RefreshLock):
        from quality.checks import check_freshness, check_monthly_volume, check_suite_validated, connect_for_audit
        from quality.report import write_report

        settings = get_settings()
        con = connect_for_audit(":memory:", settings.store_path, read_only=False)  # the raw store only
        try:
            fresh = check_freshness(con, CFG, {s: contracts[s] for s in fresh_sources})
            volume = check_monthly_volume(con, CFG, {s: contracts[s] for s in volume_sources})
            suite = check_suite_validated(con, CFG, context.run.run_id, sources=list(contracts))
        finally:
            con.close()
        report = write_report(settings, context.run.run_id, fresh + volume + suite)
        context.log.info(f"quality report: {report}")
        for source in contracts:
            key = dg.AssetKey(["raw", source])
            if source in fresh_sources and _selected(context, key, FRESHNESS):
                yield check_result(key, FRESHNESS, [r for r in fresh if r.target == source], report)
            if source in volume_sources and _selected(context, key, MONTHLY_VOLUME):
                yield check_result(key, MONTHLY_VOLUME, [r for r in volume if r.target == source], report)
            if _selected(context, key, SUITE_VALIDATED):
                yield check_result(key, SUITE_VALIDATED, [r for r in suite if r.target == source], report)

    return delivery_checks


# --- marts -----------------------------------------------------------------------------------
def _name(key: dg.AssetKey) -> str:
    """``schema.table`` of a warehouse asset key ``<schema>/<table>``."""
    return ".".join(key.path)


def _columns(assets_defs) -> dict[dg.AssetKey, set[str] | None]:
    """Asset keys of the given assets, with their documented columns when known."""
    out = {}
    for assets_def in assets_defs:
        for spec in assets_def.specs:
            schema = (spec.metadata or {}).get("dagster/column_schema")
            out[spec.key] = {c.name for c in schema.columns} if schema is not None else None
    return out


def build_warehouse_checks(assets_defs) -> dg.AssetChecksDefinition | None:
    columns = _columns(assets_defs)
    dimensions = CFG.params(REFERENCES_RESOLVE).get("dimensions") or {}
    marts: dict[str, dg.AssetKey] = {}  # model name -> asset key <schema>/<model>
    for schema in CFG.reference_schemas:
        for k in columns:
            if len(k.path) == 2 and k.path[0] == schema:
                marts.setdefault(k.path[-1], k)
    dim_keys = {c for cols in dimensions.values() for c in cols}
    # facts holding a column named like a dimension key (all facts when columns are unknown)
    facts = sorted(name for name in marts if name.startswith("fct_")
                   and (columns[marts[name]] is None or columns[marts[name]] & dim_keys))
    reconciled = sorted({r["table"].split(".")[-1] for r in CFG.params(TOTALS_RECONCILE).get("reconciliations") or ()
                         if r.get("table") and r["table"].split(".")[-1] in marts})
    dims = [marts[d] for d in dimensions if d in marts]
    specs = [dg.AssetCheckSpec(REFERENCES_RESOLVE, asset=marts[t], blocking=CFG.blocking(REFERENCES_RESOLVE),
                               additional_deps=dims,
                               description="Every key naming a dimension resolves to a row of that dimension.")
             for t in facts]
    specs += [dg.AssetCheckSpec(TOTALS_RECONCILE, asset=marts[t], blocking=CFG.blocking(TOTALS_RECONCILE),
                                description="Totals agree with the raw layer (config/quality.yml reconciliations).")
              for t in reconciled]
    if not specs:
        return None

    @dg.multi_asset_check(specs=specs, can_subset=True, name="warehouse_checks",
                          description="Referential integrity and reconciliation with the raw layer, on the build "
                                      "warehouse before anything is published.")
    def warehouse_checks(context: dg.AssetCheckExecutionContext, refresh_lock: RefreshLock):
        from quality.checks import check_reconciliation, check_references, connect_for_audit
        from quality.report import write_report

        settings = get_settings()
        con = connect_for_audit(settings.build_path, settings.store_path)
        try:
            refs = check_references(con, CFG)
            recs = check_reconciliation(con, CFG)
        finally:
            con.close()
        report = write_report(settings, context.run.run_id, refs + recs)
        for table in facts:
            key = marts[table]
            if _selected(context, key, REFERENCES_RESOLVE):
                yield check_result(key, REFERENCES_RESOLVE, [r for r in refs if r.target == _name(key)], report)
        for table in reconciled:
            key = marts[table]
            if _selected(context, key, TOTALS_RECONCILE):
                yield check_result(key, TOTALS_RECONCILE, [r for r in recs if r.target == _name(key)], report)

    return warehouse_checks


# --- the candidate serving file ----------------------------------------------------------------
CANDIDATE_CHECKS = (ROW_COUNTS, NO_IDENTIFIERS, NO_PERSON_LEVEL, NO_SMALL_CELLS)


def build_candidate_checks() -> dg.AssetChecksDefinition:
    descriptions = {
        ROW_COUNTS: "No published table lost more than the configured share of its rows since the last publication.",
        NO_IDENTIFIERS: "No column or value of the file to publish is a direct identifier (CIN, phone, names).",
        NO_PERSON_LEVEL: "No table of the file to publish is person-level (no pseudonymous person, household "
                         "or study-unit key): person-level tables stay in the internal schema detail.",
        NO_SMALL_CELLS: "No cell of the file to publish counts fewer people than the disclosure threshold.",
    }
    specs = [dg.AssetCheckSpec(name, asset=CANDIDATE_KEY, blocking=CFG.blocking(name), description=descriptions[name])
             for name in CANDIDATE_CHECKS]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="candidate_checks",
                          description="Checks of the exact file about to be published (after disclosure control).")
    def candidate_checks(context: dg.AssetCheckExecutionContext, refresh_lock: RefreshLock):
        from jisr.publish import candidate_path
        from quality.checks import connect_for_audit, run_audit
        from quality.report import write_report

        settings = get_settings()
        path = candidate_path(settings, context.run.run_id)
        wanted = [n for n in CANDIDATE_CHECKS if _selected(context, CANDIDATE_KEY, n)]
        if not path.exists():
            raise RuntimeError(f"no candidate warehouse for run {context.run.run_id} at {path}: materialise "
                               "serving/candidate in the same run")
        con = connect_for_audit(path, settings.store_path)
        try:
            results = run_audit(con, settings, CFG, run_id=context.run.run_id, only=wanted)
        finally:
            con.close()
        report = write_report(settings, context.run.run_id, results)
        for name in wanted:
            yield check_result(CANDIDATE_KEY, name, [r for r in results if r.check == name], report)

    return candidate_checks


def build_quality_checks(contracts: dict, warehouse_assets: Iterable) -> list[dg.AssetChecksDefinition]:
    """Every quality check of the code location (for ``orchestration/definitions.py``):
    ``warehouse_assets`` are the assets definitions holding the marts (the dbt assets)."""
    checks = [build_delivery_checks(contracts), build_candidate_checks()]
    warehouse = build_warehouse_checks(list(warehouse_assets))
    if warehouse is not None:
        checks.append(warehouse)
    return checks
