//! Alert rules in the ingest sidecar against a real broker (tansu): the cat-cafe scenario's
//! wellness guardian (per record) and adopter detective (once per visitor) raise exactly the
//! alerts their events call for, on their Kafka topics and in the sidecar's feed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fjord_tests::kafka::{IngestProcess, Kafka};
use fjord_tests::{Fjord, Postgres, http_get};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::ingest::start_sidecar;
use crate::process::fjord_binary;

/// The scenario's two pipelines and three rules (the guardian is one rule per alert type).
/// With `postgres`, the detective also upserts its alerts into that server's
/// `public.potential_adopters`.
/// With `webhook`, the wellness guardian's low-activity rule also posts to that URL.
fn config(
    fjord: &Fjord,
    kafka: &Kafka,
    postgres: Option<&Postgres>,
    webhook: Option<&str>,
) -> Result<PathBuf> {
    let mut text = crate::ingest::sidecar_toml(kafka, "alerts-e2e");
    text.push_str(
        r#"
[ingest.pipelines.cat_wellness]
topics = ["cat-wellness-iot"]
table = "data_on_eks.cat_wellness_iot_raw"
event_time = "event_time"

[ingest.pipelines.cat_interactions]
topics = ["cat-interactions"]
table = "data_on_eks.cat_interactions_raw"
event_time = "event_time"

# The health alerts land in the lake as any topic does, exactly once.
[ingest.pipelines.cat_health_alerts]
topics = ["cat-health-alerts"]
table = "data_on_eks.cat_health_alerts"
event_time = "fired_at"
[ingest.pipelines.cat_health_alerts.commit]
interval = "300ms"
idle = "100ms"

[ingest.rules.low_activity]
sql = """
SELECT cat_id, 'LOW_ACTIVITY' AS alert_type, activity_level, event_time
FROM cat_wellness
WHERE activity_level < 2
"""
key = "cat_id"
kafka_topic = "cat-health-alerts"
WEBHOOK
[ingest.rules.dehydration]
sql = """
SELECT cat_id, 'DEHYDRATION' AS alert_type, hours_since_last_drink, event_time
FROM cat_wellness
WHERE hours_since_last_drink > 8
"""
key = "cat_id"
kafka_topic = "cat-health-alerts"

[ingest.rules.adopter_detective]
sql = """
SELECT visitor_id, COUNT(DISTINCT cat_id) AS cats_liked
FROM cat_interactions
WHERE interaction_type = 'like'
GROUP BY visitor_id
HAVING COUNT(DISTINCT cat_id) > 3
"""
key = "visitor_id"
kafka_topic = "potential-adopters"
"#,
    );
    let webhook = webhook
        .map(|url| format!("webhook_url = \"{url}\"\n"))
        .unwrap_or_default();
    let mut text = text.replace("WEBHOOK\n", &webhook);
    if let Some(postgres) = postgres {
        text.push_str(&postgres.catalog_toml("postgresql"));
        text.push_str(
            "[ingest.rules.adopter_detective.postgres]\ncatalog = \"postgresql\"\ntable = \"public.potential_adopters\"\n",
        );
    }
    let path = fjord.directory.path().join("ingest.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn wellness(n: usize, cat: &str, activity: f64, hours: f64) -> (String, Vec<u8>) {
    let value = format!(
        r#"{{"event_id": "w-{n}", "event_time": "2026-11-03T10:{:02}:00Z", "cat_id": "{cat}", "activity_level": {activity:.1}, "heart_rate_bpm": 120, "hours_since_last_drink": {hours:.1}, "body_temp_c": 38.5}}"#,
        n % 60
    );
    (cat.to_string(), value.into_bytes())
}

fn interaction(n: usize, visitor: &str, cat: &str, kind: &str) -> (String, Vec<u8>) {
    let value = format!(
        r#"{{"event_id": "i-{n}", "event_time": "2026-11-03T11:{:02}:00Z", "visitor_id": "{visitor}", "cat_id": "{cat}", "interaction_type": "{kind}", "duration_seconds": 30}}"#,
        n % 60
    );
    // Keyed by cat, as the cafe's producers do: one visitor's likes spread over partitions.
    (cat.to_string(), value.into_bytes())
}

/// Reads `topic` (every partition, from the start) until `want` records arrived and then
/// `quiet` passed without more; returns the values as JSON with their Kafka keys.
pub(crate) fn read_alerts(
    kafka: &Kafka,
    topic: &str,
    want: usize,
    quiet: Duration,
) -> Result<Vec<(String, serde_json::Value)>> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&list)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut alerts = Vec::new();
    let mut last = Instant::now();
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().context("an alert without a value")?)?;
            alerts.push((key, value));
            last = Instant::now();
        }
        if alerts.len() >= want && last.elapsed() >= quiet {
            return Ok(alerts);
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: wanted {want} alerts within 90 s, got {}: {alerts:?}",
                alerts.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cat_cafe_rules_raise_exactly_the_alerts_their_events_call_for() -> Result<()> {
    let kafka = Kafka::start().await?;
    for (topic, partitions) in [
        ("cat-wellness-iot", 2),
        ("cat-interactions", 3),
        ("cat-health-alerts", 1),
        ("potential-adopters", 1),
    ] {
        kafka.create_topic(topic, partitions).await?;
    }
    let fjord = Fjord::start("").await?;
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE potential_adopters (visitor_id text PRIMARY KEY, cats_liked integer, \
         alert_id text NOT NULL, fired_at timestamptz NOT NULL)",
    )?;
    let (webhook, posted, attempts) = webhook_receiver().await?;
    let config = config(&fjord, &kafka, Some(&postgres), Some(&webhook))?;

    // Wellness: cat-a is listless, cat-b thirsty, cat-c both (twice), cat-d on both limits.
    let readings = [
        ("cat-a", 1.5, 2.0),
        ("cat-b", 6.0, 9.5),
        ("cat-c", 0.5, 10.0),
        ("cat-d", 2.0, 8.0),
        ("cat-e", 7.0, 1.0),
        ("cat-c", 1.0, 12.0),
    ];
    let wellness_events: Vec<_> = readings
        .iter()
        .enumerate()
        .map(|(n, (cat, activity, hours))| wellness(n, cat, *activity, *hours))
        .collect();
    // Interactions: ann likes four distinct cats (one twice, plus a pet that does not count),
    // then a fifth; bob likes three cats many times; cy likes six cats.
    let mut likes = vec![
        ("ann", "cat-1", "like"),
        ("ann", "cat-2", "like"),
        ("ann", "cat-2", "like"),
        ("ann", "cat-3", "pet"),
        ("ann", "cat-3", "like"),
        ("bob", "cat-1", "like"),
        ("bob", "cat-2", "like"),
        ("bob", "cat-3", "like"),
        ("bob", "cat-4", "play"),
    ];
    for round in 0..3 {
        likes.push(("bob", ["cat-1", "cat-2", "cat-3"][round], "like"));
    }
    let first_part: Vec<_> = likes
        .iter()
        .enumerate()
        .map(|(n, (visitor, cat, kind))| interaction(n, visitor, cat, kind))
        .collect();
    let mut second_part = vec![
        interaction(100, "ann", "cat-4", "like"),
        interaction(101, "ann", "cat-5", "like"),
    ];
    for (n, cat) in ["cat-1", "cat-2", "cat-3", "cat-4", "cat-5", "cat-6"]
        .iter()
        .enumerate()
    {
        second_part.push(interaction(200 + n, "cy", cat, "like"));
    }

    kafka.produce("cat-wellness-iot", &wellness_events).await?;
    kafka.produce("cat-interactions", &first_part).await?;
    let sidecar = start_sidecar(&config, &[]).await?;
    // Some records before the rules start, some while they run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.produce("cat-interactions", &second_part).await?;

    let health_alerts = {
        let kafka = &kafka;
        tokio::task::block_in_place(|| {
            read_alerts(kafka, "cat-health-alerts", 6, Duration::from_secs(3))
        })?
    };
    let mut seen: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    for (key, alert) in &health_alerts {
        assert_eq!(key, alert["cat_id"].as_str().unwrap_or_default(), "{alert}");
        assert_eq!(key, alert["key"].as_str().unwrap_or_default(), "{alert}");
        let kind = alert["alert_type"].as_str().unwrap_or_default().to_string();
        seen.entry((key.clone(), kind))
            .or_default()
            .push(alert.clone());
    }
    let kinds: Vec<(&str, &str, usize)> = seen
        .iter()
        .map(|((cat, kind), alerts)| (cat.as_str(), kind.as_str(), alerts.len()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("cat-a", "LOW_ACTIVITY", 1),
            ("cat-b", "DEHYDRATION", 1),
            ("cat-c", "DEHYDRATION", 2),
            ("cat-c", "LOW_ACTIVITY", 2),
        ],
        "{health_alerts:?}"
    );
    let low = &seen[&("cat-a".to_string(), "LOW_ACTIVITY".to_string())][0];
    assert_eq!(low["rule"], "low_activity");
    assert_eq!(low["activity_level"], 1.5);
    assert!(
        low["event_time"]
            .as_str()
            .is_some_and(|time| time.starts_with("2026-11-03T10:00:00")),
        "{low}"
    );
    let ids: std::collections::BTreeSet<_> = health_alerts
        .iter()
        .map(|(_, alert)| alert["alert_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        health_alerts.len(),
        "alert ids are unique: {ids:?}"
    );

    let adopters = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "potential-adopters", 2, Duration::from_secs(3))
    })?;
    let mut found: Vec<(String, serde_json::Value, serde_json::Value)> = adopters
        .iter()
        .map(|(key, alert)| {
            (
                key.clone(),
                alert["cats_liked"].clone(),
                alert["alert_id"].clone(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [
            (
                "ann".to_string(),
                serde_json::json!(4),
                serde_json::json!("adopter_detective/ann/1")
            ),
            (
                "cy".to_string(),
                serde_json::json!(4),
                serde_json::json!("adopter_detective/cy/1")
            ),
        ],
        "{adopters:?}"
    );

    // The webhook: its first two answers were 503s, and the retries brought every alert once.
    let mut hooked: Vec<String> = Vec::new();
    for body in posted.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let batch: Vec<serde_json::Value> = serde_json::from_str(body)?;
        hooked.extend(
            batch
                .iter()
                .map(|alert| alert["alert_id"].as_str().unwrap_or_default().to_string()),
        );
    }
    hooked.sort();
    let mut low: Vec<String> = health_alerts
        .iter()
        .filter(|(_, alert)| alert["rule"] == "low_activity")
        .map(|(_, alert)| alert["alert_id"].as_str().unwrap_or_default().to_string())
        .collect();
    low.sort();
    assert_eq!(hooked, low, "the webhook got each low-activity alert once");
    assert!(
        attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the webhook was retried after its 503s"
    );

    // The detective's Postgres table, upserted by visitor.
    let client = postgres.connect("workshop").await?;
    let rows: Vec<(String, i32, String)> = client
        .query(
            "SELECT visitor_id, cats_liked, alert_id FROM potential_adopters ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            ("ann".to_string(), 4, "adopter_detective/ann/1".to_string()),
            ("cy".to_string(), 4, "adopter_detective/cy/1".to_string()),
        ]
    );

    // The alerts table in the lake, queried through fjord serve as the dashboard would.
    crate::ingest::wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_health_alerts",
        6,
        Duration::from_secs(60),
    )
    .await?;
    let client = fjord.connect().await?;
    let rows = fjord_tests::query_text(
        &client,
        "SELECT alert_type, count(DISTINCT cat_id), count(*) FROM iceberg.data_on_eks.cat_health_alerts \
         GROUP BY alert_type ORDER BY alert_type",
    )
    .await?;
    assert_eq!(
        rows,
        [
            vec!["DEHYDRATION".to_string(), "2".into(), "3".into()],
            vec!["LOW_ACTIVITY".to_string(), "2".into(), "3".into()],
        ]
    );

    // The live feed and the sidecar's own reports agree.
    let (status, feed) = http_get(sidecar.http_address, "/alerts?rule=adopter_detective").await?;
    assert_eq!(status, 200, "{feed}");
    let feed: Vec<serde_json::Value> = serde_json::from_str(&feed)?;
    assert_eq!(feed.len(), 2, "{feed:?}");
    let (status, health) = http_get(sidecar.http_address, "/health").await?;
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"adopter_detective\""), "{health}");
    let (_, metrics) = http_get(sidecar.http_address, "/metrics").await?;
    assert!(
        metrics.contains("fjord_rule_alerts_total{rule=\"low_activity\"} 3"),
        "{metrics}"
    );
    sidecar.stop().await?;
    Ok(())
}

/// The per-minute temperature rule over `cat-wellness-iot`, its late records landed in
/// `data_on_eks.cat_wellness_late`; with `postgres`, its results upserted into that server's
/// `public.cat_temperature_minutes`; with `idle_timeout`, that setting.
fn window_config(
    fjord: &Fjord,
    kafka: &Kafka,
    postgres: Option<&Postgres>,
    idle_timeout: Option<&str>,
) -> Result<PathBuf> {
    let mut text = crate::ingest::sidecar_toml(kafka, "windows-e2e");
    text.push_str(
        r#"
[ingest.pipelines.cat_wellness]
topics = ["cat-wellness-iot"]
table = "data_on_eks.cat_wellness_iot_raw"
event_time = "event_time"

[ingest.pipelines.cat_wellness_late]
topics = ["cat-wellness-late"]
table = "data_on_eks.cat_wellness_late"
[ingest.pipelines.cat_wellness_late.commit]
interval = "300ms"
idle = "100ms"

[ingest.rules.temperature_per_minute]
sql = """
SELECT cat_id, window_start, window_end, count(*) AS readings, avg(body_temp_c) AS avg_temp_c
FROM cat_wellness
GROUP BY cat_id, TUMBLE(event_time, INTERVAL '1' MINUTE)
"""
key = "cat_id"
kafka_topic = "cat-temperature-minutes"
late_events_topic = "cat-wellness-late"
watermark_delay = "10s"
"#,
    );
    if let Some(idle) = idle_timeout {
        text.push_str(&format!("idle_timeout = \"{idle}\"\n"));
    }
    if let Some(postgres) = postgres {
        text.push_str(&postgres.catalog_toml("postgresql"));
        text.push_str(
            "[ingest.rules.temperature_per_minute.postgres]\ncatalog = \"postgresql\"\n\
             table = \"public.cat_temperature_minutes\"\nkey = [\"cat_id\", \"window_start\"]\n",
        );
    }
    let path = fjord.directory.path().join("ingest.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A wellness reading of `cat` at 2026-11-03T10:`time`Z.
fn temperature(n: usize, cat: &str, time: &str, temp: f64) -> (String, Vec<u8>) {
    let value = format!(
        r#"{{"event_id": "t-{n}", "event_time": "2026-11-03T10:{time}Z", "cat_id": "{cat}", "activity_level": 5.0, "heart_rate_bpm": 120, "hours_since_last_drink": 1.0, "body_temp_c": {temp:.1}}}"#
    );
    (cat.to_string(), value.into_bytes())
}

/// A per-minute temperature rule over event time, fed readings out of order and one too late:
/// each cat's minute gives its result once the watermark passes (the last one once the stream
/// was quiet for the idle timeout), to Kafka and by upsert to a Postgres table, and the late
/// reading lands in the lake with the rule and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tumbling_window_rule_gives_each_minute_once_and_keeps_late_readings() -> Result<()> {
    let kafka = Kafka::start().await?;
    // One partition: the order the readings arrive in is the order they were produced.
    for topic in [
        "cat-wellness-iot",
        "cat-temperature-minutes",
        "cat-wellness-late",
    ] {
        kafka.create_topic(topic, 1).await?;
    }
    let fjord = Fjord::start("").await?;
    let postgres = Postgres::start()?;
    postgres.psql_admin(
        "workshop",
        "CREATE TABLE cat_temperature_minutes (cat_id text, window_start timestamptz, \
         window_end timestamptz, readings integer, avg_temp_c double precision, \
         alert_id text NOT NULL, PRIMARY KEY (cat_id, window_start))",
    )?;
    let config = window_config(&fjord, &kafka, Some(&postgres), Some("2s"))?;
    let readings = [
        ("cat-a", "00:05", 38.0),
        ("cat-a", "00:50", 39.0),
        ("cat-b", "00:30", 40.0),
        ("cat-a", "01:05", 38.5),
        // Behind the latest reading, within the 10 s watermark delay: it counts.
        ("cat-a", "00:58", 37.0),
        // The watermark reaches 10:01:02 and closes the first minute.
        ("cat-a", "01:12", 38.0),
        // For the closed minute: late.
        ("cat-a", "00:59", 50.0),
        // Closes the second minute. Its own minute closes when the stream has been quiet for
        // the idle timeout.
        ("cat-b", "02:30", 39.0),
    ];
    let events: Vec<_> = readings
        .iter()
        .enumerate()
        .map(|(n, (cat, time, temp))| temperature(n, cat, time, *temp))
        .collect();
    kafka.produce("cat-wellness-iot", &events).await?;
    let sidecar = start_sidecar(&config, &[]).await?;

    let minutes = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "cat-temperature-minutes", 4, Duration::from_secs(3))
    })?;
    let mut found: Vec<(String, String, serde_json::Value, serde_json::Value, String)> = minutes
        .iter()
        .map(|(key, alert)| {
            (
                key.clone(),
                alert["window_start"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                alert["readings"].clone(),
                alert["avg_temp_c"].clone(),
                alert["alert_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let minute = |cat: &str, start: &str, readings: u64, temp: f64| {
        (
            cat.to_string(),
            format!("2026-11-03T10:{start}:00Z"),
            serde_json::json!(readings),
            serde_json::json!(temp),
            format!("temperature_per_minute/{cat}/2026-11-03T10:{start}:00.000Z"),
        )
    };
    assert_eq!(
        found,
        [
            minute("cat-a", "00", 3, 38.0),
            minute("cat-a", "01", 2, 38.25),
            minute("cat-b", "00", 1, 40.0),
            minute("cat-b", "02", 1, 39.0),
        ],
        "{minutes:?}"
    );

    // The per-cat per-minute table in Postgres, upserted by (cat, minute).
    let client = postgres.connect("workshop").await?;
    let rows: Vec<(String, String, i32, f64)> = client
        .query(
            "SELECT cat_id, to_char(window_start AT TIME ZONE 'UTC', 'HH24:MI'), readings, \
             avg_temp_c FROM cat_temperature_minutes ORDER BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert_eq!(
        rows,
        [
            ("cat-a".to_string(), "10:00".to_string(), 3, 38.0),
            ("cat-a".to_string(), "10:01".to_string(), 2, 38.25),
            ("cat-b".to_string(), "10:00".to_string(), 1, 40.0),
            ("cat-b".to_string(), "10:02".to_string(), 1, 39.0),
        ]
    );

    // The late reading, in the lake with the rule and the reason.
    crate::ingest::wait_for_count(
        &fjord,
        "SELECT count(*) FROM iceberg.data_on_eks.cat_wellness_late",
        1,
        Duration::from_secs(60),
    )
    .await?;
    let client = fjord.connect().await?;
    let rows = fjord_tests::query_text(
        &client,
        "SELECT rule, event_time, watermark, \"offset\", reason LIKE '%too late%', record \
         FROM iceberg.data_on_eks.cat_wellness_late",
    )
    .await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..5],
        [
            "temperature_per_minute".to_string(),
            "2026-11-03T10:00:59.000Z".into(),
            "2026-11-03T10:01:02.000Z".into(),
            "6".into(),
            "t".into(),
        ],
        "{rows:?}"
    );
    assert!(rows[0][5].contains("\"body_temp_c\":50.0"), "{rows:?}");
    let (_, health) = http_get(sidecar.http_address, "/health").await?;
    assert!(health.contains("\"temperature_per_minute\""), "{health}");
    sidecar.stop().await?;
    Ok(())
}

/// kill -9 while a minute is open: the restarted sidecar rebuilds the open window from the
/// topic, so the minute that spans the crash counts the readings from both sides, and no
/// result or late record from before the crash is given again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_open_across_a_kill_counts_both_sides_and_repeats_nothing() -> Result<()> {
    let kafka = Kafka::start().await?;
    for topic in [
        "cat-wellness-iot",
        "cat-temperature-minutes",
        "cat-wellness-late",
    ] {
        kafka.create_topic(topic, 1).await?;
    }
    let fjord = Fjord::start("").await?;
    let config = window_config(&fjord, &kafka, None, None)?;
    let produce = |readings: &[(&str, &str, f64)], first: usize| {
        readings
            .iter()
            .enumerate()
            .map(|(n, (cat, time, temp))| temperature(first + n, cat, time, *temp))
            .collect::<Vec<_>>()
    };
    let before = produce(
        &[
            ("cat-a", "00:10", 38.0),
            ("cat-b", "00:20", 39.0),
            ("cat-a", "01:05", 38.0),
            // Closes 10:00 for both cats.
            ("cat-b", "01:15", 40.0),
            // Late for 10:00.
            ("cat-a", "00:30", 45.0),
        ],
        0,
    );
    kafka.produce("cat-wellness-iot", &before).await?;
    let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    tokio::task::block_in_place(|| {
        read_alerts(
            &kafka,
            "cat-temperature-minutes",
            2,
            Duration::from_millis(200),
        )
    })?;
    tokio::time::sleep(Duration::from_millis(rand_millis(1000))).await;
    sidecar.kill()?;

    let after = produce(
        &[
            ("cat-a", "01:40", 40.0),
            ("cat-b", "01:50", 42.0),
            // Closes 10:01 for both cats.
            ("cat-a", "02:30", 38.0),
        ],
        10,
    );
    kafka.produce("cat-wellness-iot", &after).await?;
    let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    let summary = |alerts: &[(String, serde_json::Value)]| {
        let mut found: Vec<(String, serde_json::Value, serde_json::Value)> = alerts
            .iter()
            .map(|(_, alert)| {
                (
                    alert["alert_id"].as_str().unwrap_or_default().to_string(),
                    alert["readings"].clone(),
                    alert["avg_temp_c"].clone(),
                )
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    };
    let minute = |cat: &str, start: &str, readings: u64, temp: f64| {
        (
            format!("temperature_per_minute/{cat}/2026-11-03T10:{start}:00.000Z"),
            serde_json::json!(readings),
            serde_json::json!(temp),
        )
    };
    let want = [
        minute("cat-a", "00", 1, 38.0),
        minute("cat-a", "01", 2, 39.0),
        minute("cat-b", "00", 1, 39.0),
        minute("cat-b", "01", 2, 41.0),
    ];
    let alerts = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "cat-temperature-minutes", 4, Duration::from_secs(5))
    })?;
    assert_eq!(summary(&alerts), want, "{alerts:?}");
    let late = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "cat-wellness-late", 1, Duration::from_secs(1))
    })?;
    assert_eq!(late.len(), 1, "the late reading once: {late:?}");
    assert_eq!(late[0].1["offset"], 4, "{late:?}");

    // Once more, with nothing new: the replay gives nothing that was delivered.
    sidecar.kill()?;
    let _sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let alerts = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "cat-temperature-minutes", 4, Duration::from_secs(2))
    })?;
    assert_eq!(summary(&alerts), want, "{alerts:?}");
    let late = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "cat-wellness-late", 1, Duration::from_secs(1))
    })?;
    assert_eq!(late.len(), 1, "{late:?}");
    Ok(())
}

/// kill -9 between batches of likes: the restarted sidecar rebuilds the detective's state, so
/// a visitor whose fourth cat comes after the crash still fires, and nobody fires twice, after
/// this restart or the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_rule_killed_and_restarted_neither_repeats_nor_misses_an_alert() -> Result<()> {
    let kafka = Kafka::start().await?;
    for (topic, partitions) in [
        ("cat-wellness-iot", 1),
        ("cat-interactions", 3),
        ("cat-health-alerts", 1),
        ("potential-adopters", 1),
    ] {
        kafka.create_topic(topic, partitions).await?;
    }
    let fjord = Fjord::start("").await?;
    let config = config(&fjord, &kafka, None, None)?;
    let likes = |visitor: &str, cats: &[&str], first: usize| -> Vec<(String, Vec<u8>)> {
        cats.iter()
            .enumerate()
            .map(|(n, cat)| interaction(first + n, visitor, cat, "like"))
            .collect()
    };
    let mut before = likes("bob", &["cat-1", "cat-2", "cat-3", "cat-4"], 0);
    before.extend(likes("ann", &["cat-1", "cat-2", "cat-3"], 10));
    before.extend(likes("cy", &["cat-5", "cat-6"], 20));
    kafka.produce("cat-interactions", &before).await?;

    let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    let fired = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "potential-adopters", 1, Duration::from_millis(200))
    })?;
    assert_eq!(fired[0].0, "bob", "{fired:?}");
    tokio::time::sleep(Duration::from_millis(rand_millis(1000))).await;
    sidecar.kill()?;

    let mut after = likes("ann", &["cat-4"], 30);
    after.extend(likes("bob", &["cat-5"], 31));
    after.extend(likes("cy", &["cat-7", "cat-8"], 32));
    after.extend(likes(
        "dee",
        &["cat-1", "cat-2", "cat-3", "cat-4", "cat-5"],
        40,
    ));
    kafka.produce("cat-interactions", &after).await?;
    let mut sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    let check = |alerts: &[(String, serde_json::Value)]| {
        let mut ids: Vec<&str> = alerts
            .iter()
            .map(|(_, alert)| alert["alert_id"].as_str().unwrap_or_default())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "adopter_detective/ann/1",
                "adopter_detective/bob/1",
                "adopter_detective/cy/1",
                "adopter_detective/dee/1"
            ],
            "{alerts:?}"
        );
        for (_, alert) in alerts {
            assert_eq!(alert["cats_liked"], 4, "{alert}");
        }
    };
    let alerts = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "potential-adopters", 4, Duration::from_secs(5))
    })?;
    check(&alerts);

    // Once more, with nothing new: the replay raises nothing that was delivered.
    sidecar.kill()?;
    let _sidecar = IngestProcess::spawn(&fjord_binary(), &config, &[])?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let alerts = tokio::task::block_in_place(|| {
        read_alerts(&kafka, "potential-adopters", 4, Duration::from_secs(2))
    })?;
    check(&alerts);
    Ok(())
}

/// A pause of up to `max` milliseconds, different from run to run.
fn rand_millis(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos % max
}

/// The live page in headless Chromium: opened before the events exist, it shows each alert as
/// a row (newest first) with per-rule counts and the last hour's chart, and filters by rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_alert_page_shows_alerts_as_they_fire() -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let kafka = Kafka::start().await?;
    for (topic, partitions) in [
        ("cat-wellness-iot", 2),
        ("cat-interactions", 1),
        ("cat-health-alerts", 1),
        ("potential-adopters", 1),
    ] {
        kafka.create_topic(topic, partitions).await?;
    }
    let fjord = Fjord::start("").await?;
    let config = config(&fjord, &kafka, None, None)?;
    let sidecar = start_sidecar(&config, &[]).await?;
    let (status, page) = http_get(sidecar.http_address, "/").await?;
    assert_eq!(status, 200);
    // Self-contained: no scripts, styles, fonts or images loaded from anywhere.
    for loads in ["src=", "<link", "@import", "url("] {
        assert!(!page.contains(loads), "the page loads something: {loads}");
    }

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("alert-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let python = fjord_tests::test_venv()?.join("bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/alert_page_check.py");
    let mut browser = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}/", sidecar.http_address))
        .arg(&screenshot)
        .arg("4")
        .arg("dehydration")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let mut lines = BufReader::new(browser.stdout.take().context("stdout")?).lines();
    let ready = tokio::task::block_in_place(|| lines.next()).context("the page script ended")??;
    assert_eq!(ready, "ready");

    let readings = [
        ("cat-a", 1.5, 2.0),
        ("cat-b", 6.0, 9.5),
        ("cat-c", 0.5, 10.0),
        ("cat-d", 5.0, 3.0),
    ];
    let events: Vec<_> = readings
        .iter()
        .enumerate()
        .map(|(n, (cat, activity, hours))| wellness(n, cat, *activity, *hours))
        .collect();
    kafka.produce("cat-wellness-iot", &events).await?;
    let mut stdin = browser.stdin.take().context("stdin")?;
    writeln!(stdin, "produced")?;
    drop(stdin);
    let report =
        tokio::task::block_in_place(|| lines.next()).context("the page script ended")??;
    let status = tokio::task::block_in_place(|| browser.wait())?;
    assert!(status.success(), "the page script failed: {report}");
    let report: serde_json::Value = serde_json::from_str(&report)?;
    eprintln!(
        "alert page: 4 rows in {:.2} s after the events were produced",
        report["seconds"].as_f64().unwrap_or_default()
    );

    let mut rows: Vec<(String, String)> = report["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .map(|row| {
            (
                row[1].as_str().unwrap_or_default().to_string(),
                row[2].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("dehydration".to_string(), "cat-b".to_string()),
            ("dehydration".to_string(), "cat-c".to_string()),
            ("low_activity".to_string(), "cat-a".to_string()),
            ("low_activity".to_string(), "cat-c".to_string()),
        ],
        "{report}"
    );
    assert!(
        report["rows"][0][3]
            .as_str()
            .is_some_and(|details| details.contains("alert_type=")),
        "{report}"
    );
    assert_eq!(report["counts"][""], "4", "{report}");
    assert_eq!(report["counts"]["low_activity"], "2", "{report}");
    assert_eq!(
        report["filtered"],
        serde_json::json!(["dehydration", "dehydration"])
    );
    assert!(report["bars"].as_u64().unwrap_or(0) >= 1, "{report}");
    assert!(screenshot.exists(), "the screenshot was saved");
    eprintln!("alert page screenshot: {}", screenshot.display());
    sidecar.stop().await?;
    Ok(())
}

/// Bodies a webhook received, shared with its server.
type Posted = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A webhook receiver on a free port: it answers its first two requests 503 and records the
/// bodies of later ones. Returns its URL, the bodies and the number of requests.
async fn webhook_receiver() -> Result<(
    String,
    Posted,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)> {
    use axum::http::StatusCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let posted: Posted = Arc::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let state = (posted.clone(), attempts.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State((posted, attempts)): axum::extract::State<(
                    Posted,
                    Arc<AtomicUsize>,
                )>,
                 body: String| async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    posted.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{address}/hook"), posted, attempts))
}
