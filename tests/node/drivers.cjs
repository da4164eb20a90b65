// node-postgres (the `pg` package) against fjord: a simple query across both catalogs, a
// parameterised query (extended protocol, parameter types left to the server), the types it
// parses, and an error's SQLSTATE. Prints one JSON document of what it read; the Rust test
// checks it against Postgres itself.
const { Client } = require("pg");

async function main() {
  const client = new Client({ connectionString: process.argv[2] });
  await client.connect();
  const result = {};

  const simple = await client.query(
    "SELECT count(*) AS n, min(weight_kg) AS weight, max(arrived_on) AS arrived, " +
      "(SELECT min(registered_at) FROM postgresql.public.visitors) AS registered " +
      "FROM postgresql.public.cats WHERE age > 3"
  );
  const row = simple.rows[0];
  result.count = row.n; // bigint arrives as text
  result.weight = row.weight; // numeric arrives as text
  result.arrived_is_date = row.arrived instanceof Date;
  result.registered_iso = row.registered instanceof Date ? row.registered.toISOString() : null;
  result.fields = simple.fields.map((field) => field.name);

  const prepared = await client.query({
    name: "likes",
    text:
      "SELECT count(*) AS n FROM iceberg.data_on_eks.cat_interactions_raw " +
      "WHERE interaction_type = $1 AND duration_seconds > $2",
    values: ["like", 0],
  });
  result.likes = prepared.rows[0].n;
  // The named statement again, with other values.
  const again = await client.query({ name: "likes", values: ["pet", 0] });
  result.pets = again.rows[0].n;

  try {
    await client.query("SELECT * FROM iceberg.data_on_eks.no_such_table");
    result.error_code = null;
  } catch (error) {
    result.error_code = error.code;
  }
  // The connection is still usable after the error.
  result.after_error = (await client.query("SELECT CAST(1 AS INT) AS one")).rows[0].one;

  await client.end();
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
