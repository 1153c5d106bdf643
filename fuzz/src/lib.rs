//! The broker's wire-facing decoding code, compiled in by path so the fuzz
//! targets exercise exactly what the broker runs, without RocksDB.

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/records/mod.rs"]
pub mod records;

pub mod storage;
