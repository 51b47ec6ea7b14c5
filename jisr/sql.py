"""``jisr sql``: read-only SQL on the published serving warehouse.

Evaluators query the serving file (``settings.serving_path``), never the build warehouse or
the raw store. Three independent guards keep a query from writing or escaping:

1. the file is opened ``read_only=True`` (DuckDB refuses every write to it);
2. the connection is opened with ``enable_external_access=false`` (no file, extension or
   ATTACH access: ``read_csv``, ``COPY ... TO``, ``ATTACH`` of another file all fail),
   extension auto-install/auto-load switched off and no temporary directory (a query
   larger than memory writes no spill files beside the serving file), then
   ``lock_configuration=true`` so no statement can switch them back on;
3. every statement is parsed by DuckDB itself before anything runs: only queries
   (``SELECT``, ``WITH``, ``FROM``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, and
   ``EXPLAIN`` of those) are accepted, and their parse tree must not call a file or
   dynamic-SQL function (``read_csv``, ``read_parquet``, ``glob``, ``query``, ...) nor name a
   file as a table.

Finally the serving file holds only what is published (schemas ``marts``, ``impact`` and
``meta.publish_log``): raw rows, staging, quarantine and key material are never in it, so
there is nothing else to read even if every guard failed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

import duckdb

# Statement types a consumer may run. SELECT covers WITH/FROM/VALUES/DESCRIBE/SHOW/SUMMARIZE.
ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}

# Table and scalar functions that read files, list files or run SQL text that the check
# below could not see. Matched on the function name from DuckDB's parse tree.
FORBIDDEN_FUNCTIONS = frozenset({
    "read_csv", "read_csv_auto", "sniff_csv", "read_parquet", "parquet_scan", "read_json",
    "read_json_auto", "read_json_objects", "read_json_objects_auto", "read_ndjson",
    "read_ndjson_auto", "read_ndjson_objects", "read_text", "read_blob", "read_xlsx", "glob",
    "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
    "parquet_bloom_probe", "query", "query_table", "getenv", "duckdb_extensions",
    "duckdb_secrets", "which_secret", "load_extension", "install_extension",
})
FORBIDDEN_PREFIXES = ("read_", "parquet_", "sqlite_", "postgres_", "mysql_", "iceberg_", "delta_", "json_execute")
FORBIDDEN_SUFFIXES = ("_scan",)

INTERNAL_SCHEMAS = ("raw", "staging", "intermediate", "detail", "quarantine", "seeds", "ingest", "build", "main")
PUBLISHED_HINT = (
    "The serving warehouse holds only what is published: schemas `marts` and `impact`, and "
    "the table `meta.publish_log`. Raw deliveries, staging, person-level tables (schema detail), "
    "quarantine and key material are internal and never published. List what exists with: jisr sql \"show all tables\"")

FORMATS = ("table", "csv", "markdown", "parquet")


class SqlError(Exception):
    """A query that cannot run: bad SQL, a refused statement or no published warehouse."""

    exit_code = 2


class RefusedStatement(SqlError):
    """A statement that could write or reach outside the published warehouse."""


class NoWarehouse(SqlError):
    exit_code = 1


# --- the statement check ---------------------------------------------------------------
def _statement_type(statement) -> str:
    try:
        return statement.type.name
    except ValueError:  # a statement type this duckdb build has no Python name for
        return "UNKNOWN"


def _walk(node) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _forbidden_function(name: str) -> bool:
    name = name.lower()
    return (name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES)
            or name.endswith(FORBIDDEN_SUFFIXES))


_LOOKS_LIKE_FILE = re.compile(r"[/\\]|\.(csv|tsv|txt|parquet|json|jsonl|ndjson|duckdb|db|sqlite|xlsx|gz|zst)$", re.I)


def _check_tree(text: str, parser) -> None:
    """Refuse file access and dynamic SQL in a query's parse tree (DuckDB's own parser)."""
    raw = parser.execute("select json_serialize_sql(?)", [text]).fetchone()[0]
    tree = json.loads(raw)
    if tree.get("error"):
        # A query DuckDB cannot serialise (PIVOT, ...): fall back to a token scan.
        for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?=\s*\()", text):
            if _forbidden_function(token):
                raise RefusedStatement(f"refused: `{token}(...)` reads files or runs SQL text; "
                                       "only the published tables can be queried")
        for literal in re.findall(r"'((?:[^']|'')*)'", text):
            if _LOOKS_LIKE_FILE.search(literal) and re.search(r"\bfrom\s+'" + re.escape(literal), text, re.I):
                raise RefusedStatement(f"refused: reading the file '{literal}'; only the published tables can be queried")
        return
    for node in _walk(tree.get("statements", [])):
        name = node.get("function_name")
        if isinstance(name, str) and _forbidden_function(name):
            raise RefusedStatement(f"refused: `{name}(...)` reads files or runs SQL text; "
                                   "only the published tables can be queried")
        if node.get("type") == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if _LOOKS_LIKE_FILE.search(table):
                raise RefusedStatement(f"refused: reading the file '{table}'; only the published tables can be queried")


def split_statements(sql: str) -> list[str]:
    """The statements of a script, as DuckDB parses them (a ParserException for bad SQL)."""
    try:
        return [s.query.strip().rstrip(";").strip() for s in duckdb.extract_statements(sql) if s.query.strip(" ;\n\t")]
    except duckdb.Error as exc:
        raise SqlError(_message(exc)) from exc


def check_sql(sql: str) -> list[str]:
    """Parse a script with DuckDB and return its statements, or raise RefusedStatement.

    Nothing runs here: a script with one refused statement runs no statement at all.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(_message(exc)) from exc
    parser = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        texts = []
        for statement in statements:
            text = statement.query.strip().rstrip(";").strip()
            if not text:
                continue
            kind = _statement_type(statement)
            inner = text
            if kind == "EXPLAIN":
                inner = re.sub(r"^\s*explain\s+(analy[sz]e\s+)?", "", text, flags=re.I)
                inner_statements = duckdb.extract_statements(inner)
                kinds = {_statement_type(s) for s in inner_statements}
                if kinds != {"SELECT"}:
                    raise RefusedStatement(f"refused: EXPLAIN of a {'/'.join(sorted(kinds))} statement")
            elif kind == "MULTI" and re.search(r"\bpivot\b", text, re.I):
                raise RefusedStatement(
                    f"refused: a PIVOT without the list of its columns ({_abbrev(text)}): DuckDB runs it as "
                    "several statements, the first of which creates a type listing the values (a write). Name "
                    "them: PIVOT ... ON <column> IN ('a', 'b', ...) USING ...")
            elif kind == "LOAD":
                raise RefusedStatement(f"refused: installing or loading a DuckDB extension ({_abbrev(text)}): "
                                       "`jisr sql` queries the published tables with DuckDB's built-in functions")
            elif kind not in ALLOWED_STATEMENTS:
                if kind == "PRAGMA" and re.match(r"import\b", text, re.I):
                    kind = "IMPORT DATABASE"  # which DuckDB parses as a PRAGMA
                raise RefusedStatement(
                    f"refused: {kind} statement ({_abbrev(text)}). The serving warehouse is read-only: "
                    "only queries (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) can run.")
            _check_tree(inner, parser)
            texts.append(text)
        return texts
    finally:
        parser.close()


def _abbrev(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _message(exc: Exception) -> str:
    message = str(exc).strip()
    if isinstance(exc, duckdb.CatalogException) and any(
            re.search(rf'\b{schema}\b', message) for schema in INTERNAL_SCHEMAS):
        message += "\n" + PUBLISHED_HINT
    return message


# --- dbt analyses ----------------------------------------------------------------------
class _Relation(str):
    """A published relation name; ``.include(...)`` (dbt's relation API) keeps it as is."""

    def include(self, *args, **kwargs) -> "_Relation":
        return self


def render_analysis(text: str) -> str:
    """SQL of a dbt analysis (``dbt_project/analyses/*.sql``) for the serving warehouse.

    ``ref('model')`` is the published table ``marts.<model>`` (the serving file holds the
    marts under that schema), ``source('schema', 'table')`` is ``schema.table`` and
    ``var('name', default)`` its default. Plain SQL is returned unchanged; any other Jinja
    fails to render (a sandboxed environment, nothing from the project is executed).
    """
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text
    from jinja2 import StrictUndefined
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    def ref(*names, **_):
        return _Relation(f"marts.{names[-1]}")

    def source(schema, table):
        return _Relation(f"{schema}.{table}")

    def var(name, default=None):
        if default is None:
            raise SqlError(f"the analysis needs the dbt var {name!r}, which has no default")
        return default

    try:
        return SandboxedEnvironment(undefined=StrictUndefined).from_string(text).render(ref=ref, source=source, var=var)
    except TemplateError as exc:
        raise SqlError(f"cannot render the dbt analysis: {exc}") from exc


# --- the connection --------------------------------------------------------------------
def connect_serving(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the serving warehouse read-only, with file and extension access off and locked."""
    path = Path(path)
    if not path.is_file():
        raise NoWarehouse(f"no published warehouse at {path}: run `jisr refresh` (or `make run`) first")
    try:
        con = duckdb.connect(str(path), read_only=True, config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            # no spill files: DuckDB's default temporary directory is `<serving file>.tmp`,
            # beside the published warehouse, bounded only by 90 % of the free disk (a query
            # larger than memory fails with DuckDB's out-of-memory message instead)
            "temp_directory": "",
        })
    except duckdb.Error as exc:
        raise NoWarehouse(f"cannot open the serving warehouse {path}: {exc}") from exc
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


# --- results ---------------------------------------------------------------------------
@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple] = field(default_factory=list)
    truncated: int = 0  # rows left out of a bounded fetch


def _text(value) -> str:
    return "NULL" if value is None else str(value)


_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U\w*INT|FLOAT|DOUBLE|DECIMAL.*|REAL)$")


def text_table(headers, rows, right=None, null: str = "") -> str:
    """An aligned plain-text table: a header line, a rule, one line per row. ``right``: which
    columns are right-aligned (default: those whose values are all numbers)."""
    rows = [list(r) for r in rows]
    if right is None:
        right = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
                 for i in range(len(headers))]
    cells = [[null if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_table(result: Result) -> str:
    out = [text_table(result.columns, result.rows, right=[bool(_NUMERIC.match(t)) for t in result.types],
                      null=_text(None))]
    count = len(result.rows) + result.truncated
    out.append(f"({count} row{'s' if count != 1 else ''}"
               + (f", first {len(result.rows)} shown; --max-rows 0 or --format csv for all" if result.truncated else "") + ")")
    return "\n".join(out)


def format_markdown(result: Result) -> str:
    def esc(value) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(esc(c) for c in result.columns) + " |",
           "|" + "|".join("---:" if _NUMERIC.match(t) else "---" for t in result.types) + "|"]
    out += ["| " + " | ".join(esc(v) for v in row) + " |" for row in result.rows]
    if result.truncated:
        out.append(f"\n({result.truncated} more rows not shown; --max-rows 0 or --format csv for all)")
    return "\n".join(out)


class Session:
    """A read-only session on the serving warehouse."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.con = connect_serving(self.path)

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _execute(self, text: str):
        try:
            return self.con.execute(text)
        except duckdb.Error as exc:
            raise SqlError(_message(exc)) from exc

    def query(self, text: str, max_rows: int | None = None) -> Result:
        """Run one checked statement; keep at most ``max_rows`` rows (None: all)."""
        cursor = self._execute(text)
        if cursor.description is None:
            return Result([], [])
        columns = [d[0] for d in cursor.description]
        types = [str(d[1]) for d in cursor.description]
        try:
            if max_rows is None:
                return Result(columns, types, cursor.fetchall())
            rows = cursor.fetchmany(max_rows)
            rest = 0
            while chunk := cursor.fetchmany(10_000):
                rest += len(chunk)
        except duckdb.Error as exc:
            raise SqlError(_message(exc)) from exc
        return Result(columns, types, rows, rest)

    def write_csv(self, text: str, out: TextIO) -> int:
        cursor = self._execute(text)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([d[0] for d in cursor.description or []])
        count = 0
        try:
            while chunk := cursor.fetchmany(10_000):
                writer.writerows(["" if v is None else v for v in row] for row in chunk)
                count += len(chunk)
        except duckdb.Error as exc:
            raise SqlError(_message(exc)) from exc
        return count

    def write_parquet(self, text: str, path: Path) -> int:
        import pyarrow.parquet as pq

        try:
            reader = self.con.sql(text).to_arrow_reader(100_000)
            count = 0
            with pq.ParquetWriter(str(path), reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    count += batch.num_rows
        except duckdb.Error as exc:
            raise SqlError(_message(exc)) from exc
        return count


def run_script(session: Session, sql: str, fmt: str = "table", output: Path | None = None,
               max_rows: int | None = 1000, out: TextIO | None = None) -> None:
    """Check, then run every statement of ``sql`` and write the results in ``fmt``."""
    out = out or sys.stdout
    statements = check_sql(sql)
    if not statements:
        raise SqlError("no SQL statement given")
    if output is not None and len(statements) != 1:  # in every format: one file, one result
        raise SqlError(f"--output writes the result of exactly one query, and the script has {len(statements)}: "
                       "run one query at a time, or leave out --output to print every result")
    if fmt == "parquet":
        if output is None:
            raise SqlError("--format parquet needs --output FILE")
        count = session.write_parquet(statements[0], output)
        print(f"wrote {count} rows to {output}", file=sys.stderr)
        return
    if fmt == "csv":
        if output is not None:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                count = session.write_csv(statements[0], fh)
            print(f"wrote {count} rows to {output}", file=sys.stderr)
            return
        for i, text in enumerate(statements):
            if i:
                out.write("\n")
            session.write_csv(text, out)
        return
    for i, text in enumerate(statements):
        result = session.query(text, max_rows=max_rows)
        rendered = format_markdown(result) if fmt == "markdown" else format_table(result)
        if output is not None:
            Path(output).write_text(rendered + "\n", encoding="utf-8")
        else:
            out.write(("\n" if i else "") + rendered + "\n")


# --- interactive -----------------------------------------------------------------------
HELP = """Read-only SQL on the published warehouse. End a statement with `;`.
  .tables          list the published tables
  .schema TABLE    columns of a table
  .format FORMAT   table | markdown | csv
  .quit            leave (Ctrl-D too)"""


def interactive(session: Session, fmt: str = "table", max_rows: int | None = 1000,
                stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    try:
        import readline  # noqa: F401  (line editing and history when available)
    except ImportError:
        pass
    out.write(f"jisr sql: {session.path} (read-only). `.help` for help.\n")
    buffer: list[str] = []
    while True:
        try:
            line = input("jisr> " if not buffer else "  ... ")
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            buffer = []
            out.write("\n")
            continue
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            command, _, arg = stripped.partition(" ")
            if command in (".quit", ".exit", ".q"):
                return 0
            if command == ".help":
                out.write(HELP + "\n")
            elif command == ".tables":
                buffer = ["select schema_name || '.' || table_name as published_table, estimated_size as rows "
                          "from duckdb_tables() where not temporary order by 1;"]
            elif command == ".schema" and arg:
                buffer = [f"describe {arg.strip().rstrip(';')};"]
            elif command == ".format" and arg.strip() in ("table", "markdown", "csv"):
                fmt = arg.strip()
                continue
            else:
                out.write(f"unknown command {stripped!r}; `.help` lists them\n")
                continue
            if not buffer:
                continue
        else:
            buffer.append(line)
        script = "\n".join(buffer)
        if not script.strip():
            buffer = []
            continue
        if not script.rstrip().endswith(";"):
            continue
        buffer = []
        try:
            run_script(session, script, fmt=fmt, max_rows=max_rows, out=out)
        except SqlError as exc:
            out.write(f"error: {exc}\n")


# --- command line ----------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("query", nargs="?", help="SQL to run (omit for an interactive session, or pipe a script on stdin)")
    parser.add_argument("-f", "--file", help="run the SQL script in FILE")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("-o", "--output", help="write the result of one query to FILE (needed for parquet); "
                                                 "refused for a script of several queries, in every format")
    parser.add_argument("--max-rows", type=int, default=1000,
                        help="rows shown in table/markdown output (default 1000; 0 for all)")


def _check_output(output: Path, settings) -> None:
    """Refuse an ``--output`` inside Jisr's own warehouses, stores or secrets: opening it for
    writing would truncate the published warehouse (or a store) for everyone."""
    target = output.expanduser().resolve()
    home = Path(settings.home)
    for folder in (home / "warehouse", home / "store", home / "secrets",
                   Path(settings.serving_path).parent, Path(settings.store_path).parent):
        folder = folder.expanduser().resolve()
        if target == folder or folder in target.parents:
            raise RefusedStatement(f"refused: --output {output} is inside Jisr's data ({folder}); "
                                   "write the result elsewhere")


def main(args, settings) -> int:
    """Entry point of ``jisr sql`` (argparse namespace from ``add_arguments``)."""
    max_rows = None if args.max_rows in (None, 0) else args.max_rows
    output = Path(args.output) if args.output else None
    try:
        if args.query and args.file:
            raise SqlError("give a query or --file, not both")
        if output is not None:
            _check_output(output, settings)
        if args.file:
            try:
                sql = render_analysis(Path(args.file).read_text(encoding="utf-8"))
            except OSError as exc:
                raise SqlError(f"cannot read {args.file}: {exc.strerror}") from exc
        elif args.query is not None:
            sql = args.query
        else:
            sql = None
        if sql is not None:
            check_sql(sql)  # refuse before opening anything
        with Session(settings.serving_path) as session:
            if sql is None:
                if sys.stdin.isatty():
                    return interactive(session, fmt=args.format if args.format != "parquet" else "table",
                                       max_rows=max_rows)
                sql = sys.stdin.read()
            run_script(session, sql, fmt=args.format, output=output, max_rows=max_rows)
        return 0
    except SqlError as exc:
        print(f"jisr sql: {exc}", file=sys.stderr)
        return exc.exit_code
