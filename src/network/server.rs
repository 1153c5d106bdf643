//! The accept loops: one per listener (plaintext, TLS, SASL), each spawning a
//! task per connection, until shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::connection;
use super::limits::{Admission, Slot};
use super::session::{ListenerRuntime, Session};
use super::shutdown::{self, Shutdown, ShutdownFactory};
use crate::broker::Broker;

/// Longest wait for in-flight requests once shutdown starts.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Longest a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

pub async fn serve(broker: Arc<Broker>) -> Result<(), String> {
    let mut bound = Vec::new();
    for runtime in broker.listeners.iter() {
        let runtime = runtime.clone();
        let l = &runtime.config;
        let addr = format!("{}:{}", l.host, l.port);
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (listener {}): {e}", l.name))?;
        tracing::info!(
            listener = %l.name,
            protocol = l.protocol.name(),
            %addr,
            advertised = %format!("{}:{}", l.advertised_host, l.advertised_port),
            mechanisms = %runtime.mechanisms.join(","),
            node_id = broker.config.node_id,
            "listening for Kafka clients"
        );
        bound.push((tcp, runtime));
    }
    // Served once the Kafka listeners are bound, so /healthz means ready.
    if let Some(metrics_addr) = broker.config.metrics_listener.clone() {
        crate::metrics::http::serve(broker.clone(), metrics_addr).await?;
    }
    let admission = Admission::new(broker.config.limits.clone());
    let shutdown = Shutdown::new();
    for (tcp, runtime) in bound {
        tokio::spawn(accept_loop(
            broker.clone(),
            tcp,
            runtime,
            admission.clone(),
            shutdown.factory(),
        ));
    }
    shutdown::signal().await;
    // In a cluster, leaderships move while clients are still answered (with
    // NOT_LEADER_OR_FOLLOWER and the new leader), as in Kafka.
    broker.cluster.controlled_shutdown().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    if !shutdown.drain(DRAIN_LIMIT).await {
        tracing::warn!("some connections did not finish within {DRAIN_LIMIT:?}");
    }
    Ok(())
}

/// Connections held open before closing them for connection_creation_rate.
static HELD: AtomicUsize = AtomicUsize::new(0);
const MAX_HELD: usize = 1024;

async fn accept_loop(
    broker: Arc<Broker>,
    tcp: TcpListener,
    runtime: Arc<ListenerRuntime>,
    admission: Arc<Admission>,
    factory: ShutdownFactory,
) {
    let mut stop = factory.listener();
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over its connection_creation_rate, an IP's connection is
                    // held for the throttle time and then closed (KIP-612).
                    let hold = broker.limiter.connection(&broker.quotas, peer.ip());
                    if !hold.is_zero() {
                        broker
                            .metrics
                            .connections_rejected
                            .with_label_values(&["ip_connection_rate"])
                            .inc();
                        tracing::warn!(%peer, throttle_ms = hold.as_millis() as u64, "connection_creation_rate exceeded: closing the connection after the throttle time");
                        // Held sockets are bounded: past the cap they close at once.
                        if HELD.fetch_add(1, Ordering::AcqRel) < MAX_HELD {
                            tokio::spawn(async move {
                                tokio::time::sleep(hold).await;
                                drop(stream);
                                HELD.fetch_sub(1, Ordering::AcqRel);
                            });
                        } else {
                            HELD.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    let slot = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(refusal) => {
                            broker
                                .metrics
                                .connections_rejected
                                .with_label_values(&[refusal.label()])
                                .inc();
                            tracing::warn!(%peer, limit = refusal.label(), "refusing connection: limit reached");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(start(
                        broker.clone(),
                        stream,
                        peer,
                        runtime.clone(),
                        admission.clone(),
                        slot,
                        factory.clone(),
                    ));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.wait() => break,
        }
    }
}

/// Completes TLS (when the listener has it) and serves the connection.
async fn start(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    runtime: Arc<ListenerRuntime>,
    admission: Arc<Admission>,
    slot: Slot,
    factory: ShutdownFactory,
) {
    let listener = factory.listener();
    match runtime.tls() {
        None => {
            let session = Arc::new(Session::new(runtime, peer, None));
            connection::serve(
                broker,
                stream.into_split(),
                session,
                listener,
                admission,
                slot,
            )
            .await;
        }
        Some(acceptor) => {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    broker
                        .metrics
                        .connections_closed
                        .with_label_values(&["tls_handshake_failed"])
                        .inc();
                    tracing::warn!(%peer, listener = %runtime.config.name, error = %e, "TLS handshake failed; closing connection");
                    return;
                }
                Err(_) => {
                    broker
                        .metrics
                        .connections_closed
                        .with_label_values(&["tls_handshake_timeout"])
                        .inc();
                    tracing::warn!(%peer, listener = %runtime.config.name, "TLS handshake timed out; closing connection");
                    return;
                }
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(super::tls::principal_of);
            let principal = match subject {
                Some(dn) => match runtime.principal_mapper.map(&dn) {
                    Some(p) => {
                        tracing::debug!(%peer, subject = %dn, principal = %p, "TLS client certificate");
                        Some(p)
                    }
                    None => {
                        broker
                            .metrics
                            .connections_closed
                            .with_label_values(&["no_principal_mapping_rule"])
                            .inc();
                        tracing::warn!(%peer, subject = %dn, listener = %runtime.config.name, "no ssl.principal.mapping.rules rule applies to the client certificate; closing connection");
                        return;
                    }
                },
                None => None,
            };
            let session = Arc::new(Session::new(runtime, peer, principal));
            connection::serve(
                broker,
                tokio::io::split(tls),
                session,
                listener,
                admission,
                slot,
            )
            .await;
        }
    }
}
