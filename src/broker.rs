//! The broker: shared state every handler sees, and start-up/shutdown wiring.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::etcd::EtcdCluster;
use crate::cluster::standalone::Standalone;
use crate::cluster::{BrokerInfo, ClusterMetadata, Endpoint};
use crate::config::dynamic::DynamicConfigs;
use crate::config::ServerConfig;
use crate::coordinator::group::GroupConfig;
use crate::coordinator::offsets::OffsetStore;
use crate::coordinator::txn::{TxnConfig, TxnCoordinator};
use crate::coordinator::GroupCoordinator;
use crate::metrics::Metrics;
use crate::network;
use crate::quotas::limiter::Limiter;
use crate::quotas::QuotaStore;
use crate::security::authorizer::Authorizer;
use crate::security::credentials::CredentialStore;
use crate::storage::catalog::Catalog;
use crate::storage::db::Store;
use crate::storage::writer::Writer;

/// State shared by all connections.
pub struct Broker {
    pub config: ServerConfig,
    /// Broker configs changed at runtime, layered over `config`.
    pub broker_configs: DynamicConfigs,
    pub store: Arc<Store>,
    pub catalog: Catalog,
    pub writer: Writer,
    pub metrics: Metrics,
    pub groups: Arc<GroupCoordinator>,
    pub quotas: QuotaStore,
    /// Measures clients against `quotas` and computes throttle times.
    pub limiter: Limiter,
    pub txns: TxnCoordinator,
    /// SCRAM users (AlterUserScramCredentials; SASL/SCRAM logins).
    pub credentials: Arc<CredentialStore>,
    /// ACLs and the decisions made with them.
    pub authorizer: Authorizer,
    /// The Kafka listeners, ready to serve (TLS and SASL set up).
    pub listeners: Vec<Arc<crate::network::session::ListenerRuntime>>,
    /// Who the brokers and the controller are (standalone or etcd).
    pub cluster: Arc<dyn ClusterMetadata>,
    /// Whether this broker leads, follows or only holds each partition.
    pub replicas: Arc<crate::replication::ReplicaManager>,
    /// Cluster mode: this broker's block of producer ids.
    pub producer_ids: crate::cluster::producer_ids::ProducerIds,
    /// Each group's config overrides (the GROUP config resource).
    pub group_configs: crate::coordinator::group_configs::GroupConfigStore,
    /// Share groups' record states and share sessions (KIP-932).
    pub shares: crate::share::ShareStates,
}

impl Broker {
    pub fn cluster_id(&self) -> &str {
        &self.catalog.cluster_id
    }
}

/// Opens storage, serves until SIGTERM/SIGINT, then drains and flushes.
pub fn run(config: ServerConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runnel-worker")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;

    // Listener settings (certificates, JAAS, mapping rules) are checked before
    // anything is opened.
    let mut listeners = config
        .listeners
        .iter()
        .map(|l| crate::network::session::ListenerRuntime::build(l).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open(&config.log_dir)
        .map_err(|e| format!("cannot open {}: {e}", config.log_dir.display()))?;
    store.min_free_bytes.store(
        config.log_dir_min_free_bytes,
        std::sync::atomic::Ordering::Relaxed,
    );
    let catalog = Catalog::load(
        store.clone(),
        config.tail_cache_bytes,
        config.cluster_id.as_deref(),
    )
    .map_err(|e| format!("cannot load the catalog: {e}"))?;
    let me = BrokerInfo {
        node_id: config.node_id,
        rack: config
            .raw
            .get("broker.rack")
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()),
        endpoints: config
            .listeners
            .iter()
            .map(|l| Endpoint {
                listener: l.name.clone(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
            })
            .collect(),
    };
    // Joining the cluster comes before any background thread starts, so a
    // refusal leaves nothing running.
    let etcd = match config.cluster.clone() {
        Some(c) => {
            if config.cluster_id.as_deref() != Some(catalog.cluster_id.as_str()) {
                return Err(format!(
                    "the data directory {} belongs to cluster {}, not to cluster.id={}",
                    config.log_dir.display(),
                    catalog.cluster_id,
                    config.cluster_id.as_deref().unwrap_or("")
                ));
            }
            Some(runtime.block_on(EtcdCluster::start(c, &catalog.cluster_id, me.clone()))?)
        }
        None => None,
    };

    let sync = config.flush_interval_messages == 1;
    let (writer, writer_thread) = Writer::start(store.clone(), sync)
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let offsets = OffsetStore::load(store.clone(), sync)
        .map_err(|e| format!("cannot load committed offsets: {e}"))?;
    let groups = Arc::new(GroupCoordinator::new(
        offsets,
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(config.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(config.group_max_session_timeout_ms),
            max_size: config.group_max_size,
        },
        Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60)),
    ));
    let shares = crate::share::ShareStates::load(
        store.clone(),
        sync,
        config
            .raw
            .get("group.share.max.share.sessions")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(crate::share::DEFAULT_MAX_SESSIONS),
    )
    .map_err(|e| format!("cannot load share group state: {e}"))?;
    let quotas =
        QuotaStore::load(store.clone()).map_err(|e| format!("cannot load client quotas: {e}"))?;
    let group_configs = crate::coordinator::group_configs::GroupConfigStore::load(store.clone())
        .map_err(|e| format!("cannot load group configs: {e}"))?;
    let txns = TxnCoordinator::load(
        store.clone(),
        sync,
        TxnConfig {
            max_timeout_ms: config.transaction_max_timeout_ms,
            id_expiration_ms: config.transactional_id_expiration_ms,
        },
        writer.active_txns().clone(),
        &catalog,
    )
    .map_err(|e| format!("cannot load transactions: {e}"))?;
    let broker_configs = DynamicConfigs::load(store.clone(), config.raw.clone())
        .map_err(|e| format!("cannot load dynamic broker configs: {e}"))?;
    // A keystore changed at runtime (AlterConfigs) stays in force after a restart.
    if broker_configs
        .layers()
        .merged
        .keys()
        .any(|k| crate::config::dynamic::is_ssl_store_key(k))
    {
        let merged = crate::config::listeners::parse(&broker_configs.layers().merged)?;
        listeners = merged
            .iter()
            .map(|l| crate::network::session::ListenerRuntime::build(l).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
    }
    let metrics = Metrics::new().map_err(|e| format!("cannot register metrics: {e}"))?;
    let credentials = Arc::new(
        CredentialStore::load(store.clone())
            .map_err(|e| format!("cannot load SCRAM credentials: {e}"))?,
    );
    let authorizer = Authorizer::load(config.authorizer.clone(), store.clone())
        .map_err(|e| format!("cannot load ACLs: {e}"))?;
    tracing::info!(
        dir = %config.log_dir.display(),
        fsync_each_ack = sync,
        "storage open"
    );
    let limiter = Limiter::new(config.quota_window);
    let cluster: Arc<dyn ClusterMetadata> = match &etcd {
        Some(e) => e.clone(),
        None => Arc::new(Standalone::new(me)),
    };
    let replication = config
        .cluster
        .as_ref()
        .map(|c| crate::replication::ReplicationConfig::from_cluster(c, &config.listeners))
        .transpose()?;
    let replicas = Arc::new(crate::replication::ReplicaManager::new(
        config.node_id,
        replication,
        writer.clone(),
        cluster.clone(),
    ));
    let broker = Arc::new(Broker {
        config,
        broker_configs,
        store: store.clone(),
        catalog,
        writer,
        metrics,
        groups,
        quotas,
        limiter,
        txns,
        credentials,
        authorizer,
        listeners,
        cluster,
        replicas,
        producer_ids: Default::default(),
        group_configs,
        shares,
    });
    // Transactions caught mid-commit or mid-abort complete before clients
    // are served.
    runtime.block_on(broker.txns.recover(&broker));
    {
        let _guard = runtime.enter();
        crate::startup::spawn_background(&broker);
        if let Some(events) = etcd.as_ref().and_then(|e| e.take_topic_events()) {
            crate::startup::spawn_coordinator_loading(&broker);
            crate::startup::spawn_topic_sync(&broker, events);
        }
    }

    let served = runtime.block_on(network::server::serve(broker.clone()));
    if let Some(e) = etcd {
        runtime.block_on(e.shutdown());
    }
    // Dropping the broker drops the last writer handle, which ends the writer thread.
    drop(broker);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if writer_thread.join().is_err() {
        tracing::error!("writer thread panicked");
    }
    store.stop_reclaimer();
    store
        .flush()
        .map_err(|e| format!("final flush failed: {e}"))?;
    tracing::info!("shutdown complete");
    served
}
