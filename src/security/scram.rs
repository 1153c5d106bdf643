//! SCRAM server side (RFC 5802 / RFC 7677) for SASL/SCRAM-SHA-256 and -512,
//! against credentials in the `CredentialStore`.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::credentials::{CredentialStore, ScramCredential, ScramMechanism};
use super::plain::constant_time_eq;
use super::{AuthError, SaslServer, Step};

enum State {
    Initial,
    SentFirst {
        user: String,
        nonce: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        cred: ScramCredential,
    },
    Done,
}

pub struct Scram {
    mech: ScramMechanism,
    creds: Arc<CredentialStore>,
    state: State,
}

impl Scram {
    pub fn new(mech: ScramMechanism, creds: Arc<CredentialStore>) -> Self {
        Scram {
            mech,
            creds,
            state: State::Initial,
        }
    }
}

/// `saslname` unescaping: `=2C` is `,` and `=3D` is `=`.
fn unescape(name: &str) -> Result<String, AuthError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(AuthError::new("Invalid SCRAM user name encoding", None)),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn attr(part: &str, name: char) -> Option<&str> {
    let mut c = part.chars();
    (c.next() == Some(name) && c.next() == Some('=')).then(|| &part[2..])
}

fn bad(msg: &str) -> AuthError {
    AuthError::new(format!("Invalid SCRAM message: {msg}"), None)
}

impl SaslServer for Scram {
    fn step(&mut self, client: &[u8]) -> Result<Step, AuthError> {
        let msg = std::str::from_utf8(client).map_err(|_| bad("not UTF-8"))?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Initial => {
                // gs2-header: cbind flag, optional authzid, then the bare message.
                let mut parts = msg.splitn(3, ',');
                let cbind = parts.next().ok_or_else(|| bad("empty"))?;
                let authzid = parts.next().ok_or_else(|| bad("no gs2 header"))?;
                let bare = parts.next().ok_or_else(|| bad("no client-first message"))?;
                if cbind != "n" && cbind != "y" {
                    return Err(bad("channel binding is not supported"));
                }
                let fields: Vec<&str> = bare.split(',').collect();
                let user = fields
                    .iter()
                    .find_map(|f| attr(f, 'n'))
                    .ok_or_else(|| bad("no user name"))?;
                let user = unescape(user)?;
                let client_nonce = fields
                    .iter()
                    .find_map(|f| attr(f, 'r'))
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| bad("no nonce"))?;
                if let Some(a) = attr(authzid, 'a') {
                    if unescape(a)? != user {
                        return Err(AuthError::new(
                            "Authentication failed: authorization id must match the user name",
                            Some(&user),
                        ));
                    }
                }
                if fields.iter().any(|f| f.starts_with("tokenauth=")) {
                    return Err(AuthError::new(
                        "Authentication failed: delegation tokens are not supported",
                        Some(&user),
                    ));
                }
                let cred = self.creds.get(&user, self.mech).ok_or_else(|| {
                    AuthError::new(
                        "Authentication failed: Invalid user credentials",
                        Some(&user),
                    )
                })?;
                let nonce = format!(
                    "{client_nonce}{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    B64.encode(&cred.salt),
                    cred.iterations
                );
                let reply = server_first.clone().into_bytes();
                self.state = State::SentFirst {
                    user,
                    nonce,
                    gs2_header: format!("{cbind},{authzid},"),
                    client_first_bare: bare.to_string(),
                    server_first,
                    cred,
                };
                Ok(Step::Continue(reply))
            }
            State::SentFirst {
                user,
                nonce,
                gs2_header,
                client_first_bare,
                server_first,
                cred,
            } => {
                let fail = |m: &str| AuthError::new(m.to_string(), Some(&user));
                let (without_proof, proof) = msg
                    .rsplit_once(",p=")
                    .ok_or_else(|| fail("Invalid SCRAM message: no proof"))?;
                let fields: Vec<&str> = without_proof.split(',').collect();
                let binding = fields.iter().find_map(|f| attr(f, 'c')).unwrap_or("");
                if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(fail("Invalid SCRAM message: channel binding mismatch"));
                }
                if fields.iter().find_map(|f| attr(f, 'r')) != Some(nonce.as_str()) {
                    return Err(fail("Invalid SCRAM message: nonce mismatch"));
                }
                let proof = B64
                    .decode(proof)
                    .map_err(|_| fail("Invalid SCRAM message: proof is not base64"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = self.mech.hmac(&cred.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Err(fail("Authentication failed: Invalid user credentials"));
                }
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                if !constant_time_eq(&self.mech.hash(&client_key), &cred.stored_key) {
                    return Err(fail("Authentication failed: Invalid user credentials"));
                }
                let server_signature = self.mech.hmac(&cred.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
                    user,
                    lifetime: None,
                })
            }
            State::Done => Err(bad("the exchange is already complete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side of RFC 5802, enough to test the server with.
    fn client_final(
        mech: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let mut salt = None;
        let mut iters = 0;
        let mut nonce = "";
        for f in server_first.split(',') {
            if let Some(v) = f.strip_prefix("s=") {
                salt = Some(B64.decode(v).unwrap());
            } else if let Some(v) = f.strip_prefix("i=") {
                iters = v.parse().unwrap();
            } else if let Some(v) = f.strip_prefix("r=") {
                nonce = v;
            }
        }
        let salted = mech.salted_password(password.as_bytes(), &salt.unwrap(), iters);
        let client_key = mech.hmac(&salted, b"Client Key");
        let stored = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mech.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn full_exchange_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::db::Store::open(dir.path()).unwrap();
        let creds = Arc::new(CredentialStore::load(store).unwrap());
        for mech in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let salt = b"salty".to_vec();
            let salted = mech.salted_password(b"secret", &salt, 4096);
            creds
                .upsert(
                    "ali,ce",
                    mech,
                    ScramCredential::from_salted_password(mech, salt, &salted, 4096),
                )
                .unwrap();
            for (password, ok) in [("secret", true), ("wrong", false)] {
                let mut s = Scram::new(mech, creds.clone());
                let bare = "n=ali=2Cce,r=abc123";
                let Step::Continue(first) = s.step(format!("n,,{bare}").as_bytes()).unwrap() else {
                    panic!("expected server-first")
                };
                let first = String::from_utf8(first).unwrap();
                let fin = client_final(mech, password, bare, &first);
                let r = s.step(fin.as_bytes());
                assert_eq!(r.is_ok(), ok, "{mech:?} {password}");
                if let Ok(Step::Done { user, reply, .. }) = r {
                    assert_eq!(user, "ali,ce");
                    assert!(reply.starts_with(b"v="));
                }
            }
            let mut s = Scram::new(mech, creds.clone());
            assert!(s.step(b"n,,n=nobody,r=x").is_err());
        }
    }
}
