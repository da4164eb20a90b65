"""Reads a table fjord wrote with PyIceberg, the reference Python implementation of Iceberg,
through the same SQL catalog: an independent check that the table is valid Iceberg and holds
what fjord says. Prints one JSON document; the Rust test compares it with fjord's answers.

usage: pyiceberg_check.py CATALOG_NAME CATALOG_DB WAREHOUSE_DIR SCHEMA.TABLE
"""

import json
import os
import sys
from urllib.parse import urlparse

import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

name, database, warehouse, table_name = sys.argv[1:5]
catalog = SqlCatalog(
    name,
    uri=f"sqlite:///{os.path.abspath(database)}",
    warehouse=f"file://{os.path.abspath(warehouse)}",
)
table = catalog.load_table(table_name)
rows = table.scan().to_arrow()
offsets = rows.select(["_kafka_partition", "_kafka_offset"]).to_pylist()
current = table.current_snapshot()
# The compression codecs of the data files' column chunks, as the Parquet footers say.
codecs = set()
tasks = list(table.scan().plan_files())
for task in tasks:
    metadata = pq.ParquetFile(urlparse(task.file.file_path).path).metadata
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            codecs.add(metadata.row_group(group).column(column).compression)
print(
    json.dumps(
        {
            "rows": rows.num_rows,
            "distinct_offsets": len({(o["_kafka_partition"], o["_kafka_offset"]) for o in offsets}),
            "columns": rows.schema.names,
            "partition_fields": [str(field.transform) for field in table.spec().fields],
            "snapshot_offsets": json.loads(current.summary.get("fjord.kafka.offsets") or "null"),
            "operation": current.summary.operation.value,
            "data_files": len(tasks),
            "snapshots": len(table.snapshots()),
            "codecs": sorted(codecs),
        }
    )
)
