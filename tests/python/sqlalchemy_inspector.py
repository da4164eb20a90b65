"""What Superset does when a database is added and browsed, through SQLAlchemy's stock
PostgreSQL dialect and psycopg2. Prints one JSON document; the Rust test checks it."""

import json
import sys

import sqlalchemy as sa

url, schema, table = sys.argv[1:4]
engine = sa.create_engine(url)
inspector = sa.inspect(engine)
result = {
    "schemas": inspector.get_schema_names(),
    "tables": inspector.get_table_names(schema=schema),
    "views": inspector.get_view_names(schema=schema),
    "columns": [{"name": c["name"], "type": str(c["type"]), "nullable": c["nullable"]} for c in inspector.get_columns(table, schema=schema)],
    "pk": inspector.get_pk_constraint(table, schema=schema)["constrained_columns"],
    "fks": inspector.get_foreign_keys(table, schema=schema),
    "indexes": inspector.get_indexes(table, schema=schema),
    "unique": inspector.get_unique_constraints(table, schema=schema),
    "check": inspector.get_check_constraints(table, schema=schema),
    "comment": inspector.get_table_comment(table, schema=schema)["text"],
}
with engine.connect() as connection:
    # The kind of query SQL Lab and charts send.
    rows = connection.execute(
        sa.text(f'SELECT count(*) AS n FROM "{schema}"."{table}" LIMIT 1001')
    ).fetchall()
    result["count"] = rows[0][0]
print(json.dumps(result))
