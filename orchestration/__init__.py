"""The Dagster layer: assets, checks, sensors and the refresh job (``orchestration.definitions``).

dbt runs as its own process (its ``dbt`` executable), never inside this one. dagster-dbt
imports dbt-core's Python modules whenever they are importable, to type a few things and to
build an in-process dbt adapter that this project turns off (``JisrDbtCliResource``): about
1 s of every process that loads the definitions (each run, the UI's code server, the ``jisr``
commands), more than half of their load. Marking dbt-core's version module as not importable
before dagster-dbt is imported makes dagster-dbt take the path it keeps for a dbt engine
installed elsewhere (dbt Fusion, or dbt-core in another environment), with its own
stand-ins for those types. So dbt's Python API (``dbtRunner``) is not available in a process
that imported this package: run the executable (``jisr.dbt.dbt_executable()``) instead.
"""

import sys

if "dagster_dbt" not in sys.modules:
    sys.modules.setdefault("dbt.version", None)  # `import dbt.version` now raises ImportError
