//! The ingest sidecar against a real broker (tansu): JSON topics land in Iceberg exactly once and
//! are queried through fjord serve; bad records land in the dead letters; new fields become
//! columns; kill -9 and a second sidecar never duplicate or lose a record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::fjord_binary;
use anyhow::{Context, Result, bail};
use fjord_config::Config;
use fjord_ingest::{IngestOptions, IngestServer};
use fjord_tests::kafka::{IngestProcess, Kafka, produce_with};
use fjord_tests::{Fjord, http_get, plan_line, plan_metric, query_text};

/// The scenario's interactions pipeline: (name, topic, table).
const INTERACTIONS_PIPELINE: (&str, &str, &str) = (
    "cat_interactions",
    "cat-interactions",
    "data_on_eks.cat_interactions_raw",
);

/// A cat-interactions event as the cafe's producers write it.
fn interaction(i: u64) -> (String, Vec<u8>) {
    let cat = format!("00000000-0000-4000-8000-{:012}", i % 97);
    let kinds = ["pet", "play", "like", "feed", "photo"];
    // Written by hand: the fields in the producers' order (serde_json's maps would sort them).
    let value = format!(
        r#"{{"event_id": "e-{i}", "event_time": "2026-11-{:02}T{:02}:{:02}:00Z", "visitor_id": "00000000-0000-4000-9000-{:012}", "cat_id": "{cat}", "interaction_type": "{}", "duration_seconds": {}}}"#,
        1 + (i / 1440) % 28,
        (i / 60) % 24,
        i % 60,
        i % 31,
        kinds[(i % 5) as usize],
        i % 600
    );
    (cat, value.into_bytes())
}

/// Writes `ingest.toml` beside fjord serve's own config, pointing at the same warehouse and
/// catalog database, with one pipeline per `(name, topic, table)`.
/// The start of a sidecar's configuration: fjord's own lake as the default catalog and the
/// ingest catalog, and `kafka` with consumer group `group`.
pub(crate) fn sidecar_toml(kafka: &Kafka, group: &str) -> String {
    let mut text = String::from(
        "[server]\ndefault_catalog = \"iceberg\"\n[demo]\nbuild_on_start = false\n\
         [catalogs.iceberg]\ntype = \"iceberg\"\nwarehouse = \"warehouse\"\n\n[ingest]\ncatalog = \"iceberg\"\n",
    );
    text.push_str(&kafka.ingest_kafka_toml(group));
    text
}

fn ingest_config(
    fjord: &Fjord,
    kafka: &Kafka,
    group: &str,
    pipelines: &[(&str, &str, &str)],
    extra: &str,
) -> Result<PathBuf> {
    let mut text = sidecar_toml(kafka, group);
    for (name, topic, table) in pipelines {
        text.push_str(&format!(
            "\n[ingest.pipelines.{name}]\ntopics = [\"{topic}\"]\ntable = \"{table}\"\nevent_time = \"event_time\"\n{extra}\n\
             [ingest.pipelines.{name}.commit]\ninterval = \"300ms\"\nidle = \"100ms\"\n"
        ));
    }
    let path = fjord.directory.path().join("ingest.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(crate) async fn start_sidecar(config: &Path, pipelines: &[&str]) -> Result<IngestServer> {
    let config = Config::load(config).map_err(|error| anyhow::anyhow!("{error}"))?;
    IngestServer::start(
        &config,
        IngestOptions {
            pipelines: pipelines.iter().map(|p| p.to_string()).collect(),
            http_listen: Some("127.0.0.1:0".into()),
        },
    )
    .await
}

/// Polls `sql` (one integer) through fjord serve until it returns `want`; a missing table counts
/// as 0.
pub(crate) async fn wait_for_count(
    fjord: &Fjord,
    sql: &str,
    want: i64,
    timeout: Duration,
) -> Result<()> {
    let client = fjord.connect().await?;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut reported = started;
    let mut last;
    loop {
        match query_text(&client, sql).await {
            Ok(rows) => {
                let got: i64 = rows[0][0].parse().context("a count")?;
                if got == want {
                    return Ok(());
                }
                if got > want {
                    bail!("{sql}: {got} rows, more than the {want} produced");
                }
                last = format!("{got} rows");
            }
            Err(error) => last = error.to_string(),
        }
        if Instant::now() > deadline {
            bail!("{sql}: wanted {want} within {timeout:?}, last: {last}");
        }
        if reported.elapsed() >= Duration::from_secs(15) {
            reported = Instant::now();
            eprintln!("waiting {:?} for {want}: {last}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `count(*)` of `table`; 0 while it does not exist.
async fn row_count(client: &tokio_postgres::Client, table: &str) -> u64 {
    match query_text(client, &format!("SELECT count(*) FROM {table}")).await {
        Ok(rows) => rows[0][0].parse().unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_events_land_once_and_are_queryable_through_fjord_serve() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 3).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "json-e2e", &[INTERACTIONS_PIPELINE], "")?;
    let events: Vec<_> = (0..5000).map(interaction).collect();
    kafka.produce("cat-interactions", &events[..2000]).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    kafka.produce("cat-interactions", &events[2000..]).await?;

    let table = "iceberg.data_on_eks.cat_interactions_raw";
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        5000,
        Duration::from_secs(60),
    )
    .await?;
    let client = fjord.connect().await?;
    // Every record exactly once, values as produced.
    let rows = query_text(
        &client,
        &format!(
            "SELECT (SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table})) AS offsets, \
             sum(duration_seconds), count(DISTINCT event_id), min(event_time), \
             count(*) FILTER (WHERE interaction_type = 'like') FROM {table}"
        ),
    )
    .await?;
    let expected_sum: u64 = (0..5000u64).map(|i| i % 600).sum();
    assert_eq!(rows[0][0], "5000");
    assert_eq!(rows[0][1], expected_sum.to_string());
    assert_eq!(rows[0][2], "5000");
    assert!(rows[0][3].starts_with("2026-11-01 00:00:00"), "{rows:?}");
    assert_eq!(rows[0][4], "1000");
    // The table was created with the event-time day partitioning and typed columns.
    let columns = query_text(
        &client,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_catalog = 'iceberg' AND table_name = 'cat_interactions_raw' ORDER BY ordinal_position",
    )
    .await?;
    let names: Vec<&str> = columns.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        vec![
            "event_id",
            "event_time",
            "visitor_id",
            "cat_id",
            "interaction_type",
            "duration_seconds",
            "_kafka_topic",
            "_kafka_partition",
            "_kafka_offset",
            "_kafka_timestamp",
            "_ingested_at"
        ]
    );
    assert!(
        columns[1][1].to_lowercase().contains("timestamp"),
        "{columns:?}"
    );

    let (status, health) = http_get(sidecar.http_address, "/health").await?;
    assert_eq!(status, 200, "{health}");
    let (status, metrics) = http_get(sidecar.http_address, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains("fjord_ingest_committed_records_total{pipeline=\"cat_interactions\"} 5000"),
        "{metrics}"
    );
    // Lag comes from the client's statistics, once a second: all caught up, per partition.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(sidecar.http_address, "/metrics").await?;
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|line| line.starts_with("fjord_ingest_consumer_lag{"))
            .collect();
        if lags.len() == 3 && lags.iter().all(|line| line.ends_with(" 0")) {
            break;
        }
        if Instant::now() > deadline {
            bail!("no consumer lag of 0 for the 3 partitions: {lags:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sidecar.stop().await?;

    // A restart reads nothing twice.
    let sidecar = start_sidecar(&config, &[]).await?;
    kafka
        .produce("cat-interactions", &[interaction(5000)])
        .await?;
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        5001,
        Duration::from_secs(60),
    )
    .await?;
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dead_letters_and_the_rest_lands() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 1).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "poison",
        &[INTERACTIONS_PIPELINE],
        "max_record_bytes = \"2KiB\"",
    )?;
    let mut events: Vec<(String, Vec<u8>)> = (0..100).map(interaction).collect();
    events.push(("bad".into(), b"{\"event_id\": \"e-broken\", ".to_vec()));
    events.push((
        "bad".into(),
        br#"{"event_id": "e-typed", "duration_seconds": "a long time"}"#.to_vec(),
    ));
    events.push(("big".into(), vec![b' '; 4096]));
    events.extend((100..200).map(interaction));
    kafka.produce("cat-interactions", &events).await?;
    let sidecar = start_sidecar(&config, &[]).await?;

    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
        200,
        Duration::from_secs(60),
    )
    .await?;
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.dead_letters",
        3,
        Duration::from_secs(30),
    )
    .await?;
    let client = fjord.connect().await?;
    let letters = query_text(
        &client,
        "SELECT \"offset\", pipeline, topic, error, length(value) FROM iceberg.data_on_eks.dead_letters ORDER BY 1",
    )
    .await?;
    assert_eq!(letters[0][0], "100");
    assert_eq!(letters[0][1], "cat_interactions");
    assert_eq!(letters[0][2], "cat-interactions");
    assert!(letters[0][3].contains("not valid JSON"), "{letters:?}");
    assert_eq!(letters[1][0], "101");
    assert!(letters[1][3].contains("duration_seconds"), "{letters:?}");
    assert_eq!(letters[2][0], "102");
    assert!(letters[2][3].contains("max_record_bytes"), "{letters:?}");
    assert_eq!(letters[2][4], "4096");
    // Everything after the poison records landed.
    let after = query_text(
        &client,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw WHERE _kafka_offset > 102",
    )
    .await?;
    assert_eq!(after[0][0], "100");
    sidecar.stop().await?;

    // A restart neither re-lands the records nor repeats the dead letters.
    let sidecar = start_sidecar(&config, &[]).await?;
    kafka
        .produce("cat-interactions", &[interaction(200)])
        .await?;
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
        201,
        Duration::from_secs(60),
    )
    .await?;
    let letters = query_text(
        &client,
        "SELECT count(*) FROM iceberg.data_on_eks.dead_letters",
    )
    .await?;
    assert_eq!(letters[0][0], "3");
    sidecar.stop().await?;
    Ok(())
}

/// The interactions pipeline routed by `interaction_type`: one table per kind of interaction.
const ROUTED_PIPELINE: (&str, &str, &str) = (
    "interactions_by_kind",
    "cat-interactions",
    "data_on_eks.{interaction_type}_interactions",
);
const KINDS: [&str; 5] = ["pet", "play", "like", "feed", "photo"];

/// `(partition, offset)` of every row in the tables the routed pipeline writes, as one
/// relation for SQL.
fn routed_rows() -> String {
    format!("({}) AS routed", routed_selects())
}

fn routed_selects() -> String {
    let tables: Vec<String> = KINDS
        .iter()
        .map(|kind| {
            format!("SELECT _kafka_partition, _kafka_offset FROM iceberg.data_on_eks.{kind}_interactions")
        })
        .collect();
    tables.join(" UNION ALL ")
}

/// One interaction in 9,973 cannot be landed in the table it routes to (its duration is text):
/// it must become a dead letter, exactly once, whatever crashes around it.
fn sometimes_poisoned_interaction(i: u64) -> (String, Vec<u8>) {
    if i % 9973 != 5000 {
        return interaction(i);
    }
    let value = format!(
        r#"{{"event_id": "e-{i}", "interaction_type": "pet", "duration_seconds": "a while"}}"#
    );
    ("poison".to_string(), value.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_routed_by_a_field_land_in_one_table_per_value() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 2).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "routed",
        &[ROUTED_PIPELINE],
        "max_tables = 5",
    )?;
    let mut events: Vec<(String, Vec<u8>)> = (0..500).map(interaction).collect();
    events.push(("x".into(), br#"{"event_id": "e-kindless"}"#.to_vec()));
    events.push((
        "x".into(),
        br#"{"event_id": "e-nested", "interaction_type": {"kind": "pet"}}"#.to_vec(),
    ));
    events.push((
        "x".into(),
        br#"{"event_id": "e-sneeze", "interaction_type": "sneeze"}"#.to_vec(),
    ));
    // Routed, then rejected by its table's columns.
    events.push((
        "x".into(),
        br#"{"event_id": "e-typed", "interaction_type": "pet", "duration_seconds": "a long time"}"#
            .to_vec(),
    ));
    events.extend((500..1000).map(interaction));
    kafka.produce("cat-interactions", &events).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    for kind in KINDS {
        wait_for_count(
            &fjord,
            &format!("SELECT count(*) FROM iceberg.data_on_eks.{kind}_interactions"),
            200,
            Duration::from_secs(60),
        )
        .await?;
    }
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.dead_letters",
        4,
        Duration::from_secs(30),
    )
    .await?;
    let client = fjord.connect().await?;
    // Each table holds its kind only, with the record's own columns and the Kafka metadata.
    for kind in KINDS {
        let rows = query_text(
            &client,
            &format!(
                "SELECT count(DISTINCT interaction_type), min(interaction_type), count(DISTINCT _kafka_partition), \
                 count(duration_seconds) FROM iceberg.data_on_eks.{kind}_interactions"
            ),
        )
        .await?;
        assert_eq!(rows[0], ["1", kind, "2", "200"], "{kind}");
    }
    let letters = query_text(
        &client,
        "SELECT pipeline, error FROM iceberg.data_on_eks.dead_letters ORDER BY error",
    )
    .await?;
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert!(letters.iter().all(|row| row[0] == "interactions_by_kind"));
    for reason in [
        "map, expected text, a number or a boolean",
        "`interaction_type` is missing",
        "routes to `sneeze_interactions`, one table more than max_tables (5)",
        "duration_seconds",
    ] {
        let found = letters.iter().filter(|row| row[1].contains(reason)).count();
        assert_eq!(found, 1, "{reason} in {letters:?}");
    }
    assert_eq!(
        row_count(&client, "iceberg.data_on_eks.sneeze_interactions").await,
        0
    );
    sidecar.stop().await?;

    // A restart resumes after the last commit: nothing is landed or dead-lettered twice.
    let sidecar = start_sidecar(&config, &[]).await?;
    kafka
        .produce(
            "cat-interactions",
            &(1000..1010).map(interaction).collect::<Vec<_>>(),
        )
        .await?;
    let source = routed_rows();
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {source}"),
        1010,
        Duration::from_secs(60),
    )
    .await?;
    let rows = query_text(
        &client,
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {source}) AS d"
        ),
    )
    .await?;
    assert_eq!(rows[0][0], "1010");
    assert_eq!(
        row_count(&client, "iceberg.data_on_eks.dead_letters").await,
        4
    );
    sidecar.stop().await?;

    // A new dead-letter table has no pipeline offsets, so everything is read again from the
    // start, as after a crash between the tables' commits and the pipeline's: each table drops
    // the records it has, and only the new events land. Records that no table takes become
    // dead letters in the new table again; the one `pet_interactions` rejected is below that
    // table's offsets: it was stored in the old dead-letter table before the table moved on.
    let text = std::fs::read_to_string(&config)?.replace(
        "max_tables = 5",
        "max_tables = 5\ndead_letter_table = \"data_on_eks.routed_letters\"",
    );
    std::fs::write(&config, text)?;
    let sidecar = start_sidecar(&config, &[]).await?;
    kafka
        .produce(
            "cat-interactions",
            &(1010..1020).map(interaction).collect::<Vec<_>>(),
        )
        .await?;
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.routed_letters",
        3,
        Duration::from_secs(60),
    )
    .await?;
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {source}"),
        1020,
        Duration::from_secs(60),
    )
    .await?;
    let rows = query_text(
        &client,
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {source}) AS d"
        ),
    )
    .await?;
    assert_eq!(rows[0][0], "1020", "records landed twice");
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_become_columns_that_fjord_serve_sees_without_restart() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-wellness-iot", 2).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "evolve",
        &[(
            "wellness",
            "cat-wellness-iot",
            "data_on_eks.cat_wellness_iot_raw",
        )],
        "",
    )?;
    let sidecar = start_sidecar(&config, &[]).await?;
    let event = |i: u64, extra: Option<&str>| {
        let mut value = serde_json::json!({
            "event_id": format!("w-{i}"),
            "event_time": "2026-11-02T08:00:00Z",
            "cat_id": format!("cat-{}", i % 7),
            "activity_level": (i % 10) as f64 + 0.5,
            "heart_rate_bpm": 120 + i % 40,
        });
        if let Some(mood) = extra {
            value["mood"] = serde_json::json!(mood);
        }
        (
            format!("cat-{}", i % 7),
            serde_json::to_vec(&value).unwrap(),
        )
    };
    let first: Vec<_> = (0..50).map(|i| event(i, None)).collect();
    kafka.produce("cat-wellness-iot", &first).await?;
    let table = "iceberg.data_on_eks.cat_wellness_iot_raw";
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        50,
        Duration::from_secs(60),
    )
    .await?;
    let client = fjord.connect().await?;
    let before = query_text(&client, &format!("SELECT * FROM {table} LIMIT 1")).await;
    assert!(before.is_ok());

    let second: Vec<_> = (50..80).map(|i| event(i, Some("sleepy"))).collect();
    kafka.produce("cat-wellness-iot", &second).await?;
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        80,
        Duration::from_secs(60),
    )
    .await?;
    let moods = query_text(
        &client,
        &format!("SELECT mood, count(*) FROM {table} GROUP BY mood ORDER BY mood NULLS FIRST"),
    )
    .await?;
    assert_eq!(
        moods,
        vec![
            vec!["NULL".to_string(), "50".to_string()],
            vec!["sleepy".to_string(), "30".to_string()]
        ]
    );
    // The files written before `mood` existed lack it: those go through iceberg's own reader,
    // which fills it with nulls; the later ones are read directly.
    let plan = query_text(
        &client,
        &format!("EXPLAIN ANALYZE SELECT mood, count(*) FROM {table} GROUP BY mood"),
    )
    .await?;
    let scan = &plan_line(&plan, &["IcebergScanExec"]);
    let (files, through_iceberg) = (
        plan_metric(scan, "files").expect("files read"),
        plan_metric(scan, "files_through_iceberg_reader").expect("files through iceberg"),
    );
    assert!(through_iceberg > 0 && through_iceberg < files, "{scan}");
    sidecar.stop().await?;

    // A new (nested) field in the second chunk of one commit: the rows of the first chunk,
    // decoded before the column existed, get it as nulls. The sidecar starts after everything
    // is produced, and commits only when the topic has been quiet for seconds, so both chunks
    // go into one commit.
    let text = std::fs::read_to_string(&config)?
        .replace("interval = \"300ms\"", "interval = \"60s\"")
        .replace("idle = \"100ms\"", "idle = \"3s\"");
    std::fs::write(&config, text)?;
    // One key, so one partition, read in the order produced: the new field comes after a full
    // chunk of records without it.
    let key = "cat-0".to_string();
    let mut third: Vec<_> = (80..20_080)
        .map(|i| (key.clone(), event(i, None).1))
        .collect();
    for i in 20_080..20_090 {
        let value = serde_json::json!({
            "event_id": format!("w-{i}"),
            "event_time": "2026-11-02T09:00:00Z",
            "cat_id": key,
            "toy": {"name": "mouse", "squeaks": i % 3},
        });
        third.push((key.clone(), serde_json::to_vec(&value)?));
    }
    kafka.produce("cat-wellness-iot", &third).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        20_090,
        Duration::from_secs(90),
    )
    .await?;
    let toys = query_text(
        &client,
        &format!(
            "SELECT count(toy), count(*) FILTER (WHERE toy IS NULL), \
             count(DISTINCT _kafka_partition::text || '/' || _kafka_offset::text) FROM {table}"
        ),
    )
    .await?;
    assert_eq!(toys[0], ["10", "20080", "20090"]);
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_for_one_topic_neither_duplicate_nor_lose() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("visitor-checkins", 4).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "pair",
        &[(
            "checkins",
            "visitor-checkins",
            "data_on_eks.visitor_checkins_raw",
        )],
        "",
    )?;
    let checkin = |i: u64| {
        let value = serde_json::json!({
            "event_id": format!("c-{i}"),
            "event_time": "2026-11-03T09:00:00Z",
            "visitor_id": format!("v-{}", i % 50),
            "action": if i.is_multiple_of(2) { "check_in" } else { "check_out" },
        });
        (format!("v-{}", i % 50), serde_json::to_vec(&value).unwrap())
    };
    let first = start_sidecar(&config, &[]).await?;
    let second = start_sidecar(&config, &[]).await?;
    let producer = kafka.producer()?;
    let total = 20_000u64;
    for round in 0..4 {
        let batch: Vec<_> = (round * total / 4..(round + 1) * total / 4)
            .map(checkin)
            .collect();
        produce_with(&producer, "visitor-checkins", &batch).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One leaves mid-stream: the other takes over its partitions from the table's offsets.
    first.stop().await?;
    let more: Vec<_> = (total..total + 2000).map(checkin).collect();
    produce_with(&producer, "visitor-checkins", &more).await?;
    let table = "iceberg.data_on_eks.visitor_checkins_raw";
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        (total + 2000) as i64,
        Duration::from_secs(120),
    )
    .await?;
    let client = fjord.connect().await?;
    let distinct = query_text(
        &client,
        &format!(
            "SELECT (SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table})) AS offsets, \
             (SELECT count(DISTINCT event_id) FROM {table}) AS events"
        ),
    )
    .await?;
    assert_eq!(
        distinct[0],
        vec![(total + 2000).to_string(), (total + 2000).to_string()]
    );
    second.stop().await?;
    // A commit that lost to the other sidecar leaves no data file behind: every Parquet file
    // on disk is one the table reads (the table only ever had appends).
    let seen = pyiceberg_view_of(&fjord, "data_on_eks.visitor_checkins_raw").await?;
    assert_eq!(
        parquet_files_on_disk(&fjord, "data_on_eks.visitor_checkins_raw")?,
        seen["data_files"].as_u64().context("a file count")? as usize,
        "{seen}"
    );
    Ok(())
}

/// The crash test of the issue: events keep arriving while `fjord ingest` is killed with SIGKILL
/// at random moments and restarted; at the end every event is in the table exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() -> Result<()> {
    let events: u64 = std::env::var("FJORD_CRASH_TEST_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    crash_test(
        INTERACTIONS_PIPELINE,
        "",
        "",
        "iceberg.data_on_eks.cat_interactions_raw",
        interaction,
        events,
        10,
    )
    .await?;
    Ok(())
}

/// Routing adds a window the fixed table does not have: a crash between the commits of two
/// tables. Each table keeps its own offsets, reading resumes from the pipeline's, and records
/// that a table has already are dropped for it. Records rejected by a table's columns must be
/// dead letters once each: the relation checked is the tables' rows and the dead letters.
/// The sidecar also compacts its tables every second, so kills land in compactions too, and
/// compaction snapshots stand between the commits whose offsets the sidecar reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_routing_to_many_tables_loses_and_duplicates_nothing() -> Result<()> {
    let rows_and_letters = format!(
        "({} UNION ALL SELECT \"partition\" AS _kafka_partition, \"offset\" AS _kafka_offset \
         FROM iceberg.data_on_eks.dead_letters) AS landed",
        routed_selects()
    );
    let fjord = crash_test(
        ROUTED_PIPELINE,
        "max_tables = 5",
        "[ingest.maintenance]\ninterval = \"1s\"\n",
        &rows_and_letters,
        sometimes_poisoned_interaction,
        200_000,
        8,
    )
    .await?;
    let client = fjord.connect().await?;
    let letters = query_text(
        &client,
        "SELECT count(*), count(DISTINCT \"offset\") FILTER (WHERE error LIKE '%duration_seconds%') \
         FROM iceberg.data_on_eks.dead_letters",
    )
    .await?;
    assert_eq!(
        letters[0],
        ["20", "20"],
        "one dead letter per poisoned event"
    );
    Ok(())
}

/// Produces `events` interactions (`event(i)` each) over about a minute into four partitions
/// while `fjord ingest` runs `pipeline`, killing it with SIGKILL `kills` times; then checks that
/// `table` (a relation with `_kafka_partition` and `_kafka_offset`) holds every event exactly
/// once. `extra` goes into the pipeline's section, `maintenance` (whole sections) at the end.
async fn crash_test(
    pipeline: (&str, &str, &str),
    extra: &str,
    maintenance: &str,
    table: &str,
    event: fn(u64) -> (String, Vec<u8>),
    events: u64,
    kills: u64,
) -> Result<Fjord> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 4).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "crash", &[pipeline], extra)?;
    // Each incarnation joins the group as a new member; the killed one is evicted once its
    // session (the shortest allowed) expires. Not static membership (`instance_id`): tansu 0.6
    // never expires a static member, and a kill in the middle of a rebalance then left the
    // group waiting for the dead one for good, so that no later incarnation got partitions.
    let text = std::fs::read_to_string(&config)?.replace(
        "group_id = \"crash\"",
        "group_id = \"crash\"\nsession_timeout_ms = 6000",
    );
    std::fs::write(&config, format!("{text}\n{maintenance}"))?;
    let bootstrap = kafka.bootstrap.clone();
    let producer_task = tokio::spawn(async move {
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "20")
            .set("acks", "all")
            .create()?;
        // Paced over about a minute, so that every kill lands while events keep arriving.
        let chunk = (events / 100).max(1);
        let mut next = 0;
        while next < events {
            let end = (next + chunk).min(events);
            let batch: Vec<_> = (next..end).map(event).collect();
            let started = Instant::now();
            produce_with(&producer, "cat-interactions", &batch).await?;
            next = end;
            if let Some(pause) = Duration::from_millis(600).checked_sub(started.elapsed()) {
                tokio::time::sleep(pause).await;
            }
        }
        anyhow::Ok(())
    });
    let mut seed = 0x5eed_u64;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    // Each incarnation is killed at a random moment after it has landed something, so that
    // kills hit mid-stream: between commits, while writing files, while committing.
    let client = fjord.connect().await?;
    let mut landed = 0;
    // Kills that hit while events were still missing from the table.
    let mut mid_stream = 0;
    for kill in 0..kills {
        let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while row_count(&client, table).await <= landed && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(random(1500))).await;
        sidecar.kill()?;
        let now = row_count(&client, table).await;
        eprintln!("crash test: kill {} with {now} rows landed", kill + 1);
        if now < events {
            mid_stream += 1;
        }
        landed = now;
    }
    producer_task.await??;
    eprintln!("crash test: all {events} events produced");
    let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    // The last incarnation lands the rest within seconds; when it does not, records are
    // missing for good, and the gaps say where.
    let result = wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        events as i64,
        Duration::from_secs(120),
    )
    .await;
    if result.is_err() {
        let offsets = query_text(
            &client,
            &format!("SELECT _kafka_partition, _kafka_offset FROM {table} ORDER BY 1, 2"),
        )
        .await?;
        let mut gaps = Vec::new();
        let mut previous: Option<(String, i64)> = None;
        for row in &offsets {
            let offset: i64 = row[1].parse()?;
            let expected = match &previous {
                Some((partition, last)) if *partition == row[0] => last + 1,
                _ => 0,
            };
            if offset > expected {
                gaps.push(format!("partition {} offsets {expected}..{offset}", row[0]));
            }
            previous = Some((row[0].clone(), offset));
        }
        eprintln!("crash test: missing {gaps:?}");
    }
    let rows = query_text(
        &client,
        &format!(
            "SELECT (SELECT count(*) FROM {table}) AS total, \
             (SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table}) AS d) AS distinct_offsets"
        ),
    )
    .await?;
    eprintln!(
        "crash test: produced {events}, table has {} rows, {} distinct (partition, offset)",
        rows[0][0], rows[0][1]
    );
    result?;
    assert!(
        mid_stream >= kills / 2,
        "only {mid_stream} of {kills} kills hit mid-stream: the test did not test much"
    );
    assert_eq!(rows[0][0], events.to_string(), "duplicates or losses");
    assert_eq!(rows[0][1], events.to_string(), "duplicates");
    let status = sidecar.terminate()?;
    assert!(
        status.success(),
        "fjord ingest exited with {status} on SIGTERM"
    );
    Ok(fjord)
}

/// The newcomer's path: the demo world, `fjord demo --live` producing the cafe's events and
/// `fjord ingest` landing them in the demo's own tables (whose columns came from the history
/// generator, not from the events), with no dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_demo_events_land_in_the_demo_tables() -> Result<()> {
    let kafka = Kafka::start().await?;
    let fjord = Fjord::start(fjord_tests::TEST_DEMO).await?;
    let tables = [
        (
            "cat_interactions",
            "cat-interactions",
            "data_on_eks.cat_interactions_raw",
        ),
        (
            "cat_wellness",
            "cat-wellness-iot",
            "data_on_eks.cat_wellness_iot_raw",
        ),
        (
            "visitor_checkins",
            "visitor-checkins",
            "data_on_eks.visitor_checkins_raw",
        ),
        ("cafe_orders", "cafe-orders", "data_on_eks.cafe_orders_raw"),
    ];
    let client = fjord.connect().await?;
    let mut before = 0;
    for (_, _, table) in &tables {
        before += row_count(&client, &format!("iceberg.{table}")).await;
    }
    assert!(before > 20_000, "the demo history is there: {before} rows");
    let config_path = ingest_config(&fjord, &kafka, "live-demo", &tables, "")?;
    let config = Config::load(&config_path).map_err(|error| anyhow::anyhow!("{error}"))?;
    let demo = fjord_config::DemoConfig {
        cats: 300,
        visitors: 60,
        ..fjord_config::DemoConfig::default()
    };
    let events = 3000;
    let produced = fjord_demo::live::run_live(
        &config.ingest.as_ref().expect("[ingest]").kafka,
        &demo,
        &fjord_demo::live::LiveOptions {
            rate: 5000.0,
            limit: Some(events),
        },
        tokio_util::sync::CancellationToken::new(),
        &|_| {},
    )
    .await
    .map_err(|error| anyhow::anyhow!(error))?;
    assert_eq!(produced, events);
    let sidecar = start_sidecar(&config_path, &[]).await?;
    let union = tables
        .iter()
        .map(|(_, _, table)| format!("SELECT count(*) AS n FROM iceberg.{table}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    wait_for_count(
        &fjord,
        &format!("SELECT sum(n) FROM ({union})"),
        (before + events) as i64,
        Duration::from_secs(120),
    )
    .await?;
    // Orders carry their items as JSON text, as the history does; amounts are exact.
    let orders = query_text(
        &client,
        "SELECT items, total_amount FROM iceberg.data_on_eks.cafe_orders_raw \
         WHERE _ingested_at > TIMESTAMP '2026-11-15 00:00:00' LIMIT 1",
    )
    .await?;
    assert!(orders[0][0].starts_with("[{"), "{orders:?}");
    assert!(orders[0][0].contains("\"sku\""), "{orders:?}");
    let dead = query_text(
        &client,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'dead_letters'",
    )
    .await?;
    assert_eq!(dead[0][0], "0", "no dead letters were needed");
    sidecar.stop().await?;
    Ok(())
}

/// Avro in the Confluent wire format with a schema registry (a minimal fixture of the documented
/// endpoints: no Confluent-compatible registry installs from the registries this project
/// reaches). Records are encoded with the apache-avro crate, independently of the arrow-avro
/// decoder fjord uses. A second schema version adds a field; an unknown schema id and a value
/// without the wire format become dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_with_a_schema_registry_lands_and_evolves() -> Result<()> {
    use apache_avro::types::{Record, Value};

    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-wellness-iot", 2).await?;
    let registry = fjord_tests::kafka::SchemaRegistry::start().await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "avro",
        &[("wellness", "cat-wellness-iot", "data_on_eks.wellness_avro")],
        "format = \"avro\"",
    )?;
    let text = std::fs::read_to_string(&config)?.replace(
        "[ingest.kafka]",
        &format!(
            "[ingest.schema_registry]\nurl = \"{}\"\n[ingest.kafka]",
            registry.url
        ),
    );
    // A rule over the same Avro records, decoded as the pipeline decodes them.
    let text = text
        + "\n[ingest.rules.busy_cats]\nsql = \"SELECT cat_id, count(*) AS readings FROM wellness \
           GROUP BY cat_id HAVING count(*) >= 20\"\nkey = \"cat_id\"\nkafka_topic = \"busy-cats\"\n";
    std::fs::write(&config, text)?;
    kafka.create_topic("busy-cats", 1).await?;

    let v1 = r#"{"type":"record","name":"Wellness","namespace":"cafe","fields":[
        {"name":"event_id","type":"string"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"cat_id","type":"string"},
        {"name":"activity_level","type":"double"},
        {"name":"heart_rate_bpm","type":"int"}]}"#;
    let v2 = r#"{"type":"record","name":"Wellness","namespace":"cafe","fields":[
        {"name":"event_id","type":"string"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"cat_id","type":"string"},
        {"name":"activity_level","type":"double"},
        {"name":"heart_rate_bpm","type":"int"},
        {"name":"mood","type":["null","string"],"default":null}]}"#;
    let id1 = registry.register("cat-wellness-iot-value", v1).await?;
    let id2 = registry.register("cat-wellness-iot-value", v2).await?;
    assert_ne!(id1, id2);
    let schema1 = apache_avro::Schema::parse_str(v1)?;
    let schema2 = apache_avro::Schema::parse_str(v2)?;
    let framed = |id: u32, datum: Vec<u8>| {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend(datum);
        bytes
    };
    let mut events = Vec::new();
    for i in 0..100i64 {
        let mut record = Record::new(&schema1).expect("a record schema");
        record.put("event_id", format!("w-{i}"));
        record.put(
            "event_time",
            Value::TimestampMillis(1_793_491_200_000 + i * 1000),
        );
        record.put("cat_id", format!("cat-{}", i % 7));
        record.put("activity_level", (i % 10) as f64 + 0.5);
        record.put("heart_rate_bpm", 120 + (i % 40) as i32);
        let datum = apache_avro::to_avro_datum(&schema1, record)?;
        events.push((format!("cat-{}", i % 7), framed(id1, datum)));
    }
    events.push(("bad".into(), framed(999, vec![2, 4, 6])));
    events.push(("bad".into(), b"{\"json\": \"not avro\"}".to_vec()));
    for i in 100..150i64 {
        let mut record = Record::new(&schema2).expect("a record schema");
        record.put("event_id", format!("w-{i}"));
        record.put(
            "event_time",
            Value::TimestampMillis(1_793_491_200_000 + i * 1000),
        );
        record.put("cat_id", format!("cat-{}", i % 7));
        record.put("activity_level", 1.5);
        record.put("heart_rate_bpm", 150);
        record.put(
            "mood",
            Value::Union(1, Box::new(Value::String("sleepy".into()))),
        );
        let datum = apache_avro::to_avro_datum(&schema2, record)?;
        events.push((format!("cat-{}", i % 7), framed(id2, datum)));
    }
    kafka.produce("cat-wellness-iot", &events).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    let table = "iceberg.data_on_eks.wellness_avro";
    wait_for_count(
        &fjord,
        &format!("SELECT count(*) FROM {table}"),
        150,
        Duration::from_secs(60),
    )
    .await?;
    let client = fjord.connect().await?;
    let rows = query_text(
        &client,
        &format!(
            "SELECT count(*) FILTER (WHERE mood = 'sleepy'), sum(heart_rate_bpm), \
             min(event_time), count(DISTINCT event_id) FROM {table}"
        ),
    )
    .await?;
    let heart: i64 = (0..100i64).map(|i| 120 + i % 40).sum::<i64>() + 50 * 150;
    assert_eq!(rows[0][0], "50");
    assert_eq!(rows[0][1], heart.to_string());
    assert!(rows[0][2].starts_with("2026-11-01 00:00:00"), "{rows:?}");
    assert_eq!(rows[0][3], "150");
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.dead_letters",
        2,
        Duration::from_secs(30),
    )
    .await?;
    let letters = query_text(
        &client,
        "SELECT error FROM iceberg.data_on_eks.dead_letters ORDER BY \"offset\"",
    )
    .await?;
    assert!(letters[0][0].contains("schema id 999"), "{letters:?}");
    assert!(letters[1][0].contains("wire format"), "{letters:?}");
    // Every cat has 21 or 22 readings over both schema versions: each fires once, at its 20th.
    let busy = tokio::task::block_in_place(|| {
        crate::alerts::read_alerts(&kafka, "busy-cats", 7, Duration::from_secs(2))
    })?;
    let mut fired: Vec<(String, serde_json::Value)> = busy
        .iter()
        .map(|(key, alert)| (key.clone(), alert["readings"].clone()))
        .collect();
    fired.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(String, serde_json::Value)> = (0..7)
        .map(|cat| (format!("cat-{cat}"), serde_json::json!(20)))
        .collect();
    assert_eq!(fired, want, "{busy:?}");
    sidecar.stop().await?;
    Ok(())
}

/// Produces `batches` batches of `size` interactions (numbered from 0) and waits for each to
/// land in the interactions table before the next, so that each lands in commits of its own.
async fn land_in_commits(kafka: &Kafka, fjord: &Fjord, batches: u64, size: u64) -> Result<()> {
    for batch in 0..batches {
        let events: Vec<_> = (batch * size..(batch + 1) * size)
            .map(interaction)
            .collect();
        kafka.produce(INTERACTIONS_PIPELINE.1, &events).await?;
        wait_for_count(
            fjord,
            &format!("SELECT count(*) FROM iceberg.{}", INTERACTIONS_PIPELINE.2),
            ((batch + 1) * size) as i64,
            Duration::from_secs(60),
        )
        .await?;
    }
    Ok(())
}

/// Runs `fjord maintain` (the test build's binary) with `args`; its stdout.
fn run_maintain(config: &Path, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new(fjord_binary())
        .args(["--log", "warn", "maintain", "--config"])
        .arg(config)
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "fjord maintain failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_expires_snapshots_but_keeps_the_ones_holding_the_offsets() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 2).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "maintain", &[INTERACTIONS_PIPELINE], "")?;
    let table = "iceberg.data_on_eks.cat_interactions_raw";
    let count_sql = format!("SELECT count(*) FROM {table}");
    let sidecar = start_sidecar(&config, &[]).await?;
    // Several commits, so several snapshots.
    land_in_commits(&kafka, &fjord, 5, 200).await?;
    sidecar.stop().await?;
    // Two commits by someone else on top: their snapshots carry no offsets, so the sidecar
    // finds its offsets two snapshots back. The first leaves out the partition column.
    let client = fjord.connect().await?;
    client
        .simple_query(&format!(
            "INSERT INTO {table} (event_id, interaction_type) VALUES ('manual-0', 'pet')"
        ))
        .await?;
    client
        .simple_query(&format!(
            "INSERT INTO {table} (event_id, event_time, interaction_type) \
             VALUES ('manual-1', TIMESTAMPTZ '2026-11-02 10:00:00Z', 'pet')"
        ))
        .await?;
    let manual = query_text(
        &client,
        &format!(
            "SELECT event_id, event_time FROM {table} WHERE event_id LIKE 'manual-%' ORDER BY 1"
        ),
    )
    .await?;
    assert_eq!(manual[0], vec!["manual-0", "NULL"]);
    assert!(
        manual[1][1].starts_with("2026-11-02 10:00:00"),
        "{manual:?}"
    );

    let dry = run_maintain(
        &config,
        &[
            "--older-than",
            "0s",
            "--retain-last",
            "1",
            "--dry-run",
            "--no-compact",
        ],
    )?;
    let line = dry
        .lines()
        .find(|line| line.starts_with("data_on_eks.cat_interactions_raw:"))
        .with_context(|| format!("no report for the table in {dry:?}"))?;
    assert!(line.contains("-> 3 (dry run) (newest 3 kept"), "{line}");
    let before: usize = line
        .split_whitespace()
        .nth(1)
        .context("a snapshot count")?
        .parse()?;
    assert!(before >= 7, "{line}");
    let done = run_maintain(
        &config,
        &["--older-than", "0s", "--retain-last", "1", "--no-compact"],
    )?;
    assert!(
        done.contains(&format!(
            "data_on_eks.cat_interactions_raw: {before} snapshots -> 3 (newest 3 kept"
        )),
        "{done}"
    );
    // Nothing more to expire.
    let again = run_maintain(
        &config,
        &[
            "--older-than",
            "0s",
            "--retain-last",
            "1",
            "--table",
            "data_on_eks.cat_interactions_raw",
            "--no-compact",
        ],
    )?;
    assert!(again.contains("3 snapshots -> 3"), "{again}");
    // The data is intact, and a restarted sidecar still finds its offsets: nothing is read twice.
    assert_eq!(query_text(&client, &count_sql).await?[0][0], "1002");
    let sidecar = start_sidecar(&config, &[]).await?;
    let events: Vec<_> = (1000..1300).map(interaction).collect();
    kafka.produce("cat-interactions", &events).await?;
    wait_for_count(&fjord, &count_sql, 1302, Duration::from_secs(60)).await?;
    sidecar.stop().await?;
    let distinct = query_text(
        &client,
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table} \
             WHERE _kafka_offset IS NOT NULL)"
        ),
    )
    .await?;
    assert_eq!(distinct[0][0], "1300");
    // Mistakes are refused with the reason.
    let bad = run_maintain(&config, &["--older-than", "soon"]).unwrap_err();
    assert!(bad.to_string().contains("--older-than `soon`"), "{bad}");
    Ok(())
}

/// What PyIceberg reads of the interactions table of `fjord`'s catalog (see
/// `python/pyiceberg_check.py`).
async fn pyiceberg_view(fjord: &Fjord) -> Result<serde_json::Value> {
    pyiceberg_view_of(fjord, INTERACTIONS_PIPELINE.2).await
}

/// What PyIceberg reads of `table` (`schema.name` in the `iceberg` catalog).
async fn pyiceberg_view_of(fjord: &Fjord, table: &str) -> Result<serde_json::Value> {
    let venv = fjord_tests::test_venv()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pyiceberg_check.py");
    let directory = fjord.directory.path();
    let output = tokio::process::Command::new(venv.join("bin/python"))
        .arg(script)
        .arg("iceberg")
        .arg(directory.join("catalog.db"))
        .arg(directory.join("warehouse"))
        .arg(table)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "PyIceberg could not read the table: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The metadata files of a table (`schema.name`) in the warehouse, oldest first.
fn metadata_files(fjord: &Fjord, table: &str) -> Result<Vec<PathBuf>> {
    let (schema, name) = table.split_once('.').context("schema.table")?;
    let directory = fjord
        .directory
        .path()
        .join("warehouse")
        .join(schema)
        .join(name)
        .join("metadata");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".metadata.json") {
            files.push(path);
        }
    }
    // Named `<version>-<uuid>.metadata.json`, the version zero-padded.
    files.sort();
    Ok(files)
}

/// The Parquet files under a table's directory in the warehouse, live or not.
fn parquet_files_on_disk(fjord: &Fjord, table: &str) -> Result<usize> {
    fn walk(dir: &Path, found: &mut usize) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, found)?;
            } else if path.extension().is_some_and(|ext| ext == "parquet") {
                *found += 1;
            }
        }
        Ok(())
    }
    let (schema, name) = table.split_once('.').context("schema.table")?;
    let mut found = 0;
    walk(
        &fjord
            .directory
            .path()
            .join("warehouse")
            .join(schema)
            .join(name),
        &mut found,
    )?;
    Ok(found)
}

/// From `fjord maintain`'s expiry line for the interactions table ("t: 5 snapshots -> 3 (dry
/// run) (newest 3 kept for the Kafka offsets); ..."): the snapshots there are now, and how many
/// of the newest the offsets need.
fn expiry_counts(output: &str) -> Result<(usize, usize)> {
    let line = output
        .lines()
        .find(|line| {
            line.starts_with("data_on_eks.cat_interactions_raw:") && line.contains(" snapshots -> ")
        })
        .with_context(|| format!("no expiry report in {output:?}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let snapshots = words
        .iter()
        .position(|word| *word == "snapshots")
        .and_then(|at| words.get(at - 1)?.parse().ok())
        .with_context(|| format!("no snapshot count in {line}"))?;
    let for_offsets = words
        .iter()
        .position(|word| *word == "(newest")
        .and_then(|at| words.get(at + 1)?.parse().ok())
        .with_context(|| format!("no offsets count in {line}"))?;
    Ok((snapshots, for_offsets))
}

/// The figures of `fjord maintain`'s compaction line for the interactions table.
#[derive(Debug)]
struct CompactLine {
    merged: usize,
    partitions: usize,
    written: usize,
    manifests_before: usize,
    manifests_after: usize,
}

impl CompactLine {
    fn find(output: &str) -> Result<CompactLine> {
        let line = output
            .lines()
            .find(|line| {
                line.starts_with("data_on_eks.cat_interactions_raw:")
                    && line.contains("small files")
            })
            .with_context(|| format!("no compaction report in {output:?}"))?;
        // "t: 8 small files (77.3 KiB) in 2 partitions -> 2 files (40.1 KiB); data manifests 7 -> 1"
        let words: Vec<&str> = line.split_whitespace().collect();
        let before = |word: &str| -> Result<usize> {
            let at = words
                .iter()
                .position(|w| w.trim_end_matches(';') == word)
                .with_context(|| format!("no `{word}` in {line}"))?;
            Ok(words[at - 1].parse()?)
        };
        let manifests = words
            .iter()
            .position(|w| *w == "manifests")
            .with_context(|| format!("no manifests in {line}"))?;
        Ok(CompactLine {
            merged: before("small")?,
            partitions: before("partitions")?,
            written: words[words.iter().position(|w| *w == "->").context("->")? + 1].parse()?,
            manifests_before: words[manifests + 1].parse()?,
            manifests_after: words[manifests + 3].trim_end_matches(';').parse()?,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_merges_small_files_while_the_sidecar_keeps_landing() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 2).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "compact", &[INTERACTIONS_PIPELINE], "")?;
    let table = format!("iceberg.{}", INTERACTIONS_PIPELINE.2);
    let count_sql = format!("SELECT count(*) FROM {table}");
    let rows_sql = format!(
        "SELECT _kafka_partition, _kafka_offset, event_id, event_time, visitor_id, cat_id, \
         interaction_type, duration_seconds, _kafka_timestamp FROM {table} ORDER BY 1, 2"
    );
    let client = fjord.connect().await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    // Six commits over three days of event time: 3 files for day 1, 4 for day 2, 1 for day 3.
    land_in_commits(&kafka, &fjord, 6, 500).await?;
    let rows_before = query_text(&client, &rows_sql).await?;
    assert_eq!(rows_before.len(), 3000);

    // The sidecar is running (idle) while its table is compacted.
    let dry = run_maintain(&config, &["--dry-run", "--retain-last", "1000"])?;
    let planned = CompactLine::find(&dry)?;
    // Days 1 and 2 have several files each (how many depends on how the commits fell).
    assert!(planned.merged >= 7 && planned.partitions >= 2, "{dry}");
    assert_eq!(planned.written, 0, "{dry}");
    assert!(dry.contains("(dry run)"), "{dry}");
    assert!(
        query_text(&client, &rows_sql).await? == rows_before,
        "a dry run changed rows"
    );
    let metadata_before = metadata_files(&fjord, INTERACTIONS_PIPELINE.2)?;
    let done = CompactLine::find(&run_maintain(&config, &["--retain-last", "1000"])?)?;
    assert_eq!(done.merged, planned.merged, "{done:?}");
    // The replace snapshot is committed in a new metadata file, which names the one before it;
    // that one is left as it was (readers may be reading it).
    let metadata_after = metadata_files(&fjord, INTERACTIONS_PIPELINE.2)?;
    assert!(
        metadata_after.len() > metadata_before.len(),
        "{metadata_before:?} -> {metadata_after:?}"
    );
    let newest = metadata_after.last().context("no metadata file")?;
    let read = |path: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    };
    let previous = read(newest)?["metadata-log"]
        .as_array()
        .and_then(|log| log.last())
        .and_then(|entry| entry["metadata-file"].as_str())
        .and_then(|file| file.rsplit('/').next())
        .map(|name| newest.with_file_name(name))
        .context("the newest metadata file names no previous one")?;
    assert_ne!(&previous, newest, "a metadata file was written over");
    assert_ne!(
        read(&previous)?["current-snapshot-id"],
        read(newest)?["current-snapshot-id"],
        "{previous:?} and {newest:?}"
    );
    assert_eq!(done.written, done.partitions, "{done:?}");
    assert!(done.manifests_before >= 6, "{done:?}");
    assert_eq!(done.manifests_after, 1, "{done:?}");
    // Every row is there once, with every value as it was.
    assert!(
        query_text(&client, &rows_sql).await? == rows_before,
        "compaction changed rows"
    );
    let seen = pyiceberg_view(&fjord).await?;
    assert_eq!(seen["operation"], "replace", "{seen}");
    assert_eq!(seen["rows"], 3000, "{seen}");
    assert_eq!(seen["distinct_offsets"], 3000, "{seen}");
    assert_eq!(seen["data_files"], 3, "{seen}");
    assert_eq!(seen["codecs"], serde_json::json!(["ZSTD"]), "{seen}");
    // Nothing is left to merge: day 3 has one file.
    let again = CompactLine::find(&run_maintain(&config, &["--retain-last", "1000"])?)?;
    assert_eq!((again.merged, again.manifests_after), (0, 1), "{again:?}");

    // The sidecar lands on top of the compacted table, and goes on landing while compaction
    // runs again and again beside it.
    let producer = {
        let producer = kafka.producer()?;
        tokio::spawn(async move {
            for chunk in 0..10u64 {
                let events: Vec<_> = (3000 + chunk * 300..3000 + (chunk + 1) * 300)
                    .map(interaction)
                    .collect();
                produce_with(&producer, "cat-interactions", &events).await?;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            anyhow::Ok(())
        })
    };
    for _ in 0..4 {
        run_maintain(&config, &["--retain-last", "1000"])?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    producer.await??;
    wait_for_count(&fjord, &count_sql, 6000, Duration::from_secs(60)).await?;
    run_maintain(&config, &["--retain-last", "1000"])?;
    let distinct = query_text(
        &client,
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table})"
        ),
    )
    .await?;
    assert_eq!(distinct[0][0], "6000");
    let first: Vec<Vec<String>> = query_text(&client, &rows_sql)
        .await?
        .into_iter()
        .filter(|row| row[2][2..].parse::<u64>().is_ok_and(|n| n < 3000))
        .collect();
    assert!(first == rows_before, "the first 3000 events' rows changed");
    // The newest snapshot is the sidecar's again.
    let events: Vec<_> = (6000..6100).map(interaction).collect();
    kafka.produce("cat-interactions", &events).await?;
    wait_for_count(&fjord, &count_sql, 6100, Duration::from_secs(60)).await?;
    sidecar.stop().await?;

    // Expiry deletes the files compaction replaced once no snapshot left reads them: here only
    // the newest snapshot stays (it holds the offsets), so only its files stay on disk.
    let on_disk = parquet_files_on_disk(&fjord, INTERACTIONS_PIPELINE.2)?;
    let expired = run_maintain(
        &config,
        &["--older-than", "0s", "--retain-last", "1", "--no-compact"],
    )?;
    assert!(expired.contains("-> 1 (newest 1 kept"), "{expired}");
    let deleted: usize = expired
        .split(';')
        .nth(1)
        .and_then(|part| part.split_whitespace().next())
        .with_context(|| format!("no deleted count in {expired:?}"))?
        .parse()?;
    let seen = pyiceberg_view(&fjord).await?;
    assert_eq!(seen["rows"], 6100, "{seen}");
    assert_eq!(seen["distinct_offsets"], 6100, "{seen}");
    let live = seen["data_files"].as_u64().context("a file count")? as usize;
    assert!(deleted > 0, "{expired}");
    assert_eq!(on_disk - deleted, live, "{expired}");
    assert_eq!(
        parquet_files_on_disk(&fjord, INTERACTIONS_PIPELINE.2)?,
        live
    );
    assert_eq!(query_text(&client, &count_sql).await?[0][0], "6100");

    // A restarted sidecar finds its offsets behind the compaction snapshots: nothing twice.
    let sidecar = start_sidecar(&config, &[]).await?;
    let events: Vec<_> = (6100..6200).map(interaction).collect();
    kafka.produce("cat-interactions", &events).await?;
    wait_for_count(&fjord, &count_sql, 6200, Duration::from_secs(60)).await?;
    sidecar.stop().await?;
    // Mistakes are refused with the reason.
    let bad = run_maintain(&config, &["--small-file-size", "big"]).unwrap_err();
    assert!(bad.to_string().contains("--small-file-size `big`"), "{bad}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_over_tls_lands_events_and_a_wrong_password_shows_on_health() -> Result<()> {
    let kafka = Kafka::start_secured(Some(("fjord-ingest", "cat-cafe-secret")), true).await?;
    assert_eq!(kafka.security().map(|s| s.protocol()), Some("sasl_ssl"));
    kafka.create_topic("cat-interactions", 2).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "secured", &[INTERACTIONS_PIPELINE], "")?;
    let events: Vec<_> = (0..2000).map(interaction).collect();
    kafka.produce("cat-interactions", &events).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
        2000,
        Duration::from_secs(60),
    )
    .await?;
    let (status, health) = http_get(sidecar.http_address, "/health").await?;
    assert_eq!(status, 200, "{health}");
    sidecar.stop().await?;

    // The wrong password: nothing is read, and /health says why.
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains("cat-cafe-secret"));
    let wrong = config.with_file_name("wrong-password.toml");
    std::fs::write(&wrong, text.replace("cat-cafe-secret", "not-the-password"))?;
    let sidecar = start_sidecar(&wrong, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, health) = http_get(sidecar.http_address, "/health").await?;
        if status == 503 && health.to_lowercase().contains("authentication") {
            assert!(!health.contains("not-the-password"), "{health}");
            break;
        }
        if Instant::now() > deadline {
            bail!("/health never reported the failed login: {status} {health}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_expires_old_snapshots_by_itself() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 1).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(
        &fjord,
        &kafka,
        "self-maintained",
        &[INTERACTIONS_PIPELINE],
        "",
    )?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(
        "\n[ingest.maintenance]\ninterval = \"500ms\"\nexpire_older_than = \"0s\"\nretain_last = 2\n",
    );
    std::fs::write(&config, text)?;
    let count_sql = "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw";
    let sidecar = start_sidecar(&config, &[]).await?;
    land_in_commits(&kafka, &fjord, 6, 100).await?;
    // Six commits made six snapshots and six small files; the sidecar merges the files and
    // keeps the newest two snapshots, or more when the newest Kafka offsets are further back:
    // a compaction that lands after the last commit adds a snapshot without offsets on top,
    // and two of them (one racing the last commit) leave the offsets three deep.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = run_maintain(
            &config,
            &["--dry-run", "--table", "data_on_eks.cat_interactions_raw"],
        )?;
        let (snapshots, for_offsets) = expiry_counts(&report)?;
        // It merges the six small files of day 1 by itself as well.
        if snapshots == for_offsets.max(2)
            && snapshots < 6
            && CompactLine::find(&report)?.merged == 0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sidecar did not expire snapshots and merge files: {report}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nothing was lost, and the pipeline goes on from its offsets.
    kafka
        .produce("cat-interactions", &[interaction(600)])
        .await?;
    wait_for_count(&fjord, count_sql, 601, Duration::from_secs(60)).await?;
    sidecar.stop().await?;
    Ok(())
}

/// A member of the group that holds the partition and never lands it: the sidecar, given
/// nothing, must say on /health which partition nobody lands, and take over once that member
/// goes. (tansu 0.6 was seen giving every partition to killed members and never rebalancing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_given_no_partitions_reports_the_ones_nobody_lands() -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 1).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "idle", &[INTERACTIONS_PIPELINE], "")?;
    let text = std::fs::read_to_string(&config)?.replace(
        "group_id = \"idle\"",
        "group_id = \"idle\"\nsession_timeout_ms = 6000",
    );
    std::fs::write(&config, text)?;
    // In five record batches: tansu 0.6's ListOffsets answers with the last batch's first
    // offset plus one, so one batch would look like a single record (maybe a transaction's
    // commit marker) waiting.
    for batch in 0..5 {
        let events: Vec<_> = (batch * 100..(batch + 1) * 100).map(interaction).collect();
        kafka.produce("cat-interactions", &events).await?;
    }

    // The squatter: in the group first, and first in member-id order (librdkafka's ids start
    // with the client id), so the range assignment gives it the only partition every time.
    let stop = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicBool::new(false));
    let squatter = {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka.bootstrap)
            .set("group.id", "idle")
            .set("client.id", "aaa-squatter")
            .set("session.timeout.ms", "6000")
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&["cat-interactions"])?;
        let (stop, holding) = (stop.clone(), holding.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
                let count = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                holding.store(count > 0, Ordering::Relaxed);
            }
            // Leaves the group, as a process that ends cleanly does.
            drop(consumer);
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holding.load(Ordering::Relaxed) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the squatter never got the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sidecar = start_sidecar(&config, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let (status, health) = http_get(sidecar.http_address, "/health").await?;
        if status == 503 && health.contains("cat-interactions[0]") {
            break health;
        }
        if Instant::now() > deadline {
            bail!("/health never reported the partition nobody lands: {status} {health}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(report.contains("consumer group `idle`"), "{report}");
    assert_eq!(
        row_count(
            &fjord.connect().await?,
            "iceberg.data_on_eks.cat_interactions_raw"
        )
        .await,
        0
    );

    // The squatter goes: the sidecar gets the partition, lands everything and is healthy.
    stop.store(true, Ordering::Relaxed);
    squatter
        .join()
        .map_err(|_| anyhow::anyhow!("the squatter panicked"))?;
    wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_interactions_raw",
        500,
        Duration::from_secs(90),
    )
    .await?;
    let (status, health) = http_get(sidecar.http_address, "/health").await?;
    assert_eq!(status, 200, "{health}");
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_what_the_sidecar_landed() -> Result<()> {
    let kafka = Kafka::start().await?;
    kafka.create_topic("cat-interactions", 3).await?;
    let fjord = Fjord::start("").await?;
    let config = ingest_config(&fjord, &kafka, "pyiceberg", &[INTERACTIONS_PIPELINE], "")?;
    let sidecar = start_sidecar(&config, &[]).await?;
    land_in_commits(&kafka, &fjord, 3, 1000).await?;
    sidecar.stop().await?;

    let seen = pyiceberg_view(&fjord).await?;
    assert_eq!(seen["rows"], 3000, "{seen}");
    assert_eq!(seen["distinct_offsets"], 3000, "{seen}");
    assert_eq!(
        seen["partition_fields"],
        serde_json::json!(["day"]),
        "{seen}"
    );
    // The offsets in the current snapshot's summary account for every record.
    let recorded: i64 = seen["snapshot_offsets"]["cat-interactions"]
        .as_object()
        .context("offsets of the topic")?
        .values()
        .map(|next| next.as_i64().unwrap_or(0))
        .sum();
    assert_eq!(recorded, 3000, "{seen}");
    assert!(seen["snapshots"].as_u64().unwrap_or(0) >= 3, "{seen}");
    // Iceberg's default codec, which iceberg-rust's writer alone would not apply.
    assert_eq!(seen["codecs"], serde_json::json!(["ZSTD"]), "{seen}");
    Ok(())
}
