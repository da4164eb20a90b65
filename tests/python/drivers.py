"""psycopg 3 in binary mode and asyncpg with prepared statements, and the server-side cursors of
psycopg2, psycopg 3 and SQLAlchemy, against fjord. Prints one JSON document of what they read;
the Rust test checks it."""

import asyncio
import json
import sys

import asyncpg
import psycopg
import psycopg2
import sqlalchemy

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
    # uuid and jsonb arrive as those types, and a uuid goes back as a parameter.
    cursor.execute("SELECT cat_id, traits, name FROM postgresql.public.cats ORDER BY name LIMIT 1")
    cat_id, traits, name = cursor.fetchone()
    cursor.execute("SELECT name FROM postgresql.public.cats WHERE cat_id = %s", (cat_id,))
    result["psycopg"].update(
        {
            "uuid_type": type(cat_id).__name__,
            "jsonb_type": type(traits).__name__,
            "cat_id": str(cat_id),
            "found_by_uuid": cursor.fetchone()[0] == name,
        }
    )


async def with_asyncpg():
    connection = await asyncpg.connect(url)
    statement = await connection.prepare(
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw WHERE interaction_type = $1 AND duration_seconds > $2"
    )
    likes = await statement.fetchval("like", 0)
    row = await connection.fetchrow("SELECT min(weight_kg) AS w, max(arrived_on) AS d FROM postgresql.public.cats")
    cat = await connection.fetchrow("SELECT cat_id, traits FROM postgresql.public.cats ORDER BY name LIMIT 1")
    await connection.close()
    return {
        "likes": likes,
        "weight": str(row["w"]),
        "date_type": type(row["d"]).__name__,
        "uuid_type": type(cat["cat_id"]).__name__,
        "cat_id": str(cat["cat_id"]),
        "traits": json.loads(cat["traits"]),
    }


result["asyncpg"] = asyncio.run(with_asyncpg())

# Server-side cursors read a large result a piece at a time (DECLARE, then FETCH FORWARD n).
INTERACTIONS = "SELECT event_id, duration_seconds FROM iceberg.data_on_eks.cat_interactions_raw"

# psycopg2's named cursor: DECLARE ... WITHOUT HOLD in the transaction psycopg2 opens.
connection = psycopg2.connect(url)
with connection.cursor(name="interactions") as cursor:
    cursor.itersize = 700
    cursor.execute(INTERACTIONS + " WHERE interaction_type = %s", ("like",))
    ids = [row[0] for row in cursor]
connection.commit()
connection.close()
result["psycopg2_named"] = {"rows": len(ids), "distinct": len(set(ids))}

# psycopg 3's ServerCursor, binary, with a parameter bound through the extended protocol;
# `scroll` sends MOVE.
with psycopg.connect(url) as connection:
    with connection.cursor(name="binary_interactions", binary=True) as cursor:
        cursor.execute(INTERACTIONS + " WHERE interaction_type = %s ORDER BY event_id", ("like",))
        first = cursor.fetchmany(10)
        cursor.scroll(5)
        rest = cursor.fetchall()
        description = [column.name for column in cursor.description]
    with connection.cursor(name="held", withhold=True) as cursor:
        cursor.execute("SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw")
        connection.commit()
        held = cursor.fetchone()[0]
result["psycopg_server"] = {
    "rows": len(first) + 5 + len(rest),
    "first_duration_type": type(first[0][1]).__name__,
    "columns": description,
    "held_count": held,
}

# SQLAlchemy's stream_results, which uses psycopg2's named cursors.
engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
with engine.connect() as connection:
    streamed = connection.execution_options(stream_results=True, max_row_buffer=500).execute(
        sqlalchemy.text(INTERACTIONS)
    )
    result["sqlalchemy_stream"] = {"rows": sum(1 for _ in streamed)}
engine.dispose()

print(json.dumps(result))
