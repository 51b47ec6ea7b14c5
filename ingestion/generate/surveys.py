"""Outcome surveys with planted treatment effects (three studies).

========================  ===========  =============================================
study                     programme    design
========================  ===========  =============================================
``tayssir_2025``          TAY-01       cluster-randomised by commune (half of the
                                       sampled rural communes treated); baseline +
                                       endline; naive endline difference unbiased
``asd_2025``              ASD-01       selection on observables: poorer and larger
                                       households are more likely treated, and the
                                       same covariates drive the outcome *trend*;
                                       rounds -1, 0 (pre) and 1, 2 (post); more
                                       attrition in the comparison group at endline
``microcredit_2025``      MCF-01       individually randomised (exactly half
                                       treated); baseline + endline
========================  ===========  =============================================

Outcomes follow ``y_it = level(x_i) + u_i + c_k + t * trend(x_i) + effect * D_i * post_t + e_it``
with a constant (homogeneous) planted effect per (study, outcome), so ATE = ATT = effect.
In ``asd_2025`` the naive endline difference and the plain DiD are biased because
treatment depends on vulnerability_score, household_size and head_female, which also
shift the level and the trend; IPW-DiD or ANCOVA with those covariates recover the effect.
Binary outcomes (``employed``) are drawn with probability ``p + effect``; the effect is on
the probability scale. Units link to the registry through ``cin`` (distinct registry
adults; when the population is too small, the surplus units get an empty cin).
Survey files depend on (seed, population) only, never on the number of months.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ingestion.generate.rand import rng_for
from ingestion.generate.writers import NULL_INT, day

STUDIES = {
    "tayssir_2025": {
        "programme_code": "TAY-01", "unit_type": "household", "design": "cluster_randomised",
        "assignment": "cluster", "cluster_variable": "commune_code", "n_clusters": 100, "per_cluster": 20,
        "rounds": [(0, "baseline", dt.date(2024, 10, 15)), (1, "endline", dt.date(2025, 10, 15))],
        "effects": {"school_enrolment_rate": 0.08, "food_insecurity_score": -1.2, "monthly_income_mad": 150.0},
        "attrition": {"treated": 0.04, "comparison": 0.04},
        "covariates": ["household_size", "head_age", "head_female", "children_6_15"],
        "selection_covariates": [],
    },
    "asd_2025": {
        "programme_code": "ASD-01", "unit_type": "household", "design": "selection_on_observables",
        "assignment": "individual", "cluster_variable": None, "n_units": 3000,
        "rounds": [(-1, "pre_baseline", dt.date(2024, 3, 15)), (0, "baseline", dt.date(2024, 9, 15)),
                   (1, "midline", dt.date(2025, 4, 15)), (2, "endline", dt.date(2025, 10, 15))],
        "effects": {"monthly_income_mad": 300.0, "food_insecurity_score": -1.5, "employed": 0.05},
        "attrition": {"treated": 0.05, "comparison": 0.12},
        "covariates": ["household_size", "head_age", "head_female"],
        "selection_covariates": ["vulnerability_score", "household_size", "head_female"],
    },
    "microcredit_2025": {
        "programme_code": "MCF-01", "unit_type": "individual", "design": "randomised",
        "assignment": "individual", "cluster_variable": None, "n_units": 2000,
        "rounds": [(0, "baseline", dt.date(2024, 11, 15)), (1, "endline", dt.date(2025, 11, 15))],
        "effects": {"monthly_income_mad": 220.0, "employed": 0.06},
        "attrition": {"treated": 0.07, "comparison": 0.07},
        "covariates": ["household_size", "female"],
        "selection_covariates": [],
    },
}


def _people(world, rng, pool: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n draws from pool: distinct people first, then repeats (repeats get no cin)."""
    if len(pool) >= n:
        return rng.choice(pool, n, replace=False), np.ones(n, dtype=bool)
    extra = rng.choice(pool, n - len(pool), replace=True)
    return np.concatenate([rng.permutation(pool), extra]), np.arange(n) < len(pool)


def _household_stats(world, persons: np.ndarray, at_day: int):
    p = world.p
    hh = p.hh
    size = np.bincount(hh, minlength=int(hh.max()) + 1)
    age = (at_day - p.birth) / 365.25
    kids = np.bincount(hh, weights=(age >= 6) & (age < 16), minlength=int(hh.max()) + 1)
    return size[hh[persons]], kids[hh[persons]].astype(np.int64), age[persons]


def build_study(world, study_id: str) -> tuple[dict, dict, dict]:
    """(units chunk, measurements chunk, truth) of one study."""
    spec = STUDIES[study_id]
    rng = rng_for(world.seed, world.N, "survey:" + study_id)
    p, geo = world.p, world.geo
    base_day = day(next(d for r, _, d in spec["rounds"] if r == 0))
    age_all = (base_day - p.birth) / 365.25
    adults = (age_all >= 18) & (age_all < 80) & (p.reg <= world.m0.first)
    cluster = None
    if study_id == "tayssir_2025":
        heads = np.nonzero(adults & (p.role == 0) & ~geo.urban[p.commune] & (p.score <= 55))[0]
        if len(heads) == 0:
            heads = np.nonzero(adults)[0]
        communes, counts = np.unique(p.commune[heads], return_counts=True)
        k = min(spec["n_clusters"], len(communes))
        chosen = rng.choice(communes, k, replace=False, p=counts / counts.sum())
        persons, linked, cluster = [], [], []
        for c in chosen:
            pool = heads[p.commune[heads] == c]
            per = spec["per_cluster"] * spec["n_clusters"] // k
            who, ok = _people(world, rng, pool, per)
            persons.append(who), linked.append(ok), cluster.append(np.full(per, c))
        persons, linked, cluster = np.concatenate(persons), np.concatenate(linked), np.concatenate(cluster)
        treated_clusters = rng.permutation(chosen)[: k // 2]
        D = np.isin(cluster, treated_clusters)
    elif study_id == "asd_2025":
        pool = np.nonzero(adults & (p.role == 0) & (p.score <= 70))[0]
        persons, linked = _people(world, rng, pool if len(pool) else np.nonzero(adults)[0], spec["n_units"])
    else:
        pool = np.nonzero(adults & (age_all < 65) & (p.score >= 10) & (p.score <= 75))[0]
        persons, linked = _people(world, rng, pool if len(pool) else np.nonzero(adults)[0], spec["n_units"])
    n = len(persons)
    hh_size, kids, age = _household_stats(world, persons, base_day)
    v = p.score[persons]
    female = (p.sex[persons] == 0).astype(float)
    s = hh_size.astype(float)
    if study_id == "asd_2025":
        logit = -0.2 - 0.06 * (v - 40) + 0.30 * (s - 4.5) + 0.4 * female
        D = rng.random(n) < 1 / (1 + np.exp(-logit))
    elif study_id == "microcredit_2025":
        D = np.zeros(n, dtype=bool)
        D[rng.permutation(n)[: n // 2]] = True
    c_eff = {}
    if cluster is not None:
        for c in np.unique(cluster):
            c_eff[c] = rng.normal()
        ck = np.array([c_eff[c] for c in cluster])
    else:
        ck = np.zeros(n)
    u = rng.normal(size=n)
    rounds = spec["rounds"]
    post_rounds = [r for r, _, _ in rounds if r > 0]
    endline = max(post_rounds)
    attr_p = np.where(D, spec["attrition"]["treated"], spec["attrition"]["comparison"])
    missing_end = rng.random(n) < attr_p
    missing_mid = rng.random(n) < 0.03
    eff = spec["effects"]
    records = []  # (unit index, round, variable, value or nan, day)

    def outcome(var: str, t: int, post: bool) -> np.ndarray:
        e = rng.normal(size=n)
        d = D * post
        if study_id == "tayssir_2025":
            if var == "school_enrolment_rate":
                y = 0.62 + 0.003 * (v - 35) + 0.05 * ck + 0.07 * u + 0.03 * t + eff[var] * d + 0.06 * e
                return np.clip(y, 0, 1).round(3)
            if var == "food_insecurity_score":
                y = 11 - 0.08 * (v - 35) + 1.0 * ck + 2.0 * u - 0.4 * t + eff[var] * d + 2.0 * e
                return np.clip(y, 0, 27).round(1)
            y = 1800 + 25 * (v - 35) + 250 * ck + 380 * u + 80 * t + eff[var] * d + 300 * e
            return np.maximum(y, 0).round(0)
        if study_id == "asd_2025":
            if var == "monthly_income_mad":
                trend = 90 + 8 * (v - 40) + 25 * (s - 4.5)
                y = 1500 + 30 * (v - 40) + 60 * (s - 4.5) + 350 * u + t * trend + eff[var] * d + 250 * e
                return y.round(0)
            if var == "food_insecurity_score":
                trend = -0.35 - 0.03 * (v - 40) + 0.1 * (s - 4.5)
                y = 12 - 0.1 * (v - 40) + 0.3 * (s - 4.5) + 2.0 * u + t * trend + eff[var] * d + 1.8 * e
                return y.round(1)
            prob = np.clip(0.45 + 0.004 * (v - 40) + t * (0.01 + 0.001 * (v - 40)) + 0.05 * u + eff[var] * d, 0.02, 0.98)
            return (rng.random(n) < prob).astype(float)
        if var == "monthly_income_mad":
            y = 2200 + 20 * (v - 40) + 400 * u + 60 * t + eff[var] * d + 350 * e
            return np.maximum(y, 0).round(0)
        prob = np.clip(0.5 + 0.003 * (v - 40) + 0.02 * t + 0.08 * u + eff[var] * d, 0.02, 0.98)
        return (rng.random(n) < prob).astype(float)

    idx = np.arange(n)
    for r, label, when in rounds:
        mday = day(when) + rng.integers(-10, 11, n)
        miss = missing_end if r == endline else (missing_mid if r > 0 else np.zeros(n, dtype=bool))
        if r == 0:
            cov = {"household_size": s, "head_age": np.round(age), "head_female": female,
                   "children_6_15": kids.astype(float), "female": female}
            for name in spec["covariates"]:
                records.append((idx, r, label, name, cov[name], mday))
        for var in eff:
            y = outcome(var, r, r > 0)
            y = np.where(miss, np.nan, y)
            records.append((idx, r, label, var, y, mday))
    prefix = {"tayssir_2025": "TAY", "asd_2025": "ASD", "microcredit_2025": "MCF"}[study_id]
    unit_ids = np.array([f"{prefix}-{i + 1:05d}" for i in range(n)], dtype=object)
    units = {
        "study_id": np.full(n, study_id, dtype=object),
        "unit_id": unit_ids,
        "unit_type": np.full(n, spec["unit_type"], dtype=object),
        "cin": np.where(linked, p.cin[persons], None).astype(object),
        "programme_code": np.full(n, spec["programme_code"], dtype=object),
        "treatment_group": np.where(D, "treated", "comparison").astype(object),
        "cluster_id": (geo.commune_code[cluster] if cluster is not None else np.full(n, None)).astype(object),
        "sex": np.where(female == 1, "F", "M").astype(object),
        "age": np.floor(age).astype(np.int64),
        "region_code": geo.region_code[p.commune[persons]],
        "vulnerability_score": v.round(2),
    }
    # long format, ordered by unit, round, variable
    u_idx = np.concatenate([rec[0] for rec in records])
    rnd = np.concatenate([np.full(n, rec[1]) for rec in records])
    order_var = np.concatenate([np.full(n, i) for i, _ in enumerate(records)])
    order = np.lexsort((order_var, rnd, u_idx))
    labels = np.concatenate([np.full(n, rec[2], dtype=object) for rec in records])
    var = np.concatenate([np.full(n, rec[3], dtype=object) for rec in records])
    val = np.concatenate([rec[4] for rec in records])
    dates = np.concatenate([rec[5] for rec in records])
    meas = {
        "study_id": np.full(len(order), study_id, dtype=object),
        "unit_id": unit_ids[u_idx[order]],
        "round_index": rnd[order].astype(np.int64),
        "round_label": labels[order],
        "variable": var[order],
        "value": val[order],
        "measured_date": np.where(np.isnan(val[order]), NULL_INT, dates[order]).astype(np.int64),
    }
    truth = {
        "programme_code": spec["programme_code"],
        "design": spec["design"],
        "assignment": spec["assignment"],
        "clustered": cluster is not None,
        "cluster_variable": spec["cluster_variable"],
        "n_clusters": int(len(np.unique(cluster))) if cluster is not None else None,
        "selection_on_observables": spec["design"] == "selection_on_observables",
        "selection_covariates": spec["selection_covariates"],
        "covariates_round0": spec["covariates"],
        "rounds": [{"round_index": r, "round_label": lab, "date": d.isoformat()} for r, lab, d in rounds],
        "pre_rounds": [r for r, _, _ in rounds if r <= 0],
        "post_rounds": post_rounds,
        "endline_round": endline,
        "planted_effects": dict(eff),
        "effect_rounds": post_rounds,
        "attrition_rate_planned": spec["attrition"],
        "attrition_endline": {"treated": int((missing_end & D).sum()), "comparison": int((missing_end & ~D).sum())},
        "n_units": int(n), "n_treated": int(D.sum()), "n_linked_to_registry": int(linked.sum()),
        "unit_type": spec["unit_type"],
    }
    return units, meas, truth
