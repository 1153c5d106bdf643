//! Who is on the other end of a connection: the listener it came in on, its
//! authentication state (SASL handshake and exchange), and its principal.
//! Until a SASL listener's client has authenticated, only ApiVersions and the
//! SASL APIs are served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::listeners::{ListenerConfig, SecurityProtocol};
use crate::security::credentials::{CredentialStore, ScramMechanism};
use crate::security::{jaas, plain::Plain, scram::Scram, AuthError, Principal, SaslServer, Step};

const SUPPORTED_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A listener ready to serve: its settings, TLS, and SASL set-up.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Enabled SASL mechanisms this broker implements, in configured order.
    pub mechanisms: Vec<String>,
    /// SASL/PLAIN users from the listener's JAAS config.
    pub plain_users: Arc<BTreeMap<String, String>>,
}

impl ListenerRuntime {
    pub fn build(config: &ListenerConfig) -> Result<Self, String> {
        let tls = if config.protocol.tls() {
            Some(tokio_rustls::TlsAcceptor::from(super::tls::server_config(
                config,
            )?))
        } else {
            None
        };
        let mut mechanisms = Vec::new();
        let mut plain_users = BTreeMap::new();
        if config.protocol.sasl() {
            // Kafka's default is GSSAPI (Kerberos), which Runnel does not implement.
            let enabled = config.get("sasl.enabled.mechanisms").unwrap_or("GSSAPI");
            for m in enabled
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
            {
                if SUPPORTED_MECHANISMS.contains(&m.as_str()) {
                    mechanisms.push(m);
                } else {
                    tracing::warn!(listener = %config.name, mechanism = %m, "SASL mechanism not supported; not offered");
                }
            }
            if mechanisms.is_empty() {
                return Err(format!(
                    "listener {}: sasl.enabled.mechanisms={enabled} enables no mechanism Runnel supports ({})",
                    config.name,
                    SUPPORTED_MECHANISMS.join(", ")
                ));
            }
            if mechanisms.iter().any(|m| m == "PLAIN") {
                let text = config
                    .get("plain.sasl.jaas.config")
                    .or_else(|| config.get("sasl.jaas.config"))
                    .ok_or_else(|| {
                        format!(
                            "listener {}: PLAIN needs listener.name.{}.plain.sasl.jaas.config with user_<name>=\"<password>\" entries",
                            config.name,
                            config.name.to_ascii_lowercase()
                        )
                    })?;
                let j = jaas::parse(text).map_err(|e| format!("listener {}: {e}", config.name))?;
                if !j.module.ends_with("PlainLoginModule") {
                    return Err(format!(
                        "listener {}: PLAIN needs org.apache.kafka.common.security.plain.PlainLoginModule, got {}",
                        config.name, j.module
                    ));
                }
                plain_users = j.plain_users();
            }
        }
        Ok(ListenerRuntime {
            config: config.clone(),
            tls,
            mechanisms,
            plain_users: Arc::new(plain_users),
        })
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.config.protocol
    }
}

enum AuthState {
    Authenticated(Principal),
    NeedHandshake,
    Handshaked(String),
    InProgress(Box<dyn SaslServer>),
    Failed,
}

/// One connection's identity.
pub struct Session {
    pub listener: Arc<ListenerRuntime>,
    pub peer: SocketAddr,
    state: Mutex<AuthState>,
    /// A throttled client's connection is not read until then (KIP-219).
    muted_until: Mutex<Option<tokio::time::Instant>>,
}

/// What SaslHandshake answers.
pub enum HandshakeError {
    /// Not a SASL listener, or a handshake already done.
    IllegalState,
    /// The mechanism is not enabled (the answer lists those that are).
    Unsupported,
}

/// What SaslAuthenticate answers.
pub enum AuthOutcome {
    /// Send this token and wait for the next one.
    Continue(Vec<u8>),
    /// Authenticated: send the final token.
    Done(Vec<u8>),
}

impl Session {
    /// `tls_principal`: the client certificate's subject, when it sent one.
    pub fn new(
        listener: Arc<ListenerRuntime>,
        peer: SocketAddr,
        tls_principal: Option<String>,
    ) -> Self {
        let state = if listener.protocol().sasl() {
            AuthState::NeedHandshake
        } else {
            AuthState::Authenticated(
                tls_principal
                    .map(Principal::user)
                    .unwrap_or_else(Principal::anonymous),
            )
        };
        Session {
            listener,
            peer,
            state: Mutex::new(state),
            muted_until: Mutex::new(None),
        }
    }

    /// Stops reading this connection for `d` (from now), as Kafka mutes a
    /// throttled client's channel.
    pub fn mute_for(&self, d: std::time::Duration) {
        let until = tokio::time::Instant::now() + d;
        let mut m = self.muted_until.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_none_or(|t| t < until) {
            *m = Some(until);
        }
    }

    /// When the connection may be read again, if it is muted.
    pub fn muted_until(&self) -> Option<tokio::time::Instant> {
        let mut m = self.muted_until.lock().unwrap_or_else(|p| p.into_inner());
        match *m {
            Some(t) if t > tokio::time::Instant::now() => Some(t),
            _ => {
                *m = None;
                None
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn principal(&self) -> Option<Principal> {
        match &*self.state() {
            AuthState::Authenticated(p) => Some(p.clone()),
            _ => None,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(&*self.state(), AuthState::Authenticated(_))
    }

    pub fn enabled_mechanisms(&self) -> Vec<String> {
        self.listener.mechanisms.clone()
    }

    pub fn handshake(&self, mechanism: &str) -> Result<(), HandshakeError> {
        let mut st = self.state();
        if !matches!(*st, AuthState::NeedHandshake) {
            return Err(HandshakeError::IllegalState);
        }
        if !self.listener.mechanisms.iter().any(|m| m == mechanism) {
            return Err(HandshakeError::Unsupported);
        }
        *st = AuthState::Handshaked(mechanism.to_string());
        Ok(())
    }

    /// Runs one step of the SASL exchange. A failure leaves the session
    /// unusable: the connection is closed after the answer.
    pub fn authenticate(
        &self,
        token: &[u8],
        creds: &Arc<CredentialStore>,
    ) -> Result<AuthOutcome, AuthError> {
        let mut st = self.state();
        let mut server: Box<dyn SaslServer> = match std::mem::replace(&mut *st, AuthState::Failed) {
            AuthState::Handshaked(m) => match m.as_str() {
                "PLAIN" => Box::new(Plain::new(self.listener.plain_users.clone())),
                other => match ScramMechanism::from_name(other) {
                    Some(mech) => Box::new(Scram::new(mech, creds.clone())),
                    None => {
                        return Err(AuthError::new(
                            format!("Unsupported SASL mechanism {other}"),
                            None,
                        ))
                    }
                },
            },
            AuthState::InProgress(s) => s,
            other => {
                // Out of sequence: the state stays as it was (the connection
                // closes after the answer anyway).
                *st = other;
                return Err(AuthError::new(
                    "Unexpected SaslAuthenticate: no SASL handshake in progress",
                    None,
                ));
            }
        };
        match server.step(token)? {
            Step::Continue(reply) => {
                *st = AuthState::InProgress(server);
                Ok(AuthOutcome::Continue(reply))
            }
            Step::Done { reply, user } => {
                *st = AuthState::Authenticated(Principal::user(user));
                Ok(AuthOutcome::Done(reply))
            }
        }
    }
}
