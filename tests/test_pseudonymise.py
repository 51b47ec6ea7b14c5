import hashlib
import hmac
import random

import duckdb
import pytest

from ingestion import pseudonymise
from jisr.settings import MissingKeyError, Settings, get_settings


@pytest.mark.parametrize("key_len", [1, 16, 63, 64, 65, 200])
def test_hmac_sql_is_byte_identical_to_stdlib(key_len):
    rng = random.Random(key_len)
    key = bytes(rng.randrange(256) for _ in range(key_len))
    messages = ["", "cin:AB123456", "name:hélène aït", "name:محمد", "x" * 300]
    con = duckdb.connect()
    pseudonymise.install(con, key)
    for m in messages:
        got = con.execute("select jisr_hmac_hex(?)", [m]).fetchone()[0]
        assert got == hmac.new(key, m.encode(), hashlib.sha256).hexdigest()


def test_pseudonym_is_first_63_bits_of_the_hmac():
    key = b"k" * 32
    expected = int(hmac.new(key, b"cin:AB123456", hashlib.sha256).hexdigest()[:16], 16) >> 1
    assert pseudonymise.pseudonymise_value(key, "cin", "AB123456") == expected
    assert 0 <= expected < 2**63


def test_pseudonym_normalises_formatting_differences():
    key = b"k" * 32
    p = lambda kind, v: pseudonymise.pseudonymise_value(key, kind, v)  # noqa: E731
    assert p("cin", "ab 123456") == p("cin", "AB123456")
    assert p("phone", "+212 6 12 34 56 78") == p("phone", "0612345678") == p("phone", "00212612345678")
    assert p("name", "  Hélène   AÏT ") == p("name", "helene ait")
    assert p("cin", "AB123456") != p("household", "AB123456")  # kinds are separate domains
    assert p("cin", None) is None and p("cin", "  ") is None


def test_pseudonym_depends_on_the_key():
    assert pseudonymise.pseudonymise_value(b"a" * 32, "cin", "AB1") != pseudonymise.pseudonymise_value(b"b" * 32, "cin", "AB1")


def test_missing_key_refuses_with_a_clear_message(tmp_path):
    with pytest.raises(MissingKeyError, match="JISR_PSEUDONYM_KEY_FILE"):
        Settings(home=tmp_path).pseudonym_key()


def test_demo_run_creates_a_local_key_once(tmp_path):
    s = Settings(home=tmp_path, demo=True)
    key = s.pseudonym_key()
    assert len(key) >= 32 and s.pseudonym_key() == key
    assert (tmp_path / "secrets" / "demo-pseudonym.key").stat().st_mode & 0o077 == 0
    # a later run without JISR_DEMO refuses, and says how to keep using that demo key
    with pytest.raises(MissingKeyError, match="keep using the one `make run` created"):
        Settings(home=tmp_path).pseudonym_key()


def test_key_file_is_read_and_checked(tmp_path):
    f = tmp_path / "k"
    f.write_text("short")
    with pytest.raises(MissingKeyError, match="shorter than 16 bytes"):
        Settings(home=tmp_path, key_file=f).pseudonym_key()
    f.write_text("0123456789abcdef0123\n")
    assert Settings(home=tmp_path, key_file=f).pseudonym_key() == b"0123456789abcdef0123"


@pytest.mark.parametrize("value", ["", "\n", "  \t "])
def test_a_blank_key_variable_is_no_key(tmp_path, value):
    """A secret manager that injects an empty value must not pseudonymise with an empty HMAC key."""
    with pytest.raises(MissingKeyError, match=r"No pseudonymisation key is configured"):
        get_settings({"JISR_HOME": str(tmp_path), "JISR_PSEUDONYM_KEY": value}).pseudonym_key()
    with pytest.raises(MissingKeyError, match=r"JISR_PSEUDONYM_KEY is set but blank"):
        Settings(home=tmp_path, key_value=value).pseudonym_key()
    # a blank variable does not hide a key file
    f = tmp_path / "k"
    f.write_text("0123456789abcdef0123\n")
    assert Settings(home=tmp_path, key_value=value, key_file=f).pseudonym_key() == b"0123456789abcdef0123"


def test_a_short_key_variable_is_refused_as_a_short_key_file_is(tmp_path):
    for value in ("abc", " 0123456789abcde \n"):  # 3 bytes; 15 bytes once stripped
        with pytest.raises(MissingKeyError, match="JISR_PSEUDONYM_KEY is shorter than 16 bytes"):
            Settings(home=tmp_path, key_value=value).pseudonym_key()
    assert Settings(home=tmp_path, key_value=" 0123456789abcdef\n").pseudonym_key() == b"0123456789abcdef"


def _values_table(con, name, values):
    con.execute(f"create or replace temp table {name} (v varchar)")
    con.executemany(f"insert into {name} values (?)", [[v] for v in values])


def test_pseudonym_map_gives_the_sql_pseudonyms_and_hashes_each_value_once_per_run():
    key = b"k" * 32
    con = duckdb.connect()
    pseudonymise.install(con, key)
    _values_table(con, "f1", ["AB123456", "ab 123456", None, "  ", "AB123456", "C12345"])
    assert pseudonymise.pseudonym_map(con, "cin", "f1", "v", "m1") == 4  # distinct, not NULL
    got = dict(con.execute("select clear, key from m1").fetchall())
    assert got == {v: pseudonymise.pseudonymise_value(key, "cin", v) for v in ["AB123456", "ab 123456", "  ", "C12345"]}
    assert got["  "] is None and got["AB123456"] == got["ab 123456"]

    _values_table(con, "f2", ["C12345", "ZZ99999", "AB123456"])
    assert pseudonymise.pseudonym_map(con, "cin", "f2", "v", "m2") == 1  # only ZZ99999 is new to the run
    assert dict(con.execute("select clear, key from m2").fetchall()) == {
        v: pseudonymise.pseudonymise_value(key, "cin", v) for v in ["C12345", "ZZ99999", "AB123456"]}
    assert pseudonymise.pseudonym_map(con, "phone", "f2", "v", "m3") == 3  # kinds have their own memo

    pseudonymise.install(con, b"other key" * 4)  # a new key starts from an empty memo
    assert pseudonymise.pseudonym_map(con, "cin", "f2", "v", "m4") == 3
    assert dict(con.execute("select clear, key from m4").fetchall())["ZZ99999"] == pseudonymise.pseudonymise_value(
        b"other key" * 4, "cin", "ZZ99999")


def test_pseudonym_map_stops_on_a_collision_in_a_file_or_with_a_value_seen_before():
    con = duckdb.connect()
    pseudonymise.install(con, b"k" * 32)
    con.execute("create or replace temp macro jisr_pseudonym_of(h) as 7::bigint")  # every value collides
    _values_table(con, "two", ["A12345", "B12345"])
    with pytest.raises(pseudonymise.PseudonymCollision, match="two new values"):
        pseudonymise.pseudonym_map(con, "cin", "two", "v", "m")
    memo = pseudonymise.memo_table("cin")
    assert con.execute(f"select count(*) from {memo}").fetchone()[0] == 0  # nothing remembered
    assert not con.execute("select count(*) from duckdb_tables() where table_name = 'm'").fetchone()[0]

    _values_table(con, "first", ["A12345"])
    assert pseudonymise.pseudonym_map(con, "cin", "first", "v", "m") == 1
    _values_table(con, "same", ["a 12345"])  # another spelling of the same number: not a collision
    assert pseudonymise.pseudonym_map(con, "cin", "same", "v", "m") == 1
    _values_table(con, "later", ["B12345"])
    with pytest.raises(pseudonymise.PseudonymCollision, match="one seen before in this run"):
        pseudonymise.pseudonym_map(con, "cin", "later", "v", "m")
    assert con.execute(f"select count(*) from {memo}").fetchone()[0] == 2
