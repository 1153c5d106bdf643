//! One client connection: reads length-prefixed frames, runs each request in
//! its own task, and writes responses back strictly in request order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::shutdown::ShutdownListener;
use crate::broker::Broker;
use crate::dispatch::{self, Outcome, Turn};

/// Requests being processed on one connection before reading pauses.
const MAX_IN_FLIGHT: usize = 64;
/// Smallest valid request: api key, api version, correlation id.
const MIN_FRAME: usize = 8;
/// Kafka's `connections.max.idle.ms` default.
const IDLE_LIMIT: Duration = Duration::from_secs(600);

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

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: ShutdownListener,
) {
    broker.metrics.connections.inc();
    tracing::debug!(%peer, "connection opened");
    let max = broker.config.socket_request_max_bytes;
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<JoinHandle<Outcome>>(MAX_IN_FLIGHT);
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(write_loop(wr, rx, closed_tx, peer));

    let mut previous_turn = None;
    let reason = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, max) => f,
            _ = shutdown.wait() => break "broker shutting down".to_string(),
            _ = &mut closed_rx => break "closed after an invalid request".to_string(),
        };
        match frame {
            Ok(Some(frame)) => {
                let b = broker.clone();
                let (turn, next) = Turn::after(previous_turn.take());
                previous_turn = Some(next);
                let task =
                    tokio::spawn(async move { dispatch::handle(&b, frame, peer, turn).await });
                if tx.send(task).await.is_err() {
                    break "response writer stopped".to_string();
                }
            }
            Ok(None) => break "client closed the connection".to_string(),
            Err(FrameError::Io(e)) => break format!("read error: {e}"),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break e.to_string();
            }
        }
    };
    // Let the writer finish responses for everything already read.
    drop(tx);
    let _ = writer.await;
    broker.metrics.connections.dec();
    tracing::debug!(%peer, %reason, "connection closed");
}

/// Reads one frame; `None` on a clean end of stream between frames.
async fn read_frame(rd: &mut OwnedReadHalf, max: usize) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(IDLE_LIMIT, rd.read_exact(&mut len)).await {
        Err(_) => return Err(FrameError::Idle(IDLE_LIMIT)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(len);
    let size_usize = usize::try_from(size).map_err(|_| FrameError::Malformed(size))?;
    if size_usize < MIN_FRAME {
        return Err(FrameError::Malformed(size));
    }
    // Checked before allocating, so a lying prefix costs nothing.
    if size_usize > max {
        return Err(FrameError::TooLarge {
            size: size_usize,
            max,
        });
    }
    // Read straight into spare capacity: zeroing a large produce frame first
    // would cost a pass over every byte for nothing.
    let mut buf = BytesMut::with_capacity(size_usize);
    while buf.len() < size_usize {
        let want = size_usize - buf.len();
        let mut limited = (&mut buf).limit(want);
        match tokio::time::timeout(IDLE_LIMIT, rd.read_buf(&mut limited)).await {
            Err(_) => return Err(FrameError::Idle(IDLE_LIMIT)),
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
    Ok(Some(buf.freeze()))
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<JoinHandle<Outcome>>,
    closed: oneshot::Sender<()>,
    peer: SocketAddr,
) {
    while let Some(task) = rx.recv().await {
        match task.await {
            Ok(Outcome::Respond(bytes)) => {
                if let Err(e) = wr.write_all(&bytes).await {
                    tracing::debug!(%peer, error = %e, "write failed");
                    break;
                }
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
