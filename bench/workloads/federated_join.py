"""The scenario's dashboard query: lake history joined with live Postgres profiles."""

import duckdb

from runner import Measurement

NAME = "federated_join"
DESCRIPTION = "the manager's query through fjord; peer: the same join inside PostgreSQL with the lake rows copied in"

FJORD_SQL = """SELECT p.archetype, COUNT(*) AS like_count
FROM iceberg.data_on_eks.cat_interactions_raw AS i
JOIN postgresql.public.cats AS p ON i.cat_id = p.cat_id
WHERE i.interaction_type = 'like'
GROUP BY 1
ORDER BY 2 DESC, 1"""

POSTGRES_SQL = """SELECT p.archetype, COUNT(*) AS like_count
FROM lake_interactions AS i
JOIN cats AS p ON i.cat_id = p.cat_id
WHERE i.interaction_type = 'like'
GROUP BY 1
ORDER BY 2 DESC, 1"""


def run(bench):
    files = bench.fjord.warehouse / "data_on_eks" / "cat_interactions_raw" / "data"
    rows = duckdb.connect().execute(
        f"SELECT CAST(cat_id AS UUID), interaction_type FROM read_parquet('{files}/**/*.parquet')"
    ).fetchall()
    with bench.postgres.connect("workshop") as pg:
        pg.execute("CREATE TABLE lake_interactions (cat_id uuid, interaction_type text)")
        with pg.cursor().copy("COPY lake_interactions (cat_id, interaction_type) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        pg.execute("ANALYZE lake_interactions")
        expected = [(a, int(n)) for a, n in pg.execute(POSTGRES_SQL).fetchall()]
        with bench.fjord.connect() as conn:
            actual = [(a, int(n)) for a, n in conn.execute(FJORD_SQL).fetchall()]
            if actual != expected:
                raise SystemExit(f"bench: {NAME}: fjord's result differs from PostgreSQL's:\n{actual}\n{expected}")
            fjord_time = bench.median(lambda: conn.execute(FJORD_SQL).fetchall())
        postgres_time = bench.median(lambda: pg.execute(POSTGRES_SQL).fetchall())
    return [Measurement(NAME, "likes by archetype", "s", fjord_time, "postgres (all local)", postgres_time)]
