"""Quality configuration (``config/quality.yml``): check severities and their parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingestion.contracts import VolumeRule

SEVERITIES = ("block", "warn")

# Check names: constants that state the predicate a passing check guarantees.
REFERENCES_RESOLVE = "references_resolve_to_dimensions"
TOTALS_RECONCILE = "totals_reconcile_with_raw"
ROW_COUNTS = "row_counts_within_tolerance"
FRESHNESS = "partner_deliveries_are_fresh"
NO_IDENTIFIERS = "no_direct_identifiers_published"
NO_SMALL_CELLS = "no_small_cells_published"
SUITE_VALIDATED = "deliveries_validated_by_suite"
NO_PERSON_LEVEL = "no_person_level_data_published"
MONTHLY_VOLUME = "monthly_volume_within_history"
CHECK_NAMES = (REFERENCES_RESOLVE, TOTALS_RECONCILE, ROW_COUNTS, FRESHNESS, MONTHLY_VOLUME, NO_IDENTIFIERS,
               NO_PERSON_LEVEL, NO_SMALL_CELLS, SUITE_VALIDATED)
# Checks of the build warehouse (every schema dbt builds, the internal `detail` included);
# the others check the file about to be published or the raw store.
WAREHOUSE_CHECKS = (REFERENCES_RESOLVE, TOTALS_RECONCILE)
DEFAULT_REFERENCE_SCHEMAS = ("detail", "marts")  # where references_resolve_to_dimensions looks


# Schemas of the build warehouse that are published (``publish.schemas``): copied into the
# serving file, and the only ones the evaluator role reads on PostgreSQL.
DEFAULT_PUBLISH_SCHEMAS = ("marts", "impact")
DEFAULT_RUN_COLUMNS = ("run_id", "estimated_at")
DEFAULT_NOT_REPRODUCED = ("marts.fct_deliveries", "marts.mart_quality_scorecard")


class QualityConfigError(ValueError):
    """config/quality.yml is invalid."""


@dataclass(frozen=True)
class QualityConfig:
    checks: dict[str, dict[str, Any]]
    chunk_rows: int = 250_000
    gx_workers: int = 1
    publish_schemas: tuple[str, ...] = DEFAULT_PUBLISH_SCHEMAS
    history_keep: int = 5
    lock_timeout_seconds: float = 0.0
    # `jisr reproduce`: columns that name the run that made a figure, not the figure (left out
    # of a table's fingerprint), and the published tables a rebuild does not reproduce
    run_columns: tuple[str, ...] = DEFAULT_RUN_COLUMNS
    not_reproduced: tuple[str, ...] = DEFAULT_NOT_REPRODUCED
    deliveries: VolumeRule = VolumeRule()  # how much smaller than the delivery it replaces a file may be
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False)

    def severity(self, check: str) -> str:
        return self.checks[check]["severity"]

    def blocking(self, check: str) -> bool:
        return self.severity(check) == "block"

    def params(self, check: str) -> dict[str, Any]:
        return self.checks[check]

    @property
    def reference_schemas(self) -> tuple[str, ...]:
        """Schemas of the build warehouse whose facts and dimensions the references check reads."""
        return tuple(self.params(REFERENCES_RESOLVE).get("schemas") or DEFAULT_REFERENCE_SCHEMAS)


def parse_config(data: dict, path: Path | None = None) -> QualityConfig:
    data = data or {}
    checks = dict(data.get("checks") or {})
    unknown = set(checks) - set(CHECK_NAMES)
    if unknown:
        raise QualityConfigError(f"{path}: unknown checks {sorted(unknown)}; known: {', '.join(CHECK_NAMES)}")
    for name in CHECK_NAMES:
        params = dict(checks.get(name) or {})
        params.setdefault("severity", "block")
        if params["severity"] not in SEVERITIES:
            raise QualityConfigError(f"{path}: check {name}: severity must be one of {SEVERITIES}, "
                                     f"not {params['severity']!r}")
        checks[name] = params
    _share(checks[ROW_COUNTS].get("max_drop_share", 0.2), f"{ROW_COUNTS}.max_drop_share", path)
    _share(checks[MONTHLY_VOLUME].get("min_share", 0.5), f"{MONTHLY_VOLUME}.min_share", path)
    if checks[FRESHNESS].get("reference", "latest_batch") not in ("latest_batch", "now"):
        raise QualityConfigError(f"{path}: {FRESHNESS}.reference must be latest_batch or now")
    gx = data.get("great_expectations") or {}
    publish = data.get("publish") or {}
    keep = int(publish.get("history_keep", 5))
    reproduce = publish.get("reproduce") or {}
    unknown = set(reproduce) - {"run_columns", "not_compared"}
    if unknown:
        raise QualityConfigError(f"{path}: publish.reproduce: unknown settings {sorted(unknown)}; "
                                 "known: run_columns, not_compared")
    workers = int(gx.get("workers", 1))
    if workers < 0:
        raise QualityConfigError(f"{path}: great_expectations.workers must be 0 or more")
    if keep < 1:
        raise QualityConfigError(f"{path}: publish.history_keep must be at least 1 (rollback needs one file)")
    return QualityConfig(
        checks=checks,
        deliveries=_volume_rule(data.get("deliveries") or {}, path),
        chunk_rows=int(gx.get("chunk_rows", 250_000)),
        gx_workers=workers,
        publish_schemas=tuple(publish.get("schemas", DEFAULT_PUBLISH_SCHEMAS)),
        history_keep=keep,
        lock_timeout_seconds=float(publish.get("lock_timeout_seconds", 0)),
        run_columns=tuple(reproduce.get("run_columns", DEFAULT_RUN_COLUMNS)),
        not_reproduced=tuple(reproduce.get("not_compared", DEFAULT_NOT_REPRODUCED)),
        path=path,
        raw=data,
    )


def _share(value, name: str, path: Path | None) -> float:
    """A setting that is a share (0 to 1)."""
    if not 0 <= float(value) <= 1:
        raise QualityConfigError(f"{path}: {name} must be between 0 and 1")
    return float(value)


def _volume_rule(data: dict, path: Path | None) -> VolumeRule:
    """The ``deliveries`` section: see ingestion.contracts.VolumeRule."""
    unknown = set(data) - {"max_drop_share", "min_rows", "accept_smaller"}
    if unknown:
        raise QualityConfigError(f"{path}: deliveries: unknown keys {sorted(unknown)}; known: max_drop_share, "
                                 "min_rows, accept_smaller")
    default = VolumeRule()
    share = _share(data.get("max_drop_share", default.max_drop_share), "deliveries.max_drop_share", path)
    min_rows = data.get("min_rows", default.min_rows)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise QualityConfigError(f"{path}: deliveries.min_rows must be a whole number, 0 or more")
    accepted = [str(h).strip().lower() for h in data.get("accept_smaller") or []]
    wrong = [h for h in accepted if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
    if wrong:
        raise QualityConfigError(f"{path}: deliveries.accept_smaller: {wrong[0]!r} is not a SHA-256 (64 hexadecimal "
                                 "digits, as the rejection report gives it)")
    return VolumeRule(max_drop_share=share, min_rows=min_rows,
                      accept_smaller=frozenset(accepted))


def load_config(path: Path) -> QualityConfig:
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    return parse_config(data, path)


def config_for(settings) -> QualityConfig:
    """The quality configuration of a project (``<config_dir>/quality.yml``)."""
    return load_config(Path(settings.config_dir) / "quality.yml")
