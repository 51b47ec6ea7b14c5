{#- Make the raw store's tables readable by the target engine, as an on-run-start hook:

        on-run-start: ["{{ jisr.register_raw_sources() }}"]

    DuckDB reads the raw store itself (attached read-only as `ingest`) and PostgreSQL
    holds a copy in its own schemas: nothing to do. On Spark every source `<schema>.<table>`
    (`raw.<source>`, `meta.deliveries`, `quarantine.rows`) becomes a view over the open raw
    layer (ingestion/lake.py; a refresh exports it before building on Spark): the Parquet directory
    `<lake>/<schema>/<table>`, Hive-partitioned by `_batch` for the raw tables. Views list
    the files when queried, so a new delivery needs no metastore repair, and every row
    keeps its lineage columns and `_is_current` flag.

    The lake location is the dbt var `lake_uri` (on a cluster: `s3a://<bucket>/jisr/lake`,
    `abfss://...`), by default `$JISR_HOME/lake`, where `jisr` exports it. A source's
    `database` must equal its `schema` on Spark (dbt-spark has no separate database). -#}
{% macro register_raw_sources() -%}
    {{ return(adapter.dispatch('register_raw_sources', 'jisr')()) }}
{%- endmacro %}

{% macro default__register_raw_sources() -%}
{%- endmacro %}

{% macro lake_uri() -%}
    {{ return((var('lake_uri', none) or (env_var('JISR_HOME', '../var') ~ '/lake')) | trim) }}
{%- endmacro %}

{% macro spark__register_raw_sources() -%}
    {%- if execute -%}
        {#- `_batch` is also a partition directory: keep it text (a study id `2019` must
            not become an integer). The profile sets it for the session too. -#}
        {%- do run_query("set spark.sql.sources.partitionColumnTypeInference.enabled = false") -%}
        {%- set lake = jisr.lake_uri() -%}
        {%- set databases = [] -%}
        {%- for source in graph.sources.values() | sort(attribute='unique_id') -%}
            {%- if source.schema not in databases -%}
                {%- do run_query("create database if not exists " ~ source.schema) -%}
                {%- do databases.append(source.schema) -%}
            {%- endif -%}
            {%- do run_query(
                "create or replace view " ~ source.schema ~ "." ~ source.identifier
                ~ " as select * from parquet.`" ~ lake ~ "/" ~ source.schema ~ "/" ~ source.identifier ~ "`"
            ) -%}
        {%- endfor -%}
        {{ log("Spark: " ~ (graph.sources | length) ~ " sources registered over the Parquet lake " ~ lake, info=True) }}
    {%- endif -%}
{%- endmacro %}
