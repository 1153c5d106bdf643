//! A request frame body as the broker decodes it: header, then the body of
//! any API at any version the protocol crate knows (a superset of what the
//! broker advertises). Decoding may fail; it must never panic, hang or
//! allocate beyond the input.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let keys: Vec<ApiKey> = ApiKey::iter().collect();
    let api = keys[data[0] as usize % keys.len()];
    let range = api.valid_versions();
    let span = (range.max - range.min + 1) as usize;
    let version = range.min + (data[1] as usize % span) as i16;
    let mut body = Bytes::copy_from_slice(&data[2..]);
    let _ = RequestHeader::decode(&mut body, api.request_header_version(version));
    let mut body = Bytes::copy_from_slice(&data[2..]);
    let _ = RequestKind::decode(api, &mut body, version);
});
