"""A large result fetched over Flight SQL (ADBC into a pyarrow Table) against the same rows over
fjord's Postgres port (psycopg 3, binary) and against PostgreSQL serving them itself, and against
the loopback limit: a trivial Flight DoGet of the same batches from memory (pyarrow.flight)."""

import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

from runner import Measurement

NAME = "flight_sql"
DESCRIPTION = "a 10M x 8 result: ADBC over Flight SQL vs fjord's pgwire (psycopg 3 binary), PostgreSQL, and an in-memory Flight DoGet"

CREATE = """
DROP TABLE IF EXISTS flight_rows;
CREATE TABLE flight_rows (
    id bigint, qty int, price numeric(12,2), label text,
    at timestamptz, active boolean, score float8, bucket int
);
INSERT INTO flight_rows
SELECT g, (g % 1000)::int, (g % 100000) / 100.0, 'item-' || (g % 50000),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', g % 3 = 0,
       (g % 9973) / 7.0, (g % 20)::int
FROM generate_series(1, %(rows)d) AS g;
"""


def statement_query(sql):
    """A Flight SQL `CommandStatementQuery` for `sql`, packed in a protobuf `Any`, as a Flight
    command: what a Flight SQL client sends, built by hand so pyarrow's plain Flight client can
    ask for it too."""

    def varint(n):
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number, data):
        return varint(number << 3 | 2) + varint(len(data)) + data

    command = field(1, sql.encode())
    return field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(2, command)


class InMemory(flight.FlightServerBase):
    """Serves one Arrow table for any ticket: what a DoGet costs with nothing behind it."""

    def __init__(self, table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def run(bench):
    rows = 1_000_000 if bench.quick else 10_000_000
    print(f"bench: {NAME}: a {rows}-row table in PostgreSQL, copied into Iceberg through fjord", flush=True)
    with bench.postgres.connect("workshop") as pg:
        pg.execute(CREATE.replace("%(rows)d", str(rows)))
    with bench.fjord.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS iceberg.bench")
        conn.execute("DROP TABLE IF EXISTS iceberg.bench.flight_rows")
        conn.execute("CREATE TABLE iceberg.bench.flight_rows AS SELECT * FROM postgresql.public.flight_rows")
    query = "SELECT * FROM iceberg.bench.flight_rows"
    uri = f"grpc://127.0.0.1:{bench.fjord.flight_port}"
    holder = {}

    def over_flight():
        with flight_sql.connect(uri, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            holder["table"] = cursor.fetch_arrow_table()

    def over_pgwire():
        with bench.fjord.connect() as conn, conn.cursor(binary=True) as cursor:
            cursor.execute(query)
            while cursor.fetchmany(100_000):
                pass

    def from_postgres():
        with bench.postgres.connect("workshop") as conn, conn.cursor(binary=True) as cursor:
            cursor.execute("SELECT * FROM flight_rows")
            while cursor.fetchmany(100_000):
                pass

    def over_flight_plain_client():
        # The same rows read by the client the loopback limit is measured with: what is left of
        # the gap between the two is fjord's own cost.
        client = flight.connect(uri)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(query)))
        read = sum(client.do_get(endpoint.ticket).read_all().num_rows for endpoint in info.endpoints)
        if read != rows:
            raise SystemExit(f"bench: {NAME}: pyarrow's Flight client read {read} rows, not {rows}")

    flight_time = bench.median(over_flight)
    plain_client_time = bench.median(over_flight_plain_client)
    table = holder["table"]
    if table.num_rows != rows:
        raise SystemExit(f"bench: {NAME}: Flight SQL gave {table.num_rows} rows, not {rows}")
    megabytes = table.nbytes / 1e6
    server = InMemory(table)
    threading.Thread(target=server.serve, daemon=True).start()
    client = flight.connect(f"grpc://127.0.0.1:{server.port}")
    loopback_time = bench.median(lambda: client.do_get(flight.Ticket(b"all")).read_all())
    server.shutdown()
    pgwire_time = bench.median(over_pgwire, repeat=1)
    postgres_time = bench.median(from_postgres, repeat=1)
    for label, seconds in (("Flight SQL (ADBC)", flight_time), ("Flight SQL (pyarrow's Flight client)", plain_client_time), ("fjord pgwire (psycopg 3 binary)", pgwire_time),
                           ("PostgreSQL (psycopg 3 binary)", postgres_time), ("in-memory Flight DoGet", loopback_time)):
        print(f"bench: {NAME}: {label}: {seconds:.2f} s, {megabytes / seconds:.0f} MB/s of Arrow data", flush=True)
    millions = rows // 1_000_000
    return [
        # At least 5x the Postgres port's throughput: at most 0.2x its time.
        Measurement(NAME, f"{millions}M x 8 over Flight SQL vs fjord's pgwire (s)", "s",
                    flight_time, "fjord pgwire", pgwire_time, target_ratio=0.2),
        Measurement(NAME, f"{millions}M x 8 over Flight SQL vs in-memory DoGet (s)", "s",
                    flight_time, "loopback limit", loopback_time, target_ratio=2.0),
        Measurement(NAME, f"{millions}M x 8 over Flight SQL, both read by pyarrow's client (s)", "s",
                    plain_client_time, "loopback limit", loopback_time),
        Measurement(NAME, f"{millions}M x 8 over Flight SQL vs PostgreSQL itself (s)", "s",
                    flight_time, "postgres", postgres_time),
    ]
