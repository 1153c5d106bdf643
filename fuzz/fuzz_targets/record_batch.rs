//! Produce records as the broker validates them: framing and CRC, then what
//! compacted topics, timestamp checks and recompression do with a batch.
//! The CRC is recomputed on the input so mutations reach past it.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use runnel_fuzz::records::{layout, walk, Codec};
use runnel_fuzz::storage::batch::{check_records, recompress, split_and_validate, RecordRules};

const LIMIT: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let mut b = BytesMut::from(data);
    if b.len() >= layout::HEADER_LEN {
        layout::reseal(&mut b);
    }
    let b: Bytes = b.freeze();
    let Ok(batches) = split_and_validate(&b, usize::MAX) else {
        return;
    };
    for v in &batches {
        let rules = RecordRules {
            require_keys: true,
            timestamps: Some((0, 1 << 40)),
            decompressed_limit: LIMIT,
        };
        if let Ok(section) = check_records(v, &rules) {
            let _ = recompress(v, &section, Codec::Lz4);
        }
        if let Ok(section) = layout::records_section(&v.bytes, LIMIT) {
            for r in walk::records(&section, v.header.records_count) {
                if r.is_err() {
                    break;
                }
            }
        }
    }
});
