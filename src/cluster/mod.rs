//! Cluster metadata behind one interface with two implementations:
//! `standalone` (one node, nothing shared: today's broker) and `etcd`
//! (membership under etcd leases and an elected controller with a fencing
//! epoch). Handlers ask this interface who the brokers and the controller
//! are; they never talk to etcd themselves.

pub mod etcd;
pub mod standalone;

use serde::{Deserialize, Serialize};

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

/// What the rest of the broker knows of the cluster.
pub trait ClusterMetadata: Send + Sync {
    /// Live brokers, by node id.
    fn live_brokers(&self) -> Vec<BrokerInfo>;
    /// The current controller, if one is elected.
    fn controller(&self) -> Option<Controller>;
}
