"""Great Expectations suites generated from the data contracts, run on every delivery.

One suite per contract source (``jisr.<source>``), generated from ``contracts/<source>.yml``:

==========================  ====================================================================
contract                    expectation (on the delivered batch, BEFORE pseudonymisation)
==========================  ====================================================================
columns                     ``expect_table_columns_to_match_set`` (every contract column staged)
``required``                ``expect_column_values_to_not_be_null`` on the delivered text
``type`` (not varchar)      ``expect_column_values_to_not_be_null`` on the typed value, for rows
                            whose text is not empty (the value parses as its type)
``pattern``                 ``expect_column_values_to_match_regex`` on the clear text
``allowed``/``allowed_from`` ``expect_column_values_to_be_in_set``
``min``/``max``             ``expect_column_values_to_be_between`` on the typed value
``primary_key``             ``expect_column_values_to_be_unique`` /
                            ``expect_compound_columns_to_be_unique``
==========================  ====================================================================

:class:`SuiteValidator` plugs into ingestion's ``validators`` hook. It reads the typed,
not-yet-pseudonymised batch into pandas through Arrow (:func:`fetch_frame`: text as pandas
strings, dates and timestamps as ``datetime64[ns]`` so GX compares them vectorised), in
chunks of at most ``chunk_rows`` rows split by a hash of the primary key, so duplicate keys
stay in one chunk; the chunks of a large delivery are validated by the ingestion process and
``great_expectations.workers`` worker processes at once, smaller deliveries by the workers
alone (:meth:`SuiteValidator._to_workers`). Each chunk is validated in two passes:

1. every expectation of the suite on every row, with ``result_format="BOOLEAN_ONLY"``
   (pass or fail, no list of rows: most expectations pass, and listing rows is what costs);
2. the expectations that failed, again on every row of the chunk (narrowed to the columns
   they read), with ``result_format="COMPLETE"`` and
   ``unexpected_index_column_names=["_source_row"]``.

In the first pass the expectations with a row condition run apart, on the columns they read
(GX copies the whole batch it is given for each condition).

Every failing (row, ``gx:<expectation>:<column>``) goes back to the quarantine. An expectation
that raised (its ``exception_info``, in either pass) counts as failed for every row of the
batch: an errored check is never a pass. Values of direct identifiers never leave the
process: messages and reports say "(identifier withheld)". A summary of every expectation
(rows evaluated, rows failing, examples) is recorded in the raw store
(``quality.gx_results``) and rendered by :func:`quality.report.write_report`.

``great_expectations`` is imported inside functions only: importing it costs seconds. The
first delivery validated in the ingestion process starts that import in a thread
(:func:`import_gx_in_background`), where it overlaps the typing of the next file; a pass whose
deliveries all go to the workers (a monthly refresh) never imports it there.

The ingestion prepares (reads, types and submits) each delivery in a thread of its own
while its main thread collects the delivery before: :meth:`SuiteValidator.submit` runs in
the first, the callables it returns in the second; the worker processes are started, used
and stopped under a lock, and only the main thread runs GX in the ingestion process.
"""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ingestion.contracts import Contract, seed_values

RESULTS_DDL = """
create table if not exists quality.gx_results (
    run_id varchar,
    source varchar not null,
    batch varchar,
    suite varchar not null,
    contract_version varchar,
    validated_at timestamp not null,
    rows bigint,
    chunks integer,
    expectation varchar not null,
    column_name varchar,
    rule varchar not null,
    success boolean not null,
    raised_exception boolean not null,
    exception_message varchar,
    element_count bigint,
    unexpected_count bigint,
    unexpected_examples varchar,
    seconds double  -- time the ingestion process spent on the delivery (validating, or waiting for the worker)
)"""

WITHHELD = "(identifier withheld)"
DEFAULT_CHUNK_ROWS = 250_000


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, as plain data (no Great Expectations import needed)."""

    type: str  # snake-case expectation type, e.g. expect_column_values_to_not_be_null
    kwargs: dict[str, Any]
    column: str  # contract column(s) it is about ("table" for table-level expectations)
    pii: bool = False
    describes: str = ""  # what a failure means, for messages
    when_present: str | None = None  # only the rows where this column is not null (GX row condition)

    @property
    def rule(self) -> str:
        return f"gx:{self.type}:{self.column}"

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.type.split("_"))


def _bound(col, value):
    if value is None:
        return None
    if col.type == "date":
        return datetime.fromisoformat(str(value))
    if col.type == "timestamp":
        return datetime.fromisoformat(str(value))
    if col.type == "integer":
        return int(value)
    return float(value)


def _key_column(col) -> str:
    return col.name if col.type == "varchar" else f"{col.name}__typed"


def suite_specs(contract: Contract, seeds_dir: Path) -> list[ExpectationSpec]:
    """The expectations of a contract's suite, in a stable order."""
    specs = [ExpectationSpec("expect_table_columns_to_match_set",
                             {"column_set": frame_columns(contract), "exact_match": True}, "table",
                             describes="the staged delivery does not have the contract's columns")]
    for col in contract.columns:
        pii = bool(col.pii)
        if col.required:
            specs.append(ExpectationSpec("expect_column_values_to_not_be_null", {"column": col.name}, col.name, pii,
                                         f"column {col.name} is required but empty"))
        if col.type != "varchar":
            specs.append(ExpectationSpec("expect_column_values_to_not_be_null", {"column": f"{col.name}__typed"},
                                         f"{col.name}__typed", pii, f"column {col.name} is not a valid {col.type}",
                                         when_present=col.name))
        if col.pattern:
            specs.append(ExpectationSpec("expect_column_values_to_match_regex",
                                         {"column": col.name, "regex": f"^(?:{col.pattern})$"}, col.name, pii,
                                         f"column {col.name} does not match the pattern {col.pattern}"))
        allowed = col.allowed or (seed_values(seeds_dir, col.allowed_from) if col.allowed_from else None)
        if allowed:
            target = col.name if col.type == "varchar" else f"{col.name}__text"
            specs.append(ExpectationSpec("expect_column_values_to_be_in_set",
                                         {"column": target, "value_set": sorted(str(v) for v in allowed)}, col.name,
                                         pii, f"column {col.name} is not one of: {col.allowed_from or ', '.join(allowed)}"))
        if col.min is not None or col.max is not None:
            kwargs = {"column": f"{col.name}__typed"}
            if col.min is not None:
                kwargs["min_value"] = _bound(col, col.min)
            if col.max is not None:
                kwargs["max_value"] = _bound(col, col.max)
            if col.min is not None and col.max is not None:
                outside = f"is outside [{col.min}, {col.max}]"
            else:
                outside = f"is below the minimum {col.min}" if col.min is not None else f"is above the maximum {col.max}"
            specs.append(ExpectationSpec("expect_column_values_to_be_between", kwargs, col.name, pii,
                                         f"column {col.name} {outside}"))
    keys = [contract.column(k) for k in contract.primary_key]
    if len(keys) == 1:
        specs.append(ExpectationSpec("expect_column_values_to_be_unique", {"column": _key_column(keys[0])},
                                     keys[0].name, bool(keys[0].pii),
                                     f"key {keys[0].name} appears more than once in the delivery"))
    elif keys:
        specs.append(ExpectationSpec(
            "expect_compound_columns_to_be_unique",
            {"column_list": [_key_column(k) for k in keys], "ignore_row_if": "any_value_is_missing"},
            ",".join(k.name for k in keys), any(k.pii for k in keys),
            f"key ({', '.join(k.name for k in keys)}) appears more than once in the delivery"))
    return specs


def frame_columns(contract: Contract) -> list[str]:
    """Columns of the pandas batch a suite validates."""
    cols = ["_source_row"]
    for col in contract.columns:
        cols.append(col.name)
        if col.type != "varchar":
            cols.append(f"{col.name}__typed")
            if col.allowed or col.allowed_from:
                cols.append(f"{col.name}__text")
    return cols


def _frame_sql(contract: Contract, table: str, present: set[str]) -> list[str]:
    out = []
    for name in frame_columns(contract):
        if name.endswith("__text"):
            base = name[: -len("__text")]
            if f"{base}__typed" in present:
                out.append(f"{base}__typed::varchar as {name}")
        elif name in present:
            out.append(name)
    return out


def fetch_frame(con, sql: str):
    """The rows of ``sql`` as a pandas DataFrame, through Arrow (far cheaper than ``.df()`` for text).

    Types are those of ``.df()``, which the expectations were written against: text as pandas
    strings, integers and booleans with NULLs as nullable ``Int64``/``boolean``, decimals as
    floats; dates and timestamps as ``datetime64[ns]`` (GX compares those vectorised, and any
    other datetime element by element), or ``datetime64[us]`` when a value lies outside the
    nanosecond range (years 1678-2261)."""
    import pandas as pd
    import pyarrow as pa

    rel = con.sql(sql)
    casts = []
    for name, dtype in zip(rel.columns, rel.types):
        kind = str(dtype).upper()
        quoted = '"' + name.replace('"', '""') + '"'
        if kind.startswith("DECIMAL"):
            casts.append(f"{quoted}::double as {quoted}")
        elif kind == "DATE":
            casts.append(f"{quoted}::timestamp as {quoted}")
        else:
            casts.append(quoted)
    table = con.sql(f"select {', '.join(casts)} from ({sql})").to_arrow_table()
    nullable = {pa.bool_(): pd.BooleanDtype(), pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
                pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    frame = table.to_pandas(types_mapper=nullable.get)
    for name, column in zip(table.column_names, table.columns):
        if column.type in nullable and column.null_count == 0:
            frame[name] = frame[name].astype(column.type.to_pandas_dtype())
        elif pa.types.is_timestamp(column.type) and column.type.tz is None:
            try:
                frame[name] = frame[name].astype("datetime64[ns]")
            except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
                pass  # outside the nanosecond range: keep microseconds
    return frame


def suite_name(contract: Contract) -> str:
    return f"jisr.{contract.source}"


# --- Great Expectations objects ---------------------------------------------------------------
class _GX:
    """One ephemeral Great Expectations context per process, with a validation definition
    per contract version (building them costs more than validating a small batch)."""

    def __init__(self):
        # No warnings.catch_warnings() here: its filters are the whole process's, and this
        # may run in a thread beside the ingestion (import_gx_in_background). Importing GX
        # and creating the context warn of nothing (checked with every warning shown).
        self._init()

    def _init(self):
        import great_expectations as gx
        from great_expectations.data_context.types.base import (DataContextConfig, InMemoryStoreBackendDefaults,
                                                                 ProgressBarsConfig)
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every pandas batch under HASH_THRESHOLD bytes (an MD5 of a hash of
        # every value) only to label the batch in the result's metadata, which nothing here
        # reads: 61% of the time of validating a 378,000-row delivery. 0: no fingerprint (for the
        # whole process: a setting of GX's pandas engine).
        pandas_execution_engine.HASH_THRESHOLD = 0
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults()))
        # Every ValidationDefinition.run also serialises its result into the context's store,
        # where nothing reads it (the results are taken from what run returns, then
        # summarised into quality.gx_results): a tenth of the suites' time, and memory that
        # grows with every delivery of the run. This context keeps no results.
        self.context.validation_results_store.store_validation_results = _discard_result
        self.datasource = self.context.data_sources.add_pandas("jisr_deliveries")
        self.definitions: dict[tuple, Any] = {}

    def definition(self, contract: Contract, specs: list[ExpectationSpec]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._definition(contract, specs)

    def _definition(self, contract: Contract, specs: list[ExpectationSpec]):
        import great_expectations.expectations as gxe

        key = (contract.source, contract.version,
               json.dumps([(s.type, s.kwargs, s.when_present) for s in specs], default=str))
        if key not in self.definitions:
            n = len(self.definitions)
            suite = self.gx.ExpectationSuite(name=f"{suite_name(contract)}.{n}")
            for spec in specs:
                suite.add_expectation(_expectation(gxe, spec))
            suite = self.context.suites.add(suite)
            asset = self.datasource.add_dataframe_asset(f"{contract.source}.{n}")
            batch = asset.add_batch_definition_whole_dataframe("delivery")
            self.definitions[key] = self.context.validation_definitions.add(
                self.gx.ValidationDefinition(name=f"{suite_name(contract)}.{n}", data=batch, suite=suite))
        return self.definitions[key]


def _discard_result(*_, **__) -> None:
    return None


_GX_SINGLETON: _GX | None = None
_GX_LOCK = threading.Lock()
_GX_IMPORT: threading.Thread | None = None


def _gx() -> _GX:
    """This process's GX context (the first call imports GX: about 2 s; a call while
    :func:`import_gx_in_background` runs waits for it)."""
    global _GX_SINGLETON
    if _GX_SINGLETON is None:
        with _GX_LOCK:
            if _GX_SINGLETON is None:
                _GX_SINGLETON = _GX()
    return _GX_SINGLETON


def import_gx_in_background() -> None:
    """Start importing GX in this process, in a thread, unless it is done or under way.

    Ingestion calls it when a delivery will be validated in this process, at commit, while
    the next file is read and typed: DuckDB does that work without holding Python's GIL,
    so the import overlaps it instead of delaying the commit. pandas, which both threads
    need, is imported first, here, so they do not import it at once. A failing import is
    left to the validation, which imports again and raises.
    """
    global _GX_IMPORT
    if _GX_SINGLETON is not None or _GX_IMPORT is not None:
        return
    import pandas  # noqa: F401 - see the docstring

    def run() -> None:
        try:
            _gx()
        except Exception:  # noqa: BLE001 - raised again where GX is needed
            pass

    _GX_IMPORT = threading.Thread(target=run, name="jisr-gx-import", daemon=True)
    _GX_IMPORT.start()


def build_suite(contract: Contract, seeds_dir: Path):
    """The contract's suite as a ``great_expectations.ExpectationSuite`` (for inspection/export)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _gx()  # GX needs an active context to build suites
    suite = gx.ExpectationSuite(name=suite_name(contract))
    for spec in suite_specs(contract, seeds_dir):
        suite.add_expectation(_expectation(gxe, spec))
    return suite


def _expectation(gxe, spec: ExpectationSpec):
    """The GX expectation of a spec (``gxe``: ``great_expectations.expectations``)."""
    kwargs = dict(spec.kwargs)
    if spec.when_present:
        from great_expectations.expectations.row_conditions import Column

        kwargs["row_condition"] = Column(spec.when_present).is_not_null()
    return getattr(gxe, spec.class_name)(**kwargs, meta={"rule": spec.rule})


# --- results -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one expectation found in a batch (summed over its chunks)."""

    spec: ExpectationSpec
    success: bool = True
    raised: bool = False
    exception: str | None = None
    element_count: int = 0
    unexpected_count: int = 0
    rows: dict[int, Any] = field(default_factory=dict)  # source row -> offending value (clear!)
    examples: list[str] = field(default_factory=list)  # shown in reports (never identifiers)


def exception_raised(info) -> tuple[bool, str | None]:
    """Whether a GX result's ``exception_info`` says the expectation raised (and why).

    GX gives either ``{"raised_exception": ..., "exception_message": ...}`` or a mapping of
    metric ids to such dicts."""
    if not info:
        return False, None
    if isinstance(info, dict) and "raised_exception" in info:
        return bool(info.get("raised_exception")), info.get("exception_message")
    if isinstance(info, dict):
        for value in info.values():
            raised, message = exception_raised(value if isinstance(value, dict) else getattr(value, "__dict__", {}))
            if raised:
                return True, message
    return False, None


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:300] if text and text.strip() else "unknown error"


def _plain(value):
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp: a date when it has no time
        value = value.to_pydatetime()
        return value.date().isoformat() if value == datetime(value.year, value.month, value.day) else value.isoformat()
    try:
        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


# First pass: is each expectation met? No row lists (and no counts: GX computes them, but
# BOOLEAN_ONLY does not return them; a passing expectation has no failing row).
FIRST_PASS = {"result_format": "BOOLEAN_ONLY"}
# Second pass, for the expectations that failed: every failing row, identified by its source row.
FAILED_PASS = {"result_format": "COMPLETE", "unexpected_index_column_names": ["_source_row"],
               "return_unexpected_index_query": False}


def _run(contract: Contract, specs: list[ExpectationSpec], frame, result_format: dict) -> tuple[dict, str | None]:
    """Run the suite of ``specs`` on ``frame``: (results by rule, why the whole run failed)."""
    definition = _gx().definition(contract, specs)
    try:
        with warnings.catch_warnings():  # GX's own deprecation noise (pydantic v1, regex groups)
            warnings.simplefilter("ignore")
            result = definition.run(batch_parameters={"dataframe": frame}, result_format=dict(result_format))
    except Exception as exc:  # the whole validation failed: every expectation errored
        return {}, f"{type(exc).__name__}: {exc}"
    return {(r.expectation_config.meta or {}).get("rule"): r for r in result.results}, None


def _domain_rows(spec: ExpectationSpec, frame) -> int:
    """Rows an expectation evaluates (GX's ``element_count``): the batch, or the rows meeting
    its row condition."""
    if not spec.when_present:
        return len(frame)
    return int(frame[spec.when_present].notna().sum()) if spec.when_present in frame.columns else 0


def _columns_for(specs: list[ExpectationSpec], frame):
    """The batch narrowed to the columns ``specs`` read (all of them for a table-level one)."""
    if any(s.column == "table" for s in specs):
        return frame
    wanted = ["_source_row"]
    for spec in specs:
        column = spec.kwargs.get("column")
        names = [*spec.kwargs.get("column_list", []), column, spec.when_present]
        if column and column.endswith("__typed"):
            names.append(column.removesuffix("__typed"))  # the delivered text, for messages
        wanted += [n for n in names if n]
    wanted = list(dict.fromkeys(n for n in wanted if n in frame.columns))
    if len(wanted) == len(frame.columns):
        return frame
    return frame[wanted]


def validate_frame(contract: Contract, specs: list[ExpectationSpec], frame, outcomes: dict[str, Outcome]) -> None:
    """Validate one pandas batch; add what each expectation found to ``outcomes``.

    Every expectation runs on the whole batch with a cheap result format first; the ones that
    failed run again with ``COMPLETE`` results, which list each failing row. Expectations
    with a row condition run apart, on the columns they read: GX filters the batch it is
    given by each condition, copying every column of it."""
    all_rows = [int(r) for r in frame["_source_row"].tolist()] if "_source_row" in frame.columns else []
    by_rule: dict = {}
    failures: dict[str, str] = {}  # rule -> why its whole run failed

    def run(group: list[ExpectationSpec], batch, result_format: dict) -> None:
        found, failure = _run(contract, group, batch, result_format)
        for spec in group:
            by_rule[spec.rule] = found.get(spec.rule)
            if failure:
                failures[spec.rule] = failure

    conditional = [s for s in specs if s.when_present]
    plain = [s for s in specs if not s.when_present]
    if plain:
        run(plain, frame, FIRST_PASS)
    if conditional:
        run(conditional, _columns_for(conditional, frame), FIRST_PASS)
    failed = [s for s in specs if by_rule.get(s.rule) is not None and not by_rule[s.rule].success
              and not exception_raised(by_rule[s.rule].exception_info)[0]]
    if failed:
        run(failed, _columns_for(failed, frame), FAILED_PASS)
    for spec in specs:
        out = outcomes.setdefault(spec.rule, Outcome(spec))
        r = by_rule.get(spec.rule)
        if r is None:
            out.success, out.raised = False, True
            out.exception = out.exception or _first_line(failures.get(spec.rule)
                                                         or "no result returned for this expectation")
            out.rows.update({row: None for row in all_rows})
            out.element_count += len(all_rows)
            out.unexpected_count += len(all_rows)
            continue
        raised, message = exception_raised(r.exception_info)
        res = r.result or {}
        if raised:
            out.success, out.raised = False, True
            out.exception = out.exception or _first_line(message)
            out.rows.update({row: None for row in all_rows})
            out.element_count += len(all_rows)
            out.unexpected_count += len(all_rows)
            continue
        out.element_count += int(res["element_count"]) if "element_count" in res else _domain_rows(spec, frame)
        if r.success:
            continue
        out.success = False
        index_list = res.get("unexpected_index_list")
        if index_list is None or (not index_list and "unexpected_count" not in res):
            # a table-level expectation: it is about every row of the batch
            out.rows.update({row: None for row in all_rows})
            out.unexpected_count += len(all_rows)
            observed = res.get("details") or res.get("observed_value")
            if observed is not None and not spec.pii:
                out.examples.append(str(observed)[:300])
            continue
        value_key = spec.kwargs.get("column")
        text_of = None
        if spec.type == "expect_column_values_to_not_be_null" and value_key.endswith("__typed"):
            base = value_key[: -len("__typed")]  # show what was delivered, not the failed parse
            failing = frame[frame["_source_row"].isin([int(i["_source_row"]) for i in index_list])]
            text_of = dict(zip(failing["_source_row"].astype(int), failing[base]))
        for item in index_list:
            row = int(item["_source_row"])
            if text_of is not None:
                value = _plain(text_of.get(row))
            elif value_key is not None:
                value = _plain(item.get(value_key))
            else:
                value = {k: _plain(v) for k, v in item.items() if k != "_source_row"}
            out.rows[row] = value
        out.unexpected_count += int(res.get("unexpected_count") or len(index_list))
        if not spec.pii:
            for value in list(out.rows.values())[:5]:
                if len(out.examples) < 5:
                    out.examples.append(str(value))


def _value_text(spec: ExpectationSpec, value) -> str:
    if spec.pii:
        return WITHHELD
    if value is None:
        return "empty"
    return f"'{value}'"


def _message(spec: ExpectationSpec, outcome: Outcome, shown: str) -> str:
    if outcome.raised:
        return (f"Great Expectations could not evaluate {spec.type} on {spec.column} "
                f"({outcome.exception}); the row is held until the check runs")
    if spec.type == "expect_table_columns_to_match_set":
        return f"Great Expectations {spec.type}: {spec.describes}"
    return f"Great Expectations {spec.type}: {spec.describes} (value {shown})"


def validate_chunk(contract: Contract, specs: list[ExpectationSpec], frame) -> tuple[dict[str, Outcome], list[tuple]]:
    """Validate one chunk of a delivery: what each expectation found in it (failing values
    cleared) and its failing ``(source_row, rule, column_name, message)``. Runs in the
    ingestion process or in a worker process (:class:`SuiteValidator`)."""
    outcomes: dict[str, Outcome] = {}
    validate_frame(contract, specs, frame, outcomes)
    violations = []
    for spec in specs:
        out = outcomes.get(spec.rule)
        if out is None or not out.rows:
            continue
        column = spec.column.removesuffix("__typed") if spec.column != "table" else None
        if spec.type == "expect_compound_columns_to_be_unique":
            column = spec.column
        for row, value in out.rows.items():
            violations.append((row, spec.rule, column, _message(spec, out, _value_text(spec, value))))
        out.rows = {}  # clear values do not outlive the chunk
    return outcomes, violations


def _warm_up() -> None:
    """Run in a new worker: import what validating a chunk needs."""
    _gx()


def _merge(outcomes: dict[str, Outcome], found: dict[str, Outcome]) -> None:
    """Add what the expectations found in one chunk to the delivery's outcomes."""
    for rule, part in found.items():
        out = outcomes.setdefault(rule, Outcome(part.spec))
        out.success = out.success and part.success
        out.raised = out.raised or part.raised
        out.exception = out.exception or part.exception
        out.element_count += part.element_count
        out.unexpected_count += part.unexpected_count
        out.examples.extend(part.examples[: max(0, 5 - len(out.examples))])


@dataclass
class _Plan:
    """How a delivery is validated: its expectations, rows, chunks and the query of each chunk."""

    specs: list[ExpectationSpec]
    total: int
    chunks: int
    chunk_sql: Callable[[int], str]
    seconds: float  # this process's time on it so far (planning)


# A delivery this large starts the workers (importing GX in a worker costs about 3 s of CPU;
# validating 10,000 rows about 0.2 s): small runs stay in one process.
WORKER_START_ROWS = 10_000
# Until this process imports GX, a delivery of up to this many chunks per worker goes whole
# to the workers (:meth:`SuiteValidator._to_workers`): a worker validating two chunks one
# after the other costs less than importing GX here too.
WORKER_ONLY_CHUNKS = 2


class SuiteValidator:
    """Ingestion validator: ``validator(con, contract, typed_table, batch)`` -> failing rows.

    Pass an instance in ``Ingestor(..., validators=[SuiteValidator(seeds_dir, run_id)])``.
    With ``workers``, ingestion starts each delivery with :meth:`submit`: a delivery of one
    chunk goes to a worker process while the ingestion types the next delivery; a delivery
    of several chunks is validated by this process and the workers at once (GX's pandas
    engine uses one core), unless this process has not imported GX and the delivery has at
    most ``WORKER_ONLY_CHUNKS`` chunks per worker (:meth:`_to_workers`). The workers start at
    the first delivery of ``WORKER_START_ROWS`` rows or more (or :meth:`start`) and stop at
    :meth:`close`. Results are merged in chunk order, so they do not depend on which
    process validated which chunk.
    """

    def __init__(self, seeds_dir: Path, run_id: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 workers: int = 0):
        self.seeds_dir = Path(seeds_dir)
        self.run_id = run_id
        self.chunk_rows = max(int(chunk_rows), 1)
        self.workers = max(int(workers), 0)
        self.seconds = 0.0
        self.batches = 0
        self.worker_chunks = 0  # chunks a worker process validated (and returned)
        self._pool = None
        self._warm: list = []
        # The ingestion submits a delivery from its preparing thread while it collects the
        # one before in its main thread: the workers are started, used and stopped under it.
        self._lock = threading.RLock()

    def start(self, wait: bool = False) -> None:
        """Start the worker processes (if ``workers``) and their import of GX, in the background.

        Once this process has GX, chunks go to the workers only once as many warm-ups as
        workers have run (with one worker: once it has imported GX); until then this process
        validates the chunks itself rather than wait (importing GX takes seconds). Before
        that, :meth:`_to_workers` may queue a delivery behind the warm-ups. ``wait`` blocks
        until the warm-ups have run. A warm-up still running when the pass ends finishes in
        the background.
        """
        with self._lock:
            if self.workers and self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                # spawn: a fork would copy DuckDB's threads and locks mid-transaction
                self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"))
                self._warm = [self._pool.submit(_warm_up) for _ in range(self.workers)]
        if wait:
            self._warmed()

    def _warmed(self) -> bool:
        """Wait for the workers' import of GX: whether they have it (if one failed, or a
        worker died, the workers are stopped and this process validates alone)."""
        with self._lock:
            warm = list(self._warm)
        for future in warm:
            self._collect(future)
        with self._lock:
            return self._pool is not None

    def _ready(self) -> bool:
        """Whether the workers finished importing GX (a worker that died stops the workers)."""
        with self._lock:
            if self._pool is None or not all(f.done() for f in self._warm):
                return False
            for future in self._warm:
                self._collect(future)
            return self._pool is not None

    def close(self) -> None:
        """Stop the worker processes (the ingestion calls it when its pass ends)."""
        with self._lock:
            if self._pool is not None:
                # no wait: an idle worker's exit (unloading GX: ~0.8 s) overlaps what the run does next
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                self._warm = []

    def __call__(self, con, contract: Contract, typed_table: str, batch: str | None):
        return self._validate(con, contract, batch, self._plan(con, contract, typed_table))

    def _plan(self, con, contract: Contract, typed_table: str) -> _Plan:
        started = time.monotonic()
        specs = suite_specs(contract, self.seeds_dir)
        present = set(con.sql(f"select * from {typed_table}").columns)
        select = ", ".join(_frame_sql(contract, typed_table, present))
        total = con.execute(f"select count(*) from {typed_table}").fetchall()[0][0]
        chunks = max(1, math.ceil(total / self.chunk_rows))
        keys = [_key_column(contract.column(k)) for k in contract.primary_key]
        keys = [k for k in keys if k in present] or ["_source_row"]

        def chunk_sql(i: int) -> str:
            where = f" where hash({', '.join(keys)}) % {chunks} = {i}" if chunks > 1 else ""
            return f"select {select} from {typed_table}{where} order by _source_row"

        return _Plan(specs, total, chunks, chunk_sql, time.monotonic() - started)

    def _validate(self, con, contract: Contract, batch: str | None, plan: _Plan):
        """Validate the chunks of a delivery here and in the workers; its failing rows."""
        started = time.monotonic()
        specs, chunks, chunk_sql = plan.specs, plan.chunks, plan.chunk_sql

        def here(j: int):
            return lambda: validate_chunk(contract, specs, fetch_frame(con, chunk_sql(j)))

        results: dict[int, tuple] = {}
        pending: dict[int, Any] = {}
        for i in range(chunks):
            frame = fetch_frame(con, chunk_sql(i))
            if frame.empty and chunks > 1:
                continue
            if chunks > 1:
                self.start()
            submitted = None
            if chunks > 1 and len(pending) < self.workers and self._ready():
                submitted = self._submit(validate_chunk, contract, specs, frame)
            if submitted is not None:
                pending[i] = submitted
            else:
                results[i] = validate_chunk(contract, specs, frame)
            del frame
            for j in [j for j, future in pending.items() if future.done()]:
                results[j] = self._collect(pending.pop(j), here(j))
        for j, future in pending.items():
            results[j] = self._collect(future, here(j))
        return self._finish(con, contract, batch, plan, [results[i] for i in sorted(results)],
                            plan.seconds + time.monotonic() - started)

    def submit(self, con, contract: Contract, typed_table: str, batch: str | None):
        """Start validating a delivery; the callable returned gives its failing rows.

        Ingestion calls it when a delivery is typed, and the callable when it commits the
        delivery, after typing the next one. A delivery that goes to the workers
        (:meth:`_to_workers`) is handed over now, chunk by chunk, and validated while this
        process types the next delivery; anything else is validated when the rows are asked
        for, as ``__call__``. The workers start at the first delivery of
        ``WORKER_START_ROWS`` rows or more: a run of small deliveries only would spend more
        importing GX in a worker than it saves.
        """
        plan = self._plan(con, contract, typed_table)
        if plan.total >= WORKER_START_ROWS:
            self.start()
        if not self._to_workers(plan):
            import_gx_in_background()  # validated here, at commit
            return lambda: self._validate(con, contract, batch, plan)
        started = time.monotonic()
        parts = []
        for i in range(plan.chunks):
            frame = fetch_frame(con, plan.chunk_sql(i))
            if frame.empty and plan.chunks > 1:
                continue
            future = self._submit(validate_chunk, contract, plan.specs, frame)
            if future is None:  # the workers are gone: validated at commit, as ``__call__``
                return lambda: self._validate(con, contract, batch, plan)
            parts.append((future, frame))
        fetched = plan.seconds + time.monotonic() - started

        def finish():
            waited = time.monotonic()
            if self._warmed():
                results = [self._collect(future, lambda frame=frame: validate_chunk(contract, plan.specs, frame))
                           for future, frame in parts]
            else:  # handed over while the workers imported GX, which failed: validated here
                results = [validate_chunk(contract, plan.specs, frame) for _, frame in parts]
            return self._finish(con, contract, batch, plan, results, fetched + time.monotonic() - waited)

        return finish

    def _to_workers(self, plan: _Plan) -> bool:
        """Whether a delivery goes whole to the workers when it is typed.

        Once this process has GX (imported, or being imported), it validates too: a
        delivery of one chunk goes to a worker that has imported GX, any other is validated
        at commit by this process and the ready workers together. Before that, a delivery of
        up to ``WORKER_ONLY_CHUNKS`` chunks per worker goes to the workers even while they
        import GX (queued behind the import): a monthly refresh then imports GX once, in the
        worker, instead of in both processes (about 2.7 s of CPU each, this process's import
        competing with the ingestion's threads for Python's lock). A larger delivery makes
        this process import GX and share the chunks, as the first registry of a full refresh
        does.
        """
        with self._lock:
            if self._pool is None:
                return False
        if _GX_SINGLETON is not None or _GX_IMPORT is not None:
            return plan.chunks == 1 and self._ready()
        return plan.chunks <= WORKER_ONLY_CHUNKS * self.workers

    def _finish(self, con, contract, batch, plan: _Plan, results: list[tuple], seconds: float):
        """Merge a delivery's chunk results (in chunk order) and record them; its failing rows.
        ``seconds``: the time this process spent on it (validating, fetching, waiting)."""
        outcomes: dict[str, Outcome] = {}
        violations = []
        for found, rows in results:
            _merge(outcomes, found)
            violations += rows
        self.seconds += seconds
        self.batches += 1
        self._record(con, contract, batch, plan.total, plan.chunks, plan.specs, outcomes, seconds)
        return violations

    def _submit(self, fn, *args):
        """``fn(*args)`` in a worker; None if the workers are gone (they are stopped then)."""
        from concurrent.futures.process import BrokenProcessPool

        with self._lock:
            if self._pool is None:  # stopped meanwhile (a worker died)
                return None
            try:
                return self._pool.submit(fn, *args)
            except BrokenProcessPool:  # a worker died while idle
                self._stop_workers()
                return None

    def _collect(self, future, here=None):
        """A worker's result. Should the worker have died, the workers stop and ``here()``
        gives the result instead (the chunk validated in this process). Without ``here`` (a
        worker's warm-up), any failure only stops the workers."""
        from concurrent.futures.process import BrokenProcessPool

        if future.cancelled():  # the workers were stopped (one died) before it ran
            self._stop_workers()
            return here() if here is not None else None
        try:
            result = future.result()
        except Exception:
            if here is not None and not isinstance(future.exception(), BrokenProcessPool):
                raise
            self._stop_workers()
            return here() if here is not None else None
        if here is not None:
            self.worker_chunks += 1
        return result

    def _stop_workers(self) -> None:
        with self._lock:
            self.close()
            self.workers = 0

    def _record(self, con, contract, batch, rows, chunks, specs, outcomes, seconds) -> None:
        con.execute("create schema if not exists quality")
        con.execute(RESULTS_DDL)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        records = []
        for spec in specs:
            out = outcomes.get(spec.rule) or Outcome(spec)
            records.append([self.run_id, contract.source, batch, suite_name(contract), contract.version, now, rows,
                            chunks, spec.type, None if spec.column == "table" else spec.column, spec.rule, out.success,
                            out.raised, out.exception, out.element_count, out.unexpected_count,
                            json.dumps(out.examples[:5]) if out.examples and not spec.pii else None, seconds])
        if records:  # one statement for the suite (an insert per expectation costs ~0.7 ms each, in the commit path)
            row = "(" + ", ".join("?" * len(records[0])) + ")"
            con.execute(f"insert into quality.gx_results values {', '.join([row] * len(records))}",
                        [value for record in records for value in record])


def suite_validator(settings, run_id: str | None = None, cfg=None) -> SuiteValidator:
    """The validator configured for a project (chunk size from config/quality.yml)."""
    if cfg is None:
        from quality.config import config_for

        cfg = config_for(settings)
    return SuiteValidator(settings.seeds_dir, run_id=run_id, chunk_rows=cfg.chunk_rows, workers=cfg.gx_workers)


def export_suites(contracts: dict[str, Contract], seeds_dir: Path, out_dir: Path) -> list[Path]:
    """Write each generated suite as GX JSON (``<out_dir>/<source>.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for contract in contracts.values():
        suite = build_suite(contract, seeds_dir)
        path = out_dir / f"{contract.source}.json"
        path.write_text(json.dumps(suite.to_json_dict(), indent=2, default=str), encoding="utf-8")
        paths.append(path)
    return paths
