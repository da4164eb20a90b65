//! The acceptance scenario: the manager's dashboard query joins lake history with live Postgres
//! profiles, run verbatim from psql, and must match the same join computed inside Postgres.

use fjord_config::{DemoConfig, PostgresCatalogConfig};
use fjord_tests::{Fjord, Postgres, TEST_DEMO, plan_line, plan_metric, plan_text, query_text};

pub(crate) const SCENARIO_QUERY: &str = "SELECT p.archetype, COUNT(*) AS like_count
FROM iceberg.data_on_eks.cat_interactions_raw AS i
JOIN postgresql.public.cats AS p ON i.cat_id = p.cat_id
WHERE i.interaction_type = 'like'
GROUP BY 1
ORDER BY 2 DESC;";

fn demo_config() -> DemoConfig {
    DemoConfig {
        interactions: 20000,
        cats: 300,
        visitors: 60,
        days: 30,
        seed: 42,
        ..DemoConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_query_matches_the_same_join_computed_in_postgres() -> anyhow::Result<()> {
    let postgres = Postgres::start()?;
    let fjord = Fjord::start(&format!(
        "{}\n{TEST_DEMO}",
        postgres.catalog_toml("postgresql")
    ))
    .await?;

    // psql, the way a data engineer connects.
    let (ok, catalogs, stderr) = fjord.psql(&["-At", "-c", "SHOW CATALOGS"]).await?;
    assert!(ok, "{stderr}");
    assert_eq!(
        catalogs.lines().collect::<Vec<_>>(),
        vec!["iceberg", "postgresql"]
    );

    let (ok, output, stderr) = fjord
        .psql(&["-At", "-F", "|", "-c", SCENARIO_QUERY])
        .await?;
    assert!(ok, "{stderr}");
    let from_fjord: Vec<(String, i64)> = output
        .lines()
        .map(|line| {
            let (archetype, count) = line.split_once('|').expect("two columns");
            (archetype.to_string(), count.parse().expect("a count"))
        })
        .collect();
    assert!(!from_fjord.is_empty());

    // The independent check: the lake rows as the demo generated them, loaded into Postgres
    // and joined there.
    let world = fjord_demo::generate_world(&demo_config());
    let check_config: PostgresCatalogConfig = toml_catalog(&postgres);
    let loader = fjord_postgres::PostgresCatalog::new("check", &check_config, 8192);
    let (schema, batches) = world.interactions.clone();
    let loaded = loader
        .create_table_from_batches("public", "lake_interactions", &schema, None, &batches)
        .await?;
    assert_eq!(loaded, 20000);
    let direct = postgres.connect("workshop").await?;
    let expected: Vec<(String, i64)> = direct
        .query(
            "SELECT p.archetype, COUNT(*) FROM lake_interactions AS i JOIN cats AS p ON i.cat_id::uuid = p.cat_id \
             WHERE i.interaction_type = 'like' GROUP BY 1 ORDER BY 2 DESC, 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut sorted_fjord = from_fjord.clone();
    sorted_fjord.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(sorted_fjord, expected);
    // ORDER BY 2 DESC holds in fjord's own output.
    assert!(from_fjord.windows(2).all(|pair| pair[0].1 >= pair[1].1));

    // The same through tokio-postgres, in the extended protocol with binary results.
    let client = fjord.connect().await?;
    let rows = client
        .query(SCENARIO_QUERY.trim_end_matches(';'), &[])
        .await?;
    assert_eq!(rows.len(), expected.len());
    let total: i64 = rows.iter().map(|row| row.get::<_, i64>(1)).sum();
    assert_eq!(total, expected.iter().map(|(_, count)| count).sum::<i64>());
    fjord.stop().await
}

fn toml_catalog(postgres: &Postgres) -> PostgresCatalogConfig {
    let text = format!(
        "[server]\ndefault_catalog = \"check\"\n{}",
        postgres.catalog_toml("check")
    );
    let config =
        fjord_config::Config::parse(&text, "check.toml", std::path::Path::new(".")).expect("valid");
    match config.catalogs.get("check") {
        Some(fjord_config::CatalogConfig::Postgres(pg)) => pg.clone(),
        _ => unreachable!("a postgres catalog"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_of_the_lake_run_in_several_partitions() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute("SET datafusion.execution.target_partitions = 4")
        .await?;
    let plan = query_text(
        &client,
        "EXPLAIN SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    let physical = plan
        .iter()
        .find(|row| row[0] == "physical_plan")
        .expect("a physical plan")[1]
        .clone();
    assert!(physical.contains("IcebergScanExec"), "{physical}");
    assert!(
        physical.contains("partitions=4"),
        "the scan should use 4 partitions:\n{physical}"
    );
    let count = query_text(
        &client,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    assert_eq!(count[0][0], "20000");
    fjord.stop().await
}

/// The planner sees each column's bounds and null count from the manifests, which is what lets
/// it estimate filters and joins (and so choose join order and build sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_scans_give_the_planner_column_bounds_from_the_manifests() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute("SET datafusion.explain.show_statistics = true")
        .await?;
    let plan = query_text(
        &client,
        "EXPLAIN SELECT duration_seconds FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    let physical = &plan
        .iter()
        .find(|row| row[0] == "physical_plan")
        .expect("a physical plan")[1];
    let scan = physical
        .lines()
        .find(|line| line.contains("IcebergScanExec"))
        .expect("a lake scan");
    let actual = query_text(
        &client,
        "SELECT min(duration_seconds), max(duration_seconds), count(*) - count(duration_seconds) \
         FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    let (min, max, nulls) = (&actual[0][0], &actual[0][1], &actual[0][2]);
    for expected in [
        format!("Min=Inexact(Int32({min}))"),
        format!("Max=Inexact(Int32({max}))"),
        format!("Null=Inexact({nulls})"),
        "Rows=Inexact(20000)".to_string(),
    ] {
        assert!(scan.contains(&expected), "{expected} missing in {scan}");
    }
    fjord.stop().await
}

/// A join's build side and a TopK's cut-off reach the lake scan while the query runs: the scan
/// drops the rows they exclude, and the answers are those of the same queries without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_scans_drop_rows_by_the_filters_joins_and_topk_fill_in() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS iceberg.analytics;
             CREATE TABLE iceberg.analytics.watched_cats AS
             SELECT cat_id FROM iceberg.data_on_eks.cat_interactions_raw
             GROUP BY cat_id ORDER BY cat_id LIMIT 3",
        )
        .await?;
    let join = "SELECT i.cat_id, count(*), sum(i.duration_seconds) \
                FROM iceberg.data_on_eks.cat_interactions_raw i \
                JOIN iceberg.analytics.watched_cats w ON i.cat_id = w.cat_id \
                GROUP BY i.cat_id ORDER BY i.cat_id";
    let top = "SELECT event_id, duration_seconds FROM iceberg.data_on_eks.cat_interactions_raw \
               WHERE duration_seconds IS NOT NULL \
               ORDER BY duration_seconds DESC, event_id LIMIT 5";
    let mut answers = Vec::new();
    for enabled in [true, false] {
        client
            .batch_execute(&format!(
                "SET datafusion.optimizer.enable_dynamic_filter_pushdown = {enabled}"
            ))
            .await?;
        let mut dropped = Vec::new();
        for sql in [join, top] {
            let plan = query_text(&client, &format!("EXPLAIN ANALYZE {sql}")).await?;
            dropped.push(plan_line(
                &plan,
                &["IcebergScanExec", "cat_interactions_raw"],
            ));
            answers.push(query_text(&client, sql).await?);
        }
        for scan in &dropped {
            if enabled {
                let count = plan_metric(scan, "rows_dropped_by_dynamic_filters")
                    .unwrap_or_else(|| panic!("no dynamic filter count in {scan}"));
                assert!(count != 0, "the scan dropped no rows: {scan}");
            } else {
                assert!(
                    !scan.contains("dynamic_filter="),
                    "a dynamic filter reached the scan while switched off: {scan}"
                );
            }
        }
    }
    assert_eq!(answers[0], answers[2], "the join's answer changed");
    assert_eq!(answers[1], answers[3], "the TopK's answer changed");
    assert_eq!(answers[0].len(), 3, "{:?}", answers[0]);
    assert_eq!(answers[1].len(), 5, "{:?}", answers[1]);
    fjord.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_summary_is_built_with_ctas_and_insert_select() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS iceberg.analytics;
             CREATE TABLE iceberg.analytics.daily_cat_summary AS
             SELECT cat_id, CAST(date_trunc('day', event_time) AS DATE) AS day, count(*) AS interaction_count,
                    sum(CASE WHEN interaction_type = 'like' THEN 1 ELSE 0 END) AS like_count
             FROM iceberg.data_on_eks.cat_interactions_raw
             WHERE event_time < TIMESTAMP '2026-10-16T00:00:00Z'
             GROUP BY 1, 2",
        )
        .await?;
    let inserted = client
        .execute(
            "INSERT INTO iceberg.analytics.daily_cat_summary
             SELECT cat_id, CAST(date_trunc('day', event_time) AS DATE), count(*),
                    sum(CASE WHEN interaction_type = 'like' THEN 1 ELSE 0 END)
             FROM iceberg.data_on_eks.cat_interactions_raw
             WHERE event_time >= TIMESTAMP '2026-10-16T00:00:00Z'
             GROUP BY 1, 2",
            &[],
        )
        .await?;
    assert!(inserted > 0);
    let totals = query_text(
        &client,
        "SELECT sum(interaction_count), sum(like_count) FROM iceberg.analytics.daily_cat_summary",
    )
    .await?;
    let direct = query_text(
        &client,
        "SELECT count(*), sum(CASE WHEN interaction_type = 'like' THEN 1 ELSE 0 END) FROM iceberg.data_on_eks.cat_interactions_raw",
    )
    .await?;
    assert_eq!(totals, direct);
    // A bigint sum is a numeric (as in Postgres); inserted into a bigint column it is cast back,
    // as Postgres's assignment cast does.
    client
        .batch_execute(
            "CREATE TABLE iceberg.analytics.totals AS SELECT CAST(0 AS BIGINT) AS total WHERE false;
             INSERT INTO iceberg.analytics.totals
             SELECT sum(CAST(interaction_count AS BIGINT)) FROM iceberg.analytics.daily_cat_summary",
        )
        .await?;
    let stored = query_text(&client, "SELECT total FROM iceberg.analytics.totals").await?;
    assert_eq!(stored[0][0], direct[0][0]);
    fjord.stop().await
}

/// The lake's strings reach DataFusion as views, read from the files directly; what is written
/// back (CTAS, INSERT ... SELECT, INSERT ... VALUES) reads back the same, unicode included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_strings_are_read_as_views_and_round_trip() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    let raw = "iceberg.data_on_eks.cat_interactions_raw";
    let types = query_text(
        &client,
        &format!("SELECT arrow_typeof(cat_id), arrow_typeof(interaction_type) FROM {raw} LIMIT 1"),
    )
    .await?;
    assert_eq!(types, vec![vec!["Utf8View", "Utf8View"]]);

    let grouped =
        format!("SELECT interaction_type, count(*), min(cat_id) FROM {raw} GROUP BY 1 ORDER BY 1");
    let plan = query_text(&client, &format!("EXPLAIN ANALYZE {grouped}")).await?;
    let scan = &plan_line(&plan, &["IcebergScanExec"]);
    assert_eq!(
        plan_metric(scan, "files_through_iceberg_reader"),
        Some(0),
        "files written by fjord are read directly: {scan}"
    );
    assert!(
        plan_metric(scan, "files").is_some_and(|files| files > 0),
        "{scan}"
    );

    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS iceberg.strings;
             CREATE TABLE iceberg.strings.copy AS
             SELECT event_id, cat_id, interaction_type FROM {raw};
             INSERT INTO iceberg.strings.copy
             SELECT event_id || '-again', cat_id, upper(interaction_type) FROM {raw}
             WHERE interaction_type = 'like';
             INSERT INTO iceberg.strings.copy VALUES
             ('e-unicode', 'Kätzchen 猫 🐈', 'purr'), ('e-empty', '', NULL)"
        ))
        .await?;
    let copied = query_text(
        &client,
        "SELECT interaction_type, count(*), min(cat_id) FROM iceberg.strings.copy \
         WHERE event_id NOT LIKE '%-again' AND event_id NOT IN ('e-unicode', 'e-empty') \
         GROUP BY 1 ORDER BY 1",
    )
    .await?;
    assert_eq!(copied, query_text(&client, &grouped).await?);
    let again = query_text(
        &client,
        "SELECT count(*) FROM iceberg.strings.copy WHERE interaction_type = 'LIKE'",
    )
    .await?;
    let likes = query_text(
        &client,
        &format!("SELECT count(*) FROM {raw} WHERE interaction_type = 'like'"),
    )
    .await?;
    assert_eq!(again, likes);
    let odd = query_text(
        &client,
        "SELECT event_id, cat_id, length(cat_id), coalesce(interaction_type, 'none') \
         FROM iceberg.strings.copy WHERE event_id IN ('e-unicode', 'e-empty') ORDER BY 1",
    )
    .await?;
    assert_eq!(
        odd,
        vec![
            vec!["e-empty", "", "0", "none"],
            vec!["e-unicode", "Kätzchen 猫 🐈", "12", "purr"],
        ]
    );
    fjord.stop().await
}

/// `x IN (SELECT k ... GROUP BY k)` filters the outer table's scan with the subquery's keys
/// while the query runs (its semi join runs as an inner join, as the keys are unique); a
/// subquery whose keys repeat keeps its semi join. Either way the answers are those of the
/// plain semi join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_subqueries_over_grouped_keys_filter_the_outer_scan() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS iceberg.analytics;
             CREATE TABLE iceberg.analytics.some_cats AS
             SELECT cat_id, count(*) AS visits FROM iceberg.data_on_eks.cat_interactions_raw
             GROUP BY cat_id ORDER BY cat_id LIMIT 40;
             INSERT INTO iceberg.analytics.some_cats VALUES (NULL, 7);
             CREATE TABLE iceberg.analytics.some_cats_twice AS
             SELECT cat_id FROM iceberg.analytics.some_cats
             UNION ALL SELECT cat_id FROM iceberg.analytics.some_cats",
        )
        .await?;
    let raw = "iceberg.data_on_eks.cat_interactions_raw";
    let grouped = format!(
        "SELECT count(*), sum(duration_seconds), count(DISTINCT cat_id) FROM {raw} \
         WHERE cat_id IN (SELECT cat_id FROM iceberg.analytics.some_cats \
                          GROUP BY cat_id HAVING sum(visits) > 1)"
    );
    let repeated = format!(
        "SELECT count(*), sum(duration_seconds), count(DISTINCT cat_id) FROM {raw} \
         WHERE cat_id IN (SELECT cat_id FROM iceberg.analytics.some_cats_twice)"
    );
    let join_and_scan = |plan: &[Vec<String>]| {
        (
            plan_line(plan, &["HashJoinExec"]),
            plan_line(plan, &["IcebergScanExec", "cat_interactions_raw"]),
        )
    };

    let plan = query_text(&client, &format!("EXPLAIN ANALYZE {grouped}")).await?;
    let (join, scan) = join_and_scan(&plan);
    assert!(join.contains("join_type=Inner"), "{join}");
    assert!(
        plan_metric(&scan, "rows_dropped_by_dynamic_filters").is_some_and(|rows| rows > 0),
        "{scan}"
    );
    let plan = query_text(&client, &format!("EXPLAIN ANALYZE {repeated}")).await?;
    let (join, _) = join_and_scan(&plan);
    assert!(
        join.contains("Semi"),
        "keys that repeat keep the semi join: {join}"
    );

    let with_rule = [
        query_text(&client, &grouped).await?,
        query_text(&client, &repeated).await?,
    ];
    client
        .batch_execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false")
        .await?;
    let plan = query_text(&client, &format!("EXPLAIN {grouped}")).await?;
    assert!(plan.iter().any(|row| row[1].contains("Semi")), "{plan:?}");
    let without = [
        query_text(&client, &grouped).await?,
        query_text(&client, &repeated).await?,
    ];
    assert_eq!(with_rule, without);
    // 40 cats, each with at least two interactions; the NULL key matches nothing.
    assert_eq!(with_rule[0][0][2], "40");
    assert_eq!(with_rule[1], with_rule[0]);
    fjord.stop().await
}

/// A grouped CTE used in two places (TPC-H q15's shape) is computed once: one place reads the
/// lake and the other reads its rows. The answers are those of computing it at each place (a
/// volatile condition that keeps every row stops the sharing), whether the places are joined
/// or appended, and a prepared statement run again after an INSERT sees the new rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_cte_used_twice_is_computed_once() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS iceberg.analytics;
             CREATE TABLE iceberg.analytics.likes AS
             SELECT cat_id, duration_seconds FROM iceberg.data_on_eks.cat_interactions_raw
             WHERE interaction_type = 'like'",
        )
        .await?;
    let cte = |condition: &str| {
        format!(
            "WITH per_cat AS (SELECT cat_id, count(*) AS visits, sum(duration_seconds) AS seconds \
             FROM iceberg.analytics.likes WHERE duration_seconds >= 0 {condition} GROUP BY cat_id)"
        )
    };
    let top = |condition: &str| {
        format!(
            "{} SELECT cat_id, visits, seconds FROM per_cat \
             WHERE visits = (SELECT max(visits) FROM per_cat) ORDER BY cat_id",
            cte(condition)
        )
    };
    let both_ends = |condition: &str| {
        format!(
            "{} SELECT 'most', max(visits) FROM per_cat UNION ALL \
             SELECT 'least', min(visits) FROM per_cat ORDER BY 1",
            cte(condition)
        )
    };
    let every_row = "AND random() < 2";

    for (query, volatile) in [
        (top(""), top(every_row)),
        (both_ends(""), both_ends(every_row)),
    ] {
        let plan = query_text(&client, &format!("EXPLAIN ANALYZE {query}")).await?;
        let text = plan_text(&plan);
        assert_eq!(text.matches("SharedSubplanExec: id=1").count(), 2, "{text}");
        let scans: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("IcebergScanExec") && line.contains("likes"))
            .collect();
        assert_eq!(scans.len(), 2, "{text}");
        let read: Vec<u64> = scans
            .iter()
            .filter_map(|line| plan_metric(line, "output_batches"))
            .collect();
        assert_eq!(read.len(), 1, "one place reads the table: {text}");
        assert!(read[0] > 0, "{text}");

        let plan = query_text(&client, &format!("EXPLAIN {volatile}")).await?;
        assert!(
            !plan
                .iter()
                .flatten()
                .any(|line| line.contains("SharedSubplan")),
            "a volatile function is computed at each place: {plan:?}"
        );
    }

    let shared = [
        query_text(&client, &top("")).await?,
        query_text(&client, &both_ends("")).await?,
    ];
    let computed_twice = [
        query_text(&client, &top(every_row)).await?,
        query_text(&client, &both_ends(every_row)).await?,
    ];
    assert!(!shared[0].is_empty());
    assert_eq!(shared[1].len(), 2);
    assert_eq!(shared, computed_twice);

    // Run again, a prepared statement computes the shared rows afresh.
    let statement = client.prepare(&both_ends("")).await?;
    let most = |rows: &[tokio_postgres::Row]| -> i64 {
        let row = rows.iter().find(|row| row.get::<_, &str>(0) == "most");
        row.expect("a row for the most visits").get(1)
    };
    let before = most(&client.query(&statement, &[]).await?);
    client
        .batch_execute(&format!(
            "INSERT INTO iceberg.analytics.likes \
             SELECT 424242, duration_seconds FROM iceberg.analytics.likes LIMIT {}",
            before + 1
        ))
        .await?;
    let after = most(&client.query(&statement, &[]).await?);
    assert_eq!(after, before + 1);
    fjord.stop().await
}

/// A comparison with a grouped correlated subquery (TPC-H q02's shape) is joined on the group
/// column alone, the compared value checked as the join's filter, so that the outer rows' keys
/// reach the subquery's scan while the query runs; the answers are those of the plain join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_subqueries_are_filtered_by_the_outer_keys() -> anyhow::Result<()> {
    let fjord = Fjord::start(&format!("{TEST_DEMO}\n")).await?;
    let client = fjord.connect().await?;
    let raw = "iceberg.data_on_eks.cat_interactions_raw";
    let longest = format!(
        "SELECT i.cat_id, i.visitor_id, i.duration_seconds FROM {raw} i \
         WHERE i.interaction_type = 'like' AND i.cat_id <= 20 AND i.duration_seconds = \
           (SELECT max(r.duration_seconds) FROM {raw} r \
            WHERE r.cat_id = i.cat_id AND r.interaction_type = 'like') \
         ORDER BY 1, 2, 3"
    );

    let plan = query_text(&client, &format!("EXPLAIN ANALYZE {longest}")).await?;
    let join = plan_line(&plan, &["HashJoinExec", "filter="]);
    let keys = join
        .split("on=[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_default();
    assert!(keys.starts_with("(cat_id@"), "{join}");
    assert!(!keys.contains("duration_seconds"), "{join}");
    let text = plan_text(&plan);
    let grouped = text
        .lines()
        .skip_while(|line| !line.contains("AggregateExec"))
        .find(|line| line.contains("IcebergScanExec"))
        .unwrap_or_else(|| panic!("no scan under the grouping: {text}"));
    assert!(
        plan_metric(grouped, "rows_dropped_by_dynamic_filters").is_some_and(|rows| rows > 0),
        "{grouped}"
    );

    let with_rule = query_text(&client, &longest).await?;
    client
        .batch_execute("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false")
        .await?;
    let plan = query_text(&client, &format!("EXPLAIN {longest}")).await?;
    assert!(
        plan.iter()
            .flatten()
            .any(|line| line.contains("duration_seconds@") && line.contains("HashJoinExec")),
        "{plan:?}"
    );
    let without = query_text(&client, &longest).await?;
    assert!(with_rule.len() >= 20, "{with_rule:?}");
    assert_eq!(with_rule, without);
    fjord.stop().await
}
