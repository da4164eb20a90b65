//! Whole-plan pushdown to Postgres, proven by difference: generated queries run through fjord
//! (which sends aggregates, joins, DISTINCT and ORDER BY ... LIMIT to Postgres whole where it
//! can) and directly in Postgres must return the same rows.
//!
//! The generator is seeded: `FJORD_DIFF_SEED=<n>` picks another sequence and
//! `FJORD_DIFF_QUERIES=<n>` another count; a mismatch names the seed, the query and both
//! results.

use fjord_tests::{Fjord, Postgres, query_text};

/// Two related tables with NULLs in every nullable column, mixed-case and non-ASCII text,
/// LIKE wildcards in values, and duplicates to group on.
const TABLES: &str = r#"
CREATE TABLE owners (id int PRIMARY KEY, name text, city text, since date, credit bigint);
INSERT INTO owners
SELECT g,
       CASE WHEN g % 11 = 0 THEN NULL ELSE (ARRAY['ada', 'Bea', 'émile', 'Zoë', 'o''hara', 'x_y%'])[g % 6 + 1] || g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE (ARRAY['Oslo', 'bergen', 'Tromsø', 'Ålesund'])[g % 4 + 1] END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE date '2019-03-01' + g * 17 END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE (g * 7919) % 100000 - 20000 END
FROM generate_series(1, 60) AS g;

CREATE TABLE cats (id int PRIMARY KEY, name text, breed varchar(20), age int,
                   weight numeric(5,2), adopted bool, born date, seen timestamp, score float8,
                   owner_id int);
INSERT INTO cats
SELECT g,
       CASE WHEN g % 13 = 0 THEN NULL ELSE (ARRAY['Mochi', 'miso', 'Ærlig', 'Tofu', 'nori', 'Bao', 'a%b', ''])[g % 8 + 1] END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE (ARRAY['siamese', 'Maine Coon', 'tabby', 'Sphynx'])[g % 4 + 1] END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE g % 17 END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE ((g * 37) % 900) / 100.0 + 1 END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE g % 3 = 0 END,
       CASE WHEN g % 12 = 0 THEN NULL ELSE date '2012-01-01' + g * 23 END,
       CASE WHEN g % 14 = 0 THEN NULL ELSE timestamp '2025-06-01 08:00:00' + g * interval '97 minutes' END,
       CASE WHEN g % 15 = 0 THEN NULL ELSE ((g * 131) % 1000) / 8.0 END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g * 7) % 70 + 1 END
FROM generate_series(1, 240) AS g;

CREATE TABLE tags (id int PRIMARY KEY, cat_id int, tag uuid, meta jsonb, at timestamptz,
                   price numeric(8,2), label varchar(12));
INSERT INTO tags
SELECT g,
       CASE WHEN g % 9 = 0 THEN NULL ELSE (g * 13) % 250 + 1 END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE md5((g % 37)::text)::uuid END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE jsonb_build_object('k', g % 5, 'v', 'x' || (g % 3)) END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE timestamptz '2025-01-01 00:00:00+00' + g * interval '5 hours 7 minutes' END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE ((g * 71) % 10000) / 100.0 END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (ARRAY['red', 'Red', 'blue ', 'grön'])[g % 4 + 1] END
FROM generate_series(1, 400) AS g;
"#;

/// splitmix64: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A condition on the cats table under alias `c`.
fn cat_condition(rng: &mut Rng, depth: usize) -> String {
    if depth > 0 && rng.chance(35) {
        let left = cat_condition(rng, depth - 1);
        let right = cat_condition(rng, depth - 1);
        let joined = format!("({left} {} {right})", rng.pick(&["AND", "OR"]));
        return if rng.chance(15) {
            format!("NOT {joined}")
        } else {
            joined
        };
    }
    let n = rng.below(17);
    let m = rng.below(9);
    match rng.below(22) {
        0 => format!("c.age {} {n}", rng.pick(&["=", "<>", "<", "<=", ">", ">="])),
        1 => format!("c.age BETWEEN {m} AND {}", m + n),
        2 => format!("c.age IN ({m}, {n}, {})", m + 3),
        3 => format!(
            "c.name {} '{}'",
            rng.pick(&["=", "<>", "<", ">="]),
            rng.pick(&["Mochi", "miso", "Bao", "Ærlig", "", "n"])
        ),
        4 => format!(
            "c.name LIKE '{}'",
            rng.pick(&["M%", "%o%", "_ao", "a\\%b", "%", "Æ%"])
        ),
        5 => format!("c.name ILIKE '{}'", rng.pick(&["m%", "%O%", "bao"])),
        6 => format!(
            "c.breed IN ('{}', '{}')",
            rng.pick(&["siamese", "tabby"]),
            rng.pick(&["Sphynx", "Maine Coon", "x"])
        ),
        7 => format!(
            "c.{} IS {}NULL",
            rng.pick(&[
                "name", "breed", "age", "weight", "adopted", "born", "seen", "owner_id"
            ]),
            if rng.chance(50) { "NOT " } else { "" }
        ),
        8 => format!(
            "c.weight {} {}.{}",
            rng.pick(&["<", ">", "=", ">="]),
            m + 1,
            n % 10
        ),
        9 => format!(
            "c.adopted{}",
            rng.pick(&["", " = false", " IS NOT TRUE", " IS FALSE"])
        ),
        10 => "NOT c.adopted".to_string(),
        11 => format!(
            "c.born {} DATE '{}-0{}-1{}'",
            rng.pick(&["<", ">", ">="]),
            2012 + n % 14,
            m + 1,
            m
        ),
        12 => format!(
            "c.seen {} TIMESTAMP '2025-0{}-{}{} 1{}:30:00'",
            rng.pick(&["<", ">="]),
            6 + m % 4,
            m % 3,
            m + 1,
            m
        ),
        13 => format!("c.score {} {}.5", rng.pick(&["<", ">"]), n * 7),
        14 => format!("coalesce(c.age, {m}) > {n}"),
        15 => format!("length(c.name) {} {}", rng.pick(&["=", ">"]), m % 6),
        16 => format!("c.age % 3 = {}", m % 3),
        17 => format!("c.age * 2 + 1 > {n}"),
        18 => format!("CAST(c.age AS bigint) - {m} < {n}"),
        19 => format!(
            "(c.name || '-' || c.breed) LIKE '%{}%'",
            rng.pick(&["o-t", "i-S", "-"])
        ),
        20 => format!("c.born + INTERVAL '{n} days' > DATE '2016-01-01'"),
        _ => format!("CASE WHEN c.age > {m} THEN c.adopted ELSE c.weight > {n} END"),
    }
}

/// A condition on the owners table under alias `o`.
fn owner_condition(rng: &mut Rng) -> String {
    let n = rng.below(60);
    match rng.below(7) {
        0 => format!("o.id {} {n}", rng.pick(&["<", ">", "<>"])),
        1 => format!(
            "o.city {} '{}'",
            rng.pick(&["=", "<>", "<"]),
            rng.pick(&["Oslo", "bergen", "Tromsø", "Ålesund"])
        ),
        2 => format!("o.city IS {}NULL", if rng.chance(50) { "NOT " } else { "" }),
        3 => format!("o.credit > {}", n as i64 * 1000 - 20000),
        4 => format!("o.since < DATE '2020-0{}-01'", n % 9 + 1),
        5 => format!(
            "o.name LIKE '{}'",
            rng.pick(&["a%", "%1%", "x\\_y%", "%ë%"])
        ),
        _ => format!("o.name IS NOT NULL AND o.id % 4 = {}", n % 4),
    }
}

/// A condition on the tags table under alias `t`: uuid and jsonb (text in fjord), timestamptz,
/// varchar with trailing spaces.
fn tag_condition(rng: &mut Rng) -> String {
    let n = rng.below(37);
    match rng.below(8) {
        0 => "t.tag = 'e4da3b7f-bbce-2345-d777-2b0674a318d5'".to_string(),
        1 => format!(
            "t.tag {} '{}'",
            rng.pick(&["=", "<>", "<", ">="]),
            rng.pick(&[
                "e4da3b7f-bbce-2345-d777-2b0674a318d5",
                "8f14e45f-ceea-167a-5a36-dedd4bea2543"
            ])
        ),
        2 => format!("CAST(t.meta AS text) LIKE '%\"v\": \"x{}\"%'", n % 3),
        3 => format!(
            "t.at {} TIMESTAMPTZ '2025-0{}-1{} 12:00:00+00'",
            rng.pick(&["<", ">="]),
            n % 9 + 1,
            n % 10
        ),
        4 => format!("t.price {} {}.{}", rng.pick(&["<", ">", "="]), n, n % 10),
        5 => format!(
            "t.label {} '{}'",
            rng.pick(&["=", "<>", "<"]),
            rng.pick(&["red", "Red", "blue ", "blue", "grön"])
        ),
        6 => format!(
            "t.{} IS {}NULL",
            rng.pick(&["tag", "meta", "at", "price", "label", "cat_id"]),
            if rng.chance(50) { "NOT " } else { "" }
        ),
        _ => format!(
            "t.cat_id IN (SELECT c.id FROM public.cats c WHERE c.age > {})",
            n % 17
        ),
    }
}

/// One query; `true` when its rows come in a defined order.
fn generate(rng: &mut Rng) -> (String, bool) {
    let c = cat_condition(rng, 2);
    let o = owner_condition(rng);
    let group = rng.pick(&[
        "c.breed",
        "c.adopted",
        "c.age",
        "c.owner_id",
        "c.born",
        "c.breed, c.adopted",
        "c.name",
    ]);
    let n = rng.below(12) + 1;
    let t = tag_condition(rng);
    match rng.below(19) {
        0 => (
            format!("SELECT c.id, c.name, c.age, c.weight, c.born FROM public.cats c WHERE {c}"),
            false,
        ),
        1 => (
            format!(
                "SELECT {group}, count(*), count(c.age), sum(c.age), min(c.name), max(c.weight), \
                 count(DISTINCT c.breed), min(c.seen), max(c.born) FROM public.cats c WHERE {c} GROUP BY {group}"
            ),
            false,
        ),
        2 => (
            format!(
                "SELECT {group}, count(*), sum(c.weight) FROM public.cats c WHERE {c} GROUP BY {group} \
                 HAVING {}",
                rng.pick(&[
                    "count(*) > 2",
                    "sum(c.age) < 60",
                    "avg(c.age) > 6",
                    "max(c.name) >= 'n'",
                    "count(DISTINCT c.owner_id) > 1"
                ])
            ),
            false,
        ),
        3 => (
            format!(
                "SELECT count(*), sum(c.age), min(c.born), max(c.name), sum(c.owner_id) FROM public.cats c WHERE {c}"
            ),
            false,
        ),
        4 => {
            let join = rng.pick(&["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]);
            (
                format!(
                    "SELECT c.id, c.name, o.id, o.name, o.city FROM public.cats c {join} public.owners o \
                     ON c.owner_id = o.id AND {o} WHERE {}",
                    if join == "JOIN" || join == "LEFT JOIN" {
                        c
                    } else {
                        format!("({c}) OR c.id IS NULL")
                    }
                ),
                false,
            )
        }
        5 => (
            format!(
                "SELECT o.city, count(*), count(c.id), sum(c.age), max(c.weight), min(o.since) \
                 FROM public.owners o LEFT JOIN public.cats c ON c.owner_id = o.id AND {c} \
                 WHERE {o} GROUP BY o.city"
            ),
            false,
        ),
        6 => (
            format!(
                "SELECT c.id, c.name FROM public.cats c WHERE {}EXISTS \
                 (SELECT 1 FROM public.owners o WHERE o.id = c.owner_id AND {o}) AND {c}",
                if rng.chance(50) { "NOT " } else { "" }
            ),
            false,
        ),
        7 => (
            format!(
                "SELECT c.id, c.age FROM public.cats c WHERE c.owner_id {}IN \
                 (SELECT o.id FROM public.owners o WHERE {o}) AND {c}",
                if rng.chance(50) { "NOT " } else { "" }
            ),
            false,
        ),
        8 => (
            format!("SELECT DISTINCT {group} FROM public.cats c WHERE {c}"),
            false,
        ),
        9 => {
            let key = rng.pick(&[
                "c.age",
                "c.name",
                "c.weight",
                "c.born",
                "c.seen",
                "c.adopted",
                "c.breed",
            ]);
            let direction = rng.pick(&["ASC", "DESC"]);
            let nulls = rng.pick(&["", " NULLS FIRST", " NULLS LAST"]);
            let offset = if rng.chance(30) {
                format!(" OFFSET {}", rng.below(5))
            } else {
                String::new()
            };
            (
                format!(
                    "SELECT c.id, c.name, c.age, c.weight FROM public.cats c WHERE {c} \
                     ORDER BY {key} {direction}{nulls}, c.id LIMIT {n}{offset}"
                ),
                true,
            )
        }
        10 => (
            format!(
                "SELECT {group}, count(*) AS n FROM public.cats c JOIN public.owners o ON c.owner_id = o.id \
                 WHERE {o} AND {c} GROUP BY {group} ORDER BY n DESC, {group} LIMIT {n}"
            ),
            true,
        ),
        11 => (
            format!(
                "SELECT count(*), count(DISTINCT t.owner_id) FROM (SELECT DISTINCT c.owner_id, c.breed \
                 FROM public.cats c WHERE {c}) t"
            ),
            false,
        ),
        12 => (
            format!(
                "SELECT c.breed, o.city, count(*) FROM public.cats c JOIN public.owners o ON c.owner_id = o.id \
                 JOIN public.cats c2 ON c2.owner_id = o.id AND c2.id <> c.id WHERE {c} GROUP BY c.breed, o.city"
            ),
            false,
        ),
        13 => (
            format!(
                "SELECT CASE WHEN c.age > {n} THEN 'old' WHEN c.age IS NULL THEN 'unknown' ELSE 'young' END AS k, \
                 count(*), sum(coalesce(c.age, 0) * 2 - 1), max(nullif(c.breed, 'tabby')), \
                 min(char_length(c.name)), sum(abs(c.age - 8)) FROM public.cats c WHERE {c} GROUP BY 1"
            ),
            false,
        ),
        14 => (
            format!(
                "SELECT c.id, c.age FROM public.cats c WHERE {c} AND c.age > \
                 (SELECT min(c2.age) + {} FROM public.cats c2 WHERE c2.breed = c.breed)",
                n % 6
            ),
            false,
        ),
        15 => (
            format!(
                "SELECT o.id, o.name FROM public.owners o LEFT JOIN public.cats c \
                 ON c.owner_id = o.id AND {c} WHERE c.id IS NULL AND {o}"
            ),
            false,
        ),
        16 => (
            format!(
                "SELECT t.tag, count(*), max(t.at), min(CAST(t.meta AS text)), sum(t.price), max(t.label) FROM public.tags t \
                 WHERE {t} GROUP BY t.tag"
            ),
            false,
        ),
        17 => (
            format!(
                "SELECT c.name, t.label, t.price, t.at FROM public.tags t JOIN public.cats c ON c.id = t.cat_id \
                 WHERE {t} AND {c} ORDER BY t.at DESC NULLS LAST, t.id LIMIT {n}"
            ),
            true,
        ),
        _ => (
            format!(
                "SELECT 'cats', count(*) FROM public.cats c WHERE {c} \
                 UNION ALL SELECT o.city, count(*) FROM public.owners o WHERE {o} GROUP BY o.city"
            ),
            false,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_match_postgres() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("FJORD_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261203);
    let count: usize = std::env::var("FJORD_DIFF_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", TABLES)?;
    postgres.psql_admin("workshop", "ANALYZE")?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect_to("postgresql").await?;
    let direct = postgres.connect("workshop").await?;
    direct.batch_execute("SET TimeZone = 'UTC'").await?;

    let mut rng = Rng(seed);
    let mut pushed = 0;
    for index in 0..count {
        let (sql, ordered) = generate(&mut rng);
        let plan = query_text(&client, &format!("EXPLAIN {sql}"))
            .await
            .map_err(|e| anyhow::anyhow!("seed {seed}, query {index}: EXPLAIN {sql}: {e:?}"))?
            .concat()
            .join("\n");
        if plan.contains("PostgresQuery") {
            pushed += 1;
        }
        let mut expected = query_text(&direct, &sql)
            .await
            .map_err(|e| anyhow::anyhow!("seed {seed}, query {index} in Postgres: {sql}: {e:?}"))?;
        let mut actual = query_text(&client, &sql)
            .await
            .map_err(|e| anyhow::anyhow!("seed {seed}, query {index} in fjord: {sql}: {e:?}"))?;
        if !ordered {
            expected.sort();
            actual.sort();
        }
        assert!(
            actual == expected,
            "seed {seed}, query {index}: {sql}\nplan:\n{plan}\nfjord ({} rows): {actual:?}\npostgres ({} rows): {expected:?}",
            actual.len(),
            expected.len()
        );
    }
    // The comparison is only worth something if most shapes really ran in Postgres.
    assert!(
        pushed * 2 > count,
        "only {pushed} of {count} generated queries were pushed to Postgres"
    );
    eprintln!("seed {seed}: {count} queries matched Postgres, {pushed} pushed whole");
    fjord.stop().await
}

type Value = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// A comparison of a cats column with parameter `$index`, and a way to draw its values
/// (NULL among them).
fn parameter_condition(rng: &mut Rng, index: usize) -> (String, fn(&mut Rng) -> Value) {
    fn age(rng: &mut Rng) -> Value {
        Box::new((!rng.chance(10)).then(|| rng.below(18) as i32))
    }
    fn name(rng: &mut Rng) -> Value {
        let names = [
            "Mochi", "miso", "Bao", "Ærlig", "", "n", "a%b", "o'x", "Tofu",
        ];
        Box::new((!rng.chance(10)).then(|| rng.pick(&names).to_string()))
    }
    fn breed(rng: &mut Rng) -> Value {
        let breeds = ["siamese", "tabby", "Sphynx", "Maine Coon", "x"];
        Box::new((!rng.chance(10)).then(|| rng.pick(&breeds).to_string()))
    }
    fn born(rng: &mut Rng) -> Value {
        let day = chrono::NaiveDate::from_ymd_opt(2012, 1, 1).unwrap()
            + chrono::Days::new(rng.below(5500) as u64);
        Box::new((!rng.chance(10)).then_some(day))
    }
    fn seen(rng: &mut Rng) -> Value {
        let at = chrono::NaiveDate::from_ymd_opt(2025, 6, 1)
            .unwrap()
            .and_hms_opt(8, 0, 0)
            .unwrap()
            + chrono::Duration::minutes(rng.below(24_000) as i64);
        Box::new((!rng.chance(10)).then_some(at))
    }
    fn adopted(rng: &mut Rng) -> Value {
        Box::new((!rng.chance(10)).then(|| rng.chance(50)))
    }
    fn id(rng: &mut Rng) -> Value {
        Box::new((!rng.chance(5)).then(|| rng.below(260) as i32))
    }
    let op = rng.pick(&["=", "<>", "<", "<=", ">", ">="]);
    let (column, draw): (&str, fn(&mut Rng) -> Value) = match rng.below(8) {
        0 => ("age", age),
        1 => ("name", name),
        2 => ("breed", breed),
        3 => ("born", born),
        4 => ("seen", seen),
        5 => ("adopted", adopted),
        6 => ("owner_id", id),
        _ => ("id", id),
    };
    (format!("c.{column} {op} ${index}"), draw)
}

/// Prepared statements comparing columns with parameters run the plan they keep from their
/// second execution on (see the engine's `kept_plans`), with each execution's values written
/// into the statement sent to Postgres: generated statements, each run with several draws of
/// values (NULL among them), give Postgres's own rows every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_prepared_statements_match_postgres_for_every_value() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("FJORD_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261204);
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", TABLES)?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    let direct = postgres.connect("workshop").await?;
    let mut rng = Rng(seed);
    let mut executions = 0;
    for index in 0..120 {
        let (first, draw_first) = parameter_condition(&mut rng, 1);
        let (condition, draws) = if rng.chance(50) {
            let (second, draw_second) = parameter_condition(&mut rng, 2);
            let joined = format!("({first} {} {second})", rng.pick(&["AND", "OR"]));
            (joined, vec![draw_first, draw_second])
        } else {
            (first, vec![draw_first])
        };
        let sql = |table: &str| {
            format!("SELECT c.id, c.name, c.born FROM {table} c WHERE {condition} ORDER BY c.id")
        };
        let ours = client.prepare(&sql("postgresql.public.cats")).await?;
        let theirs = direct.prepare(&sql("cats")).await?;
        for round in 0..4 {
            let values: Vec<Value> = draws.iter().map(|draw| draw(&mut rng)).collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                .iter()
                .map(|value| value.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let text = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
                rows.iter()
                    .map(|row| {
                        let id: i32 = row.get(0);
                        let name: Option<String> = row.get(1);
                        let born: Option<chrono::NaiveDate> = row.get(2);
                        format!("{id}|{name:?}|{born:?}")
                    })
                    .collect()
            };
            let expected = text(direct.query(&theirs, &params).await.map_err(|e| {
                anyhow::anyhow!(
                    "seed {seed}, statement {index} in Postgres: {}: {e:?}",
                    sql("cats")
                )
            })?);
            let actual = text(client.query(&ours, &params).await.map_err(|e| {
                anyhow::anyhow!(
                    "seed {seed}, statement {index} in fjord: {}: {e:?}",
                    sql("cats")
                )
            })?);
            assert_eq!(
                actual,
                expected,
                "seed {seed}, statement {index}, execution {round}: {} with {values:?}",
                sql("cats")
            );
            executions += 1;
        }
    }
    eprintln!("seed {seed}: {executions} executions of prepared statements matched Postgres");
    fjord.stop().await
}

/// `EXPLAIN` shows the statement Postgres runs; what cannot mean the same stays in DataFusion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_sql_sent_to_postgres() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin("workshop", TABLES)?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect_to("postgresql").await?;
    let explain = |sql: &'static str| {
        let client = &client;
        async move {
            anyhow::Ok(
                query_text(client, &format!("EXPLAIN {sql}"))
                    .await?
                    .concat()
                    .join("\n"),
            )
        }
    };

    let plan =
        explain("SELECT breed, count(*), max(name) FROM public.cats WHERE age > 3 GROUP BY breed")
            .await?;
    assert!(plan.contains("PostgresQuery: catalog=postgresql"), "{plan}");
    assert!(plan.contains("GROUP BY"), "{plan}");
    assert!(
        plan.contains(r#"max((s1.c0 COLLATE "C"))"#),
        "text is compared by bytes:\n{plan}"
    );
    assert!(!plan.contains("AggregateExec"), "{plan}");

    let plan = explain(
        "SELECT o.city, count(*) FROM public.cats c JOIN public.owners o ON c.owner_id = o.id \
         GROUP BY o.city",
    )
    .await?;
    assert!(
        plan.contains(" JOIN ") && plan.contains("GROUP BY"),
        "{plan}"
    );
    assert!(
        !plan.contains("HashJoinExec"),
        "the join runs in Postgres:\n{plan}"
    );

    let plan = explain("SELECT id, name FROM public.cats ORDER BY name DESC LIMIT 3").await?;
    assert!(
        plan.contains(r#"ORDER BY (s1.c1 COLLATE "C") DESC NULLS FIRST LIMIT 3"#),
        "{plan}"
    );

    // md5 is not on the list of functions known to match: the filter and the aggregate above
    // it stay in DataFusion, and the table is read as a plain scan.
    let plan = explain("SELECT count(*) FROM public.cats WHERE md5(name) > 'a'").await?;
    assert!(!plan.contains("PostgresQuery"), "{plan}");
    assert!(plan.contains("AggregateExec"), "{plan}");
    fjord.stop().await
}

/// The `output_rows` figure of the Postgres scan in an EXPLAIN ANALYZE: rows that crossed the
/// wire from Postgres.
fn postgres_rows(plan: &str) -> Option<u64> {
    let line = plan
        .lines()
        .find(|line| line.contains("PostgresScanExec"))?;
    let (_, after) = line.split_once("output_rows=")?;
    // Large figures are written `50.00 K`.
    let figure = after.split([',', ']']).next()?.trim();
    let (number, scale) = match figure.split_once(' ') {
        Some((number, "K")) => (number, 1_000.0),
        Some((number, "M")) => (number, 1_000_000.0),
        _ => (figure, 1.0),
    };
    Some((number.parse::<f64>().ok()? * scale).round() as u64)
}

/// A join of a few lake rows with a large Postgres table reads only the matching Postgres
/// rows: the hash join's keys (an IN list, or their range) reach Postgres as a condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_lake_side_filters_the_postgres_side_of_a_join() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE visits (id int PRIMARY KEY, cat uuid NOT NULL, minutes int); \
         INSERT INTO visits SELECT g, md5(g::text)::uuid, g % 90 FROM generate_series(1, 50000) g; \
         CREATE INDEX ON visits (cat); ANALYZE visits",
    )?;
    let direct = postgres.connect("workshop").await?;
    let uuids: Vec<String> = direct
        .query(
            "SELECT cat::text FROM visits WHERE id IN (7, 70, 700) ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA iceberg.lake; \
             CREATE TABLE iceberg.lake.picks AS SELECT CAST(column1 AS INT) AS id, column2 AS cat \
             FROM (VALUES (7, '{}'), (70, '{}'), (700, '{}'), (7000, 'not-a-visit'), \
                          (70000, 'nor-this')) AS t",
            uuids[0], uuids[1], uuids[2]
        ))
        .await?;

    let explain_rows = |sql: String| {
        let client = &client;
        async move {
            let plan = query_text(client, &format!("EXPLAIN ANALYZE {sql}"))
                .await?
                .concat()
                .join("\n");
            let rows = postgres_rows(&plan)
                .ok_or_else(|| anyhow::anyhow!("no Postgres scan with rows in:\n{plan}"))?;
            anyhow::Ok((plan, rows))
        }
    };
    for (key, expected) in [("id", ["4", "217"]), ("cat", ["3", "147"])] {
        let sql = format!(
            "SELECT count(*), sum(v.minutes) FROM iceberg.lake.picks p \
             JOIN postgresql.public.visits v ON v.{key} = p.{key}"
        );
        assert_eq!(
            query_text(&client, &sql).await?,
            vec![expected.to_vec()],
            "{sql}"
        );
        // Several times: the filter is set while the join's partitions start probing.
        for _ in 0..8 {
            let (plan, rows) = explain_rows(sql.clone()).await?;
            assert!(plan.contains("runtime_filters=["), "{plan}");
            assert!(
                plan.contains("AS runtime_filtered WHERE") && plan.contains(" IN ("),
                "EXPLAIN ANALYZE shows the statement sent:\n{plan}"
            );
            assert!(
                rows <= 5,
                "joining on {key}, only the matching rows come from Postgres, not {rows}:\n{plan}"
            );
        }

        // Without run-time filters the whole table crosses, and the answer is the same.
        client
            .batch_execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false")
            .await?;
        assert_eq!(query_text(&client, &sql).await?, vec![expected.to_vec()]);
        let (plan, rows) = explain_rows(sql).await?;
        assert_eq!(rows, 50000, "{plan}");
        client
            .batch_execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = true")
            .await?;
    }
    fjord.stop().await
}

/// Values fjord reads as NULL (NaN numerics, infinite numerics and timestamps) behave as NULL in
/// filters and aggregates that Postgres runs, as they do in DataFusion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_as_null_stay_null_in_postgres() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE specials (id int, n numeric(6,2), u numeric, ts timestamptz); \
         INSERT INTO specials VALUES \
           (1, 1.50, 2.5, '2026-01-01 00:00:00+00'), (2, 'NaN', 'NaN', 'infinity'), \
           (3, NULL, 'Infinity', '-infinity'), (4, 3.00, -1, '2026-06-01 00:00:00+00'), \
           (5, 2.25, '-Infinity', NULL); \
         CREATE VIEW specials_as_fjord AS SELECT id, NULLIF(n, 'NaN') AS n, \
           CASE WHEN u::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE u END AS u, \
           NULLIF(NULLIF(ts, 'infinity'), '-infinity') AS ts FROM specials",
    )?;
    let fjord = Fjord::start(&postgres.catalog_toml("postgresql")).await?;
    let client = fjord.connect_to("postgresql").await?;
    let direct = postgres.connect("workshop").await?;
    direct.batch_execute("SET TimeZone = 'UTC'").await?;
    for condition in [
        "n > 1",
        "NOT (n > 2)",
        "n IS NULL",
        "n IS NOT NULL",
        "n IN (1.50, 3.00)",
        "NOT (n BETWEEN 1 AND 2)",
        "u <> 2.5",
        "NOT (u < 0)",
        "u IS NULL",
        "ts > TIMESTAMPTZ '2025-01-01 00:00:00+00'",
        "NOT (ts < TIMESTAMPTZ '2026-03-01 00:00:00+00')",
        "ts IS NULL",
        "ts IS NOT NULL",
    ] {
        for template in [
            "SELECT id FROM public.{t} WHERE {c} ORDER BY id",
            "SELECT count(*), count(n), max(n), min(ts), max(ts), count(u), sum(n) FROM public.{t} WHERE {c} OR id > 0",
            "SELECT n, count(*) FROM public.{t} WHERE {c} OR id = 5 GROUP BY n ORDER BY n NULLS FIRST",
        ] {
            let fjord_sql = template
                .replace("{t}", "specials")
                .replace("{c}", condition);
            let postgres_sql = template
                .replace("{t}", "specials_as_fjord")
                .replace("{c}", condition);
            assert_eq!(
                query_text(&client, &fjord_sql).await?,
                query_text(&direct, &postgres_sql).await?,
                "{fjord_sql}"
            );
        }
    }
    fjord.stop().await
}
