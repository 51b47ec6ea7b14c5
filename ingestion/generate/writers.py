"""Contract-driven file writers: typed numpy chunks in, partner files out.

A *chunk* is a dict ``column name -> numpy array`` holding typed values, one array per
contract column, in this representation:

=========== ==================================================================
varchar     object array of ``str`` (``None`` = empty)
integer     int64 (``NULL_INT`` = empty)
decimal     float64 (NaN = empty), written with 2 decimals
double      float64 (NaN = empty), written with 2 decimals (or ``decimals`` hint)
date        int64 days since 1970-01-01 (``NULL_INT`` = empty)
timestamp   int64 seconds since 1970-01-01 UTC (``NULL_INT`` = empty)
boolean     int8 1/0 (-1 = empty)
=========== ==================================================================

Writers render every column vectorised (lookup tables for dates and cents, numpy string
conversion for integers), so a million rows take a few seconds, and stream chunk by chunk.
The header, delimiter, decimal mark, date format and encoding all come from the contract.

Dirty rows are planted here (see :mod:`ingestion.generate.dirty`): each chunk of ``n`` clean
rows receives ``Binomial(n, dirty_rate)`` extra rows, each breaking exactly one row rule,
at random positions; their 1-based data row numbers are recorded for the ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ingestion.contracts import Contract

NULL_INT = np.int64(-(1 << 62))
EPOCH = dt.date(1970, 1, 1)
_DAY0 = (dt.date(1900, 1, 1) - EPOCH).days
_DAY1 = (dt.date(2070, 12, 31) - EPOCH).days
_PAD2 = np.array([f"{i:02d}" for i in range(100)], dtype=object)


def day(d: dt.date) -> int:
    return (d - EPOCH).days


def to_date(days: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(days))


@lru_cache(maxsize=8)
def _date_table(fmt: str) -> np.ndarray:
    return np.array([(EPOCH + dt.timedelta(days=d)).strftime(fmt) for d in range(_DAY0, _DAY1 + 1)], dtype=object)


@lru_cache(maxsize=1)
def _time_table() -> np.ndarray:
    return np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)], dtype=object)


def _isnull_obj(a: np.ndarray) -> np.ndarray:
    return np.equal(a, None)


def render_column(contract: Contract, col, arr: np.ndarray, kind: str, decimals: int = 2) -> np.ndarray:
    """Render a typed column as an object array of text cells (``kind`` 'csv') or JSON literals ('json')."""
    t = col.type
    json_mode = kind == "json"
    null = "null" if json_mode else ""
    if t == "varchar":
        out = arr.astype(object, copy=True)
        nulls = _isnull_obj(out)
        if json_mode:
            out[~nulls] = '"' + out[~nulls] + '"'
        out[nulls] = null
        return out
    if t == "integer":
        nulls = arr == NULL_INT
        out = arr.astype(str).astype(object)
        out[nulls] = null
        return out
    if t in ("decimal", "double"):
        nulls = np.isnan(arr)
        scale = 10 ** decimals
        cents = np.rint(np.where(nulls, 0.0, arr) * scale).astype(np.int64)
        neg = cents < 0
        mag = np.abs(cents)
        sep = "." if json_mode else contract.decimal
        out = (mag // scale).astype(str).astype(object)
        if decimals == 2:
            out = out + sep + _PAD2[mag % 100]
        elif decimals > 0:
            frac = np.char.zfill((mag % scale).astype(str), decimals).astype(object)
            out = out + sep + frac
        out[neg] = "-" + out[neg]
        out[nulls] = null
        return out
    if t == "date":
        nulls = arr == NULL_INT
        idx = np.where(nulls, _DAY0, arr) - _DAY0
        out = _date_table(contract.date_format)[idx]
        if json_mode:
            out = '"' + out + '"'
        out[nulls] = null
        return out
    if t == "timestamp":
        nulls = arr == NULL_INT
        a = np.where(nulls, 0, arr)
        out = _date_table("%Y-%m-%d")[a // 86400 - _DAY0] + "T" + _time_table()[a % 86400] + "Z"
        if json_mode:
            out = '"' + out + '"'
        out[nulls] = null
        return out
    if t == "boolean":
        table = np.array(["false", "true", "null"] if json_mode else ["0", "1", ""], dtype=object)
        return table[np.where(arr < 0, 2, arr)]
    raise ValueError(t)


def render_scalar(contract: Contract, col, value, kind: str, decimals: int = 2) -> str:
    """Render one Python value (used for the overridden cells of dirty rows)."""
    json_mode = kind == "json"
    if value is None:
        return "null" if json_mode else ""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if json_mode else value
    if isinstance(value, bool):
        return ("true" if value else "false") if json_mode else ("1" if value else "0")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.{decimals}f}"
        return text if json_mode else text.replace(".", contract.decimal)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps(text) if json_mode else text
    if isinstance(value, dt.date):
        text = value.strftime(contract.date_format)
        return json.dumps(text) if json_mode else text
    raise TypeError(type(value))


def python_value(col, v):
    """Typed chunk value -> Python object (xlsx cells, dirty-row helpers)."""
    t = col.type
    if t == "varchar":
        return v
    if t == "integer":
        return None if v == NULL_INT else int(v)
    if t in ("decimal", "double"):
        return None if np.isnan(v) else round(float(v), 2)
    if t == "date":
        return None if v == NULL_INT else to_date(v)
    if t == "timestamp":
        return None if v == NULL_INT else dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(v))
    if t == "boolean":
        return None if v < 0 else bool(v)
    raise ValueError(t)


class FileWriter:
    """Writes one delivery file of a contract, chunk by chunk, planting dirty rows."""

    def __init__(self, path: Path, contract: Contract, *, batch: str, dirty=None,
                 decimals: dict[str, int] | None = None, blank_unencodable: bool = True):
        self.path = Path(path)
        self.contract = contract
        self.batch = batch
        self.dirty = dirty  # DirtyPlanter or None
        self.decimals = decimals or {}
        self.rows = 0
        self.kind = "json" if contract.format == "jsonl" else ("csv" if contract.format == "csv" else "xlsx")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._xlsx_rows: list[list] = []
        if self.kind == "csv":
            self._fh = open(self.path, "wb")
            enc = contract.encoding
            self._encoding = "utf-8" if enc == "utf-8-sig" else enc
            self._eol = "\r\n" if enc == "windows-1252" else "\n"
            if enc == "utf-8-sig":
                self._fh.write(b"\xef\xbb\xbf")
            header = contract.delimiter.join(c.header for c in contract.columns) + self._eol
            self._fh.write(header.encode(self._encoding))
        elif self.kind == "json":
            self._fh = open(self.path, "wb")
            names = [c.name for c in contract.columns]
            self._template = "{" + ",".join(f"{json.dumps(n)}:%s" for n in names) + "}"
        self.blank_unencodable = blank_unencodable

    # -- rendering ---------------------------------------------------------------------
    def _cells(self, chunk: dict) -> list[np.ndarray]:
        cols = []
        for col in self.contract.columns:
            arr = chunk[col.name]
            cells = render_column(self.contract, col, arr, self.kind, self.decimals.get(col.name, 2))
            if self.kind == "csv" and col.type == "varchar":
                cells = self._csv_safe(cells)
            cols.append(cells)
        return cols

    def _csv_safe(self, cells: np.ndarray) -> np.ndarray:
        # Quote the (rare) values holding the delimiter or a quote; one C-level join finds
        # out cheaply whether a column has any.
        d = self.contract.delimiter
        joined = "\x00".join(cells)
        if d not in joined and '"' not in joined:
            return cells
        for i, v in enumerate(cells):
            if d in v or '"' in v:
                cells[i] = '"' + v.replace('"', '""') + '"'
        return cells

    def _line(self, cells: tuple) -> str:
        if self.kind == "json":
            return self._template % cells
        return self.contract.delimiter.join(cells)

    def _scalar_cells(self, chunk: dict, b: int, overrides: dict) -> tuple:
        out = []
        for col in self.contract.columns:
            if col.name in overrides:
                v = overrides[col.name]
            else:
                v = python_value(col, chunk[col.name][b])
            if self.kind == "xlsx":
                out.append(v)
            else:
                cell = render_scalar(self.contract, col, v, self.kind, self.decimals.get(col.name, 2))
                if self.kind == "csv" and (self.contract.delimiter in cell or '"' in cell):
                    cell = '"' + cell.replace('"', '""') + '"'
                out.append(cell)
        return tuple(out)

    # -- writing -----------------------------------------------------------------------
    def write(self, chunk: dict) -> None:
        n = len(chunk[self.contract.columns[0].name])
        if n == 0:
            return
        if self.kind == "xlsx":
            rows = [list(self._scalar_cells(chunk, i, {})) for i in range(n)]
        else:
            cells = self._cells(chunk)
            if self.kind == "json":
                template = self._template
                rows = [template % t for t in zip(*cells)]
            else:
                rows = list(map(self.contract.delimiter.join, zip(*cells)))
        if self.dirty is not None:
            rows = self.dirty.plant(self, chunk, rows)
        self.rows += len(rows)
        if self.kind == "xlsx":
            self._xlsx_rows.extend(rows)
        else:
            text = "\n".join(rows) + "\n" if self.kind == "json" else self._eol.join(rows) + self._eol
            self._fh.write(text.encode("utf-8" if self.kind == "json" else self._encoding))

    def render_row(self, chunk: dict, b: int, overrides: dict):
        cells = self._scalar_cells(chunk, b, overrides)
        return list(cells) if self.kind == "xlsx" else self._line(cells)

    def close(self) -> int:
        if self.kind == "xlsx":
            from openpyxl import Workbook

            wb = Workbook(write_only=True)
            ws = wb.create_sheet(self.contract.xlsx.get("sheet", "Sheet1"))
            ws.append([c.header for c in self.contract.columns])
            for row in self._xlsx_rows:
                ws.append(row)
            wb.save(self.path)
            self._xlsx_rows = []
            _normalise_xlsx(self.path)
        else:
            self._fh.close()
        return self.path.stat().st_size


_FIXED_TS = "2025-01-01T00:00:00Z"


def _normalise_xlsx(path: Path) -> None:
    """Make a saved workbook byte-reproducible: fixed zip entry times and document dates."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:)", rb"\g<1>" + _FIXED_TS.encode() + rb"\g<3>", data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(2025, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            zout.writestr(fixed, data)
