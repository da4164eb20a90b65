//! Kafka offsets kept in the lake itself.
//!
//! Every commit of the sidecar puts the whole offset map of its pipeline (topic -> partition ->
//! next offset to read) into the summary of the snapshot it creates. The table is therefore the
//! only source of truth for where reading resumes: the consumer group's own committed offsets are
//! never used.

use std::collections::BTreeMap;

use iceberg::spec::SnapshotRef;
use iceberg::table::Table;

/// Snapshot summary property holding the offset map, as JSON.
pub const OFFSETS_PROPERTY: &str = "fjord.kafka.offsets";
/// Snapshot summary property naming the pipeline that wrote the snapshot.
pub const PIPELINE_PROPERTY: &str = "fjord.pipeline";
/// Snapshot summary property identifying the sidecar process that wrote the snapshot.
pub const WRITER_PROPERTY: &str = "fjord.writer";

/// topic -> partition -> next offset to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(pub BTreeMap<String, BTreeMap<i32, i64>>);

impl Offsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }

    /// Called per record: allocates only for a topic not seen before.
    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        match self.0.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, next);
            }
            None => {
                self.0
                    .insert(topic.to_string(), BTreeMap::from([(partition, next)]));
            }
        }
    }

    /// Overwrites this map's entries with those of `other`.
    pub fn merge(&mut self, other: &Offsets) {
        for (topic, partitions) in &other.0 {
            for (partition, next) in partitions {
                self.set(topic, *partition, *next);
            }
        }
    }

    pub fn to_json(&self) -> String {
        let map: BTreeMap<&str, BTreeMap<String, i64>> = self
            .0
            .iter()
            .map(|(topic, partitions)| {
                (
                    topic.as_str(),
                    partitions
                        .iter()
                        .map(|(partition, next)| (partition.to_string(), *next))
                        .collect(),
                )
            })
            .collect();
        serde_json::to_string(&map).expect("a map of strings and numbers serializes")
    }

    pub fn from_json(text: &str) -> Result<Offsets, String> {
        let map: BTreeMap<String, BTreeMap<String, i64>> =
            serde_json::from_str(text).map_err(|error| error.to_string())?;
        let mut offsets = Offsets::default();
        for (topic, partitions) in map {
            for (partition, next) in partitions {
                let partition: i32 = partition
                    .parse()
                    .map_err(|_| format!("partition `{partition}` is not a number"))?;
                offsets.set(&topic, partition, next);
            }
        }
        Ok(offsets)
    }
}

/// The offsets recorded by the newest snapshot of `table` that carries them, walking back
/// through parents past snapshots written by others (an `INSERT` through fjord serve, say).
/// `property` is [`OFFSETS_PROPERTY`] or a per-pipeline variant of it.
pub fn committed_offsets(table: &Table, property: &str) -> Result<Offsets, String> {
    for snapshot in ancestry(table) {
        if let Some(text) = snapshot.summary().additional_properties.get(property) {
            return Offsets::from_json(text).map_err(|error| {
                format!(
                    "snapshot {} of {} has an unreadable `{property}`: {error}",
                    snapshot.snapshot_id(),
                    table.identifier()
                )
            });
        }
    }
    Ok(Offsets::default())
}

/// The current snapshot and its ancestors, newest first: the path the offsets are read along.
pub fn ancestry(table: &Table) -> Vec<SnapshotRef> {
    let metadata = table.metadata();
    let mut path = Vec::new();
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(current) = snapshot {
        snapshot = current
            .parent_snapshot_id()
            .and_then(|parent| metadata.snapshot_by_id(parent).cloned());
        path.push(current);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_json() {
        let mut offsets = Offsets::default();
        offsets.set("cat-interactions", 0, 42);
        offsets.set("cat-interactions", 5, 7);
        offsets.set("cafe-orders", 1, 1);
        let text = offsets.to_json();
        assert_eq!(Offsets::from_json(&text).unwrap(), offsets);
        assert!(Offsets::from_json("{\"t\":{\"x\":1}}").is_err());
    }

    #[test]
    fn merge_overwrites_only_given_partitions() {
        let mut base = Offsets::default();
        base.set("t", 0, 10);
        base.set("t", 1, 20);
        let mut update = Offsets::default();
        update.set("t", 1, 25);
        base.merge(&update);
        assert_eq!(base.get("t", 0), Some(10));
        assert_eq!(base.get("t", 1), Some(25));
    }
}
