//! How this broker connects to other brokers (followers to leaders): over
//! the inter-broker listener's protocol, as Kafka brokers do — TLS trusting
//! the listener's truststore (and presenting its keystore, for listeners
//! that require client certificates), then SASL with
//! `sasl.mechanism.inter.broker.protocol` (PLAIN or SCRAM-SHA-256/512) and
//! the `username` / `password` of that mechanism's JAAS config on the
//! listener.

use std::sync::Arc;

use base64::Engine;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{BrokerConn, ClientResult};
use crate::config::listeners::{ListenerConfig, SecurityProtocol};
use crate::security::credentials::ScramMechanism;

/// SASL credentials for the inter-broker listener.
#[derive(Clone)]
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "SaslLogin({} as {})", self.mechanism, self.username)
    }
}

/// TLS and SASL for connections to other brokers.
#[derive(Clone, Default)]
pub struct InterBroker {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslLogin>,
}

impl std::fmt::Debug for InterBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InterBroker(tls: {}, sasl: {:?})",
            self.tls.is_some(),
            self.sasl
        )
    }
}

impl InterBroker {
    /// From the inter-broker listener's settings (and the broker's raw
    /// configs, for `sasl.mechanism.inter.broker.protocol`).
    pub fn from_listener(l: &ListenerConfig) -> Result<Self, String> {
        let tls = matches!(
            l.protocol,
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
        )
        .then(|| crate::network::tls::client_config(l))
        .transpose()?;
        let sasl = if matches!(
            l.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            let enabled = l.get("sasl.enabled.mechanisms").unwrap_or("GSSAPI");
            let mechanism = l
                .get("sasl.mechanism.inter.broker.protocol")
                .map(|m| m.trim().to_ascii_uppercase())
                .or_else(|| {
                    enabled
                        .split(',')
                        .map(|m| m.trim().to_ascii_uppercase())
                        .find(|m| m == "PLAIN" || m.starts_with("SCRAM-"))
                })
                .ok_or_else(|| {
                    format!(
                        "listener {}: inter-broker SASL needs PLAIN or SCRAM (sasl.mechanism.inter.broker.protocol)",
                        l.name
                    )
                })?;
            if mechanism != "PLAIN" && !mechanism.starts_with("SCRAM-") {
                return Err(format!(
                    "sasl.mechanism.inter.broker.protocol={mechanism} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                ));
            }
            let key = format!("{}.sasl.jaas.config", mechanism.to_ascii_lowercase());
            let text = l.get(&key).or_else(|| l.get("sasl.jaas.config")).ok_or_else(|| {
                format!(
                    "listener {}: inter-broker SASL needs listener.name.{}.{key} with username and password",
                    l.name,
                    l.name.to_ascii_lowercase()
                )
            })?;
            let j = crate::security::jaas::parse(text)
                .map_err(|e| format!("listener {}: {e}", l.name))?;
            let (Some(username), Some(password)) =
                (j.options.get("username"), j.options.get("password"))
            else {
                return Err(format!(
                    "listener {}: {key} has no username/password for inter-broker connections",
                    l.name
                ));
            };
            Some(SaslLogin {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            })
        } else {
            None
        };
        Ok(InterBroker { tls, sasl })
    }
}

/// Most PBKDF2 rounds a peer broker may ask of this one.
const MAX_SCRAM_ITERATIONS: u32 = 16_384;

/// Authenticates a fresh connection with SASL.
pub async fn authenticate(conn: &mut BrokerConn, login: &SaslLogin) -> ClientResult<()> {
    let t = std::time::Duration::from_secs(10);
    let hs: SaslHandshakeResponse = conn
        .call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(login.mechanism.clone())),
            t,
        )
        .await?;
    if hs.error_code != 0 {
        return Err(format!(
            "SASL handshake for {} refused (error {})",
            login.mechanism, hs.error_code
        ));
    }
    let step = |bytes: Vec<u8>| {
        SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(bytes))
    };
    if login.mechanism == "PLAIN" {
        let token = format!("\0{}\0{}", login.username, login.password).into_bytes();
        let r: SaslAuthenticateResponse = conn
            .call(ApiKey::SaslAuthenticate, 2, &step(token), t)
            .await?;
        return check(&r);
    }
    let mech = ScramMechanism::from_name(&login.mechanism)
        .ok_or_else(|| format!("unknown SCRAM mechanism {}", login.mechanism))?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let user = login.username.replace('=', "=3D").replace(',', "=2C");
    let client_first_bare = format!("n={user},r={nonce}");
    let r: SaslAuthenticateResponse = conn
        .call(
            ApiKey::SaslAuthenticate,
            2,
            &step(format!("n,,{client_first_bare}").into_bytes()),
            t,
        )
        .await?;
    check(&r)?;
    let server_first = String::from_utf8_lossy(&r.auth_bytes).to_string();
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|f| f.strip_prefix(k))
            .map(str::to_string)
    };
    let (Some(server_nonce), Some(salt), Some(iterations)) = (
        field("r="),
        field("s=").and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()),
        field("i=").and_then(|i| i.parse::<u32>().ok()),
    ) else {
        return Err("malformed SCRAM server-first message".into());
    };
    // The count comes from the peer: bound the work it can ask for (Kafka
    // accepts 4096..=16384 when credentials are created).
    if !(1..=MAX_SCRAM_ITERATIONS).contains(&iterations) {
        return Err(format!("SCRAM iteration count {iterations} out of range"));
    }
    if !server_nonce.starts_with(&nonce) {
        return Err("SCRAM server nonce does not extend ours".into());
    }
    let salted = mech.salted_password(login.password.as_bytes(), &salt, iterations);
    let client_key = mech.hmac(&salted, b"Client Key");
    let stored_key = mech.hash(&client_key);
    let without_proof = format!("c=biws,r={server_nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = mech.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    let final_msg = format!(
        "{without_proof},p={}",
        base64::engine::general_purpose::STANDARD.encode(proof)
    );
    let r: SaslAuthenticateResponse = conn
        .call(
            ApiKey::SaslAuthenticate,
            2,
            &step(final_msg.into_bytes()),
            t,
        )
        .await?;
    check(&r)
}

fn check(r: &SaslAuthenticateResponse) -> ClientResult<()> {
    if r.error_code != 0 {
        return Err(format!(
            "inter-broker SASL authentication failed (error {}): {}",
            r.error_code,
            r.error_message.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}
