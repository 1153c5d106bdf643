//! The Kafka record batch format (magic v2) as bytes: header layout, codecs
//! with bounded output, and a record walker that never allocates per record.
//!
//! Nothing here trusts a length it reads: record counts, varint lengths and
//! decompressed sizes are all checked against the bytes actually present (or
//! a caller's limit) before anything is reserved. The module depends on no
//! other part of the broker, so the fuzz targets in `fuzz/` compile it alone.

pub mod codec;
pub mod layout;
pub mod walk;

pub use codec::Codec;

/// Why a batch's records could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a well-formed batch or record (Kafka: CORRUPT_MESSAGE).
    #[error("{0}")]
    Corrupt(String),
    /// Decompressing would exceed the limit: a compression bomb, or a batch
    /// larger than the broker accepts once inflated (Kafka: INVALID_RECORD).
    #[error("Record batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The codec failed to compress (should not happen with valid input).
    #[error("Cannot compress record batch: {0}")]
    Compress(String),
}

impl RecordError {
    fn corrupt(msg: impl Into<String>) -> Self {
        RecordError::Corrupt(msg.into())
    }
}
