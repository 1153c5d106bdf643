//! Byte offsets of the v2 record batch header, and the batch-level rewrites
//! that need nothing but those offsets.

use bytes::{Bytes, BytesMut};

use super::codec::{self, Codec};
use super::RecordError;

/// Size of the v2 batch header up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: base offset (8) + the length itself (4).
pub const LOG_OVERHEAD: usize = 12;
pub const BATCH_LENGTH_AT: usize = 8;
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes field to the end.
pub const CRC_FROM: usize = 21;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;

pub fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

pub fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Recomputes the CRC of a batch whose header or records were rewritten.
pub fn reseal(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[CRC_FROM..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The uncompressed records section of a batch (everything after the header),
/// decompressed with its codec but never to more than `limit` bytes. An
/// uncompressed batch's section is shared, not copied.
pub fn records_section(batch: &Bytes, limit: usize) -> Result<Bytes, RecordError> {
    if batch.len() < HEADER_LEN {
        return Err(RecordError::corrupt(format!(
            "Record batch of {} bytes is shorter than its {HEADER_LEN}-byte header",
            batch.len()
        )));
    }
    match Codec::from_attributes(be_i16(batch, ATTRIBUTES_AT))? {
        Codec::None if batch.len() - HEADER_LEN > limit => Err(RecordError::TooLarge { limit }),
        Codec::None => Ok(batch.slice(HEADER_LEN..)),
        codec => codec::decompress(codec, &batch[HEADER_LEN..], limit),
    }
}

/// The same batch with its records stored under another codec. Records are
/// the same bytes whatever the codec, so nothing is decoded record by record:
/// the section is inflated (bounded by `limit`), deflated with `target`, and
/// the header's attributes, length and CRC follow.
pub fn recompress(batch: &Bytes, target: Codec, limit: usize) -> Result<Bytes, RecordError> {
    let raw = records_section(batch, limit)?;
    with_section(batch, &raw, target)
}

/// `batch`'s header over `raw` (its uncompressed records section, already
/// inflated by the caller) stored under `target`.
pub fn with_section(batch: &[u8], raw: &[u8], target: Codec) -> Result<Bytes, RecordError> {
    if batch.len() < HEADER_LEN {
        return Err(RecordError::corrupt("record batch shorter than its header"));
    }
    let packed = codec::compress(target, raw)?;
    let body = HEADER_LEN - LOG_OVERHEAD + packed.len();
    let body = i32::try_from(body)
        .map_err(|_| RecordError::Compress(format!("batch of {body} bytes is too large")))?;
    let mut b = BytesMut::with_capacity(HEADER_LEN + packed.len());
    b.extend_from_slice(&batch[..HEADER_LEN]);
    b.extend_from_slice(&packed);
    b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&body.to_be_bytes());
    let attributes = (be_i16(&b, ATTRIBUTES_AT) & !0x07) | target.id();
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    reseal(&mut b);
    Ok(b.freeze())
}
