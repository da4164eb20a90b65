"""psycopg 3 in binary mode and asyncpg with prepared statements, against fjord. Prints one JSON
document of what they read; the Rust test checks it."""

import asyncio
import json
import sys

import asyncpg
import psycopg

url = sys.argv[1]
result = {}
with psycopg.connect(url, autocommit=True) as connection:
    cursor = connection.cursor(binary=True)
    cursor.execute(
        "SELECT count(*), min(weight_kg), max(arrived_on), min(registered_at) "
        "FROM postgresql.public.cats, (SELECT min(registered_at) AS registered_at FROM postgresql.public.visitors) v "
        "WHERE age > %s",
        (3,),
    )
    count, weight, arrived, registered = cursor.fetchone()
    result["psycopg"] = {
        "count": count,
        "weight": str(weight),
        "arrived_type": type(arrived).__name__,
        "registered_tz": str(registered.tzinfo),
    }


async def with_asyncpg():
    connection = await asyncpg.connect(url)
    statement = await connection.prepare(
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw WHERE interaction_type = $1 AND duration_seconds > $2"
    )
    likes = await statement.fetchval("like", 0)
    row = await connection.fetchrow("SELECT min(weight_kg) AS w, max(arrived_on) AS d FROM postgresql.public.cats")
    await connection.close()
    return {"likes": likes, "weight": str(row["w"]), "date_type": type(row["d"]).__name__}


result["asyncpg"] = asyncio.run(with_asyncpg())
print(json.dumps(result))
