//! ApiVersions (18): the versions we implement, with the v0 fallback for
//! clients that ask with a version we do not know.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::Encodable;

use super::SUPPORTED;
use crate::dispatch::RequestContext;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub async fn handle(ctx: &RequestContext, req: ApiVersionsRequest) -> ApiVersionsResponse {
    tracing::debug!(
        peer = %ctx.peer,
        client = %req.client_software_name.as_str(),
        client_version = %req.client_software_version.as_str(),
        "ApiVersions"
    );
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_keys())
}

/// The v0-layout answer with UNSUPPORTED_VERSION that tells a client which
/// versions to retry with. Its header is always v0 (correlation id only).
pub fn unsupported_version(correlation_id: i32) -> Bytes {
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if resp.encode(&mut buf, 0).is_err() {
        // v0 has only plain fields; encoding cannot fail, but never panic on it.
        buf.truncate(8);
        buf.put_i16(ResponseError::UnsupportedVersion.code());
        buf.put_i32(0);
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn fallback_is_v0_layout() {
        let mut b = unsupported_version(77);
        let _size = bytes::Buf::get_i32(&mut b);
        assert_eq!(bytes::Buf::get_i32(&mut b), 77);
        let resp = ApiVersionsResponse::decode(&mut b, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert!(resp
            .api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version == 4));
    }
}
