import hashlib
import hmac
import random

import duckdb
import pytest

from ingestion import pseudonymise
from jisr.settings import MissingKeyError, Settings


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


def test_key_file_is_read_and_checked(tmp_path):
    f = tmp_path / "k"
    f.write_text("short")
    with pytest.raises(MissingKeyError, match="shorter than 16 bytes"):
        Settings(home=tmp_path, key_file=f).pseudonym_key()
    f.write_text("0123456789abcdef0123\n")
    assert Settings(home=tmp_path, key_file=f).pseudonym_key() == b"0123456789abcdef0123"
