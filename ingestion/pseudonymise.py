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
40 million people share a pseudonym is about 1e-4; ingestion checks every batch for such a
collision and stops if one occurs. Each identifier kind is hashed in its own domain
(``cin:``, ``phone:`` ...), so equal strings of different kinds get unrelated pseudonyms.
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


def install(con, key: bytes) -> None:
    """Create the temporary macros ``jisr_hmac_hex(m)`` and ``jisr_pseudonym(kind, x)``.

    The padded keys are bound into a temporary table (a parameter, not SQL text) that only
    this connection sees.
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


def pseudonym_sql(kind: str, expr: str) -> str:
    """SQL computing the BIGINT pseudonym of a clear-text expression (NULL stays NULL)."""
    norm = NORMALISE_SQL[kind].format(x=expr)
    return f"case when nullif({norm}, '') is null then null else jisr_pseudonym_of(jisr_hmac_hex('{kind}:' || {norm})) end"


def pseudonymise_value(key: bytes, kind: str, value: str | None, con=None) -> int | None:
    """Pseudonym of one clear value (for look-ups by an authorised person)."""
    import duckdb

    own = con is None
    con = con or duckdb.connect()
    try:
        install(con, key)
        row = con.execute(f"select {pseudonym_sql(kind, '$v')}", {"v": value}).fetchone()
        return row[0]
    finally:
        if own:
            con.close()
