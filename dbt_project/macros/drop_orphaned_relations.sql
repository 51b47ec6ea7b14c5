{#- Drop the tables and views that dbt built earlier but no model or seed defines any more,
    as an on-run-end hook of `dbt build` and `dbt run`:

        on-run-end: ["{{ jisr.drop_orphaned_relations() }}"]

    dbt never drops the relation of a removed, renamed or moved model, and the publish step
    copies every table of the published schemas: without this, a model withdrawn from
    `marts` would go on being published, frozen at its last build. Only the schemas that
    this project's models and seeds build into are looked at (never `impact`, written by
    the impact stage, nor the raw store); the whole project graph is compared, whatever
    `--select` chose. -#}
{% macro drop_orphaned_relations() -%}
    {%- if execute and flags.WHICH in ['build', 'run'] -%}
        {%- set expected = {} -%}
        {%- for node in graph.nodes.values() if node.resource_type in ['model', 'seed', 'snapshot'] -%}
            {%- set key = (node.database ~ '.' ~ node.schema) | lower -%}
            {%- if key not in expected -%}
                {%- do expected.update({key: {'database': node.database, 'schema': node.schema, 'names': []}}) -%}
            {%- endif -%}
            {%- do expected[key]['names'].append((node.alias or node.name) | lower) -%}
        {%- endfor -%}
        {%- for key in expected | sort -%}
            {%- set place = expected[key] -%}
            {%- for name, kind in jisr.relations_in_schema(place['database'], place['schema']) -%}
                {%- if (name | lower) not in place['names'] -%}
                    {%- set relation = api.Relation.create(database=place['database'], schema=place['schema'],
                                                           identifier=name, type=kind) -%}
                    {{ log("Dropping " ~ kind ~ " " ~ relation ~ ": no model or seed of the project defines it any more", info=True) }}
                    {%- do adapter.drop_relation(relation) -%}
                {%- endif -%}
            {%- endfor -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}

{#- (name, 'table' | 'view') of every relation of a schema. -#}
{% macro relations_in_schema(database, schema) -%}
    {{ return(adapter.dispatch('relations_in_schema', 'jisr')(database, schema)) }}
{%- endmacro %}

{% macro default__relations_in_schema(database, schema) -%}
    {%- set found = [] -%}
    {%- set rows = run_query(
        "select table_name, table_type from information_schema.tables "
        ~ "where lower(table_schema) = lower('" ~ schema ~ "') and lower(table_catalog) = lower('" ~ database ~ "')") -%}
    {%- for row in rows -%}
        {%- do found.append((row[0], 'view' if row[1] | upper == 'VIEW' else 'table')) -%}
    {%- endfor -%}
    {{ return(found) }}
{%- endmacro %}

{% macro spark__relations_in_schema(database, schema) -%}
    {%- set found = [] -%}
    {%- if adapter.check_schema_exists(database, schema) -%}
        {%- set views = [] -%}
        {%- for row in run_query("show views in " ~ schema) -%}
            {%- do views.append(row[1] | lower) -%}
        {%- endfor -%}
        {%- for row in run_query("show tables in " ~ schema) if not row[2] -%}
            {%- do found.append((row[1], 'view' if (row[1] | lower) in views else 'table')) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}
