"""The simulated world behind the deliveries: people, programmes, money, services.

Everything is vectorised with numpy. Month ``m`` is simulated from the state at the end of
month ``m-1`` with generators seeded by (seed, population size, purpose, m) and stateless
hashes, never from the total number of months, so adding a month never changes earlier
ones. Each ``*_chunks(m)`` method yields typed chunks (see :mod:`writers`) for one file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingestion.generate import catalogue, names
from ingestion.generate.geo import Geo
from ingestion.generate.rand import hash_u, rng_for
from ingestion.generate.writers import NULL_INT, day

CHUNK = 100_000
NAN = np.nan

CIN_PREFIXES = {
    "01": ["K", "KB", "L", "LA", "R", "LB"], "02": ["F", "FA", "FB", "S", "SH", "FL"],
    "03": ["C", "CB", "CD", "D", "DA", "DB"], "04": ["A", "AB", "AD", "AE", "G", "GA", "GK"],
    "05": ["I", "IA", "IB", "Q", "QA"], "06": ["B", "BE", "BH", "BJ", "BK", "BL", "BM", "W", "WA", "M", "MA", "N"],
    "07": ["E", "EE", "EB", "H", "HH", "HA"], "08": ["U", "UA", "UC", "P", "PA"],
    "09": ["J", "JA", "JB", "JC", "JE", "JF", "JH"], "10": ["JK", "JT", "JM"], "11": ["SJ", "SA", "SL"], "12": ["VA", "VB"],
}
CIN_SPACE = 1_100_000  # 1,000,000 six-digit + 100,000 five-digit numbers per prefix

PROG_INDEX = {c: i for i, c in enumerate(catalogue.ENROLMENT_PROGRAMMES)}
EXIT_REASONS = np.array(["completed", "graduated", "no_longer_eligible", "dropped_out", "deceased", "moved"], dtype=object)
PAY_CHANNELS = np.array(["bank", "mobile_wallet", "post_office", "cash_agent"], dtype=object)
PRODUCTS = np.array(["income_generating", "solidarity_group", "agricultural", "housing_improvement"], dtype=object)
SERVICE_TYPES = np.array(["certificate", "registry_update", "benefit_claim", "complaint", "appointment", "disability_card"], dtype=object)
SERVICE_P = np.array([0.30, 0.25, 0.20, 0.10, 0.10, 0.05])
SERVICE_MEDIAN_DAYS = np.array([1.0, 7.0, 15.0, 20.0, 3.0, 25.0])
REQ_CHANNELS = np.array(["web", "mobile", "counter"], dtype=object)
EPS_TYPES = np.array(["children", "elderly", "disability", "women_in_difficulty", "multi_purpose"], dtype=object)
EPS_NAMES = {
    "children": "Centre de protection de l'enfance de",
    "elderly": "Centre pour personnes âgées de",
    "disability": "Centre d'accueil des personnes en situation de handicap de",
    "women_in_difficulty": "Centre d'écoute et d'hébergement des femmes de",
    "multi_purpose": "Établissement multifonctionnel de",
}
LEGAL_FORMS = np.array(["cooperative", "association", "auto_entrepreneur", "sarl"], dtype=object)
SECTORS = np.array(["agriculture", "handicraft", "food_processing", "services", "tourism", "textile", "digital"], dtype=object)
VENTURE_WORDS = np.array(["Al Amal", "Tifawin", "Assafaa", "Nour", "Al Baraka", "Tamount", "Al Wahda", "Argane d'Or",
                          "Al Khair", "Tiguemmi", "Azur", "Ennakhil", "Dar Sanaâ", "Al Fath", "Tawada", "Yasmine"], dtype=object)
FORM_WORDS = {"cooperative": "Coopérative", "association": "Association", "auto_entrepreneur": "Atelier", "sarl": "SARL"}


def months_since_1970(d: np.ndarray) -> np.ndarray:
    return np.asarray(d, dtype="datetime64[D]").astype("datetime64[M]").astype(np.int64)


def first_day_of(mabs: np.ndarray) -> np.ndarray:
    return np.asarray(mabs, dtype=np.int64).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def obj(a) -> np.ndarray:
    return np.asarray(a, dtype=object)


def zfill(a: np.ndarray, width: int) -> np.ndarray:
    return np.char.zfill(np.asarray(a).astype(str), width).astype(object)


@dataclass(frozen=True)
class Month:
    index: int  # 1-based
    mabs: int  # months since 1970-01
    label: str  # YYYY-MM
    first: int  # day number
    last: int

    @property
    def days(self) -> int:
        return self.last - self.first + 1


def month(start_month: str, index: int) -> Month:
    y, mo = (int(x) for x in start_month.split("-"))
    mabs = (y - 1970) * 12 + (mo - 1) + index - 1
    first = int(first_day_of(np.array([mabs]))[0])
    last = int(first_day_of(np.array([mabs + 1]))[0]) - 1
    return Month(index, mabs, f"{1970 + mabs // 12:04d}-{mabs % 12 + 1:02d}", first, last)


class Grow:
    """Parallel growable arrays (amortised appends)."""

    def __init__(self, **dtypes):
        self.n = 0
        self._cap = 1024
        self.a = {k: np.empty(self._cap, dtype=t) for k, t in dtypes.items()}

    def append(self, **cols) -> np.ndarray:
        k = len(next(iter(cols.values())))
        need = self.n + k
        if need > self._cap:
            cap = max(need, int(self._cap * 1.5))
            for name, arr in self.a.items():
                new = np.empty(cap, dtype=arr.dtype)
                new[: self.n] = arr[: self.n]
                self.a[name] = new
            self._cap = cap
        for name, values in cols.items():
            self.a[name][self.n: need] = values
        idx = np.arange(self.n, need)
        self.n = need
        return idx

    def __getattr__(self, name):
        a = self.__dict__.get("a")
        if a is not None and name in a:
            return a[name][: self.n]
        raise AttributeError(name)

    def set(self, name, idx, values):
        self.a[name][idx] = values


class World:
    def __init__(self, geo: Geo, *, population: int, seed: int, start_month: str):
        self.geo = geo
        self.N = population
        self.seed = seed
        self.start_month = start_month
        self.m0 = month(start_month, 1)
        # eligibility thresholds come from the catalogue (eligibility_score_max)
        self.thresholds = [catalogue.BY_CODE[c].eligibility_score_max for c in catalogue.ENROLMENT_PROGRAMMES]
        self.region_prefixes = [CIN_PREFIXES.get(r, ["Y"]) for r in geo.region_codes]
        self.region_counter = np.zeros(len(geo.region_codes), dtype=np.int64)
        self.hh_counter = 0
        self.p = Grow(cin=object, hh=np.int64, first=np.int16, last=np.int16, sex=np.int8, birth=np.int64,
                      commune=np.int32, score=np.float64, disability=np.int8, phone=object, reg=np.int64,
                      role=np.int8, widow=np.int8)
        self.e = Grow(person=np.int64, prog=np.int8, entry=np.int64, exit=np.int64, reason=np.int8, amount=np.float64)
        self.active = None  # (persons x programmes) enrolment index or -1
        self._take = None
        self.ever = None
        self.loans = Grow(person=np.int64, product=np.int8, prog=np.int8, principal=np.float64, term=np.int64,
                          rate=np.float64, disb=np.int64, risk=np.int8, kstop=np.int64, created=np.int64)
        self.req_open: dict[str, np.ndarray] | None = None
        self.req_seq = 0
        self.changed_last: np.ndarray = np.empty(0, dtype=np.int64)
        self.new_last: np.ndarray = np.empty(0, dtype=np.int64)
        self.entered_last = self.exited_last = np.empty(0, dtype=np.int64)
        self._add_households(rng_for(seed, population, "population"), population, self.m0, initial=True)
        self._init_establishments()
        self._init_ventures()

    # ------------------------------------------------------------------ population --
    def _cin(self, region_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(region_idx), dtype=object)
        for r in np.unique(region_idx):
            sel = np.nonzero(region_idx == r)[0]
            prefixes = self.region_prefixes[r]
            c = self.region_counter[r] + np.arange(len(sel), dtype=np.int64)
            self.region_counter[r] += len(sel)
            space = len(prefixes) * CIN_SPACE
            slot = (999_983 * c + 12_345 * (r + 1)) % space
            pre = obj(prefixes)[slot // CIN_SPACE]
            num = slot % CIN_SPACE
            six = num < 1_000_000
            digits = np.where(six, zfill(num, 6), zfill(num - 1_000_000, 5))
            out[sel] = pre + digits
        return out

    def _add_households(self, rng, n_people: int, mo: Month, initial: bool) -> np.ndarray:
        geo = self.geo
        size_p = np.array([0.10, 0.12, 0.15, 0.18, 0.17, 0.12, 0.08, 0.05, 0.03])
        sizes = rng.choice(np.arange(1, 10), size=n_people // 3 + 10, p=size_p)
        csum = np.cumsum(sizes)
        h = int(np.searchsorted(csum, n_people)) + 1
        sizes = sizes[:h].copy()
        sizes[-1] -= csum[h - 1] - n_people
        if sizes[-1] <= 0:
            sizes = sizes[:-1]
        H = len(sizes)
        hh_ids = self.hh_counter + np.arange(H)
        self.hh_counter += H
        commune = rng.choice(len(geo.commune_code), size=H, p=geo.weight)
        urban = geo.urban[commune]
        score = np.clip(100 * rng.beta(2.2, 3.2, H) + np.where(urban, 6.0, -6.0) + rng.normal(0, 4, H), 0.5, 99.5).round(2)
        hh_last = rng.integers(len(names.LAST_FR), size=H)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        hh = np.repeat(np.arange(H), sizes)
        pos = np.arange(n_people) - start[hh]
        size_of = sizes[hh]
        n = n_people
        head_male = rng.random(H) < 0.80
        # most female heads of household live without a spouse (widowed, divorced, separated)
        spouse_p = np.where(head_male[hh], 0.9, 0.2)
        has_spouse = (size_of >= 2) & (hash_u(self.seed, "spouse", hh_ids[hh]) < spouse_p)
        role = np.where(pos == 0, 0, np.where((pos == 1) & has_spouse, 1, 2)).astype(np.int8)
        elder = (pos == size_of - 1) & (size_of >= 5) & (rng.random(n) < 0.15)
        role[elder] = 3
        head_age = np.clip(rng.normal(47, 13, H), 20, 90)
        sex = np.where(rng.random(n) < 0.5, 1, 0).astype(np.int8)
        sex[role == 0] = head_male[hh[role == 0]]
        sex[role == 1] = ~head_male[hh[role == 1]]
        ha = head_age[hh]
        age = np.where(role == 0, ha,
                       np.where(role == 1, np.clip(ha - rng.normal(4, 4, n), 18, 95),
                                np.where(role == 3, np.clip(ha + rng.normal(26, 5, n), 50, 105),
                                         rng.uniform(0, 1, n) * np.clip(ha - 17, 1, 28))))
        ref_day = mo.first if initial else mo.last
        birth = (ref_day - np.floor(age * 365.25) - rng.integers(1, 365, n)).astype(np.int64)
        if initial:
            hh_reg = self.m0.first - rng.integers(30, 5 * 365, H)
            reg = np.maximum(hh_reg[hh], birth + rng.integers(1, 60, n))
            reg = np.minimum(reg, self.m0.first - 1)
        else:
            reg = mo.first + rng.integers(0, mo.days, n)
        birth = np.minimum(birth, reg - 1)
        weights = 1.0 / (np.arange(len(names.MALE)) + 4.0)
        first = np.where(sex == 1, rng.choice(len(names.MALE), n, p=weights / weights.sum()),
                         rng.choice(len(names.FEMALE), n, p=(w := 1.0 / (np.arange(len(names.FEMALE)) + 4.0)) / w.sum()))
        last = np.where(role == 1, rng.integers(len(names.LAST_FR), size=n), hh_last[hh])
        age_now = (ref_day - birth) / 365.25
        disability = (rng.random(n) < 0.025 + 0.08 * (age_now > 60)).astype(np.int8)
        adult = age_now >= 18
        digits = zfill(rng.integers(0, 100_000_000, n), 8)
        pref = np.where(rng.random(n) < 0.72, obj(["06"] * n), obj(["07"] * n))
        intl = rng.random(n) < 0.3
        pref = np.where(intl, np.where(pref == "06", "+2126", "+2127"), pref)
        phone = np.where(adult & (rng.random(n) < 0.9), pref + digits, None).astype(object)
        has_child = np.bincount(hh, weights=(age_now < 18), minlength=H)[hh] > 0
        widow = ((role == 0) & (sex == 0) & ~has_spouse & (size_of >= 2) & has_child & (rng.random(n) < 0.6)).astype(np.int8)
        cin = self._cin(geo.region_idx[commune[hh]])
        return self.p.append(cin=cin, hh=hh_ids[hh], first=first, last=last, sex=sex, birth=birth,
                             commune=commune[hh], score=score[hh], disability=disability, phone=phone, reg=reg,
                             role=role, widow=widow)

    def registry_step(self, mo: Month) -> None:
        """Month >= 2: new registrations (~1%) and changes (~0.5%) of existing records."""
        rng = rng_for(self.seed, self.N, "registry", mo.index)
        p = self.p
        n_before = p.n
        hh = p.hh
        hh_max = int(hh.max()) + 1
        # household-level score updates and moves
        u_hh = rng.random(hh_max)
        # a household is drawn with these probabilities, so they are also the shares of people
        rescore = u_hh < 0.0028
        move = (u_hh >= 0.0028) & (u_hh < 0.0041)
        new_score = np.clip(p.score + rng.normal(0, 9, n_before), 0.5, 99.5).round(2)
        # one new score per household: take it from the first member
        first_member = np.full(hh_max, -1, dtype=np.int64)
        first_member[hh[::-1]] = np.arange(n_before)[::-1]
        hh_score = new_score[first_member[hh]]
        sel = rescore[hh]
        p.set("score", np.nonzero(sel)[0], hh_score[sel])
        geo = self.geo
        mv = np.nonzero(move[hh])[0]
        if len(mv):
            hh_target = rng.choice(len(geo.commune_code), size=hh_max, p=geo.weight)
            same_prov = rng.random(hh_max) < 0.7
            cur = p.commune
            new_c = hh_target[hh[mv]].copy()
            keep = same_prov[hh[mv]]
            # same province: pick a commune of the current province
            for i in np.nonzero(keep)[0]:
                prov = geo.province_idx[cur[mv[i]]]
                cands = np.nonzero(geo.province_idx == prov)[0]
                new_c[i] = cands[int(hash_u(self.seed, "move", mv[i], mo.index) * len(cands))]
            p.set("commune", mv, new_c)
        # individual household changes (marriage, split)
        age = (mo.first - p.birth) / 365.25
        split = np.nonzero((age >= 18) & (p.role != 0) & (rng.random(n_before) < 0.0015))[0]
        if len(split):
            p.set("hh", split, self.hh_counter + np.arange(len(split)))
            p.set("role", split, 0)
            self.hh_counter += len(split)
        changed = np.unique(np.concatenate([np.nonzero(sel)[0], mv, split]))
        n_new = int(rng.poisson(0.01 * self.N))
        new = self._add_households(rng, n_new, mo, initial=False) if n_new > 0 else np.empty(0, dtype=np.int64)
        self.changed_last = changed
        self.new_last = new

    def registry_rows(self, mo: Month) -> np.ndarray:
        if mo.index == 1:
            return np.arange(self.p.n)
        return np.concatenate([self.changed_last, self.new_last])

    def registry_chunk(self, idx: np.ndarray) -> dict:
        p, geo = self.p, self.geo
        sex = p.sex[idx]
        first = np.where(sex == 1, names.FIRST_FR[1][np.minimum(p.first[idx], len(names.MALE) - 1)],
                         names.FIRST_FR[0][np.minimum(p.first[idx], len(names.FEMALE) - 1)])
        first_ar = np.where(sex == 1, names.FIRST_AR[1][np.minimum(p.first[idx], len(names.MALE) - 1)],
                            names.FIRST_AR[0][np.minimum(p.first[idx], len(names.FEMALE) - 1)])
        c = p.commune[idx]
        return {
            "cin": p.cin[idx],
            "household_id": "MEN" + zfill(p.hh[idx], 9),
            "first_name_fr": first.astype(object),
            "last_name_fr": names.LAST_FR[p.last[idx]],
            "first_name_ar": first_ar.astype(object),
            "last_name_ar": names.LAST_AR[p.last[idx]],
            "sex": np.where(sex == 1, "M", "F").astype(object),
            "birth_date": p.birth[idx],
            "region_code": geo.region_code[c],
            "province_code": geo.province_code[c],
            "commune_code": geo.commune_code[c],
            "area_type": np.where(geo.urban[c], "urban", "rural").astype(object),
            "socio_economic_score": p.score[idx],
            "has_disability": p.disability[idx],
            "phone": p.phone[idx],
            "registered_date": p.reg[idx],
        }

    # ------------------------------------------------------------------ enrolments --
    def _eligibility(self, at_day: int) -> np.ndarray:
        p, geo = self.p, self.geo
        present = p.reg <= at_day
        age = (at_day - p.birth) / 365.25
        score = p.score
        minor = age < 18
        hh = p.hh
        hh_children = np.bincount(hh, weights=minor & present, minlength=int(hh.max()) + 1)[hh]
        rural = ~geo.urban[p.commune]
        el = np.zeros((p.n, len(PROG_INDEX)), dtype=bool)
        thr = self.thresholds
        el[:, 0] = minor & (score <= thr[0])
        el[:, 1] = (p.role == 0) & (hh_children == 0) & (score <= thr[1]) & ~minor
        el[:, 2] = (age >= 6) & (age < 16) & rural & (score <= thr[2])
        el[:, 3] = (p.widow == 1) & (hh_children > 0) & (score <= thr[3])
        el[:, 4] = (p.disability == 1) & (score <= thr[4])
        el &= present[:, None]
        return el

    def _takeup(self, n: int) -> np.ndarray:
        """Whether each person would take up each programme when eligible (static, cached)."""
        have = 0 if self._take is None else len(self._take)
        if have < n:
            rates = np.array([0.85, 0.80, 0.75, 0.6, 0.5])
            persons = np.arange(have, n)
            new = hash_u(self.seed, "takeup", persons[:, None], np.arange(len(rates))[None, :]) < rates[None, :]
            self._take = new if self._take is None else np.vstack([self._take, new])
        return self._take[:n]

    def _amount(self, rng, persons: np.ndarray, progs: np.ndarray, at_day: int) -> np.ndarray:
        age = (at_day - self.p.birth[persons]) / 365.25
        amt = np.select([progs == 0, progs == 1, progs == 2, progs == 3],
                        [np.where(rng.random(len(persons)) < 0.8, 200.0, 300.0), 500.0,
                         np.where(age < 12, 60.0, 80.0), 350.0], default=NAN)
        return amt

    def enrolment_step(self, mo: Month) -> None:
        rng = rng_for(self.seed, self.N, "enrolments", mo.index)
        p, e = self.p, self.e
        n = p.n
        n_prog = len(PROG_INDEX)
        if self.active is None:
            self.active = np.full((n, n_prog), -1, dtype=np.int64)
            self.ever = np.zeros((n, n_prog), dtype=bool)
        elif self.active.shape[0] < n:
            grow = n - self.active.shape[0]
            self.active = np.vstack([self.active, np.full((grow, n_prog), -1, dtype=np.int64)])
            self.ever = np.vstack([self.ever, np.zeros((grow, n_prog), dtype=bool)])
        el = self._eligibility(mo.first)
        take = self._takeup(n)
        first_idx = e.n
        if mo.index == 1:
            # stock: eligible people who took up before the extract starts
            stock = el & take & (rng.random((n, n_prog)) < 0.9)
            pi, gi = np.nonzero(stock)
            prog_start = np.array([day(catalogue.BY_CODE[c].start) for c in catalogue.ENROLMENT_PROGRAMMES])
            lo = np.maximum.reduce([prog_start[gi], p.reg[pi], p.birth[pi] + 1, np.full(len(pi), mo.first - 3 * 365)])
            hi = mo.first - 1
            entry = np.where(lo <= hi, lo + (rng.random(len(pi)) * np.maximum(hi - lo, 0)).astype(np.int64),
                             mo.first + rng.integers(0, mo.days, len(pi)))
            idx = e.append(person=pi, prog=gi.astype(np.int8), entry=entry, exit=np.full(len(pi), NULL_INT),
                           reason=np.full(len(pi), -1, dtype=np.int8), amount=self._amount(rng, pi, gi, mo.first))
            self.active[pi, gi] = idx
            self.ever[pi, gi] = True
        # exits
        act_p, act_g = np.nonzero(self.active >= 0)
        enr = self.active[act_p, act_g]
        old = e.entry[enr] < mo.first
        still = el[act_p, act_g]
        age = (mo.first - p.birth[act_p]) / 365.25
        aged_out = ((act_g == 0) & (age >= 18)) | ((act_g == 2) & (age >= 16))
        hazard = rng.random(len(enr)) < 0.004
        leave = old & (~still | hazard)
        reason = np.where(aged_out, 0, np.where(~still, 2, 0))
        r = rng.random(len(enr))
        reason = np.where(still & hazard, np.select([r < 0.40, r < 0.70, r < 0.85], [3, 5, 1], default=4), reason)
        ex = enr[leave]
        e.set("exit", ex, mo.first + rng.integers(0, mo.days, len(ex)))
        e.set("reason", ex, reason[leave].astype(np.int8))
        self.active[act_p[leave], act_g[leave]] = -1
        # entries: eligible, took up, never enrolled in that programme; processing lag
        cand = el & take & ~self.ever & (self.active < 0)
        pi, gi = np.nonzero(cand)
        go = rng.random(len(pi)) < 0.35
        pi, gi = pi[go], gi[go]
        entry = np.maximum(mo.first, p.reg[pi]) + rng.integers(0, 28, len(pi))
        entry = np.minimum(entry, mo.last)
        idx = e.append(person=pi, prog=gi.astype(np.int8), entry=entry, exit=np.full(len(pi), NULL_INT),
                       reason=np.full(len(pi), -1, dtype=np.int8), amount=self._amount(rng, pi, gi, mo.first))
        self.active[pi, gi] = idx
        self.ever[pi, gi] = True
        if mo.index == 1:
            live = (e.exit == NULL_INT) | (e.exit >= mo.first)
            self.enrol_rows = np.nonzero(live)[0]
        else:
            self.enrol_rows = np.union1d(np.arange(first_idx, e.n), ex)

    def enrolment_chunk(self, idx: np.ndarray) -> dict:
        e, p = self.e, self.p
        progs = obj(catalogue.ENROLMENT_PROGRAMMES)
        reason = e.reason[idx]
        return {
            "enrolment_id": "INS-" + zfill(idx + 1, 8),
            "cin": p.cin[e.person[idx]],
            "programme_code": progs[e.prog[idx]],
            "entry_date": e.entry[idx],
            "exit_date": e.exit[idx],
            "exit_reason": np.where(reason >= 0, EXIT_REASONS[np.maximum(reason, 0)], None).astype(object),
        }

    def payment_rows(self, mo: Month) -> np.ndarray:
        e = self.e
        cash = e.prog < len(catalogue.CASH_PROGRAMMES)
        active = cash & (e.entry <= mo.last) & ((e.exit == NULL_INT) | (e.exit >= mo.first))
        return np.nonzero(active)[0]

    def payment_chunk(self, idx: np.ndarray, mo: Month, seq0: int) -> dict:
        e, p = self.e, self.p
        progs = obj(catalogue.ENROLMENT_PROGRAMMES)
        k = mo.index - 1
        u = hash_u(self.seed, "paychannel", idx)
        wallet = min(0.30 + 0.012 * k, 0.55)
        bank = 0.20
        post = (1 - wallet - bank) * 0.65
        ch = np.select([u < wallet, u < wallet + bank, u < wallet + bank + post], [1, 0, 2], default=3)
        payday = mo.first + 4 + (e.prog[idx].astype(np.int64) * 3) + (hash_u(self.seed, "payday", idx, mo.index) * 6).astype(np.int64)
        seq = seq0 + np.arange(len(idx))
        return {
            "payment_id": "PAY-" + mo.label.replace("-", "") + "-" + zfill(seq + 1, 8),
            "enrolment_id": "INS-" + zfill(idx + 1, 8),
            "cin": p.cin[e.person[idx]],
            "programme_code": progs[e.prog[idx]],
            "payment_month": np.full(len(idx), mo.label, dtype=object),
            "amount_mad": e.amount[idx],
            "paid_date": np.minimum(payday, mo.last),
            "channel": PAY_CHANNELS[ch],
        }

    # ------------------------------------------------------------------ loans -------
    def _new_loans(self, rng, n: int, mo: Month, disb: np.ndarray) -> None:
        p = self.p
        age = (mo.first - p.birth) / 365.25
        pool = np.nonzero((age >= 20) & (age < 65) & (p.score >= 8) & (p.score <= 75) & (p.reg <= mo.first))[0]
        if len(pool) == 0 or n == 0:
            return
        person = pool[rng.integers(len(pool), size=n)]
        product = rng.choice(4, size=n, p=[0.45, 0.30, 0.15, 0.10]).astype(np.int8)
        med = np.array([15_000, 5_000, 12_000, 30_000])[product]
        principal = np.clip(np.round(med * rng.lognormal(0, 0.5, n) / 500) * 500, 500, 500_000)
        term = np.select([product == 1, product == 3], [rng.choice([6, 9, 12], n), rng.choice([24, 36, 48, 60], n)],
                         default=rng.choice([12, 18, 24, 36], n))
        rate = np.round(rng.uniform(13, 24, n), 1)
        score = p.score[person]
        risk_default = 0.06 + 0.04 * (score < 25)
        r = rng.random(n)
        risk = np.where(r < risk_default, 2, np.where(r < risk_default + 0.14, 1, 0)).astype(np.int8)
        kstop = 2 + (rng.random(n) * np.maximum(term - 1, 1)).astype(np.int64)
        prog = np.where(product <= 1, 7, 8).astype(np.int8)  # index in PROGRAMMES: MCF-01 / MCF-02
        self.loans.append(person=person, product=product, prog=prog, principal=principal, term=term, rate=rate,
                          disb=disb, risk=risk, kstop=kstop, created=np.full(n, mo.index))

    def _due_day(self, li: np.ndarray, k: np.ndarray) -> np.ndarray:
        disb = self.loans.disb[li]
        dom = disb - first_day_of(months_since_1970(disb))
        return first_day_of(months_since_1970(disb) + k) + np.minimum(dom, 27)

    def _schedule(self, li: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(principal due, interest due, balance before) of instalment k of loans li."""
        L = self.loans
        P, n, r = L.principal[li], L.term[li], L.rate[li] / 1200.0
        g = 1.0 + r
        def bal(j):
            return np.round(P * (g ** n - g ** j) / (g ** n - 1.0), 2)
        b0, b1 = bal(k - 1), bal(k)
        return np.round(b0 - b1, 2), np.round(b0 * r, 2), b0

    def _paid_month_offset(self, li: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Months after the due month in which instalment k is paid (-1 = never)."""
        L = self.loans
        u = hash_u(self.seed, "lag", li, k)
        risk = L.risk[li]
        lag = np.where(risk == 0, np.where(u < 0.97, 0, 1),
                       np.select([u < 0.45, u < 0.75, u < 0.93], [0, 1, 2], default=3))
        lag = np.where((risk == 2) & (k >= L.kstop[li]), -1, np.where(risk == 2, np.minimum(lag, 1), lag))
        return lag

    def _paid_day(self, li, k, lag):
        due = self._due_day(li, k)
        u = hash_u(self.seed, "paidday", li, k)
        same = np.clip(due + np.floor(u * 7).astype(np.int64) - 3, first_day_of(months_since_1970(due)),
                       first_day_of(months_since_1970(due) + 1) - 1)
        later_first = first_day_of(months_since_1970(due) + np.maximum(lag, 0))
        later = later_first + np.floor(u * 27).astype(np.int64)
        return np.where(lag < 0, NULL_INT, np.where(lag == 0, same, later))

    def _loan_events(self) -> tuple[np.ndarray, np.ndarray]:
        """(close day, write-off day) per loan; NULL_INT when it does not happen."""
        L = self.loans
        li = np.arange(L.n)
        last_k = L.term
        lag = self._paid_month_offset(li, last_k)
        close = self._paid_day(li, last_k, lag)
        wo = np.where(L.risk == 2, self._due_day(li, L.kstop) + 180, NULL_INT)
        close = np.where(L.risk == 2, NULL_INT, close)
        # a late payer closes when the last of its (possibly late) instalments is paid
        if L.n:
            for j in range(1, 4):
                kk = np.maximum(last_k - j, 1)
                pd_ = self._paid_day(li, kk, self._paid_month_offset(li, kk))
                close = np.where((close != NULL_INT) & (pd_ > close), pd_, close)
        return close, wo

    def loan_step(self, mo: Month) -> None:
        rng = rng_for(self.seed, self.N, "loans", mo.index)
        if mo.index == 1:
            n0 = int(0.05 * self.N)
            term_guess = 36 * 30
            disb = mo.first - 1 - rng.integers(0, term_guess, n0)
            self._new_loans(rng, n0, mo, disb)
            close, wo = self._loan_events()
            keep = ((close == NULL_INT) | (close >= mo.first)) & ((wo == NULL_INT) | (wo >= mo.first))
            # drop loans that were over before the extract: rebuild the table without them
            for name, arr in list(self.loans.a.items()):
                kept = arr[: self.loans.n][keep]
                self.loans.a[name][: len(kept)] = kept
            self.loans.n = int(keep.sum())
        n_new = int(rng.poisson(0.003 * self.N))
        self._new_loans(rng, n_new, mo, mo.first + rng.integers(0, mo.days, n_new))
        self.loan_close, self.loan_wo = self._loan_events()

    def loan_rows(self, mo: Month) -> np.ndarray:
        L = self.loans
        close, wo = self.loan_close, self.loan_wo
        if mo.index == 1:
            return np.nonzero(L.disb <= mo.last)[0]
        new = (L.disb >= mo.first) & (L.disb <= mo.last)
        ev = ((close >= mo.first) & (close <= mo.last)) | ((wo >= mo.first) & (wo <= mo.last))
        return np.nonzero(new | ev)[0]

    def loan_chunk(self, idx: np.ndarray, mo: Month) -> dict:
        L, p = self.loans, self.p
        close, wo = self.loan_close[idx], self.loan_wo[idx]
        written = (wo != NULL_INT) & (wo <= mo.last)
        closed = (close != NULL_INT) & (close <= mo.last)
        kstop = L.kstop[idx]
        _, _, bal = self._schedule(idx, kstop)
        progs = obj([pr.code for pr in catalogue.PROGRAMMES])
        return {
            "loan_id": self._loan_id(idx),
            "borrower_cin": p.cin[L.person[idx]],
            "programme_code": progs[L.prog[idx]],
            "product": PRODUCTS[L.product[idx]],
            "principal_mad": L.principal[idx],
            "term_months": L.term[idx],
            "annual_rate_pct": L.rate[idx],
            "disbursement_date": L.disb[idx],
            "status": np.where(written, "written_off", np.where(closed, "closed", "active")).astype(object),
            "written_off_date": np.where(written, wo, NULL_INT),
            "written_off_mad": np.where(written, bal, NAN),
        }

    def _loan_id(self, idx: np.ndarray) -> np.ndarray:
        # ids follow disbursement order within the month they were created in
        L = self.loans
        return "LN-" + zfill(L.created[idx], 3) + zfill(idx + 1, 7)

    def repayment_rows(self, mo: Month) -> tuple[np.ndarray, np.ndarray]:
        L = self.loans
        li_all = np.arange(L.n)
        out_l, out_k = [], []
        since = mo.mabs - months_since_1970(L.disb)
        wo = self.loan_wo
        for lag in range(0, 4):
            k = since - lag
            ok = (k >= 1) & (k <= L.term)
            li, kk = li_all[ok], k[ok]
            if lag == 0:
                due = self._due_day(li, kk)
                ok2 = (wo[li] == NULL_INT) | (due <= wo[li])
                li, kk = li[ok2], kk[ok2]
            else:
                pl = self._paid_month_offset(li, kk)
                li, kk = li[pl == lag], kk[pl == lag]
            out_l.append(li)
            out_k.append(kk)
        li = np.concatenate(out_l)
        kk = np.concatenate(out_k)
        order = np.lexsort((kk, li))
        return li[order], kk[order]

    def repayment_chunk(self, li: np.ndarray, kk: np.ndarray, mo: Month) -> dict:
        prin, intr, _ = self._schedule(li, kk)
        lag = self._paid_month_offset(li, kk)
        paid_day = self._paid_day(li, kk, lag)
        paid_now = (paid_day != NULL_INT) & (paid_day >= mo.first) & (paid_day <= mo.last)
        ids = self._loan_id(li)
        return {
            "instalment_id": ids + "-" + zfill(kk, 2),
            "loan_id": ids,
            "instalment_number": kk.astype(np.int64),
            "due_date": self._due_day(li, kk),
            "principal_due_mad": prin,
            "interest_due_mad": intr,
            "paid_date": np.where(paid_now, paid_day, NULL_INT),
            "amount_paid_mad": np.where(paid_now, prin + intr, NAN),
        }

    def portfolio(self, mo: Month) -> dict:
        """Portfolio quality at the end of a month: outstanding principal, PAR30, write-offs."""
        L = self.loans
        end = mo.last
        li = np.nonzero(L.disb <= end)[0]
        close, wo = self.loan_close[li], self.loan_wo[li]
        active = ((close == NULL_INT) | (close > end)) & ((wo == NULL_INT) | (wo > end))
        li = li[active]
        outstanding = L.principal[li].copy()
        at_risk = np.zeros(len(li), dtype=bool)
        for k in range(1, int(L.term.max(initial=1)) + 1):
            has = L.term[li] >= k
            sub = li[has]
            kk = np.full(len(sub), k)
            due = self._due_day(sub, kk)
            pdays = self._paid_day(sub, kk, self._paid_month_offset(sub, kk))
            paid = (pdays != NULL_INT) & (pdays <= end)
            prin, _, _ = self._schedule(sub, kk)
            outstanding[has] -= np.where(paid, prin, 0.0)
            at_risk[has] |= (due < end - 30) & ~paid  # more than 30 days past due
        written = (self.loan_wo != NULL_INT) & (self.loan_wo <= end)
        _, _, wo_bal = self._schedule(np.arange(L.n), L.kstop)
        total = float(outstanding.sum())
        return {
            "active_loans": int(len(li)),
            "outstanding_principal_mad": round(total, 2),
            "par30_outstanding_mad": round(float(outstanding[at_risk].sum()), 2),
            "par30": round(float(outstanding[at_risk].sum()) / total, 4) if total else 0.0,
            "written_off_loans_to_date": int(written.sum()),
            "written_off_mad_to_date": round(float(wo_bal[written].sum()), 2),
        }

    # ------------------------------------------------------------------ service requests --
    def request_step(self, mo: Month) -> dict:
        rng = rng_for(self.seed, self.N, "requests", mo.index)
        p, geo = self.p, self.geo
        k = mo.index - 1
        n = int(rng.poisson(0.07 * self.N * (1 + 0.02 * k)))
        stype = rng.choice(len(SERVICE_TYPES), n, p=SERVICE_P)
        counter = max(0.20, 0.55 - 0.02 * k)
        mobile = (1 - counter) * min(0.65, 0.35 + 0.02 * k)
        u = rng.random(n)
        channel = np.where(u < counter, 2, np.where(u < counter + mobile, 1, 0))
        age = (mo.first - p.birth) / 365.25
        adults = np.nonzero((age >= 18) & (p.reg <= mo.first))[0]
        person = adults[rng.integers(len(adults), size=n)] if len(adults) else np.zeros(n, dtype=np.int64)
        named = (rng.random(n) < 0.85) & (len(adults) > 0)
        region = np.where(named, geo.region_idx[p.commune[person]],
                          geo.region_idx[rng.choice(len(geo.commune_code), n, p=geo.weight)])
        sec_in_month = mo.days * 86400
        submitted = mo.first * 86400 + np.where(channel == 2, rng.integers(0, mo.days, n) * 86400 + rng.integers(8 * 3600, 16 * 3600, n),
                                                 rng.integers(0, sec_in_month, n))
        factor = np.array([1.0, 0.9, 1.3])[channel] * (0.98 ** k)
        proc = SERVICE_MEDIAN_DAYS[stype] * factor * rng.lognormal(0, 0.9, n) * 86400
        resolved = submitted + proc.astype(np.int64) + 600
        started = submitted + (0.25 * proc).astype(np.int64) + 300
        rejected = rng.random(n) < 0.08
        ids = np.array([f"REQ-{mo.label.replace('-', '')}-"] * n, dtype=object) + zfill(np.arange(1, n + 1), 7)
        new = {"id": ids, "cin": np.where(named, p.cin[person], None).astype(object), "stype": stype, "channel": channel,
               "region": region, "submitted": submitted, "resolved": resolved, "started": started, "rejected": rejected}
        end = (mo.last + 1) * 86400
        rows = {}
        carried = self.req_open
        if carried is not None:
            closing = carried["resolved"] < end
            rows = {k2: v[closing] for k2, v in carried.items()}
            carried = {k2: v[~closing] for k2, v in carried.items()}
        allrows = {k2: np.concatenate([rows[k2], new[k2]]) if rows else new[k2] for k2 in new}
        still_open = new["resolved"] >= end
        opened = {k2: v[still_open] for k2, v in new.items()}
        self.req_open = opened if carried is None else {k2: np.concatenate([carried[k2], opened[k2]]) for k2 in new}
        self.req_rows = allrows
        return {"submitted": n, "by_channel": {c: int((channel == i).sum()) for i, c in enumerate(REQ_CHANNELS)},
                "open_at_month_end": int(len(self.req_open["id"]))}

    def request_chunk(self, sl: slice, mo: Month) -> dict:
        r = {k: v[sl] for k, v in self.req_rows.items()}
        end = (mo.last + 1) * 86400
        done = r["resolved"] < end
        status = np.where(done, np.where(r["rejected"], "rejected", "resolved"),
                          np.where(r["started"] < end, "in_progress", "submitted")).astype(object)
        return {
            "request_id": r["id"],
            "applicant_cin": r["cin"],
            "service_type": SERVICE_TYPES[r["stype"]],
            "channel": REQ_CHANNELS[r["channel"]],
            "region_code": self.geo.region_codes[r["region"]],
            "submitted_at": r["submitted"],
            "resolved_at": np.where(done, r["resolved"], NULL_INT),
            "status": status,
        }

    # ------------------------------------------------------------------ EPS ---------
    def _init_establishments(self) -> None:
        rng = rng_for(self.seed, self.N, "establishments")
        geo = self.geo
        E = max(24, round(self.N / 3000))
        w = geo.weight * np.where(geo.urban, 3.0, 1.0)
        commune = rng.choice(len(geo.commune_code), E, p=w / w.sum())
        etype = rng.choice(len(EPS_TYPES), E, p=[0.30, 0.20, 0.20, 0.15, 0.15])
        base_cap = np.array([60, 80, 50, 40, 90])[etype]
        cap = np.clip(np.round(base_cap * rng.lognormal(0, 0.45, E)), 10, 1200).astype(np.int64)
        works = rng.random(E) < 0.35
        start_off = rng.integers(-10, 15, E)
        dur = rng.integers(3, 10, E)
        ws = first_day_of(self.m0.mabs + start_off) + rng.integers(0, 27, E)
        we = first_day_of(self.m0.mabs + start_off + dur) + rng.integers(0, 27, E)
        prog = np.where(EPS_TYPES[etype] == "elderly", "EPS-02", "EPS-01").astype(object)
        self.eps = {
            "id": np.array([f"EPS-{i + 1:04d}" for i in range(E)], dtype=object),
            "name": np.array([f"{EPS_NAMES[EPS_TYPES[t]]} {geo.commune_name[c]}" for t, c in zip(etype, commune)], dtype=object),
            "type": etype, "commune": commune, "cap": cap,
            "cap_after": np.round(cap * rng.uniform(1.2, 1.45, E)).astype(np.int64),
            "works": works, "ws": np.where(works, ws, NULL_INT), "we": np.where(works, we, NULL_INT), "prog": prog,
            "rate": rng.uniform(0.68, 0.93, E),
        }

    def establishment_rows(self, mo: Month) -> np.ndarray:
        s = self.eps
        if mo.index == 1:
            return np.arange(len(s["id"]))
        ev = ((s["ws"] >= mo.first) & (s["ws"] <= mo.last)) | ((s["we"] >= mo.first) & (s["we"] <= mo.last))
        return np.nonzero(ev)[0]

    def establishment_chunk(self, idx: np.ndarray, mo: Month) -> dict:
        s, geo = self.eps, self.geo
        started = (s["ws"][idx] != NULL_INT) & (s["ws"][idx] <= mo.last)
        ended = (s["we"][idx] != NULL_INT) & (s["we"][idx] <= mo.last)
        c = s["commune"][idx]
        return {
            "establishment_id": s["id"][idx],
            "establishment_name": s["name"][idx],
            "establishment_type": EPS_TYPES[s["type"][idx]],
            "region_code": geo.region_code[c],
            "province_code": geo.province_code[c],
            "commune_code": geo.commune_code[c],
            "capacity": np.where(ended, s["cap_after"][idx], s["cap"][idx]),
            "programme_code": np.where(started, s["prog"][idx], None).astype(object),
            "works_start_date": np.where(started, s["ws"][idx], NULL_INT),
            "works_end_date": np.where(ended, s["we"][idx], NULL_INT),
        }

    def _residents(self, mabs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.eps
        first = int(first_day_of(np.array([mabs]))[0])
        last = int(first_day_of(np.array([mabs + 1]))[0]) - 1
        during = (s["ws"] != NULL_INT) & (s["ws"] <= last) & ((s["we"] > last))
        after = (s["we"] != NULL_INT) & (s["we"] <= last)
        cap = np.where(after, s["cap_after"], s["cap"])
        rate = np.where(during, s["rate"] * 0.55, np.where(after, np.minimum(s["rate"] + 0.06, 0.98), s["rate"]))
        noise = (hash_u(self.seed, "occ", np.arange(len(cap)), mabs) - 0.5) * 0.08
        res = np.clip(np.round(cap * (rate + noise)), 0, cap).astype(np.int64)
        return res, after, np.full(len(cap), first)

    def occupancy_chunk(self, mo: Month) -> dict:
        s = self.eps
        E = len(s["id"])
        res, after, _ = self._residents(mo.mabs)
        prev, _, _ = self._residents(mo.mabs - 1)
        turnover = 0.03 + 0.09 * hash_u(self.seed, "turnover", np.arange(E), mo.mabs)
        dep = np.round(prev * turnover).astype(np.int64)
        adm = res - prev + dep
        dep = np.where(adm < 0, dep - adm, dep)
        adm = np.maximum(adm, 0)
        insp = hash_u(self.seed, "inspect", np.arange(E), mo.mabs) < 0.15
        score = np.clip(62 + 14 * after + (hash_u(self.seed, "inspscore", np.arange(E), mo.mabs) - 0.5) * 30, 0, 100)
        return {
            "establishment_id": s["id"],
            "month": np.full(E, mo.label, dtype=object),
            "residents": res,
            "admissions": adm,
            "departures": dep,
            "inspection_score": np.where(insp, np.round(score, 1), NAN),
        }

    # ------------------------------------------------------------------ ventures ----
    def _init_ventures(self) -> None:
        self.v = Grow(person=np.int64, prog=np.int8, form=np.int8, sector=np.int8, cohort=object, region=np.int64,
                      start=np.int64, end=np.int64, s12=np.int8, s24=np.int8, jobs12=np.int64, jobs24=np.int64,
                      rev12=np.float64, rev24=np.float64, word=np.int64)
        rng = rng_for(self.seed, self.N, "ventures", 0)
        y0, mo0 = int(self.start_month[:4]), int(self.start_month[5:])
        cohorts = []
        for y in range(2022, y0 + 1):
            for half, mstart in (("A", 1), ("B", 7)):
                if (y, mstart) < (y0, mo0):
                    cohorts.append((f"{y}-{half}", (y - 1970) * 12 + mstart - 1))
        total = max(len(cohorts), round(self.N / 150))
        per = np.full(len(cohorts), total // len(cohorts))
        per[: total % len(cohorts)] += 1
        for (label, mabs), n in zip(cohorts, per):
            self._new_ventures(rng, int(n), label, mabs, self.m0.first)

    def _new_ventures(self, rng, n: int, cohort: str, mabs: int, present_by: int) -> None:
        p, geo = self.p, self.geo
        age = (present_by - p.birth) / 365.25
        pool = (age >= 20) & (age < 60) & (p.score <= 70) & (p.reg <= present_by)
        prog = np.where(rng.random(n) < 0.7, 5, 6).astype(np.int8)  # INC-01 / INC-02
        women = np.nonzero(pool & (p.sex == 0))[0]
        anyone = np.nonzero(pool)[0]
        if len(anyone) == 0 or n == 0:
            return
        person = np.where(prog == 6, women[rng.integers(max(len(women), 1), size=n)] if len(women) else anyone[rng.integers(len(anyone), size=n)],
                          anyone[rng.integers(len(anyone), size=n)])
        form = np.where(prog == 6, 0, rng.choice(4, n, p=[0.45, 0.2, 0.25, 0.1])).astype(np.int8)
        sector = rng.choice(len(SECTORS), n, p=[0.25, 0.18, 0.17, 0.15, 0.08, 0.1, 0.07]).astype(np.int8)
        start = int(first_day_of(np.array([mabs]))[0]) + rng.integers(0, 21, n)
        end = start + rng.integers(180, 366, n)
        s12 = rng.choice(3, n, p=[0.70, 0.22, 0.08]).astype(np.int8)  # active/closed/unknown
        s24 = np.where(s12 == 1, 1, rng.choice(3, n, p=[0.76, 0.17, 0.07])).astype(np.int8)
        jobs12 = rng.poisson(np.where(form == 0, 3.0, 1.5))
        jobs24 = jobs12 + np.where(s24 == 0, rng.poisson(1.5, n), 0)
        rev12 = np.where(s12 == 1, 0.0, np.round(rng.lognormal(np.log(60_000), 0.7, n), -2))
        rev24 = np.where(s24 == 1, 0.0, np.round(rev12 * rng.lognormal(0.15, 0.3, n), -2))
        self.v.append(person=person, prog=prog, form=form, sector=sector, cohort=np.full(n, cohort, dtype=object),
                      region=geo.region_idx[p.commune[person]], start=start, end=end, s12=s12, s24=s24,
                      jobs12=jobs12, jobs24=jobs24, rev12=rev12, rev24=rev24, word=rng.integers(len(VENTURE_WORDS), size=n))

    def venture_step(self, mo: Month) -> None:
        month_of_year = mo.mabs % 12 + 1
        if month_of_year in (1, 7):
            rng = rng_for(self.seed, self.N, "ventures", mo.index)
            label = f"{1970 + mo.mabs // 12}-{'A' if month_of_year == 1 else 'B'}"
            self._new_ventures(rng, max(3, round(self.N / 900)), label, mo.mabs, mo.first)

    def venture_rows(self, mo: Month) -> np.ndarray:
        v = self.v
        if mo.index == 1:
            return np.nonzero(v.start <= mo.last)[0]
        def within(d):
            return (d >= mo.first) & (d <= mo.last)
        ev = within(v.start) | within(v.end) | within(v.start + 365) | within(v.start + 730)
        return np.nonzero(ev & (v.start <= mo.last))[0]

    def venture_chunk(self, idx: np.ndarray, mo: Month) -> dict:
        v, p, geo = self.v, self.p, self.geo
        end_known = v.end[idx] <= mo.last
        k12 = v.start[idx] + 365 <= mo.last
        k24 = v.start[idx] + 730 <= mo.last
        status = np.array(["active", "closed", "unknown"], dtype=object)
        progs = obj([pr.code for pr in catalogue.PROGRAMMES])
        forms = LEGAL_FORMS[v.form[idx]]
        prefix = np.array([FORM_WORDS[f] for f in forms], dtype=object)
        vname = prefix + " " + VENTURE_WORDS[v.word[idx]] + " " + geo.commune_name[p.commune[v.person[idx]]]
        return {
            "venture_id": "VEN-" + zfill(idx + 1, 6),
            "promoter_cin": p.cin[v.person[idx]],
            "programme_code": progs[v.prog[idx]],
            "venture_name": vname,
            "legal_form": forms,
            "sector": SECTORS[v.sector[idx]],
            "cohort": v.cohort[idx],
            "region_code": geo.region_codes[v.region[idx]],
            "incubation_start_date": v.start[idx],
            "incubation_end_date": np.where(end_known, v.end[idx], NULL_INT),
            "status_12m": np.where(k12, status[v.s12[idx]], None).astype(object),
            "status_24m": np.where(k24, status[v.s24[idx]], None).astype(object),
            "jobs_created": np.where(k24, v.jobs24[idx], np.where(k12, v.jobs12[idx], NULL_INT)),
            "revenue_mad": np.where(k24, v.rev24[idx], np.where(k12, v.rev12[idx], NAN)),
        }
