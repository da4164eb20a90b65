"""Drives fjord's Flight SQL port with ADBC's Flight SQL driver, the stock client of pyarrow
users. Prints one JSON document; the Rust test compares it with the Postgres port's answers.

usage: adbc_check.py URI [--user U --password P] [--tls-root CA.pem] [--who]
       adbc_check.py URI --cancel SQL --go-file PATH

With --who it only checks who it is connected as. With --cancel it runs SQL in a thread and,
once PATH exists (the test creates it when the statement is seen running), cancels it with
ADBC's cancel call and reports the error the reading thread got. Otherwise it runs the
federated checks.
"""

import argparse
import json
import os
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql

parser = argparse.ArgumentParser()
parser.add_argument("uri")
parser.add_argument("--user")
parser.add_argument("--password")
parser.add_argument("--tls-root")
parser.add_argument("--who", action="store_true")
parser.add_argument("--cancel")
parser.add_argument("--go-file")
args = parser.parse_args()
uri = args.uri
db_kwargs = {}
if args.user:
    db_kwargs["username"] = args.user
    db_kwargs["password"] = args.password
if args.tls_root:
    with open(args.tls_root) as pem:
        db_kwargs["adbc.flight.sql.client_option.tls_root_certs"] = pem.read()
kwargs = {"db_kwargs": db_kwargs} if db_kwargs else {}

out = {}
if args.who:
    with flight_sql.connect(uri, **kwargs) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        out["user"] = cursor.fetchone()[0]
    print(json.dumps(out))
    raise SystemExit(0)
if args.cancel:
    with flight_sql.connect(uri, **kwargs) as connection, connection.cursor() as cursor:
        seen = {}

        def read():
            try:
                cursor.execute(args.cancel)
                seen["rows"] = [list(row) for row in cursor.fetchall()]
            except Exception as error:  # the driver's error class varies between versions
                seen["error"] = str(error)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 30
        while not os.path.exists(args.go_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        cursor.adbc_cancel()
        reader.join(30)
        out["cancelled"] = seen.get("error", f"not cancelled: {seen}")
    print(json.dumps(out))
    raise SystemExit(0)
with flight_sql.connect(uri, **kwargs) as connection:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.name, v.slot FROM postgresql.public.cats c "
            "JOIN iceberg.cafe.visits v ON v.cat_id = c.id ORDER BY 1, 2"
        )
        out["join"] = [list(row) for row in cursor.fetchall()]
        # The lake's strings arrive in Arrow's classic string type, which every client reads.
        cursor.execute("SELECT slot, cat_id FROM iceberg.cafe.visits ORDER BY 2, 1")
        table = cursor.fetch_arrow_table()
        out["lake_types"] = [str(field.type) for field in table.schema]
        out["lake_rows"] = table.to_pylist()
        # A prepared statement with a parameter, run twice with different values.
        query = "SELECT name FROM postgresql.public.cats WHERE id = ?"
        cursor.execute(query, parameters=(2,))
        out["cat_2"] = [list(row) for row in cursor.fetchall()]
        cursor.execute(query, parameters=(3,))
        out["cat_3"] = [list(row) for row in cursor.fetchall()]
        cursor.execute("CREATE TABLE iceberg.cafe.visits_by_adbc AS SELECT * FROM iceberg.cafe.visits")
        cursor.fetchall()
        cursor.execute("SELECT count(*) FROM iceberg.cafe.visits_by_adbc")
        out["copied"] = cursor.fetchone()[0]
        try:
            cursor.execute("SELECT * FROM iceberg.cafe.nope")
            out["missing"] = "no error"
        except Exception as error:  # the driver's error class varies between versions
            out["missing"] = str(error)
    objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["catalogs"] = sorted(entry["catalog_name"] for entry in objects)
    out["tables"] = sorted(
        f'{entry["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
        for entry in objects
        for schema in entry["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    )
    out["table_types"] = sorted(connection.adbc_get_table_types())
    out["vendor"] = connection.adbc_get_info().get("vendor_name")
print(json.dumps(out, default=str))
