"""The code version recorded with every run (publish log, impact tables, deliveries) names
the code that ran: two different copies of the code never share one."""

import shutil
import subprocess
from pathlib import Path

from jisr.settings import code_version_of


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def project(root: Path) -> Path:
    (root / "dbt_project" / "models").mkdir(parents=True)
    (root / "dbt_project" / "models" / "mart.sql").write_text("select 1 as x\n")
    (root / "jisr").mkdir()
    (root / "jisr" / "__init__.py").write_text("")
    return root


def committed(root: Path) -> Path:
    project(root)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "one")
    return root


def test_a_clean_checkout_is_its_commit(tmp_path):
    repo = committed(tmp_path / "repo")
    assert code_version_of(repo) == git(repo, "rev-parse", "--short=12", "HEAD")


def test_an_untracked_model_makes_the_version_dirty(tmp_path):
    repo = committed(tmp_path / "repo")
    clean = code_version_of(repo)
    (repo / "dbt_project" / "models" / "new_mart.sql").write_text("select 2 as y\n")
    assert code_version_of(repo).startswith(clean + "-dirty")


def test_two_different_working_copies_have_two_versions(tmp_path):
    repo = committed(tmp_path / "repo")
    model = repo / "dbt_project" / "models" / "mart.sql"
    model.write_text("select 2 as x\n")
    one = code_version_of(repo)
    model.write_text("select 3 as x\n")
    other = code_version_of(repo)
    assert one != other and "-dirty" in one and "-dirty" in other
    model.write_text("select 2 as x\n")
    assert code_version_of(repo) == one  # the same edit, the same version


def test_a_copy_without_git_is_named_by_its_content(tmp_path):
    one = project(tmp_path / "one")
    two = project(tmp_path / "two")
    assert code_version_of(one) == code_version_of(two)
    assert "+src." in code_version_of(one)
    (two / "dbt_project" / "models" / "mart.sql").write_text("select 2 as x\n")
    assert code_version_of(two) != code_version_of(one)


def test_a_copy_inside_another_repository_is_not_given_that_repository_s_version(tmp_path):
    other = committed(tmp_path / "other")
    vendored = other / "vendor" / "jisr"
    shutil.copytree(project(tmp_path / "plain"), vendored)
    assert code_version_of(vendored) == code_version_of(tmp_path / "plain")
    assert git(other, "rev-parse", "--short=12", "HEAD") not in code_version_of(vendored)
