//! Group configs (Kafka 4's GROUP config resource, type 32): the keys a
//! group may override, their defaults (the broker's `group.*` settings) and
//! the broker-level bounds a value must stay within, as Kafka validates them.

use std::collections::BTreeMap;

use super::topic::ConfigType;
use crate::error::{BrokerError, BrokerResult};

/// One group config: its broker-level default key and bounds.
pub struct GroupConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The broker key supplying the default, and its own default.
    pub default_key: &'static str,
    pub default: &'static str,
    /// Broker keys (and their defaults) bounding an integer value.
    pub min: Option<(&'static str, i64)>,
    pub max: Option<(&'static str, i64)>,
    pub doc: &'static str,
}

pub const GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: "consumer.session.timeout.ms",
        kind: ConfigType::Int,
        default_key: "group.consumer.session.timeout.ms",
        default: "45000",
        min: Some(("group.consumer.min.session.timeout.ms", 45000)),
        max: Some(("group.consumer.max.session.timeout.ms", 60000)),
        doc: "The timeout to detect client failures when using the consumer group protocol.",
    },
    GroupConfigDef {
        name: "consumer.heartbeat.interval.ms",
        kind: ConfigType::Int,
        default_key: "group.consumer.heartbeat.interval.ms",
        default: "5000",
        min: Some(("group.consumer.min.heartbeat.interval.ms", 5000)),
        max: Some(("group.consumer.max.heartbeat.interval.ms", 15000)),
        doc: "The heartbeat interval given to the members of a consumer group.",
    },
    GroupConfigDef {
        name: "share.session.timeout.ms",
        kind: ConfigType::Int,
        default_key: "group.share.session.timeout.ms",
        default: "45000",
        min: Some(("group.share.min.session.timeout.ms", 45000)),
        max: Some(("group.share.max.session.timeout.ms", 60000)),
        doc: "The timeout to detect client failures when using the share group protocol.",
    },
    GroupConfigDef {
        name: "share.heartbeat.interval.ms",
        kind: ConfigType::Int,
        default_key: "group.share.heartbeat.interval.ms",
        default: "5000",
        min: Some(("group.share.min.heartbeat.interval.ms", 5000)),
        max: Some(("group.share.max.heartbeat.interval.ms", 15000)),
        doc: "The heartbeat interval given to the members of a share group.",
    },
    GroupConfigDef {
        name: "share.record.lock.duration.ms",
        kind: ConfigType::Int,
        default_key: "group.share.record.lock.duration.ms",
        default: "30000",
        min: Some(("group.share.min.record.lock.duration.ms", 15000)),
        max: Some(("group.share.max.record.lock.duration.ms", 60000)),
        doc: "The record acquisition lock duration in milliseconds for share groups.",
    },
    GroupConfigDef {
        name: "share.auto.offset.reset",
        kind: ConfigType::String,
        default_key: "",
        default: "latest",
        min: None,
        max: None,
        doc: "The strategy to initialize the share-partition start offset: latest, earliest or \
              by_duration:<ISO 8601 duration>.",
    },
    GroupConfigDef {
        name: "share.isolation.level",
        kind: ConfigType::String,
        default_key: "",
        default: "read_uncommitted",
        min: None,
        max: None,
        doc: "Controls how to read records written transactionally: read_committed or \
              read_uncommitted.",
    },
];

/// The broker keys group configs take their defaults and bounds from.
pub fn broker_keys() -> impl Iterator<Item = &'static str> {
    GROUP_CONFIGS.iter().flat_map(|d| {
        [Some(d.default_key), d.min.map(|m| m.0), d.max.map(|m| m.0)]
            .into_iter()
            .flatten()
            .filter(|k| !k.is_empty())
    })
}

pub fn lookup(name: &str) -> Option<&'static GroupConfigDef> {
    GROUP_CONFIGS.iter().find(|d| d.name == name)
}

/// The broker-level value of `key` (a default or a bound), or `fallback`.
fn broker_i64(broker: &BTreeMap<String, String>, key: &str, fallback: i64) -> i64 {
    broker
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(fallback)
}

/// A config's effective value for a group: its override, else the broker's default.
pub fn effective(
    def: &GroupConfigDef,
    group: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> (String, bool) {
    if let Some(v) = group.get(def.name) {
        return (v.clone(), true);
    }
    let v = (!def.default_key.is_empty())
        .then(|| broker.get(def.default_key).cloned())
        .flatten()
        .unwrap_or_else(|| def.default.to_string());
    (v, false)
}

/// An integer config's effective value for a group.
pub fn effective_i64(
    name: &str,
    group: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> Option<i64> {
    let def = lookup(name)?;
    effective(def, group, broker).0.trim().parse().ok()
}

fn valid_duration(s: &str) -> bool {
    parse_duration(s).is_some()
}

/// An ISO 8601 duration as Java's Duration.parse reads it (PnDTnHnMn.nS,
/// at least one part); Kafka refuses negative durations.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let rest = s.strip_prefix('P')?;
    let mut seen_any = false;
    let mut in_time = false;
    let mut num = String::new();
    let mut total = 0f64;
    for c in rest.chars() {
        let unit = match c {
            '0'..='9' | '.' => {
                num.push(c);
                continue;
            }
            'T' if !in_time && num.is_empty() => {
                in_time = true;
                continue;
            }
            'D' if !in_time && !num.is_empty() && !num.contains('.') => 86_400.0,
            'H' if in_time && !num.is_empty() && !num.contains('.') => 3_600.0,
            'M' if in_time && !num.is_empty() && !num.contains('.') => 60.0,
            'S' if in_time && !num.is_empty() => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
        seen_any = true;
    }
    (seen_any && num.is_empty() && total.is_finite())
        .then(|| std::time::Duration::from_secs_f64(total.min(1e15)))
}

/// Validates a group's whole new set of overrides against the broker's
/// bounds (INVALID_CONFIG naming the first problem).
pub fn validate(
    configs: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> BrokerResult<()> {
    let bad = |m: String| Err(BrokerError::InvalidConfig(m));
    for (name, value) in configs {
        let Some(def) = lookup(name) else {
            return bad(format!("Unknown group config name: {name}"));
        };
        match def.kind {
            ConfigType::Int => {
                let Ok(v) = value.trim().parse::<i32>() else {
                    return bad(format!(
                        "Invalid value {value} for configuration {name}: Not a number of type INT"
                    ));
                };
                let v = i64::from(v);
                if let Some((key, d)) = def.min {
                    if v < broker_i64(broker, key, d) {
                        return bad(format!("{name} must be greater than or equal to {key}"));
                    }
                }
                if let Some((key, d)) = def.max {
                    if v > broker_i64(broker, key, d) {
                        return bad(format!("{name} must be less than or equal to {key}"));
                    }
                }
            }
            _ => {
                let v = value.trim();
                let ok = match def.name {
                    "share.auto.offset.reset" => {
                        v == "latest"
                            || v == "earliest"
                            || v.strip_prefix("by_duration:").is_some_and(valid_duration)
                    }
                    "share.isolation.level" => v == "read_committed" || v == "read_uncommitted",
                    _ => true,
                };
                if !ok {
                    return bad(format!("Invalid value {value} for configuration {name}"));
                }
            }
        }
    }
    for (session, heartbeat) in [
        (
            "consumer.session.timeout.ms",
            "consumer.heartbeat.interval.ms",
        ),
        ("share.session.timeout.ms", "share.heartbeat.interval.ms"),
    ] {
        let s = effective_i64(session, configs, broker).unwrap_or(0);
        let h = effective_i64(heartbeat, configs, broker).unwrap_or(0);
        if s <= h {
            return bad(format!("{session} must be greater than {heartbeat}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bounds_names_and_values() {
        let broker = BTreeMap::new();
        assert!(validate(&set(&[("share.auto.offset.reset", "earliest")]), &broker).is_ok());
        assert!(validate(
            &set(&[("share.auto.offset.reset", "by_duration:PT1H30M")]),
            &broker
        )
        .is_ok());
        assert!(validate(
            &set(&[("share.auto.offset.reset", "by_duration:1h")]),
            &broker
        )
        .is_err());
        assert!(validate(&set(&[("share.auto.offset.reset", "sometimes")]), &broker).is_err());
        for negative in ["by_duration:-PT1H", "by_duration:PT-1H"] {
            assert!(validate(&set(&[("share.auto.offset.reset", negative)]), &broker).is_err());
        }
        assert!(validate(&set(&[("no.such.key", "1")]), &broker).is_err());
        assert!(validate(&set(&[("consumer.session.timeout.ms", "50000")]), &broker).is_ok());
        assert!(validate(&set(&[("consumer.session.timeout.ms", "1000")]), &broker).is_err());
        assert!(validate(&set(&[("consumer.session.timeout.ms", "x")]), &broker).is_err());
        // The broker's bounds move the limits.
        let low = set(&[
            ("group.consumer.min.session.timeout.ms", "1000"),
            ("group.consumer.min.heartbeat.interval.ms", "100"),
        ]);
        assert!(validate(
            &set(&[
                ("consumer.session.timeout.ms", "1000"),
                ("consumer.heartbeat.interval.ms", "500")
            ]),
            &low
        )
        .is_ok());
        // The session must outlast the heartbeat interval (5000 by default).
        assert!(validate(&set(&[("consumer.session.timeout.ms", "1000")]), &low).is_err());
        assert!(validate(
            &set(&[
                ("consumer.session.timeout.ms", "1000"),
                ("consumer.heartbeat.interval.ms", "1000")
            ]),
            &low
        )
        .is_err());
        assert_eq!(
            effective_i64("consumer.heartbeat.interval.ms", &BTreeMap::new(), &low),
            Some(5000)
        );
    }
}
