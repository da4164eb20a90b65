"""Reading a large PostgreSQL table through fjord against reading it from PostgreSQL directly."""

import subprocess
import time

from runner import Measurement, PgBouncer

NAME = "postgres_scan"
DESCRIPTION = ("a wide Postgres table: full scan to a client, aggregates, point lookups; peer: PostgreSQL directly, "
               "with PgBouncer in fjord's place as the reference for short statements")

CREATE = """
DROP TABLE IF EXISTS scan_wide;
CREATE TABLE scan_wide (
    id bigint PRIMARY KEY, qty int NOT NULL, price numeric(12,2), label text,
    at timestamptz, active boolean, score float8, bucket int
);
INSERT INTO scan_wide
SELECT g, (g % 1000)::int, (g % 100000) / 100.0, 'item-' || (g % 50000),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', g % 3 = 0,
       (g % 9973) / 7.0, (g % 20)::int
FROM generate_series(1, %(rows)d) AS g;
"""


def psql_copy(bench, port, dbname, user, select):
    """psql's `\\copy (select) to '/dev/null'` in binary format: every row crosses the wire."""
    command = [
        str(bench.postgres.bin / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", dbname,
        "-v", "ON_ERROR_STOP=1", "-c", f"\\copy ({select}) to '/dev/null' with (format binary)",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: {NAME}: psql \\copy failed on port {port}: {result.stderr}")


def timed_once(action):
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(bench):
    rows = 1_000_000 if bench.quick else 10_000_000
    print(f"bench: {NAME}: creating a {rows}-row table in PostgreSQL", flush=True)
    with bench.postgres.connect("workshop") as pg:
        pg.execute(CREATE.replace("%(rows)d", str(rows)))
        pg.execute("VACUUM ANALYZE scan_wide")
    fjord_table = "postgresql.public.scan_wide"
    results = []

    # The full scan, to a client, in the fastest form each side offers.
    with bench.postgres.connect("workshop") as pg, bench.fjord.connect() as conn:
        check = "SELECT count(*), sum(id), sum(qty), sum(price), count(label), max(at), min(score), max(score)"
        expected = pg.execute(f"{check} FROM scan_wide").fetchone()
        actual = conn.execute(f"{check} FROM {fjord_table}").fetchone()
        if [str(v) for v in actual] != [str(v) for v in expected]:
            raise SystemExit(f"bench: {NAME}: fjord's totals differ from PostgreSQL's:\n{actual}\n{expected}")
    fjord_time = bench.median(lambda: psql_copy(bench, bench.fjord.port, "iceberg", "bench", f"SELECT * FROM {fjord_table}"))
    postgres_time = bench.median(lambda: psql_copy(bench, bench.postgres.port, "workshop", "postgres", "SELECT * FROM scan_wide"))
    # psql's own start-up is in both figures alike.
    results.append(Measurement(NAME, f"full scan, {rows // 1_000_000}M rows x 8 columns (\\copy binary)", "s",
                               fjord_time, "psql \\copy from postgres", postgres_time, target_ratio=1.0))

    queries = [
        ("selective aggregate (0.01%)",
         "SELECT count(*), sum(price), max(label) FROM {t} WHERE id BETWEEN 5000 AND 5000 + {n}"),
        ("group by over every row",
         "SELECT bucket, count(*), sum(qty), avg(score)::numeric(20,3) FROM {t} GROUP BY bucket ORDER BY bucket"),
    ]
    # Short statements pay for the hop itself: PgBouncer, which only forwards bytes, measured in
    # the same rounds shows how much of fjord's figure any server between client and Postgres adds.
    bouncer = PgBouncer(bench.workdir, bench.postgres)
    try:
        results.extend(aggregates_and_lookups(bench, rows, fjord_table, queries, bouncer))
    finally:
        bouncer.stop()
    with bench.postgres.connect("workshop") as pg:
        pg.execute("DROP TABLE scan_wide")
    return results


def aggregates_and_lookups(bench, rows, fjord_table, queries, bouncer):
    results = []
    with bench.postgres.connect("workshop") as pg, bench.fjord.connect() as conn, bouncer.connect() as hop:
        for case, template in queries:
            n = max(rows // 10_000 - 1, 0)
            fjord_sql = template.format(t=fjord_table, n=n)
            postgres_sql = template.format(t="scan_wide", n=n)
            expected = [tuple(str(v) for v in row) for row in pg.execute(postgres_sql).fetchall()]
            actual = [tuple(str(v) for v in row) for row in conn.execute(fjord_sql).fetchall()]
            if actual != expected:
                raise SystemExit(f"bench: {NAME}/{case}: fjord's result differs:\n{actual[:3]}\n{expected[:3]}")
            # A statement of well under a millisecond is timed as a run of many, as an
            # application sends it (psycopg prepares it from its sixth run on, on both sides).
            runs = max(1, round(0.05 / max(timed_once(lambda: pg.execute(postgres_sql).fetchall()), 1e-6)))
            runs = min(runs, 500)

            def run_many(connection, sql):
                for _ in range(runs):
                    connection.execute(sql).fetchall()

            actions = {
                "fjord": lambda: run_many(conn, fjord_sql),
                "postgres": lambda: run_many(pg, postgres_sql),
            }
            short = runs > 1
            if short:
                actions["pgbouncer"] = lambda: run_many(hop, postgres_sql)
            times = bench.interleaved_medians(actions)
            results.append(Measurement(NAME, case, "s", times["fjord"] / runs, "postgres",
                                       times["postgres"] / runs, target_ratio=1.2,
                                       reference_name="pgbouncer" if short else None,
                                       reference=times["pgbouncer"] / runs if short else None))

        # Prepared point lookups by primary key: latency per lookup.
        lookups = 200 if bench.quick else 1000
        keys = [(k * 7919) % rows + 1 for k in range(lookups)]

        def point(connection, table):
            sql = f"SELECT * FROM {table} WHERE id = %s"
            for key in keys:
                row = connection.execute(sql, [key], prepare=True).fetchone()
                if row is None or row[0] != key:
                    raise SystemExit(f"bench: {NAME}: lookup of {key} returned {row}")

        times = bench.interleaved_medians({
            "fjord": lambda: point(conn, fjord_table),
            "postgres": lambda: point(pg, "scan_wide"),
            "pgbouncer": lambda: point(hop, "scan_wide"),
        })
        results.append(Measurement(NAME, "prepared point lookup by primary key", "s", times["fjord"] / lookups,
                                   "postgres", times["postgres"] / lookups, target_ratio=1.5,
                                   reference_name="pgbouncer", reference=times["pgbouncer"] / lookups))
    return results
