//! RocksDB handle, column families and key encoding.
//!
//! Key layout:
//! - `log` CF: `partition uid (u64 BE) ++ base offset (i64 BE)` → the batch bytes as
//!   the producer sent them, base offset assigned. Fetch seeks to the batch that
//!   contains an offset with `seek_for_prev`.
//! - `idx` CF: same key → `max_timestamp (i64 BE) ++ last_offset_delta (i32 BE) ++
//!   batch size (u32 BE)`, followed for idempotent batches by `producer_id (i64 BE) ++
//!   producer_epoch (i16 BE) ++ base_sequence (i32 BE)`, and for transactional
//!   data and control batches by `attributes (i16 BE) ++ control type (i8)`:
//!   lets recovery, producer and transaction state and timestamp lookups
//!   avoid reading batches (see `IndexEntry`).
//! - `meta` CF: catalog records (`topic/<name>`, counters such as
//!   `counter/partition_uid` and `counter/producer_id`, cluster id).
//!
//! A partition uid is allocated once and never reused, so a deleted topic's data
//! is removed with one DeleteRange and can never leak into a recreated topic.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use crate::error::BrokerResult;

pub const CF_LOG: &str = "log";
pub const CF_IDX: &str = "idx";
pub const CF_META: &str = "meta";

pub struct Store {
    pub db: DB,
    /// Serialises `reclaim`, which toggles a column family option.
    reclaiming: std::sync::Mutex<()>,
    /// The data directory (for free-space checks).
    pub dir: std::path::PathBuf,
    /// Appends are refused while the data directory's file system has less
    /// free space than this (`runnel.log.dir.min.free.bytes`), so RocksDB keeps
    /// room to flush its memtables and never fails half-way for lack of disk.
    pub min_free_bytes: std::sync::atomic::AtomicU64,
    /// The one thread reclaiming deleted topics' space (started on first
    /// need) and its queue; joined before the store closes, as RocksDB must
    /// not be torn down under it.
    reclaimer: std::sync::Mutex<Option<Reclaimer>>,
    /// Set at shutdown: queued reclamation is left to later compactions.
    stopping: std::sync::atomic::AtomicBool,
}

struct Reclaimer {
    queue: std::sync::mpsc::Sender<KeyRange>,
    thread: std::thread::JoinHandle<()>,
}

/// `[from, to)` of one column family's keys.
pub type KeyRange = (Vec<u8>, Vec<u8>);
/// The same, where `None` is open-ended.
type OpenRange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Default of `runnel.log.dir.min.free.bytes`: above what the memtables can
/// hold (3 x 64 MiB), so a flush always has room.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

/// True if files in `dir` can be opened with O_DIRECT.
fn direct_io_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".direct-io-probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

impl Store {
    pub fn open(dir: &Path) -> BrokerResult<Arc<Store>> {
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::error::BrokerError::Storage(format!("cannot create {}: {e}", dir.display()))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_keep_log_file_num(3);
        // Reuse old WAL files instead of creating new ones: overwriting pages
        // the page cache already holds is far cheaper than appending to a
        // fresh file (measured on this kind of VM: ~300 MB/s into new pages,
        // several GB/s into cached ones), and every appended byte goes
        // through the WAL.
        opts.set_recycle_log_file_num(4);
        // A WAL file stays until every column family with data in it has
        // flushed; the small index and meta memtables would otherwise pin
        // gigabytes of WAL (and defeat the recycling above).
        opts.set_max_total_wal_size(256 << 20);
        // Flushes write every appended byte a second time (into blob files);
        // with direct I/O they skip the page cache instead of filling fresh
        // pages of it, which costs more CPU than the write itself here.
        // Where the file system refuses O_DIRECT (tmpfs), buffered I/O it is.
        let direct = direct_io_works(dir);
        opts.set_use_direct_io_for_flush_and_compaction(direct);

        let mut log_opts = Options::default();
        // Batches are large, written once and read sequentially: keep them in blob
        // files so compaction rewrites only the small keys (less write amplification).
        log_opts.set_enable_blob_files(true);
        log_opts.set_min_blob_size(512);
        // No age-based blob garbage collection: with it every compaction
        // relocated the batches of the oldest quarter of blob files (measured:
        // 600-800 MB rewritten per 300 MB appended, half the broker's CPU).
        // Blob files die whole once retention or deletion has dropped every
        // batch in them; where a pass leaves them partly live (compaction,
        // topic deletion) `reclaim` collects them on purpose.
        log_opts.set_enable_blob_gc(false);
        log_opts.set_write_buffer_size(64 << 20);
        log_opts.set_max_write_buffer_number(3);
        log_opts.set_target_file_size_base(64 << 20);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_LOG, log_opts),
            ColumnFamilyDescriptor::new(CF_IDX, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Arc::new(Store {
            db,
            reclaiming: std::sync::Mutex::new(()),
            dir: dir.to_path_buf(),
            min_free_bytes: std::sync::atomic::AtomicU64::new(DEFAULT_MIN_FREE_BYTES),
            reclaimer: std::sync::Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Refuses a write while free disk space is below the reserve; reads and
    /// everything already stored are unaffected, and writes resume by
    /// themselves once space is freed.
    pub fn check_free_space(&self) -> BrokerResult<()> {
        let min = self
            .min_free_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        match super::disk::space(&self.dir) {
            Some(s) if s.available < min => Err(crate::error::BrokerError::Storage(format!(
                "Not enough disk space in {}: {} bytes free, runnel.log.dir.min.free.bytes={min}",
                self.dir.display(),
                s.available
            ))),
            _ => Ok(()),
        }
    }

    /// Queues key ranges (of deleted topics) for space reclamation on the
    /// reclaim thread, off the append path. One thread serves every deletion,
    /// so a client deleting topics in a loop cannot multiply threads; what is
    /// queued together is reclaimed together.
    pub fn reclaim_later(self: &Arc<Self>, ranges: Vec<KeyRange>) {
        let mut slot = self.reclaimer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<KeyRange>();
            let store = self.clone();
            let spawned = std::thread::Builder::new()
                .name("runnel-reclaim".into())
                .spawn(move || store.reclaim_loop(rx));
            match spawned {
                Ok(thread) => *slot = Some(Reclaimer { queue: tx, thread }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start space reclamation; compaction will reclaim it later");
                    return;
                }
            }
        }
        if let Some(r) = slot.as_ref() {
            for range in ranges {
                let _ = r.queue.send(range);
            }
        }
    }

    fn reclaim_loop(&self, rx: std::sync::mpsc::Receiver<KeyRange>) {
        use std::sync::atomic::Ordering;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            if self.stopping.load(Ordering::Relaxed) {
                continue;
            }
            let ranges: Vec<_> = batch.into_iter().map(|(f, t)| (Some(f), Some(t))).collect();
            if let Err(e) = self.reclaim_each(&ranges, &self.stopping) {
                tracing::warn!(error = %e, "reclaiming deleted topics' space failed; compaction will do it later");
            }
        }
    }

    /// Stops the reclaim thread (what is still queued is left to compaction)
    /// and waits for it; called at shutdown before the final flush.
    pub fn stop_reclaimer(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let taken = self
            .reclaimer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Reclaimer { queue, thread }) = taken {
            drop(queue);
            if thread.join().is_err() {
                tracing::error!("the reclaim thread panicked");
            }
        }
    }

    pub fn cf(&self, name: &str) -> BrokerResult<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| {
            crate::error::BrokerError::Storage(format!("missing column family {name}"))
        })
    }

    /// Compacts `[from, to)` of the log and index so deleted batches leave
    /// the disk now: their tombstones go, and batches still live in the
    /// range move out of blob files that are otherwise garbage, which then
    /// get deleted. Not exclusive: RocksDB's own compactions, and with them
    /// appends, carry on meanwhile.
    pub fn reclaim(&self, from: Option<&[u8]>, to: Option<&[u8]>) -> BrokerResult<()> {
        let range = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        self.reclaim_each(
            std::slice::from_ref(&range),
            &std::sync::atomic::AtomicBool::new(false),
        )
    }

    /// Compacts each range with blob garbage collection switched on once
    /// around all of them (switching writes an OPTIONS file each time);
    /// `stop` ends it between ranges.
    fn reclaim_each(
        &self,
        ranges: &[OpenRange],
        stop: &std::sync::atomic::AtomicBool,
    ) -> BrokerResult<()> {
        let (log, idx) = (self.cf(CF_LOG)?, self.cf(CF_IDX)?);
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_exclusive_manual_compaction(false);
        // Data already at the bottom level is rewritten too: that is where
        // the tombstones and the blob references to collect are.
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        let _one_at_a_time = self
            .reclaiming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.db.set_options_cf(
            log,
            &[
                ("enable_blob_garbage_collection", "true"),
                ("blob_garbage_collection_age_cutoff", "1.0"),
            ],
        )?;
        for (from, to) in ranges {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            self.db
                .compact_range_cf_opt(log, from.as_deref(), to.as_deref(), &opts);
            self.db
                .compact_range_cf_opt(idx, from.as_deref(), to.as_deref(), &opts);
        }
        self.db
            .set_options_cf(log, &[("enable_blob_garbage_collection", "false")])?;
        Ok(())
    }

    /// Blob files die whole; one holding a few live batches among deleted
    /// ones (say, of a topic with long retention beside one with short)
    /// keeps its garbage. When garbage is over half of all blob bytes, the
    /// live batches are moved out so those files go: space stays within
    /// about twice the live data, at the cost of rewriting the live part
    /// only after as much was deleted. Returns whether it ran.
    pub fn collect_blob_garbage(&self) -> BrokerResult<bool> {
        self.collect_blob_garbage_above(64 << 20)
    }

    fn collect_blob_garbage_above(&self, min_garbage: u64) -> BrokerResult<bool> {
        let log = self.cf(CF_LOG)?;
        let prop = |name: &str| -> BrokerResult<u64> {
            Ok(self.db.property_int_value_cf(log, name)?.unwrap_or(0))
        };
        let total = prop("rocksdb.live-blob-file-size")?;
        let garbage = prop("rocksdb.live-blob-file-garbage-size")?;
        if garbage == 0 || garbage < min_garbage || garbage.saturating_mul(2) < total {
            return Ok(false);
        }
        tracing::info!(
            blob_bytes = total,
            garbage_bytes = garbage,
            "collecting blob garbage"
        );
        self.reclaim(None, None)?;
        Ok(true)
    }

    /// Makes everything written so far durable (used at shutdown).
    pub fn flush(&self) -> BrokerResult<()> {
        self.db.flush_wal(true)?;
        for name in [CF_LOG, CF_IDX, CF_META] {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }
}

/// `uid ++ offset` — offsets are never negative, so big-endian sorts numerically.
pub fn log_key(uid: u64, offset: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&uid.to_be_bytes());
    k[8..].copy_from_slice(&offset.max(0).to_be_bytes());
    k
}

/// Where a partition's log start offset is kept once it moved past the first batch.
pub fn log_start_key(uid: u64) -> Vec<u8> {
    let mut k = b"log_start/".to_vec();
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

/// Splits a log key; `None` if it is not 16 bytes.
pub fn parse_log_key(k: &[u8]) -> Option<(u64, i64)> {
    if k.len() != 16 {
        return None;
    }
    let mut u = [0u8; 8];
    let mut o = [0u8; 8];
    u.copy_from_slice(&k[..8]);
    o.copy_from_slice(&k[8..]);
    Some((u64::from_be_bytes(u), i64::from_be_bytes(o)))
}

/// The per-batch summary stored in the `idx` CF.
///
/// Three encodings, told apart by length: 16 bytes (`max_timestamp`,
/// `last_offset_delta`, `size`) for batches without a producer id, 30
/// bytes that add the batch's `ProducerFields` for idempotent batches, so
/// producer state can be rebuilt at start-up without reading the batches,
/// and 33 bytes for transactional data and control batches, which add the
/// batch attributes (i16 BE) and the control record type (i8: 0 abort,
/// 1 commit, -1 for data), so open and aborted transactions can be rebuilt too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub max_timestamp: i64,
    pub last_offset_delta: i32,
    pub size: u32,
}

/// The producer fields of an idempotent batch, kept after its `IndexEntry`:
/// `producer_id (i64 BE) ++ producer_epoch (i16 BE) ++ base_sequence (i32 BE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// What a transactional or control batch adds after its `ProducerFields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnFields {
    /// The batch attributes (transactional 0x10, control 0x20).
    pub attributes: i16,
    /// For a transaction marker: 0 abort, 1 commit; -1 for data batches.
    pub control_type: i8,
}

impl TxnFields {
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
}

const INDEX_LEN: usize = 16;
const INDEX_LEN_PRODUCER: usize = 30;
const INDEX_LEN_TXN: usize = 33;

/// An encoded index value (no heap allocation).
pub struct EncodedIndex {
    buf: [u8; INDEX_LEN_TXN],
    len: usize,
}

impl AsRef<[u8]> for EncodedIndex {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn i64_at(v: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[at..at + 8]);
    i64::from_be_bytes(a)
}

fn i32_at(v: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&v[at..at + 4]);
    i32::from_be_bytes(a)
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_LEN] {
        let mut v = [0u8; INDEX_LEN];
        v[..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        v[8..12].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        v[12..].copy_from_slice(&self.size.to_be_bytes());
        v
    }

    /// The index value, with the producer fields when there are any.
    pub fn encode_with(&self, producer: Option<ProducerFields>) -> EncodedIndex {
        let mut buf = [0u8; INDEX_LEN_TXN];
        buf[..INDEX_LEN].copy_from_slice(&self.encode());
        let Some(p) = producer else {
            return EncodedIndex {
                buf,
                len: INDEX_LEN,
            };
        };
        buf[16..24].copy_from_slice(&p.producer_id.to_be_bytes());
        buf[24..26].copy_from_slice(&p.producer_epoch.to_be_bytes());
        buf[26..30].copy_from_slice(&p.base_sequence.to_be_bytes());
        EncodedIndex {
            buf,
            len: INDEX_LEN_PRODUCER,
        }
    }

    /// The index value of any batch: transactional data and control batches
    /// (with a producer id) also keep their attributes and marker type.
    pub fn encode_full(
        &self,
        producer: Option<ProducerFields>,
        txn: Option<TxnFields>,
    ) -> EncodedIndex {
        let mut e = self.encode_with(producer);
        match (producer, txn) {
            (Some(_), Some(t)) if t.is_control() || t.is_transactional() => {
                e.buf[30..32].copy_from_slice(&t.attributes.to_be_bytes());
                e.buf[32] = t.control_type.to_be_bytes()[0];
                e.len = INDEX_LEN_TXN;
                e
            }
            _ => e,
        }
    }

    /// Reads any of the encodings.
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != INDEX_LEN && v.len() != INDEX_LEN_PRODUCER && v.len() != INDEX_LEN_TXN {
            return None;
        }
        Some(IndexEntry {
            max_timestamp: i64_at(v, 0),
            last_offset_delta: i32_at(v, 8),
            size: i32_at(v, 12) as u32,
        })
    }

    /// The producer fields of an index value, if it has them.
    pub fn decode_producer(v: &[u8]) -> Option<ProducerFields> {
        if v.len() != INDEX_LEN_PRODUCER && v.len() != INDEX_LEN_TXN {
            return None;
        }
        Some(ProducerFields {
            producer_id: i64_at(v, 16),
            producer_epoch: i16::from_be_bytes([v[24], v[25]]),
            base_sequence: i32_at(v, 26),
        })
    }

    /// The transaction fields of an index value, if it has them (older
    /// formats never describe transactional batches: they were refused).
    pub fn decode_txn(v: &[u8]) -> Option<TxnFields> {
        if v.len() != INDEX_LEN_TXN {
            return None;
        }
        Some(TxnFields {
            attributes: i16::from_be_bytes([v[30], v[31]]),
            control_type: i8::from_be_bytes([v[32]]),
        })
    }
}

impl From<rocksdb::Error> for crate::error::BrokerError {
    fn from(e: rocksdb::Error) -> Self {
        crate::error::BrokerError::Storage(e.into_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_garbage_is_collected_when_it_dominates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = store.cf(CF_LOG).unwrap();
        let value = vec![7u8; 4096];
        // Two partitions interleaved in the same blob files.
        for i in 0..300 {
            store.db.put_cf(log, log_key(1, i), &value).unwrap();
            store.db.put_cf(log, log_key(1, 1000 + i), &value).unwrap();
            store.db.put_cf(log, log_key(2, i), &value).unwrap();
        }
        store.db.flush_cf(log).unwrap();
        let prop = |name: &str| store.db.property_int_value_cf(log, name).unwrap().unwrap();
        let before = prop("rocksdb.live-blob-file-size");
        // Partition 1 goes; compaction drops its keys, its blobs become garbage.
        let mut wb = rocksdb::WriteBatch::default();
        wb.delete_range_cf(log, log_key(1, 0), log_key(2, 0));
        store.db.write(wb).unwrap();
        store.db.compact_range_cf(log, None::<&[u8]>, None::<&[u8]>);
        assert!(prop("rocksdb.live-blob-file-garbage-size") >= 600 * 4096);
        assert!(store.collect_blob_garbage_above(0).unwrap());
        let (g, t) = (
            prop("rocksdb.live-blob-file-garbage-size"),
            prop("rocksdb.live-blob-file-size"),
        );
        assert_eq!(g, 0, "garbage {g} of {t}, before {before}");
        assert!(prop("rocksdb.live-blob-file-size") < before / 2);
        // Nothing left to collect.
        assert!(!store.collect_blob_garbage_above(0).unwrap());
        assert_eq!(
            store.db.get_cf(log, log_key(2, 299)).unwrap().unwrap(),
            value
        );
    }

    #[test]
    fn keys_sort_by_uid_then_offset() {
        assert!(log_key(1, 5) < log_key(1, 6));
        assert!(log_key(1, i64::MAX) < log_key(2, 0));
        assert_eq!(parse_log_key(&log_key(7, 99)), Some((7, 99)));
    }

    #[test]
    fn index_entry_round_trips() {
        let e = IndexEntry {
            max_timestamp: -1,
            last_offset_delta: 9,
            size: 1234,
        };
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        let plain = e.encode_with(None);
        assert_eq!(plain.as_ref(), &e.encode()[..]);
        assert_eq!(IndexEntry::decode_producer(plain.as_ref()), None);
        let p = ProducerFields {
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: i32::MAX,
        };
        let with = e.encode_with(Some(p));
        assert_eq!(with.as_ref().len(), 30);
        assert_eq!(IndexEntry::decode(with.as_ref()), Some(e));
        assert_eq!(IndexEntry::decode_producer(with.as_ref()), Some(p));
    }

    #[test]
    fn index_entry_keeps_transaction_fields() {
        let e = IndexEntry {
            max_timestamp: 5,
            last_offset_delta: 0,
            size: 80,
        };
        let p = ProducerFields {
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: -1,
        };
        let marker = TxnFields {
            attributes: 0x30,
            control_type: 1,
        };
        let v = e.encode_full(Some(p), Some(marker));
        assert_eq!(v.as_ref().len(), 33);
        assert_eq!(IndexEntry::decode(v.as_ref()), Some(e));
        assert_eq!(IndexEntry::decode_producer(v.as_ref()), Some(p));
        assert_eq!(IndexEntry::decode_txn(v.as_ref()), Some(marker));
        assert!(IndexEntry::decode_txn(v.as_ref()).unwrap().is_control());
        // Plain idempotent batches keep the 30-byte format.
        let plain = TxnFields {
            attributes: 0,
            control_type: -1,
        };
        let v = e.encode_full(Some(p), Some(plain));
        assert_eq!(v.as_ref().len(), 30);
        assert_eq!(IndexEntry::decode_txn(v.as_ref()), None);
        // Without a producer id there is nothing to describe.
        assert_eq!(e.encode_full(None, Some(marker)).as_ref().len(), 16);
    }

    #[test]
    fn index_entry_reads_the_original_16_byte_format() {
        // As written before producer ids were recorded.
        let mut v = Vec::new();
        v.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        v.extend_from_slice(&4i32.to_be_bytes());
        v.extend_from_slice(&300u32.to_be_bytes());
        let e = IndexEntry::decode(&v).unwrap();
        assert_eq!(
            (e.max_timestamp, e.last_offset_delta, e.size),
            (1_700_000_000_000, 4, 300)
        );
        assert_eq!(IndexEntry::decode_producer(&v), None);
        assert_eq!(IndexEntry::decode(&v[..15]), None);
    }
}
