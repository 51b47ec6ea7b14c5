{#- Spark implementations of the incremental helpers of macros/incremental.sql.

    Plain Parquet tables (the default: nothing to install) have no MERGE and no DELETE;
    Delta Lake, Apache Iceberg and Apache Hudi tables have both (dbt var
    `spark_file_format`, with the models' `file_format` set to the same value). -#}

{% macro spark_can_merge() -%}
    {{ return(var('spark_file_format', 'parquet') in ['delta', 'iceberg', 'hudi']) }}
{%- endmacro %}

{#- An `upsert_key` model replaces earlier rows of a key in place, which needs MERGE: on
    Parquet it is rebuilt in full on every run instead (same rows, more work).
    `replace_period` models stay incremental on every format: they overwrite the
    partitions of their changed periods (insert_overwrite, partition_by the period). -#}
{% macro spark__incremental_materialization(kind) -%}
    {%- if kind == 'upsert_key' and not jisr.spark_can_merge() -%}
        {{ return('table') }}
    {%- else -%}
        {{ return('incremental') }}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook removing the rows of keys or periods that have no current row any more.
    With MERGE-capable formats: the portable DELETE (empty on a full refresh). On Parquet:
    a model rebuilt in full, on every run or by a full refresh, has nothing to remove; a
    model partitioned by the period drops the vanished periods' partitions. -#}
{% macro spark__delete_vanished(staging_relation, key_column) -%}
    {%- set partition_by = model.config.get('partition_by') -%}
    {%- set partitions = [partition_by] if partition_by is string else (partition_by or []) -%}
    {%- if jisr.spark_can_merge() -%}
        {{ jisr.default__delete_vanished(staging_relation, key_column) }}
    {%- elif model.config.get('materialized') != 'incremental' or should_full_refresh() -%}
        {#- rebuilt from the current rows: nothing can have vanished -#}
    {%- elif partitions == [key_column] -%}
        {%- if execute -%}
            {%- set vanished = run_query(
                "select distinct " ~ key_column ~ " from " ~ this ~ " where " ~ key_column
                ~ " not in (select " ~ key_column ~ " from " ~ staging_relation ~ ")") -%}
            {%- for row in vanished.rows -%}
                {%- do run_query("alter table " ~ this ~ " drop if exists partition ("
                                 ~ key_column ~ " = " ~ jisr.spark_literal(row[0]) ~ ")") -%}
            {%- endfor -%}
        {%- endif -%}
    {%- else -%}
        {{ exceptions.raise_compiler_error(
            "jisr.delete_vanished on Spark with Parquet tables needs the model partitioned by "
            ~ key_column ~ " (partition_by), or a MERGE-capable spark_file_format (delta, iceberg, hudi)") }}
    {%- endif -%}
{%- endmacro %}
