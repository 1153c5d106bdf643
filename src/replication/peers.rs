//! Requests one broker sends another outside replication: transaction
//! markers to partition leaders, KIP-890 verification to transaction
//! coordinators. One cached connection per peer, through the inter-broker
//! listener (its TLS and SASL), one request at a time on it; a failed
//! exchange drops the connection so the next call reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::sync::Mutex as AsyncMutex;

use super::client::{BrokerConn, ClientResult};
use super::ReplicaManager;

type Slot = Arc<AsyncMutex<Option<BrokerConn>>>;

#[derive(Default)]
pub struct Peers {
    conns: Mutex<HashMap<i32, Slot>>,
}

impl Peers {
    fn slot(&self, node: i32) -> Slot {
        // Every change is one map insert: a poisoned lock is consistent.
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(node)
            .or_default()
            .clone()
    }

    /// Sends one request to broker `node` and reads its answer within `timeout`.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &self,
        mgr: &ReplicaManager,
        node: i32,
        api: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> ClientResult<Resp> {
        let slot = self.slot(node);
        let mut conn = slot.lock().await;
        if conn.is_none() {
            *conn = Some(
                tokio::time::timeout(timeout, connect(mgr, node))
                    .await
                    .map_err(|_| format!("connecting to broker {node} timed out"))??,
            );
        }
        let Some(c) = conn.as_mut() else {
            return Err(format!("no connection to broker {node}"));
        };
        let answer = c.call(api, version, req, timeout).await;
        if answer.is_err() {
            *conn = None;
        }
        answer
    }
}

/// A connection to broker `node` through its inter-broker listener.
pub async fn connect(mgr: &ReplicaManager, node: i32) -> ClientResult<BrokerConn> {
    let cfg = mgr
        .cfg
        .as_ref()
        .ok_or_else(|| "standalone: no other brokers".to_string())?;
    let info = mgr
        .cluster
        .live_brokers()
        .into_iter()
        .find(|b| b.node_id == node)
        .ok_or_else(|| format!("broker {node} is not registered"))?;
    let ep = info
        .endpoint(&cfg.inter_broker_listener)
        .or_else(|| info.endpoints.first())
        .ok_or_else(|| format!("broker {node} has no endpoint"))?;
    BrokerConn::connect(&ep.host, ep.port, mgr.node_id, &cfg.security).await
}
