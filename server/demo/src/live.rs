//! `fjord demo --live`: the cafe's events, produced into Kafka as they happen, so that a
//! newcomer running `fjord ingest` sees data arrive.
//!
//! The mix follows the scenario: interactions most of all, wellness readings of which about one
//! in five has `activity_level < 2` and some report more than 8 hours since the last drink (the
//! wellness guardian's alerts), check-ins and orders. A few visitors, the keen ones, like many
//! different cats (the adopter detective's alert). Ids are the demo world's cats and visitors.

use std::time::Duration;

use fjord_config::{DemoConfig, KafkaConfig};
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::generate::{INTERACTIONS, MENU, entity_ids, weighted};

/// The topics the generator writes, as in the scenario.
pub const TOPICS: [&str; 4] = [
    "cat-interactions",
    "cat-wellness-iot",
    "visitor-checkins",
    "cafe-orders",
];

/// The topics the scenario's alert rules write (root `config.toml`): alerts, and the readings
/// too late for the fever watch's windows. Created beside the others so that the rules can
/// deliver from the first alert.
pub const ALERT_TOPICS: [&str; 3] = [
    "cat-health-alerts",
    "potential-adopters",
    "cat-wellness-late",
];

/// Partitions of the topics the generator creates.
const PARTITIONS: i32 = 6;

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Events per second over all topics.
    pub rate: f64,
    /// Stop after this many events (run until cancelled when `None`).
    pub limit: Option<u64>,
}

/// Creates the topics if they are missing, then produces events until `shutdown` (or the
/// limit). Returns the number of events produced; `progress` gets a line every few seconds.
pub async fn run_live(
    kafka: &KafkaConfig,
    demo: &DemoConfig,
    options: &LiveOptions,
    shutdown: CancellationToken,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<u64, String> {
    if options.rate.is_nan() || options.rate <= 0.0 {
        return Err("the rate must be more than 0 events per second".into());
    }
    create_topics(kafka).await?;
    let producer: FutureProducer = fjord_ingest::client_config(kafka, None)
        .set("linger.ms", "20")
        .create()
        .map_err(|error| format!("cannot create the Kafka producer: {error}"))?;
    let (cats, visitors) = entity_ids(demo);
    if cats.is_empty() || visitors.is_empty() {
        return Err("the demo world has no cats or no visitors (see [demo])".into());
    }
    let keen: Vec<&String> = visitors.iter().take(visitors.len().div_ceil(20)).collect();
    let mut rng = ChaCha8Rng::from_entropy();
    let tick = Duration::from_millis(100);
    let per_tick = options.rate * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut produced = 0u64;
    let mut interval = tokio::time::interval(tick);
    let mut last_report = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        owed += per_tick;
        let mut pending = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            if options.limit.is_some_and(|limit| produced >= limit) {
                break;
            }
            let (topic, key, value) = event(&mut rng, &cats, &visitors, &keen);
            let delivery = producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                .map_err(|(error, _)| format!("cannot produce to {topic}: {error}"))?;
            pending.push(delivery);
            produced += 1;
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(format!("an event was not delivered: {error}")),
                Err(_) => return Err("the producer shut down".into()),
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = std::time::Instant::now();
            progress(&format!("{produced} events produced"));
        }
        if options.limit.is_some_and(|limit| produced >= limit) {
            break;
        }
    }
    Ok(produced)
}

async fn create_topics(kafka: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = fjord_ingest::client_config(kafka, None)
        .create()
        .map_err(|error| format!("cannot connect to Kafka: {error}"))?;
    let topics: Vec<NewTopic<'_>> = TOPICS
        .iter()
        .chain(&ALERT_TOPICS)
        .map(|topic| NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .map_err(|error| format!("cannot create the demo topics: {error}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// One event: (topic, key, JSON value). Fields are written in the scenario's order.
fn event(
    rng: &mut ChaCha8Rng,
    cats: &[String],
    visitors: &[String],
    keen: &[&String],
) -> (&'static str, String, Vec<u8>) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let event_id = uuid::Uuid::new_v4().to_string();
    let pick = rng.gen_range(0..100);
    let cat = cats.choose(rng).expect("cats").clone();
    if pick < 60 {
        let keen_visitor = rng.gen_bool(0.15);
        let visitor = if keen_visitor {
            (*keen.choose(rng).expect("keen visitors")).clone()
        } else {
            visitors.choose(rng).expect("visitors").clone()
        };
        let kind = if keen_visitor {
            "like"
        } else {
            weighted(rng, INTERACTIONS)
        };
        let value = format!(
            r#"{{"event_id":"{event_id}","event_time":"{now}","visitor_id":"{visitor}","cat_id":"{cat}","interaction_type":"{kind}","duration_seconds":{}}}"#,
            rng.gen_range(5..900)
        );
        ("cat-interactions", cat, value.into_bytes())
    } else if pick < 85 {
        let activity: f64 = rng.gen_range(0.0..10.0);
        let drink: f64 = if rng.gen_bool(0.1) {
            rng.gen_range(8.0..14.0)
        } else {
            rng.gen_range(0.0..8.0)
        };
        let value = format!(
            r#"{{"event_id":"{event_id}","event_time":"{now}","cat_id":"{cat}","activity_level":{activity:.1},"heart_rate_bpm":{},"hours_since_last_drink":{drink:.1},"body_temp_c":{:.1}}}"#,
            rng.gen_range(120..200),
            rng.gen_range(37.5..39.5)
        );
        ("cat-wellness-iot", cat, value.into_bytes())
    } else if pick < 95 {
        let visitor = visitors.choose(rng).expect("visitors").clone();
        let action = if rng.gen_bool(0.5) {
            "check_in"
        } else {
            "check_out"
        };
        let value = format!(
            r#"{{"event_id":"{event_id}","event_time":"{now}","visitor_id":"{visitor}","action":"{action}"}}"#
        );
        ("visitor-checkins", visitor, value.into_bytes())
    } else {
        let visitor = visitors.choose(rng).expect("visitors").clone();
        let mut items = Vec::new();
        let mut total = 0i128;
        for _ in 0..rng.gen_range(1..4) {
            let (sku, cents) = MENU.choose(rng).expect("menu");
            let qty = rng.gen_range(1..3);
            total += cents * qty as i128;
            items.push(format!(
                r#"{{"sku":"{sku}","qty":{qty},"price":{}.{:02}}}"#,
                cents / 100,
                cents % 100
            ));
        }
        let value = format!(
            r#"{{"event_id":"{event_id}","event_time":"{now}","order_id":"{}","visitor_id":"{visitor}","items":[{}],"total_amount":{}.{:02}}}"#,
            uuid::Uuid::new_v4(),
            items.join(","),
            total / 100,
            total % 100
        );
        ("cafe-orders", visitor, value.into_bytes())
    }
}
