"""The scenario's dashboard query: lake history joined with live Postgres profiles."""

import datetime

import duckdb

from runner import Measurement

NAME = "federated_join"
DESCRIPTION = ("the manager's query through fjord; peer: the same join inside PostgreSQL with the lake rows copied in. "
               "One visitor's likes (on one day, at larger scales) joined with 100k Postgres cats, with and without "
               "run-time join filters")

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

# One visitor's likes: a few dozen lake rows against every cat profile. With run-time join filters
# the lake side's cat ids go to Postgres as an IN list, and only those profiles cross the wire.
SELECTIVE_SQL = """SELECT p.name, p.archetype, COUNT(*) AS likes
FROM iceberg.data_on_eks.cat_interactions_raw AS i
JOIN postgresql.public.cats_at_scale AS p ON i.cat_id = p.cat_id
WHERE i.interaction_type = 'like' AND {likes}
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2"""

# The demo's cats, and filler profiles up to 100,000 rows that no interaction names.
CATS_AT_SCALE = """
DROP TABLE IF EXISTS cats_at_scale;
CREATE TABLE cats_at_scale AS
SELECT cat_id, name, archetype FROM cats
UNION ALL
SELECT md5('filler' || g)::uuid, 'filler-' || g, 'Tabby'
FROM generate_series(1, greatest(100000 - (SELECT count(*) FROM cats), 0)) AS g;
ALTER TABLE cats_at_scale ADD PRIMARY KEY (cat_id);
"""


def few_liked_cats(files):
    """A filter on the lake's likes that names 20 to 150 distinct cats, at most DataFusion's
    default bound for sending keys as a list (`hash_join_inlist_pushdown_max_distinct_values`),
    and what it selects: one visitor's likes, or at larger scales (where a visitor likes
    hundreds of cats) one visitor's likes on one day."""
    lake = duckdb.connect()
    source = f"read_parquet('{files}/**/*.parquet')"
    found = lake.execute(
        f"SELECT CAST(visitor_id AS VARCHAR) FROM {source} "
        "WHERE interaction_type = 'like' GROUP BY visitor_id "
        "HAVING count(DISTINCT cat_id) BETWEEN 20 AND 150 ORDER BY count(DISTINCT cat_id) DESC LIMIT 1"
    ).fetchone()
    if found is not None:
        return f"i.visitor_id = '{found[0]}'", "one visitor's likes"
    found = lake.execute(
        f"SELECT CAST(visitor_id AS VARCHAR), CAST(floor(epoch(event_time) / 86400) AS BIGINT) AS day FROM {source} "
        "WHERE interaction_type = 'like' GROUP BY 1, 2 "
        "HAVING count(DISTINCT cat_id) BETWEEN 20 AND 150 ORDER BY count(DISTINCT cat_id) DESC, 1, 2 LIMIT 1"
    ).fetchone()
    if found is None:
        raise SystemExit(f"bench: {NAME}: no visitor with 20 to 150 liked cats, in all or on one day, in the demo world")
    visitor, day = found
    start = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(days=day)
    end = start + datetime.timedelta(days=1)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return (f"i.visitor_id = '{visitor}' AND i.event_time >= TIMESTAMP '{start.strftime(stamp)}' "
            f"AND i.event_time < TIMESTAMP '{end.strftime(stamp)}'", "one visitor's likes on one day")


def selective(bench, files):
    """The selective join with run-time filters on, and off (the peer)."""
    likes, what = few_liked_cats(files)
    sql = SELECTIVE_SQL.format(likes=likes)
    with bench.postgres.connect("workshop") as pg:
        pg.execute(CATS_AT_SCALE)
        pg.execute("VACUUM ANALYZE cats_at_scale")
        profiles = pg.execute("SELECT count(*) FROM cats_at_scale").fetchone()[0]
    with bench.fjord.connect() as conn:
        conn.execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = true")
        with_filters = [tuple(map(str, row)) for row in conn.execute(sql).fetchall()]
        filtered_time = bench.median(lambda: conn.execute(sql).fetchall())
        conn.execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false")
        without_filters = [tuple(map(str, row)) for row in conn.execute(sql).fetchall()]
        unfiltered_time = bench.median(lambda: conn.execute(sql).fetchall())
    if not with_filters or with_filters != without_filters:
        raise SystemExit(f"bench: {NAME}: the selective join differs with run-time filters:\n"
                         f"{with_filters[:3]}\n{without_filters[:3]}")
    with bench.postgres.connect("workshop") as pg:
        pg.execute("DROP TABLE cats_at_scale")
    return Measurement(NAME, f"{what} x {profiles // 1000}k Postgres cats, run-time join filters", "s",
                       filtered_time, "fjord without run-time filters", unfiltered_time)


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
    return [Measurement(NAME, "likes by archetype", "s", fjord_time, "postgres (all local)", postgres_time),
            selective(bench, files)]
