//! Storage: RocksDB holds record batches, topic metadata and partition state.
//!
//! - `db`: opening RocksDB, column families and key layout.
//! - `batch`: record batch framing and validation.
//! - `partition`: one partition's offsets, tail cache and reads.
//! - `producers`: idempotent producers' sequence state per partition.
//! - `producer_expiry`: forgetting idle producers (`producer.id.expiration.ms`).
//! - `catalog`: topics, their IDs, partitions and configs.
//! - `leader_epochs`: where each leader epoch began (follower truncation).
//! - `txns`: open and aborted transactions per partition, transaction markers.
//! - `writer`: the single append path with group commit.

pub mod background;
pub mod batch;
pub mod catalog;
pub mod compaction;
pub mod db;
pub mod disk;
pub mod leader_epochs;
pub mod partition;
pub mod producer_expiry;
pub mod producers;
pub mod replica_log;
pub mod retention;
pub mod time_lookup;
pub mod txns;
pub mod writer;
