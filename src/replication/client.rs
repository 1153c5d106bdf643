//! The broker as a client of another broker: one connection, one request at
//! a time, framed as every Kafka client frames them. Followers use it to
//! fetch from leaders. Answers are read with the same bound a server applies
//! to requests, so a confused or hostile peer cannot make this broker
//! allocate without limit.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::security::{authenticate, InterBroker};

/// A plain or TLS connection.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Largest answer accepted from a leader (a fetch answer is bounded by
/// `replica.fetch.max.bytes` per partition; this is the sanity bound).
const MAX_ANSWER: usize = 256 << 20;

pub struct BrokerConn {
    stream: Box<dyn Stream>,
    correlation: i32,
    client_id: StrBytes,
}

pub type ClientResult<T> = Result<T, String>;

impl BrokerConn {
    /// Connects (TLS and SASL as the inter-broker listener asks).
    pub async fn connect(
        host: &str,
        port: u16,
        node_id: i32,
        security: &InterBroker,
    ) -> ClientResult<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match &security.tls {
            None => Box::new(stream),
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
                let tls = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, stream),
                )
                .await
                .map_err(|_| format!("TLS handshake with {host}:{port} timed out"))?
                .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
                Box::new(tls)
            }
        };
        let mut conn = BrokerConn {
            stream,
            correlation: 0,
            client_id: StrBytes::from_string(format!("runnel-replica-{node_id}")),
        };
        if let Some(login) = &security.sasl {
            authenticate(&mut conn, login).await?;
        }
        Ok(conn)
    }

    /// Sends one request and reads its answer, within `timeout`.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> ClientResult<Resp> {
        tokio::time::timeout(timeout, self.exchange(api, version, req))
            .await
            .map_err(|_| format!("{api:?} timed out"))?
    }

    async fn exchange<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> ClientResult<Resp> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .map_err(|e| format!("encoding {api:?}: {e}"))?;
        req.encode(&mut body, version)
            .map_err(|e| format!("encoding {api:?}: {e}"))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(u32::try_from(body.len()).map_err(|_| "request too large".to_string())?);
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("sending {api:?}: {e}"))?;
        let len = self
            .stream
            .read_u32()
            .await
            .map_err(|e| format!("reading the {api:?} answer: {e}"))? as usize;
        if len > MAX_ANSWER {
            return Err(format!("{api:?} answer of {len} bytes is over the bound"));
        }
        // Read into spare capacity: zeroing a fetch answer's megabytes first
        // would cost as much as receiving them.
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let want = len - buf.len();
            let mut rest = (&mut buf).limit(want);
            let n = self
                .stream
                .read_buf(&mut rest)
                .await
                .map_err(|e| format!("reading the {api:?} answer: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed inside the {api:?} answer"));
            }
        }
        let mut buf = buf.freeze();
        let rh = ResponseHeader::decode(&mut buf, api.response_header_version(version))
            .map_err(|e| format!("decoding the {api:?} answer header: {e}"))?;
        if rh.correlation_id != self.correlation {
            return Err(format!(
                "{api:?} answer for correlation id {} while waiting for {}",
                rh.correlation_id, self.correlation
            ));
        }
        let resp = Resp::decode(&mut buf, version)
            .map_err(|e| format!("decoding the {api:?} answer: {e}"))?;
        if buf.has_remaining() {
            tracing::debug!(api = ?api, left = buf.remaining(), "trailing bytes in an answer");
        }
        Ok(resp)
    }
}
