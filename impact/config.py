"""Evaluation settings (``config/evaluation.yml``): parsing, defaults and validation.

The file is documented inline; this module turns it into an :class:`EvaluationConfig`
and refuses anything it does not understand with an :class:`EvaluationConfigError` that
names the offending key. Only the standard library and PyYAML are imported here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ESTIMATOR_TYPES = ("diff_in_means", "did", "ancova", "ipw_did", "event_study")
COV_TYPES = ("cluster", "hc1", "nonrobust")
CLUSTER_COLUMNS = ("cluster_id", "unit_id", "region_code")
SUBGROUP_DIMENSIONS = ("sex", "age_band", "region_code", "vulnerability_tercile")
UNIT_COVARIATES = ("age", "vulnerability_score", "female")
TRIM_RULES = ("fixed", "crump", "none")
COST_BASES = ("mart", "transfers_paid", "budget")
DIRECTIONS = ("higher_is_better", "lower_is_better")
COMPARISONS = ("same_programme", "whole_study")
# Options each estimator type accepts (besides name, type and cov_type).
ESTIMATOR_OPTIONS = {
    "diff_in_means": {},
    "did": {"covariates": bool},
    "ancova": {"covariates": bool},
    "ipw_did": {},
    "event_study": {},
}
OVERRIDABLE = ("outcomes", "covariates", "outcome_direction", "comparison", "cluster", "cov_type", "estimators")

DEFAULT_ESTIMATORS = [
    {"name": "diff_in_means"},
    {"name": "did"},
    {"name": "ancova"},
    {"name": "ancova_covariates", "type": "ancova", "covariates": True},
    {"name": "ipw_did"},
    {"name": "event_study"},
]

DEFAULTS: dict[str, Any] = {
    "studies": "all",
    "programmes": "all",
    "comparison": "same_programme",
    "outcomes": "auto",
    "covariates": "auto",
    "outcome_direction": {},
    "cluster": "cluster_id",
    "cov_type": "cluster",
    "alpha": 0.05,
    "min_clusters_per_group": 2,
    "estimators": DEFAULT_ESTIMATORS,
    "propensity": {"trim": "fixed", "low": 0.05, "high": 0.95, "include_baseline_outcome": False},
    "subgroups": {"dimensions": list(SUBGROUP_DIMENSIONS), "min_size": 30, "estimators": "all"},
    "cost_effectiveness": {"estimator": "did", "cost_basis": "mart"},
    "overrides": {},
}


class EvaluationConfigError(ValueError):
    """The evaluation settings file is invalid."""


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    type: str
    cov_type: str | None = None  # None: the study's cov_type
    covariates: bool = False

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("did", "ancova"):
            out["covariates"] = self.covariates
        return out


@dataclass(frozen=True)
class Propensity:
    trim: str = "fixed"
    low: float = 0.05
    high: float = 0.95
    include_baseline_outcome: bool = False

    def describe(self) -> str:
        if self.trim == "fixed":
            return f"drop units with propensity outside [{self.low:g}, {self.high:g}]"
        if self.trim == "crump":
            return "Crump et al. (2009) optimal trimming: drop units with propensity outside [a, 1-a]"
        return "no trimming"


@dataclass(frozen=True)
class StudySettings:
    """Settings in force for one study (defaults with that study's overrides applied)."""

    outcomes: tuple[str, ...] | None  # None: auto
    covariates: tuple[str, ...] | None  # None: auto
    outcome_direction: dict[str, str]
    comparison: str
    cluster: str
    cov_type: str
    estimators: tuple[EstimatorSpec, ...]

    def direction(self, outcome: str) -> str:
        return self.outcome_direction.get(outcome, "higher_is_better")


@dataclass(frozen=True)
class EvaluationConfig:
    studies: tuple[str, ...] | None  # None: all
    programmes: tuple[str, ...] | None
    alpha: float
    min_clusters_per_group: int
    propensity: Propensity
    subgroup_dimensions: tuple[str, ...]
    subgroup_min_size: int
    subgroup_estimators: tuple[str, ...] | None  # None: all
    cost_estimator: str
    cost_basis: str
    default: StudySettings
    overrides: dict[str, StudySettings] = field(default_factory=dict)
    source: str = ""
    raw: dict = field(default_factory=dict)

    def for_study(self, study_id: str) -> StudySettings:
        return self.overrides.get(study_id, self.default)

    @property
    def ci_level(self) -> float:
        return 1.0 - self.alpha


def _fail(where: str, message: str) -> EvaluationConfigError:
    return EvaluationConfigError(f"evaluation config: {where}: {message}")


def _check_keys(where: str, data: dict, allowed) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _all_or_list(where: str, value: Any, *, word: str = "all") -> tuple[str, ...] | None:
    if value == word:
        return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise _fail(where, f"must be '{word}' or a non-empty list of names, got {value!r}")


def _choice(where: str, value: Any, allowed) -> str:
    if value not in allowed:
        raise _fail(where, f"must be one of {list(allowed)}, got {value!r}")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"must be true or false, got {value!r}")
    return value


def _estimators(where: str, value: Any) -> tuple[EstimatorSpec, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(where, "must be a non-empty list of {name, type, options...} entries")
    specs = []
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(at, "each estimator needs a 'name'")
        kind = _choice(f"{at}.type", entry.get("type", entry["name"]), ESTIMATOR_TYPES)
        options = ESTIMATOR_OPTIONS[kind]
        _check_keys(at, entry, {"name", "type", "cov_type", *options})
        cov_type = entry.get("cov_type")
        if cov_type is not None:
            _choice(f"{at}.cov_type", cov_type, COV_TYPES)
        covariates = _bool(f"{at}.covariates", entry.get("covariates", False))
        specs.append(EstimatorSpec(name=entry["name"], type=kind, cov_type=cov_type, covariates=covariates))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _fail(where, f"estimator names must be unique, got {names}")
    return tuple(specs)


def _study_settings(where: str, data: dict) -> StudySettings:
    outcomes = _all_or_list(f"{where}outcomes", data["outcomes"], word="auto")
    covariates = _all_or_list(f"{where}covariates", data["covariates"], word="auto")
    direction = data["outcome_direction"] or {}
    if not isinstance(direction, dict):
        raise _fail(f"{where}outcome_direction", "must be a mapping outcome -> direction")
    for outcome, value in direction.items():
        _choice(f"{where}outcome_direction.{outcome}", value, DIRECTIONS)
    return StudySettings(
        outcomes=outcomes,
        covariates=covariates,
        outcome_direction={str(k): v for k, v in direction.items()},
        comparison=_choice(f"{where}comparison", data["comparison"], COMPARISONS),
        cluster=_choice(f"{where}cluster", data["cluster"], CLUSTER_COLUMNS),
        cov_type=_choice(f"{where}cov_type", data["cov_type"], COV_TYPES),
        estimators=_estimators(f"{where}estimators", data["estimators"]),
    )


def parse_config(data: dict | None, source: str = "") -> EvaluationConfig:
    """Validate a settings mapping (as read from YAML) and fill in defaults."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise _fail("top level", "must be a mapping of settings")
    _check_keys("top level", data, DEFAULTS)
    merged = copy.deepcopy(DEFAULTS)
    for key, value in data.items():
        if isinstance(DEFAULTS[key], dict) and key not in ("outcome_direction", "overrides"):
            if not isinstance(value, dict):
                raise _fail(key, "must be a mapping")
            _check_keys(key, value, DEFAULTS[key])
            merged[key].update(value)
        else:
            merged[key] = value if value is not None else copy.deepcopy(DEFAULTS[key])

    alpha = merged["alpha"]
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 0.5:
        raise _fail("alpha", f"must be a number in (0, 0.5), got {alpha!r}")
    min_clusters = merged["min_clusters_per_group"]
    if not isinstance(min_clusters, int) or isinstance(min_clusters, bool) or min_clusters < 1:
        raise _fail("min_clusters_per_group", f"must be an integer >= 1, got {min_clusters!r}")

    prop = merged["propensity"]
    trim = _choice("propensity.trim", prop["trim"], TRIM_RULES)
    low, high = prop["low"], prop["high"]
    for name, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
            raise _fail(f"propensity.{name}", f"must be a probability in [0, 1], got {v!r}")
    if trim == "fixed" and not low < high:
        raise _fail("propensity", f"low ({low}) must be below high ({high})")
    propensity = Propensity(
        trim=trim,
        low=float(low),
        high=float(high),
        include_baseline_outcome=_bool("propensity.include_baseline_outcome", prop["include_baseline_outcome"]),
    )

    sub = merged["subgroups"]
    dims = sub["dimensions"] or []
    if not isinstance(dims, list):
        raise _fail("subgroups.dimensions", "must be a list")
    for d in dims:
        _choice("subgroups.dimensions", d, SUBGROUP_DIMENSIONS)
    min_size = sub["min_size"]
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 2:
        raise _fail("subgroups.min_size", f"must be an integer >= 2, got {min_size!r}")
    sub_estimators = _all_or_list("subgroups.estimators", sub["estimators"])

    default = _study_settings("", merged)
    names = {s.name for s in default.estimators}
    if sub_estimators is not None:
        for name in sub_estimators:
            if name not in names:
                raise _fail("subgroups.estimators", f"{name!r} is not a configured estimator name {sorted(names)}")

    cost = merged["cost_effectiveness"]
    cost_basis = _choice("cost_effectiveness.cost_basis", cost["cost_basis"], COST_BASES)
    if not isinstance(cost["estimator"], str):
        raise _fail("cost_effectiveness.estimator", "must be an estimator name")
    if cost["estimator"] not in names:
        raise _fail("cost_effectiveness.estimator", f"{cost['estimator']!r} is not a configured estimator name {sorted(names)}")

    overrides_raw = merged["overrides"] or {}
    if not isinstance(overrides_raw, dict):
        raise _fail("overrides", "must be a mapping study_id -> settings")
    overrides = {}
    for study, values in overrides_raw.items():
        if not isinstance(values, dict):
            raise _fail(f"overrides.{study}", "must be a mapping")
        _check_keys(f"overrides.{study}", values, OVERRIDABLE)
        study_data = {k: merged[k] for k in OVERRIDABLE}
        study_data.update(values)
        overrides[str(study)] = _study_settings(f"overrides.{study}.", study_data)

    return EvaluationConfig(
        studies=_all_or_list("studies", merged["studies"]),
        programmes=_all_or_list("programmes", merged["programmes"]),
        alpha=float(alpha),
        min_clusters_per_group=min_clusters,
        propensity=propensity,
        subgroup_dimensions=tuple(dims),
        subgroup_min_size=min_size,
        subgroup_estimators=sub_estimators,
        cost_estimator=cost["estimator"],
        cost_basis=cost_basis,
        default=default,
        overrides=overrides,
        source=source,
        raw=merged,
    )


def load_config(path: str | Path) -> EvaluationConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvaluationConfigError(f"evaluation config: file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvaluationConfigError(f"evaluation config: {path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))
