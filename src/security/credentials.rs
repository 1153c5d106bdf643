//! SCRAM credentials (SCRAM-SHA-256 / SCRAM-SHA-512), managed with
//! Describe/AlterUserScramCredentials and kept in RocksDB's `meta` CF.
//! Only the salt, iteration count, StoredKey and ServerKey are kept (RFC
//! 5802): the password itself never reaches the broker, as the client
//! salts it before sending.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const PREFIX: &[u8] = b"scram/";
/// Kafka's bounds on SCRAM iterations.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The `mechanism` number of the UserScramCredentials APIs.
    pub fn wire_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_wire_id(id: i8) -> Option<Self> {
        match id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut m =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut m =
                    <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802: PBKDF2 with this HMAC, one output block (the hash's
    /// length). Clients compute it: the broker as a client of other brokers
    /// (inter-broker SCRAM), and tests.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &block);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    pub fn from_salted_password(
        mech: ScramMechanism,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mech.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mech.hash(&client_key),
            server_key: mech.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }
}

type Key = (String, ScramMechanism);

pub struct CredentialStore {
    store: Arc<Store>,
    creds: RwLock<BTreeMap<Key, ScramCredential>>,
}

fn db_key(user: &str, mech: ScramMechanism) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(mech.name().as_bytes());
    k.push(b'/');
    k.extend_from_slice(user.as_bytes());
    k
}

impl CredentialStore {
    pub fn load(store: Arc<Store>) -> BrokerResult<Self> {
        let mut creds = BTreeMap::new();
        {
            let meta = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta, PREFIX) {
                let (k, v) = item?;
                if !k.starts_with(PREFIX) {
                    break;
                }
                let rest = String::from_utf8_lossy(&k[PREFIX.len()..]).to_string();
                let parsed = rest
                    .split_once('/')
                    .and_then(|(m, u)| Some((ScramMechanism::from_name(m)?, u.to_string())));
                match (parsed, serde_json::from_slice::<ScramCredential>(&v)) {
                    (Some((mech, user)), Ok(c)) => {
                        creds.insert((user, mech), c);
                    }
                    _ => tracing::warn!("skipping an unreadable SCRAM credential record"),
                }
            }
        }
        Ok(CredentialStore {
            store,
            creds: RwLock::new(creds),
        })
    }

    pub fn get(&self, user: &str, mech: ScramMechanism) -> Option<ScramCredential> {
        self.creds
            .read()
            .ok()?
            .get(&(user.to_string(), mech))
            .cloned()
    }

    pub fn upsert(&self, user: &str, mech: ScramMechanism, c: ScramCredential) -> BrokerResult<()> {
        let json = serde_json::to_vec(&c).map_err(|e| BrokerError::Storage(e.to_string()))?;
        let meta = self.store.cf(CF_META)?;
        self.store.db.put_cf(meta, db_key(user, mech), json)?;
        if let Ok(mut m) = self.creds.write() {
            m.insert((user.to_string(), mech), c);
        }
        Ok(())
    }

    /// Cluster mode: exactly these credentials, as the metadata store holds
    /// them (`<mechanism>/<user>` → JSON).
    pub fn replace_all(&self, all: &BTreeMap<String, Vec<u8>>) -> BrokerResult<()> {
        let wanted: BTreeMap<Key, ScramCredential> = all
            .iter()
            .filter_map(|(k, v)| {
                let (m, u) = k.split_once('/')?;
                Some((
                    (u.to_string(), ScramMechanism::from_name(m)?),
                    serde_json::from_slice(v).ok()?,
                ))
            })
            .collect();
        let current: Vec<Key> = self
            .creds
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (user, mech) in current {
            if !wanted.contains_key(&(user.clone(), mech)) {
                self.delete(&user, mech)?;
            }
        }
        for ((user, mech), c) in wanted {
            if self.get(&user, mech).as_ref() != Some(&c) {
                self.upsert(&user, mech, c)?;
            }
        }
        Ok(())
    }

    /// Cluster mode: one credential changed elsewhere (`None`: deleted).
    pub fn apply_shared(&self, item: &str, value: Option<&[u8]>) -> BrokerResult<()> {
        let Some((m, user)) = item.split_once('/') else {
            return Ok(());
        };
        let Some(mech) = ScramMechanism::from_name(m) else {
            return Ok(());
        };
        match value.and_then(|v| serde_json::from_slice::<ScramCredential>(v).ok()) {
            Some(c) if self.get(user, mech).as_ref() != Some(&c) => self.upsert(user, mech, c),
            Some(_) => Ok(()),
            None => self.delete(user, mech).map(|_| ()),
        }
    }

    /// The shared form of a credential: (item, value).
    pub fn shared_item(&self, user: &str, mech: ScramMechanism) -> (String, Option<Vec<u8>>) {
        (
            format!("{}/{user}", mech.name()),
            self.get(user, mech)
                .and_then(|c| serde_json::to_vec(&c).ok()),
        )
    }

    /// False if there was no such credential.
    pub fn delete(&self, user: &str, mech: ScramMechanism) -> BrokerResult<bool> {
        if self.get(user, mech).is_none() {
            return Ok(false);
        }
        let meta = self.store.cf(CF_META)?;
        self.store.db.delete_cf(meta, db_key(user, mech))?;
        if let Ok(mut m) = self.creds.write() {
            m.remove(&(user.to_string(), mech));
        }
        Ok(true)
    }

    /// Every user with credentials, and (mechanism, iterations) for each.
    pub fn users(&self) -> BTreeMap<String, Vec<(ScramMechanism, i32)>> {
        let mut out: BTreeMap<String, Vec<(ScramMechanism, i32)>> = BTreeMap::new();
        if let Ok(m) = self.creds.read() {
            for ((user, mech), c) in m.iter() {
                out.entry(user.clone())
                    .or_default()
                    .push((*mech, c.iterations));
            }
        }
        out
    }
}
