//! Kafka's dynamic TLS update: a broker's keystore or truststore keys changed
//! with AlterConfigs (per broker) rebuild the TLS set-up of its TLS
//! listeners. The new settings are checked in full before anything is
//! stored; connections accepted afterwards use them, open ones keep theirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Broker;
use crate::config::dynamic::BrokerLayers;
use crate::config::listeners;
use crate::error::{BrokerError, BrokerResult};
use crate::network::session::ListenerRuntime;
use crate::network::tls::TlsSetup;

/// The new TLS set-up of each TLS listener if this broker's dynamic configs
/// became `broker_values`, or why they cannot.
pub fn check(
    broker: &Broker,
    broker_values: &BTreeMap<String, String>,
) -> BrokerResult<Vec<(Arc<ListenerRuntime>, TlsSetup)>> {
    let layers = broker.broker_configs.layers();
    let merged = BrokerLayers::new(
        layers.static_raw.clone(),
        layers.dynamic_default.clone(),
        broker_values.clone(),
    )
    .merged;
    let configs = listeners::parse(&merged).map_err(BrokerError::InvalidConfig)?;
    let mut out = Vec::new();
    for runtime in broker.listeners.iter().filter(|r| r.protocol().tls()) {
        let Some(config) = configs.iter().find(|c| c.name == runtime.config.name) else {
            continue;
        };
        match runtime.check_tls(config) {
            Ok(Some(setup)) => out.push((runtime.clone(), setup)),
            Ok(None) => {}
            Err(e) => {
                return Err(BrokerError::InvalidConfig(format!(
                    "Validation of dynamic config update of the TLS keystore failed: {e}"
                )))
            }
        }
    }
    Ok(out)
}

pub fn apply(acceptors: Vec<(Arc<ListenerRuntime>, TlsSetup)>) {
    for (runtime, setup) in acceptors {
        runtime.replace_tls(setup);
        tracing::info!(listener = %runtime.config.name, "TLS keystore and truststore reloaded");
    }
}
