//! Routing records by field values to many tables (`table = "cafe.{kind}_events"`).
//!
//! The value of each placeholder's field is read from the record's JSON without decoding the
//! rest of it; `{_kafka_topic}` is the record's topic. Which table a record lands in is decided
//! before decoding, so each table's records are decoded against that table's own columns.

use std::fmt;

use fjord_config::{TOPIC_PLACEHOLDER, TableTemplate};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The table name `template` gives a record of `topic` with JSON `value`, or why the record
/// cannot be routed (it then goes to the dead letters).
pub fn route_record(template: &TableTemplate, topic: &str, value: &[u8]) -> Result<String, String> {
    let fields: Vec<&str> = template.fields().collect();
    let mut values: Vec<Option<String>> = vec![None; fields.len()];
    for (field, slot) in fields.iter().zip(values.iter_mut()) {
        if *field == TOPIC_PLACEHOLDER {
            *slot = Some(topic.to_string());
        }
    }
    if values.iter().any(Option::is_none) {
        let mut deserializer = serde_json::Deserializer::from_slice(value);
        FieldValues {
            fields: &fields,
            values: &mut values,
        }
        .deserialize(&mut deserializer)
        .map_err(|error| format!("cannot route the record: {error}"))?;
    }
    let values = fields
        .iter()
        .zip(values)
        .map(|(field, value)| {
            value.ok_or_else(|| {
                format!("cannot route the record: the field `{field}` is missing or null")
            })
        })
        .collect::<Result<Vec<String>, String>>()?;
    template.render(&values).ok_or_else(|| {
        format!(
            "cannot route the record: the value of {} gives an empty table name",
            fields
                .iter()
                .map(|field| format!("`{field}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Reads the top-level fields named in `fields` into `values` (by position), skipping the rest
/// of the object without building it.
struct FieldValues<'a> {
    fields: &'a [&'a str],
    values: &'a mut [Option<String>],
}

impl<'de> DeserializeSeed<'de> for FieldValues<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldValues<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(index) = map.next_key_seed(FieldIndex(self.fields))? {
            match index {
                Some(index) if self.values[index].is_none() => {
                    self.values[index] = map.next_value_seed(ScalarText(self.fields[index]))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key of the object: its position in the wanted fields, if wanted.
struct FieldIndex<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for FieldIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|field| *field == key))
    }
}

/// A routing field's value as text: strings as they are, numbers and booleans as written;
/// `null` counts as missing; objects and arrays cannot name a table.
struct ScalarText<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for ScalarText<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarText<'_> {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(
            formatter,
            "text, a number or a boolean in the field `{}`",
            self.0
        )
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<String>, E> {
        Ok(Some(value.to_string()))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Option<String>, E> {
        Ok(Some(value.to_string()))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<String>, E> {
        Ok(Some(value.to_string()))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<String>, E> {
        Ok(Some(value.to_string()))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<String>, E> {
        Ok(Some(value.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> TableTemplate {
        TableTemplate::parse(text).unwrap().unwrap()
    }

    #[test]
    fn records_route_by_their_fields_and_topic() {
        let kind = template("{kind}_events");
        let route = |value: &str| route_record(&kind, "cafe", value.as_bytes());
        assert_eq!(
            route(r#"{"id": 1, "nested": {"kind": "x"}, "kind": "Play"}"#).as_deref(),
            Ok("play_events")
        );
        assert_eq!(route(r#"{"kind": 7}"#).as_deref(), Ok("7_events"));
        assert_eq!(route(r#"{"kind": true}"#).as_deref(), Ok("true_events"));
        let both = template("{_kafka_topic}_{v}");
        assert_eq!(
            route_record(&both, "cat-interactions", br#"{"v": "raw"}"#).as_deref(),
            Ok("cat_interactions_raw")
        );
        // The topic alone needs nothing from the value, not even JSON.
        assert_eq!(
            route_record(
                &template("{_kafka_topic}_raw"),
                "visitor-checkins",
                b"\x00avro"
            )
            .as_deref(),
            Ok("visitor_checkins_raw")
        );
    }

    #[test]
    fn records_that_cannot_be_routed_say_why() {
        let kind = template("{kind}_events");
        let route = |value: &str| route_record(&kind, "cafe", value.as_bytes()).unwrap_err();
        assert!(route(r#"{"other": 1}"#).contains("field `kind` is missing"));
        assert!(route(r#"{"kind": null}"#).contains("field `kind` is missing"));
        assert!(route(r#"{"kind": {"a": 1}}"#).contains("text, a number or a boolean"));
        assert!(route(r#"{"kind": "   "}"#).contains("empty table name"));
        assert!(route(r#"[1, 2]"#).contains("a JSON object"));
        assert!(route(r#"{"kind": "pet""#).contains("cannot route"));
    }
}
