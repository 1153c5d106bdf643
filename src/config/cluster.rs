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
    /// On SIGTERM, move leaderships away, then deregister.
    pub controlled_shutdown: bool,
    /// Broker default of the topic config of the same name.
    pub unclean_leader_election: bool,
    /// A follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// How long a follower's fetch waits at the leader for new data.
    pub replica_fetch_wait_max: Duration,
    /// Bytes a follower asks for per partition.
    pub replica_fetch_max_bytes: i32,
    /// The controller moves leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval: Duration,
    /// The listener followers fetch through (its name); the first listener
    /// when unset.
    pub inter_broker_listener: Option<String>,
    /// `replica.selector.class` is Kafka's RackAwareReplicaSelector (KIP-392):
    /// a leader sends consumers that name their rack to an in-sync replica in
    /// it.
    pub rack_aware_reads: bool,
}

/// The keys this module reads.
pub const KEYS: &[&str] = &[
    "metadata.store.endpoints",
    "metadata.store.prefix",
    "broker.rack",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controlled.shutdown.enable",
    "unclean.leader.election.enable",
    "replica.lag.time.max.ms",
    "replica.fetch.wait.max.ms",
    "replica.fetch.max.bytes",
    "num.replica.fetchers",
    "inter.broker.listener.name",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
    "replica.selector.class",
];

/// Kafka's replica selectors (`replica.selector.class`), by class or simple name.
const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";
const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// Whether `replica.selector.class` asks for rack-aware reads.
fn rack_aware_reads(raw: &BTreeMap<String, String>) -> Result<bool, String> {
    let Some(class) = raw
        .get("replica.selector.class")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    else {
        return Ok(false);
    };
    let simple = |full: &str| full.rsplit('.').next().unwrap_or(full).to_string();
    if class == LEADER_SELECTOR || class == simple(LEADER_SELECTOR) {
        Ok(false)
    } else if class == RACK_AWARE_SELECTOR || class == simple(RACK_AWARE_SELECTOR) {
        Ok(true)
    } else {
        Err(format!(
            "replica.selector.class={class}: only {LEADER_SELECTOR} and {RACK_AWARE_SELECTOR} are available"
        ))
    }
}

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
        let flag = |key: &str, default: bool| match raw.get(key).map(|s| s.trim()) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!(
                "invalid value {v:?} for {key}: expected true or false"
            )),
        };
        let replica_fetch_max_bytes = match raw.get("replica.fetch.max.bytes") {
            None => 1_048_576,
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid value {v:?} for replica.fetch.max.bytes"))?,
        };
        Ok(Some(ClusterConfig {
            unclean_leader_election: flag("unclean.leader.election.enable", false)?,
            auto_leader_rebalance: flag("auto.leader.rebalance.enable", true)?,
            leader_imbalance_check_interval: match raw
                .get("leader.imbalance.check.interval.seconds")
            {
                None => Duration::from_secs(300),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        format!("invalid value {v:?} for leader.imbalance.check.interval.seconds")
                    })?,
            },
            replica_lag_time_max: millis(raw, "replica.lag.time.max.ms", 30_000)?,
            replica_fetch_wait_max: millis(raw, "replica.fetch.wait.max.ms", 500)?,
            replica_fetch_max_bytes,
            rack_aware_reads: rack_aware_reads(raw)?,
            inter_broker_listener: raw
                .get("inter.broker.listener.name")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
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
    fn replica_selector_by_class_or_simple_name() {
        let base = [("metadata.store.endpoints", "http://127.0.0.1:2379")];
        let with = |class: &str| {
            let mut r = raw(&base);
            r.insert("replica.selector.class".into(), class.into());
            ClusterConfig::from_raw(&r).map(|c| c.map(|c| c.rack_aware_reads))
        };
        assert_eq!(
            ClusterConfig::from_raw(&raw(&base)).map(|c| c.map(|c| c.rack_aware_reads)),
            Ok(Some(false))
        );
        assert_eq!(with(RACK_AWARE_SELECTOR), Ok(Some(true)));
        assert_eq!(with("RackAwareReplicaSelector"), Ok(Some(true)));
        assert_eq!(with(LEADER_SELECTOR), Ok(Some(false)));
        assert!(with("com.example.MySelector").is_err());
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
