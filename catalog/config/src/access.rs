//! `[server.tls]` and `[server.auth]`: who may connect to the query server, and how.
//!
//! Passwords are never stored: a user is configured with a SCRAM-SHA-256 verifier, the same text
//! PostgreSQL keeps in `pg_authid.rolpassword` (so a verifier can be copied from a Postgres
//! server, or made with `fjord hash-password`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::Secret;

/// `[server.tls]`: the certificate the listeners present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate, followed by any intermediate certificates.
    pub cert_file: String,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Refuse connections that do not use TLS (SQLSTATE 28000).
    #[serde(default)]
    pub required: bool,
}

impl TlsConfig {
    /// The certificate file, resolved against the configuration file's directory.
    pub fn cert_path(&self, base: &Path) -> PathBuf {
        crate::absolute(base, &self.cert_file)
    }

    /// The key file, resolved against the configuration file's directory.
    pub fn key_path(&self, base: &Path) -> PathBuf {
        crate::absolute(base, &self.key_file)
    }
}

/// How a configured user proves their password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256: the password never crosses the wire. What libpq, JDBC, psycopg, asyncpg
    /// and node-postgres use by default.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// The password sent in clear, for clients without SCRAM; only over TLS.
    #[serde(rename = "password")]
    Password,
}

/// `[server.auth]`: the users who may connect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How users authenticate; see [`AuthMethod`].
    pub method: AuthMethod,
    /// User name to SCRAM-SHA-256 verifier. With no users, the server trusts connections from
    /// loopback addresses and refuses every other.
    pub users: BTreeMap<String, Secret>,
    /// Users who may change catalogs with `CREATE CATALOG` and `DROP CATALOG`. With no users
    /// configured, every (loopback) session may.
    pub admins: Vec<String>,
}

impl AuthConfig {
    /// Whether `user` may run `CREATE CATALOG` and `DROP CATALOG`.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users.is_empty() || self.admins.iter().any(|admin| admin == user)
    }
}

/// A parsed SCRAM-SHA-256 verifier:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(***)")
    }
}

/// The prefix every verifier starts with.
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

impl ScramVerifier {
    /// Whether `password` (received in clear) is the one this verifier was made from.
    pub fn matches_password(&self, password: &str) -> bool {
        let Some(iterations) = std::num::NonZeroU32::new(self.iterations) else {
            return false;
        };
        let (stored_key, server_key) = scram_keys(password, &self.salt, iterations);
        equal_in_constant_time(&stored_key, &self.stored_key)
            && equal_in_constant_time(&server_key, &self.server_key)
    }

    /// Parses a verifier; the error says what is wrong without repeating the text.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let Some(rest) = text.strip_prefix(SCRAM_PREFIX) else {
            return Err(
                "must be a SCRAM-SHA-256 verifier (\"SCRAM-SHA-256$4096:...\"), never \
                        a password; make one with `fjord hash-password` or copy \
                        pg_authid.rolpassword from PostgreSQL"
                    .into(),
            );
        };
        let malformed = |what: &str| {
            format!(
                "malformed SCRAM-SHA-256 verifier ({what}); expected \
                 SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
            )
        };
        let (salt_part, keys) = rest.split_once('$').ok_or_else(|| malformed("no keys"))?;
        let (iterations, salt) = salt_part
            .split_once(':')
            .ok_or_else(|| malformed("no salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or_else(|| malformed("no server key"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| malformed("iterations is not a positive number"))?;
        let decode = |field: &str, value: &str| {
            STANDARD
                .decode(value)
                .map_err(|_| malformed(&format!("{field} is not base64")))
        };
        let salt = decode("salt", salt)?;
        let stored_key = decode("StoredKey", stored)?;
        let server_key = decode("ServerKey", server)?;
        if salt.is_empty() {
            return Err(malformed("the salt is empty"));
        }
        if stored_key.len() != 32 || server_key.len() != 32 {
            return Err(malformed("keys must be 32 bytes"));
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// The verifier in PostgreSQL's text form.
    pub fn to_text(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

impl AuthConfig {
    /// Every configured user's parsed verifier.
    pub fn verifiers(&self) -> Result<BTreeMap<String, ScramVerifier>, (String, String)> {
        self.users
            .iter()
            .map(|(user, verifier)| {
                ScramVerifier::parse(verifier.expose())
                    .map(|parsed| (user.clone(), parsed))
                    .map_err(|reason| (format!("server.auth.users.{user}"), reason))
            })
            .collect()
    }

    pub(crate) fn resolve_secrets(&mut self) -> Result<(), (String, String)> {
        for (user, verifier) in &mut self.users {
            verifier
                .resolve()
                .map_err(|reason| (format!("server.auth.users.{user}"), reason))?;
        }
        Ok(())
    }

    pub(crate) fn validate(&self, tls: Option<&TlsConfig>) -> Result<(), (String, String)> {
        for user in self.users.keys() {
            if user.is_empty() {
                return Err((
                    "server.auth.users".into(),
                    "a user name must not be empty".into(),
                ));
            }
        }
        for admin in &self.admins {
            if !self.users.contains_key(admin) {
                return Err((
                    "server.auth.admins".into(),
                    format!("`{admin}` is not one of [server.auth.users]"),
                ));
            }
        }
        self.verifiers()?;
        if self.method == AuthMethod::Password && tls.is_none() {
            return Err((
                "server.auth.method".into(),
                "\"password\" sends passwords in clear, so it needs [server.tls]; use \
                 \"scram-sha-256\" without TLS"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// StoredKey and ServerKey of a password, as RFC 5802 defines them. The password is normalized
/// with SASLprep when it can be, and used as it is otherwise, as PostgreSQL does.
pub fn scram_keys(
    password: &str,
    salt: &[u8],
    iterations: std::num::NonZeroU32,
) -> (Vec<u8>, Vec<u8>) {
    use ring::{digest, pbkdf2};
    let prepared = stringprep::saslprep(password)
        .map(|prepared| prepared.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        prepared.as_bytes(),
        &mut salted,
    );
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key)
        .as_ref()
        .to_vec();
    let server_key = hmac_sha256(&salted, b"Server Key");
    (stored_key, server_key)
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use ring::hmac;
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// Whether two byte strings are equal, in a time that does not depend on where they differ.
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The verifier PostgreSQL 15 stored for `CREATE ROLE alice LOGIN PASSWORD 'cat nap 9'`.
    const FROM_POSTGRES: &str = "SCRAM-SHA-256$4096:YPgGz8rhfdfsHmC8bgboxA==$\
        DmQaWx9TJ95eVcXWC2ucskPtTysN7JxYnBMCfQrlTDU=:jadGBlg2DyxtYnKsFCmDqCw1RZ/xgD4ufqyU+eFRyy4=";

    #[test]
    fn a_postgres_verifier_round_trips() {
        let verifier = ScramVerifier::parse(FROM_POSTGRES).unwrap();
        assert_eq!(verifier.iterations, 4096);
        assert_eq!(verifier.salt.len(), 16);
        assert_eq!(verifier.to_text(), FROM_POSTGRES);
    }

    #[test]
    fn a_plain_password_is_refused_without_being_echoed() {
        let error = ScramVerifier::parse("hunter2").unwrap_err();
        assert!(error.contains("never a password"), "{error}");
        assert!(!error.contains("hunter2"));
        let error = ScramVerifier::parse("SCRAM-SHA-256$4096:c2FsdA==$abc").unwrap_err();
        assert!(error.contains("no server key"), "{error}");
        let error = ScramVerifier::parse("SCRAM-SHA-256$x:c2FsdA==$a:b").unwrap_err();
        assert!(error.contains("iterations"), "{error}");
    }
}
