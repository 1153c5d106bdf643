//! Every codec's bounded decompression on arbitrary input: errors are fine,
//! output past the limit, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_fuzz::records::codec::{decompress, Codec};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let codec = match which % 5 {
        0 => Codec::None,
        1 => Codec::Gzip,
        2 => Codec::Snappy,
        3 => Codec::Lz4,
        _ => Codec::Zstd,
    };
    if let Ok(out) = decompress(codec, input, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
});
