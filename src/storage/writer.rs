//! The append path: one thread owns offset assignment and writes to RocksDB.
//!
//! Producers on every connection hand their validated batches to this thread
//! through a bounded channel. It drains whatever is queued, assigns offsets,
//! writes everything in one RocksDB `WriteBatch` (one WAL append, one fsync
//! when configured: group commit), then publishes the new high watermarks and
//! answers each request. Topic deletion goes through the same queue so no
//! append can land after its partition's data was removed.
//!
//! Batches from idempotent producers are checked here, against the
//! partition's producer state, because only this thread knows what is already
//! written or queued ahead in the same group: duplicates are acknowledged with
//! their original offset, gaps and stale epochs refused, neither taking offsets.
//!
//! Transactions: a transactional batch is appended only while its producer's
//! transaction is ongoing and includes the partition (`ActiveTxns`, kept by
//! the transaction coordinator), and opens the producer's transaction on the
//! partition; markers (control batches, written by the coordinator through
//! this same queue so they land after the transaction's data) close it. Both
//! move the partition's last stable offset, published with the high watermark.

use std::sync::Arc;
use std::thread;

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use super::batch::{with_base_offset, ValidBatch};
use super::db::{
    log_key, log_start_key, IndexEntry, ProducerFields, Store, TxnFields, CF_IDX, CF_LOG, CF_META,
};
use super::leader_epochs::epochs_key;
use super::partition::Partition;
use super::producers::{last_sequence, Decision, ProducerEntry};
use super::txns::{control_type, ActiveTxns, TxnChange, CONTROL_COMMIT};
use crate::error::{BrokerError, BrokerResult};

/// Batches for one partition within an append request.
pub struct PartitionAppend {
    pub partition: Arc<Partition>,
    pub batches: Vec<ValidBatch>,
}

/// A RocksDB write batch sized up front for these appends: its buffer would
/// otherwise grow by doubling, copying everything written so far each time
/// (measured: a tenth of a replicating broker's CPU).
pub(super) fn write_batch_for<'a>(
    appends: impl Iterator<Item = &'a PartitionAppend>,
) -> WriteBatch {
    // Per batch: the log and index records' keys, lengths and index value.
    const PER_BATCH: usize = 128;
    let bytes: usize = appends
        .flat_map(|a| a.batches.iter())
        .map(|b| b.bytes.len() + PER_BATCH)
        .sum();
    WriteBatch::with_capacity_bytes(bytes + PER_BATCH)
}

/// The result for one `PartitionAppend`: the first batch's base offset (for a
/// duplicate of an idempotent batch, the offset it was first written at).
pub type AppendOutcome = BrokerResult<i64>;

enum Command {
    Append {
        entries: Vec<PartitionAppend>,
        reply: Option<oneshot::Sender<Vec<AppendOutcome>>>,
    },
    DeleteTopic {
        meta_key: Vec<u8>,
        partitions: Vec<Arc<Partition>>,
        reply: oneshot::Sender<BrokerResult<()>>,
    },
    /// A follower's copy of its leader's batches (offsets already assigned).
    Replicate {
        entries: Vec<PartitionAppend>,
        reply: oneshot::Sender<Vec<BrokerResult<()>>>,
    },
    /// Replication changes to one partition's log, in order with appends.
    Log {
        partition: Arc<Partition>,
        change: LogChange,
        reply: oneshot::Sender<BrokerResult<()>>,
    },
}

/// What replication does to a partition's log besides appending.
#[derive(Debug, Clone, Copy)]
pub enum LogChange {
    /// This broker leads from now on, in `epoch`: its appends are stamped
    /// with it and the epoch starts at the current log end.
    Lead { epoch: i32 },
    /// A follower drops everything from `offset` on (rounded down to the
    /// batch holding it).
    TruncateTo { offset: i64 },
    /// A follower behind the leader's log start drops its whole log, which
    /// restarts at `start`.
    RestartAt { start: i64 },
    /// A follower's log start follows the leader's (DeleteRecords, retention
    /// there), never past its own high watermark.
    AdvanceStart { start: i64 },
}

/// Handle used by request handlers to reach the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
    /// Which producers may write transactional batches where (see `ActiveTxns`).
    active: Arc<ActiveTxns>,
}

/// Most bytes gathered into one RocksDB write.
const GROUP_BYTES: usize = 16 << 20;
const GROUP_COMMANDS: usize = 4096;

impl Writer {
    /// Starts the writer thread; it ends when every `Writer` handle is dropped.
    pub fn start(
        store: Arc<Store>,
        sync: bool,
    ) -> std::io::Result<(Writer, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(1024);
        let active = Arc::new(ActiveTxns::default());
        let gate = active.clone();
        let handle = thread::Builder::new()
            .name("runnel-writer".into())
            .spawn(move || run(store, rx, sync, gate))?;
        Ok((Writer { tx, active }, handle))
    }

    /// The transactional producers' gates the writer checks batches against.
    pub fn active_txns(&self) -> &Arc<ActiveTxns> {
        &self.active
    }

    /// Queues an append; the returned future resolves once the data is
    /// durable per the flush policy. Queue order is append order.
    pub async fn submit(
        &self,
        entries: Vec<PartitionAppend>,
    ) -> impl std::future::Future<Output = Vec<AppendOutcome>> {
        let n = entries.len();
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Append {
            entries,
            reply: Some(reply),
        };
        let queued = self.tx.send(cmd).await.is_ok();
        async move {
            let failed = || (0..n).map(|_| Err(BrokerError::ShuttingDown)).collect();
            if !queued {
                return failed();
            }
            rx.await.unwrap_or_else(|_| failed())
        }
    }

    /// Appends without waiting for the outcome (acks=0).
    pub async fn append_detached(&self, entries: Vec<PartitionAppend>) {
        let _ = self
            .tx
            .send(Command::Append {
                entries,
                reply: None,
            })
            .await;
    }

    /// Writes batches a follower fetched from its leader, at the leader's
    /// offsets; one outcome per entry.
    pub async fn replicate(&self, entries: Vec<PartitionAppend>) -> Vec<BrokerResult<()>> {
        let n = entries.len();
        let (reply, rx) = oneshot::channel();
        let failed = || (0..n).map(|_| Err(BrokerError::ShuttingDown)).collect();
        if self
            .tx
            .send(Command::Replicate { entries, reply })
            .await
            .is_err()
        {
            return failed();
        }
        rx.await.unwrap_or_else(|_| failed())
    }

    /// Applies a replication change to a partition's log.
    pub async fn change_log(
        &self,
        partition: Arc<Partition>,
        change: LogChange,
    ) -> BrokerResult<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Log {
                partition,
                change,
                reply,
            })
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)?
    }

    /// Removes a topic's catalog record and all its partitions' data atomically.
    pub async fn delete_topic(
        &self,
        meta_key: Vec<u8>,
        partitions: Vec<Arc<Partition>>,
    ) -> BrokerResult<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::DeleteTopic {
                meta_key,
                partitions,
                reply,
            })
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        rx.await.map_err(|_| BrokerError::ShuttingDown)?
    }
}

fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Command>, sync: bool, active: Arc<ActiveTxns>) {
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    let mut pending: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        let mut bytes = 0usize;
        while bytes < GROUP_BYTES && pending.len() < GROUP_COMMANDS {
            match rx.try_recv() {
                Ok(cmd) => {
                    if let Command::Append { entries, .. } | Command::Replicate { entries, .. } =
                        &cmd
                    {
                        bytes += entries
                            .iter()
                            .flat_map(|e| e.batches.iter())
                            .map(|b| b.bytes.len())
                            .sum::<usize>();
                    }
                    pending.push(cmd);
                }
                Err(_) => break,
            }
        }
        // Appends are grouped, and so are follower copies (a partition is
        // either led or followed here, so the two groups never share one);
        // a delete or a log change flushes both before it so order holds.
        let mut group = Vec::new();
        let mut copies: Copies = Vec::new();
        for cmd in pending.drain(..) {
            match cmd {
                Command::Append { entries, reply } => group.push((entries, reply)),
                Command::Replicate { entries, reply } => copies.push((entries, reply)),
                Command::DeleteTopic {
                    meta_key,
                    partitions,
                    reply,
                } => {
                    write_group(&store, &opts, &active, std::mem::take(&mut group));
                    write_copies(&store, &opts, std::mem::take(&mut copies));
                    let _ = reply.send(delete_topic(&store, &opts, &meta_key, &partitions));
                }
                Command::Log {
                    partition,
                    change,
                    reply,
                } => {
                    write_group(&store, &opts, &active, std::mem::take(&mut group));
                    write_copies(&store, &opts, std::mem::take(&mut copies));
                    let _ = reply.send(super::replica_log::change(
                        &store, &opts, &partition, change,
                    ));
                }
            }
        }
        write_group(&store, &opts, &active, group);
        write_copies(&store, &opts, copies);
    }
    tracing::debug!("writer thread stopped");
}

/// Follower copies gathered from several fetch answers.
type Copies = Vec<(Vec<PartitionAppend>, oneshot::Sender<Vec<BrokerResult<()>>>)>;

/// Writes every gathered follower copy in one RocksDB write and answers each.
fn write_copies(store: &Store, opts: &WriteOptions, copies: Copies) {
    if copies.is_empty() {
        return;
    }
    let counts: Vec<usize> = copies.iter().map(|(e, _)| e.len()).collect();
    let (entries, replies): (Vec<_>, Vec<_>) = copies.into_iter().unzip();
    let all: Vec<PartitionAppend> = entries.into_iter().flatten().collect();
    let mut outcomes = super::replica_log::replicate_all(store, opts, &all).into_iter();
    for (n, reply) in counts.into_iter().zip(replies) {
        let _ = reply.send(outcomes.by_ref().take(n).collect());
    }
}

type Group = Vec<(
    Vec<PartitionAppend>,
    Option<oneshot::Sender<Vec<AppendOutcome>>>,
)>;

/// A producer's state before this group changed it: restored if the write fails.
type ProducerUndo = (Arc<Partition>, i64, Option<ProducerEntry>);

/// A transaction state change of this group: undone if the write fails.
pub(super) type TxnUndo = (Arc<Partition>, TxnChange);

/// One batch placed in the write: where it goes and what to publish after.
struct Placed {
    partition: Arc<Partition>,
    base: i64,
    next: i64,
    bytes: bytes::Bytes,
}

fn write_group(store: &Store, opts: &WriteOptions, active: &ActiveTxns, group: Group) {
    if group.is_empty() {
        return;
    }
    let (log, idx, meta) = match (
        store.cf(CF_LOG),
        store.cf(CF_IDX),
        store.cf(CF_META),
        store.check_free_space(),
    ) {
        (Ok(l), Ok(i), Ok(m), Ok(())) => (l, i, m),
        (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
            warn_rate_limited(&e);
            fail_all(group, &e);
            return;
        }
    };
    let mut wb = write_batch_for(group.iter().flat_map(|(entries, _)| entries.iter()));
    let mut placed: Vec<Placed> = Vec::new();
    // Per request, per entry: the outcome if the write succeeds.
    let mut outcomes: Vec<Vec<AppendOutcome>> = Vec::with_capacity(group.len());
    // Where each partition's offsets stood before this group, to undo on failure.
    let mut rollback: Vec<(Arc<Partition>, i64)> = Vec::new();
    // Producer states changed in this group, oldest first (stays empty, and
    // unallocated, without idempotent batches).
    let mut producer_undo: Vec<ProducerUndo> = Vec::new();
    // Transactions opened or closed in this group, oldest first.
    let mut txn_undo: Vec<TxnUndo> = Vec::new();

    for (entries, _) in &group {
        let mut per_request = Vec::with_capacity(entries.len());
        for entry in entries {
            let p = &entry.partition;
            if p.is_deleted() {
                per_request.push(Err(BrokerError::UnknownTopicOrPartition));
                continue;
            }
            if entry.batches.iter().any(|b| b.header.has_producer_id()) {
                match check_producer(entry, active, &mut producer_undo) {
                    Ok(Decision::Append) => {}
                    Ok(Decision::Duplicate(base)) => {
                        per_request.push(Ok(base));
                        continue;
                    }
                    Err(e) => {
                        per_request.push(Err(e));
                        continue;
                    }
                }
            }
            if !rollback.iter().any(|(q, _)| Arc::ptr_eq(q, p)) {
                rollback.push((p.clone(), p.next_offset()));
            }
            let first_base = p.next_offset();
            for b in &entry.batches {
                let base = p.next_offset();
                let next = base + i64::from(b.header.last_offset_delta) + 1;
                let bytes = with_base_offset(&b.bytes, base, p.leader_epoch());
                let key = log_key(p.uid, base);
                let summary = IndexEntry {
                    max_timestamp: b.header.max_timestamp,
                    last_offset_delta: b.header.last_offset_delta,
                    size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                };
                let producer = b.header.has_producer_id().then_some(ProducerFields {
                    producer_id: b.header.producer_id,
                    producer_epoch: b.header.producer_epoch,
                    base_sequence: b.header.base_sequence,
                });
                let txn = producer.and_then(|_| track_txn(p, b, base, &mut txn_undo));
                if p.is_replicated() && p.epochs().assign(p.leader_epoch(), base) {
                    wb.put_cf(&meta, epochs_key(p.uid), p.epochs().encode());
                }
                wb.put_cf(&log, key, &bytes);
                wb.put_cf(&idx, key, summary.encode_full(producer, txn));
                p.set_next_offset(next);
                placed.push(Placed {
                    partition: p.clone(),
                    base,
                    next,
                    bytes,
                });
            }
            per_request.push(Ok(first_base));
        }
        outcomes.push(per_request);
    }

    if let Err(e) = store.db.write_opt(wb, opts) {
        let err = BrokerError::from(e);
        tracing::error!(error = %err, "RocksDB write failed; appends rejected");
        for (p, next) in rollback {
            p.set_next_offset(next);
        }
        // Newest first, so each producer ends with its state from before the group.
        for (p, producer_id, previous) in producer_undo.into_iter().rev() {
            p.producers().restore(producer_id, previous);
        }
        for (p, change) in txn_undo.into_iter().rev() {
            p.txns().undo(change);
        }
        fail_all(group, &err);
        return;
    }
    for pl in placed {
        pl.partition.publish(pl.base, pl.bytes, pl.next);
    }
    for ((_, reply), result) in group.into_iter().zip(outcomes) {
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

/// Records what a batch with a producer id, placed at `base`, does to the
/// partition's transactions; returns the fields its index entry keeps.
pub(super) fn track_txn(
    p: &Arc<Partition>,
    b: &ValidBatch,
    base: i64,
    undo: &mut Vec<TxnUndo>,
) -> Option<TxnFields> {
    let h = &b.header;
    let transactional = h.attributes & 0x10 != 0;
    if h.is_control() {
        let kind = control_type(&b.bytes).unwrap_or(-1);
        let commit = kind == CONTROL_COMMIT;
        if let Some(change) = p.txns().on_marker(h.producer_id, base, commit) {
            undo.push((p.clone(), change));
        }
        return Some(TxnFields {
            attributes: h.attributes,
            control_type: i8::try_from(kind).unwrap_or(-1),
        });
    }
    if !transactional {
        return None;
    }
    if let Some(change) = p.txns().on_data(h.producer_id, base) {
        undo.push((p.clone(), change));
    }
    Some(TxnFields {
        attributes: h.attributes,
        control_type: -1,
    })
}

/// Checks an entry holding an idempotent batch against its producer's state.
/// If it is to be appended, records it (at the partition's next offset) and
/// remembers the previous state in `undo`. A transactional batch must belong
/// to its producer's ongoing transaction; a marker (only the transaction
/// coordinator writes control batches) has no sequence and only moves the
/// producer's epoch.
fn check_producer(
    entry: &PartitionAppend,
    active: &ActiveTxns,
    undo: &mut Vec<ProducerUndo>,
) -> BrokerResult<Decision> {
    let p = &entry.partition;
    // As in Kafka, a produce request carries one batch per partition; with
    // several, a retry could be a partial duplicate, so refuse it outright.
    let [b] = entry.batches.as_slice() else {
        return Err(BrokerError::InvalidRecord(format!(
            "Produce requests with idempotent batches must contain exactly one record batch \
             per partition, got {}",
            entry.batches.len()
        )));
    };
    let h = &b.header;
    if h.is_control() {
        let previous = p
            .producers()
            .fence(h.producer_id, h.producer_epoch, crate::types::now_ms());
        undo.push((p.clone(), h.producer_id, previous));
        return Ok(Decision::Append);
    }
    if h.attributes & 0x10 != 0 {
        if let Err(e) = active.verify(h.producer_id, h.producer_epoch, p.uid) {
            tracing::info!(
                topic = %p.topic,
                partition = p.id.get(),
                producer_id = h.producer_id,
                epoch = h.producer_epoch,
                error = %e,
                "transactional batch refused"
            );
            return Err(e);
        }
    }
    let last = last_sequence(h.base_sequence, h.last_offset_delta);
    let mut states = p.producers();
    match states.check(h.producer_id, h.producer_epoch, h.base_sequence, last) {
        Ok(Decision::Append) => {
            let previous = states.record(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                last,
                p.next_offset(),
                crate::types::now_ms(),
            );
            undo.push((p.clone(), h.producer_id, previous));
            Ok(Decision::Append)
        }
        Ok(Decision::Duplicate(base)) => {
            tracing::debug!(
                topic = %p.topic,
                partition = p.id.get(),
                producer_id = h.producer_id,
                sequence = h.base_sequence,
                base_offset = base,
                "duplicate batch acknowledged, not written again"
            );
            Ok(Decision::Duplicate(base))
        }
        Err(e) => {
            tracing::info!(
                topic = %p.topic,
                partition = p.id.get(),
                producer_id = h.producer_id,
                epoch = h.producer_epoch,
                sequence = h.base_sequence,
                error = %e,
                "idempotent batch refused"
            );
            Err(e)
        }
    }
}

/// Logs a refused write group at most every ten seconds: under a full disk
/// every produce fails, and the log must not fill what is left.
fn warn_rate_limited(err: &BrokerError) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::types::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 10_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(error = %err, "appends refused (logged at most every 10 s)");
    }
}

fn fail_all(group: Group, err: &BrokerError) {
    for (entries, reply) in group {
        if let Some(reply) = reply {
            let _ = reply.send(entries.iter().map(|_| Err(err.clone())).collect());
        }
    }
}

fn delete_topic(
    store: &Arc<Store>,
    opts: &WriteOptions,
    meta_key: &[u8],
    partitions: &[Arc<Partition>],
) -> BrokerResult<()> {
    let (log, idx, meta) = (store.cf(CF_LOG)?, store.cf(CF_IDX)?, store.cf(CF_META)?);
    let mut wb = WriteBatch::default();
    wb.delete_cf(&meta, meta_key);
    for p in partitions {
        p.mark_deleted();
        let (from, to) = (log_key(p.uid, 0), log_key(p.uid + 1, 0));
        wb.delete_range_cf(&log, from, to);
        wb.delete_range_cf(&idx, from, to);
        wb.delete_cf(&meta, log_start_key(p.uid));
    }
    store.db.write_opt(wb, opts)?;
    // Reclaim the space now rather than whenever compaction gets there, off the
    // append path so producers to other topics do not wait for it.
    let ranges: Vec<_> = partitions
        .iter()
        .map(|p| (log_key(p.uid, 0).to_vec(), log_key(p.uid + 1, 0).to_vec()))
        .collect();
    store.reclaim_later(ranges);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::split_and_validate;
    use crate::storage::batch::tests::make_producer_batch;
    use crate::storage::catalog::{Catalog, Topic};
    use crate::types::TopicName;
    use kafka_protocol::records::Compression;

    const PID: i64 = 4242;

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> ValidBatch {
        let b = make_producer_batch(n, 1000, Compression::None, pid, epoch, seq);
        split_and_validate(&b, 1 << 20).unwrap().remove(0)
    }

    fn open(dir: &std::path::Path) -> (Arc<Store>, Catalog) {
        let store = Store::open(dir).unwrap();
        let catalog = Catalog::load(store.clone(), 1 << 20, None).unwrap();
        (store, catalog)
    }

    fn topic(catalog: &Catalog) -> Arc<Topic> {
        let name = TopicName::parse("idem").unwrap();
        catalog
            .get("idem")
            .unwrap_or_else(|| catalog.create_topic(&name, 1, Default::default()).unwrap())
    }

    /// Sends each request (one entry per batch list) in its own command, all
    /// queued before the writer drains them, and returns the outcomes.
    fn append_all(
        writer: &Writer,
        t: &Topic,
        requests: Vec<Vec<ValidBatch>>,
    ) -> Vec<AppendOutcome> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut pending = Vec::new();
            for batches in requests {
                let entry = PartitionAppend {
                    partition: t.partitions[0].clone(),
                    batches,
                };
                pending.push(writer.submit(vec![entry]).await);
            }
            let mut out = Vec::new();
            for p in pending {
                out.extend(p.await);
            }
            out
        })
    }

    #[test]
    fn idempotent_appends_dedupe_and_check_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let (store, catalog) = open(dir.path());
        let t = topic(&catalog);
        let (writer, handle) = Writer::start(store.clone(), false).unwrap();
        let out = append_all(
            &writer,
            &t,
            vec![
                vec![batch(PID, 0, 0, 3)],                      // 0..=2
                vec![batch(PID, 0, 0, 3)],                      // duplicate, same group or not
                vec![batch(-1, -1, 0, 2)],                      // plain: 3..=4
                vec![batch(PID, 0, 5, 1)],                      // gap (expects 3)
                vec![batch(PID, 0, 3, 2)],                      // 5..=6
                vec![batch(PID, 1, 1, 1)],                      // new epoch not at 0
                vec![batch(PID, 1, 0, 1)],                      // 7
                vec![batch(PID, 0, 5, 1)],                      // old epoch: fenced
                vec![batch(PID, 1, 1, 1), batch(PID, 1, 2, 1)], // two batches: refused
            ],
        );
        assert_eq!(out[0].as_ref().ok(), Some(&0));
        assert_eq!(out[1].as_ref().ok(), Some(&0));
        assert_eq!(out[2].as_ref().ok(), Some(&3));
        assert!(matches!(out[3], Err(BrokerError::OutOfOrderSequence(_))));
        assert_eq!(out[4].as_ref().ok(), Some(&5));
        assert!(matches!(out[5], Err(BrokerError::OutOfOrderSequence(_))));
        assert_eq!(out[6].as_ref().ok(), Some(&7));
        assert!(matches!(out[7], Err(BrokerError::InvalidProducerEpoch(_))));
        assert!(matches!(out[8], Err(BrokerError::InvalidRecord(_))));
        // Rejected and duplicate batches took no offsets.
        assert_eq!(t.partitions[0].high_watermark(), 8);
        drop(writer);
        handle.join().unwrap();
        drop(t);
        drop(catalog);
        drop(store);

        // After a restart the state is rebuilt from the index.
        let (store, catalog) = open(dir.path());
        let t = topic(&catalog);
        assert_eq!(t.partitions[0].high_watermark(), 8);
        let (writer, handle) = Writer::start(store.clone(), false).unwrap();
        let out = append_all(
            &writer,
            &t,
            vec![
                vec![batch(PID, 1, 0, 1)], // duplicate of offset 7
                vec![batch(PID, 0, 3, 2)], // old epoch
                vec![batch(PID, 1, 2, 1)], // gap
                vec![batch(PID, 1, 1, 1)], // next: 8
            ],
        );
        assert_eq!(out[0].as_ref().ok(), Some(&7));
        assert!(matches!(out[1], Err(BrokerError::InvalidProducerEpoch(_))));
        assert!(matches!(out[2], Err(BrokerError::OutOfOrderSequence(_))));
        assert_eq!(out[3].as_ref().ok(), Some(&8));
        assert_eq!(t.partitions[0].high_watermark(), 9);
        drop(writer);
        handle.join().unwrap();
    }

    /// A transactional batch of `n` records from producer `pid`.
    fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> ValidBatch {
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: seq + i as i32,
                timestamp: 1000,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        split_and_validate(&buf.freeze(), 1 << 20)
            .unwrap()
            .remove(0)
    }

    fn marker(pid: i64, epoch: i16, commit: bool) -> ValidBatch {
        crate::storage::txns::control_batch(pid, epoch, commit, 0, 1000).unwrap()
    }

    fn open_gate(writer: &Writer, pid: i64, epoch: i16, uid: u64) {
        writer.active_txns().set(
            pid,
            crate::storage::txns::TxnGate {
                epoch,
                ongoing: true,
                partitions: [uid].into_iter().collect(),
            },
        );
    }

    #[test]
    fn transactions_hold_the_lso_and_survive_restarts() {
        const A: i64 = 500;
        const B: i64 = 501;
        const C: i64 = 502;
        let dir = tempfile::tempdir().unwrap();
        let (store, catalog) = open(dir.path());
        let t = topic(&catalog);
        let p = t.partitions[0].clone();
        let (writer, handle) = Writer::start(store.clone(), false).unwrap();
        // Without an ongoing transaction a transactional batch is refused.
        let out = append_all(&writer, &t, vec![vec![txn_batch(A, 0, 0, 2)]]);
        assert!(matches!(out[0], Err(BrokerError::InvalidTxnState(_))));
        open_gate(&writer, A, 0, p.uid);
        open_gate(&writer, B, 0, p.uid);
        let out = append_all(
            &writer,
            &t,
            vec![
                vec![batch(-1, -1, 0, 2)],   // 0..=1
                vec![txn_batch(A, 0, 0, 2)], // 2..=3, opens A
                vec![txn_batch(B, 0, 0, 1)], // 4, opens B
                vec![batch(-1, -1, 0, 1)],   // 5
                vec![txn_batch(A, 0, 2, 1)], // 6, still A
                vec![txn_batch(A, 1, 0, 1)], // wrong epoch
            ],
        );
        assert_eq!(out[1].as_ref().ok(), Some(&2));
        assert!(matches!(out[5], Err(BrokerError::InvalidProducerEpoch(_))));
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (7, 2));
        // read_committed stops at the LSO.
        let r = p.read_upto(&store, 0, 1 << 20, true).unwrap();
        assert_eq!(r.end_offset(), Some(2));
        assert_eq!(p.read_upto(&store, 2, 1 << 20, true).unwrap().batches, 0);
        assert_eq!(
            p.read_upto(&store, 0, 1 << 20, false).unwrap().end_offset(),
            Some(7)
        );
        // Commit A (7): B still holds the LSO at 4.
        let out = append_all(&writer, &t, vec![vec![marker(A, 0, true)]]);
        assert_eq!(out[0].as_ref().ok(), Some(&7));
        assert_eq!(p.last_stable_offset(), 4);
        // Abort B with a bumped epoch (8): everything is stable, B is fenced.
        append_all(&writer, &t, vec![vec![marker(B, 1, false)]]);
        assert_eq!(p.last_stable_offset(), 9);
        let aborted = p.aborted_between(0, 9);
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (
                aborted[0].producer_id,
                aborted[0].first_offset,
                aborted[0].last_offset
            ),
            (B, 4, 8)
        );
        assert!(p.aborted_between(9, 20).is_empty());
        open_gate(&writer, B, 0, p.uid);
        let out = append_all(&writer, &t, vec![vec![txn_batch(B, 0, 1, 1)]]);
        assert!(matches!(out[0], Err(BrokerError::InvalidProducerEpoch(_))));
        // A opens another transaction (9) in the same epoch, sequence continuing.
        let out = append_all(&writer, &t, vec![vec![txn_batch(A, 0, 3, 1)]]);
        assert_eq!(out[0].as_ref().ok(), Some(&9));
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (10, 9));
        drop(writer);
        handle.join().unwrap();
        drop(p);
        drop(t);
        drop(catalog);
        drop(store);

        // After a restart the open and aborted transactions are rebuilt from the index.
        let (store, catalog) = open(dir.path());
        let t = topic(&catalog);
        let p = t.partitions[0].clone();
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (10, 9));
        assert_eq!(p.open_txn_start(A), Some(9));
        assert_eq!(p.aborted_between(0, 10).len(), 1);
        let (writer, handle) = Writer::start(store.clone(), false).unwrap();
        // The fence survived too.
        open_gate(&writer, B, 0, p.uid);
        let out = append_all(&writer, &t, vec![vec![txn_batch(B, 0, 1, 1)]]);
        assert!(matches!(out[0], Err(BrokerError::InvalidProducerEpoch(_))));
        // A marker for a producer without an open transaction changes nothing.
        append_all(&writer, &t, vec![vec![marker(C, 0, false)]]);
        assert_eq!(p.last_stable_offset(), 9);
        assert_eq!(p.aborted_between(0, 20).len(), 1);
        // Abort A: its batch at 9 is reported to read_committed fetches from 9.
        append_all(&writer, &t, vec![vec![marker(A, 0, false)]]);
        assert_eq!(p.last_stable_offset(), 12);
        let r = p.read_upto(&store, 9, 1 << 20, true).unwrap();
        assert_eq!(r.end_offset(), Some(12));
        let aborted: Vec<i64> = p
            .aborted_between(9, 12)
            .iter()
            .map(|a| a.first_offset)
            .collect();
        assert_eq!(aborted, vec![9]);
        drop(writer);
        handle.join().unwrap();
    }

    #[test]
    fn producer_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, catalog) = open(dir.path());
        let a = catalog.allocate_producer_id().unwrap();
        let b = catalog.allocate_producer_id().unwrap();
        assert!(b > a);
        drop(catalog);
        drop(store);
        let (_store, catalog) = open(dir.path());
        let c = catalog.allocate_producer_id().unwrap();
        assert!(c > b);
    }
}
