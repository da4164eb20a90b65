"""Drives a running Apache Superset through its REST API against a Postgres-compatible server,
the way a user would in the UI: log in, test and register the connection, browse schemas and
tables, open a table in SQL Lab (column/key/index metadata plus the preview query) and run a
query. Each step is printed with what it returned; any failure exits non-zero with the HTTP
status and an excerpt of the response body.

usage: superset_check.py --url http://127.0.0.1:8088 --sqlalchemy-uri postgresql://u@host:port/db
           [--expect-schema NAME]... [--expect-table SCHEMA.TABLE]...
           [--query SQL --expect-rows N]... [--schema NAME] [--database-name NAME]
           [--username admin --password admin] [--wait SECONDS] [--rows-json FILE]

--query and --expect-rows pair up in order; --schema is the SQL Lab schema the queries run in.
Table metadata is fetched (and previewed) for every --expect-table. --wait polls GET /health for
up to SECONDS before starting (Superset takes a while to come up); --rows-json writes the rows
each --query returned, as a JSON list of lists of row objects, for the caller to compare.
"""

import argparse
import http.cookiejar
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class CheckFailed(Exception):
    pass


def rison(value):
    """Encodes dicts, lists, strings, numbers and booleans in Rison, the `q=` parameter format."""
    if isinstance(value, bool):
        return "!t" if value else "!f"
    if value is None:
        return "!n"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, dict):
        return "(" + ",".join(f"{key}:{rison(item)}" for key, item in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "!(" + ",".join(rison(item) for item in value) + ")"
    raise TypeError(f"cannot encode {value!r} as rison")


class Superset:
    def __init__(self, url, timeout):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "Referer": self.url + "/"}
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def call(self, method, path, body=None, params=None, expect=(200,)):
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params, safe="(),:!'*")
        data = None
        headers = dict(self.headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            raise CheckFailed(f"{method} {path}: request failed: {error}") from error
        text = raw.decode("utf-8", "replace")
        if status not in expect:
            raise CheckFailed(f"{method} {path}: HTTP {status}: {text[:2000]}")
        try:
            return json.loads(text) if text else {}
        except ValueError as error:
            raise CheckFailed(f"{method} {path}: HTTP {status}, not JSON: {text[:2000]}") from error

    def login(self, username, password):
        reply = self.call(
            "POST",
            "/api/v1/security/login",
            {"username": username, "password": password, "provider": "db", "refresh": False},
        )
        token = reply.get("access_token")
        if not token:
            raise CheckFailed(f"login: no access_token in {reply}")
        self.headers["Authorization"] = f"Bearer {token}"
        # The CSRF token is bound to the session cookie the opener keeps; servers with CSRF
        # protection disabled still answer, so it is always sent.
        csrf = self.call("GET", "/api/v1/security/csrf_token/").get("result")
        if csrf:
            self.headers["X-CSRFToken"] = csrf
        return bool(csrf)


def step(name, detail):
    print(f"[superset] {name}: {detail}", flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Superset base URL")
    parser.add_argument("--sqlalchemy-uri", required=True)
    parser.add_argument("--database-name", default="fjord")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--expect-schema", action="append", default=[])
    parser.add_argument("--expect-table", action="append", default=[], help="SCHEMA.TABLE")
    parser.add_argument("--query", action="append", default=[])
    parser.add_argument("--expect-rows", action="append", type=int, default=[])
    parser.add_argument("--schema", help="schema SQL Lab queries run in")
    parser.add_argument("--query-limit", type=int, default=1000, help="SQL Lab row limit")
    parser.add_argument("--no-preview", action="store_true", help="skip table preview queries")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for /health")
    parser.add_argument("--rows-json", help="file to write the queries' rows to")
    args = parser.parse_args()
    if len(args.expect_rows) > len(args.query):
        parser.error("more --expect-rows than --query")
    for table in args.expect_table:
        if "." not in table:
            parser.error(f"--expect-table {table!r} is not SCHEMA.TABLE")
    return args


def register_database(superset, args):
    payload = {"sqlalchemy_uri": args.sqlalchemy_uri, "database_name": args.database_name}
    superset.call("POST", "/api/v1/database/test_connection/", payload)
    step("test_connection", "ok")

    settings = dict(
        payload,
        expose_in_sqllab=True,
        allow_run_async=False,
        allow_ctas=False,
        allow_cvas=False,
        allow_dml=False,
    )
    existing = superset.call(
        "GET",
        "/api/v1/database/",
        params={
            "q": rison(
                {"filters": [{"col": "database_name", "opr": "eq", "value": args.database_name}]}
            )
        },
    ).get("result", [])
    if existing:
        database_id = existing[0]["id"]
        superset.call("PUT", f"/api/v1/database/{database_id}", settings)
        step("database", f"updated existing {args.database_name!r} id={database_id}")
    else:
        reply = superset.call("POST", "/api/v1/database/", settings, expect=(201,))
        database_id = reply["id"]
        step("database", f"created {args.database_name!r} id={database_id}")
    return database_id


def check_catalog(superset, database_id, args):
    base = f"/api/v1/database/{database_id}"
    schemas = superset.call("GET", f"{base}/schemas/", params={"q": rison({"force": True})})
    schemas = schemas.get("result", [])
    step("schemas", schemas)
    missing = [name for name in args.expect_schema if name not in schemas]
    if missing:
        raise CheckFailed(f"schemas {missing} missing from {schemas}")

    wanted = {}
    for qualified in args.expect_table:
        schema, table = qualified.split(".", 1)
        wanted.setdefault(schema, []).append(table)
    for schema in dict.fromkeys(args.expect_schema + list(wanted)):
        reply = superset.call(
            "GET", f"{base}/tables/", params={"q": rison({"force": True, "schema_name": schema})}
        )
        tables = {entry["value"]: entry.get("type") for entry in reply.get("result", [])}
        step(f"tables {schema}", ", ".join(f"{name} ({kind})" for name, kind in tables.items()))
        missing = [name for name in wanted.get(schema, []) if name not in tables]
        if missing:
            raise CheckFailed(f"tables {missing} missing from schema {schema!r}: {list(tables)}")

    for qualified in args.expect_table:
        schema, table = qualified.split(".", 1)
        params = {"name": table, "schema": schema}
        metadata = superset.call("GET", f"{base}/table_metadata/", params=params)
        columns = metadata.get("columns") or []
        if not columns:
            raise CheckFailed(f"table_metadata {qualified}: no columns in {metadata}")
        step(
            f"table_metadata {qualified}",
            "columns "
            + ", ".join(f"{column['name']} {column.get('longType')}" for column in columns)
            + "; keys "
            + (", ".join(describe_key(key) for key in metadata.get("indexes") or []) or "none"),
        )
        extra = superset.call("GET", f"{base}/table_metadata/extra/", params=params)
        step(f"table_metadata/extra {qualified}", extra)
        select_star = metadata.get("selectStar")
        if select_star and not args.no_preview:
            # SQL Lab's left panel runs this query to show a preview of the table.
            reply = run_query(superset, database_id, select_star, schema, args.query_limit)
            step(f"preview {qualified}", f"{len(reply.get('data') or [])} rows")


def describe_key(key):
    """One entry of table_metadata's `indexes`, which lists primary, foreign and index keys."""
    text = f"{key.get('type')} {key.get('name')}({','.join(key.get('column_names') or [])})"
    if key.get("referred_table"):
        text += (
            f" -> {key.get('referred_schema')}.{key['referred_table']}"
            f"({','.join(key.get('referred_columns') or [])})"
        )
    return text


def run_query(superset, database_id, sql, schema, limit):
    reply = superset.call(
        "POST",
        "/api/v1/sqllab/execute/",
        {
            "database_id": database_id,
            "sql": sql,
            "schema": schema,
            "runAsync": False,
            "queryLimit": limit,
            "select_as_cta": False,
            "ctas_method": "TABLE",
            "tab": "check",
            "client_id": "",
            "sql_editor_id": "1",
            "templateParams": "",
            "tmp_table_name": "",
            "expand_data": True,
        },
    )
    if reply.get("status") != "success":
        raise CheckFailed(f"query {sql!r}: {json.dumps(reply)[:2000]}")
    return reply


def run_queries(superset, database_id, args):
    results = []
    for index, sql in enumerate(args.query):
        reply = run_query(superset, database_id, sql, args.schema, args.query_limit)
        rows = reply.get("data") or []
        columns = [column.get("column_name") for column in reply.get("columns") or []]
        step(f"query {sql!r}", f"{len(rows)} rows, columns {columns}, first {rows[:3]}")
        if index < len(args.expect_rows) and len(rows) != args.expect_rows[index]:
            raise CheckFailed(
                f"query {sql!r}: expected {args.expect_rows[index]} rows, got {len(rows)}"
            )
        results.append(rows)
    if args.rows_json:
        with open(args.rows_json, "w") as out:
            json.dump(results, out)


def wait_for_health(url, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"Superset at {url} did not answer /health within {seconds:.0f} s")
        time.sleep(0.5)


def main():
    args = parse_args()
    superset = Superset(args.url, args.timeout)
    try:
        if args.wait:
            started = time.monotonic()
            wait_for_health(args.url, args.wait)
            step("health", f"ok after {time.monotonic() - started:.1f} s")
        csrf = superset.login(args.username, args.password)
        step("login", f"ok as {args.username}, csrf token {'yes' if csrf else 'no'}")
        database_id = register_database(superset, args)
        check_catalog(superset, database_id, args)
        run_queries(superset, database_id, args)
    except CheckFailed as failure:
        print(f"[superset] FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    step("done", "all checks passed")


if __name__ == "__main__":
    main()
