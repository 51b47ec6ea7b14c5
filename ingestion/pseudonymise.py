"""Keyed pseudonyms for direct identifiers: HMAC-SHA256 computed inside DuckDB.

DuckDB has no HMAC function and its crypto extension cannot be downloaded here, so the
HMAC is written out from its definition (RFC 2104):

    HMAC(K, m) = SHA256((K0 xor opad) || SHA256((K0 xor ipad) || m))

with the two padded keys passed as query parameters (never written into SQL text or
logs). ``hmac_sha256_hex`` is the standard library's value; the tests check the SQL form
against it byte for byte.

The pseudonym kept in the warehouse is the first 63 bits of the HMAC as a signed BIGINT:
an integer joins faster than a 64-character hex string and is portable to PostgreSQL,
Spark and Parquet (a 128-bit integer is not). With 63 bits, the chance that any two of
40 million people share a pseudonym is about 1e-4; ingestion checks for such a collision
and stops where one occurs, before anything of that file is written (below). Each
identifier kind is hashed in its own domain (``cin:``, ``phone:`` ...), so equal strings
of different kinds get unrelated pseudonyms.

Ingestion computes each value's pseudonym once per run (:func:`pseudonym_map`): it keeps,
for each kind, the pseudonyms of the values seen so far in an in-memory table (the memo),
and a file's rows take theirs by a join on the file's distinct values. A
monthly payments file repeats the identity numbers of the months before, and a registry's
first names repeat a million times: for a 352,599-row payments file, hashing every row
takes 0.24 s, the memo 0.10 s. The memo holds clear values as the staged files do, in the
process's memory only, never in the store. It is also where collisions are
caught: a new value whose pseudonym is that of a different normalised value, in the same
file or in any file of the run before it.
"""

from __future__ import annotations

import hashlib
import hmac

BLOCK = 64  # SHA-256 block size in bytes

# SQL that normalises a clear value of each kind before hashing, so that formatting
# differences between partners ("ab 123456", "AB123456") give the same pseudonym.
NORMALISE_SQL = {
    "cin": "upper(regexp_replace({x}, '[^A-Za-z0-9]', '', 'g'))",
    "household": "upper(trim({x}))",
    "name": "lower(strip_accents(trim(regexp_replace({x}, '\\s+', ' ', 'g'))))",
    "phone": "regexp_replace(regexp_replace(regexp_replace({x}, '[^0-9+]', '', 'g'), '^\\+?212', '0'), '^00212', '0')",
}


def padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """(K0 xor ipad, K0 xor opad) as in RFC 2104."""
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    k0 = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in k0), bytes(b ^ 0x5C for b in k0)


def hmac_sha256_hex(key: bytes, message: str) -> str:
    """Reference value from the standard library."""
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def pseudonym_from_hex(digest_hex: str) -> int:
    """The BIGINT pseudonym of a hex HMAC digest (its first 63 bits)."""
    return int(digest_hex[:16], 16) >> 1


def key_fingerprint(key: bytes) -> str:
    """A non-secret fingerprint of the key, recorded to detect a key change."""
    return hmac_sha256_hex(key, "jisr key fingerprint")[:16]


def install(con, key: bytes, memos: bool = True) -> None:
    """Create the temporary macros ``jisr_hmac_hex(m)`` and ``jisr_pseudonym(kind, x)``, and
    (``memos``) empty memos of pseudonyms for the key (:func:`memo_table`).

    The padded keys are bound into a temporary table (a parameter, not SQL text) that only
    this connection sees. The memos are shared by every connection of the DuckDB instance:
    install them once, then the macros alone (``memos=False``) on the other connections.
    """
    ipad, opad = padded_keys(key)
    con.execute("create or replace temp table jisr_hmac_key (ipad blob, opad blob)")
    con.execute("insert into jisr_hmac_key values (?, ?)", [ipad, opad])
    con.execute(
        "create or replace temp macro jisr_hmac_hex(m) as "
        "sha256((select opad from jisr_hmac_key) || unhex(sha256((select ipad from jisr_hmac_key) || encode(m))))"
    )
    con.execute(
        "create or replace temp macro jisr_pseudonym_of(h) as "
        "((('0x' || substr(h, 1, 16))::ubigint) >> 1)::bigint"
    )
    if memos:
        con.execute(f"attach if not exists ':memory:' as {MEMO_DATABASE}")
        for kind in NORMALISE_SQL:  # a new key starts with empty memos
            con.execute(f"create or replace table {memo_table(kind)} (clear varchar, key bigint)")


def pseudonym_sql(kind: str, expr: str) -> str:
    """SQL computing the BIGINT pseudonym of a clear-text expression (NULL stays NULL)."""
    return _pseudonym_of_normalised(kind, NORMALISE_SQL[kind].format(x=expr))


def _pseudonym_of_normalised(kind: str, norm: str) -> str:
    return f"case when nullif({norm}, '') is null then null else jisr_pseudonym_of(jisr_hmac_hex('{kind}:' || {norm})) end"


class PseudonymCollision(RuntimeError):
    """Two different normalised values of one kind have the same pseudonym."""


# The memos live in an in-memory database attached to the DuckDB instance (never in the
# store): unlike temporary tables, every connection of the instance sees them, and the
# ingestion prepares a file on one connection while it commits the one before on another.
# So does any other connection to the same store file in this process while the ingestion
# runs (DuckDB shares one instance per file): nothing else connects to the store during
# the ingestion step, and the memos are discarded (detached) when the pass ends.
MEMO_DATABASE = "jisr_memo"


def memo_table(kind: str) -> str:
    """The in-memory table holding the pseudonyms of the ``kind`` values seen in the run."""
    return f"{MEMO_DATABASE}.jisr_pseudonyms_{kind}"


def pseudonym_map(con, kind: str, table: str, column: str, into: str) -> int:
    """Create the temporary table ``into`` (clear varchar, key bigint): the pseudonym of each
    distinct value of ``table.column`` (NULL for an empty one), taken from the run's memo
    of ``kind`` values (:func:`memo_table`) or computed and added to it. Return how many
    values were new to the memo (the HMACs computed).

    Raises :class:`PseudonymCollision`, the memo left as it was, when a new value's
    pseudonym is that of a different normalised value, new or already in the memo.
    """
    memo, seen, new = memo_table(kind), f"jisr_seen_{kind}", f"jisr_new_{kind}"
    norm = NORMALISE_SQL[kind]
    failed = True
    try:
        # The file's distinct values first: the memo (the run's values so far) is only
        # scanned, the hash tables are of the file's size.
        con.execute(f"create or replace temp table {seen} as select distinct {column}::varchar as clear "
                    f"from {table} where {column} is not null")
        con.execute(f"create or replace temp table {into} as select clear, key from {memo} "
                    f"where clear in (select clear from {seen})")
        con.execute(
            f"create or replace temp table {new} as select clear, norm, {_pseudonym_of_normalised(kind, 'norm')} "
            f"as key from (select clear, {norm.format(x='clear')} as norm from {seen} s "
            f"where not exists (select 1 from {into} k where k.clear = s.clear))"
        )
        added, norms, keys, clashes = con.execute(
            f"select (select count(*) from {new}), (select count(distinct norm) from {new} where key is not null), "
            f"(select count(distinct key) from {new}), "
            f"(select count(*) from (select distinct norm, key from {new} where key is not null) n "
            f"join {memo} m on m.key = n.key where n.norm <> {norm.format(x='m.clear')})"
        ).fetchone()
        if norms != keys or clashes:
            raise PseudonymCollision(
                f"{kind} values: {'two new values' if norms != keys else 'a new value and one seen before in this run'} "
                "have the same pseudonym")
        if added:
            con.execute(f"insert into {memo} select clear, key from {new}")
            con.execute(f"insert into {into} select clear, key from {new}")
        failed = False
        return added
    finally:
        for table in (seen, new) + ((into,) if failed else ()):
            try:
                con.execute(f"drop table if exists {table}")
            except Exception:
                if not failed:
                    raise  # otherwise the error that is leaving matters more


def forget(con) -> None:
    """Drop the memos (the clear values seen), before the connection ends: detaching their
    in-memory database discards it."""
    con.execute(f"detach database if exists {MEMO_DATABASE}")


def pseudonymise_value(key: bytes, kind: str, value: str | None, con=None) -> int | None:
    """Pseudonym of one clear value (for look-ups by an authorised person)."""
    import duckdb

    own = con is None
    con = con or duckdb.connect()
    try:
        install(con, key, memos=False)  # the macros only: a look-up needs no memo
        row = con.execute(f"select {pseudonym_sql(kind, '$v')}", {"v": value}).fetchone()
        return row[0]
    finally:
        if own:
            con.close()
