//! Record batch codecs with a hard cap on what decompression may produce.
//!
//! A few kilobytes of gzip or zstd can inflate to gigabytes, so every
//! decompressor here reads through a limit and fails as soon as the output
//! would pass it, having allocated at most about the limit. zstd frames also
//! declare their window size; a window larger than `ZSTD_WINDOW_LOG_MAX`
//! is refused rather than allocated.

use std::io::Read;

use bytes::{BufMut, Bytes, BytesMut};

use super::RecordError;

/// zstd windows up to 16 MiB: what producers use for batches (the window never
/// exceeds the input it was made for), far below what a hostile frame can ask.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// snappy-java's stream format (xerial), which the Java client writes.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block when we compress (snappy-java's default).
const XERIAL_BLOCK: usize = 32 * 1024;
/// Largest up-front reservation; the output grows past it only as data arrives.
const INITIAL_RESERVE: usize = 256 * 1024;

/// The codec bits (0..=2) of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Codec, RecordError> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(RecordError::corrupt(format!(
                "Unknown compression codec {other} in record batch attributes"
            ))),
        }
    }

    /// The attributes bits for this codec.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// Kafka's `compression.type` name.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "uncompressed" | "none" => Some(Codec::None),
            "gzip" => Some(Codec::Gzip),
            "snappy" => Some(Codec::Snappy),
            "lz4" => Some(Codec::Lz4),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Inflates `input`, failing with `TooLarge` once the output would exceed `limit`.
pub fn decompress(codec: Codec, input: &[u8], limit: usize) -> Result<Bytes, RecordError> {
    let corrupt = |what: &str, e: std::io::Error| {
        RecordError::corrupt(format!("Cannot decompress {what} record batch: {e}"))
    };
    match codec {
        Codec::None => {
            if input.len() > limit {
                return Err(RecordError::TooLarge { limit });
            }
            Ok(Bytes::copy_from_slice(input))
        }
        Codec::Gzip => read_bounded(flate2::read::GzDecoder::new(input), input.len(), limit)
            .map_err(|e| e.or_corrupt(|e| corrupt("gzip", e))),
        Codec::Lz4 => {
            let decoder = lz4::Decoder::new(input).map_err(|e| corrupt("lz4", e))?;
            read_bounded(decoder, input.len(), limit)
                .map_err(|e| e.or_corrupt(|e| corrupt("lz4", e)))
        }
        Codec::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| corrupt("zstd", e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt("zstd", e))?;
            read_bounded(decoder, input.len(), limit)
                .map_err(|e| e.or_corrupt(|e| corrupt("zstd", e)))
        }
        Codec::Snappy => snappy_decompress(input, limit),
    }
}

/// Deflates `input` with `codec` at the codec's default level.
pub fn compress(codec: Codec, input: &[u8]) -> Result<Bytes, RecordError> {
    use std::io::Write;
    let failed = |e: std::io::Error| RecordError::Compress(e.to_string());
    match codec {
        Codec::None => Ok(Bytes::copy_from_slice(input)),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                BytesMut::new().writer(),
                flate2::Compression::default(),
            );
            e.write_all(input).map_err(failed)?;
            Ok(e.finish().map_err(failed)?.into_inner().freeze())
        }
        Codec::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(4)
                .block_mode(lz4::BlockMode::Independent)
                .build(BytesMut::new().writer())
                .map_err(failed)?;
            e.write_all(input).map_err(failed)?;
            let (w, r) = e.finish();
            r.map_err(failed)?;
            Ok(w.into_inner().freeze())
        }
        Codec::Zstd => zstd::bulk::compress(input, 3)
            .map(Bytes::from)
            .map_err(failed),
        Codec::Snappy => {
            let mut out = BytesMut::with_capacity(input.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.put_i32(1); // stream version
            out.put_i32(1); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let packed = enc
                    .compress_vec(block)
                    .map_err(|e| RecordError::Compress(e.to_string()))?;
                let len = u32::try_from(packed.len())
                    .map_err(|_| RecordError::Compress("snappy block too large".into()))?;
                out.put_u32(len);
                out.extend_from_slice(&packed);
            }
            Ok(out.freeze())
        }
    }
}

enum BoundedReadError {
    TooLarge(usize),
    Io(std::io::Error),
}

impl BoundedReadError {
    fn or_corrupt(self, f: impl FnOnce(std::io::Error) -> RecordError) -> RecordError {
        match self {
            BoundedReadError::TooLarge(limit) => RecordError::TooLarge { limit },
            BoundedReadError::Io(e) => f(e),
        }
    }
}

/// Reads a decoder to its end, but never more than `limit` bytes.
fn read_bounded(
    reader: impl Read,
    input_len: usize,
    limit: usize,
) -> Result<Bytes, BoundedReadError> {
    let cap = limit.saturating_add(1);
    let mut out = Vec::with_capacity(
        input_len
            .saturating_mul(4)
            .clamp(64, INITIAL_RESERVE)
            .min(cap),
    );
    reader
        .take(cap as u64)
        .read_to_end(&mut out)
        .map_err(BoundedReadError::Io)?;
    if out.len() > limit {
        return Err(BoundedReadError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// Raw snappy (librdkafka) or snappy-java's framed stream (the Java client).
/// Each block states its uncompressed length up front; it is checked against
/// what the limit still allows before the block is inflated.
fn snappy_decompress(input: &[u8], limit: usize) -> Result<Bytes, RecordError> {
    let corrupt = |e: snap::Error| {
        RecordError::corrupt(format!("Cannot decompress snappy record batch: {e}"))
    };
    let mut out = BytesMut::new();
    let block = |packed: &[u8], out: &mut BytesMut| -> Result<(), RecordError> {
        let n = snap::raw::decompress_len(packed).map_err(corrupt)?;
        if n > limit.saturating_sub(out.len()) {
            return Err(RecordError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + n, 0);
        let written = snap::raw::Decoder::new()
            .decompress(packed, &mut out[start..])
            .map_err(corrupt)?;
        out.truncate(start + written);
        Ok(())
    };
    if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
        let mut rest = &input[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(RecordError::corrupt("snappy block length truncated"));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let packed = rest
                .get(4..4usize.saturating_add(len))
                .ok_or_else(|| RecordError::corrupt("snappy block longer than the batch"))?;
            block(packed, &mut out)?;
            rest = &rest[4 + len..];
        }
    } else {
        block(input, &mut out)?;
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let packed = compress(c, &data).unwrap();
            let back = decompress(c, &packed, data.len()).unwrap();
            assert_eq!(&back[..], &data[..], "{c:?}");
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        for c in ALL {
            let packed = compress(c, &zeros).unwrap();
            let err = decompress(c, &packed, 1 << 20).unwrap_err();
            assert_eq!(err, RecordError::TooLarge { limit: 1 << 20 }, "{c:?}");
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for c in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(decompress(c, &junk, 1 << 20).is_err(), "{c:?}");
            let mut framed = XERIAL_MAGIC.to_vec();
            framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
            assert!(decompress(Codec::Snappy, &framed, 1 << 20).is_err());
        }
    }
}
