//! Kafka's topic-level configs: names, defaults, types, and the broker keys
//! (`log.*` and friends) that supply their defaults.

use std::collections::BTreeMap;

use super::dynamic::{BrokerLayers, RETENTION_KEYS};
use crate::error::BrokerError;

/// Value types as DescribeConfigs reports them (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a reported value came from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
    /// A group's own override (the GROUP resource).
    Group = 8,
}

#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ConfigType,
    /// The broker key whose value is this config's default, if any.
    pub broker_key: Option<&'static str>,
    /// Allowed values for enumerated strings/lists.
    pub allowed: &'static [&'static str],
}

const fn def(
    name: &'static str,
    default: &'static str,
    kind: ConfigType,
    broker_key: Option<&'static str>,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        default,
        kind,
        broker_key,
        allowed: &[],
    }
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Kafka 4.x accepts, with its default.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        default: "delete",
        kind: ConfigType::List,
        broker_key: Some("log.cleanup.policy"),
        allowed: &["delete", "compact"],
    },
    TopicConfigDef {
        name: "compression.type",
        default: "producer",
        kind: ConfigType::String,
        broker_key: Some("compression.type"),
        allowed: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
    },
    def(
        "compression.gzip.level",
        "-1",
        ConfigType::Int,
        Some("compression.gzip.level"),
    ),
    def(
        "compression.lz4.level",
        "9",
        ConfigType::Int,
        Some("compression.lz4.level"),
    ),
    def(
        "compression.zstd.level",
        "3",
        ConfigType::Int,
        Some("compression.zstd.level"),
    ),
    def(
        "delete.retention.ms",
        "86400000",
        ConfigType::Long,
        Some("log.cleaner.delete.retention.ms"),
    ),
    def(
        "file.delete.delay.ms",
        "60000",
        ConfigType::Long,
        Some("log.segment.delete.delay.ms"),
    ),
    def(
        "flush.messages",
        LONG_MAX,
        ConfigType::Long,
        Some("log.flush.interval.messages"),
    ),
    def(
        "flush.ms",
        LONG_MAX,
        ConfigType::Long,
        Some("log.flush.interval.ms"),
    ),
    def(
        "follower.replication.throttled.replicas",
        "",
        ConfigType::List,
        None,
    ),
    def(
        "index.interval.bytes",
        "4096",
        ConfigType::Int,
        Some("log.index.interval.bytes"),
    ),
    def(
        "leader.replication.throttled.replicas",
        "",
        ConfigType::List,
        None,
    ),
    def(
        "local.retention.bytes",
        "-2",
        ConfigType::Long,
        Some("log.local.retention.bytes"),
    ),
    def(
        "local.retention.ms",
        "-2",
        ConfigType::Long,
        Some("log.local.retention.ms"),
    ),
    def(
        "max.compaction.lag.ms",
        LONG_MAX,
        ConfigType::Long,
        Some("log.cleaner.max.compaction.lag.ms"),
    ),
    def(
        "max.message.bytes",
        "1048588",
        ConfigType::Int,
        Some("message.max.bytes"),
    ),
    def(
        "message.timestamp.after.max.ms",
        "3600000",
        ConfigType::Long,
        Some("log.message.timestamp.after.max.ms"),
    ),
    def(
        "message.timestamp.before.max.ms",
        LONG_MAX,
        ConfigType::Long,
        Some("log.message.timestamp.before.max.ms"),
    ),
    TopicConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: ConfigType::String,
        broker_key: Some("log.message.timestamp.type"),
        allowed: &["CreateTime", "LogAppendTime"],
    },
    def(
        "min.cleanable.dirty.ratio",
        "0.5",
        ConfigType::Double,
        Some("log.cleaner.min.cleanable.ratio"),
    ),
    def(
        "min.compaction.lag.ms",
        "0",
        ConfigType::Long,
        Some("log.cleaner.min.compaction.lag.ms"),
    ),
    def(
        "min.insync.replicas",
        "1",
        ConfigType::Int,
        Some("min.insync.replicas"),
    ),
    def(
        "preallocate",
        "false",
        ConfigType::Boolean,
        Some("log.preallocate"),
    ),
    def(
        "remote.log.copy.disable",
        "false",
        ConfigType::Boolean,
        None,
    ),
    def(
        "remote.log.delete.on.disable",
        "false",
        ConfigType::Boolean,
        None,
    ),
    def("remote.storage.enable", "false", ConfigType::Boolean, None),
    def(
        "retention.bytes",
        "-1",
        ConfigType::Long,
        Some("log.retention.bytes"),
    ),
    def(
        "retention.ms",
        "604800000",
        ConfigType::Long,
        Some("log.retention.ms"),
    ),
    def(
        "segment.bytes",
        "1073741824",
        ConfigType::Int,
        Some("log.segment.bytes"),
    ),
    def(
        "segment.index.bytes",
        "10485760",
        ConfigType::Int,
        Some("log.index.size.max.bytes"),
    ),
    def(
        "segment.jitter.ms",
        "0",
        ConfigType::Long,
        Some("log.roll.jitter.ms"),
    ),
    def(
        "segment.ms",
        "604800000",
        ConfigType::Long,
        Some("log.roll.ms"),
    ),
    def(
        "unclean.leader.election.enable",
        "false",
        ConfigType::Boolean,
        Some("unclean.leader.election.enable"),
    ),
];

pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config whose default a broker key supplies (`log.retention.hours`
/// and `.minutes` supply `retention.ms`, in their own units).
pub fn supplied_by(broker_key: &str) -> Option<&'static TopicConfigDef> {
    if RETENTION_KEYS.contains(&broker_key) {
        return lookup("retention.ms");
    }
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_key == Some(broker_key))
}

/// True for broker keys that only supply topic defaults.
pub fn is_broker_default_key(key: &str) -> bool {
    supplied_by(key).is_some()
}

/// Smallest allowed numeric value: -1 means "unlimited" for most configs, the
/// local (tiered) retention ones also take -2, sizes and counts start at 0 or 1.
fn min_value(def: &TopicConfigDef) -> i64 {
    match def.name {
        "compression.zstd.level" => -131_072,
        "local.retention.ms" | "local.retention.bytes" => -2,
        "retention.ms" | "retention.bytes" | "compression.gzip.level" => -1,
        "max.message.bytes"
        | "delete.retention.ms"
        | "file.delete.delay.ms"
        | "min.compaction.lag.ms"
        | "segment.jitter.ms"
        | "message.timestamp.after.max.ms"
        | "message.timestamp.before.max.ms"
        | "index.interval.bytes"
        | "max.compaction.lag.ms" => 0,
        _ => 1,
    }
}

/// Checks that a topic config value has the right type and range.
pub fn validate_value(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "Invalid value {value} for configuration {}: {why}",
            def.name
        ))
    };
    match def.kind {
        ConfigType::Boolean => {
            if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") {
                return bad("Expected value to be either true or false");
            }
        }
        ConfigType::Int => match value.trim().parse::<i32>() {
            Ok(v) if i64::from(v) < min_value(def) => {
                return bad(&format!("Value must be at least {}", min_value(def)))
            }
            Ok(_) => {}
            Err(_) => return bad("Not a number of type INT"),
        },
        ConfigType::Long => match value.trim().parse::<i64>() {
            Ok(v) if v < min_value(def) => {
                return bad(&format!("Value must be at least {}", min_value(def)))
            }
            Ok(_) => {}
            Err(_) => return bad("Not a number of type LONG"),
        },
        ConfigType::Double => match value.trim().parse::<f64>() {
            Ok(v) if !(0.0..=1.0).contains(&v) && def.name == "min.cleanable.dirty.ratio" => {
                return bad("Value must be between 0 and 1")
            }
            Ok(_) => {}
            Err(_) => return bad("Not a number of type DOUBLE"),
        },
        ConfigType::String => {
            if !def.allowed.is_empty() && !def.allowed.contains(&value.trim()) {
                return bad(&format!(
                    "String must be one of: {}",
                    def.allowed.join(", ")
                ));
            }
        }
        ConfigType::List => {
            // An empty list is valid (Kafka 4.x, KIP-1161): an empty
            // `cleanup.policy` neither deletes by retention nor compacts;
            // only DeleteRecords moves the log start.
            if !def.allowed.is_empty() && !value.trim().is_empty() {
                for item in value.split(',').map(str::trim) {
                    if !def.allowed.contains(&item) {
                        return bad(&format!(
                            "List items must be among: {}",
                            def.allowed.join(", ")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Validates a config a client sets on a topic.
pub fn validate_topic_config(name: &str, value: Option<&str>) -> Result<(), BrokerError> {
    let def = lookup(name)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("Unknown topic config name: {name}")))?;
    let value = value.ok_or_else(|| {
        BrokerError::InvalidConfig(format!("Null value not supported for topic config {name}"))
    })?;
    validate_value(def, value).map_err(BrokerError::InvalidConfig)
}

/// Makes sure every broker-level default in the file parses.
pub fn validate_broker_defaults(raw: &BTreeMap<String, String>) -> Result<(), String> {
    for d in TOPIC_CONFIGS {
        if let Some(v) = d.broker_key.and_then(|k| raw.get(k)) {
            let key = d.broker_key.unwrap_or(d.name);
            validate_value(d, v).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    for key in ["log.retention.hours", "log.retention.minutes"] {
        if let Some(v) = raw.get(key) {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid value {v:?} for {key}: not a valid number"))?;
        }
    }
    Ok(())
}

/// One resolved config value with where it came from.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
}

/// The broker keys that can supply a topic config's default.
pub fn broker_synonym_keys(def: &'static TopicConfigDef) -> &'static [&'static str] {
    if def.name == "retention.ms" {
        return RETENTION_KEYS;
    }
    match &def.broker_key {
        Some(k) => std::slice::from_ref(k),
        None => &[],
    }
}

/// `log.retention.{ms,minutes,hours}` with their units, in Kafka's order of precedence.
const RETENTION_UNITS: &[(&str, i64)] = &[
    ("log.retention.ms", 1),
    ("log.retention.minutes", 60_000),
    ("log.retention.hours", 3_600_000),
];

/// A topic config's default from the broker's effective settings: the key
/// that set it and the value in the topic config's unit.
fn broker_default(
    def: &'static TopicConfigDef,
    merged: &BTreeMap<String, String>,
) -> Option<(&'static str, String)> {
    if def.name == "retention.ms" {
        return RETENTION_UNITS.iter().find_map(|&(key, unit)| {
            let n = merged.get(key)?.trim().parse::<i64>().ok()?;
            let ms = if n < 0 { n } else { n.saturating_mul(unit) };
            Some((key, ms.to_string()))
        });
    }
    let key = def.broker_key?;
    merged.get(key).map(|v| (key, v.clone()))
}

/// All topic configs with the effective value for a topic.
pub fn resolve_all(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerLayers,
) -> Vec<ResolvedConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = match overrides.get(def.name) {
                Some(v) => (v.clone(), ConfigSource::DynamicTopic),
                None => match broker_default(def, &broker.merged) {
                    Some((key, v)) => (v, broker.source_of(key)),
                    None => (def.default.to_string(), ConfigSource::Default),
                },
            };
            ResolvedConfig { def, value, source }
        })
        .collect()
}

/// The effective value of one integer topic config; `broker` is the merged
/// broker settings ([`BrokerLayers::merged`]).
pub fn effective_i64(
    name: &str,
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> Option<i64> {
    let def = lookup(name)?;
    overrides
        .get(name)
        .cloned()
        .or_else(|| broker_default(def, broker).map(|(_, v)| v))
        .unwrap_or_else(|| def.default.to_string())
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_and_values() {
        assert!(validate_topic_config("retention.ms", Some("1000")).is_ok());
        assert!(validate_topic_config("retention.ms", Some("-5")).is_err());
        assert!(validate_topic_config("cleanup.policy", Some("compact,delete")).is_ok());
        assert!(validate_topic_config("cleanup.policy", Some("bogus")).is_err());
        assert!(validate_topic_config("cleanup.policy", Some("")).is_ok());
        assert!(validate_topic_config("cleanup.policy", Some("delete,,compact")).is_err());
        assert!(validate_topic_config("no.such.config", Some("1")).is_err());
        assert!(validate_topic_config("min.insync.replicas", Some("2")).is_ok());
        assert!(validate_topic_config("compression.type", Some("lz4")).is_ok());
        assert!(validate_topic_config("compression.type", Some("brotli")).is_err());
    }

    #[test]
    fn resolves_sources() {
        let mut broker = BTreeMap::new();
        broker.insert("log.retention.hours".to_string(), "1".to_string());
        let mut topic = BTreeMap::new();
        topic.insert("cleanup.policy".to_string(), "compact".to_string());
        let all = resolve_all(&topic, &BrokerLayers::from_static(broker.clone()));
        let get = |n: &str| all.iter().find(|c| c.def.name == n).unwrap();
        assert_eq!(get("cleanup.policy").source, ConfigSource::DynamicTopic);
        assert_eq!(get("retention.ms").value, "3600000");
        assert_eq!(get("retention.ms").source, ConfigSource::StaticBroker);
        assert_eq!(get("segment.ms").source, ConfigSource::Default);
        assert_eq!(
            effective_i64("max.message.bytes", &topic, &broker),
            Some(1048588)
        );
    }
}
