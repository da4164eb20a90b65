//! Postgres session variables that clients set and read (`SET application_name`, `SHOW
//! server_version`...). They are per session; the ones that change query behaviour
//! (`search_path`) are also applied to the session's DataFusion settings.

use std::collections::BTreeMap;

/// Values reported when a session has not set a variable.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_identifier_length", "63"),
    ("server_encoding", "UTF8"),
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

#[derive(Debug, Clone)]
pub(crate) struct SessionVariables {
    pub(crate) user: String,
    values: BTreeMap<String, String>,
}

impl SessionVariables {
    pub(crate) fn new(default_schema: &str) -> Self {
        let mut values: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        values.insert("search_path".into(), default_schema.to_string());
        SessionVariables {
            user: "fjord".into(),
            values,
        }
    }

    /// Sets (or with `None`, resets to its default) a variable. Unknown names are kept too:
    /// drivers set options fjord does not interpret, and PostgreSQL accepts custom ones.
    pub(crate) fn set(&mut self, name: &str, value: Option<String>) {
        let name = name.to_lowercase();
        match value {
            Some(value) => {
                self.values.insert(name, value);
            }
            None => match DEFAULTS.iter().find(|(default, _)| *default == name) {
                Some((_, value)) => {
                    self.values.insert(name, value.to_string());
                }
                None => {
                    self.values.remove(&name);
                }
            },
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        let name = name.to_lowercase();
        match name.as_str() {
            "session_authorization" | "current_user" | "user" => Some(self.user.clone()),
            _ => self.values.get(&name).cloned(),
        }
    }
}

/// A PostgreSQL time setting: plain numbers are milliseconds.
pub(crate) fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let value = value.trim().trim_matches('\'').trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "" | "ms" => number,
        "us" => number / 1000.0,
        "s" => number * 1000.0,
        "min" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        "d" => number * 86_400_000.0,
        _ => return None,
    };
    (millis >= 0.0).then(|| std::time::Duration::from_micros((millis * 1000.0) as u64))
}

/// The first schema of a `search_path` value (`"$user", public` gives `public`).
pub(crate) fn first_search_path_schema(value: &str) -> String {
    value
        .split(',')
        .map(|part| part.trim().trim_matches('"').to_string())
        .find(|part| !part.is_empty() && part != "$user" && part != "pg_catalog")
        .unwrap_or_else(|| "public".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_set_reset_and_default() {
        let mut variables = SessionVariables::new("data_on_eks");
        assert_eq!(variables.get("TimeZone").as_deref(), Some("UTC"));
        variables.set("TimeZone", Some("Europe/Oslo".into()));
        assert_eq!(variables.get("timezone").as_deref(), Some("Europe/Oslo"));
        variables.set("timezone", None);
        assert_eq!(variables.get("timezone").as_deref(), Some("UTC"));
        assert_eq!(variables.get("nonexistent"), None);
    }

    #[test]
    fn durations_in_postgres_units() {
        use std::time::Duration;
        assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("'2s'"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn search_path_first_schema() {
        assert_eq!(first_search_path_schema("\"$user\", public"), "public");
        assert_eq!(
            first_search_path_schema("data_on_eks, public"),
            "data_on_eks"
        );
    }
}
