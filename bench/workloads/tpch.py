"""TPC-H: the 22 queries through fjord's Postgres front door and through its Flight SQL front door
(ADBC) over Iceberg tables, beside DuckDB and DataFusion reading the same data as raw Parquet
files.

The data comes from tpchgen (TPC-H's generator, scale factor 1; 0.1 with --quick) as Parquet.
fjord loads it into Iceberg itself (`fjord load`, its CREATE TABLE AS path); DuckDB and
DataFusion read the generated files. Every query's rows from fjord (both front doors) and from
DataFusion are checked against DuckDB's before any timing counts; a difference stops the run.
PyIceberg reads the tables fjord loaded to check that they are valid Iceberg holding what was
generated. Query texts (bench/tpch/qNN.sql) are TPC-H's with the specification's validation
parameters.

Targets (from the benchmark issue), through either front door: fjord's total time at most
DuckDB's; each query at most 1.1x raw DataFusion's (the cost of Iceberg and the wire protocol on
top of the same engine).
"""

import datetime
import decimal
import os
import pathlib
import subprocess
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import datafusion
import duckdb

from runner import RESULTS, ROOT, Measurement

NAME = "tpch"
DESCRIPTION = "TPC-H's 22 queries; fjord (Iceberg, pgwire) vs DuckDB and DataFusion on the same Parquet"

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]
QUERIES = ROOT / "bench" / "tpch"


def query_text(number, scale):
    text = (QUERIES / f"q{number:02d}.sql").read_text()
    # Q11's FRACTION is 0.0001 / SF in the specification.
    return text.replace("{fraction}", f"{0.0001 / scale:.10f}")


def normalize(rows):
    """Rows as comparable text: numbers rounded to 2 places (engines differ in decimal scale and
    float formatting), dates as ISO, strings without trailing blanks; sorted, since queries
    whose ORDER BY ties may list tied rows in any order."""

    def cell(value):
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, (int, float, decimal.Decimal)):
            return f"{float(value):.2f}"
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        return str(value).rstrip()

    return sorted(tuple(cell(value) for value in row) for row in rows)


def generate(directory, scale):
    tpchgen = pathlib.Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run(
        [str(tpchgen), "parquet", "-s", str(scale), "--output-dir", str(directory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def load_into_fjord(bench, directory):
    for table in TABLES:
        subprocess.run(
            [os.environ["FJORD_BIN"], "--log", "warn", "load", "--config", str(bench.fjord.config),
             "--table", f"iceberg.tpch.{table}", str(directory / f"{table}.parquet")],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def cross_check_with_pyiceberg(bench, directory):
    """Reads every table fjord loaded with PyIceberg, the reference Python implementation, through
    the same SQL catalog: each must be valid Iceberg with the Parquet file's rows and columns."""
    import pyarrow.parquet
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "iceberg",
        uri=f"sqlite:///{bench.fjord.dir / 'catalog.db'}",
        warehouse=f"file://{bench.fjord.warehouse}",
    )
    for table in TABLES:
        source = pyarrow.parquet.ParquetFile(directory / f"{table}.parquet")
        landed = catalog.load_table(f"tpch.{table}")
        rows = landed.scan().to_arrow()
        if rows.num_rows != source.metadata.num_rows or rows.schema.names != source.schema_arrow.names:
            raise SystemExit(
                f"bench: tpch: PyIceberg reads {rows.num_rows} rows with columns {rows.schema.names} "
                f"from iceberg.tpch.{table}; the Parquet file has {source.metadata.num_rows} rows "
                f"with {source.schema_arrow.names}"
            )
    print(f"bench: tpch: PyIceberg reads all {len(TABLES)} tables fjord loaded, rows and columns as generated", flush=True)


def explain_slowest(conn, context, scale, slowness, count=3):
    """Writes EXPLAIN ANALYZE of the queries furthest behind raw DataFusion, from fjord and from
    DataFusion itself, so that where the time goes can be read side by side."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"tpch-explain-{datetime.datetime.now():%Y%m%d-%H%M%S}.txt"
    with path.open("w") as out:
        for ratio, number in sorted(slowness, reverse=True)[:count]:
            sql = query_text(number, scale)
            out.write(f"==== q{number:02d}: fjord / datafusion = {ratio:.2f}\n\n---- fjord\n")
            for row in conn.execute(f"EXPLAIN ANALYZE {sql}").fetchall():
                out.write(f"{row[-1]}\n")
            out.write("\n---- datafusion (raw Parquet)\n")
            for batch in context.sql(f"EXPLAIN ANALYZE {sql}").collect():
                for line in batch.column(batch.num_columns - 1).to_pylist():
                    out.write(f"{line}\n")
            out.write("\n")
    print(f"bench: tpch: EXPLAIN ANALYZE of the {count} queries furthest behind DataFusion: {path.relative_to(ROOT)}", flush=True)


def run(bench):
    scale = 0.1 if bench.quick else 1
    directory = bench.workdir / "tpch"
    print(f"bench: tpch: generating scale factor {scale} and loading it into Iceberg through fjord", flush=True)
    generate(directory, scale)
    load_into_fjord(bench, directory)
    cross_check_with_pyiceberg(bench, directory)

    duck = duckdb.connect()
    context = datafusion.SessionContext()
    for table in TABLES:
        path = directory / f"{table}.parquet"
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
        context.register_parquet(table, str(path))

    # Timed rounds per query: three at least (more for short queries, see
    # `interleaved_medians`), as 22 queries x 4 engines add up.
    repeat = min(bench.repeat, 3)
    totals = {"fjord": 0.0, "fjord over flight sql": 0.0, "duckdb": 0.0, "datafusion": 0.0}
    results = []
    slowness = []
    # ADBC hand-shakes when given a user, so the session (and its USE) lasts across statements.
    flight = flight_sql.connect(
        f"grpc://127.0.0.1:{bench.fjord.flight_port}",
        db_kwargs={"username": "bench", "password": ""},
        autocommit=True,
    )
    over_flight = flight.cursor()
    over_flight.execute("USE iceberg.tpch")

    def flight_rows(sql):
        over_flight.execute(sql)
        return over_flight.fetch_arrow_table()

    with bench.fjord.connect() as conn:
        conn.execute("SET search_path = tpch")
        for number in range(1, 23):
            sql = query_text(number, scale)
            expected = normalize(duck.execute(sql).fetchall())
            from_fjord = normalize(conn.execute(sql).fetchall())
            from_flight = normalize(tuple(row.values()) for row in flight_rows(sql).to_pylist())
            from_datafusion = normalize(
                tuple(row.values()) for row in context.sql(sql).to_pylist()
            )
            for engine, rows in (
                ("fjord", from_fjord),
                ("fjord over flight sql", from_flight),
                ("datafusion", from_datafusion),
            ):
                if rows != expected:
                    raise SystemExit(
                        f"bench: tpch q{number}: {engine}'s {len(rows)} rows differ from DuckDB's "
                        f"{len(expected)}:\n{rows[:3]}\n{expected[:3]}"
                    )
            times = bench.interleaved_medians(
                {
                    "fjord": lambda: conn.execute(sql).fetchall(),
                    "flight": lambda: flight_rows(sql),
                    "duckdb": lambda: duck.execute(sql).fetchall(),
                    "datafusion": lambda: context.sql(sql).collect(),
                },
                repeat,
            )
            fjord_time, flight_time = times["fjord"], times["flight"]
            duck_time, datafusion_time = times["duckdb"], times["datafusion"]
            totals["fjord"] += fjord_time
            totals["fjord over flight sql"] += flight_time
            totals["duckdb"] += duck_time
            totals["datafusion"] += datafusion_time
            print(
                f"bench: tpch q{number:02d}: fjord {fjord_time:.3f} s (flight sql {flight_time:.3f} s), duckdb {duck_time:.3f} s, "
                f"datafusion {datafusion_time:.3f} s ({len(expected)} rows, checked)",
                flush=True,
            )
            slowness.append((fjord_time / datafusion_time, number))
            case = f"q{number:02d}"
            results.append(Measurement(NAME, case, "s", fjord_time, "datafusion", datafusion_time, target_ratio=1.1))
            results.append(Measurement(NAME, case, "s", fjord_time, "duckdb", duck_time))
            results.append(Measurement(NAME, f"{case} flight", "s", flight_time, "datafusion", datafusion_time, target_ratio=1.1))
        explain_slowest(conn, context, scale, slowness)
    over_flight.close()
    flight.close()
    results.append(Measurement(NAME, f"total sf{scale:g}", "s", totals["fjord"], "duckdb", totals["duckdb"], target_ratio=1.0))
    results.append(Measurement(NAME, f"total sf{scale:g}", "s", totals["fjord"], "datafusion", totals["datafusion"]))
    results.append(Measurement(NAME, f"total sf{scale:g} flight", "s", totals["fjord over flight sql"], "duckdb", totals["duckdb"], target_ratio=1.0))
    return results
