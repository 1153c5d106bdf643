//! Cluster settings: `metadata.store.endpoints` (absent: standalone, today's
//! single node) and `metadata.store.prefix`, with Kafka's membership keys
//! (`broker.session.timeout.ms`, `broker.heartbeat.interval.ms`,
//! `controlled.shutdown.enable`); `broker.rack` is read with the broker's
//! endpoints (Metadata reports it in standalone mode too).

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster's metadata; `/runnel/<cluster id>` unless set.
    pub prefix: Option<String>,
    /// How long a broker that stopped heartbeating stays registered (its
    /// etcd lease's time to live).
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// On SIGTERM, give up the controller role and deregister first.
    pub controlled_shutdown: bool,
}

/// The keys this module reads.
pub const KEYS: &[&str] = &[
    "metadata.store.endpoints",
    "metadata.store.prefix",
    "broker.rack",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controlled.shutdown.enable",
];

fn millis(raw: &BTreeMap<String, String>, key: &str, default: u64) -> Result<Duration, String> {
    match raw.get(key) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                format!("invalid value {v:?} for {key}: expected a positive number of milliseconds")
            }),
    }
}

impl ClusterConfig {
    /// `None` in standalone mode.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        let Some(list) = raw
            .get("metadata.store.endpoints")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let endpoints: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for e in &endpoints {
            if !e.starts_with("http://") {
                return Err(format!(
                    "metadata.store.endpoints: {e} is not an http:// URL (TLS to etcd is not supported yet)"
                ));
            }
        }
        let session_timeout = millis(raw, "broker.session.timeout.ms", 9000)?;
        let heartbeat_interval = millis(raw, "broker.heartbeat.interval.ms", 2000)?;
        if heartbeat_interval >= session_timeout {
            return Err(
                "broker.heartbeat.interval.ms must be less than broker.session.timeout.ms".into(),
            );
        }
        let controlled_shutdown = match raw.get("controlled.shutdown.enable").map(|s| s.trim()) {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(format!(
                    "invalid value {v:?} for controlled.shutdown.enable: expected true or false"
                ))
            }
        };
        Ok(Some(ClusterConfig {
            endpoints,
            prefix: raw
                .get("metadata.store.prefix")
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty()),
            session_timeout,
            heartbeat_interval,
            controlled_shutdown,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn standalone_unless_endpoints() {
        assert!(ClusterConfig::from_raw(&raw(&[])).unwrap().is_none());
        let c = ClusterConfig::from_raw(&raw(&[
            (
                "metadata.store.endpoints",
                "http://127.0.0.1:2379, http://127.0.0.1:2380",
            ),
            ("broker.rack", "a"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.session_timeout, Duration::from_secs(9));
        assert!(
            ClusterConfig::from_raw(&raw(&[("metadata.store.endpoints", "127.0.0.1:2379")]))
                .is_err()
        );
        assert!(ClusterConfig::from_raw(&raw(&[
            ("metadata.store.endpoints", "http://x:1"),
            ("broker.heartbeat.interval.ms", "10000"),
        ]))
        .is_err());
    }
}
