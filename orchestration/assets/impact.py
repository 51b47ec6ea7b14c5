"""The impact stage as assets: ``impact/<table>`` downstream of the evaluation marts."""

import base64
from pathlib import Path

import dagster as dg

from jisr.settings import get_settings
from orchestration.runlock import RefreshLock

PROJECT = get_settings()  # only project-relative paths are read at import; JISR_HOME is read per run
IMPACT_TABLES = ("impact_estimates", "impact_pretrends", "impact_balance", "impact_attrition",
                 "impact_group_means", "impact_cost_effectiveness")
UPSTREAM = [dg.AssetKey(["detail", "mart_evaluation_panel"]), dg.AssetKey(["marts", "mart_programme_costs"])]
CONFIG_PATH = PROJECT.config_dir / "evaluation.yml"


def _image_md(path: str, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{caption}](data:image/png;base64,{data})"


@dg.multi_asset(
    name="impact_stage",
    specs=[dg.AssetSpec(["impact", t], group_name="impact", deps=UPSTREAM, kinds={"python", "duckdb"},
                        description=f"Impact evaluation output {t} (see impact/run.py).") for t in IMPACT_TABLES],
    description="Impact estimates, balance, attrition, pre-trends and cost-effectiveness from the evaluation "
                "panel, configured by config/evaluation.yml; writes an HTML evaluation report.",
)
def impact_stage(context: dg.AssetExecutionContext, refresh_lock: RefreshLock):
    from impact.run import run_impact

    settings = get_settings()
    report_dir = settings.reports_dir / context.run.run_id / "impact"
    summary = run_impact(settings.build_path, CONFIG_PATH, run_id=context.run.run_id,
                         code_version=settings.code_version, report_dir=report_dir)
    report = summary["report"]
    if summary["reused"]:
        context.log.info(summary["reused"])
    if summary["estimation_processes"]:
        context.log.info(f"impact: {summary['estimation_processes']}")
    for note in summary["notes"]:
        context.log.info(note)
    shared = {
        "estimation": summary["reused"] or "estimated in this run (inputs changed or no earlier estimates)",
        "estimated_by_run": dg.MetadataValue.json(summary["estimated_by_run"]),
        "inputs_fingerprint": summary["fingerprints"]["costs"],
        "report": dg.MetadataValue.path(report["html_path"]),
        "config": dg.MetadataValue.path(str(CONFIG_PATH)),
        "estimate_status": dg.MetadataValue.json(summary["estimate_status"]),
        "studies": ", ".join(summary["studies"]),
    }
    for table in IMPACT_TABLES:
        metadata = dict(shared, rows=summary["tables"].get(f"impact.{table}", 0))
        if table == "impact_estimates":
            md = [report["markdown"].get("estimates", "")]
            md += [_image_md(p, name) for name, p in report["images"].items() if name in ("forest", "trends")]
            metadata["estimates"] = dg.MetadataValue.md("\n\n".join(md))
            metadata["summaries"] = dg.MetadataValue.md("\n\n".join(f"**{k}**\n\n{v}" for k, v in report["summaries"].items()))
        elif table == "impact_balance" and "balance" in report["images"]:
            metadata["balance"] = dg.MetadataValue.md(report["markdown"].get("balance", "") + "\n\n"
                                                      + _image_md(report["images"]["balance"], "balance"))
        elif table == "impact_attrition":
            metadata["attrition"] = dg.MetadataValue.md(report["markdown"].get("attrition", ""))
        elif table == "impact_pretrends":
            metadata["pretrend_tests"] = dg.MetadataValue.md(report["markdown"].get("pretrend_tests", ""))
        elif table == "impact_cost_effectiveness":
            metadata["cost_effectiveness"] = dg.MetadataValue.md(report["markdown"].get("cost_effectiveness", ""))
        yield dg.MaterializeResult(asset_key=dg.AssetKey(["impact", table]), metadata=metadata)
