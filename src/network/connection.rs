//! One client connection: reads length-prefixed frames, runs each request in
//! its own task, and writes responses back strictly in request order.
//!
//! What one connection may hold is bounded: at most `MAX_IN_FLIGHT` requests,
//! request bytes within the broker-wide `queued.max.request.bytes` budget,
//! at most one Fetch whose response is not yet written (a client has one Fetch
//! outstanding per connection anyway), and reading stops while more than
//! `runnel.socket.response.queue.bytes` of answers wait for a client that does
//! not read them. A frame's buffer grows with the bytes that actually arrive,
//! so a lying size prefix costs nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::limits::{Admission, Slot};
use super::session::Session;
use super::shutdown::ShutdownListener;
use crate::broker::Broker;
use crate::dispatch::{self, Outcome, Turn};

/// Requests being processed on one connection before reading pauses.
const MAX_IN_FLIGHT: usize = 64;
/// Smallest valid request: api key, api version, correlation id.
const MIN_FRAME: usize = 8;
/// First allocation for a frame; it grows as bytes arrive.
const FIRST_CHUNK: usize = 64 * 1024;
/// How far a frame's buffer may run ahead of the bytes that have arrived.
/// Each growth copies what is there, so doubling copied a large produce
/// request once more in all; at 16x a 1 MiB request is copied 1/16 once.
const GROWTH: usize = 16;
/// Kafka's Fetch API key.
const FETCH_KEY: i16 = 1;
/// How long a closing connection waits for its last responses to be written.
const FINAL_WRITE_LIMIT: Duration = Duration::from_secs(15);
/// The same at shutdown: in-flight produces are answered, but a JoinGroup
/// waiting out a long rebalance is not waited for.
const SHUTDOWN_WRITE_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame size {0} is negative or below the {MIN_FRAME}-byte minimum")]
    Malformed(i32),
    #[error("frame size {size} exceeds socket.request.max.bytes={max}")]
    TooLarge { size: usize, max: usize },
    #[error("connection idle for {0:?}")]
    Idle(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    fn metric_label(&self) -> &'static str {
        match self {
            FrameError::Malformed(_) => "malformed_frame",
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::Idle(_) => "idle",
            FrameError::Io(_) => "io_error",
        }
    }
}

/// A request read off the wire, with the budget it holds until answered.
struct Frame {
    bytes: Bytes,
    request_bytes: Option<OwnedSemaphorePermit>,
}

/// A request on its way to the writer; the permits go when its answer is sent.
struct Pending {
    task: JoinHandle<Outcome>,
    permits: [Option<OwnedSemaphorePermit>; 2],
}

/// Answered bytes not yet written to the socket, and a wake-up when that falls.
#[derive(Default)]
struct Unsent {
    bytes: AtomicUsize,
    drained: Notify,
}

/// Serves one connection, plain TCP or TLS, already split into halves.
pub async fn serve<R, W>(
    broker: Arc<Broker>,
    (mut rd, wr): (R, W),
    session: Arc<Session>,
    mut shutdown: ShutdownListener,
    admission: Arc<Admission>,
    _slot: Slot,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer: SocketAddr = session.peer;
    broker.metrics.connections.inc();
    tracing::debug!(%peer, listener = %session.listener.config.name, "connection opened");
    let max = broker.config.socket_request_max_bytes;
    let limits = admission.limits().clone();
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let unsent = Arc::new(Unsent::default());
    let fetch_slot = Arc::new(Semaphore::new(1));
    let mut writer = tokio::spawn(write_loop(wr, rx, closed_tx, peer, unsent.clone()));

    let mut previous_turn = None;
    let mut client_gone = false;
    let reason = 'conn: loop {
        // A client that does not read its answers stops being read, until it
        // drains them or stays stuck for the idle limit.
        let stuck_since = tokio::time::Instant::now();
        while unsent.bytes.load(Ordering::Acquire) > limits.response_queue_bytes {
            if stuck_since.elapsed() >= limits.idle {
                broker
                    .metrics
                    .connections_closed
                    .with_label_values(&["not_reading"])
                    .inc();
                tracing::warn!(%peer, "closing connection: client has not read its responses for {:?}", limits.idle);
                break 'conn "client not reading its responses".to_string();
            }
            tokio::select! {
                _ = unsent.drained.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.wait() => break 'conn "broker shutting down".to_string(),
                _ = &mut closed_rx => break 'conn "closed after an invalid request".to_string(),
            }
        }
        // A throttled client is not read until its throttle time is over.
        if let Some(until) = session.muted_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.wait() => break 'conn "broker shutting down".to_string(),
                _ = &mut closed_rx => break 'conn "closed after an invalid request".to_string(),
            }
        }
        let frame = tokio::select! {
            f = read_frame(&mut rd, max, limits.idle, &admission, &session) => f,
            _ = shutdown.wait() => break "broker shutting down".to_string(),
            _ = &mut closed_rx => break "closed after an invalid request".to_string(),
        };
        match frame {
            Ok(Some(Frame {
                bytes,
                request_bytes,
            })) => {
                // One Fetch answer at a time per connection: its response can be
                // tens of megabytes, and nothing else bounds a pipelining client.
                let fetch = if i16::from_be_bytes([bytes[0], bytes[1]]) == FETCH_KEY {
                    tokio::select! {
                        p = fetch_slot.clone().acquire_owned() => p.ok(),
                        _ = shutdown.wait() => break "broker shutting down".to_string(),
                        _ = &mut closed_rx => break "closed after an invalid request".to_string(),
                    }
                } else {
                    None
                };
                let b = broker.clone();
                let (turn, next) = Turn::after(previous_turn.take());
                previous_turn = Some(next);
                let counter = unsent.clone();
                let session = session.clone();
                let task = tokio::spawn(async move {
                    let out = dispatch::handle(&b, bytes, session, turn).await;
                    if let Outcome::Respond(r) | Outcome::RespondThenClose(r) = &out {
                        counter.bytes.fetch_add(r.len(), Ordering::AcqRel);
                    }
                    out
                });
                let pending = Pending {
                    task,
                    permits: [request_bytes, fetch],
                };
                // A full pipeline (64 answers pending, e.g. behind a long
                // JoinGroup) must not keep shutdown waiting.
                tokio::select! {
                    sent = tx.send(pending) => if sent.is_err() {
                        break "response writer stopped".to_string();
                    },
                    _ = shutdown.wait() => break "broker shutting down".to_string(),
                    _ = &mut closed_rx => break "closed after an invalid request".to_string(),
                }
            }
            Ok(None) => {
                client_gone = true;
                break "client closed the connection".to_string();
            }
            Err(FrameError::Io(e)) => {
                client_gone = true;
                break format!("read error: {e}");
            }
            Err(e) => {
                broker
                    .metrics
                    .connections_closed
                    .with_label_values(&[e.metric_label()])
                    .inc();
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break e.to_string();
            }
        }
    };
    // Let the writer finish responses for everything already read, unless the
    // client is gone (nobody would read them; a pending JoinGroup could wait
    // for minutes) or will not take them.
    drop(tx);
    let limit = if shutdown.is_shutting_down() {
        SHUTDOWN_WRITE_LIMIT
    } else {
        FINAL_WRITE_LIMIT
    };
    let drained = !client_gone && tokio::time::timeout(limit, &mut writer).await.is_ok();
    if !drained {
        writer.abort();
    }

    broker.metrics.connections.dec();
    tracing::debug!(%peer, %reason, "connection closed");
}

/// Reads one frame; `None` on a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
    idle: Duration,
    admission: &Admission,
    session: &Session,
) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
        Err(_) => return Err(FrameError::Idle(idle)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(len);
    let size_usize = usize::try_from(size).map_err(|_| FrameError::Malformed(size))?;
    // After SaslHandshake v0 the client sends raw SASL tokens, which may be
    // shorter than a request header. Asked once the size has arrived: by
    // then the client has the handshake's answer, so its effect is in place.
    let min_frame = if session.expects_raw_token() {
        0
    } else {
        MIN_FRAME
    };
    if size_usize < min_frame {
        return Err(FrameError::Malformed(size));
    }
    if size_usize > max {
        return Err(FrameError::TooLarge {
            size: size_usize,
            max,
        });
    }
    // Waits while the broker holds too many unanswered request bytes.
    let request_bytes = admission.reserve_request_bytes(size_usize + 4).await;
    // The buffer grows with what arrives (read into spare capacity, never
    // zeroed): the prefix is only a claim, so it is never more than GROWTH
    // times what has arrived.
    let mut buf = BytesMut::with_capacity(size_usize.min(FIRST_CHUNK));
    while buf.len() < size_usize {
        if buf.capacity() == buf.len() {
            buf.reserve(next_capacity(buf.len(), size_usize) - buf.len());
        }
        let want = size_usize - buf.len();
        let mut limited = (&mut buf).limit(want);
        match tokio::time::timeout(idle, rd.read_buf(&mut limited)).await {
            Err(_) => return Err(FrameError::Idle(idle)),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(0)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                )
                .into())
            }
            Ok(Ok(_)) => {}
        }
    }
    Ok(Some(Frame {
        bytes: buf.freeze(),
        request_bytes,
    }))
}

/// The capacity a frame's buffer grows to once `arrived` bytes of a
/// `size`-byte frame (`arrived < size`) fill it: GROWTH times what is there
/// (at least FIRST_CHUNK), never past the frame.
fn next_capacity(arrived: usize, size: usize) -> usize {
    arrived.max(FIRST_CHUNK).saturating_mul(GROWTH).min(size)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Pending>,
    closed: oneshot::Sender<()>,
    peer: SocketAddr,
    unsent: Arc<Unsent>,
) {
    while let Some(Pending { task, permits }) = rx.recv().await {
        // The permits are released once the answer is on the wire.
        let _held = permits;
        match task.await {
            Ok(Outcome::Respond(bytes)) => {
                // TLS buffers records: flush so each answer leaves now
                // (a no-op on plain TCP).
                let len = bytes.len();
                let written = match wr.write_all_buf(&mut bytes.into_buf()).await {
                    Ok(()) => wr.flush().await,
                    Err(e) => Err(e),
                };
                unsent.bytes.fetch_sub(len, Ordering::AcqRel);
                unsent.drained.notify_one();
                if let Err(e) = written {
                    tracing::debug!(%peer, error = %e, "write failed");
                    break;
                }
            }
            Ok(Outcome::RespondThenClose(bytes)) => {
                let len = bytes.len();
                let _ = wr.write_all_buf(&mut bytes.into_buf()).await;
                let _ = wr.flush().await;
                unsent.bytes.fetch_sub(len, Ordering::AcqRel);
                unsent.drained.notify_one();
                break;
            }
            Ok(Outcome::NoResponse) => {}
            Ok(Outcome::Close) => break,
            Err(e) => {
                tracing::error!(%peer, error = %e, "request task failed; closing connection");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = closed.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_buffer_grows_with_what_arrived() {
        // A 1 MiB produce request: one growth after the first chunk.
        assert_eq!(next_capacity(FIRST_CHUNK, 1 << 20), 1 << 20);
        // A lying 100 MB prefix: the buffer stays GROWTH times what came.
        assert_eq!(next_capacity(FIRST_CHUNK, 100 << 20), GROWTH * FIRST_CHUNK);
        assert_eq!(next_capacity(2 << 20, 100 << 20), GROWTH * (2 << 20));
        // Never past the frame; always room for more than what is there.
        assert_eq!(next_capacity(10, 20), 20);
        assert_eq!(next_capacity(usize::MAX / 2, usize::MAX), usize::MAX);
        assert!(next_capacity(5 << 20, 6 << 20) > 5 << 20);
    }
}
