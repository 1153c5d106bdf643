//! SASL/OAUTHBEARER (RFC 7628) with Kafka's two server-side validators:
//! without `sasl.oauthbearer.jwks.endpoint.url`, Kafka's default unsecured
//! validator (an `alg: none` JWS whose `exp` has not passed, principal from
//! `unsecuredValidatorPrincipalClaimName`, default `sub`); with it, signed
//! JWTs checked against the JWKS (a `file://` URL, re-read when it changes, or
//! an `http(s)://` endpoint fetched every
//! `sasl.oauthbearer.jwks.endpoint.refresh.ms` and when a token names an
//! unknown key; HTTPS trusts the system's CA store, or `SSL_CERT_FILE`),
//! with `sasl.oauthbearer.expected.audience` / `expected.issuer`,
//! `sub.claim.name` and `clock.skew.seconds`. The token's remaining lifetime
//! bounds the session (KIP-368).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use super::{jaas, AuthError, SaslServer, Step};
use crate::config::listeners::ListenerConfig;

/// How tokens are checked on one listener.
pub enum Validator {
    Unsecured {
        principal_claim: String,
        skew: Duration,
    },
    Jwks {
        jwks: JwksSource,
        audience: Vec<String>,
        issuer: Option<String>,
        principal_claim: String,
        skew: Duration,
    },
}

/// Where the verification keys come from.
pub enum JwksSource {
    File(JwksFile),
    Http(Arc<JwksHttp>),
}

impl JwksSource {
    fn open(url: &str, refresh: Duration) -> Result<Self, String> {
        if url.starts_with("file://") {
            Ok(JwksSource::File(JwksFile::open(url)?))
        } else if url.starts_with("https://") || url.starts_with("http://") {
            Ok(JwksSource::Http(JwksHttp::start(url, refresh)?))
        } else {
            Err(format!(
                "sasl.oauthbearer.jwks.endpoint.url={url}: expected a file://, https:// or http:// URL"
            ))
        }
    }

    fn keys(&self) -> Result<Arc<JwkSet>, String> {
        match self {
            JwksSource::File(f) => f.keys(),
            JwksSource::Http(h) => Ok(h.keys()),
        }
    }

    /// A token named a key we do not have: the endpoint may have rotated.
    fn unknown_key(&self) {
        if let JwksSource::Http(h) = self {
            h.refresh_soon();
        }
    }
}

/// A JWKS endpoint, fetched by a thread of its own at start-up, every
/// refresh interval, and soon after a token names an unknown key (at most
/// once a second). Logins use the last keys fetched.
pub struct JwksHttp {
    url: String,
    keys: std::sync::RwLock<Arc<JwkSet>>,
    wake: (Mutex<bool>, std::sync::Condvar),
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1 << 20;

impl JwksHttp {
    fn start(url: &str, refresh: Duration) -> Result<Arc<Self>, String> {
        let this = Arc::new(JwksHttp {
            url: url.to_string(),
            keys: std::sync::RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
        });
        // The first fetch before serving, so logins work from the start; an
        // endpoint that is down only delays them (retried every 10 s).
        let mut wait = match this.fetch_once() {
            Ok(()) => refresh,
            Err(e) => {
                tracing::warn!(url = %this.url, error = %e, "cannot fetch the JWKS yet; retrying in 10 s");
                Duration::from_secs(10)
            }
        };
        let weak = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("runnel-jwks".into())
            .spawn(move || loop {
                let Some(me) = weak.upgrade() else { return };
                {
                    let (lock, cv) = &me.wake;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut woken, _) = cv
                        .wait_timeout_while(guard, wait, |w| !*w)
                        .unwrap_or_else(|p| p.into_inner());
                    *woken = false;
                }
                wait = match me.fetch_once() {
                    Ok(()) => refresh,
                    Err(e) => {
                        tracing::warn!(url = %me.url, error = %e, "cannot fetch the JWKS; retrying in 10 s");
                        Duration::from_secs(10)
                    }
                };
                drop(me);
                // Key-rotation wake-ups are rate limited.
                std::thread::sleep(Duration::from_secs(1));
            })
            .map_err(|e| format!("cannot start the JWKS thread: {e}"))?;
        Ok(this)
    }

    fn keys(&self) -> Arc<JwkSet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refresh_soon(&self) {
        let (lock, cv) = &self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    fn fetch_once(&self) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let body = rt.block_on(async {
            tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.url))
                .await
                .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
        })?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not a JWKS: {e}"))?;
        tracing::info!(url = %self.url, keys = set.keys.len(), "JWKS fetched");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }
}

/// GET `url` (http or https), the body of a 200 answer.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no CA certificates to trust: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let resp = client
        .get(uri)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP status {}", resp.status()));
    }
    // The endpoint's answer is read up to a bound: a JWKS is kilobytes.
    let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed (at most {MAX_JWKS_BYTES} bytes): {e}"))?;
    Ok(body.to_bytes().to_vec())
}

/// A JWKS read from a file, re-read when the file changes (key rotation).
pub struct JwksFile {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, Arc<JwkSet>)>,
}

impl JwksFile {
    fn open(url: &str) -> Result<Self, String> {
        let path = url.strip_prefix("file://").ok_or_else(|| {
            format!("sasl.oauthbearer.jwks.endpoint.url={url}: not a file:// URL")
        })?;
        let f = JwksFile {
            path: PathBuf::from(path),
            cached: Mutex::new((None, Arc::new(JwkSet { keys: Vec::new() }))),
        };
        f.keys()
            .map_err(|e| format!("sasl.oauthbearer.jwks.endpoint.url={url}: {e}"))?;
        Ok(f)
    }

    fn keys(&self) -> Result<Arc<JwkSet>, String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != Some(modified) {
            let text = std::fs::read(&self.path)
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            let set: JwkSet = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a JWKS: {e}", self.path.display()))?;
            *c = (Some(modified), Arc::new(set));
        }
        Ok(c.1.clone())
    }
}

impl Validator {
    /// The listener's validator, from Kafka's keys.
    pub fn from_listener(config: &ListenerConfig) -> Result<Self, String> {
        let skew_secs: u64 = config
            .get("sasl.oauthbearer.clock.skew.seconds")
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("invalid sasl.oauthbearer.clock.skew.seconds {v:?}"))
            })
            .transpose()?
            .unwrap_or(30);
        if let Some(url) = config.get("sasl.oauthbearer.jwks.endpoint.url") {
            let list = |k: &str| -> Vec<String> {
                config
                    .get(k)
                    .map(|v| {
                        v.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let refresh_ms: u64 = config
                .get("sasl.oauthbearer.jwks.endpoint.refresh.ms")
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        format!("invalid sasl.oauthbearer.jwks.endpoint.refresh.ms {v:?}")
                    })
                })
                .transpose()?
                .unwrap_or(3_600_000);
            return Ok(Validator::Jwks {
                jwks: JwksSource::open(url, Duration::from_millis(refresh_ms.max(1000)))?,
                audience: list("sasl.oauthbearer.expected.audience"),
                issuer: config
                    .get("sasl.oauthbearer.expected.issuer")
                    .map(str::to_string),
                principal_claim: config
                    .get("sasl.oauthbearer.sub.claim.name")
                    .unwrap_or("sub")
                    .to_string(),
                skew: Duration::from_secs(skew_secs),
            });
        }
        // The unsecured validator takes its options from the JAAS config.
        let opts = config
            .get("oauthbearer.sasl.jaas.config")
            .or_else(|| config.get("sasl.jaas.config"))
            .map(jaas::parse)
            .transpose()?
            .map(|j| j.options)
            .unwrap_or_default();
        let skew_ms: u64 = opts
            .get("unsecuredValidatorAllowableClockSkewMs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Validator::Unsecured {
            principal_claim: opts
                .get("unsecuredValidatorPrincipalClaimName")
                .cloned()
                .unwrap_or_else(|| "sub".into()),
            skew: Duration::from_millis(skew_ms),
        })
    }

    /// Checks a token: the principal and the token's remaining lifetime.
    pub fn validate(&self, token: &str) -> Result<(String, Duration), String> {
        let (claims, principal_claim, skew) = match self {
            Validator::Unsecured {
                principal_claim,
                skew,
            } => (unsecured_claims(token)?, principal_claim, *skew),
            Validator::Jwks {
                jwks,
                audience,
                issuer,
                principal_claim,
                skew,
            } => (
                signed_claims(token, jwks, audience, issuer.as_deref(), *skew)?,
                principal_claim,
                *skew,
            ),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or("the token has no exp claim")?;
        if exp + skew.as_secs_f64() <= now {
            return Err("the token has expired".into());
        }
        if let Some(iat) = claims.get("iat").and_then(Value::as_f64) {
            if iat - skew.as_secs_f64() > now {
                return Err("the token is issued in the future (iat)".into());
            }
        }
        let principal = claims
            .get(principal_claim.as_str())
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("the token has no {principal_claim} claim"))?;
        Ok((
            principal.to_string(),
            Duration::from_secs_f64((exp - now).max(0.0)),
        ))
    }
}

/// The claims of an unsecured JWS (`alg: none`, empty signature).
fn unsecured_claims(token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWS (header.payload.signature)".into());
    };
    let json = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = B64URL
            .decode(part.trim_end_matches('='))
            .map_err(|_| format!("the token's {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("the token's {what} is not JSON"))
    };
    let header = json(h, "header")?;
    if header.get("alg").and_then(Value::as_str) != Some("none") || !sig.is_empty() {
        return Err(
            "signed tokens need sasl.oauthbearer.jwks.endpoint.url on the listener (the unsecured validator takes only alg none)"
                .into(),
        );
    }
    json(p, "payload")
}

fn signed_claims(
    token: &str,
    jwks: &JwksSource,
    audience: &[String],
    issuer: Option<&str>,
    skew: Duration,
) -> Result<Value, String> {
    if unsecured_claims(token).is_ok() {
        return Err("unsigned tokens (alg none) are refused on a listener with a JWKS".into());
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("invalid token header: {e}"))?;
    let keys = jwks.keys()?;
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| {
        // The endpoint may have rotated its keys: fetch again soon.
        jwks.unknown_key();
        format!(
            "no key in the JWKS matches the token's kid {:?}",
            header.kid
        )
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWKS key: {e}"))?;
    let mut v = Validation::new(header.alg);
    v.leeway = skew.as_secs();
    v.set_required_spec_claims(&["exp"]);
    if audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(audience);
    }
    if let Some(i) = issuer {
        v.set_issuer(&[i]);
    }
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| format!("invalid token: {e}"))
}

/// One OAUTHBEARER exchange: the client's single message carries the token.
pub struct OAuthBearer {
    validator: Arc<Validator>,
}

impl OAuthBearer {
    pub fn new(validator: Arc<Validator>) -> Self {
        OAuthBearer { validator }
    }
}

/// The bearer token of an RFC 7628 client response:
/// `n,[a=authzid],` `\x01` `auth=Bearer <token>` `\x01` ... `\x01\x01`.
fn bearer_token(msg: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut fields = text.split('\u{1}');
    let gs2 = fields.next()?;
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return None;
    }
    fields
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "auth")
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl SaslServer for OAuthBearer {
    fn step(&mut self, client: &[u8]) -> Result<Step, AuthError> {
        let token = bearer_token(client).ok_or_else(|| {
            AuthError::new(
                "Invalid OAUTHBEARER client response: expected auth=Bearer <token>",
                None,
            )
        })?;
        match self.validator.validate(token) {
            Ok((user, lifetime)) => Ok(Step::Done {
                reply: Vec::new(),
                user,
                lifetime: Some(lifetime),
            }),
            Err(e) => Err(AuthError::new(
                format!("Authentication failed: invalid OAuth bearer token: {e}"),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsecured(claims: &str) -> String {
        format!(
            "{}.{}.",
            B64URL.encode(br#"{"alg":"none"}"#),
            B64URL.encode(claims.as_bytes())
        )
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn unsecured_tokens() {
        let v = Validator::Unsecured {
            principal_claim: "sub".into(),
            skew: Duration::ZERO,
        };
        let good = unsecured(&format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 60));
        let (user, life) = v.validate(&good).unwrap();
        assert_eq!(user, "alice");
        assert!(life > Duration::from_secs(50));
        let expired = unsecured(&format!(r#"{{"sub":"alice","exp":{}}}"#, now() - 1));
        assert!(v.validate(&expired).is_err());
        assert!(v.validate(&unsecured(r#"{"sub":"alice"}"#)).is_err());
        assert!(v.validate("not-a-token").is_err());
        let msg = format!("n,,\u{1}auth=Bearer {good}\u{1}\u{1}");
        let mut s = OAuthBearer::new(Arc::new(v));
        assert!(matches!(s.step(msg.as_bytes()), Ok(Step::Done { .. })));
        assert!(s.step(b"n,,\x01auth=Basic x\x01\x01").is_err());
    }
}
