//! The replica manager: for each partition this broker hosts, whether it
//! leads, follows or merely holds it, and what that role implies. Handlers
//! reach partitions through it (`check_leader`), never through etcd or other
//! brokers; the follower fetchers (`fetcher`) and the leader's bookkeeping of
//! its followers (`leader`) live beside it.
//!
//! Standalone, every partition is led here and nothing of this runs: the
//! checks answer at once and the high watermark is the log end, as before.

pub mod client;
pub mod fetcher;
pub mod leader;
pub mod peers;
pub mod security;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{ClusterMetadata, PartitionState, TopicState};
use crate::config::cluster::ClusterConfig;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::catalog::Topic;
use crate::storage::partition::Partition;
use crate::storage::writer::{LogChange, Writer};

use leader::LeaderView;

/// What this broker is for one partition.
#[derive(Debug, Clone)]
pub enum Role {
    Leader(LeaderView),
    Follower {
        leader: i32,
        epoch: i32,
    },
    /// A replica without a leader to follow, or not a replica at all.
    Idle,
}

/// One hosted partition and its role.
pub struct Replica {
    pub topic: String,
    pub index: i32,
    pub partition: Arc<Partition>,
    role: Mutex<Role>,
    /// Woken on every role change (acks=all waiters, fetchers).
    pub role_changed: Notify,
    /// A follower that must find where its log diverged before fetching.
    needs_truncation: AtomicBool,
}

impl Replica {
    pub fn role(&self) -> MutexGuard<'_, Role> {
        // Every change replaces the role whole: a poisoned lock is consistent.
        self.role
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The leader epoch, while this broker leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.role() {
            Role::Leader(v) => Some(v.epoch),
            _ => None,
        }
    }
}

/// Replication settings (cluster mode).
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub lag_time_max: Duration,
    pub fetch_wait_max: Duration,
    pub fetch_max_bytes: i32,
    /// KIP-392: consumers in a follower's rack are sent to it.
    pub rack_aware_reads: bool,
    pub inter_broker_listener: String,
    /// TLS and SASL towards other brokers' inter-broker listener.
    pub security: security::InterBroker,
}

impl ReplicationConfig {
    /// The inter-broker listener is `inter.broker.listener.name`, or the
    /// first listener.
    pub fn from_cluster(
        c: &ClusterConfig,
        listeners: &[crate::config::listeners::ListenerConfig],
    ) -> Result<Self, String> {
        let listener = match &c.inter_broker_listener {
            Some(name) => listeners
                .iter()
                .find(|l| l.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("inter.broker.listener.name={name} names no listener"))?,
            None => listeners
                .first()
                .ok_or_else(|| "no listener to replicate through".to_string())?,
        };
        Ok(ReplicationConfig {
            lag_time_max: c.replica_lag_time_max,
            fetch_wait_max: c.replica_fetch_wait_max,
            fetch_max_bytes: c.replica_fetch_max_bytes,
            rack_aware_reads: c.rack_aware_reads,
            inter_broker_listener: listener.name.clone(),
            security: security::InterBroker::from_listener(listener)?,
        })
    }
}

pub struct ReplicaManager {
    pub node_id: i32,
    /// `None` standalone.
    pub cfg: Option<ReplicationConfig>,
    pub writer: Writer,
    pub cluster: Arc<dyn ClusterMetadata>,
    /// Topic → partition index → replica (looked up by `&str` on every
    /// produce and fetch, so without allocating).
    replicas: RwLock<HashMap<String, HashMap<i32, Arc<Replica>>>>,
    /// Leaders a fetch loop runs for.
    fetchers: Mutex<HashSet<i32>>,
    /// Woken when any partition's role changes.
    pub changed: Notify,
    /// Counters for the metrics page.
    pub stats: leader::Stats,
    /// Told of every role change, (topic, partition): the coordinators load
    /// and unload the internal partitions they serve from.
    role_events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, i32)>>>,
    /// Connections to other brokers for requests outside replication.
    pub peers: peers::Peers,
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        cfg: Option<ReplicationConfig>,
        writer: Writer,
        cluster: Arc<dyn ClusterMetadata>,
    ) -> Self {
        ReplicaManager {
            node_id,
            cfg,
            writer,
            cluster,
            replicas: RwLock::new(HashMap::new()),
            fetchers: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            stats: leader::Stats::default(),
            role_events: Mutex::new(None),
            peers: peers::Peers::default(),
        }
    }

    /// The stream of role changes (one subscriber).
    pub fn role_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<(String, i32)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.role_events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    fn role_changed(&self, r: &Replica) {
        r.role_changed.notify_waiters();
        self.changed.notify_waiters();
        if let Some(tx) = &*self.role_events.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send((r.topic.clone(), r.index));
        }
    }

    pub fn is_standalone(&self) -> bool {
        self.cfg.is_none()
    }

    pub fn replica(&self, topic: &str, index: i32) -> Option<Arc<Replica>> {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)?
            .get(&index)
            .cloned()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|t| t.values().cloned())
            .collect()
    }

    /// Whether this broker is one of the partition's replicas.
    pub fn hosts(&self, topic: &str, index: i32) -> bool {
        if self.is_standalone() {
            return true;
        }
        self.cluster.topic(topic).is_some_and(|t| {
            usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .is_some_and(|p| p.replicas.contains(&self.node_id))
        })
    }

    /// Replicas following `leader`, with the epoch they follow in.
    pub fn following(&self, leader_id: i32) -> Vec<(Arc<Replica>, i32)> {
        self.all()
            .into_iter()
            .filter_map(|r| match &*r.role() {
                Role::Follower { leader, epoch } if *leader == leader_id => {
                    Some((r.clone(), *epoch))
                }
                _ => None,
            })
            .collect()
    }

    /// Handlers: this broker must lead the partition, in `current_epoch`
    /// when the client names one (-1: any).
    pub fn check_leader(&self, topic: &str, index: i32, current_epoch: i32) -> BrokerResult<()> {
        if self.is_standalone() {
            return match current_epoch {
                e if e <= 0 => Ok(()),
                _ => Err(BrokerError::UnknownLeaderEpoch),
            };
        }
        let Some(r) = self.replica(topic, index) else {
            return Err(if self.cluster.topic(topic).is_some() {
                BrokerError::NotLeaderOrFollower
            } else {
                BrokerError::UnknownTopicOrPartition
            });
        };
        let epoch = r.leader_epoch().ok_or(BrokerError::NotLeaderOrFollower)?;
        check_epoch(current_epoch, epoch)
    }

    /// Checks that this broker may serve a consumer's read of the
    /// partition: as its leader, or (KIP-392, clients that send their rack,
    /// Fetch v11+) as one of its followers, up to its own high watermark.
    /// The epoch is checked against the one this replica knows.
    pub fn check_readable(&self, topic: &str, index: i32, current_epoch: i32) -> BrokerResult<()> {
        if self.is_standalone() {
            return self.check_leader(topic, index, current_epoch);
        }
        let r = self
            .replica(topic, index)
            .ok_or(BrokerError::NotLeaderOrFollower)?;
        let epoch = match &*r.role() {
            Role::Leader(v) => v.epoch,
            Role::Follower { epoch, .. } => *epoch,
            Role::Idle => return Err(BrokerError::NotLeaderOrFollower),
        };
        check_epoch(current_epoch, epoch)
    }

    /// KIP-392 with the rack-aware selector: the brokers a consumer in
    /// `client_rack` may be sent to, looked up once per fetch. `None` when
    /// reads stay on leaders: no rack-aware selector, no client rack, or this
    /// broker is in the client's rack.
    pub fn rack_readers(&self, client_rack: &str) -> Option<HashSet<i32>> {
        if client_rack.is_empty() || !self.cfg.as_ref()?.rack_aware_reads {
            return None;
        }
        let in_rack: HashSet<i32> = self
            .cluster
            .live_brokers()
            .into_iter()
            .filter(|b| b.rack.as_deref() == Some(client_rack))
            .map(|b| b.node_id)
            .collect();
        (!in_rack.contains(&self.node_id) && !in_rack.is_empty()).then_some(in_rack)
    }

    /// The in-sync follower among `rack_readers` that a consumer should read
    /// the partition from instead of this leader: one that has the fetch
    /// offset, the furthest ahead (`None` if none does).
    pub fn preferred_read_replica(
        &self,
        rack_readers: &HashSet<i32>,
        topic: &str,
        index: i32,
        fetch_offset: i64,
    ) -> Option<i32> {
        let r = self.replica(topic, index)?;
        if fetch_offset < r.partition.log_start_offset() {
            return None;
        }
        let role = r.role();
        let Role::Leader(v) = &*role else {
            return None;
        };
        v.isr
            .iter()
            .filter(|id| rack_readers.contains(id))
            .filter_map(|&id| v.followers.get(&id).map(|p| (id, p.leo)))
            .filter(|&(_, leo)| leo >= fetch_offset)
            .max_by_key(|&(id, leo)| (leo, std::cmp::Reverse(id)))
            .map(|(id, _)| id)
    }

    /// A deleted topic's replicas go.
    pub fn forget_topic(&self, topic: &str) {
        let mut map = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        for r in map.remove(topic).into_iter().flat_map(|t| t.into_values()) {
            *r.role() = Role::Idle;
            r.role_changed.notify_waiters();
        }
    }

    /// Applies a topic's shared state to the local replicas: new leaders
    /// start their epoch in the log, new followers start fetching.
    pub async fn apply(self: &Arc<Self>, state: &TopicState, local: &Arc<Topic>) {
        if self.is_standalone() {
            return;
        }
        for (i, ps) in state.partitions.iter().enumerate() {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let Some(p) = local.partition(index).cloned() else {
                continue;
            };
            p.set_replicated();
            let replica = {
                let mut map = self.replicas.write().unwrap_or_else(|p| p.into_inner());
                map.entry(state.name.clone())
                    .or_default()
                    .entry(index)
                    .or_insert_with(|| {
                        Arc::new(Replica {
                            topic: state.name.clone(),
                            index,
                            partition: p.clone(),
                            role: Mutex::new(Role::Idle),
                            role_changed: Notify::new(),
                            needs_truncation: AtomicBool::new(true),
                        })
                    })
                    .clone()
            };
            if let Err(e) = self.apply_partition(&replica, ps).await {
                tracing::warn!(topic = %state.name, partition = index, error = %e, "could not take up the partition's new role");
            }
        }
    }

    async fn apply_partition(
        self: &Arc<Self>,
        r: &Arc<Replica>,
        ps: &PartitionState,
    ) -> BrokerResult<()> {
        let me = self.node_id;
        if ps.leader == me {
            let same_epoch = matches!(&*r.role(), Role::Leader(v) if v.epoch == ps.leader_epoch);
            if same_epoch {
                let mut role = r.role();
                if let Role::Leader(v) = &mut *role {
                    v.update(ps);
                    r.partition.set_follower_floor(v.floor(me));
                }
                return Ok(());
            }
            // The epoch starts in the log before any append of it.
            self.writer
                .change_log(
                    r.partition.clone(),
                    LogChange::Lead {
                        epoch: ps.leader_epoch,
                    },
                )
                .await?;
            let view = LeaderView::new(ps, Instant::now());
            let floor = view.floor(me);
            *r.role() = Role::Leader(view);
            r.partition.set_follower_floor(floor);
            tracing::info!(topic = %r.topic, partition = r.index, epoch = ps.leader_epoch, isr = ?ps.isr, "leading");
            self.role_changed(r);
            return Ok(());
        } else if ps.replicas.contains(&me) && ps.leader >= 0 {
            let same = matches!(&*r.role(), Role::Follower { leader, epoch } if *leader == ps.leader && *epoch == ps.leader_epoch);
            if same {
                return Ok(());
            }
            r.partition.set_follower_floor(i64::MIN);
            r.needs_truncation.store(true, Ordering::Release);
            *r.role() = Role::Follower {
                leader: ps.leader,
                epoch: ps.leader_epoch,
            };
            tracing::info!(topic = %r.topic, partition = r.index, leader = ps.leader, epoch = ps.leader_epoch, "following");
            self.ensure_fetcher(ps.leader);
        } else {
            let was_idle = matches!(&*r.role(), Role::Idle);
            if !was_idle {
                r.partition.set_follower_floor(i64::MIN);
                r.needs_truncation.store(true, Ordering::Release);
                *r.role() = Role::Idle;
            }
            // No longer a replica (a reassignment moved it away): its copy goes,
            // as Kafka deletes a replica it stops hosting.
            let p = &r.partition;
            if !ps.replicas.contains(&me) && p.log_end_offset() > p.log_start_offset() {
                self.writer
                    .change_log(p.clone(), LogChange::RestartAt { start: 0 })
                    .await?;
                tracing::info!(topic = %r.topic, partition = r.index, "replica removed from this broker; its log is deleted");
            }
            if was_idle {
                return Ok(());
            }
        }
        self.role_changed(r);
        Ok(())
    }

    /// The session expired: lead nothing until the state is read again.
    pub fn step_down_all(&self) {
        let mut n = 0;
        for r in self.all() {
            let mut role = r.role();
            if matches!(&*role, Role::Leader(_)) {
                *role = Role::Idle;
                drop(role);
                r.partition.set_follower_floor(i64::MIN);
                self.role_changed(&r);
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(
                partitions = n,
                "session expired: stepped down as leader until the cluster state is read again"
            );
        }
        self.changed.notify_waiters();
    }

    fn ensure_fetcher(self: &Arc<Self>, leader: i32) {
        let mut running = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        if running.insert(leader) {
            fetcher::spawn(self.clone(), leader);
        }
    }
}

/// Kafka's leader-epoch check: an older epoch than the broker's is fenced,
/// a newer one unknown (the broker has not heard of it yet); -1 skips it.
pub fn check_epoch(requested: i32, current: i32) -> BrokerResult<()> {
    if requested < 0 || requested == current {
        Ok(())
    } else if requested < current {
        Err(BrokerError::FencedLeaderEpoch)
    } else {
        Err(BrokerError::UnknownLeaderEpoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_checked_as_kafka() {
        assert!(check_epoch(-1, 4).is_ok());
        assert!(check_epoch(4, 4).is_ok());
        assert!(matches!(
            check_epoch(3, 4),
            Err(BrokerError::FencedLeaderEpoch)
        ));
        assert!(matches!(
            check_epoch(5, 4),
            Err(BrokerError::UnknownLeaderEpoch)
        ));
    }
}
