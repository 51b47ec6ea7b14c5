#!/usr/bin/env bash
# `make test-spark`: build and test the warehouse on Apache Spark (dbt-spark, local session)
# from a small generated delivery, and check that it equals the DuckDB build
# (tests/test_spark.py). Needs Java 17 or 21; installs the `spark` extra into its own
# environment (.venv-spark), so the default environment stays free of pyspark.
set -euo pipefail
cd "$(dirname "$0")/.."

SPARK_VENV="${JISR_SPARK_VENV:-$PWD/.venv-spark}"
UV="${UV:-uv}"

# --- Java ---------------------------------------------------------------------------------
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
    cat >&2 <<'MSG'
test-spark: no Java runtime found. The Spark target needs Java 17 (or 21):
  Debian/Ubuntu:  apt-get install -y openjdk-17-jre-headless
  macOS:          brew install openjdk@17
  or point JAVA_HOME at an installed JDK/JRE 17.
MSG
    exit 2
fi
java_version="$("$java_bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
if [ -z "$java_version" ] || [ "$java_version" -lt 17 ]; then
    echo "test-spark: $("$java_bin" -version 2>&1 | head -1): Spark 4 needs Java 17 or 21." >&2
    exit 2
fi
echo "test-spark: Java $java_version ($(command -v "$java_bin"))"

# --- the spark extra, in its own environment ----------------------------------------------
start=$SECONDS
UV_PROJECT_ENVIRONMENT="$SPARK_VENV" UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    $UV sync --frozen --extra spark --quiet
echo "test-spark: environment $SPARK_VENV ready in $((SECONDS - start)) s"

# --- build on DuckDB and Spark, run dbt tests on both, compare the marts -------------------
basetemp="$(mktemp -d "${TMPDIR:-/tmp}/jisr-spark.XXXXXX")"
trap 'rm -rf "$basetemp"' EXIT
export DBT_SEND_ANONYMOUS_USAGE_STATS=False
export JISR_REQUIRE_SERVICES=1  # Java and the extra are installed above: a skipped test fails
start=$SECONDS
"$SPARK_VENV/bin/python" -m pytest -m spark tests/test_spark.py -p no:cacheprovider \
    --basetemp "$basetemp" -s -q "$@"
echo "test-spark: passed in $((SECONDS - start)) s"
