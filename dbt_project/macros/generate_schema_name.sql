{#- A model's custom schema (`+schema` in dbt_project.yml) is used as-is: marts build into
    `marts`, not `<target schema>_marts`, so consumers and the publish step find them by a
    fixed name on every target. Models without a custom schema go to the target schema.
    JISR_SCHEMA_SUFFIX (set by `jisr publish-postgres` only: `__next`) builds every custom
    schema beside the one readers use, to be renamed in once protected (jisr/postgres.py);
    on PostgreSQL only, so a variable left set in a shell cannot move a DuckDB build. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}{{ env_var('JISR_SCHEMA_SUFFIX', '') | trim if target.type == 'postgres' else '' }}
    {%- endif -%}
{%- endmacro %}
