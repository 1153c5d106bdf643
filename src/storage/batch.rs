//! Record batch (magic v2) framing: validating what producers send and the few
//! header fields the broker rewrites. Records themselves are never decoded here.

use bytes::{Bytes, BytesMut};

use crate::error::BrokerError;

use crate::records::layout::{
    be_i32, be_i64, reseal, ATTRIBUTES_AT, BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, CRC_AT, CRC_FROM,
    LAST_OFFSET_DELTA_AT, MAGIC_AT, MAX_TIMESTAMP_AT, PARTITION_LEADER_EPOCH_AT, PRODUCER_EPOCH_AT,
    PRODUCER_ID_AT, RECORDS_COUNT_AT,
};
pub use crate::records::layout::{HEADER_LEN, LOG_OVERHEAD};
use crate::records::{layout, walk, Codec, RecordError};

/// The most a batch may inflate to when the broker has to look inside it
/// (key checks, timestamps, recompression, compaction), unless the topic's
/// `max.message.bytes` is larger: a bound on what a compression bomb costs.
pub const MIN_DECOMPRESSED_LIMIT: usize = 32 << 20;

/// How far a batch of a topic with `max.message.bytes = max_batch` may inflate.
pub fn decompressed_limit(max_batch: usize) -> usize {
    max_batch.max(MIN_DECOMPRESSED_LIMIT)
}

impl From<RecordError> for BrokerError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Corrupt(m) => BrokerError::CorruptMessage(m),
            RecordError::TooLarge { .. } | RecordError::Compress(_) => {
                BrokerError::InvalidRecord(e.to_string())
            }
        }
    }
}

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
        producer_epoch: layout::be_i16(b, PRODUCER_EPOCH_AT),
        base_sequence: be_i32(b, BASE_SEQUENCE_AT),
        records_count: be_i32(b, RECORDS_COUNT_AT),
        attributes: layout::be_i16(b, ATTRIBUTES_AT),
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
        // Markers carry no sequence; clients may not send them (Produce
        // refuses control batches), but leaders replicate them.
        if header.has_producer_id() && header.base_sequence < 0 && !header.is_control() {
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

/// What record-level checks a topic asks of incoming batches.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules {
    /// Compacted topic: every (non-control) record needs a key.
    pub require_keys: bool,
    /// CreateTime bounds from `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms`, as (earliest, latest) allowed.
    pub timestamps: Option<(i64, i64)>,
    /// Cap on the inflated records section.
    pub decompressed_limit: usize,
}

/// Record-level validation, as Kafka's log validator does it: every record of
/// the batch is walked (inflated under the cap when compressed), its framing
/// checked, and its offset delta must be its position, so a batch can never
/// claim more offsets or records than it holds. Keys (compacted topics) and
/// CreateTime bounds are checked on the way, and each bad record is named by
/// its index (KIP-467), so a client fails those records and retries the rest.
///
/// Returns the uncompressed records section, for recompression to reuse.
pub fn check_records(v: &ValidBatch, rules: &RecordRules) -> Result<Bytes, BrokerError> {
    let h = &v.header;
    if i64::from(h.last_offset_delta) + 1 != i64::from(h.records_count) {
        return Err(BrokerError::CorruptMessage(format!(
            "Record batch declares {} records but a last offset delta of {}",
            h.records_count, h.last_offset_delta
        )));
    }
    let section = layout::records_section(&v.bytes, rules.decompressed_limit)?;
    let mut errors = Vec::new();
    let mut bad_timestamp = false;
    for r in walk::records(&section, h.records_count) {
        let r = r?;
        if usize::try_from(r.offset_delta).ok() != Some(r.index) {
            return Err(BrokerError::CorruptMessage(format!(
                "Record {} of the batch has offset delta {}",
                r.index, r.offset_delta
            )));
        }
        if rules.require_keys && r.key.is_none() {
            errors.push((
                r.index as i32,
                "Compacted topic cannot accept message without key".to_string(),
            ));
            continue;
        }
        if let Some((lo, hi)) = rules.timestamps {
            let ts = h.base_timestamp.saturating_add(r.timestamp_delta);
            if ts < lo || ts > hi {
                bad_timestamp = true;
                errors.push((
                    r.index as i32,
                    format!(
                        "Timestamp {ts} of message with offset {} is out of range: \
                         it must be within [{lo}, {hi}]",
                        h.base_offset + i64::from(r.offset_delta)
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        return Ok(section);
    }
    Err(BrokerError::RecordErrors {
        timestamp: bad_timestamp,
        message: format!(
            "One or more records have been rejected due to {} record errors in total: {}",
            errors.len(),
            errors
                .iter()
                .take(3)
                .map(|(i, m)| format!("[index {i}: {m}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        records: errors,
    })
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
    reseal(&mut b);
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
    reseal(&mut b);
    Ok(b.freeze())
}

/// The codec bits of the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub fn codec_of(header: &BatchHeader) -> i16 {
    header.attributes & 0x07
}

/// Re-encodes a batch with another codec (topic `compression.type`),
/// keeping offsets, timestamps, keys, values, headers and producer fields:
/// the records section is the same bytes under any codec. `section` is the
/// batch's uncompressed records section (from `check_records`).
pub fn recompress(
    v: &ValidBatch,
    section: &[u8],
    target: Codec,
) -> Result<ValidBatch, BrokerError> {
    if codec_of(&v.header) == target.id() {
        return Ok(v.clone());
    }
    let bytes = layout::with_section(&v.bytes, section, target)?;
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
    reseal(&mut b);
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
pub fn with_base_offset(batch: &[u8], base_offset: i64, leader_epoch: i32) -> Bytes {
    let mut b = BytesMut::from(batch);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    b.freeze()
}

/// The leader epoch a stored batch was appended in.
pub fn leader_epoch_of(batch: &[u8]) -> i32 {
    if batch.len() < PARTITION_LEADER_EPOCH_AT + 4 {
        return -1;
    }
    be_i32(batch, PARTITION_LEADER_EPOCH_AT)
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
        let section = layout::records_section(&v.bytes, 1 << 20).unwrap();
        let z = recompress(&v, &section, Codec::Zstd).unwrap();
        assert_eq!(codec_of(&z.header), Compression::Zstd as i16);
        let again = split_and_validate(&z.bytes, 1 << 20).unwrap();
        assert_eq!(again[0].header.records_count, 4);
        let stamped = stamp_log_append_time(&z, 99_999);
        let checked = split_and_validate(&stamped.bytes, 1 << 20).unwrap();
        assert_eq!(checked[0].header.max_timestamp, 99_999);
        assert_eq!(checked[0].header.attributes & 0x08, 0x08);
    }

    /// A record of a non-idempotent producer at position `i` of its batch
    /// (sequence = offset keeps the encoder to one batch).
    pub fn plain_record(i: usize, key: Option<Bytes>, value: Option<Bytes>, ts: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts,
            key,
            value,
            headers: Default::default(),
        }
    }

    fn batch_with(keys: impl Fn(usize) -> bool, ts: impl Fn(usize) -> i64, n: usize) -> ValidBatch {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let key = keys(i).then(|| Bytes::from(format!("k{i}")));
                plain_record(i, key, Some(Bytes::from(format!("v{i}"))), ts(i))
            })
            .collect();
        let b = encode_records(&records, Compression::Zstd).unwrap();
        split_and_validate(&b, 1 << 20).unwrap().remove(0)
    }

    #[test]
    fn record_errors_name_each_bad_record() {
        let rules = RecordRules {
            require_keys: true,
            timestamps: None,
            decompressed_limit: 1 << 20,
        };
        let v = batch_with(|i| i % 10 != 0, |_| 1000, 100);
        match check_records(&v, &rules) {
            Err(e @ BrokerError::RecordErrors { .. }) => {
                assert_eq!(e.code(), 87);
                let BrokerError::RecordErrors { records, .. } = e else {
                    unreachable!()
                };
                let idx: Vec<i32> = records.iter().map(|(i, _)| *i).collect();
                assert_eq!(idx, (0..100).step_by(10).collect::<Vec<i32>>());
            }
            other => panic!("expected record errors, got {other:?}"),
        }
        let fine = batch_with(|_| true, |_| 1000, 10);
        assert!(check_records(&fine, &rules).is_ok());
    }

    #[test]
    fn out_of_range_timestamps_are_invalid_timestamp() {
        let rules = RecordRules {
            require_keys: false,
            timestamps: Some((0, 10_000)),
            decompressed_limit: 1 << 20,
        };
        let v = batch_with(|_| true, |i| if i == 3 { 50_000 } else { 5_000 }, 5);
        let e = check_records(&v, &rules).unwrap_err();
        assert_eq!(e.code(), 32);
        let BrokerError::RecordErrors { records, .. } = e else {
            panic!()
        };
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, 3);
        let ok = batch_with(|_| true, |_| 5_000, 5);
        assert!(check_records(&ok, &rules).is_ok());
    }

    #[test]
    fn a_bomb_is_refused_by_the_cap() {
        let records = vec![plain_record(
            0,
            None,
            Some(Bytes::from(vec![0u8; 8 << 20])),
            0,
        )];
        let b = encode_records(&records, Compression::Zstd).unwrap();
        assert!(b.len() < 4096, "bomb should be small: {}", b.len());
        let v = split_and_validate(&b, 1 << 20).unwrap().remove(0);
        let rules = RecordRules {
            require_keys: true,
            timestamps: None,
            decompressed_limit: 1 << 20,
        };
        assert_eq!(check_records(&v, &rules).unwrap_err().code(), 87);
        let refused = layout::recompress(&v.bytes, Codec::Lz4, 1 << 20).unwrap_err();
        assert_eq!(BrokerError::from(refused).code(), 87);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc() {
        let b = make_batch(3, 0, Compression::None);
        let moved = with_base_offset(&b, 12345, 0);
        let v = split_and_validate(&moved, 1 << 20).unwrap();
        assert_eq!(v[0].header.base_offset, 12345);
        assert_eq!(v[0].header.last_offset(), 12347);
    }
}
