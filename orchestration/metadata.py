"""Small helpers to present results as Dagster metadata."""

from __future__ import annotations


def markdown_table(headers, rows, max_rows: int = 50) -> str:
    def cell(v) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in list(rows)[:max_rows]:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    if not rows:
        lines.append("| " + " | ".join("" for _ in headers) + " |")
    return "\n".join(lines)
