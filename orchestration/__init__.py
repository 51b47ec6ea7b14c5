"""The Dagster layer: assets, checks, sensors and the refresh job (``orchestration.definitions``).

dbt runs as its own process (its ``dbt`` executable), never inside this one. dagster-dbt
imports dbt-core's Python modules whenever they are importable: for a few types, for an
in-process dbt adapter that this project turns off (``JisrDbtCliResource``), and to
evaluate dbt selection strings in this process. That costs about 1 s of every process that
loads the definitions (each run, the UI's code server, the ``jisr`` commands), more than
half of their load. Marking dbt-core's version module as not importable before dagster-dbt
is imported makes dagster-dbt take the path it keeps for a dbt engine installed elsewhere
(dbt Fusion, or dbt-core in another environment), with its own stand-ins for those types;
tests/test_definitions.py checks that dbt's results become the same Dagster events on both
paths. What that path cannot do, in a process that imported this package:

- select dbt nodes with dbt's syntax in Python: ``@dbt_assets(select=..., exclude=...,
  selector=...)`` and ``build_dbt_asset_selection(dbt_select=...)`` raise
  ``DagsterDbtCoreNotInstalledError`` (the definitions would fail to load, which the tests
  see): select Dagster assets by key or group instead, or pass ``--select`` to the CLI;
- use dbt's Python API (``dbtRunner``): run the executable (``jisr.dbt.dbt_executable()``).
"""

import sys

if "dagster_dbt" not in sys.modules:
    sys.modules.setdefault("dbt.version", None)  # `import dbt.version` now raises ImportError
