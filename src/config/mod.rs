//! Server configuration: a `server.properties` file with Kafka's key names,
//! overridden by `--override key=value` flags.
//!
//! Every key is either understood, accepted-without-effect (Kafka keys that
//! mean nothing on one Runnel node), or unknown; the latter two are warned
//! about at start-up so nothing is silently ignored.

pub mod cluster;
pub mod docs;
pub mod dynamic;
pub mod group;
pub mod listeners;
pub mod topic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parsed, validated broker settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    /// Every client listener, in `listeners` order.
    pub listeners: Vec<listeners::ListenerConfig>,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub socket_request_max_bytes: usize,
    /// `log.flush.interval.messages`: 1 makes each acknowledgement wait for fsync.
    pub flush_interval_messages: i64,
    pub log_level: Option<String>,
    pub log_json: bool,
    pub cluster_id: Option<String>,
    /// Bytes of recent batches kept in memory per partition for tail readers.
    pub tail_cache_bytes: usize,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    pub group_max_size: usize,
    pub offset_metadata_max_bytes: usize,
    pub offsets_retention_minutes: u64,
    /// Cluster mode: the `__consumer_offsets` topic's shape.
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    /// Cluster mode: the `__transaction_state` topic's shape.
    pub transaction_state_log_num_partitions: i32,
    pub transaction_state_log_replication_factor: i16,
    pub transaction_state_log_min_isr: i16,
    pub retention_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`: pause between compaction passes.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.io.buffer.size`: batches a compaction pass reads per RocksDB write.
    pub cleaner_io_buffer_size: usize,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id idle this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often
    /// transactions past their timeout are looked for (and aborted).
    pub transaction_abort_check_interval_ms: u64,
    /// `producer.id.expiration.ms`: an idempotent producer idle this long on a
    /// partition (and with no open transaction there) is forgotten there.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`: how often that is checked.
    pub producer_id_expiration_check_interval_ms: u64,
    /// `metrics.listener`: where `/metrics` is served (`None`: not served).
    pub metrics_listener: Option<String>,
    /// Connection and memory limits for client connections.
    pub limits: ConnectionLimits,
    /// `fetch.max.bytes`: the most one Fetch response carries, whatever the client asks.
    pub fetch_max_bytes: usize,
    /// `runnel.log.dir.min.free.bytes`: appends are refused below this much free disk.
    pub log_dir_min_free_bytes: u64,
    /// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found`.
    pub authorizer: crate::security::authorizer::AuthorizerConfig,
    /// `quota.window.num` samples of `quota.window.size.seconds`.
    pub quota_window: crate::quotas::limiter::WindowConfig,
    /// Cluster mode (metadata in etcd); `None` = standalone.
    pub cluster: Option<cluster::ClusterConfig>,
    /// Every key/value the file and overrides set, as given, for DescribeConfigs.
    pub raw: BTreeMap<String, String>,
}

/// What one client, or all of them together, may hold of the broker.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// `max.connections`: open client connections in all.
    pub max_connections: usize,
    /// `max.connections.per.ip`, with `max.connections.per.ip.overrides`.
    pub max_connections_per_ip: usize,
    pub per_ip_overrides: BTreeMap<std::net::IpAddr, usize>,
    /// `queued.max.request.bytes`: bytes of requests read but not yet answered,
    /// across connections; `None` (-1) is unbounded.
    pub queued_max_request_bytes: Option<usize>,
    /// `connections.max.idle.ms`.
    pub idle: std::time::Duration,
    /// `runnel.socket.response.queue.bytes`: answered-but-unsent bytes one
    /// connection may hold before the broker stops reading its requests.
    pub response_queue_bytes: usize,
}

impl ConnectionLimits {
    pub fn per_ip(&self, ip: std::net::IpAddr) -> usize {
        self.per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }
}

/// `max.connections.per.ip.overrides`: `ip:count` pairs, comma-separated.
fn parse_ip_overrides(v: &str) -> Result<BTreeMap<std::net::IpAddr, usize>, String> {
    let key = "max.connections.per.ip.overrides";
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, n) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid entry {item:?} in {key}: expected ip:count"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host.parse().map_err(|_| {
            format!("invalid entry {item:?} in {key}: {host:?} is not an IP address")
        })?;
        out.insert(ip, parse_num::<usize>(key, n.trim())?);
    }
    Ok(out)
}

/// The loaded configuration plus what to warn about once logging is up.
pub struct BrokerConfig {
    pub server: ServerConfig,
    warnings: Vec<String>,
}

/// Kafka keys that Runnel accepts but that have no effect on a single node.
const ACCEPTED_WITHOUT_EFFECT: &[&str] = &[
    "broker.id.generation.enable",
    "controller.listener.names",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "log.segment.bytes",
    "num.io.threads",
    "num.network.threads",
    "num.recovery.threads.per.data.dir",
    "process.roles",
    "share.coordinator.state.topic.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
];

impl BrokerConfig {
    /// Reads `path` (a missing file is an error) and applies `overrides`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut raw = parse_properties(&text);
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("--override {o:?} is not of the form key=value"))?;
            raw.insert(k.trim().to_string(), v.trim().to_string());
        }
        Self::from_map(raw)
    }

    pub fn from_map(raw: BTreeMap<String, String>) -> Result<Self, String> {
        let mut warnings = Vec::new();
        let get = |k: &str| raw.get(k).map(String::as_str);

        let node_id = match (get("node.id"), get("broker.id")) {
            (Some(v), _) | (None, Some(v)) => parse_num::<i32>("node.id", v)?,
            (None, None) => 0,
        };
        if node_id < 0 {
            return Err(format!("node.id must be >= 0, got {node_id}"));
        }
        let listeners = listeners::parse(&raw)?;
        let log_dir = PathBuf::from(
            get("log.dirs")
                .or(get("log.dir"))
                .map(|v| v.split(',').next().unwrap_or(v).trim().to_string())
                .unwrap_or_else(|| "./data".to_string()),
        );
        if log_dir.as_os_str().is_empty() {
            return Err("log.dirs must not be empty".into());
        }
        let num_partitions = opt_num("num.partitions", get("num.partitions"), 1)?;
        if num_partitions < 1 {
            return Err(format!("num.partitions must be >= 1, got {num_partitions}"));
        }
        let default_replication_factor = opt_num(
            "default.replication.factor",
            get("default.replication.factor"),
            1i16,
        )?;
        let clustered = get("metadata.store.endpoints").is_some_and(|v| !v.trim().is_empty());
        if default_replication_factor < 1 || (!clustered && default_replication_factor != 1) {
            return Err(format!(
                "default.replication.factor must be 1 on a single node (>= 1 in a cluster), got {default_replication_factor}"
            ));
        }
        let auto_create_topics_enable = opt_bool(
            "auto.create.topics.enable",
            get("auto.create.topics.enable"),
            true,
        )?;
        let message_max_bytes =
            opt_num("message.max.bytes", get("message.max.bytes"), 1_048_588i32)?;
        if message_max_bytes < 0 {
            return Err(format!(
                "message.max.bytes must be >= 0, got {message_max_bytes}"
            ));
        }
        let socket_request_max_bytes = opt_num(
            "socket.request.max.bytes",
            get("socket.request.max.bytes"),
            100 * 1024 * 1024usize,
        )?;
        if socket_request_max_bytes < 1024 {
            return Err("socket.request.max.bytes must be at least 1024".into());
        }
        let flush_interval_messages = opt_num(
            "log.flush.interval.messages",
            get("log.flush.interval.messages"),
            i64::MAX,
        )?;
        if flush_interval_messages < 1 {
            return Err("log.flush.interval.messages must be >= 1".into());
        }
        if flush_interval_messages > 1 && flush_interval_messages != i64::MAX {
            warnings.push(format!(
                "log.flush.interval.messages={flush_interval_messages}: only 1 (fsync every acknowledgement) changes behaviour; \
                 any other value acknowledges once a write is in RocksDB's WAL"
            ));
        }
        let log_level = get("log.level").map(str::to_string);
        let log_json = match get("log.format") {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(format!("log.format must be text or json, got {other:?}")),
        };
        let cluster_id = get("cluster.id").map(str::to_string);
        let tail_cache_bytes = opt_num(
            "runnel.tail.cache.bytes.per.partition",
            get("runnel.tail.cache.bytes.per.partition"),
            1024 * 1024usize,
        )?;

        let group_initial_rebalance_delay_ms = opt_num(
            "group.initial.rebalance.delay.ms",
            get("group.initial.rebalance.delay.ms"),
            3000u64,
        )?;
        let group_min_session_timeout_ms = opt_num(
            "group.min.session.timeout.ms",
            get("group.min.session.timeout.ms"),
            6000u64,
        )?;
        let group_max_session_timeout_ms = opt_num(
            "group.max.session.timeout.ms",
            get("group.max.session.timeout.ms"),
            1_800_000u64,
        )?;
        if group_min_session_timeout_ms > group_max_session_timeout_ms {
            return Err(
                "group.min.session.timeout.ms must not exceed group.max.session.timeout.ms".into(),
            );
        }
        let group_max_size = opt_num("group.max.size", get("group.max.size"), i32::MAX as usize)?;
        if let Some(p) = get("group.consumer.migration.policy") {
            if crate::coordinator::migration::MigrationPolicy::parse(p).is_none() {
                return Err(format!(
                    "group.consumer.migration.policy={p}: expected bidirectional, upgrade, downgrade or disabled"
                ));
            }
        }
        if group_max_size < 1 {
            return Err("group.max.size must be >= 1".into());
        }
        let offset_metadata_max_bytes = opt_num(
            "offset.metadata.max.bytes",
            get("offset.metadata.max.bytes"),
            4096usize,
        )?;

        let offsets_retention_minutes = opt_num(
            "offsets.retention.minutes",
            get("offsets.retention.minutes"),
            10_080u64,
        )?;

        let offsets_topic_num_partitions = opt_num(
            "offsets.topic.num.partitions",
            get("offsets.topic.num.partitions"),
            50i32,
        )?;
        if !(1..=10_000).contains(&offsets_topic_num_partitions) {
            return Err(format!(
                "offsets.topic.num.partitions must be between 1 and 10000, got {offsets_topic_num_partitions}"
            ));
        }
        let offsets_topic_replication_factor = opt_num(
            "offsets.topic.replication.factor",
            get("offsets.topic.replication.factor"),
            3i16,
        )?;
        if offsets_topic_replication_factor < 1 {
            return Err("offsets.topic.replication.factor must be >= 1".into());
        }
        let transaction_state_log_num_partitions = opt_num(
            "transaction.state.log.num.partitions",
            get("transaction.state.log.num.partitions"),
            50i32,
        )?;
        if !(1..=10_000).contains(&transaction_state_log_num_partitions) {
            return Err(format!(
                "transaction.state.log.num.partitions must be between 1 and 10000, got \
                 {transaction_state_log_num_partitions}"
            ));
        }
        let transaction_state_log_replication_factor = opt_num(
            "transaction.state.log.replication.factor",
            get("transaction.state.log.replication.factor"),
            3i16,
        )?;
        let transaction_state_log_min_isr = opt_num(
            "transaction.state.log.min.isr",
            get("transaction.state.log.min.isr"),
            2i16,
        )?;
        if transaction_state_log_replication_factor < 1 || transaction_state_log_min_isr < 1 {
            return Err(
                "transaction.state.log.replication.factor and transaction.state.log.min.isr \
                 must be >= 1"
                    .into(),
            );
        }

        let retention_check_interval_ms = opt_num(
            "log.retention.check.interval.ms",
            get("log.retention.check.interval.ms"),
            300_000u64,
        )?;
        if retention_check_interval_ms < 1 {
            return Err("log.retention.check.interval.ms must be >= 1".into());
        }

        let cleaner_backoff_ms = opt_num(
            "log.cleaner.backoff.ms",
            get("log.cleaner.backoff.ms"),
            15_000u64,
        )?;
        if cleaner_backoff_ms < 1 {
            return Err("log.cleaner.backoff.ms must be >= 1".into());
        }
        let cleaner_io_buffer_size = opt_num(
            "log.cleaner.io.buffer.size",
            get("log.cleaner.io.buffer.size"),
            524_288usize,
        )?;
        if cleaner_io_buffer_size < 1 {
            return Err("log.cleaner.io.buffer.size must be >= 1".into());
        }
        let transaction_max_timeout_ms = opt_num(
            "transaction.max.timeout.ms",
            get("transaction.max.timeout.ms"),
            900_000i32,
        )?;
        if transaction_max_timeout_ms < 1 {
            return Err("transaction.max.timeout.ms must be >= 1".into());
        }
        let transactional_id_expiration_ms = opt_num(
            "transactional.id.expiration.ms",
            get("transactional.id.expiration.ms"),
            604_800_000i64,
        )?;
        if transactional_id_expiration_ms < 1 {
            return Err("transactional.id.expiration.ms must be >= 1".into());
        }
        let producer_id_expiration_ms = opt_num(
            "producer.id.expiration.ms",
            get("producer.id.expiration.ms"),
            86_400_000i64,
        )?;
        if producer_id_expiration_ms < 1 {
            return Err("producer.id.expiration.ms must be >= 1".into());
        }
        let producer_id_expiration_check_interval_ms = opt_num(
            "producer.id.expiration.check.interval.ms",
            get("producer.id.expiration.check.interval.ms"),
            600_000u64,
        )?;
        if producer_id_expiration_check_interval_ms < 1 {
            return Err("producer.id.expiration.check.interval.ms must be >= 1".into());
        }
        let transaction_abort_check_interval_ms = opt_num(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            get("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
            10_000u64,
        )?;
        if transaction_abort_check_interval_ms < 1 {
            return Err(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms must be >= 1".into(),
            );
        }
        let positive = |key: &str, default: i64| -> Result<usize, String> {
            let n: i64 = opt_num(key, get(key), default)?;
            usize::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{key} must be a positive number, got {n}"))
        };
        let queued: i64 = opt_num(
            "queued.max.request.bytes",
            get("queued.max.request.bytes"),
            256 << 20,
        )?;
        let queued_max_request_bytes = match queued {
            // Kafka reads any value <= 0 as unbounded.
            n if n <= 0 => None,
            n if n >= socket_request_max_bytes as i64 => Some(n as usize),
            n => {
                return Err(format!(
                    "queued.max.request.bytes={n} must be <= 0 (unbounded) or at least socket.request.max.bytes={socket_request_max_bytes}"
                ))
            }
        };
        let limits = ConnectionLimits {
            max_connections: positive("max.connections", i32::MAX as i64)?,
            max_connections_per_ip: positive("max.connections.per.ip", i32::MAX as i64)?,
            per_ip_overrides: parse_ip_overrides(
                get("max.connections.per.ip.overrides").unwrap_or(""),
            )?,
            queued_max_request_bytes,
            idle: std::time::Duration::from_millis(
                positive("connections.max.idle.ms", 600_000)? as u64
            ),
            response_queue_bytes: positive("runnel.socket.response.queue.bytes", 4 << 20)?,
        };
        let fetch_max_bytes = positive("fetch.max.bytes", 57_671_680)?;
        let log_dir_min_free_bytes: u64 = opt_num(
            "runnel.log.dir.min.free.bytes",
            get("runnel.log.dir.min.free.bytes"),
            crate::storage::db::DEFAULT_MIN_FREE_BYTES,
        )?;
        let metrics_listener = match get("metrics.listener").map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(listeners::parse_metrics_listener(v)?),
        };

        let authorizer = crate::security::authorizer::AuthorizerConfig::from_raw(&raw)?;
        let cluster = cluster::ClusterConfig::from_raw(&raw)?;
        if cluster.is_some() && cluster_id.is_none() {
            return Err(
                "metadata.store.endpoints (cluster mode) needs cluster.id, the same on every broker of the cluster"
                    .into(),
            );
        }
        let quota_window = crate::quotas::limiter::WindowConfig {
            samples: positive("quota.window.num", 11)?,
            sample: std::time::Duration::from_secs(positive("quota.window.size.seconds", 1)? as u64),
        };

        for key in raw.keys() {
            if ACCEPTED_WITHOUT_EFFECT.contains(&key.as_str()) {
                warnings.push(format!(
                    "config key {key} is accepted but has no effect on Runnel"
                ));
            } else if !is_understood(key) && !group::broker_keys().any(|k| k == key) {
                warnings.push(format!("unknown config key {key} is ignored"));
            }
        }
        // Topic defaults must parse too, so a bad value refuses to start.
        topic::validate_broker_defaults(&raw)?;

        Ok(BrokerConfig {
            server: ServerConfig {
                node_id,
                listeners,
                log_dir,
                num_partitions,
                default_replication_factor,
                auto_create_topics_enable,
                socket_request_max_bytes,
                flush_interval_messages,
                log_level,
                log_json,
                cluster_id,
                tail_cache_bytes,
                group_initial_rebalance_delay_ms,
                group_min_session_timeout_ms,
                group_max_session_timeout_ms,
                group_max_size,
                offset_metadata_max_bytes,
                offsets_retention_minutes,
                offsets_topic_num_partitions,
                offsets_topic_replication_factor,
                transaction_state_log_num_partitions,
                transaction_state_log_replication_factor,
                transaction_state_log_min_isr,
                retention_check_interval_ms,
                cleaner_backoff_ms,
                cleaner_io_buffer_size,
                transaction_max_timeout_ms,
                transactional_id_expiration_ms,
                transaction_abort_check_interval_ms,
                producer_id_expiration_ms,
                producer_id_expiration_check_interval_ms,
                metrics_listener,
                limits,
                fetch_max_bytes,
                log_dir_min_free_bytes,
                authorizer,
                quota_window,
                cluster,
                raw,
            },
            warnings,
        })
    }

    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
    }
}

fn is_understood(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "node.id",
        "broker.id",
        "listeners",
        "advertised.listeners",
        "log.dirs",
        "log.dir",
        "num.partitions",
        "default.replication.factor",
        "auto.create.topics.enable",
        "message.max.bytes",
        "socket.request.max.bytes",
        "log.flush.interval.messages",
        "log.level",
        "log.format",
        "cluster.id",
        "runnel.tail.cache.bytes.per.partition",
        "group.initial.rebalance.delay.ms",
        "group.min.session.timeout.ms",
        "group.max.session.timeout.ms",
        "group.max.size",
        "group.consumer.max.size",
        "group.share.max.size",
        "group.consumer.migration.policy",
        "group.share.delivery.count.limit",
        "group.share.partition.max.record.locks",
        "group.share.max.share.sessions",
        "share.coordinator.state.topic.num.partitions",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "offset.metadata.max.bytes",
        "offsets.retention.minutes",
        "offsets.topic.num.partitions",
        "offsets.topic.replication.factor",
        "transaction.state.log.num.partitions",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "log.retention.check.interval.ms",
        "metrics.listener",
        "log.cleaner.backoff.ms",
        "log.cleaner.io.buffer.size",
        "transaction.max.timeout.ms",
        "transactional.id.expiration.ms",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "producer.id.expiration.ms",
        "producer.id.expiration.check.interval.ms",
        "max.connections",
        "max.connections.per.ip",
        "max.connections.per.ip.overrides",
        "queued.max.request.bytes",
        "connections.max.idle.ms",
        "runnel.socket.response.queue.bytes",
        "fetch.max.bytes",
        "runnel.log.dir.min.free.bytes",
        "quota.window.num",
        "connections.max.reauth.ms",
        "quota.window.size.seconds",
    ];
    KEYS.contains(&key)
        || topic::is_broker_default_key(key)
        || listeners::is_listener_key(key)
        || crate::security::authorizer::AuthorizerConfig::is_key(key)
        || cluster::KEYS.contains(&key)
}

/// Java-properties subset: `key=value` or `key: value`, `#`/`!` comments.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']);
        let (k, v) = match split {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    map
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| format!("invalid value {v:?} for {key}: not a valid number"))
}

fn opt_num<T: std::str::FromStr>(key: &str, v: Option<&str>, default: T) -> Result<T, String> {
    v.map_or(Ok(default), |v| parse_num(key, v))
}

fn opt_bool(key: &str, v: Option<&str>, default: bool) -> Result<bool, String> {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) if s == "true" => Ok(true),
        Some(s) if s == "false" => Ok(false),
        Some(s) => Err(format!(
            "invalid value {s:?} for {key}: expected true or false"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<BrokerConfig, String> {
        BrokerConfig::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_listeners() {
        let c = load(&[("listeners", "PLAINTEXT://0.0.0.0:19092")])
            .unwrap()
            .server;
        assert_eq!(c.listeners[0].port, 19092);
        assert_eq!(c.listeners[0].advertised_host, "127.0.0.1");
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.socket_request_max_bytes, 100 * 1024 * 1024);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = load(&[("num.partitions", "many")]).err().unwrap();
        assert!(e.contains("num.partitions"), "{e}");
        let e = load(&[("auto.create.topics.enable", "yes")]).err().unwrap();
        assert!(e.contains("auto.create.topics.enable"), "{e}");
        let e = load(&[("log.retention.hours", "-x")]).err().unwrap();
        assert!(e.contains("log.retention.hours"), "{e}");
    }

    #[test]
    fn unknown_keys_warn() {
        let c = load(&[("no.such.key", "1"), ("num.network.threads", "3")]).unwrap();
        assert_eq!(c.warnings.len(), 2);
    }

    #[test]
    fn properties_syntax() {
        let m = parse_properties("# c\n a = 1\nb:2\n\n!x\nc=x=y\n");
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.get("c").map(String::as_str), Some("x=y"));
        assert_eq!(m.len(), 3);
    }
}
