"""Reading the evaluation panel and shaping it for the estimators.

The panel (``detail.mart_evaluation_panel``, internal: person-level) has one row per study unit x round x variable.
For one study this module builds:

- ``units``: one row per unit (index ``unit_id``) with ``treated`` (0/1), ``cluster``,
  ``programme_code``, ``treatment_group``, the subgroup columns and one column per
  baseline covariate (its value at round 0);
- the outcome matrix of a variable: one row per unit, one column per ``round_index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from impact.config import SUBGROUP_DIMENSIONS, UNIT_COVARIATES, StudySettings
from impact.disclosure import DEFAULT_K, count_text

PANEL_TABLE = "detail.mart_evaluation_panel"
COSTS_TABLE = "marts.mart_programme_costs"
PANEL_COLUMNS = (
    "study_id",
    "programme_code",
    "unit_id",
    "unit_type",
    "person_key",
    "treatment_group",
    "is_treated",
    "cluster_id",
    "sex",
    "age",
    "age_band",
    "region_code",
    "vulnerability_score",
    "vulnerability_tercile",
    "round_index",
    "round_label",
    "variable",
    "value",
)
COST_COLUMNS = (
    "programme_code",
    "programme_name",
    "action_line",
    "budget_mad",
    "transfers_paid_mad",
    "beneficiaries_reached",
    "cost_basis",
    "cost_per_beneficiary_mad",
)
UNIT_LEVEL = (
    "programme_code",
    "treatment_group",
    "is_treated",
    "cluster_id",
    "sex",
    "age",
    "age_band",
    "region_code",
    "vulnerability_score",
    "vulnerability_tercile",
)
RESERVED = {"treated", "cluster", "baseline_outcome", *UNIT_LEVEL}


class PanelError(ValueError):
    """The evaluation panel is missing or does not have the documented shape."""


def check_panel(panel: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PANEL_COLUMNS if c not in panel.columns]
    if missing:
        raise PanelError(f"{PANEL_TABLE} lacks columns {missing}; expected {list(PANEL_COLUMNS)}")
    bad_groups = sorted(set(panel["treatment_group"].dropna().unique()) - {"treated", "comparison"})
    if bad_groups:
        raise PanelError(f"{PANEL_TABLE}: treatment_group must be 'treated' or 'comparison', found {bad_groups}")
    return panel


@dataclass
class StudyData:
    study_id: str
    units: pd.DataFrame
    values: pd.DataFrame  # unit_id, round_index, variable, value (long)
    round_labels: dict[int, str]
    endline: int
    outcomes: list[str]
    covariates: list[str]
    notes: list[str] = field(default_factory=list)

    def outcome_matrix(self, variable: str, unit_ids=None) -> pd.DataFrame:
        rows = self.values[self.values["variable"] == variable]
        matrix = rows.groupby(["unit_id", "round_index"])["value"].first().unstack("round_index")
        rounds = sorted(int(r) for r in rows["round_index"].unique())
        matrix = matrix.reindex(columns=rounds)
        matrix.columns = [int(c) for c in matrix.columns]
        index = self.units.index if unit_ids is None else unit_ids
        return matrix.reindex(index).astype(float)


def build_study(panel: pd.DataFrame, study_id: str, settings: StudySettings, cluster: str,
                min_cell: int = DEFAULT_K) -> StudyData:
    """Shape one study's panel rows into units, values, outcomes and covariates.

    ``min_cell``: the small-cell threshold k; the notes say "fewer than k units" rather
    than a count of 1 to k - 1 (:mod:`impact.disclosure`)."""
    rows = panel[panel["study_id"] == study_id]
    notes: list[str] = []
    units = rows.groupby("unit_id", sort=True)[list(UNIT_LEVEL)].first()  # first non-null value per column
    units["treated"] = (units["treatment_group"] == "treated").astype(int)
    units["cluster"] = units.index.to_series() if cluster == "unit_id" else units[cluster]
    no_cluster = units["cluster"].isna()
    if no_cluster.any():
        notes.append(f"{count_text(int(no_cluster.sum()), min_cell)} without {cluster}: each is its own cluster")
        units.loc[no_cluster, "cluster"] = "unit:" + units.index[no_cluster].astype(str)
    units["cluster"] = units["cluster"].astype(str)
    for col in ("age", "vulnerability_score"):
        units[col] = pd.to_numeric(units[col], errors="coerce").astype(float)
    units["female"] = np.where(units["sex"].isna(), np.nan, (units["sex"] == "F").astype(float))

    values = rows[["unit_id", "round_index", "round_label", "variable", "value"]].copy()
    values["round_index"] = values["round_index"].astype(int)
    values["value"] = pd.to_numeric(values["value"], errors="coerce").astype(float)
    labels = values.dropna(subset=["round_label"]).groupby("round_index")["round_label"].first().to_dict()
    rounds = sorted(values["round_index"].unique())
    endline = int(max(rounds)) if rounds else 0
    measured = values.dropna(subset=["value"])
    at_baseline = set(measured.loc[measured["round_index"] == 0, "variable"])
    at_endline = set(measured.loc[measured["round_index"] == endline, "variable"]) if endline > 0 else set()

    if settings.covariates is None:
        covariates = sorted(at_baseline - at_endline)
        for name, column in (("age", "age"), ("female", "sex"), ("vulnerability_score", "vulnerability_score")):
            # once: a study may also deliver a baseline variable of the same name (female),
            # which the unit column replaces below
            if units[column].notna().any() and name not in covariates:
                covariates.append(name)
    else:
        covariates = []
        for name in settings.covariates:
            if name in UNIT_COVARIATES or name in at_baseline:
                covariates.append(name)
            else:
                notes.append(f"covariate {name!r} is not measured at baseline in study {study_id}: left out")
    clash = [c for c in covariates if c in RESERVED and c not in UNIT_COVARIATES]
    if clash:
        raise PanelError(f"study {study_id}: covariate names {clash} clash with panel columns; rename the variables")
    baseline_values = measured[measured["round_index"] == 0].pivot_table(
        index="unit_id", columns="variable", values="value", aggfunc="first"
    )
    for name in covariates:
        if name not in UNIT_COVARIATES:
            units[name] = baseline_values[name].reindex(units.index).astype(float)

    if settings.outcomes is None:
        outcomes = sorted(at_endline - set(covariates))
    else:
        outcomes = []
        for name in settings.outcomes:
            if name in at_endline:
                outcomes.append(name)
            else:
                notes.append(f"outcome {name!r} is not measured at the endline of study {study_id}: skipped")
    return StudyData(study_id, units, values, {int(k): str(v) for k, v in labels.items()}, endline, outcomes, covariates, notes)
