//! Who is on the other end of a connection: the listener it came in on, its
//! authentication state (SASL handshake and exchange), and its principal.
//! Until a SASL listener's client has authenticated, only ApiVersions and the
//! SASL APIs are served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tls::TlsSetup;
use crate::config::listeners::{ListenerConfig, SecurityProtocol};
use crate::security::credentials::{CredentialStore, ScramMechanism};
use crate::security::oauthbearer::{OAuthBearer, Validator};
use crate::security::ssl_principal::PrincipalMapper;
use crate::security::{jaas, plain::Plain, scram::Scram, AuthError, Principal, SaslServer, Step};

const SUPPORTED_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// A listener ready to serve: its settings, TLS, and SASL set-up.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    /// The TLS set-up; replaced when the keystore is changed at runtime.
    tls: std::sync::RwLock<Option<TlsSetup>>,
    /// Enabled SASL mechanisms this broker implements, in configured order.
    pub mechanisms: Vec<String>,
    /// SASL/PLAIN users from the listener's JAAS config.
    pub plain_users: Arc<BTreeMap<String, String>>,
    /// How OAUTHBEARER tokens are checked, when enabled.
    pub oauth: Option<Arc<Validator>>,
    /// `ssl.principal.mapping.rules` for client certificates.
    pub principal_mapper: PrincipalMapper,
}

impl ListenerRuntime {
    pub fn build(config: &ListenerConfig) -> Result<Self, String> {
        let tls = if config.protocol.tls() {
            Some(super::tls::setup(config)?)
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
        let oauth = if mechanisms.iter().any(|m| m == "OAUTHBEARER") {
            Some(Arc::new(
                Validator::from_listener(config)
                    .map_err(|e| format!("listener {}: {e}", config.name))?,
            ))
        } else {
            None
        };
        let principal_mapper = match config.get("ssl.principal.mapping.rules") {
            Some(rules) => PrincipalMapper::parse(rules)
                .map_err(|e| format!("listener {}: {e}", config.name))?,
            None => PrincipalMapper::default(),
        };
        Ok(ListenerRuntime {
            config: config.clone(),
            principal_mapper,
            tls: std::sync::RwLock::new(tls),
            mechanisms,
            plain_users: Arc::new(plain_users),
            oauth,
        })
    }

    /// The acceptor new connections use.
    pub fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.acceptor.clone())
    }

    /// Checks the TLS settings of `config` (this listener's settings with
    /// changed `ssl.*` keys) without applying them: the stores must load and
    /// the certificate keep its identity (KIP-978).
    pub fn check_tls(&self, config: &ListenerConfig) -> Result<Option<TlsSetup>, String> {
        if !config.protocol.tls() {
            return Ok(None);
        }
        let new = super::tls::setup(config)?;
        if let Some(old) = self.tls.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            super::tls::check_identity(config, &old.leaf, &new.leaf)?;
        }
        Ok(Some(new))
    }

    /// Puts a new TLS set-up in place for the connections accepted from now
    /// on (Kafka's dynamic keystore update); open connections keep theirs.
    pub fn replace_tls(&self, setup: TlsSetup) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(setup);
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.config.protocol
    }
}

/// A completed login.
#[derive(Clone)]
struct Login {
    principal: Principal,
    /// The SASL mechanism used (a re-authentication must use the same).
    mechanism: Option<String>,
    /// When the session ends unless re-authenticated (KIP-368).
    expires: Option<Instant>,
}

enum AuthState {
    Authenticated(Login),
    NeedHandshake,
    /// `previous`: the login being renewed, during a re-authentication.
    Handshaked {
        mechanism: String,
        previous: Option<Login>,
        /// SaslHandshake v0: the tokens follow as raw size-prefixed frames.
        raw: bool,
    },
    InProgress {
        mechanism: String,
        server: Box<dyn SaslServer>,
        previous: Option<Login>,
        raw: bool,
    },
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
    /// Authenticated: send the final token, with the session's lifetime
    /// (0: unlimited) for SaslAuthenticate v1+.
    Done {
        reply: Vec<u8>,
        lifetime_ms: i64,
        reauthenticated: bool,
    },
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
            AuthState::Authenticated(Login {
                principal: tls_principal
                    .map(Principal::user)
                    .unwrap_or_else(Principal::anonymous),
                mechanism: None,
                expires: None,
            })
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

    /// The current login, or the one being renewed while a client
    /// re-authenticates.
    fn login(&self) -> Option<Login> {
        match &*self.state() {
            AuthState::Authenticated(l) => Some(l.clone()),
            AuthState::Handshaked { previous, .. } | AuthState::InProgress { previous, .. } => {
                previous.clone()
            }
            _ => None,
        }
    }

    pub fn principal(&self) -> Option<Principal> {
        self.login().map(|l| l.principal)
    }

    pub fn is_authenticated(&self) -> bool {
        self.login().is_some()
    }

    /// Whether the session's lifetime is over (KIP-368): only
    /// re-authentication may follow.
    pub fn expired(&self) -> bool {
        self.login()
            .and_then(|l| l.expires)
            .is_some_and(|t| t <= Instant::now())
    }

    pub fn enabled_mechanisms(&self) -> Vec<String> {
        self.listener.mechanisms.clone()
    }

    /// `connections.max.reauth.ms` of the listener (0: sessions never expire
    /// and clients do not re-authenticate).
    fn reauth(&self) -> Option<Duration> {
        let ms: u64 = self
            .listener
            .config
            .get("connections.max.reauth.ms")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Whether the next frame is a raw SASL token (after SaslHandshake v0),
    /// not a Kafka request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            &*self.state(),
            AuthState::Handshaked { raw: true, .. } | AuthState::InProgress { raw: true, .. }
        )
    }

    /// `raw`: the client sent SaslHandshake v0 and will send its SASL tokens
    /// as raw frames instead of SaslAuthenticate requests.
    pub fn handshake(&self, mechanism: &str, raw: bool) -> Result<(), HandshakeError> {
        let mut st = self.state();
        let previous = match &*st {
            AuthState::NeedHandshake => None,
            // Re-authentication: on a SASL listener that asked for it, with
            // the mechanism of the first login.
            AuthState::Authenticated(l)
                if self.reauth().is_some() && l.mechanism.as_deref() == Some(mechanism) =>
            {
                Some(l.clone())
            }
            _ => return Err(HandshakeError::IllegalState),
        };
        if !self.listener.mechanisms.iter().any(|m| m == mechanism) {
            return Err(HandshakeError::Unsupported);
        }
        *st = AuthState::Handshaked {
            mechanism: mechanism.to_string(),
            previous,
            raw,
        };
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
        let (mechanism, mut server, previous, raw) =
            match std::mem::replace(&mut *st, AuthState::Failed) {
                AuthState::Handshaked {
                    mechanism,
                    previous,
                    raw,
                } => {
                    let server: Box<dyn SaslServer> = match mechanism.as_str() {
                        "PLAIN" => Box::new(Plain::new(self.listener.plain_users.clone())),
                        "OAUTHBEARER" => match &self.listener.oauth {
                            Some(v) => Box::new(OAuthBearer::new(v.clone())),
                            None => return Err(AuthError::new("OAUTHBEARER is not enabled", None)),
                        },
                        other => match ScramMechanism::from_name(other) {
                            Some(mech) => Box::new(Scram::new(mech, creds.clone())),
                            None => {
                                return Err(AuthError::new(
                                    format!("Unsupported SASL mechanism {other}"),
                                    None,
                                ))
                            }
                        },
                    };
                    (mechanism, server, previous, raw)
                }
                AuthState::InProgress {
                    mechanism,
                    server,
                    previous,
                    raw,
                } => (mechanism, server, previous, raw),
                other => {
                    // Out of sequence: the state stays as it was (the
                    // connection closes after the answer anyway).
                    *st = other;
                    return Err(AuthError::new(
                        "Unexpected SaslAuthenticate: no SASL handshake in progress",
                        None,
                    ));
                }
            };
        match server.step(token)? {
            Step::Continue(reply) => {
                *st = AuthState::InProgress {
                    mechanism,
                    server,
                    previous,
                    raw,
                };
                Ok(AuthOutcome::Continue(reply))
            }
            Step::Done {
                reply,
                user,
                lifetime,
            } => {
                let principal = Principal::user(user);
                if let Some(p) = previous.as_ref().map(|l| &l.principal) {
                    if *p != principal {
                        return Err(AuthError::new(
                            format!(
                                "Cannot change principals during re-authentication from {p} to {principal}"
                            ),
                            Some(&principal.name),
                        ));
                    }
                }
                // The session ends at the earlier of the listener's
                // re-authentication interval and the credential's expiry.
                let lifetime = match (self.reauth(), lifetime) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                *st = AuthState::Authenticated(Login {
                    principal,
                    mechanism: Some(mechanism),
                    expires: lifetime.map(|d| Instant::now() + d),
                });
                Ok(AuthOutcome::Done {
                    reply,
                    lifetime_ms: lifetime
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    reauthenticated: previous.is_some(),
                })
            }
        }
    }
}
