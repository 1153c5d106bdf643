//! The accept loop: one task per connection until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::connection;
use super::limits::Admission;
use super::shutdown::{self, Shutdown};
use crate::broker::Broker;

/// Longest wait for in-flight requests once shutdown starts.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

pub async fn serve(broker: Arc<Broker>) -> Result<(), String> {
    let addr = format!(
        "{}:{}",
        broker.config.listen_host, broker.config.listen_port
    );
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        %addr,
        advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        node_id = broker.config.node_id,
        "listening for Kafka clients"
    );
    // Served once the Kafka listener is bound, so /healthz means ready.
    if let Some(metrics_addr) = broker.config.metrics_listener.clone() {
        crate::metrics::http::serve(broker.clone(), metrics_addr).await?;
    }
    let admission = Admission::new(broker.config.limits.clone());
    let shutdown = Shutdown::new();
    let stop = shutdown::signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(refusal) => {
                            broker
                                .metrics
                                .connections_rejected
                                .with_label_values(&[refusal.label()])
                                .inc();
                            tracing::warn!(%peer, limit = refusal.label(), "refusing connection: limit reached");
                            drop(stream);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let listener = shutdown.listener();
                    let broker = broker.clone();
                    let admission = admission.clone();
                    tokio::spawn(async move {
                        connection::serve(broker, stream, peer, listener, admission, slot).await;
                    });
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    if !shutdown.drain(DRAIN_LIMIT).await {
        tracing::warn!("some connections did not finish within {DRAIN_LIMIT:?}");
    }
    Ok(())
}
