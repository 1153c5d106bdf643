//! Cluster membership and controller election in etcd (v3 API), the role
//! ZooKeeper played for Kafka. Under the cluster's prefix:
//!
//! - `brokers/<node id>`: each live broker's registration (endpoints, rack),
//!   bound to its lease; a broker that stops heartbeating for
//!   `broker.session.timeout.ms` disappears with its lease;
//! - `controller`: the elected controller, also lease-bound, written only
//!   together with `controller_epoch` in one compare-and-swap, so every
//!   controller has a higher epoch than the last (the fencing token the
//!   partition-state changes of the replication work will be checked
//!   against);
//! - `cluster_id`: the cluster id every broker must share;
//! - `topics/<name>`: each shared topic with its partitions' state, created
//!   with a compare-and-swap (create if absent) and watched by every broker,
//!   which materializes it in its own storage. Every later change is a
//!   compare-and-swap on the key's revision: by the controller (elections,
//!   only while `controller_epoch` still holds its epoch) or by a partition's
//!   leader (ISR changes, only while the state still names it leader in its
//!   epoch), so a deposed controller or leader can change nothing;
//! - `settings/<kind>/<item>`: settings every broker applies alike (see
//!   `settings`), written by the broker where they changed;
//! - `producer_ids/next`: the next free block of producer ids;
//! - `draining/<node id>`: a broker in controlled shutdown (lease-bound); the
//!   controller moves its leaderships away before it deregisters.
//!
//! A watch on the prefix keeps each broker's view current. When etcd is
//! unreachable, the broker keeps serving with the view it has and
//! re-registers once etcd answers again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::election::{assign_replicas, complete_reassignment, next_state, preferred, Eligibility};
use super::settings::SettingKind;
use super::{
    BoxFuture, BrokerInfo, ClusterMetadata, Controller, IsrChange, PartitionState, Placement,
    TopicChange, TopicEvent, TopicState,
};
use crate::config::cluster::ClusterConfig;
use crate::error::{BrokerError, BrokerResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    info: BrokerInfo,
    /// Tells this process's own registration (left by an earlier lease)
    /// from another broker using the same node id.
    incarnation: String,
}

type EtcdResult<T> = Result<T, String>;

/// How a registration refused for a taken node id is worded.
const TAKEN: &str = "is registered by another live broker";

fn etcd_err(e: etcd_client::Error) -> String {
    format!("etcd: {e}")
}

pub struct EtcdCluster {
    cfg: ClusterConfig,
    prefix: String,
    me: BrokerInfo,
    incarnation: String,
    brokers: RwLock<BTreeMap<i32, BrokerInfo>>,
    controller: RwLock<Option<Controller>>,
    topics: RwLock<BTreeMap<String, TopicState>>,
    /// Brokers in controlled shutdown.
    draining: RwLock<BTreeSet<i32>>,
    /// Topic changes for the broker's storage (taken by `take_topic_events`).
    topic_tx: tokio::sync::mpsc::UnboundedSender<TopicEvent>,
    topic_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<TopicEvent>>>,
    /// For topic operations (cloned per call; shares the connection).
    client: std::sync::Mutex<Option<Client>>,
    stop: watch::Sender<bool>,
}

impl EtcdCluster {
    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn broker_key(&self, id: i32) -> String {
        self.key(&format!("brokers/{id}"))
    }

    /// Connects, checks the cluster id, registers this broker (refusing to
    /// start if a live broker has its node id) and starts the background
    /// session that keeps the registration, the view and the election going.
    pub async fn start(
        cfg: ClusterConfig,
        cluster_id: &str,
        me: BrokerInfo,
    ) -> EtcdResult<Arc<Self>> {
        let prefix = cfg
            .prefix
            .clone()
            .unwrap_or_else(|| format!("/runnel/{cluster_id}"));
        let (stop, _) = watch::channel(false);
        let (topic_tx, topic_rx) = tokio::sync::mpsc::unbounded_channel();
        let this = Arc::new(EtcdCluster {
            prefix,
            me,
            incarnation: uuid::Uuid::new_v4().to_string(),
            brokers: RwLock::new(BTreeMap::new()),
            controller: RwLock::new(None),
            topics: RwLock::new(BTreeMap::new()),
            draining: RwLock::new(BTreeSet::new()),
            topic_tx,
            topic_rx: std::sync::Mutex::new(Some(topic_rx)),
            client: std::sync::Mutex::new(None),
            stop,
            cfg,
        });
        let context = |e: String| {
            format!(
                "metadata store (metadata.store.endpoints={}): {e}",
                this.cfg.endpoints.join(",")
            )
        };
        let mut client = this.connect().await.map_err(context)?;
        this.check_cluster_id(&mut client, cluster_id)
            .await
            .map_err(context)?;
        // A broker restarted right after a crash finds its own old
        // registration still held by the dead process's lease: wait for it
        // to expire (as a Kafka broker retries its registration), refusing
        // only if the node id stays taken past the session timeout.
        let deadline =
            tokio::time::Instant::now() + this.cfg.session_timeout + Duration::from_secs(1);
        let lease = loop {
            match this.register(&mut client).await {
                Ok(lease) => break lease,
                Err(e) if e.contains(TAKEN) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(
                        node_id = this.me.node_id,
                        "node.id still registered (a previous run whose session has not expired yet?); waiting"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(context(e)),
            }
        };
        *this.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        tracing::info!(
            node_id = this.me.node_id,
            prefix = %this.prefix,
            endpoints = %this.cfg.endpoints.join(","),
            "registered in the metadata store"
        );
        let runner = this.clone();
        tokio::spawn(async move { runner.run(client, Some(lease)).await });
        Ok(this)
    }

    async fn connect(&self) -> EtcdResult<Client> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5));
        Client::connect(&self.cfg.endpoints, Some(opts))
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the metadata store at {}: {e}",
                    self.cfg.endpoints.join(",")
                )
            })
    }

    async fn check_cluster_id(&self, client: &mut Client, cluster_id: &str) -> EtcdResult<()> {
        let key = self.key("cluster_id");
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), cluster_id, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = client.txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            return Ok(());
        }
        let existing = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).to_string()),
                _ => None,
            })
            .unwrap_or_default();
        if existing != cluster_id {
            return Err(format!(
                "cluster id mismatch: the metadata store at {} holds cluster {existing}, this broker's data directory is for {cluster_id}",
                self.prefix
            ));
        }
        Ok(())
    }

    /// Registers under a new lease; the lease id.
    async fn register(&self, client: &mut Client) -> EtcdResult<i64> {
        let ttl = self.cfg.session_timeout.as_secs_f64().ceil().max(2.0) as i64;
        let lease = client.lease_grant(ttl, None).await.map_err(etcd_err)?.id();
        let key = self.broker_key(self.me.node_id);
        let value = serde_json::to_vec(&Registration {
            info: self.me.clone(),
            incarnation: self.incarnation.clone(),
        })
        .map_err(|e| e.to_string())?;
        let put = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([put])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = client.txn(txn).await.map_err(etcd_err)?;
        if resp.succeeded() {
            return Ok(lease);
        }
        // Taken: by this process under an earlier lease (re-registering after
        // an outage), or by another live broker with the same node id.
        let existing: Option<Registration> =
            resp.op_responses().into_iter().find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice(kv.value()).ok()),
                _ => None,
            });
        match existing {
            Some(r) if r.incarnation == self.incarnation => {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map_err(etcd_err)?;
                Ok(lease)
            }
            _ => {
                let _ = client.lease_revoke(lease).await;
                Err(format!(
                    "node.id {} {TAKEN} (or by one that stopped less than broker.session.timeout.ms ago)",
                    self.me.node_id
                ))
            }
        }
    }

    /// Keeps a session going until shutdown, starting new ones after etcd
    /// failures.
    async fn run(self: Arc<Self>, mut client: Client, mut lease: Option<i64>) {
        let mut stop = self.stop.subscribe();
        loop {
            let result = match lease.take() {
                Some(l) => self.session(&mut client, l, &mut stop).await,
                None => match self.register(&mut client).await {
                    Ok(l) => {
                        tracing::info!(
                            node_id = self.me.node_id,
                            "re-registered in the metadata store"
                        );
                        self.session(&mut client, l, &mut stop).await
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "metadata store session lost; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                    if let Ok(c) = self.connect().await {
                        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                        client = c;
                    }
                }
            }
        }
    }

    /// One lease's life: heartbeats, the watch, the election.
    async fn session(
        &self,
        client: &mut Client,
        lease: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> EtcdResult<()> {
        let (mut keeper, mut keepalives) =
            client.lease_keep_alive(lease).await.map_err(etcd_err)?;
        let revision = self.load(client).await?;
        let (_watcher, mut events) = client
            .watch(
                self.key(""),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .map_err(etcd_err)?;
        self.campaign(client, lease).await?;
        self.reconcile(client, false).await?;
        let mut last_rebalance = tokio::time::Instant::now();
        let mut beat = tokio::time::interval(self.cfg.heartbeat_interval);
        // Controlled shutdown under way: until when to wait for leaderships to move.
        let mut draining_until: Option<tokio::time::Instant> = None;
        loop {
            if let Some(until) = draining_until {
                if !self.leads_anything() || tokio::time::Instant::now() >= until {
                    self.resign(client, lease).await;
                    return Ok(());
                }
            }

            tokio::select! {
                _ = beat.tick() => {
                    keeper.keep_alive().await.map_err(etcd_err)?;
                    // Also a safety net for a compare-and-swap that lost a race.
                    let rebalance = self.cfg.auto_leader_rebalance
                        && last_rebalance.elapsed() >= self.cfg.leader_imbalance_check_interval;
                    if rebalance {
                        last_rebalance = tokio::time::Instant::now();
                    }
                    self.reconcile(client, rebalance).await?;
                }
                m = keepalives.message() => match m.map_err(etcd_err)? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => {
                        let _ = self.topic_tx.send(TopicEvent::Fenced);
                        return Err("the broker's lease expired".into());
                    }
                },
                m = events.message() => {
                    let Some(resp) = m.map_err(etcd_err)? else {
                        return Err("the metadata watch ended".into());
                    };
                    let mut vacated = false;
                    let mut membership = false;
                    let mut topics_changed = false;
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            let key = String::from_utf8_lossy(kv.key());
                            membership |= key.starts_with(&self.key("brokers/"))
                                || key.starts_with(&self.key("draining/"));
                            topics_changed |= key.starts_with(&self.key("topics/"));
                            vacated |= self.apply(ev.event_type(), kv.key(), kv.value());
                        }
                    }
                    if vacated {
                        self.campaign(client, lease).await?;
                    }
                    if vacated || membership || topics_changed {
                        self.reconcile(client, false).await?;
                    }
                }
                _ = stop.changed(), if draining_until.is_none() => {
                    if !self.cfg.controlled_shutdown {
                        return Ok(());
                    }
                    draining_until = Some(tokio::time::Instant::now() + self.cfg.session_timeout);
                    if self.leads_anything() {
                        tracing::info!(node_id = self.me.node_id, "controlled shutdown: moving leaderships away");
                        client
                            .put(
                                self.key(&format!("draining/{}", self.me.node_id)),
                                "1",
                                Some(PutOptions::new().with_lease(lease)),
                            )
                            .await
                            .map_err(etcd_err)?;
                        // As controller, make the moves at once.
                        self.reconcile(client, false).await?;
                    }
                }
            }
        }
    }

    /// The kind and item of a `settings/<kind>/<item>` key.
    fn setting_of(&self, key: &str) -> Option<(SettingKind, String)> {
        let rest = key.strip_prefix(&self.key("settings/"))?;
        let (kind, item) = rest.split_once('/')?;
        Some((SettingKind::from_name(kind)?, item.to_string()))
    }

    /// Whether this broker leads a partition another live ISR member could take.
    fn leads_anything(&self) -> bool {
        let me = self.me.node_id;
        let brokers = self.brokers.read().unwrap_or_else(|p| p.into_inner());
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|t| t.partitions.iter())
            .any(|p| p.leader == me && p.isr.iter().any(|r| *r != me && brokers.contains_key(r)))
    }

    /// The controller's pass: every partition whose leader or ISR no longer
    /// matches the live brokers gets its next state (see `election`), each
    /// topic in one compare-and-swap fenced by the controller epoch. Others
    /// do nothing.
    async fn reconcile(&self, client: &mut Client, rebalance: bool) -> EtcdResult<()> {
        let Some(me) = self.controller().filter(|c| c.node_id == self.me.node_id) else {
            return Ok(());
        };
        let live: BTreeSet<i32> = self
            .brokers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let draining = self
            .draining
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let who = Eligibility {
            live: &live,
            draining: &draining,
        };
        let resp = client
            .get(self.key("topics/"), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_err)?;
        for kv in resp.kvs() {
            let Ok(mut t) = serde_json::from_slice::<TopicState>(kv.value()) else {
                continue;
            };
            let unclean = t
                .configs
                .get("unclean.leader.election.enable")
                .map_or(self.cfg.unclean_leader_election, |v| v.trim() == "true");
            let mut changed = false;
            for (i, p) in t.partitions.iter_mut().enumerate() {
                if let Some(n) = complete_reassignment(p, &who) {
                    tracing::info!(topic = %t.name, partition = i, replicas = ?n.replicas, "reassignment complete");
                    *p = n;
                    changed = true;
                }
                let next = next_state(p, &who, unclean).or_else(|| {
                    // auto.leader.rebalance.enable: leadership back to the
                    // preferred replica once it is in sync again.
                    rebalance
                        .then(|| preferred(p, &who).ok().flatten())
                        .flatten()
                });
                if let Some(n) = next {
                    tracing::info!(
                        topic = %t.name,
                        partition = i,
                        leader = n.leader,
                        leader_epoch = n.leader_epoch,
                        isr = ?n.isr,
                        "partition state changed by the controller"
                    );
                    *p = n;
                    changed = true;
                }
            }
            if !changed {
                continue;
            }
            let value = serde_json::to_vec(&t).map_err(|e| e.to_string())?;
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(kv.key().to_vec(), CompareOp::Equal, kv.mod_revision()),
                    Compare::value(
                        self.key("controller_epoch"),
                        CompareOp::Equal,
                        me.epoch.to_string(),
                    ),
                ])
                .and_then([TxnOp::put(kv.key().to_vec(), value, None)]);
            if !client.txn(txn).await.map_err(etcd_err)?.succeeded() {
                tracing::debug!(topic = %t.name, "partition state moved meanwhile; next pass retries");
            }
        }
        Ok(())
    }

    /// Reads the whole view; the revision it was read at.
    async fn load(&self, client: &mut Client) -> EtcdResult<i64> {
        let resp = client
            .get(self.key(""), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_err)?;
        let mut brokers = BTreeMap::new();
        let mut controller = None;
        let mut topics = BTreeMap::new();
        let mut draining = BTreeSet::new();
        let mut settings: BTreeMap<SettingKind, BTreeMap<String, Vec<u8>>> = SettingKind::ALL
            .into_iter()
            .map(|k| (k, BTreeMap::new()))
            .collect();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if key.starts_with(&self.key("topics/")) {
                if let Ok(t) = serde_json::from_slice::<TopicState>(kv.value()) {
                    topics.insert(t.name.clone(), t);
                }
            } else if key.starts_with(&self.key("brokers/")) {
                if let Ok(r) = serde_json::from_slice::<Registration>(kv.value()) {
                    brokers.insert(r.info.node_id, r.info);
                }
            } else if key == self.key("controller") {
                controller = serde_json::from_slice::<Controller>(kv.value()).ok();
            } else if let Some(id) = key.strip_prefix(&self.key("draining/")) {
                if let Ok(id) = id.parse::<i32>() {
                    draining.insert(id);
                }
            } else if let Some((kind, item)) = self.setting_of(&key) {
                settings
                    .entry(kind)
                    .or_default()
                    .insert(item, kv.value().to_vec());
            }
        }
        for (kind, all) in settings {
            let _ = self.topic_tx.send(TopicEvent::Settings { kind, all });
        }
        *self.draining.write().unwrap_or_else(|p| p.into_inner()) = draining;
        *self.brokers.write().unwrap_or_else(|p| p.into_inner()) = brokers;
        *self.controller.write().unwrap_or_else(|p| p.into_inner()) = controller;
        // The storage catches up with every topic (and drops those gone).
        {
            let mut known = self.topics.write().unwrap_or_else(|p| p.into_inner());
            for gone in known.keys().filter(|k| !topics.contains_key(*k)) {
                let _ = self.topic_tx.send(TopicEvent::Deleted(gone.clone()));
            }
            for t in topics.values() {
                let _ = self.topic_tx.send(TopicEvent::Present(t.clone()));
            }
            *known = topics;
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Applies one watched change; true when the controller role fell vacant.
    fn apply(&self, kind: EventType, key: &[u8], value: &[u8]) -> bool {
        let key = String::from_utf8_lossy(key);
        if let Some(name) = key.strip_prefix(&self.key("topics/")) {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            match kind {
                EventType::Put => {
                    if let Ok(t) = serde_json::from_slice::<TopicState>(value) {
                        topics.insert(t.name.clone(), t.clone());
                        let _ = self.topic_tx.send(TopicEvent::Present(t));
                    }
                }
                EventType::Delete => {
                    topics.remove(name);
                    let _ = self.topic_tx.send(TopicEvent::Deleted(name.to_string()));
                }
            }
            false
        } else if let Some(id) = key.strip_prefix(&self.key("brokers/")) {
            let mut brokers = self.brokers.write().unwrap_or_else(|p| p.into_inner());
            match kind {
                EventType::Put => {
                    if let Ok(r) = serde_json::from_slice::<Registration>(value) {
                        if !brokers.contains_key(&r.info.node_id) {
                            tracing::info!(node_id = r.info.node_id, "broker joined");
                        }
                        brokers.insert(r.info.node_id, r.info);
                    }
                }
                EventType::Delete => {
                    if let Ok(id) = id.parse::<i32>() {
                        if brokers.remove(&id).is_some() {
                            tracing::info!(
                                node_id = id,
                                "broker left (deregistered or its session expired)"
                            );
                        }
                    }
                }
            }
            false
        } else if let Some((setting, item)) = self.setting_of(&key) {
            let _ = self.topic_tx.send(TopicEvent::Setting {
                kind: setting,
                key: item,
                value: matches!(kind, EventType::Put).then(|| value.to_vec()),
            });
            false
        } else if let Some(id) = key.strip_prefix(&self.key("draining/")) {
            if let Ok(id) = id.parse::<i32>() {
                let mut d = self.draining.write().unwrap_or_else(|p| p.into_inner());
                match kind {
                    EventType::Put => d.insert(id),
                    EventType::Delete => d.remove(&id),
                };
            }
            false
        } else if key == self.key("controller") {
            let mut c = self.controller.write().unwrap_or_else(|p| p.into_inner());
            match kind {
                EventType::Put => {
                    *c = serde_json::from_slice::<Controller>(value).ok();
                    false
                }
                EventType::Delete => {
                    *c = None;
                    true
                }
            }
        } else {
            false
        }
    }

    /// Tries to become controller if there is none: the controller key and
    /// the next epoch are written in one compare-and-swap.
    async fn campaign(&self, client: &mut Client, lease: i64) -> EtcdResult<()> {
        let ckey = self.key("controller");
        let ekey = self.key("controller_epoch");
        loop {
            let current = client.get(ckey.clone(), None).await.map_err(etcd_err)?;
            if let Some(kv) = current.kvs().first() {
                let held = serde_json::from_slice::<Controller>(kv.value()).ok();
                // Ours, under the lease of an earlier session (etcd was away):
                // bind it to this session's lease so it does not expire.
                if held.is_some_and(|c| c.node_id == self.me.node_id) && kv.lease() != lease {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            ckey.clone(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::put(
                            ckey.clone(),
                            kv.value().to_vec(),
                            Some(PutOptions::new().with_lease(lease)),
                        )]);
                    if !client.txn(txn).await.map_err(etcd_err)?.succeeded() {
                        continue;
                    }
                    tracing::info!(
                        node_id = self.me.node_id,
                        "controller role kept across the metadata store's restart"
                    );
                }
                *self.controller.write().unwrap_or_else(|p| p.into_inner()) = held;
                return Ok(());
            }
            let epoch = client.get(ekey.clone(), None).await.map_err(etcd_err)?;
            let (last, mod_rev) = epoch.kvs().first().map_or((0, 0), |kv| {
                (
                    String::from_utf8_lossy(kv.value())
                        .parse::<i64>()
                        .unwrap_or(0),
                    kv.mod_revision(),
                )
            });
            let me = Controller {
                node_id: self.me.node_id,
                epoch: last + 1,
            };
            let value = serde_json::to_vec(&me).map_err(|e| e.to_string())?;
            let txn = Txn::new()
                .when([
                    Compare::version(ckey.clone(), CompareOp::Equal, 0),
                    Compare::mod_revision(ekey.clone(), CompareOp::Equal, mod_rev),
                ])
                .and_then([
                    TxnOp::put(
                        ckey.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::put(ekey.clone(), me.epoch.to_string(), None),
                ]);
            if client.txn(txn).await.map_err(etcd_err)?.succeeded() {
                *self.controller.write().unwrap_or_else(|p| p.into_inner()) = Some(me);
                tracing::info!(node_id = me.node_id, epoch = me.epoch, "elected controller");
                return Ok(());
            }
            // Someone else won, or the epoch moved: look again.
        }
    }

    /// Controlled shutdown: give up the controller role (if held) and
    /// deregister, so that others take over at once instead of after the
    /// session timeout.
    async fn resign(&self, client: &mut Client, lease: i64) {
        match client.lease_revoke(lease).await {
            Ok(_) => tracing::info!(
                node_id = self.me.node_id,
                "deregistered from the metadata store"
            ),
            Err(e) => tracing::warn!(error = %e, "could not deregister from the metadata store"),
        }
    }

    /// The stream of topic changes, for the task that applies them to this
    /// broker's storage (once).
    pub fn take_topic_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<TopicEvent>> {
        self.topic_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn ops_client(&self) -> BrokerResult<Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(BrokerError::CoordinatorNotAvailable)
    }

    async fn create(
        &self,
        name: &str,
        partitions: i32,
        placement: Placement,
        configs: BTreeMap<String, String>,
    ) -> BrokerResult<TopicState> {
        let live = self.live_brokers();
        let count = usize::try_from(partitions).unwrap_or(0);
        let replication_factor = placement.factor();
        let rf = usize::try_from(replication_factor).unwrap_or(0);
        if rf == 0 || (rf > live.len() && matches!(placement, Placement::Factor(_))) {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                live.len()
            )));
        }
        let start = usize::from(uuid::Uuid::new_v4().as_bytes()[0]);
        let state = TopicState {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions: match placement {
                Placement::Factor(_) => assign_replicas(&live, count, rf, start),
                Placement::Explicit(a) => a,
            }
            .into_iter()
            .map(|replicas| PartitionState {
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
                partition_epoch: 0,
                adding: Vec::new(),
                removing: Vec::new(),
            })
            .collect(),
            configs,
        };
        let key = self.key(&format!("topics/{name}"));
        let value = serde_json::to_vec(&state).map_err(|e| BrokerError::Storage(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let mut client = self.ops_client()?;
        let resp = client
            .txn(txn)
            .await
            .map_err(|e| BrokerError::Storage(etcd_err(e)))?;
        if !resp.succeeded() {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        tracing::info!(
            topic = name,
            partitions,
            replication_factor,
            "topic created in the cluster"
        );
        Ok(state)
    }

    /// A leader's ISR change, applied to the stored state only while it
    /// still names this broker leader in `leader_epoch`.
    async fn alter(
        &self,
        topic: &str,
        index: usize,
        leader_epoch: i32,
        change: IsrChange,
    ) -> BrokerResult<(PartitionState, bool)> {
        let me = self.me.node_id;
        let mut changed = false;
        let apply = Box::new(|t: &mut TopicState| {
            let p = t
                .partitions
                .get_mut(index)
                .ok_or(BrokerError::UnknownTopicOrPartition)?;
            if p.leader != me {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            if p.leader_epoch != leader_epoch {
                return Err(BrokerError::FencedLeaderEpoch);
            }
            let isr: Vec<i32> = match &change {
                IsrChange::Expand(r) if p.replicas.contains(r) && !p.isr.contains(r) => {
                    p.isr.iter().copied().chain([*r]).collect()
                }
                IsrChange::Expand(_) => p.isr.clone(),
                IsrChange::Shrink(gone) => p
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| *r == me || !gone.contains(r))
                    .collect(),
            };
            changed = isr != p.isr;
            if changed {
                p.isr = isr;
                p.partition_epoch += 1;
            }
            Ok(changed)
        });
        let t = self.update(topic, apply).await?;
        let next = t
            .partitions
            .get(index)
            .cloned()
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        if changed {
            tracing::info!(
                topic,
                partition = index,
                isr = ?next.isr,
                partition_epoch = next.partition_epoch,
                "ISR changed"
            );
        }
        Ok((next, changed))
    }

    async fn update(&self, name: &str, mut change: TopicChange<'_>) -> BrokerResult<TopicState> {
        let key = self.key(&format!("topics/{name}"));
        let mut client = self.ops_client()?;
        let storage = |e: etcd_client::Error| BrokerError::Storage(etcd_err(e));
        for _ in 0..16 {
            let resp = client.get(key.clone(), None).await.map_err(storage)?;
            let kv = resp
                .kvs()
                .first()
                .ok_or(BrokerError::UnknownTopicOrPartition)?;
            let mut t: TopicState = serde_json::from_slice(kv.value())
                .map_err(|e| BrokerError::Storage(e.to_string()))?;
            if !change(&mut t)? {
                return Ok(t);
            }
            let value = serde_json::to_vec(&t).map_err(|e| BrokerError::Storage(e.to_string()))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if client.txn(txn).await.map_err(storage)?.succeeded() {
                return Ok(t);
            }
        }
        Err(BrokerError::CoordinatorNotAvailable)
    }

    /// Takes the next `count` producer ids with a compare-and-swap on the
    /// cluster's next free id.
    async fn allocate_ids(&self, count: i64) -> BrokerResult<i64> {
        let key = self.key("producer_ids/next");
        let mut client = self.ops_client()?;
        let storage = |e: etcd_client::Error| BrokerError::Storage(etcd_err(e));
        for _ in 0..32 {
            let resp = client.get(key.clone(), None).await.map_err(storage)?;
            let (start, rev) = resp.kvs().first().map_or((0, 0), |kv| {
                (
                    String::from_utf8_lossy(kv.value())
                        .parse::<i64>()
                        .unwrap_or(0),
                    kv.mod_revision(),
                )
            });
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key.clone(), (start + count).to_string(), None)]);
            if client.txn(txn).await.map_err(storage)?.succeeded() {
                return Ok(start);
            }
        }
        Err(BrokerError::CoordinatorNotAvailable)
    }

    async fn delete(&self, name: &str) -> BrokerResult<()> {
        let mut client = self.ops_client()?;
        let resp = client
            .delete(self.key(&format!("topics/{name}")), None)
            .await
            .map_err(|e| BrokerError::Storage(etcd_err(e)))?;
        if resp.deleted() == 0 {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        tracing::info!(topic = name, "topic deleted from the cluster");
        Ok(())
    }

    /// Ends the session: with controlled shutdown, once this broker's
    /// leaderships have moved (bounded by the session timeout), then it
    /// deregisters. Called again after that, returns at once.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let deadline =
            tokio::time::Instant::now() + self.cfg.session_timeout + Duration::from_secs(2);
        while self.stop.receiver_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ClusterMetadata for EtcdCluster {
    fn live_brokers(&self) -> Vec<BrokerInfo> {
        let mut out: Vec<BrokerInfo> = self
            .brokers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        // This broker is live as long as it serves, even while etcd is away.
        if !out.iter().any(|b| b.node_id == self.me.node_id) {
            out.push(self.me.clone());
            out.sort_by_key(|b| b.node_id);
        }
        out
    }

    fn controller(&self) -> Option<Controller> {
        *self.controller.read().unwrap_or_else(|p| p.into_inner())
    }

    fn is_standalone(&self) -> bool {
        false
    }

    fn topic(&self, name: &str) -> Option<TopicState> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn topics(&self) -> Vec<TopicState> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        partitions: i32,
        placement: Placement,
        configs: BTreeMap<String, String>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>> {
        Box::pin(self.create(name, partitions, placement, configs))
    }

    fn alter_isr<'a>(
        &'a self,
        topic: &'a str,
        partition: usize,
        leader_epoch: i32,
        change: IsrChange,
    ) -> BoxFuture<'a, BrokerResult<(PartitionState, bool)>> {
        Box::pin(self.alter(topic, partition, leader_epoch, change))
    }

    fn update_topic<'a>(
        &'a self,
        name: &'a str,
        change: TopicChange<'a>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>> {
        Box::pin(self.update(name, change))
    }

    fn put_setting(
        &self,
        kind: SettingKind,
        key: String,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async move {
            let mut client = self.ops_client()?;
            let key = self.key(&format!("settings/{}/{key}", kind.name()));
            let storage = |e: etcd_client::Error| BrokerError::Storage(etcd_err(e));
            match value {
                Some(v) => client.put(key, v, None).await.map(|_| ()).map_err(storage),
                None => client.delete(key, None).await.map(|_| ()).map_err(storage),
            }
        })
    }

    fn shared_settings(
        &self,
        kind: SettingKind,
    ) -> BoxFuture<'_, BrokerResult<Option<super::settings::Items>>> {
        Box::pin(async move {
            let mut client = self.ops_client()?;
            let prefix = self.key(&format!("settings/{}/", kind.name()));
            let resp = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| BrokerError::Storage(etcd_err(e)))?;
            Ok(Some(
                resp.kvs()
                    .iter()
                    .filter_map(|kv| {
                        let k = String::from_utf8_lossy(kv.key());
                        Some((k.strip_prefix(&prefix)?.to_string(), kv.value().to_vec()))
                    })
                    .collect(),
            ))
        })
    }

    fn allocate_producer_ids(&self, count: i64) -> BoxFuture<'_, BrokerResult<i64>> {
        Box::pin(self.allocate_ids(count))
    }

    fn is_draining(&self, node: i32) -> bool {
        self.draining
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&node)
    }

    fn controlled_shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }

    fn delete_topic<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(self.delete(name))
    }
}
