"""pgcli against fjord, through pgcli's own code: the connection it makes, every query behind
its completions (search path, schemas, tables and views with their columns, foreign keys, data
types, databases, functions), a query, and the backslash commands users type (`\\dt`, `\\d`,
`\\dn`, `\\l`). Prints one JSON document; the Rust test checks it."""

import json
import sys

from pgcli.completion_refresher import CompletionRefresher
from pgcli.pgcompleter import PGCompleter
from pgcli.pgexecute import PGExecute
from pgspecial.main import PGSpecial

url = sys.argv[1]
executor = PGExecute(dsn=url)
result = {
    "search_path": executor.search_path(),
    "schemata": executor.schemata(),
    "tables": sorted(list(executor.tables())),
    "views": sorted(list(executor.views())),
    "table_columns": len(list(executor.table_columns())),
    "foreignkeys": list(executor.foreignkeys()),
    "datatypes": len(list(executor.datatypes())),
    "databases": executor.databases(),
    "functions": len(list(executor.functions())),
}

# The refreshers pgcli runs in the background on connect fill its completer without error.
completer = PGCompleter()
for name, refresh in CompletionRefresher.refreshers.items():
    if name != "casing":  # reads a local file of preferred casings
        refresh(completer, executor)
result["completer_tables"] = sorted(completer.dbmetadata["tables"].get("public", {}).keys())

special = PGSpecial()


def run(statement):
    """The (headers, rows, status) of each result pgcli shows for `statement`."""
    shown = []
    for title, rows, headers, status, *_ in executor.run(statement, pgspecial=special):
        shown.append({"headers": list(headers or []), "rows": [list(map(str, row)) for row in (rows or [])],
                      "status": status})
    return shown


result["query"] = run("SELECT archetype, count(*) AS n FROM cats GROUP BY archetype ORDER BY archetype")
result["dt"] = run("\\dt")
result["d_cats"] = run("\\d cats")
result["dn"] = run("\\dn")
result["l"] = run("\\l")
print(json.dumps(result, default=str))
