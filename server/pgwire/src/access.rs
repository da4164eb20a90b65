//! Who may connect: TLS from certificate files, and password checks with SCRAM-SHA-256 (or the
//! password in clear, over TLS only) against PostgreSQL-format verifiers.
//!
//! With no users configured, connections from loopback addresses are trusted and all others are
//! refused; the server says so when it starts. The SCRAM exchange follows RFC 5802 / RFC 7677 as
//! PostgreSQL implements it: the user name comes from the startup message, channel binding is not
//! offered, and an unknown user goes through a mock exchange so that a client cannot tell unknown
//! users from wrong passwords.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fjord_config::{
    AuthMethod, ScramVerifier, ServerConfig, equal_in_constant_time, hmac_sha256, scram_keys,
};
use pgwire::error::ErrorInfo;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The SASL mechanism fjord offers.
pub(crate) const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Iterations of a verifier made by [`hash_password`]: PostgreSQL's default.
const HASH_ITERATIONS: u32 = 4096;

/// The access rules of one listener.
pub struct Access {
    tls: Option<TlsAcceptor>,
    tls_required: bool,
    method: AuthMethod,
    users: BTreeMap<String, ScramVerifier>,
    /// Keys the mock salts of unknown users, so that they are stable while the server runs.
    mock_key: hmac::Key,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What the startup of one connection has to do next.
pub(crate) enum Admission {
    /// Connected without a password.
    Trusted,
    /// Ask for SCRAM-SHA-256.
    Scram,
    /// Ask for the password in clear (the connection uses TLS).
    Cleartext,
    /// Refused before any password, with SQLSTATE 28000 and this message.
    Refused(String),
}

/// The state of one connection's password exchange.
#[derive(Default)]
pub(crate) enum Exchange {
    #[default]
    Idle,
    AwaitingClientFirst,
    AwaitingClientFinal(Box<ScramPending>),
    AwaitingPassword,
}

/// What the server remembers between its first SCRAM message and the client's last.
pub(crate) struct ScramPending {
    verifier: ScramVerifier,
    /// The user is configured; a mock exchange always fails.
    known: bool,
    nonce: String,
    /// base64 of the client's GS2 header, which its final message must repeat.
    channel_binding: String,
    client_first_bare: String,
    server_first: String,
}

/// A failed or malformed exchange.
pub(crate) enum AuthFailure {
    /// Wrong password or unknown user: 28P01.
    Failed,
    /// A message that does not follow the protocol: 08P01, with the reason.
    Malformed(&'static str),
}

impl Access {
    /// The rules of `[server.tls]` and `[server.auth]`. Fails, naming the file, when the TLS
    /// certificate or key cannot be loaded: fjord never falls back to plaintext.
    pub fn from_config(server: &ServerConfig, base: &Path) -> Result<Access, String> {
        let tls = match &server.tls {
            Some(tls) => Some(tls_acceptor(&tls.cert_path(base), &tls.key_path(base))?),
            None => None,
        };
        let users = server
            .auth
            .verifiers()
            .map_err(|(key, reason)| format!("{key}: {reason}"))?;
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(Access {
            tls,
            tls_required: server.tls.as_ref().is_some_and(|tls| tls.required),
            method: server.auth.method,
            users,
            mock_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// The TLS acceptor, when TLS is configured.
    pub(crate) fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.clone()
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let tls = match (&self.tls, self.tls_required) {
            (None, _) => "tls off",
            (Some(_), false) => "tls on (optional)",
            (Some(_), true) => "tls required",
        };
        if self.users.is_empty() {
            format!(
                "{tls}; no users configured ([server.auth.users]): trusting loopback \
                 connections without a password, refusing all others"
            )
        } else {
            let method = match self.method {
                AuthMethod::ScramSha256 => "scram-sha-256",
                AuthMethod::Password => "password (cleartext over TLS)",
            };
            format!(
                "{tls}; {} users, authenticated by {method}",
                self.users.len()
            )
        }
    }

    /// Decides how a connection from `peer` may proceed.
    pub(crate) fn admit(&self, peer: &SocketAddr, secure: bool, user: &str) -> Admission {
        if self.tls_required && !secure {
            return Admission::Refused(format!(
                "connection for user \"{user}\" refused: this server requires TLS \
                 (connect with sslmode=require or stricter)"
            ));
        }
        if self.users.is_empty() {
            return if peer.ip().is_loopback() {
                Admission::Trusted
            } else {
                Admission::Refused(format!(
                    "connection for user \"{user}\" from {} refused: no users are configured, \
                     so only loopback connections are accepted (see [server.auth] in the \
                     configuration reference)",
                    peer.ip()
                ))
            };
        }
        match self.method {
            AuthMethod::ScramSha256 => Admission::Scram,
            AuthMethod::Password if secure => Admission::Cleartext,
            AuthMethod::Password => Admission::Refused(format!(
                "connection for user \"{user}\" refused: password authentication is only \
                 accepted over TLS (connect with sslmode=require or stricter)"
            )),
        }
    }

    /// Answers the client's first SCRAM message (`client-first-message`) with the server's.
    pub(crate) fn scram_first(
        &self,
        user: &str,
        client_first: &[u8],
    ) -> Result<(String, ScramPending), AuthFailure> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| AuthFailure::Malformed("SCRAM message is not UTF-8"))?;
        // gs2-header: a channel-binding flag and an (empty) authorization identity.
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts
            .next()
            .ok_or(AuthFailure::Malformed("malformed SCRAM message"))?;
        let client_first_bare = parts
            .next()
            .ok_or(AuthFailure::Malformed("malformed SCRAM message"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(AuthFailure::Malformed(
                    "channel binding is not offered by this server",
                ));
            }
            _ => return Err(AuthFailure::Malformed("malformed SCRAM message")),
        }
        if !authzid.is_empty() {
            return Err(AuthFailure::Malformed(
                "SCRAM authorization identities are not supported",
            ));
        }
        let client_nonce = attributes(client_first_bare)
            .find_map(|(name, value)| (name == 'r').then_some(value))
            .filter(|nonce| !nonce.is_empty())
            .ok_or(AuthFailure::Malformed("SCRAM message without a nonce"))?;
        let (verifier, known) = match self.users.get(user) {
            Some(verifier) => (verifier.clone(), true),
            None => (self.mock_verifier(user), false),
        };
        let nonce = format!("{client_nonce}{}", STANDARD.encode(random_bytes::<18>()));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let pending = ScramPending {
            verifier,
            known,
            nonce,
            channel_binding: STANDARD.encode(format!("{flag},{authzid},")),
            client_first_bare: client_first_bare.to_string(),
            server_first: server_first.clone(),
        };
        Ok((server_first, pending))
    }

    /// Checks the client's proof (`client-final-message`); on success returns the server's
    /// final message, which proves to the client that the server knows the verifier.
    pub(crate) fn scram_final(
        &self,
        pending: &ScramPending,
        client_final: &[u8],
    ) -> Result<String, AuthFailure> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| AuthFailure::Malformed("SCRAM message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(AuthFailure::Malformed("SCRAM message without a proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for (name, value) in attributes(without_proof) {
            match name {
                'c' => binding = Some(value),
                'r' => nonce = Some(value),
                _ => {}
            }
        }
        if binding != Some(pending.channel_binding.as_str()) {
            return Err(AuthFailure::Malformed("SCRAM channel binding check failed"));
        }
        if nonce != Some(pending.nonce.as_str()) {
            return Err(AuthFailure::Malformed("SCRAM nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| AuthFailure::Malformed("SCRAM proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            pending.client_first_bare, pending.server_first, without_proof
        );
        let signature = hmac_sha256(&pending.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(AuthFailure::Failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = digest::digest(&digest::SHA256, &client_key);
        if !pending.known || !equal_in_constant_time(stored.as_ref(), &pending.verifier.stored_key)
        {
            return Err(AuthFailure::Failed);
        }
        let server_signature = hmac_sha256(&pending.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }

    /// Checks a password received in clear against the user's verifier.
    pub(crate) fn check_password(&self, user: &str, password: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|verifier| verifier.matches_password(password))
    }

    /// A verifier for a user that does not exist: its salt is stable for the user, and no
    /// password matches it.
    fn mock_verifier(&self, user: &str) -> ScramVerifier {
        let salt = hmac::sign(&self.mock_key, user.as_bytes()).as_ref()[..16].to_vec();
        ScramVerifier {
            iterations: HASH_ITERATIONS,
            salt,
            stored_key: random_bytes::<32>().to_vec(),
            server_key: random_bytes::<32>().to_vec(),
        }
    }
}

/// A SCRAM-SHA-256 verifier for `password` with a fresh random salt, in PostgreSQL's format.
pub fn hash_password(password: &str) -> String {
    let salt = random_bytes::<16>();
    let iterations = NonZeroU32::new(HASH_ITERATIONS).expect("non-zero");
    let (stored_key, server_key) = scram_keys(password, &salt, iterations);
    ScramVerifier {
        iterations: iterations.get(),
        salt: salt.to_vec(),
        stored_key,
        server_key,
    }
    .to_text()
}

/// Bytes from the system's secure random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    bytes
}

/// `name=value` attributes of a SCRAM message.
fn attributes(message: &str) -> impl Iterator<Item = (char, &str)> {
    message.split(',').filter_map(|attribute| {
        let mut chars = attribute.chars();
        let name = chars.next()?;
        attribute[name.len_utf8()..]
            .strip_prefix('=')
            .map(|value| (name, value))
    })
}

/// A TLS acceptor from PEM files; the error names the file that could not be used.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| format!("TLS certificate {}: {error}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|error| format!("TLS certificate {}: {error}", cert.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "TLS certificate {}: no PEM certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("TLS key {}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| format!("TLS certificate {}: {error}", cert.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The error a refused or failed startup sends: FATAL, with `code`.
pub(crate) fn fatal(code: &str, message: String) -> ErrorInfo {
    ErrorInfo::new("FATAL".into(), code.into(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(users: &[(&str, &str)], method: AuthMethod) -> Access {
        let mut server = ServerConfig::default();
        server.auth.method = method;
        for (user, verifier) in users {
            server
                .auth
                .users
                .insert(user.to_string(), fjord_config::Secret::new(*verifier));
        }
        Access::from_config(&server, Path::new(".")).unwrap()
    }

    // The verifier PostgreSQL 15 stored for `CREATE ROLE alice LOGIN PASSWORD 'cat nap 9'`.
    const FROM_POSTGRES: &str = "SCRAM-SHA-256$4096:YPgGz8rhfdfsHmC8bgboxA==$\
        DmQaWx9TJ95eVcXWC2ucskPtTysN7JxYnBMCfQrlTDU=:jadGBlg2DyxtYnKsFCmDqCw1RZ/xgD4ufqyU+eFRyy4=";

    #[test]
    fn a_password_matches_the_verifier_postgres_made_for_it() {
        let access = access(&[("alice", FROM_POSTGRES)], AuthMethod::ScramSha256);
        assert!(access.check_password("alice", "cat nap 9"));
        assert!(!access.check_password("alice", "cat nap 8"));
        assert!(!access.check_password("bob", "cat nap 9"));
    }

    #[test]
    fn hash_password_makes_verifiers_that_only_the_password_matches() {
        let verifier = hash_password("ünïcode pass");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert_ne!(verifier, hash_password("ünïcode pass"), "salts are random");
        let access = access(&[("carol", &verifier)], AuthMethod::ScramSha256);
        assert!(access.check_password("carol", "ünïcode pass"));
        assert!(!access.check_password("carol", "unicode pass"));
    }

    /// A whole exchange as a client computes it (RFC 5802, section 3).
    fn client_exchange(access: &Access, user: &str, password: &str) -> Result<(), AuthFailure> {
        let client_first_bare = "n=,r=fyko+d2lbbFgONRv9qkxdawL";
        let (server_first, pending) =
            access.scram_first(user, format!("n,,{client_first_bare}").as_bytes())?;
        let fields: BTreeMap<char, &str> = attributes(&server_first).collect();
        let salt = STANDARD.decode(fields[&'s']).unwrap();
        let iterations = NonZeroU32::new(fields[&'i'].parse().unwrap()).unwrap();
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let without_proof = format!("c=biws,r={}", fields[&'r']);
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_final = access.scram_final(
            &pending,
            format!("{without_proof},p={}", STANDARD.encode(proof)).as_bytes(),
        )?;
        let server_key = hmac_sha256(&salted, b"Server Key");
        let expected = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(server_final, format!("v={}", STANDARD.encode(expected)));
        Ok(())
    }

    #[test]
    fn scram_accepts_the_right_password_only() {
        let access = access(&[("alice", FROM_POSTGRES)], AuthMethod::ScramSha256);
        assert!(client_exchange(&access, "alice", "cat nap 9").is_ok());
        assert!(matches!(
            client_exchange(&access, "alice", "wrong"),
            Err(AuthFailure::Failed)
        ));
        assert!(matches!(
            client_exchange(&access, "mallory", "cat nap 9"),
            Err(AuthFailure::Failed)
        ));
    }

    #[test]
    fn an_unknown_user_gets_a_stable_salt() {
        let access = access(&[("alice", FROM_POSTGRES)], AuthMethod::ScramSha256);
        let salt = |user: &str| {
            let (server_first, _) = access.scram_first(user, b"n,,n=,r=abc").ok().unwrap();
            server_first.split(",s=").nth(1).unwrap().to_string()
        };
        assert_eq!(salt("mallory"), salt("mallory"));
        assert_ne!(salt("mallory"), salt("eve"));
    }

    #[test]
    fn admission_follows_users_tls_and_address() {
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let open = access(&[], AuthMethod::ScramSha256);
        assert!(matches!(
            open.admit(&loopback, false, "u"),
            Admission::Trusted
        ));
        assert!(matches!(
            open.admit(&remote, false, "u"),
            Admission::Refused(_)
        ));
        let scram = access(&[("alice", FROM_POSTGRES)], AuthMethod::ScramSha256);
        assert!(matches!(
            scram.admit(&loopback, false, "u"),
            Admission::Scram
        ));
        let cleartext = access(&[("alice", FROM_POSTGRES)], AuthMethod::Password);
        assert!(matches!(
            cleartext.admit(&loopback, true, "u"),
            Admission::Cleartext
        ));
        assert!(matches!(
            cleartext.admit(&loopback, false, "u"),
            Admission::Refused(_)
        ));
    }
}
