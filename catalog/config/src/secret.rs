//! Secrets in configuration: `${ENV_VAR}` references expanded at load, never printed.

use std::fmt;

use serde::Deserialize;

/// A configuration value that may hold a password or key. `Debug` and `Display` print a
/// placeholder; only [`Secret::expose`] gives the value, to hand it to a driver.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The expanded value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Expands `${ENV_VAR}` references in place.
    pub(crate) fn resolve(&mut self) -> Result<(), String> {
        self.0 = expand_env_references(&self.0, |name| std::env::var(name).ok())?;
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every `${NAME}` in `text` with `lookup(NAME)` and every `${file:/path}` with the
/// file's contents (without trailing line breaks); `$${` stands for a literal `${`. An unset
/// variable or unreadable file is an error naming it (never its would-be value).
pub fn expand_env_references(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(reference) = after.strip_prefix("${") {
            let end = reference
                .find('}')
                .ok_or_else(|| "unterminated `${` reference (missing `}`)".to_string())?;
            let name = &reference[..end];
            if let Some(path) = name.strip_prefix("file:") {
                out.push_str(&read_secret_file(path)?);
                rest = &reference[end + 1..];
                continue;
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable reference"
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The contents of a secret file (a mounted Kubernetes or Docker secret, say), trailing line
/// breaks removed.
fn read_secret_file(path: &str) -> Result<String, String> {
    if !std::path::Path::new(path).is_absolute() {
        return Err(format!(
            "`${{file:{path}}}` needs an absolute path to the secret file"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the secret file `{path}`: {error}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_and_escapes() {
        let lookup = |name: &str| (name == "PW").then(|| "s3cr$t".to_string());
        assert_eq!(
            expand_env_references("a${PW}b", lookup).unwrap(),
            "as3cr$tb"
        );
        assert_eq!(expand_env_references("$${PW}", lookup).unwrap(), "${PW}");
        assert_eq!(expand_env_references("pa$$", lookup).unwrap(), "pa$$");
        assert!(
            expand_env_references("${NOPE}", lookup)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(expand_env_references("${PW", lookup).is_err());
    }

    #[test]
    fn file_references_read_the_file_without_its_line_break() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("pw");
        std::fs::write(&path, "fr0m-a-file\n").unwrap();
        let text = format!("user:${{file:{}}}@host", path.display());
        assert_eq!(
            expand_env_references(&text, |_| None).unwrap(),
            "user:fr0m-a-file@host"
        );
        let missing = expand_env_references("${file:/no/such/secret}", |_| None).unwrap_err();
        assert!(missing.contains("/no/such/secret"), "{missing}");
        let relative = expand_env_references("${file:pw}", |_| None).unwrap_err();
        assert!(relative.contains("absolute"), "{relative}");
    }
}
