//! Record batch (magic v2) framing: validating what producers send and the few
//! header fields the broker rewrites. Records themselves are never decoded here.

use bytes::{Bytes, BytesMut};

use crate::error::BrokerError;

/// Size of the v2 batch header up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: base offset (8) + the length itself (4).
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes field to the end.
const CRC_FROM: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
const ATTRIBUTES_AT: usize = 21;
const PARTITION_LEADER_EPOCH_AT: usize = 12;

/// The header fields the broker looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// -1 unless the producer is idempotent or transactional.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence number of the first record; -1 without a producer id.
    pub base_sequence: i32,
    pub records_count: i32,
    pub attributes: i16,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// True if the batch carries a producer id (idempotent or transactional).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// True for transaction markers and other control batches.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

/// Reads the header of a batch already known to be at least `HEADER_LEN` long.
pub fn read_header(b: &[u8]) -> Option<BatchHeader> {
    if b.len() < HEADER_LEN {
        return None;
    }
    Some(BatchHeader {
        base_offset: be_i64(b, 0),
        last_offset_delta: be_i32(b, LAST_OFFSET_DELTA_AT),
        base_timestamp: be_i64(b, BASE_TIMESTAMP_AT),
        max_timestamp: be_i64(b, MAX_TIMESTAMP_AT),
        producer_id: be_i64(b, PRODUCER_ID_AT),
        producer_epoch: i16::from_be_bytes([b[PRODUCER_EPOCH_AT], b[PRODUCER_EPOCH_AT + 1]]),
        base_sequence: be_i32(b, BASE_SEQUENCE_AT),
        records_count: be_i32(b, RECORDS_COUNT_AT),
        attributes: i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]),
    })
}

/// A batch from a producer that passed validation.
#[derive(Debug, Clone)]
pub struct ValidBatch {
    pub bytes: Bytes,
    pub header: BatchHeader,
}

/// Splits a produce request's `records` into batches and validates each:
/// framing, magic 2, CRC, record count, size limit.
pub fn split_and_validate(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<Vec<ValidBatch>, BrokerError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    if records.is_empty() {
        return Err(BrokerError::InvalidRecord(
            "Produce request contains no record batch".into(),
        ));
    }
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < HEADER_LEN {
            return Err(BrokerError::CorruptMessage(format!(
                "Record batch truncated: {} bytes left, a header needs {HEADER_LEN}",
                rest.len()
            )));
        }
        let batch_length = be_i32(rest, 8);
        let total = usize::try_from(batch_length)
            .ok()
            .and_then(|l| l.checked_add(LOG_OVERHEAD))
            .filter(|&t| t >= HEADER_LEN)
            .ok_or_else(|| {
                BrokerError::CorruptMessage(format!("Invalid batch length {batch_length}"))
            })?;
        if total > rest.len() {
            return Err(BrokerError::CorruptMessage(format!(
                "Record batch length {total} exceeds the {} bytes sent",
                rest.len()
            )));
        }
        let bytes = &rest[..total];
        let magic = bytes[MAGIC_AT];
        if magic != 2 {
            return Err(BrokerError::CorruptMessage(format!(
                "Unsupported record batch magic {magic}; Produce v3+ requires magic 2"
            )));
        }
        let expected = u32::from_be_bytes([
            bytes[CRC_AT],
            bytes[CRC_AT + 1],
            bytes[CRC_AT + 2],
            bytes[CRC_AT + 3],
        ]);
        let actual = crc32c::crc32c(&bytes[CRC_FROM..]);
        if expected != actual {
            return Err(BrokerError::CorruptMessage(format!(
                "Record batch CRC mismatch: stored {expected:#010x}, computed {actual:#010x}"
            )));
        }
        let header = read_header(bytes)
            .ok_or_else(|| BrokerError::CorruptMessage("Record batch header truncated".into()))?;
        if header.records_count <= 0 || header.last_offset_delta < 0 {
            return Err(BrokerError::InvalidRecord(format!(
                "Record batch has {} records and last offset delta {}",
                header.records_count, header.last_offset_delta
            )));
        }
        if header.has_producer_id() && header.base_sequence < 0 {
            return Err(BrokerError::InvalidRecord(format!(
                "Invalid sequence number {} in record batch with producerId {}",
                header.base_sequence, header.producer_id
            )));
        }
        if total > max_batch_bytes {
            return Err(BrokerError::MessageTooLarge(format!(
                "The record batch is {total} bytes, larger than the maximum allowed {max_batch_bytes}"
            )));
        }
        out.push(ValidBatch {
            bytes: records.slice(pos..pos + total),
            header,
        });
        pos += total;
    }
    Ok(out)
}

/// Compacted topics need a key on every record; this decodes the batch (and
/// decompresses it), so it is only used for those topics.
pub fn require_keys(batch: &Bytes) -> Result<(), BrokerError> {
    let mut b = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b)
        .map_err(|e| BrokerError::CorruptMessage(format!("Cannot decode record batch: {e}")))?;
    if set.records.iter().any(|r| r.key.is_none() && !r.control) {
        return Err(BrokerError::InvalidRecord(
            "Compacted topic cannot accept message without key".into(),
        ));
    }
    Ok(())
}

/// Encodes records as one v2 batch (or several, where the records' producer
/// fields or sequences differ) with the given codec.
pub fn encode_records(
    records: &[kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut out,
        records,
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

/// The same batch with no records: its base offset and last offset delta
/// (so the offsets it spanned), producer fields and timestamps kept, no codec.
pub fn empty_batch(batch: &[u8]) -> Result<Bytes, String> {
    if batch.len() < HEADER_LEN {
        return Err("batch shorter than its header".into());
    }
    let mut b = BytesMut::from(&batch[..HEADER_LEN]);
    let body_len = (HEADER_LEN - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&body_len.to_be_bytes());
    let attributes = i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]) & !0x07;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    b[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_FROM..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

/// The batch with its last offset moved to `last_offset` (never before its
/// last record), CRC recomputed. Compaction keeps each rewritten batch
/// spanning the offsets the original did, as Kafka does, so a consumer
/// always advances past removed records, also at the end of the log.
pub fn with_last_offset(batch: &[u8], last_offset: i64) -> Result<Bytes, String> {
    let h = read_header(batch).ok_or("batch shorter than its header")?;
    let delta = i32::try_from(last_offset - h.base_offset).map_err(|_| "offset span too large")?;
    if delta < h.last_offset_delta {
        return Err("cannot move the last offset before the last record".into());
    }
    let mut b = BytesMut::from(batch);
    b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&delta.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_FROM..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

/// The codec bits of the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub fn codec_of(header: &BatchHeader) -> i16 {
    header.attributes & 0x07
}

/// Re-encodes a batch with another codec (topic `compression.type`),
/// keeping offsets, timestamps, keys, values, headers and producer fields.
pub fn recompress(
    v: &ValidBatch,
    target: kafka_protocol::records::Compression,
) -> Result<ValidBatch, BrokerError> {
    if codec_of(&v.header) == target as i16 {
        return Ok(v.clone());
    }
    let mut b = v.bytes.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b)
        .map_err(|e| BrokerError::CorruptMessage(format!("Cannot decode record batch: {e}")))?;
    let bytes = encode_records(&set.records, target)
        .map_err(|e| BrokerError::InvalidRecord(format!("Cannot re-encode record batch: {e}")))?;
    let header = read_header(&bytes)
        .ok_or_else(|| BrokerError::InvalidRecord("re-encoded batch is empty".into()))?;
    Ok(ValidBatch { bytes, header })
}

/// Marks a batch LogAppendTime with the broker's clock: the timestamp-type
/// attribute bit and the max timestamp change, so the CRC is recomputed.
pub fn stamp_log_append_time(v: &ValidBatch, now_ms: i64) -> ValidBatch {
    let mut b = BytesMut::from(&v.bytes[..]);
    let attributes = v.header.attributes | 0x08;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_FROM..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    let mut header = v.header;
    header.attributes = attributes;
    header.max_timestamp = now_ms;
    ValidBatch {
        bytes: b.freeze(),
        header,
    }
}

/// Copies a batch with the base offset and leader epoch the log assigns.
/// Neither field is covered by the CRC, so the producer's CRC stays valid.
pub fn with_base_offset(batch: &[u8], base_offset: i64) -> Bytes {
    let mut b = BytesMut::from(batch);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&0i32.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, TimestampType};

    /// Builds a real v2 batch with `n` records using the protocol crate's encoder.
    pub fn make_batch(n: usize, base_ts: i64, compression: Compression) -> Bytes {
        make_producer_batch(n, base_ts, compression, -1, -1, 0)
    }

    /// A batch from producer `pid` (epoch `epoch`) whose first sequence is `seq`.
    pub fn make_producer_batch(
        n: usize,
        base_ts: i64,
        compression: Compression,
        pid: i64,
        epoch: i16,
        seq: i32,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: seq.wrapping_add(i as i32),
                timestamp: base_ts + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        encode_records(&records, compression).expect("encode test batch")
    }

    #[test]
    fn accepts_valid_batches_and_reads_header() {
        let b = make_batch(5, 1000, Compression::None);
        let v = split_and_validate(&b, 1 << 20).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].header.records_count, 5);
        assert_eq!(v[0].header.last_offset_delta, 4);
        assert_eq!(v[0].header.max_timestamp, 1004);
    }

    #[test]
    fn reads_producer_fields() {
        let b = make_producer_batch(3, 0, Compression::None, 42, 7, 100);
        let v = split_and_validate(&b, 1 << 20).unwrap();
        assert_eq!(v[0].header.producer_id, 42);
        assert_eq!(v[0].header.producer_epoch, 7);
        assert_eq!(v[0].header.base_sequence, 100);
        assert!(v[0].header.has_producer_id());
        let plain = split_and_validate(&make_batch(1, 0, Compression::None), 1 << 20).unwrap();
        assert!(!plain[0].header.has_producer_id());
    }

    #[test]
    fn accepts_two_concatenated_batches() {
        let mut both = BytesMut::new();
        both.extend_from_slice(&make_batch(2, 0, Compression::None));
        both.extend_from_slice(&make_batch(3, 0, Compression::Gzip));
        let v = split_and_validate(&both.freeze(), 1 << 20).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].header.records_count, 3);
    }

    #[test]
    fn rejects_bad_crc_truncation_and_size() {
        let b = make_batch(3, 0, Compression::None);
        let mut bad = BytesMut::from(&b[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            split_and_validate(&bad.freeze(), 1 << 20),
            Err(BrokerError::CorruptMessage(_))
        ));
        assert!(matches!(
            split_and_validate(&b.slice(..b.len() - 1), 1 << 20),
            Err(BrokerError::CorruptMessage(_))
        ));
        assert!(matches!(
            split_and_validate(&b, 10),
            Err(BrokerError::MessageTooLarge(_))
        ));
        assert!(split_and_validate(&Bytes::from_static(&[0u8; 5]), 1 << 20).is_err());
    }

    #[test]
    fn recompression_and_append_time_keep_batches_valid() {
        let b = make_batch(4, 500, Compression::Gzip);
        let v = split_and_validate(&b, 1 << 20).unwrap().remove(0);
        let z = recompress(&v, Compression::Zstd).unwrap();
        assert_eq!(codec_of(&z.header), Compression::Zstd as i16);
        let again = split_and_validate(&z.bytes, 1 << 20).unwrap();
        assert_eq!(again[0].header.records_count, 4);
        let stamped = stamp_log_append_time(&z, 99_999);
        let checked = split_and_validate(&stamped.bytes, 1 << 20).unwrap();
        assert_eq!(checked[0].header.max_timestamp, 99_999);
        assert_eq!(checked[0].header.attributes & 0x08, 0x08);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc() {
        let b = make_batch(3, 0, Compression::None);
        let moved = with_base_offset(&b, 12345);
        let v = split_and_validate(&moved, 1 << 20).unwrap();
        assert_eq!(v[0].header.base_offset, 12345);
        assert_eq!(v[0].header.last_offset(), 12347);
    }
}
