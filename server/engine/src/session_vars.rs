//! Postgres session variables that clients set and read (`SET application_name`, `SHOW
//! server_version`...). They are per session; the ones that change query behaviour
//! (`search_path`) are also applied to the session's DataFusion settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{EngineError, sqlstate};

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

/// A variable's value when no session has set it.
pub(crate) fn default_value(name: &str) -> Option<&'static str> {
    DEFAULTS
        .iter()
        .find(|(default, _)| *default == name)
        .map(|(_, value)| *value)
}

#[derive(Debug, Clone)]
pub(crate) struct SessionVariables {
    pub(crate) user: Arc<str>,
    values: BTreeMap<String, String>,
    /// Kept in step with `values` by `set`.
    hot: HotSettings,
}

/// The settings every statement reads, kept parsed so that reading them costs no lookup,
/// parse or copy of text.
#[derive(Debug, Clone, Default)]
pub(crate) struct HotSettings {
    /// `statement_timeout`, when set to more than 0.
    pub(crate) statement_timeout: Option<std::time::Duration>,
    /// `TimeZone`, when it is not UTC.
    pub(crate) time_zone: Option<Arc<str>>,
    pub(crate) application_name: Arc<str>,
    /// `extra_float_digits`.
    pub(crate) extra_float_digits: Option<i8>,
}

impl HotSettings {
    fn of(values: &BTreeMap<String, String>) -> Self {
        let value = |name: &str| values.get(name).map(String::as_str);
        HotSettings {
            statement_timeout: value("statement_timeout")
                .and_then(parse_duration)
                .filter(|duration| !duration.is_zero()),
            time_zone: value("timezone")
                .filter(|zone| {
                    !matches!(
                        zone.to_ascii_uppercase().as_str(),
                        "UTC" | "ETC/UTC" | "Z" | "+00:00" | "GMT"
                    )
                })
                .map(Arc::from),
            application_name: Arc::from(value("application_name").unwrap_or_default()),
            extra_float_digits: value("extra_float_digits").and_then(|digits| digits.parse().ok()),
        }
    }
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
            hot: HotSettings::of(&values),
            values,
        }
    }

    pub(crate) fn hot(&self) -> &HotSettings {
        &self.hot
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
        self.hot = HotSettings::of(&self.values);
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        // Asked for on every statement, almost always already in lower case.
        let name: std::borrow::Cow<'_, str> = if name.chars().any(char::is_uppercase) {
            name.to_lowercase().into()
        } else {
            name.into()
        };
        match name.as_ref() {
            "session_authorization" | "current_user" | "user" => Some(self.user.to_string()),
            name => self.values.get(name).cloned(),
        }
    }
}

/// The value a session may hold for `name`, as SHOW then gives it, or the error Postgres would
/// give. Variables whose other values would change how fjord reads statements or writes results
/// are checked here: fjord writes dates and times in the ISO style, intervals in the `postgres`
/// style, text in UTF-8, and reads strings with standard conforming escapes. Accepting another
/// value and ignoring it would leave a client parsing results in a format it did not get.
pub(crate) fn checked_value(name: &str, value: &str) -> Result<String, EngineError> {
    let unquoted = value.trim().trim_matches('\'').trim();
    match name {
        "datestyle" => date_style(value),
        "intervalstyle" => match unquoted.to_ascii_lowercase().as_str() {
            "postgres" => Ok("postgres".into()),
            "postgres_verbose" | "sql_standard" | "iso_8601" => Err(unsupported_style(
                "IntervalStyle",
                unquoted,
                "fjord writes intervals in the postgres style",
            )),
            _ => Err(invalid_value("IntervalStyle", unquoted)),
        },
        "client_encoding" => {
            let canonical: String = unquoted
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_uppercase();
            match canonical.as_str() {
                "UTF8" | "UNICODE" => Ok("UTF8".into()),
                _ => Err(EngineError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "client encoding \"{unquoted}\" is not supported: fjord sends and reads UTF8 only"
                    ),
                )),
            }
        }
        "standard_conforming_strings" => match boolean_setting(unquoted) {
            Some(true) => Ok("on".into()),
            Some(false) => Err(EngineError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "standard_conforming_strings cannot be turned off: fjord reads backslashes in \
                 strings literally, as PostgreSQL does by default",
            )),
            None => Err(invalid_value("standard_conforming_strings", unquoted)),
        },
        "extra_float_digits" => match unquoted.parse::<i32>() {
            Ok(digits) if (-15..=3).contains(&digits) => Ok(digits.to_string()),
            Ok(digits) => Err(EngineError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "{digits} is outside the valid range for parameter \"extra_float_digits\" (-15 .. 3)"
                ),
            )),
            Err(_) => Err(EngineError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid value for parameter \"extra_float_digits\": \"{unquoted}\""),
            )),
        },
        _ => Ok(value.to_string()),
    }
}

/// `DateStyle` is an output style and a field order, in any order and either optional
/// (`ISO, MDY`, `iso`, `DMY`, `European`). The order only steers how ambiguous input such as
/// `01/02/2024` is read; the output style must be ISO.
fn date_style(value: &str) -> Result<String, EngineError> {
    let mut order = "MDY";
    for part in value.split(',') {
        let part = part.trim().trim_matches('\'').trim();
        match part.to_ascii_lowercase().as_str() {
            "iso" => {}
            "mdy" | "us" | "noneuropean" | "non european" => order = "MDY",
            "dmy" | "european" => order = "DMY",
            "ymd" => order = "YMD",
            "sql" | "postgres" | "german" => {
                return Err(unsupported_style(
                    "DateStyle",
                    part,
                    "fjord writes dates and times in the ISO style",
                ));
            }
            _ => {
                let mut error = invalid_value("DateStyle", value.trim().trim_matches('\''));
                error.detail = Some(format!("Unrecognized key word: \"{part}\"."));
                return Err(error);
            }
        }
    }
    Ok(format!("ISO, {order}"))
}

fn boolean_setting(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn invalid_value(parameter: &str, value: &str) -> EngineError {
    EngineError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{parameter}\": \"{value}\""),
    )
}

fn unsupported_style(parameter: &str, value: &str, reason: &str) -> EngineError {
    EngineError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("{parameter} \"{value}\" is not supported: {reason}"),
    )
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
    fn settings_that_change_formats_take_only_what_fjord_writes() {
        assert_eq!(checked_value("datestyle", "ISO, MDY").unwrap(), "ISO, MDY");
        assert_eq!(
            checked_value("datestyle", "'iso, dmy'").unwrap(),
            "ISO, DMY"
        );
        assert_eq!(checked_value("datestyle", "European").unwrap(), "ISO, DMY");
        let german = checked_value("datestyle", "German").unwrap_err();
        assert_eq!(german.sqlstate, "0A000");
        let nonsense = checked_value("datestyle", "ISO, sideways").unwrap_err();
        assert_eq!(nonsense.sqlstate, "22023");
        assert_eq!(
            nonsense.detail.as_deref(),
            Some("Unrecognized key word: \"sideways\".")
        );
        assert_eq!(checked_value("client_encoding", "'utf-8'").unwrap(), "UTF8");
        assert_eq!(
            checked_value("client_encoding", "LATIN1")
                .unwrap_err()
                .sqlstate,
            "0A000"
        );
        assert_eq!(
            checked_value("standard_conforming_strings", "off")
                .unwrap_err()
                .sqlstate,
            "0A000"
        );
        assert_eq!(checked_value("extra_float_digits", "3").unwrap(), "3");
        assert_eq!(
            checked_value("extra_float_digits", "4")
                .unwrap_err()
                .sqlstate,
            "22023"
        );
        assert_eq!(
            checked_value("intervalstyle", "iso_8601")
                .unwrap_err()
                .sqlstate,
            "0A000"
        );
        assert_eq!(checked_value("application_name", "'x'").unwrap(), "'x'");
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

/// `current_setting(name [, missing_ok])`: a session variable as text, as `SHOW` gives it.
/// An unknown name is `42704`, or NULL when `missing_ok` is true.
#[derive(Debug)]
pub(crate) struct CurrentSetting {
    variables: std::sync::Arc<parking_lot::Mutex<SessionVariables>>,
    signature: datafusion::logical_expr::Signature,
}

impl CurrentSetting {
    pub(crate) fn udf(
        variables: std::sync::Arc<parking_lot::Mutex<SessionVariables>>,
    ) -> datafusion::logical_expr::ScalarUDF {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
        datafusion::logical_expr::ScalarUDF::new_from_impl(CurrentSetting {
            variables,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        })
    }
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.variables, &other.variables)
    }
}

impl Eq for CurrentSetting {}

impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::sync::Arc::as_ptr(&self.variables).hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for CurrentSetting {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _arguments: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{Array, AsArray, StringArray};
        use datafusion::logical_expr::ColumnarValue;
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = arrays[0].as_string::<i32>();
        let missing_ok = arrays.get(1).map(|array| array.as_boolean().clone());
        let variables = self.variables.lock();
        let mut values = Vec::with_capacity(rows);
        for row in 0..names.len() {
            if names.is_null(row) {
                values.push(None);
                continue;
            }
            let name = names.value(row);
            match variables.get(name) {
                Some(value) => values.push(Some(value)),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|ok| ok.is_valid(row) && ok.value(row)) =>
                {
                    values.push(None)
                }
                None => {
                    return Err(datafusion::error::DataFusionError::External(Box::new(
                        crate::error::EngineError::new(
                            crate::error::sqlstate::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        ),
                    )));
                }
            }
        }
        let array: StringArray = values.into_iter().collect();
        if rows == 1
            && array.len() == 1
            && args
                .args
                .iter()
                .all(|arg| matches!(arg, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&array, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(std::sync::Arc::new(array)))
    }
}
