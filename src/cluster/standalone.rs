//! Standalone mode: this broker is the only one and its own controller.

use std::collections::BTreeMap;

use super::{BoxFuture, BrokerInfo, ClusterMetadata, Controller, TopicState};
use crate::error::{BrokerError, BrokerResult};

pub struct Standalone {
    me: BrokerInfo,
}

impl Standalone {
    pub fn new(me: BrokerInfo) -> Self {
        Standalone { me }
    }
}

impl ClusterMetadata for Standalone {
    fn live_brokers(&self) -> Vec<BrokerInfo> {
        vec![self.me.clone()]
    }

    fn controller(&self) -> Option<Controller> {
        Some(Controller {
            node_id: self.me.node_id,
            epoch: 0,
        })
    }

    fn is_standalone(&self) -> bool {
        true
    }

    fn topic(&self, _name: &str) -> Option<TopicState> {
        None
    }

    fn topics(&self) -> Vec<TopicState> {
        Vec::new()
    }

    fn create_topic<'a>(
        &'a self,
        _name: &'a str,
        _partitions: i32,
        _placement: super::Placement,
        _configs: BTreeMap<String, String>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>> {
        Box::pin(async {
            Err(BrokerError::InvalidRequest(
                "standalone: topics are created in the local catalog".into(),
            ))
        })
    }

    fn alter_isr<'a>(
        &'a self,
        _topic: &'a str,
        _partition: usize,
        _leader_epoch: i32,
        _change: super::IsrChange,
    ) -> BoxFuture<'a, BrokerResult<(super::PartitionState, bool)>> {
        Box::pin(async { Err(BrokerError::NotLeaderOrFollower) })
    }

    fn update_topic<'a>(
        &'a self,
        _name: &'a str,
        _change: super::TopicChange<'a>,
    ) -> BoxFuture<'a, BrokerResult<TopicState>> {
        Box::pin(async {
            Err(BrokerError::InvalidRequest(
                "standalone: topics live in the local catalog".into(),
            ))
        })
    }

    fn delete_topic<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async {
            Err(BrokerError::InvalidRequest(
                "standalone: topics are deleted from the local catalog".into(),
            ))
        })
    }
}
