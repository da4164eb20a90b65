"""PostgreSQL's JDBC driver (pgJDBC, what DBeaver, DataGrip and Java BI tools use) against fjord,
run in a JVM through JPype: the DatabaseMetaData calls a SQL IDE makes to build its navigator
(catalogs, schemas, table types, tables, columns, keys, indexes, type info, functions), then a
prepared statement with a parameter read with a fetch size, as IDEs page through results.
Prints one JSON document; the Rust test checks it.

usage: jdbc_check.py JDBC_URL DRIVER_JAR"""

import json
import sys

import jpype
import jpype.imports  # noqa: F401  (lets `from java.sql import ...` work)

url, jar = sys.argv[1:3]
# pgJDBC sends the JVM's zone as the TimeZone startup parameter: the session must take it.
jpype.startJVM("-Duser.timezone=Asia/Kolkata", classpath=[jar])
from java.sql import DriverManager  # noqa: E402


def rows(result_set, columns):
    out = []
    while result_set.next():
        out.append({column: None if result_set.getString(column) is None else str(result_set.getString(column))
                    for column in columns})
    result_set.close()
    return out


connection = DriverManager.getConnection(url)
zone_query = connection.createStatement().executeQuery(
    "SELECT current_setting('TimeZone'), TIMESTAMPTZ '2026-01-01 12:00:00+00'"
)
zone_query.next()
session_zone = [str(zone_query.getString(1)), str(zone_query.getString(2))]
zone_query.close()
meta = connection.getMetaData()
result = {
    "product": str(meta.getDatabaseProductName()),
    "product_version": str(meta.getDatabaseProductVersion()),
    "catalogs": rows(meta.getCatalogs(), ["TABLE_CAT"]),
    "schemas": rows(meta.getSchemas(), ["TABLE_SCHEM", "TABLE_CATALOG"]),
    "table_types": rows(meta.getTableTypes(), ["TABLE_TYPE"]),
    "tables": rows(meta.getTables(None, "public", "%", None), ["TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE"]),
    "columns": rows(
        meta.getColumns(None, "public", "cats", "%"),
        ["COLUMN_NAME", "TYPE_NAME", "DATA_TYPE", "COLUMN_SIZE", "DECIMAL_DIGITS", "IS_NULLABLE"],
    ),
    "primary_keys": rows(meta.getPrimaryKeys(None, "public", "cats"), ["COLUMN_NAME"]),
    "imported_keys": rows(meta.getImportedKeys(None, "public", "cats"), ["FKCOLUMN_NAME"]),
    "exported_keys": rows(meta.getExportedKeys(None, "public", "cats"), ["FKCOLUMN_NAME"]),
    "indexes": rows(meta.getIndexInfo(None, "public", "cats", False, True), ["INDEX_NAME"]),
    "type_info": len(rows(meta.getTypeInfo(), ["TYPE_NAME"])),
    "functions": len(rows(meta.getFunctions(None, "public", "%"), ["FUNCTION_NAME"])),
    "procedures": len(rows(meta.getProcedures(None, "public", "%"), ["PROCEDURE_NAME"])),
}

# A prepared statement read with a fetch size: pgJDBC then fetches through a row-limited portal,
# which needs a transaction (autocommit off).
connection.setAutoCommit(False)
statement = connection.prepareStatement(
    "SELECT name, weight_kg, cat_id, traits, arrived_on FROM cats WHERE age > ? ORDER BY name"
)
statement.setInt(1, 3)
statement.setFetchSize(25)
result_set = statement.executeQuery()
described = result_set.getMetaData()
result["result_types"] = [str(described.getColumnTypeName(index)) for index in range(1, described.getColumnCount() + 1)]
names = []
while result_set.next():
    names.append(str(result_set.getString("name")))
result["names"] = names
result["session_zone"] = session_zone
connection.commit()
connection.close()
print(json.dumps(result))
