"""The evaluation report of a refresh: one self-contained HTML page plus PNG files.

``write_report`` draws (matplotlib, Agg backend, imported lazily):

- ``forest.png``       effects with confidence intervals by programme, outcome and estimator;
- ``trends.png``       outcome means by group and round (the parallel-trends picture);
- ``event_study.png``  event-study coefficients (leads and lags) when more than two rounds;
- ``balance.png``      standardised mean differences before/after weighting;

and writes ``impact_report.html`` (images embedded as base64 PNG) with the attrition,
balance, estimates and cost-effectiveness tables and a plain-language summary per
programme. It returns the paths, the markdown tables and the summaries so the
orchestration layer can attach them as materialisation metadata.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

# estimators that adjust for baseline covariates (used as headline when pre-trends diverge)
ADJUSTED = ("ipw_did", "ancova_covariates")
HEADLINE_ORDER = ("ipw_did", "ancova_covariates", "did", "ancova", "diff_in_means", "event_study")
MAX_PANELS = 24


# --------------------------------------------------------------------------------------
# formatting


def fmt(value: Any, kind: str = "num") -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "p":
        return "<0.001" if value < 0.001 else f"{value:.3f}"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    if isinstance(value, str):
        return value
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.3g}"


def p_text(p: Any) -> str:
    """'p < 0.001' or 'p = 0.123'."""
    shown = fmt(p, "p")
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def fmt_level(alpha: float) -> str:
    """A significance level as a percentage: 0.05 -> "5%", 0.1 -> "10%", 0.025 -> "2.5%"."""
    return f"{100 * float(alpha):g}%"


def markdown_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = [fmt(row[c], formats.get(c, "num")).replace("|", "\\|") for c in frame.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    if frame.empty:
        return "<p><em>No rows.</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = "".join(f"<td>{html.escape(fmt(row[c], formats.get(c, 'num')))}</td>" for c in frame.columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------------------
# figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _grid(n: int, width: float = 4.2, height: float = 3.0):
    plt = _pyplot()
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def forest_plot(estimates: pd.DataFrame, path: Path) -> Path | None:
    rows = estimates[estimates["subgroup"] == "all"]
    if rows.empty:
        return None
    outcomes = list(dict.fromkeys(rows["outcome"]))[:MAX_PANELS]
    plt = _pyplot()
    heights = [rows[rows["outcome"] == o].shape[0] for o in outcomes]
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(8, 1.0 + 0.32 * sum(heights) + 0.6 * len(outcomes)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    palette = plt.get_cmap("tab10")
    programmes = list(dict.fromkeys(zip(rows["study_id"], rows["programme_code"])))
    colour = {key: palette(i % 10) for i, key in enumerate(programmes)}
    for ax, outcome in zip(axes[:, 0], outcomes):
        block = rows[rows["outcome"] == outcome].reset_index(drop=True)
        labels, ys = [], []
        for i, r in block.iterrows():
            y = len(block) - 1 - i
            label = f"{r['study_id']} / {r['programme_code']} · {r['estimator']}"
            if r["status"] == "ok":
                c = colour[(r["study_id"], r["programme_code"])]
                ax.errorbar(r["estimate"], y, xerr=[[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]],
                            fmt="o", color=c, ecolor=c, capsize=3)
            else:
                label += f"  [{r['status']}]"
                ax.plot([], [])
            labels.append(label)
            ys.append(y)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(ys, labels, fontsize=8)
        ax.set_ylim(-0.7, len(block) - 0.3)
        ax.set_title(f"{outcome}: effect and {int(100 * block['ci_level'].dropna().iloc[0]) if block['ci_level'].notna().any() else 95}% CI", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def trends_plot(group_means: pd.DataFrame, path: Path) -> Path | None:
    if group_means.empty:
        return None
    keys = list(dict.fromkeys(zip(group_means["study_id"], group_means["programme_code"], group_means["outcome"])))[:MAX_PANELS]
    fig, axes = _grid(len(keys))
    for ax, (study, programme, outcome) in zip(axes, keys):
        block = group_means[(group_means["study_id"] == study) & (group_means["programme_code"] == programme) & (group_means["outcome"] == outcome)]
        for group, color in (("treated", "tab:red"), ("comparison", "tab:grey")):
            g = block[block["treatment_group"] == group].dropna(subset=["mean"]).sort_values("round_index")
            if g.empty:
                continue
            err = g["std_error"].astype(float).fillna(0) * 1.96
            ax.errorbar(g["round_index"].astype(int), g["mean"].astype(float), yerr=err, marker="o", color=color, capsize=3, label=group)
        ax.axvline(0.5, color="black", lw=0.8, ls=":")
        rounds = sorted(block["round_index"].dropna().astype(int).unique())
        labels = {int(r): lbl for r, lbl in zip(block["round_index"], block["round_label"]) if isinstance(lbl, str)}
        ax.set_xticks(rounds, [labels.get(r, str(r)) for r in rounds], fontsize=8)
        ax.set_title(f"{study} / {programme}: {outcome}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Outcome means by group and round (±1.96 SE); treatment starts after the dotted line", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def event_study_plot(pretrends: pd.DataFrame, path: Path) -> Path | None:
    rows = pretrends[(pretrends["subgroup"] == "all") & (pretrends["status"] == "ok")]
    if rows.empty:
        return None
    keys = list(dict.fromkeys(zip(rows["study_id"], rows["programme_code"], rows["outcome"], rows["estimator"])))[:MAX_PANELS]
    fig, axes = _grid(len(keys))
    for ax, (study, programme, outcome, est) in zip(axes, keys):
        b = rows[(rows["study_id"] == study) & (rows["programme_code"] == programme) & (rows["outcome"] == outcome) & (rows["estimator"] == est)]
        b = b.sort_values("round_index")
        x = b["round_index"].astype(int).to_numpy()
        y = b["estimate"].astype(float).to_numpy()
        lo = (b["estimate"] - b["ci_low"]).astype(float).fillna(0).to_numpy()
        hi = (b["ci_high"] - b["estimate"]).astype(float).fillna(0).to_numpy()
        ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", color="tab:purple", capsize=3)
        ax.set_xticks(x)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.axvline(0.5, color="black", lw=0.8, ls=":")
        p = b["joint_p_value"].dropna()
        test = f"pre-trend test {p_text(p.iloc[0])}" if len(p) else "no pre-trend test"
        ax.set_title(f"{study} / {programme}: {outcome}\n{test}", fontsize=9)
        ax.set_xlabel("round (0 = baseline, reference)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Event study: effect by round relative to baseline", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def balance_plot(balance: pd.DataFrame, path: Path) -> Path | None:
    rows = balance[(balance["status"] == "ok") & balance["smd_before"].notna()]
    if rows.empty:
        return None
    keys = list(dict.fromkeys(zip(rows["study_id"], rows["programme_code"])))[:MAX_PANELS]
    plt = _pyplot()
    n_cov = max(rows.groupby(["study_id", "programme_code"]).size())
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 1.2 + 0.35 * n_cov), squeeze=False)
    for ax, (study, programme) in zip(axes[0], keys):
        b = rows[(rows["study_id"] == study) & (rows["programme_code"] == programme)].reset_index(drop=True)
        ys = list(range(len(b)))[::-1]
        ax.scatter(b["smd_before"].astype(float).abs(), ys, facecolors="none", edgecolors="tab:red", label="before weighting")
        after = b["smd_after"].astype(float).abs()
        ax.scatter(after, ys, color="tab:blue", label="after weighting")
        ax.axvline(0.1, color="grey", lw=0.8, ls="--")
        ax.set_yticks(ys, list(b["covariate"]), fontsize=8)
        ax.set_xlabel("|standardised mean difference|", fontsize=8)
        ax.set_title(f"{study} / {programme}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Covariate balance (dashed line: 0.1)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# plain-language summary


def _headline(block: pd.DataFrame, preferred: str | None) -> pd.Series | None:
    ok = block[block["status"] == "ok"]
    order = ([preferred] if preferred else []) + [e for e in HEADLINE_ORDER if e != preferred]
    for name in order:
        hit = ok[ok["estimator"] == name]
        if len(hit):
            return hit.iloc[0]
    return ok.iloc[0] if len(ok) else None


def _lee_text(a, head: pd.Series, diverging: bool = False) -> str:
    """What differential attrition leaves of the effect: Lee's bounds and their confidence
    interval, when published, read against the sign and significance of the ``head`` estimate.
    The bounds establish the sign of the effect only when their interval excludes zero (with
    random assignment and attrition by a zero effect, the bounds alone exclude it in 10-30% of
    samples), on the side of a significant ``head``. Not read when the pre-treatment trends
    ``diverging`` show the groups not comparable without adjustment (the bounds are of the
    unadjusted endline difference in means and assume random assignment)."""
    if diverging:
        return (" The estimates may be biased by it (the units lost differ between groups); Lee (2009) bounds and "
                "their confidence interval are not given here: they assume random assignment and bound the unadjusted "
                "endline difference in means, which the diverging pre-treatment trends show is not the effect.")
    if pd.isna(a.get("lee_bound_low")) or pd.isna(a.get("lee_bound_high")):
        return (" The estimates may be biased by it (the units lost differ between groups); Lee bounds are not "
                "available here (see the attrition table's reason).")
    low, high = float(a["lee_bound_low"]), float(a["lee_bound_high"])
    level = f"{100 * float(head['ci_level']):g}%"
    has_ci = pd.notna(a.get("lee_ci_low")) and pd.notna(a.get("lee_ci_high"))
    ci = (f"{level} CI {fmt(a['lee_ci_low'])} to {fmt(a['lee_ci_high'])}" if has_ci
          else "no confidence interval: see the attrition table's reason")
    text = (f" The estimates may be biased by it: Lee (2009) bounds on the endline difference in means, trimming "
            f"{fmt(a['lee_trimmed_share'], 'pct')} of the {a['lee_trimmed_group']} group's observed outcomes, are "
            f"{fmt(low)} to {fmt(high)} ({ci}; random assignment and attrition moved one way only assumed)")
    if low <= 0 <= high:
        return text + ": they include zero, so the sign of the effect is not established."
    if not has_ci:
        return text + ": they exclude zero, but without a confidence interval the sign of the effect is not established."
    ci_low, ci_high = float(a["lee_ci_low"]), float(a["lee_ci_high"])
    if ci_low <= 0 <= ci_high:
        return (text + f": they exclude zero, but their {level} confidence interval does not: the sign of the effect "
                "is not established.")
    if (low > 0) != (head["estimate"] > 0) or head["estimate"] == 0:
        side = "above" if low > 0 else "below"
        change = "an increase" if head["estimate"] > 0 else "a decrease" if head["estimate"] < 0 else "no change"
        return (text + f": they and their confidence interval are {side} zero, while the {head['estimator']} estimate "
                f"is {change}: the sign of the effect is not established.")
    if not head["p_value"] < 1 - float(head["ci_level"]):
        return (text + ": they and their confidence interval exclude zero, but the "
                f"{head['estimator']} estimate is not statistically distinguishable from zero: the sign of the effect "
                "is not established.")
    return text + ": they and their confidence interval exclude zero, and the sign of the effect holds within them."


def programme_summary(tables, study: str, programme: str, preferred: str | None, directions: dict[str, str],
                      alpha: float | None = None) -> str:
    """The plain-language summary of one programme. ``alpha``: the significance level of the
    pre-trend and attrition tests (the configured ``alpha``); by default 1 - the estimates'
    ``ci_level`` (which the configured ``alpha`` sets), else 0.05."""
    est = tables.estimates
    est = est[(est["study_id"] == study) & (est["programme_code"] == programme)]
    if alpha is None:
        levels = est["ci_level"].dropna()
        alpha = 1 - float(levels.iloc[0]) if len(levels) else 0.05
    lines = [f"Programme {programme} (study {study})."]
    for outcome in dict.fromkeys(est["outcome"]):
        block = est[(est["outcome"] == outcome) & (est["subgroup"] == "all")]
        direction = directions.get(outcome, "higher_is_better")
        pre = tables.pretrends
        pre = pre[(pre["study_id"] == study) & (pre["programme_code"] == programme) & (pre["outcome"] == outcome) & (pre["subgroup"] == "all")]
        pre_p = pre["joint_p_value"].dropna()
        diverging = bool(len(pre_p) and pre_p.iloc[0] < alpha)
        head = _headline(block, preferred)
        switched = None
        if diverging and head is not None and head["estimator"] not in ADJUSTED:
            adjusted = _headline(block[block["estimator"].isin(ADJUSTED)], None)
            if adjusted is not None:
                switched, head = head["estimator"], adjusted
        if head is None:
            reasons = "; ".join(sorted(set(block["reason"].dropna())))[:300]
            lines.append(f"{outcome}: no estimate could be made ({reasons}).")
            continue
        change = "an increase" if head["estimate"] > 0 else "a decrease" if head["estimate"] < 0 else "no change"
        good = (head["estimate"] > 0) == (direction == "higher_is_better")
        level = int(round(100 * float(head["ci_level"]))) if pd.notna(head["ci_level"]) else 95
        significant = head["p_value"] < 1 - float(head["ci_level"])
        verdict = (
            f"statistically significant at the {100 - level}% level and {'favourable' if good else 'unfavourable'}"
            if significant else "not statistically distinguishable from zero"
        )
        text = (
            f"{outcome} ({direction.replace('_', ' ')}): the {head['estimator']} estimate is {change} of "
            f"{fmt(abs(head['estimate']))} ({level}% CI {fmt(head['ci_low'])} to {fmt(head['ci_high'])}, "
            f"{p_text(head['p_value'])}), {verdict}; {fmt(head['n_treated'], 'int')} treated and "
            f"{fmt(head['n_comparison'], 'int')} comparison units in {fmt(head['n_clusters'], 'int')} clusters."
        )
        if switched:
            text += (f" Because pre-treatment trends differ between the groups, this headline uses {head['estimator']} "
                     f"(adjusted for baseline covariates) rather than {switched}.")
        others = block[(block["status"] == "ok") & (block["estimator"] != head["estimator"])]
        if len(others) > 0:
            text += f" Other estimators give {fmt(others['estimate'].min())} to {fmt(others['estimate'].max())}."
        if len(pre_p):
            if diverging:
                text += (f" Pre-treatment trends differ between groups (joint test {p_text(pre_p.iloc[0])}, significant at the "
                         f"{fmt_level(alpha)} level): unadjusted difference-in-differences estimates may be biased.")
            else:
                text += f" No evidence of diverging pre-treatment trends (joint test {p_text(pre_p.iloc[0])})."
        att = tables.attrition
        att = att[(att["study_id"] == study) & (att["programme_code"] == programme) & (att["outcome"] == outcome)]
        if len(att) and pd.notna(att.iloc[0]["share_missing_treated"]):
            a = att.iloc[0]
            text += (
                f" Attrition at endline: {fmt(a['share_missing_treated'], 'pct')} of treated and "
                f"{fmt(a['share_missing_comparison'], 'pct')} of comparison units"
            )
            differential = pd.notna(a["p_value"]) and a["p_value"] < alpha
            text += (f" (difference significant at the {fmt_level(alpha)} level, {p_text(a['p_value'])})."
                     if differential else ".")
            if differential:
                text += _lee_text(a, head, diverging)
        subs = est[(est["outcome"] == outcome) & (est["subgroup"] != "all")]
        if len(subs):
            n_ne = int((subs["status"] == "not_estimable").sum())
            text += f" Subgroups: {int((subs['status'] == 'ok').sum())} subgroup estimates, {n_ne} not estimable (too small or degenerate)."
        ce = tables.cost_effectiveness
        ce = ce[(ce["study_id"] == study) & (ce["programme_code"] == programme) & (ce["outcome"] == outcome)]
        if len(ce):
            c = ce.iloc[0]
            if pd.notna(c["cost_per_beneficiary_mad"]):
                text += f" Cost per beneficiary: {fmt(c['cost_per_beneficiary_mad'])} MAD ({c['cost_basis']})"
                points = c.get("outcome_scale") in ("binary", "proportion")  # per point: a hundredth of per 1.0
                unit = "percentage point of" if points else "unit of"

                def cost(column: str) -> str:
                    return fmt(c[column] / 100 if points and pd.notna(c[column]) else c[column])

                if c["status"] == "ok":
                    text += (f"; cost per {unit} impact ({c['estimator']} estimate) {cost('cost_per_unit_impact_mad')} MAD "
                             f"(CI {cost('cost_per_unit_impact_ci_low')} to {cost('cost_per_unit_impact_ci_high')}).")
                elif c["status"] == "ci_unbounded":
                    text += (f"; cost per {unit} impact ({c['estimator']} estimate) {cost('cost_per_unit_impact_mad')} MAD, "
                             f"at least {cost('cost_per_unit_impact_ci_low')} with no finite upper bound (the effect's CI "
                             "includes zero).")
                else:
                    text += f"; cost per unit of impact not defined ({c['reason']})."
        lines.append(text)
    bal = tables.balance
    bal = bal[(bal["study_id"] == study) & (bal["programme_code"] == programme) & bal["smd_before"].notna()]
    if len(bal):
        imbalanced = bal[bal["smd_before"].astype(float).abs() > 0.1]["covariate"].tolist()
        after = bal[bal["smd_after"].astype(float).abs() > 0.1]["covariate"].tolist() if bal["smd_after"].notna().any() else None
        if imbalanced:
            text = f"Baseline imbalance (|SMD| > 0.1) in {', '.join(imbalanced)}"
            text += (f"; after weighting still in {', '.join(after)}." if after else "; weighting removes it." if after is not None else ".")
        else:
            text = "The groups are balanced on the baseline covariates (every |SMD| ≤ 0.1)."
        lines.append(text)
    return " ".join(lines[:1]) + "\n" + "\n".join(f"- {line}" for line in lines[1:])


# --------------------------------------------------------------------------------------
# the page


def _tables(tables) -> dict[str, tuple[pd.DataFrame, dict[str, str]]]:
    est = tables.estimates
    est = est[est["subgroup"] == "all"][
        ["study_id", "programme_code", "outcome", "estimator", "estimate", "std_error", "ci_low", "ci_high", "p_value",
         "n_treated", "n_comparison", "n_clusters", "status", "reason"]
    ]
    sub = tables.estimates[tables.estimates["subgroup"] != "all"][
        ["study_id", "programme_code", "outcome", "estimator", "subgroup", "estimate", "ci_low", "ci_high", "n_treated", "n_comparison", "status"]
    ]
    att = tables.attrition[
        ["study_id", "programme_code", "outcome", "n_baseline_treated", "share_missing_treated", "n_baseline_comparison",
         "share_missing_comparison", "difference", "p_value", "lee_bound_low", "lee_bound_high", "lee_ci_low",
         "lee_ci_high", "status", "reason"]
    ]
    bal = tables.balance[["study_id", "programme_code", "covariate", "mean_treated", "mean_comparison", "smd_before", "smd_after", "n_trimmed", "status"]]
    pre = tables.pretrends
    pre = pre[pre["subgroup"] == "all"].drop_duplicates(["study_id", "programme_code", "outcome", "estimator"])[
        ["study_id", "programme_code", "outcome", "joint_test", "joint_statistic", "joint_df", "joint_p_value", "joint_status", "joint_reason"]
    ]
    ce = tables.cost_effectiveness[
        ["study_id", "programme_code", "outcome", "outcome_scale", "estimator", "estimate", "cost_per_beneficiary_mad",
         "cost_per_unit_impact_mad",
         "cost_per_unit_impact_ci_low", "cost_per_unit_impact_ci_high", "status", "reason"]
    ]
    counts = {"n_treated": "int", "n_comparison": "int", "n_clusters": "int", "p_value": "p", "joint_p_value": "p",
              "n_baseline_treated": "int", "n_baseline_comparison": "int", "share_missing_treated": "pct",
              "share_missing_comparison": "pct", "n_trimmed": "int", "joint_df": "int"}
    return {
        "estimates": (est, counts),
        "pretrend_tests": (pre, counts),
        "attrition": (att, counts),
        "balance": (bal, counts),
        "cost_effectiveness": (ce, counts),
        "subgroups": (sub, counts),
    }


STYLE = """
body{font-family:system-ui,Segoe UI,Arial,sans-serif;margin:2rem;max-width:1200px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.2rem .4rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.meta{color:#666;font-size:.85rem}
"""


def _shown_source(source: str) -> str:
    """The settings file as evaluators read its name: relative to the project
    (config/evaluation.yml), else its name; never a path on the server."""
    from jisr.settings import PROJECT_DIR

    path = Path(source)
    try:
        return path.resolve().relative_to(PROJECT_DIR.resolve()).as_posix()
    except ValueError:
        return path.name


def write_report(tables, report_dir: Path, *, run_id: str, code_version: str, config=None,
                 plots_from: Path | None = None) -> dict[str, Any]:
    """The HTML report of a run. ``plots_from``: the report of the run that estimated these
    same tables (kept because their inputs did not change): its plots are copied rather
    than drawn again (they show only estimates, group means, pre-trends and balance)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    for name, draw, frame in (
        ("forest", forest_plot, tables.estimates),
        ("trends", trends_plot, tables.group_means),
        ("event_study", event_study_plot, tables.pretrends),
        ("balance", balance_plot, tables.balance),
    ):
        drawn = Path(plots_from) / f"{name}.png" if plots_from is not None else None
        if drawn is not None and drawn.exists() and drawn.parent.resolve() != report_dir.resolve():
            path = Path(shutil.copyfile(drawn, report_dir / f"{name}.png"))
        else:
            path = draw(frame, report_dir / f"{name}.png")
        if path is not None:
            images[name] = str(path)

    preferred = config.cost_estimator if config is not None else None
    summaries: dict[str, str] = {}
    for study, programme in dict.fromkeys(zip(tables.estimates["study_id"], tables.estimates["programme_code"])):
        directions = config.for_study(study).outcome_direction if config is not None else {}
        summaries[f"{study}/{programme}"] = programme_summary(tables, study, programme, preferred, directions,
                                                              alpha=config.alpha if config is not None else None)

    sections = _tables(tables)
    markdown = {name: markdown_table(frame, formats) for name, (frame, formats) in sections.items()}

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Impact evaluation report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Impact evaluation report</h1>",
        f"<p class='meta'>run {html.escape(run_id)} · code {html.escape(code_version)}"
        + (f" · settings {html.escape(_shown_source(config.source))}" if config is not None and config.source else "")
        + "</p>",
        "<h2>Summary by programme</h2>",
    ]
    if not summaries:
        parts.append("<p><em>No programme was evaluated.</em></p>")
    for key, text in summaries.items():
        first, *items = text.split("\n")
        parts.append(f"<h3>{html.escape(key)}</h3><p>{html.escape(first)}</p><ul>")
        parts.extend(f"<li>{html.escape(item[2:])}</li>" for item in items)
        parts.append("</ul>")
    captions = {
        "forest": "Effects by programme and outcome",
        "trends": "Means by group and round (parallel trends)",
        "event_study": "Event study (leads and lags)",
        "balance": "Balance of baseline covariates",
    }
    for name, caption in captions.items():
        parts.append(f"<h2>{caption}</h2>")
        if name in images:
            data = base64.b64encode(Path(images[name]).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{caption}' src='data:image/png;base64,{data}'>")
        else:
            parts.append("<p><em>Nothing to plot.</em></p>")
    titles = {
        "estimates": "Estimates (whole sample)",
        "pretrend_tests": "Pre-trend tests",
        "attrition": "Attrition",
        "balance": "Balance table",
        "cost_effectiveness": "Cost-effectiveness",
        "subgroups": "Subgroup estimates",
    }
    for name, (frame, formats) in sections.items():
        parts.append(f"<h2>{titles[name]}</h2>{html_table(frame, formats)}")
    if tables.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in tables.notes) + "</ul>")
    parts.append("</body></html>")
    html_path = report_dir / "impact_report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return {"html_path": str(html_path), "images": images, "markdown": markdown, "summaries": summaries}
