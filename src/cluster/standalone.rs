//! Standalone mode: this broker is the only one and its own controller.

use super::{BrokerInfo, ClusterMetadata, Controller};

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
}
