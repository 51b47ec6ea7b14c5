"""A pytest hook for the suites that exist to exercise a service (PostgreSQL, Spark): with
``JISR_REQUIRE_SERVICES`` set (scripts/postgres-ci.sh and scripts/spark-ci.sh set it), a test
that skips fails instead. Those tests skip when their service is missing, which is right on
a developer's machine; in the scripts that install and start the service, a skip means the
installation broke, and a suite of skips must not pass."""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("JISR_REQUIRE_SERVICES"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but JISR_REQUIRE_SERVICES is set (the service was to be installed): {reason}"
