//! Broker configs changed at runtime through AlterConfigs and
//! IncrementalAlterConfigs on BROKER resources: the cluster-wide default
//! (resource name "") and this broker's own values (resource name = node id).
//! They are persisted in RocksDB's `meta` CF and layered over
//! server.properties the way Kafka layers them: per-broker over cluster
//! default over the file over Kafka's defaults.
//!
//! Only the keys that supply topic defaults can change at runtime here; the
//! rest (listeners, log.dirs, ...) are read once at start-up, and Kafka refuses
//! most of them dynamically too.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::topic::{supplied_by, validate_value, ConfigSource, ConfigType};
use crate::error::{BrokerError, BrokerResult};
use crate::storage::db::{Store, CF_META};

const DEFAULT_KEY: &[u8] = b"broker-config/default";
const BROKER_KEY: &[u8] = b"broker-config/broker";

/// Which BROKER resource a change addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Resource name "": the default for every broker of the cluster.
    ClusterDefault,
    /// Resource name = this broker's node id.
    ThisBroker,
}

impl Scope {
    /// Maps a BROKER resource name to its scope.
    pub fn of(resource_name: &str, node_id: i32) -> BrokerResult<Scope> {
        if resource_name.is_empty() {
            Ok(Scope::ClusterDefault)
        } else if resource_name == node_id.to_string() {
            Ok(Scope::ThisBroker)
        } else {
            Err(BrokerError::InvalidRequest(format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {resource_name}"
            )))
        }
    }

    fn storage_key(self) -> &'static [u8] {
        match self {
            Scope::ClusterDefault => DEFAULT_KEY,
            Scope::ThisBroker => BROKER_KEY,
        }
    }
}

/// The retention keys, which Kafka reads as synonyms of one setting.
pub const RETENTION_KEYS: &[&str] = &[
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
];

/// TLS store keys Kafka lets change at runtime (per broker, bare or under a
/// `listener.name.<name>.` prefix): a certificate renewal without a restart.
const SSL_STORE_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.allow.dn.changes",
    "ssl.allow.san.changes",
];

/// Whether a key holds a secret (a password or an inline private key),
/// never to be logged or described.
pub fn is_secret(key: &str) -> bool {
    key.ends_with("password") || key.ends_with("ssl.keystore.key") || key.ends_with("jaas.config")
}

/// A value as it may appear in logs: secrets hidden, as Kafka does.
pub fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "[hidden]"
    } else {
        value
    }
}

pub fn is_ssl_store_key(key: &str) -> bool {
    let bare = key
        .strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
        .map_or(key, |(_, k)| k);
    SSL_STORE_KEYS.contains(&bare)
}

/// Broker keys that may change at runtime. `log.flush.interval.messages` is
/// left out: it picks the fsync policy of the write path at start-up.
pub fn is_dynamic(key: &str) -> bool {
    (key != "log.flush.interval.messages" && supplied_by(key).is_some()) || is_ssl_store_key(key)
}

/// Checks that a broker key may be changed at runtime.
pub fn check_key(key: &str) -> BrokerResult<()> {
    if is_dynamic(key) {
        Ok(())
    } else if super::is_understood(key) || super::ACCEPTED_WITHOUT_EFFECT.contains(&key) {
        Err(BrokerError::InvalidRequest(format!(
            "Cannot update these configs dynamically: {key} (set it in server.properties and restart)"
        )))
    } else {
        Err(BrokerError::InvalidConfig(format!(
            "Unknown broker config name: {key}"
        )))
    }
}

/// The value type of a dynamic broker key.
pub fn key_type(key: &str) -> ConfigType {
    if key == "log.retention.hours" || key == "log.retention.minutes" {
        return ConfigType::Int;
    }
    supplied_by(key).map_or(ConfigType::String, |d| d.kind)
}

/// Checks one broker key and value a client wants to set dynamically.
pub fn validate(key: &str, value: Option<&str>) -> BrokerResult<()> {
    check_key(key)?;
    let value = value.ok_or_else(|| {
        BrokerError::InvalidConfig(format!("Null value not supported for broker config {key}"))
    })?;
    // TLS settings are checked by building the listener's TLS set-up.
    if is_ssl_store_key(key) {
        return Ok(());
    }
    if RETENTION_KEYS.contains(&key) {
        return match value.trim().parse::<i64>() {
            Ok(v) if v >= -1 => Ok(()),
            _ => Err(BrokerError::InvalidConfig(format!(
                "Invalid value {value} for configuration {key}: must be a number >= -1"
            ))),
        };
    }
    let def = supplied_by(key)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("Unknown broker config name: {key}")))?;
    validate_value(def, value).map_err(|e| BrokerError::InvalidConfig(e.replace(def.name, key)))
}

/// The broker-level values in effect, by layer.
#[derive(Debug, Default, Clone)]
pub struct BrokerLayers {
    pub dynamic_broker: BTreeMap<String, String>,
    pub dynamic_default: BTreeMap<String, String>,
    pub static_raw: BTreeMap<String, String>,
    /// All three merged, higher layers winning key by key (what Kafka's
    /// effective config holds).
    pub merged: BTreeMap<String, String>,
}

impl BrokerLayers {
    pub fn new(
        static_raw: BTreeMap<String, String>,
        dynamic_default: BTreeMap<String, String>,
        dynamic_broker: BTreeMap<String, String>,
    ) -> Self {
        let mut merged = static_raw.clone();
        merged.extend(dynamic_default.clone());
        merged.extend(dynamic_broker.clone());
        BrokerLayers {
            dynamic_broker,
            dynamic_default,
            static_raw,
            merged,
        }
    }

    /// Just the file's settings.
    #[cfg(test)]
    pub fn from_static(static_raw: BTreeMap<String, String>) -> Self {
        Self::new(static_raw, BTreeMap::new(), BTreeMap::new())
    }

    /// Where the effective value of `key` comes from.
    pub fn source_of(&self, key: &str) -> ConfigSource {
        self.layers()
            .into_iter()
            .find(|(m, _)| m.contains_key(key))
            .map_or(ConfigSource::Default, |(_, s)| s)
    }

    /// Every layer's value of each of `keys`, highest layer first (the
    /// synonyms DescribeConfigs lists).
    pub fn synonyms<'a>(&'a self, keys: &[&'a str]) -> Vec<(&'a str, &'a str, ConfigSource)> {
        let mut out = Vec::new();
        for (map, source) in self.layers() {
            for k in keys {
                if let Some(v) = map.get(*k) {
                    out.push((*k, v.as_str(), source));
                }
            }
        }
        out
    }

    fn layers(&self) -> [(&BTreeMap<String, String>, ConfigSource); 3] {
        [
            (&self.dynamic_broker, ConfigSource::DynamicBroker),
            (&self.dynamic_default, ConfigSource::DynamicDefaultBroker),
            (&self.static_raw, ConfigSource::StaticBroker),
        ]
    }
}

/// The dynamic layers, persisted; readers take a cheap snapshot.
pub struct DynamicConfigs {
    store: Arc<Store>,
    layers: RwLock<Arc<BrokerLayers>>,
}

fn read_map(store: &Store, key: &[u8]) -> BrokerResult<BTreeMap<String, String>> {
    let meta = store.cf(CF_META)?;
    Ok(match store.db.get_cf(meta, key)? {
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| BrokerError::Storage(format!("unreadable dynamic broker configs: {e}")))?,
        None => BTreeMap::new(),
    })
}

impl DynamicConfigs {
    pub fn load(store: Arc<Store>, static_raw: BTreeMap<String, String>) -> BrokerResult<Self> {
        let default = read_map(&store, DEFAULT_KEY)?;
        let broker = read_map(&store, BROKER_KEY)?;
        for (k, v) in default.iter().chain(broker.iter()) {
            tracing::info!(key = %k, value = %shown(k, v), "dynamic broker config in effect");
        }
        Ok(DynamicConfigs {
            store,
            layers: RwLock::new(Arc::new(BrokerLayers::new(static_raw, default, broker))),
        })
    }

    /// The layers in effect now.
    pub fn layers(&self) -> Arc<BrokerLayers> {
        match self.layers.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The dynamic values set on one scope.
    pub fn get(&self, scope: Scope) -> BTreeMap<String, String> {
        let l = self.layers();
        match scope {
            Scope::ClusterDefault => l.dynamic_default.clone(),
            Scope::ThisBroker => l.dynamic_broker.clone(),
        }
    }

    /// Validates every entry, then (unless `validate_only`) makes `values`
    /// the scope's whole set of dynamic configs, durably.
    pub fn replace(
        &self,
        scope: Scope,
        values: BTreeMap<String, String>,
        validate_only: bool,
    ) -> BrokerResult<()> {
        for (k, v) in &values {
            validate(k, Some(v))?;
        }
        if validate_only {
            return Ok(());
        }
        let mut guard = self
            .layers
            .write()
            .map_err(|_| BrokerError::Storage("dynamic config lock poisoned".into()))?;
        let json = serde_json::to_vec(&values).map_err(|e| BrokerError::Storage(e.to_string()))?;
        let meta = self.store.cf(CF_META)?;
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.store
            .db
            .put_cf_opt(meta, scope.storage_key(), json, &opts)?;
        let old = guard.as_ref();
        let (default, broker) = match scope {
            Scope::ClusterDefault => (values, old.dynamic_broker.clone()),
            Scope::ThisBroker => (old.dynamic_default.clone(), values),
        };
        *guard = Arc::new(BrokerLayers::new(old.static_raw.clone(), default, broker));
        tracing::info!(scope = ?scope, "dynamic broker configs changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_win_in_kafka_order() {
        let l = BrokerLayers::new(
            map(&[
                ("log.retention.hours", "1"),
                ("log.cleanup.policy", "delete"),
            ]),
            map(&[
                ("log.retention.ms", "5000"),
                ("log.cleanup.policy", "compact"),
            ]),
            map(&[("log.cleanup.policy", "compact,delete")]),
        );
        assert_eq!(l.merged["log.cleanup.policy"], "compact,delete");
        assert_eq!(
            l.source_of("log.cleanup.policy"),
            ConfigSource::DynamicBroker
        );
        assert_eq!(
            l.source_of("log.retention.ms"),
            ConfigSource::DynamicDefaultBroker
        );
        assert_eq!(
            l.source_of("log.retention.hours"),
            ConfigSource::StaticBroker
        );
        assert_eq!(l.source_of("log.retention.bytes"), ConfigSource::Default);
        let syn = l.synonyms(RETENTION_KEYS);
        assert_eq!(
            syn[0],
            (
                "log.retention.ms",
                "5000",
                ConfigSource::DynamicDefaultBroker
            )
        );
        assert_eq!(
            syn[1],
            ("log.retention.hours", "1", ConfigSource::StaticBroker)
        );
    }

    #[test]
    fn validates_keys_and_values() {
        assert!(validate("log.retention.ms", Some("1000")).is_ok());
        assert!(validate("log.retention.ms", Some("-2")).is_err());
        assert!(validate("log.cleanup.policy", Some("compact")).is_ok());
        assert!(matches!(
            validate("log.cleanup.policy", Some("bogus")),
            Err(BrokerError::InvalidConfig(m)) if m.contains("log.cleanup.policy")
        ));
        assert!(matches!(
            validate("log.dirs", Some("/x")),
            Err(BrokerError::InvalidRequest(_))
        ));
        assert!(matches!(
            validate("no.such.key", Some("1")),
            Err(BrokerError::InvalidConfig(_))
        ));
        assert!(validate("message.max.bytes", Some("2000")).is_ok());
        assert!(validate("message.max.bytes", None).is_err());
    }
}
