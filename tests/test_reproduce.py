"""``jisr reproduce``: each publication records its code version, its deliveries and the
fingerprints of its tables as built; a rebuild is refused with the reason when it cannot be
the same, and its figures are compared table by table. The rebuild itself, through the
Dagster job, is in tests/test_end_to_end.py."""

import dataclasses
import json
import math

import duckdb
import pytest

import jisr.publish as publish_mod
from jisr.cli import main
from jisr.publish import figures, publication_record, publish
from jisr.reproduce import ReproduceError, _find_files, compare, reproduce
from jisr.status import status_report
from quality.checks import ChecksFailed
from tests.test_publish import kill_publish_at, make_build, published  # noqa: F401 (a fixture: a first publication, run-1)


def _table(rows, *, columns="a integer, b double, run_id varchar"):
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute(f"create table marts.t ({columns})")
    con.executemany("insert into marts.t values (?, ?, ?)", rows)
    return con


def test_a_fingerprint_does_not_depend_on_row_order_or_run_but_on_every_value():
    rows = [(1, 0.1, "run-1"), (2, None, "run-1"), (2, None, "run-1"), (3, float("nan"), "run-1")]
    base = figures(_table(rows), ["marts"], ["run_id"])
    assert base["marts.t"]["rows"] == 4
    assert figures(_table(list(reversed(rows))), ["marts"], ["run_id"]) == base
    assert figures(_table([(a, b, "run-2") for a, b, _ in rows]), ["marts"], ["run_id"]) == base
    # the last bit of one double; one duplicate row fewer; the run column counted
    assert figures(_table([(1, math.nextafter(0.1, 1), "run-1"), *rows[1:]]), ["marts"], ["run_id"]) != base
    assert figures(_table(rows[:2] + rows[3:]), ["marts"], ["run_id"]) != base
    assert figures(_table(rows), ["marts"], []) != base
    # a column renamed or retyped, the same values
    assert figures(_table(rows, columns="a integer, c double, run_id varchar"), ["marts"], ["run_id"]) != base
    assert figures(_table(rows, columns="a bigint, b double, run_id varchar"), ["marts"], ["run_id"]) != base


def test_a_publication_records_its_code_version_deliveries_and_figures_outside_the_served_file(published):
    record = publication_record(published, "run-1")
    assert record["run_id"] == "run-1" and record["code_version"] == "v1"
    assert sorted(d["file_name"] for d in record["deliveries"]) == [
        "inscriptions_2025-01.csv", "paiements_2025-01.csv", "programmes_2025-01.csv", "registre_2025-01.csv"]
    assert set(record["figures"]) == {"impact.impact_estimates", "marts.dim_programmes", "marts.mart_payments"}
    build = duckdb.connect(str(published.build_path), read_only=True)
    assert record["figures"] == figures_of(build, ["marts", "impact"])
    build.close()
    # internal: beside the counts before suppression, not in the serving file nor its folder
    assert publish_mod.record_path(published, "run-1").parent == published.publication_counts_dir
    served = published.serving_path.read_bytes()
    assert not [t for t, f in record["figures"].items() if f["sha256"].encode() in served]
    assert not [p for p in published.serving_path.parent.rglob("*.json")]
    assert not list(published.publication_counts_dir.glob("*.figures.json"))


def figures_of(con, schemas):
    """The fingerprints of tables of an attached-as-main build (views are not published)."""
    return figures(con, schemas, ["run_id", "estimated_at"])


def test_a_refused_publication_leaves_no_record(published):
    make_build(published, payments_scale=2.0)  # marts no longer reconcile with the raw layer
    with pytest.raises(ChecksFailed):
        publish(published, "run-bad", "v2")
    assert publication_record(published, "run-bad") is None
    assert not list(published.publication_counts_dir.glob("*.figures.json"))
    publish_mod.stage_candidate(published, "run-staged")  # a candidate refused at its gate, never committed
    assert publish_mod._figures_path(published, "run-staged").exists()
    make_build(published)
    publish(published, "run-2", "v2")
    assert not publish_mod._figures_path(published, "run-staged").exists()
    assert publication_record(published, "run-2")["figures"]


def test_reproduce_refuses_another_code_version_naming_the_commit_to_check_out(published, monkeypatch):
    record = publication_record(published, "run-1")
    for version, expected in [("v0.3-12-g1a2b3c4d5e6f", "`git checkout 1a2b3c4d5e6f`"),
                              ("1a2b3c4d5e6f", "`git checkout 1a2b3c4d5e6f`"),
                              ("1a2b3c4d5e6f-dirty.0123456789ab", "changes that were not committed"),
                              ("jisr-0.1.0+src.0123456789ab", "a copy of the source without git (jisr 0.1.0, "
                                                              "source hash 0123456789ab)")]:
        record["code_version"] = version
        publish_mod.record_path(published, "run-1").write_text(json.dumps(record))
        with pytest.raises(ReproduceError) as info:
            reproduce(published)  # the run served now
        assert f"run run-1 was built by code version {version}" in str(info.value)
        assert expected in str(info.value)
    assert not (published.home / "reproduce").exists()


def test_reproduce_names_each_delivered_file_it_cannot_find(published, monkeypatch, tmp_path):
    published = dataclasses.replace(published, code_version_override="v1")
    delivered = published.landing_dir / "msisf" / "paiements_2025-01.csv"
    original = delivered.read_bytes()
    delivered.write_bytes(original.replace(b"2025-01", b"2025-02", 1))  # edited since: another SHA-256
    with pytest.raises(ReproduceError) as info:
        reproduce(published, "run-1")
    message = str(info.value)
    assert message.startswith("1 of the 4 delivered files of this publication was not found in ")
    assert "payments: paiements_2025-01.csv (SHA-256 " in message and "--files" in message
    # the original, kept elsewhere under another name, is found by its content
    archive = tmp_path / "archive" / "2025"
    archive.mkdir(parents=True)
    (archive / "payments-january.csv").write_bytes(original)
    record = publication_record(published, "run-1")
    found = _find_files(record["deliveries"], [published.landing_dir, tmp_path / "archive"])
    assert found[next(d["delivery_id"] for d in record["deliveries"] if d["source"] == "payments")] == \
        archive / "payments-january.csv"


def test_reproduce_says_which_runs_it_cannot_rebuild(published, capsys):
    assert main(["reproduce", "run-unknown"]) == 2
    assert "no publication of run run-unknown" in capsys.readouterr().err
    publish_mod.record_path(published, "run-1").unlink()  # a publication made before records
    assert main(["reproduce", "run-1"]) == 2
    assert "run run-1 was published before publications were recorded" in capsys.readouterr().err


def test_compare_names_tables_that_differ_are_missing_or_new():
    recorded = {"marts.a": {"rows": 2, "sha256": "x"}, "marts.b": {"rows": 2, "sha256": "y"},
                "marts.c": {"rows": 1, "sha256": "z"}, "marts.log": {"rows": 5, "sha256": "l"}}
    rebuilt = {"marts.a": {"rows": 2, "sha256": "x"}, "marts.b": {"rows": 2, "sha256": "Y"},
               "marts.d": {"rows": 1, "sha256": "w"}, "marts.log": {"rows": 4, "sha256": "m"}}
    outcomes = {t.table: t.outcome for t in compare(recorded, rebuilt, {"marts.log"})}
    assert outcomes == {"marts.a": "same", "marts.b": "different", "marts.c": "missing", "marts.d": "new",
                        "marts.log": "not compared"}


def test_an_unknown_reproduce_setting_is_refused_naming_the_known_ones():
    from quality.config import QualityConfigError, parse_config

    assert parse_config({}).not_reproduced == ("marts.fct_deliveries", "marts.mart_quality_scorecard")
    assert parse_config({"publish": {"reproduce": {"not_compared": []}}}).not_reproduced == ()
    with pytest.raises(QualityConfigError, match="publish.reproduce: unknown settings \\['not_compare'\\]"):
        parse_config({"publish": {"reproduce": {"not_compare": ["marts.x"]}}})


def test_a_record_copied_elsewhere_is_rebuilt_from_here(published, tmp_path, capsys):
    """`--record FILE`: the record of a publication made in another home (another machine):
    the same checks as for one of this home, on that record."""
    copied = tmp_path / "elsewhere.json"
    record = publication_record(published, "run-1")
    copied.write_text(json.dumps({**record, "run_id": "run-other"}))
    assert main(["reproduce", "--record", str(copied)]) == 2
    assert "the publication of run run-other was built by code version v1" in capsys.readouterr().err
    assert main(["reproduce", "run-1", "--record", str(copied)]) == 2
    assert f"{copied} records the publication of run run-other, not run-1" in capsys.readouterr().err
    copied.write_text(json.dumps({"run_id": "run-other"}))
    assert main(["reproduce", "--record", str(copied)]) == 2
    assert "is not a publication record (no code_version, deliveries, figures)" in capsys.readouterr().err


def test_status_says_whether_the_served_publication_can_be_reproduced(published):
    assert (f"`jisr reproduce` rebuilds it from its delivered files and compares its figures (record: "
            f"{publish_mod.record_path(published, 'run-1')})") in status_report(published)
    publish_mod.record_path(published, "run-1").unlink()
    assert "no record of its figures for `jisr reproduce`" in status_report(published)


def test_as_published_hides_the_served_files_cells_in_the_rebuild_and_finds_a_changed_figure(tmp_path):
    """The rebuilt tables, with the cells the publication's file hides hidden, are compared with
    that file: equal when they are its figures; a figure it published that the rebuild does
    not give, or other cells, are found."""
    from types import SimpleNamespace

    import yaml

    from jisr.reproduce import as_published
    from quality.config import parse_config
    from quality.disclosure import PatternMismatch
    from tests.test_disclosure import CONFIG, COUNTS, coverage_rows, hand_protected, make_warehouse

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "disclosure.yml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    settings = SimpleNamespace(config_dir=tmp_path / "config")
    cfg = parse_config({"publish": {"schemas": ["marts"]}})
    make_warehouse(tmp_path / "build.duckdb", coverage_rows(COUNTS)).close()  # the figures as built
    hidden = {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")}
    hand_protected(tmp_path / "served.duckdb", hidden).close()  # as published
    rebuilt, served = as_published(settings, tmp_path / "build.duckdb", tmp_path / "served.duckdb", tmp_path, cfg)
    assert rebuilt == served and set(served) == {"marts.mart_coverage", "marts.mart_other"}
    con = duckdb.connect(str(tmp_path / "served.duckdb"))  # a published amount the rebuild does not give
    con.execute("update marts.mart_coverage set transfers_mad = transfers_mad + 0.01 where region_code = '03' "
                "and sex = 'M'")
    con.close()
    rebuilt, served = as_published(settings, tmp_path / "build.duckdb", tmp_path / "served.duckdb", tmp_path, cfg)
    assert [t.table for t in compare(served, rebuilt, set()) if t.outcome != "same"] == ["marts.mart_coverage"]
    make_warehouse(tmp_path / "other.duckdb", coverage_rows({**COUNTS, ("03", "M"): 76})).close()
    with pytest.raises(PatternMismatch):  # a published count the rebuild does not give
        as_published(settings, tmp_path / "other.duckdb", tmp_path / "served.duckdb", tmp_path, cfg)


def test_a_run_id_that_is_not_a_plain_name_is_refused_before_anything_is_removed(published, tmp_path, monkeypatch):
    """The run id names the rebuild's home (``reproduce/<run id>``, emptied first): one from a
    copied record or the command line that climbs out of that folder is refused."""
    import jisr.reproduce as reproduce_mod

    published = dataclasses.replace(published, code_version_override="v1")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(reproduce_mod.subprocess, "run", no_rebuild)
    record = publication_record(published, "run-1")
    copied = tmp_path / "elsewhere.json"
    for run_id in ("../warehouse", "../../store", "a/b", "..", ".", "", 7):
        copied.write_text(json.dumps({**record, "run_id": run_id}))
        with pytest.raises(ReproduceError, match="is not a run id"):
            reproduce(published, record_file=copied)
    with pytest.raises(ReproduceError, match="is not a run id"):
        reproduce(published, "../warehouse")
    assert published.serving_path.exists() and published.store_path.exists()


def test_a_delivered_file_renamed_or_removed_since_is_found_by_its_content_under_any_name(published, tmp_path):
    """By content: also when no file of the delivery's name is left (renamed in the landing
    area, or kept in an archive under another name), or the file of its name now has another
    size (a corrected re-delivery with a value longer or shorter)."""
    record = publication_record(published, "run-1")
    payments = next(d["delivery_id"] for d in record["deliveries"] if d["source"] == "payments")
    delivered = published.landing_dir / "msisf" / "paiements_2025-01.csv"
    original = delivered.read_bytes()
    renamed = published.landing_dir / "msisf" / "paiements janvier.csv"
    delivered.rename(renamed)
    assert _find_files(record["deliveries"], [published.landing_dir])[payments] == renamed
    archive = tmp_path / "archive"
    archive.mkdir()
    renamed.rename(archive / "payments-january.csv")
    delivered.write_bytes(original + b"\n")  # re-delivered corrected, one byte longer
    assert _find_files(record["deliveries"], [published.landing_dir, archive])[payments] == \
        archive / "payments-january.csv"


def test_the_rebuild_reads_the_same_key_file_when_its_path_is_relative(tmp_path, monkeypatch):
    """The rebuild's refresh runs in the project folder: a key file named relative to the
    folder `jisr reproduce` runs in is given to it by its full path."""
    from jisr.reproduce import _environment
    from jisr.settings import get_settings
    from tests.conftest import TEST_KEY

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jisr.key").write_bytes(TEST_KEY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JISR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JISR_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("JISR_PSEUDONYM_KEY_FILE", "keys/jisr.key")
    env = _environment(get_settings(), tmp_path / "home" / "reproduce" / "run-1")
    assert env["JISR_PSEUDONYM_KEY_FILE"] == str(tmp_path / "keys" / "jisr.key")


def test_a_copied_record_with_deliveries_or_figures_of_another_shape_is_refused_with_exit_2(published, tmp_path,
                                                                                           capsys, monkeypatch):
    """Exit 1 says a table differs: a record damaged in its copy is not a publication record
    (exit 2), not a crash."""
    monkeypatch.setenv("JISR_CODE_VERSION", "v1")  # the code version of the record
    copied = tmp_path / "elsewhere.json"
    record = publication_record(published, "run-1")
    nameless = [{k: v for k, v in d.items() if k != "file_name"} for d in record["deliveries"]]
    for damaged in ({"deliveries": None}, {"deliveries": nameless}, {"deliveries": ["x"]}, {"figures": ["x"]},
                    {"figures": {"marts.t": "x"}}):
        copied.write_text(json.dumps({**record, **damaged}))
        assert main(["reproduce", "--record", str(copied)]) == 2
        assert f"{copied} is not a publication record" in capsys.readouterr().err


def test_the_deliveries_whose_rows_loaded_differ_in_the_rebuild_are_named():
    """A row held for another row (a payment id loaded from another month's file first) is
    loaded or held by the order the files arrived in: the rebuild, all files in one refresh,
    may load another row, and the delivered files concerned are named beside the tables."""
    from pathlib import Path

    from jisr.reproduce import ReproduceResult, loaded_differences

    recorded = [{"source": "payments", "file_name": "paiements_2025-01.csv", "content_hash": "a", "rows_loaded": 207},
                {"source": "payments", "file_name": "paiements_2025-02.csv", "content_hash": "b", "rows_loaded": 217},
                {"source": "enrolments", "file_name": "inscriptions_2025-01.csv", "content_hash": "c",
                 "rows_loaded": 5}]
    rebuilt = [{**recorded[0], "rows_loaded": 208}, {**recorded[1], "rows_loaded": 216}, recorded[2]]
    assert loaded_differences(recorded, rebuilt) == [("paiements_2025-01.csv", 207, 208),
                                                     ("paiements_2025-02.csv", 217, 216)]
    assert loaded_differences(recorded, recorded) == []
    result = ReproduceResult("run-1", "v1", "run-2", Path("home"), True, 1.0, 3,
                             loaded=loaded_differences(recorded, rebuilt))
    assert ("Rows loaded differ for 2 delivered files (at publication, rebuilt): paiements_2025-01.csv 207, 208; "
            "paiements_2025-02.csv 217, 216.") in result.describe()


def test_a_second_reproduction_of_the_same_run_refuses_while_one_runs(published):
    """Both would rebuild in reproduce/<run id>, each emptying it first."""
    import subprocess
    import sys

    from jisr.lock import LockBusy
    from jisr.settings import PROJECT_DIR

    lock = published.home / "reproduce" / "run-1.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from jisr.lock import file_lock\n"
         f"with file_lock(Path({str(lock)!r}), 'jisr reproduce of run run-1'):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        cwd=PROJECT_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match="another jisr reproduce of run run-1 is running"):
            reproduce(dataclasses.replace(published, code_version_override="v1"), "run-1")
    finally:
        holder.communicate("", timeout=60)
    assert not (published.home / "reproduce" / "run-1").exists()


def test_a_rebuild_says_what_else_than_the_deliveries_differs_from_the_publications_build(published):
    """The record names the engines' versions; a rebuild with others, or with a code version
    set by hand (which the check compares by name only), says so beside its comparison."""
    from jisr.reproduce import provenance_warnings
    from jisr.settings import engine_versions

    record = publication_record(published, "run-1")
    here = engine_versions()
    assert record["engines"] == here and {"python", "duckdb", "dbt-core", "statsmodels"} <= set(here)
    assert provenance_warnings(published, record, here) == []
    older = {**here, "duckdb": "1.4.0"}
    assert provenance_warnings(published, record, older) == [
        f"engines not of the publication's versions (`make setup` installs those of uv.lock): duckdb 1.4.0 here, "
        f"{here['duckdb']} then"]
    by_hand = dataclasses.replace(published, code_version_override="v1")
    assert provenance_warnings(by_hand, record, here) == [
        "the code version here is JISR_CODE_VERSION's (v1), not computed from the code: the check compared names only"]


def test_the_arrival_waves_are_the_runs_that_loaded_the_deliveries_in_their_order():
    from jisr.reproduce import arrival_waves

    d = [{"delivery_id": "b", "file_name": "b.csv", "run_id": "r2", "loaded_at": "2025-03-01 10:00:00"},
         {"delivery_id": "a", "file_name": "a.csv", "run_id": "r1", "loaded_at": "2025-02-01 10:00:00"},
         {"delivery_id": "c", "file_name": "c.csv", "run_id": "r1", "loaded_at": "2025-02-01 10:00:01"}]
    assert [[x["delivery_id"] for x in wave] for wave in arrival_waves(d)] == [["a", "c"], ["b"]]
    with pytest.raises(ReproduceError, match="does not say which run loaded a.csv"):
        arrival_waves([{"delivery_id": "a", "file_name": "a.csv"}])


@pytest.mark.slow
def test_a_publication_whose_rows_depend_on_the_arrival_order_is_rebuilt_in_that_order(tmp_path, monkeypatch):
    """February's payments delivered before January's and carrying a January payment id: which
    copy is held depends on the order the files arrived in. One refresh of all the files
    holds the other copy (the tables differ, and the report names the files whose rows
    differ); a refresh per run that loaded them, in that order, gives the publication's figures."""
    import shutil

    from ingestion.generate import generate
    from jisr.refresh import run_refresh
    from jisr.settings import get_settings
    from tests.conftest import TEST_KEY

    home = tmp_path / "home"
    for name, value in (("JISR_HOME", str(home)), ("DAGSTER_HOME", str(home / "dagster")),
                        ("JISR_PSEUDONYM_KEY", TEST_KEY.decode())):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JISR_DEMO", raising=False)
    settings = get_settings()
    delivered = tmp_path / "delivered"
    generate(delivered, beneficiaries=600, seed=11, months=2, truth_path=tmp_path / "truth.json", progress=False)
    january, february = (delivered / "msisf" / f"paiements_2025-0{m}.csv" for m in (1, 2))
    first = january.read_text(encoding="cp1252").splitlines()[1].split(";")  # January's first payment
    again = ";".join([first[0], *first[1:4], "2025-02", "999,00", "10/02/2025", *first[7:]])
    text = february.read_bytes().decode("cp1252")
    february.write_bytes((text + again + ("\r\n" if "\r\n" in text else "\n")).encode("cp1252"))
    for path in sorted(delivered.glob("*/*")):
        if path != january:
            (settings.landing_dir / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, settings.landing_dir / path.parent.name / path.name)
    assert run_refresh(settings).success
    shutil.copy2(january, settings.landing_dir / "msisf" / january.name)  # January's payments, late
    assert run_refresh(settings).success
    result = reproduce(settings, log=lambda _: None)
    assert not result.same and {name for name, *_ in result.loaded} >= {"paiements_2025-01.csv"}
    assert "--in-arrival-order" in result.describe()
    result = reproduce(settings, in_arrival_order=True, log=lambda _: None)
    assert result.same, result.describe()


def test_a_publication_killed_right_after_its_swap_has_its_record(published, tmp_path):
    make_build(published, estimate=4.0)
    kill_publish_at(published, tmp_path, "replaced")  # served, the process gone before anything else
    assert publish_mod.serving_run_id(published.serving_path) == "killed-run"
    record = publication_record(published, "killed-run")
    assert record is not None and record["code_version"] == "v-killed" and record["figures"]
    assert publish_mod.record_path(published, "killed-run").is_file()
    assert "no record of its figures" not in status_report(published)


def test_a_commit_killed_before_its_swap_leaves_no_record(published, tmp_path):
    make_build(published, estimate=4.0)
    kill_publish_at(published, tmp_path, "before_replace")
    assert publish_mod.serving_run_id(published.serving_path) == "run-1"
    assert publication_record(published, "killed-run") is None
    make_build(published)
    publish(published, "run-2", "v2")
    assert publication_record(published, "run-2")["figures"]
    assert not list(published.publication_counts_dir.glob("killed-run*"))
