"""Analytic queries over the demo lake: fjord (Iceberg) against DuckDB on the same Parquet files."""

import duckdb

from runner import Measurement

NAME = "lake_scan"
DESCRIPTION = "aggregations over cat_interactions_raw; peer: DuckDB reading the same Parquet files"

# (case, SQL for fjord, SQL for DuckDB over a view named interactions)
QUERIES = [
    (
        "count by type",
        "SELECT interaction_type, count(*) AS n FROM iceberg.data_on_eks.cat_interactions_raw GROUP BY 1 ORDER BY 1",
        "SELECT interaction_type, count(*) AS n FROM interactions GROUP BY 1 ORDER BY 1",
    ),
    (
        "daily likes",
        "SELECT CAST(date_trunc('day', event_time) AS DATE) AS day, count(*) AS n FROM iceberg.data_on_eks.cat_interactions_raw "
        "WHERE interaction_type = 'like' GROUP BY 1 ORDER BY 1",
        "SELECT CAST(date_trunc('day', event_time) AS DATE) AS day, count(*) AS n FROM interactions "
        "WHERE interaction_type = 'like' GROUP BY 1 ORDER BY 1",
    ),
    (
        "top cats",
        "SELECT cat_id, count(*) AS n, sum(duration_seconds) AS seconds FROM iceberg.data_on_eks.cat_interactions_raw "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
        "SELECT cat_id, count(*) AS n, sum(duration_seconds) AS seconds FROM interactions GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
    ),
    (
        "distinct visitors per cat",
        "SELECT count(*) FROM (SELECT cat_id, count(DISTINCT visitor_id) AS v FROM iceberg.data_on_eks.cat_interactions_raw GROUP BY 1)",
        "SELECT count(*) FROM (SELECT cat_id, count(DISTINCT visitor_id) AS v FROM interactions GROUP BY 1)",
    ),
]


def normalize(rows):
    return [tuple(str(value) for value in row) for row in rows]


def run(bench):
    files = bench.fjord.warehouse / "data_on_eks" / "cat_interactions_raw" / "data"
    duck = duckdb.connect()
    duck.execute(f"CREATE VIEW interactions AS SELECT * FROM read_parquet('{files}/**/*.parquet')")
    results = []
    with bench.fjord.connect() as conn:
        for case, fjord_sql, duck_sql in QUERIES:
            expected = normalize(duck.execute(duck_sql).fetchall())
            actual = normalize(conn.execute(fjord_sql).fetchall())
            if actual != expected:
                raise SystemExit(f"bench: {NAME}/{case}: fjord's result differs from DuckDB's:\n{actual[:5]}\n{expected[:5]}")
            fjord_time = bench.median(lambda: conn.execute(fjord_sql).fetchall())
            duck_time = bench.median(lambda: duck.execute(duck_sql).fetchall())
            results.append(Measurement(NAME, case, "s", fjord_time, "duckdb", duck_time, target_ratio=1.0))
    return results
