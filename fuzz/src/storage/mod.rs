//! The broker's record batch validation, compiled in by path.

#[path = "../../../src/storage/batch.rs"]
pub mod batch;
