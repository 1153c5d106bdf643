//! Cluster metadata behind one interface with two implementations:
//! `standalone` (one node, nothing shared: today's broker) and `etcd`
//! (membership under etcd leases and an elected controller with a fencing
//! epoch). Handlers ask this interface who the brokers and the controller
//! are; they never talk to etcd themselves.

pub mod election;
pub mod etcd;
pub mod producer_ids;
pub mod settings;
pub mod standalone;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BrokerResult;

/// One listener endpoint a broker advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `SASL_SSL`, `INTERNAL`, ...).
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// A live broker, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub rack: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

impl BrokerInfo {
    /// The endpoint of `listener`: clients are answered with the endpoints
    /// of the listener they came in on.
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.listener == listener)
    }
}

/// The elected controller and its fencing epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    pub node_id: i32,
    pub epoch: i64,
}

/// A partition's state, as Kafka keeps it: every change to it is a
/// compare-and-swap on its partition epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    /// An ongoing reassignment: replicas being added (they are in
    /// `replicas` and fetch; once all are in the ISR the controller drops
    /// `removing` and the reassignment is complete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

/// A topic shared by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

/// A change to the shared topics, for the broker to apply to its storage.
#[derive(Debug, Clone)]
pub enum TopicEvent {
    Present(TopicState),
    Deleted(String),
    /// A shared setting changed (`None`: removed).
    Setting {
        kind: settings::SettingKind,
        key: String,
        value: Option<Vec<u8>>,
    },
    /// Every item of a kind, as the store holds them (on (re)joining).
    Settings {
        kind: settings::SettingKind,
        all: BTreeMap<String, Vec<u8>>,
    },
    /// This broker's session expired (it was paused or cut off longer than
    /// the session timeout): others may lead its partitions by now, so it
    /// leads nothing until it has re-read the state.
    Fenced,
}

/// Where a new topic's replicas go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This many replicas per partition, spread by the controller.
    Factor(i16),
    /// The client's replica list per partition (the first leads).
    Explicit(Vec<Vec<i32>>),
}

impl Placement {
    pub fn factor(&self) -> i16 {
        match self {
            Placement::Factor(f) => *f,
            Placement::Explicit(a) => a
                .first()
                .map_or(1, |r| i16::try_from(r.len()).unwrap_or(i16::MAX)),
        }
    }
}

/// What a partition's leader asks of its ISR.
#[derive(Debug, Clone)]
pub enum IsrChange {
    /// A follower caught up.
    Expand(i32),
    /// Followers fell behind for `replica.lag.time.max.ms`.
    Shrink(Vec<i32>),
}

/// A change to a topic's shared state (see `update_topic`).
pub type TopicChange<'a> = Box<dyn FnMut(&mut TopicState) -> BrokerResult<bool> + Send + 'a>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the rest of the broker knows of the cluster.
pub trait ClusterMetadata: Send + Sync {
    /// Live brokers, by node id.
    fn live_brokers(&self) -> Vec<BrokerInfo>;
    /// The current controller, if one is elected.
    fn controller(&self) -> Option<Controller>;
    /// Standalone: the local catalog is the truth about topics and this
    /// broker leads every partition.
    fn is_standalone(&self) -> bool;
    /// A shared topic (cluster mode).
    fn topic(&self, name: &str) -> Option<TopicState>;
    /// Every shared topic (cluster mode).
    fn topics(&self) -> Vec<TopicState>;
    /// Creates a shared topic, its partitions spread over the live brokers.
    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        partitions: i32,
        placement: Placement,
        configs: BTreeMap<String, String>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>>;
    /// A partition leader's ISR change (fenced by its leader epoch): the
    /// partition's state after it, and whether this call changed it.
    fn alter_isr<'a>(
        &'a self,
        topic: &'a str,
        partition: usize,
        leader_epoch: i32,
        change: IsrChange,
    ) -> BoxFuture<'a, BrokerResult<(PartitionState, bool)>>;
    fn delete_topic<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BrokerResult<()>>;
    /// Shares a setting changed here with every broker (cluster mode);
    /// the change is acknowledged to the client only after this.
    /// Standalone: nothing to do.
    fn put_setting(
        &self,
        _kind: settings::SettingKind,
        _key: String,
        _value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async { Ok(()) })
    }
    /// The store's current items of a kind (cluster mode; `None`
    /// standalone): read before an administrator's change, so a change
    /// builds on every earlier one, wherever it was made.
    fn shared_settings(
        &self,
        _kind: settings::SettingKind,
    ) -> BoxFuture<'_, BrokerResult<Option<settings::Items>>> {
        Box::pin(async { Ok(None) })
    }
    /// Reserves `count` producer ids for this broker; the first of them.
    fn allocate_producer_ids(&self, _count: i64) -> BoxFuture<'_, BrokerResult<i64>> {
        Box::pin(async {
            Err(crate::error::BrokerError::InvalidRequest(
                "standalone: producer ids come from the local catalog".into(),
            ))
        })
    }
    /// Whether `node` is in controlled shutdown (it must not rejoin an ISR).
    fn is_draining(&self, _node: i32) -> bool {
        false
    }
    /// Controlled shutdown, while clients are still served: leaderships
    /// move to other brokers, then this broker deregisters.
    fn controlled_shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Changes a shared topic with a compare-and-swap: `change` is applied
    /// to the current state (again if another change won the race) and
    /// says whether it changed anything; the state written (or current).
    fn update_topic<'a>(
        &'a self,
        name: &'a str,
        change: TopicChange<'a>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>>;
}

/// Partition leaders spread over the brokers, racks interleaved (Kafka's
/// rack-aware round robin for one replica), starting at `start`.
pub fn assign_leaders(brokers: &[BrokerInfo], partitions: usize, start: usize) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.clone()).or_default().push(b.node_id);
    }
    let mut order = Vec::with_capacity(brokers.len());
    let lists: Vec<Vec<i32>> = by_rack.into_values().collect();
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for l in &lists {
            if let Some(id) = l.get(i) {
                order.push(*id);
            }
        }
    }
    if order.is_empty() {
        return Vec::new();
    }
    (0..partitions)
        .map(|p| order[(start + p) % order.len()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: i32, rack: &str) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            rack: Some(rack.into()),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn leaders_spread_over_racks() {
        let brokers = [b(1, "a"), b(2, "a"), b(3, "b"), b(4, "b")];
        assert_eq!(assign_leaders(&brokers, 4, 0), vec![1, 3, 2, 4]);
        assert_eq!(assign_leaders(&brokers, 2, 1), vec![3, 2]);
        assert!(assign_leaders(&[], 3, 0).is_empty());
    }
}
