//! The transaction coordinator: every transactional id on this node, its
//! producer id and epoch, and its transaction's state, partitions and pending
//! offset commits.
//!
//! States follow Kafka: `Empty` → (AddPartitionsToTxn / AddOffsetsToTxn)
//! `Ongoing` → (EndTxn) `PrepareCommit` / `PrepareAbort` → (markers written,
//! offsets applied or dropped) `CompleteCommit` / `CompleteAbort`, which
//! behave like `Empty` for the next transaction.
//!
//! Every change is persisted in the `meta` CF (`txn/<id>`, JSON) before it is
//! acted on or answered, with fsync when the broker's flush policy asks for
//! it. In particular the Prepare state is durable before the first marker is
//! written: a broker that stops between the two completes the transaction at
//! start-up (markers written again are harmless). Markers go through the
//! writer thread like any append, so they land after the transaction's data.
//!
//! Each id has its own async lock, held for a whole operation (markers
//! included), so operations on one id are serialised and never observe a
//! half-done transition. The writer's gate (`ActiveTxns`) is closed before
//! markers are queued, so no transactional batch can land after them.
//!
//! A ticker aborts transactions older than their timeout, bumping the epoch
//! so the producer that left them open is fenced, retries completions that
//! failed, and forgets ids idle longer than `transactional.id.expiration.ms`.
//!
//! Cluster mode: an id is served by the leader of its `__transaction_state`
//! partition (`txn_log`), which persists every change there instead of the
//! `meta` column family, loads the partition's ids when it becomes the
//! leader and forgets them when it stops being one. Markers go to the
//! partitions' leaders (`txn_markers`); offsets committed in a transaction
//! are held by the group coordinator, and applied by the marker that
//! reaches the group's `__consumer_offsets` partition.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rocksdb::WriteOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use super::internal_topic::Loaded;
use super::offsets::Committed;
use super::txn_markers::{self, Marker};
use crate::broker::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::catalog::Catalog;
use crate::storage::db::{Store, CF_META};
use crate::storage::txns::{control_batch, ActiveTxns, TxnGate};
use crate::storage::writer::PartitionAppend;
use crate::types::now_ms;

const PREFIX: &str = "txn/";
/// Standalone (one node, never re-elected): the coordinator epoch written in
/// markers. In a cluster it is the leader epoch of the id's partition.
pub const COORDINATOR_EPOCH: i32 = 0;
/// Cluster mode: pause between attempts to complete a transaction whose
/// markers could not all be written.
const COMPLETION_RETRY: Duration = Duration::from_millis(500);
const NO_PRODUCER_ID: i64 = -1;
const NO_EPOCH: i16 = -1;

/// Kafka's transaction states (the names are what admin APIs report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// An offset commit made inside a transaction, applied when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

impl PendingOffset {
    /// The commit it becomes when its transaction commits.
    pub fn committed(&self) -> Committed {
        Committed {
            offset: self.offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_ms: self.commit_ms,
        }
    }
}

/// Everything known about one transactional id (persisted as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion).
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, so a retried InitProducerId (KIP-360)
    /// gets the same answer; -1 once another producer took over.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub pending_offsets: Vec<PendingOffset>,
    /// When the ongoing transaction began (first partition or group added); -1 if none.
    pub start_ms: i64,
    pub update_ms: i64,
    /// Removed from the coordinator (expired): operations that waited for it start over.
    #[serde(skip)]
    dead: bool,
}

/// What EndTxn has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStep {
    /// Move to Prepare and write the markers.
    Prepare,
    /// The transaction already ended this way (a retried EndTxn): succeed.
    AlreadyDone,
}

fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl TxnMeta {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        TxnMeta {
            transactional_id: transactional_id.to_string(),
            producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_EPOCH,
            last_producer_epoch: NO_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            pending_offsets: Vec::new(),
            start_ms: -1,
            update_ms: now,
            dead: false,
        }
    }

    /// InitProducerId's first checks: is the request's producer (KIP-360,
    /// v3+) still the one this id knows, and is a transaction in the way?
    /// `Ok(true)` means the ongoing transaction must be aborted first.
    pub fn init_check(&self, expected: Option<(i64, i16)>) -> BrokerResult<bool> {
        if let Some((pid, epoch)) = expected {
            let valid = self.producer_epoch == NO_EPOCH
                || pid == self.producer_id
                || (pid == self.last_producer_id && epoch_exhausted(epoch));
            if !valid {
                return Err(BrokerError::ProducerFenced);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(BrokerError::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(true),
            _ => Ok(false),
        }
    }

    /// Fences the producer of an ongoing transaction and starts its abort:
    /// the epoch goes up (the markers carry the new one, so the old producer
    /// can no longer write anywhere) and no retry may claim the old epoch.
    pub fn prepare_fence_abort(&mut self, now: i64) {
        self.producer_epoch = self.producer_epoch.saturating_add(1);
        self.last_producer_epoch = NO_EPOCH;
        self.state = TxnState::PrepareAbort;
        self.update_ms = now;
    }

    /// InitProducerId once no transaction is in the way: a new epoch (or a
    /// new producer id when epochs are exhausted), an empty transaction.
    pub fn bump(
        &mut self,
        expected_epoch: Option<i16>,
        timeout_ms: i32,
        now: i64,
        new_producer_id: impl FnOnce() -> BrokerResult<i64>,
    ) -> BrokerResult<()> {
        if epoch_exhausted(self.producer_epoch)
            && expected_epoch.is_none_or(|e| e == self.producer_epoch)
        {
            let id = new_producer_id()?;
            self.last_producer_id = self.producer_id;
            self.last_producer_epoch = if expected_epoch.is_some() {
                self.producer_epoch
            } else {
                NO_EPOCH
            };
            self.producer_id = id;
            self.producer_epoch = 0;
        } else {
            match expected_epoch {
                None => {
                    self.producer_epoch += 1;
                    self.last_producer_epoch = NO_EPOCH;
                }
                Some(e) if self.producer_epoch == NO_EPOCH || e == self.producer_epoch => {
                    self.last_producer_epoch = self.producer_epoch;
                    self.producer_epoch += 1;
                }
                // A retry of a bump whose answer was lost: the same answer again.
                Some(e) if e == self.last_producer_epoch => {}
                Some(_) => return Err(BrokerError::ProducerFenced),
            }
        }
        self.timeout_ms = timeout_ms;
        self.state = TxnState::Empty;
        self.partitions.clear();
        self.groups.clear();
        self.pending_offsets.clear();
        self.start_ms = -1;
        self.update_ms = now;
        Ok(())
    }

    /// The producer id and epoch of AddPartitionsToTxn, AddOffsetsToTxn,
    /// TxnOffsetCommit and EndTxn must be the current ones.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> BrokerResult<()> {
        if self.dead || producer_id != self.producer_id {
            return Err(BrokerError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(BrokerError::ProducerFenced);
        }
        Ok(())
    }

    /// Adds partitions and groups to the transaction, starting it if needed.
    /// `Ok(false)`: nothing new (already part of the ongoing transaction).
    pub fn add(
        &mut self,
        partitions: &[(String, i32)],
        group: Option<&str>,
        now: i64,
    ) -> BrokerResult<bool> {
        if self.state.is_prepare() {
            return Err(BrokerError::ConcurrentTransactions);
        }
        let known = partitions.iter().all(|p| self.partitions.contains(p))
            && group.is_none_or(|g| self.groups.contains(g));
        if self.state == TxnState::Ongoing && known {
            return Ok(false);
        }
        if self.state != TxnState::Ongoing {
            self.start_ms = now;
            self.pending_offsets.clear();
        }
        self.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            self.groups.insert(g.to_string());
        }
        self.state = TxnState::Ongoing;
        self.update_ms = now;
        Ok(true)
    }

    /// What EndTxn (commit or abort) must do, given the current state.
    pub fn end_step(&self, producer_id: i64, epoch: i16, commit: bool) -> BrokerResult<EndStep> {
        self.check_producer(producer_id, epoch)?;
        let invalid = || {
            BrokerError::InvalidTxnState(format!(
                "EndTxn({}) in state {}",
                if commit { "commit" } else { "abort" },
                self.state.name()
            ))
        };
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(EndStep::Prepare),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndStep::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(BrokerError::ConcurrentTransactions)
            }
            _ => Err(invalid()),
        }
    }

    pub fn prepare_end(&mut self, commit: bool, now: i64) {
        self.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.update_ms = now;
    }

    /// Markers written (and offsets applied): the transaction is over.
    pub fn complete(&mut self, now: i64) {
        self.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        self.partitions.clear();
        self.groups.clear();
        self.pending_offsets.clear();
        self.update_ms = now;
    }

    /// Records a pending offset commit, replacing an earlier one for the same partition.
    pub fn put_offset(&mut self, o: PendingOffset) {
        match self
            .pending_offsets
            .iter_mut()
            .find(|p| p.group == o.group && p.topic == o.topic && p.partition == o.partition)
        {
            Some(p) => *p = o,
            None => self.pending_offsets.push(o),
        }
    }

    /// True if the ongoing transaction has run longer than its timeout.
    pub fn timed_out(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }
}

/// Broker settings for transactions.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
}

type Entry = Arc<AsyncMutex<TxnMeta>>;
/// (group, topic, partition) → transactional ids with a pending offset there.
type PendingIndex = HashMap<(String, String, i32), HashSet<String>>;

pub struct TxnCoordinator {
    store: Arc<Store>,
    sync: bool,
    pub config: TxnConfig,
    active: Arc<ActiveTxns>,
    txns: Mutex<HashMap<String, Entry>>,
    pending: Mutex<PendingIndex>,
    /// Cluster mode: the `__transaction_state` partitions loaded here.
    pub loaded: Loaded,
}

fn key(id: &str) -> Vec<u8> {
    format!("{PREFIX}{id}").into_bytes()
}

/// The writer's gate for a transactional id's current state.
fn gate_of(meta: &TxnMeta, catalog: &Catalog) -> TxnGate {
    let ongoing = meta.state == TxnState::Ongoing;
    let partitions = if ongoing {
        meta.partitions
            .iter()
            .filter_map(|(t, i)| catalog.get(t).and_then(|t| t.partition(*i).map(|p| p.uid)))
            .collect()
    } else {
        HashSet::new()
    };
    TxnGate {
        epoch: meta.producer_epoch,
        ongoing,
        partitions,
    }
}

impl TxnCoordinator {
    /// Loads every transactional id and opens the writer's gates for ongoing ones.
    pub fn load(
        store: Arc<Store>,
        sync: bool,
        config: TxnConfig,
        active: Arc<ActiveTxns>,
        catalog: &Catalog,
    ) -> BrokerResult<Self> {
        let mut txns = HashMap::new();
        let mut pending = PendingIndex::new();
        {
            let meta_cf = store.cf(CF_META)?;
            for item in store.db.prefix_iterator_cf(meta_cf, PREFIX.as_bytes()) {
                let (k, v) = item?;
                if !k.starts_with(PREFIX.as_bytes()) {
                    break;
                }
                let meta: TxnMeta = match serde_json::from_slice(&v) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable transaction record");
                        continue;
                    }
                };
                if meta.producer_epoch >= 0 {
                    active.set(meta.producer_id, gate_of(&meta, catalog));
                }
                for o in &meta.pending_offsets {
                    pending
                        .entry((o.group.clone(), o.topic.clone(), o.partition))
                        .or_default()
                        .insert(meta.transactional_id.clone());
                }
                txns.insert(
                    meta.transactional_id.clone(),
                    Arc::new(AsyncMutex::new(meta)),
                );
            }
        }
        tracing::info!(transactional_ids = txns.len(), "transactions loaded");
        Ok(TxnCoordinator {
            store,
            sync,
            config,
            active,
            txns: Mutex::new(txns),
            pending: Mutex::new(pending),
            loaded: Loaded::default(),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Map operations are single inserts and removals: never half-done.
        self.txns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pending_index(&self) -> MutexGuard<'_, PendingIndex> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, id: &str) -> Option<Entry> {
        self.map().get(id).cloned()
    }

    /// The writer's gate, shared with the partition-leader side of markers
    /// and verification.
    pub fn active(&self) -> &Arc<ActiveTxns> {
        &self.active
    }

    /// Cluster mode: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS unless
    /// this broker serves `id`.
    fn served(&self, b: &Broker, id: &str) -> BrokerResult<()> {
        if id.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "The transactional id must not be empty".into(),
            ));
        }
        super::txn_log::check(b, id).map(|_| ())
    }

    async fn new_producer_id(b: &Broker) -> BrokerResult<i64> {
        if b.cluster.is_standalone() {
            b.catalog.allocate_producer_id()
        } else {
            b.producer_ids.next(&b.cluster).await
        }
    }

    async fn persist(&self, b: &Broker, meta: &TxnMeta) -> BrokerResult<()> {
        if !b.cluster.is_standalone() {
            return super::txn_log::append(b, &meta.transactional_id, Some(meta)).await;
        }
        let json = serde_json::to_vec(meta)
            .map_err(|e| BrokerError::Storage(format!("cannot encode transaction state: {e}")))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.store.db.put_cf_opt(
            self.store.cf(CF_META)?,
            key(&meta.transactional_id),
            json,
            &opts,
        )?;
        Ok(())
    }

    /// Persists a change made to `meta`; on failure puts `before` back.
    async fn commit_change(
        &self,
        b: &Broker,
        meta: &mut TxnMeta,
        before: TxnMeta,
    ) -> BrokerResult<()> {
        if let Err(e) = self.persist(b, meta).await {
            tracing::error!(transactional_id = %meta.transactional_id, error = %e, "cannot persist transaction state");
            *meta = before;
            return Err(e);
        }
        Ok(())
    }

    fn set_gate(&self, b: &Broker, meta: &TxnMeta) {
        self.active.set(meta.producer_id, gate_of(meta, &b.catalog));
    }

    /// InitProducerId with a transactional id: (producer id, epoch).
    pub async fn init_producer_id(
        &self,
        b: &Broker,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> BrokerResult<(i64, i16)> {
        self.served(b, id)?;
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(BrokerError::InvalidTransactionTimeout);
        }
        loop {
            let known = self.entry(id);
            let entry = match known {
                Some(e) => e,
                None => {
                    let pid = Self::new_producer_id(b).await?;
                    let fresh =
                        Arc::new(AsyncMutex::new(TxnMeta::new(id, pid, timeout_ms, now_ms())));
                    // Another request may have made it meanwhile: its entry wins.
                    self.map().entry(id.to_string()).or_insert(fresh).clone()
                }
            };
            let mut meta = entry.lock().await;
            if meta.dead {
                continue;
            }
            if meta.state.is_prepare() {
                // An earlier end could not write its markers: finish it now.
                self.finish(b, &mut meta).await?;
            }
            if meta.init_check(expected)? {
                tracing::info!(
                    transactional_id = id,
                    producer_id = meta.producer_id,
                    epoch = meta.producer_epoch,
                    "aborting the ongoing transaction of a re-initialised transactional id"
                );
                self.fence_abort(b, &mut meta).await?;
            }
            let before = meta.clone();
            let old_pid = meta.producer_id;
            let rotated = if epoch_exhausted(meta.producer_epoch) {
                Some(Self::new_producer_id(b).await?)
            } else {
                None
            };
            meta.bump(expected.map(|e| e.1), timeout_ms, now_ms(), || {
                rotated.ok_or_else(|| BrokerError::Storage("no producer id to rotate to".into()))
            })?;
            self.commit_change(b, &mut meta, before).await?;
            if old_pid != meta.producer_id {
                self.active.remove(old_pid);
            }
            self.set_gate(b, &meta);
            tracing::info!(
                transactional_id = id,
                producer_id = meta.producer_id,
                epoch = meta.producer_epoch,
                "transactional producer initialised"
            );
            return Ok((meta.producer_id, meta.producer_epoch));
        }
    }

    /// Locks an existing id for an operation of its current producer.
    async fn locked(
        &self,
        b: &Broker,
        id: &str,
    ) -> BrokerResult<tokio::sync::OwnedMutexGuard<TxnMeta>> {
        self.served(b, id)?;
        let entry = self
            .entry(id)
            .ok_or(BrokerError::InvalidProducerIdMapping)?;
        Ok(entry.lock_owned().await)
    }

    /// AddPartitionsToTxn: the partitions (known to exist) join the transaction.
    pub async fn add_partitions(
        &self,
        b: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> BrokerResult<()> {
        let mut meta = self.locked(b, id).await?;
        meta.check_producer(producer_id, epoch)?;
        let before = meta.clone();
        if meta.add(partitions, None, now_ms())? {
            self.commit_change(b, &mut meta, before).await?;
            self.set_gate(b, &meta);
        }
        Ok(())
    }

    /// AddPartitionsToTxn v4+ with `verify_only`: is each partition part of
    /// the ongoing transaction? Changes nothing.
    pub async fn verify_partitions(
        &self,
        b: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> BrokerResult<Vec<BrokerResult<()>>> {
        let meta = self.locked(b, id).await?;
        meta.check_producer(producer_id, epoch)?;
        if meta.state.is_prepare() {
            return Err(BrokerError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if meta.state == TxnState::Ongoing && meta.partitions.contains(p) {
                    Ok(())
                } else {
                    Err(BrokerError::InvalidTxnState(format!(
                        "{}-{} is not part of the ongoing transaction",
                        p.0, p.1
                    )))
                }
            })
            .collect())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub async fn add_offsets(
        &self,
        b: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> BrokerResult<()> {
        if group.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        // Cluster mode: the group's offsets partition joins the transaction,
        // so its marker reaches the group coordinator, which holds the
        // transaction's offsets (as in Kafka).
        let offsets_partition = if b.cluster.is_standalone() {
            Vec::new()
        } else {
            super::offsets_log::coordinator_node(b, group).await?;
            let p = super::offsets_log::OFFSETS.partition_of(b, group);
            vec![(super::offsets_log::TOPIC.to_string(), p)]
        };
        let mut meta = self.locked(b, id).await?;
        meta.check_producer(producer_id, epoch)?;
        let before = meta.clone();
        if meta.add(&offsets_partition, Some(group), now_ms())? {
            self.commit_change(b, &mut meta, before).await?;
            self.set_gate(b, &meta);
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets held until the transaction ends (applied on
    /// commit, dropped on abort). The group must have been added.
    pub async fn commit_offsets(
        &self,
        b: &Broker,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<PendingOffset>,
    ) -> BrokerResult<()> {
        let mut meta = self.locked(b, id).await?;
        meta.check_producer(producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
            return Err(BrokerError::InvalidTxnState(format!(
                "TxnOffsetCommit for group {group}, which is not part of an ongoing transaction \
                 (state {})",
                meta.state.name()
            )));
        }
        let before = meta.clone();
        let keys: Vec<(String, String, i32)> = offsets
            .iter()
            .map(|o| (o.group.clone(), o.topic.clone(), o.partition))
            .collect();
        for o in offsets {
            meta.put_offset(o);
        }
        self.commit_change(b, &mut meta, before).await?;
        let mut index = self.pending_index();
        for k in keys {
            index.entry(k).or_default().insert(id.to_string());
        }
        Ok(())
    }

    /// EndTxn: commit or abort the ongoing transaction; answers once the
    /// markers are written and the offsets applied.
    pub async fn end_txn(
        &self,
        b: &Arc<Broker>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> BrokerResult<()> {
        let mut meta = self.locked(b, id).await?;
        if meta.end_step(producer_id, epoch, commit)? == EndStep::AlreadyDone {
            return Ok(());
        }
        let before = meta.clone();
        meta.prepare_end(commit, now_ms());
        self.commit_change(b, &mut meta, before).await?;
        match self.finish(b, &mut meta).await {
            // Cluster mode: the decision is durable on the in-sync replicas;
            // as in Kafka the producer hears of it now, and the markers that
            // could not be written yet are retried until they are.
            Err(e) if !b.cluster.is_standalone() => {
                tracing::info!(transactional_id = id, error = %e, "transaction decided; its markers will be retried");
                drop(meta);
                self.retry_completion(b, id);
                Ok(())
            }
            other => other,
        }
    }

    /// Cluster mode: completes `id`'s transaction in the background, trying
    /// again every `COMPLETION_RETRY` while this broker coordinates it.
    fn retry_completion(&self, b: &Arc<Broker>, id: &str) {
        let broker = Arc::downgrade(b);
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(COMPLETION_RETRY).await;
                let Some(b) = broker.upgrade() else { return };
                let Some(entry) = b.txns.entry(&id) else {
                    return;
                };
                let mut meta = entry.lock().await;
                if meta.dead || !meta.state.is_prepare() || b.txns.served(&b, &id).is_err() {
                    return;
                }
                if b.txns.finish(&b, &mut meta).await.is_ok() {
                    return;
                }
            }
        });
    }

    /// Fences the producer of the ongoing transaction (epoch bump) and aborts it.
    async fn fence_abort(&self, b: &Broker, meta: &mut TxnMeta) -> BrokerResult<()> {
        let before = meta.clone();
        meta.prepare_fence_abort(now_ms());
        self.commit_change(b, meta, before).await?;
        self.finish(b, meta).await
    }

    /// Completes a transaction in a Prepare state (persisted): closes the
    /// writer's gate, writes the markers, applies or drops the pending
    /// offsets, and persists the Complete state. On failure it stays in
    /// Prepare and is retried (by the ticker or the next request).
    async fn finish(&self, b: &Broker, meta: &mut TxnMeta) -> BrokerResult<()> {
        let commit = meta.state == TxnState::PrepareCommit;
        // Closed before the markers are queued: no transactional batch of this
        // producer can be appended after them.
        self.set_gate(b, meta);
        self.write_markers(b, meta, commit).await?;
        if commit {
            let mut by_group: BTreeMap<&str, Vec<(String, i32, Committed)>> = BTreeMap::new();
            for o in &meta.pending_offsets {
                by_group.entry(&o.group).or_default().push((
                    o.topic.clone(),
                    o.partition,
                    o.committed(),
                ));
            }
            for (group, commits) in by_group {
                b.groups.offsets.commit(group, commits)?;
            }
        }
        {
            let mut index = self.pending_index();
            for o in &meta.pending_offsets {
                let k = (o.group.clone(), o.topic.clone(), o.partition);
                if let Some(ids) = index.get_mut(&k) {
                    ids.remove(&meta.transactional_id);
                    if ids.is_empty() {
                        index.remove(&k);
                    }
                }
            }
        }
        let before = meta.clone();
        meta.complete(now_ms());
        self.commit_change(b, meta, before).await?;
        tracing::info!(
            transactional_id = %meta.transactional_id,
            producer_id = meta.producer_id,
            epoch = meta.producer_epoch,
            state = meta.state.name(),
            "transaction completed"
        );
        Ok(())
    }

    /// Writes a COMMIT or ABORT marker to every partition of the transaction,
    /// through the writer (after the transaction's data). Partitions of
    /// deleted topics are skipped.
    async fn write_markers(&self, b: &Broker, meta: &TxnMeta, commit: bool) -> BrokerResult<()> {
        if !b.cluster.is_standalone() {
            let marker = Marker {
                producer_id: meta.producer_id,
                epoch: meta.producer_epoch,
                commit,
                coordinator_epoch: super::txn_log::coordinator_epoch(b, &meta.transactional_id)?,
            };
            return txn_markers::write(b, marker, &meta.partitions).await;
        }
        let now = now_ms();
        let mut entries = Vec::with_capacity(meta.partitions.len());
        for (topic, index) in &meta.partitions {
            let Some(p) = b
                .catalog
                .get(topic)
                .and_then(|t| t.partition(*index).cloned())
            else {
                tracing::debug!(topic = %topic, partition = index, "no marker for a partition that no longer exists");
                continue;
            };
            let marker = control_batch(
                meta.producer_id,
                meta.producer_epoch,
                commit,
                COORDINATOR_EPOCH,
                now,
            )?;
            entries.push(PartitionAppend {
                partition: p,
                batches: vec![marker],
            });
        }
        if entries.is_empty() {
            return Ok(());
        }
        let done = b.writer.submit(entries).await;
        for outcome in done.await {
            match outcome {
                Ok(_) | Err(BrokerError::UnknownTopicOrPartition) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A copy of one id's state (DescribeTransactions).
    pub async fn describe(&self, b: &Broker, id: &str) -> BrokerResult<TxnMeta> {
        self.served(b, id)?;
        let entry = self.entry(id).ok_or(BrokerError::TransactionalIdNotFound)?;
        let meta = entry.lock().await;
        if meta.dead || meta.producer_epoch < 0 {
            return Err(BrokerError::TransactionalIdNotFound);
        }
        Ok(meta.clone())
    }

    /// Copies of every id's state (ListTransactions), by id.
    pub async fn list(&self) -> Vec<TxnMeta> {
        let entries: Vec<Entry> = self.map().values().cloned().collect();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let m = e.lock().await;
            if !m.dead && m.producer_epoch >= 0 {
                out.push(m.clone());
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// True if an unfinished transaction holds an offset commit for this
    /// partition of the group (OffsetFetch with require_stable).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_index()
            .contains_key(&(group.to_string(), topic.to_string(), partition))
    }

    /// Start-up: completes transactions caught in a Prepare state, then
    /// aborts transactional data no ongoing transaction accounts for (it
    /// would hold the last stable offset back forever).
    pub async fn recover(&self, b: &Broker) {
        if !b.cluster.is_standalone() {
            // Each coordinator completes its ids when it loads them; data of
            // transactions coordinated elsewhere is not this broker's to abort.
            return;
        }
        let entries: Vec<Entry> = self.map().values().cloned().collect();
        for e in entries {
            let mut meta = e.lock().await;
            if meta.state.is_prepare() {
                tracing::info!(transactional_id = %meta.transactional_id, state = meta.state.name(), "completing a transaction interrupted by a restart");
                if let Err(err) = self.finish(b, &mut meta).await {
                    tracing::warn!(transactional_id = %meta.transactional_id, error = %err, "cannot complete the transaction yet; will retry");
                }
            }
        }
        self.abort_hanging(b).await;
    }

    async fn abort_hanging(&self, b: &Broker) {
        // Producer id → the (topic, partition)s its ongoing transaction covers.
        let mut ongoing: HashMap<i64, BTreeSet<(String, i32)>> = HashMap::new();
        let mut epochs: HashMap<i64, i16> = HashMap::new();
        for m in self.list().await {
            epochs.insert(m.producer_id, m.producer_epoch);
            if m.state == TxnState::Ongoing || m.state.is_prepare() {
                ongoing.insert(m.producer_id, m.partitions.clone());
            }
        }
        let mut entries = Vec::new();
        for topic in b.catalog.all() {
            for p in &topic.partitions {
                for (pid, pepoch, ..) in p.producer_snapshot() {
                    if p.open_txn_start(pid).is_none() {
                        continue;
                    }
                    let covered = ongoing
                        .get(&pid)
                        .is_some_and(|parts| parts.contains(&(topic.name.to_string(), p.id.get())));
                    if covered {
                        continue;
                    }
                    tracing::warn!(topic = %topic.name, partition = p.id.get(), producer_id = pid, "aborting transactional data without an ongoing transaction");
                    let epoch = epochs.get(&pid).copied().unwrap_or(pepoch).max(pepoch);
                    match control_batch(pid, epoch, false, COORDINATOR_EPOCH, now_ms()) {
                        Ok(marker) => entries.push(PartitionAppend {
                            partition: p.clone(),
                            batches: vec![marker],
                        }),
                        Err(e) => tracing::error!(error = %e, "cannot build an abort marker"),
                    }
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let done = b.writer.submit(entries).await;
        for outcome in done.await {
            if let Err(e) = outcome {
                tracing::error!(error = %e, "cannot abort a hanging transaction");
            }
        }
    }

    /// One pass of the ticker: aborts timed-out transactions, retries
    /// interrupted completions, forgets expired ids.
    pub async fn tick(&self, b: &Broker) {
        let now = now_ms();
        let entries: Vec<(String, Entry)> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, e) in entries {
            // Busy ids are being worked on: look again next time.
            let Ok(mut meta) = e.try_lock() else {
                continue;
            };
            if meta.dead {
                continue;
            }
            if meta.timed_out(now) {
                tracing::info!(transactional_id = %id, producer_id = meta.producer_id, epoch = meta.producer_epoch, timeout_ms = meta.timeout_ms, "aborting a transaction that exceeded its timeout");
                if let Err(err) = self.fence_abort(b, &mut meta).await {
                    tracing::warn!(transactional_id = %id, error = %err, "cannot abort the timed-out transaction yet");
                }
            } else if meta.state.is_prepare() {
                if let Err(err) = self.finish(b, &mut meta).await {
                    tracing::warn!(transactional_id = %id, error = %err, "cannot complete the transaction yet");
                }
            } else if meta.state != TxnState::Ongoing
                && now.saturating_sub(meta.update_ms) > self.config.id_expiration_ms
            {
                if let Err(err) = self.expire(b, &id, &mut meta).await {
                    tracing::warn!(transactional_id = %id, error = %err, "cannot expire the transactional id");
                }
            }
        }
    }

    async fn expire(&self, b: &Broker, id: &str, meta: &mut TxnMeta) -> BrokerResult<()> {
        if b.cluster.is_standalone() {
            let mut opts = WriteOptions::default();
            opts.set_sync(self.sync);
            self.store
                .db
                .delete_cf_opt(self.store.cf(CF_META)?, key(id), &opts)?;
        } else {
            super::txn_log::append(b, id, None).await?;
        }
        meta.dead = true;
        self.map().remove(id);
        self.active.remove(meta.producer_id);
        tracing::info!(transactional_id = id, "transactional id expired");
        Ok(())
    }
}

impl TxnCoordinator {
    /// Cluster mode: the ids of a `__transaction_state` partition this
    /// broker now leads, as its log left them.
    pub fn load_partition(&self, b: &Broker, metas: Vec<TxnMeta>) {
        let mut map = self.map();
        for meta in metas {
            if meta.producer_epoch >= 0 {
                self.active
                    .set(meta.producer_id, gate_of(&meta, &b.catalog));
            }
            map.insert(
                meta.transactional_id.clone(),
                Arc::new(AsyncMutex::new(meta)),
            );
        }
    }

    /// Cluster mode: forgets the ids `which` selects (their partition is
    /// led elsewhere now). An operation holding one finishes against the
    /// log, which no longer accepts its writes from here.
    pub fn unload(&self, which: impl Fn(&str) -> bool) {
        let gone: Vec<Entry> = {
            let mut map = self.map();
            let ids: Vec<String> = map.keys().filter(|id| which(id)).cloned().collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for e in gone {
            if let Ok(mut meta) = e.try_lock() {
                meta.dead = true;
                self.active.remove(meta.producer_id);
            }
        }
    }

    /// Cluster mode, after loading: completes the transactions `which`
    /// selects that a previous coordinator left in a Prepare state.
    pub async fn complete_half_ended(&self, b: &Arc<Broker>, which: impl Fn(&str) -> bool) {
        let entries: Vec<(String, Entry)> = self
            .map()
            .iter()
            .filter(|(id, _)| which(id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, e) in entries {
            let mut meta = e.lock().await;
            if meta.dead || !meta.state.is_prepare() {
                continue;
            }
            tracing::info!(transactional_id = %id, state = meta.state.name(), "completing a transaction left by the previous coordinator");
            if let Err(err) = self.finish(b, &mut meta).await {
                tracing::info!(transactional_id = %id, error = %err, "cannot complete it yet; retrying");
                drop(meta);
                self.retry_completion(b, &id);
            }
        }
    }
}

/// Runs the ticker every `every` until the broker is gone.
pub fn spawn(broker: Weak<Broker>, every: Duration) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(b) = broker.upgrade() else { break };
            b.txns.tick(&b).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> TxnMeta {
        TxnMeta::new("t", 100, 60_000, 0)
    }

    fn no_new_id() -> BrokerResult<i64> {
        panic!("no new producer id expected")
    }

    #[test]
    fn init_bumps_epochs_and_fences_others() {
        let mut m = fresh();
        assert!(!m.init_check(None).unwrap());
        m.bump(None, 1000, 1, no_new_id).unwrap();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (100, 0, TxnState::Empty)
        );
        // A second producer with the same id: new epoch, the previous one is fenced.
        m.bump(None, 1000, 2, no_new_id).unwrap();
        assert_eq!(m.producer_epoch, 1);
        assert!(matches!(
            m.check_producer(100, 0),
            Err(BrokerError::ProducerFenced)
        ));
        assert!(matches!(
            m.check_producer(101, 1),
            Err(BrokerError::InvalidProducerIdMapping)
        ));
        // KIP-360: the current producer re-initialises with its id and epoch.
        m.init_check(Some((100, 1))).unwrap();
        m.bump(Some(1), 1000, 3, no_new_id).unwrap();
        assert_eq!((m.producer_epoch, m.last_producer_epoch), (2, 1));
        // Its retry (answer lost) gets the same epoch again.
        m.bump(Some(1), 1000, 4, no_new_id).unwrap();
        assert_eq!(m.producer_epoch, 2);
        // An older epoch that is neither current nor the last is fenced.
        assert!(matches!(
            m.bump(Some(0), 1000, 5, no_new_id),
            Err(BrokerError::ProducerFenced)
        ));
        // Another producer id than the current one is fenced outright.
        assert!(matches!(
            m.init_check(Some((55, 2))),
            Err(BrokerError::ProducerFenced)
        ));
    }

    #[test]
    fn exhausted_epochs_rotate_the_producer_id() {
        let mut m = fresh();
        m.producer_epoch = i16::MAX - 1;
        m.bump(None, 1000, 1, || Ok(200)).unwrap();
        assert_eq!((m.producer_id, m.producer_epoch), (200, 0));
        assert_eq!((m.last_producer_id, m.last_producer_epoch), (100, -1));
        // A KIP-360 retry from the old id with the exhausted epoch is accepted.
        let mut m = fresh();
        m.producer_epoch = i16::MAX - 1;
        m.bump(Some(i16::MAX - 1), 1000, 1, || Ok(300)).unwrap();
        assert!(!m.init_check(Some((100, i16::MAX - 1))).unwrap());
        m.bump(Some(i16::MAX - 1), 1000, 2, no_new_id).unwrap();
        assert_eq!((m.producer_id, m.producer_epoch), (300, 0));
    }

    #[test]
    fn transaction_lifecycle() {
        let mut m = fresh();
        m.bump(None, 1000, 1, no_new_id).unwrap();
        // EndTxn without a transaction is an invalid state.
        assert!(matches!(
            m.end_step(100, 0, true),
            Err(BrokerError::InvalidTxnState(_))
        ));
        let p = vec![("a".to_string(), 0)];
        assert!(m.add(&p, None, 10).unwrap());
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 10));
        // Adding again changes nothing; the start time stays.
        assert!(!m.add(&p, None, 20).unwrap());
        assert!(m.add(&[], Some("g"), 30).unwrap());
        assert_eq!(m.start_ms, 10);
        m.put_offset(PendingOffset {
            group: "g".into(),
            topic: "in".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: 30,
        });
        assert_eq!(m.end_step(100, 0, true).unwrap(), EndStep::Prepare);
        m.prepare_end(true, 40);
        // While preparing: the same end is a concurrent request, the other is invalid.
        assert!(matches!(
            m.end_step(100, 0, true),
            Err(BrokerError::ConcurrentTransactions)
        ));
        assert!(matches!(
            m.end_step(100, 0, false),
            Err(BrokerError::InvalidTxnState(_))
        ));
        assert!(matches!(
            m.add(&p, None, 41),
            Err(BrokerError::ConcurrentTransactions)
        ));
        assert!(matches!(
            m.init_check(None),
            Err(BrokerError::ConcurrentTransactions)
        ));
        m.complete(50);
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty() && m.groups.is_empty() && m.pending_offsets.is_empty());
        // A retried commit succeeds; an abort now is invalid.
        assert_eq!(m.end_step(100, 0, true).unwrap(), EndStep::AlreadyDone);
        assert!(matches!(
            m.end_step(100, 0, false),
            Err(BrokerError::InvalidTxnState(_))
        ));
        // The next transaction starts from CompleteCommit.
        assert!(m.add(&p, None, 60).unwrap());
        assert_eq!(m.start_ms, 60);
    }

    #[test]
    fn fencing_an_ongoing_transaction() {
        let mut m = fresh();
        m.bump(None, 1000, 1, no_new_id).unwrap();
        m.add(&[("a".to_string(), 0)], None, 10).unwrap();
        assert!(!m.timed_out(1000));
        assert!(m.timed_out(1011));
        // A new producer instance (no KIP-360 fields) must abort it first.
        assert!(m.init_check(None).unwrap());
        m.prepare_fence_abort(1011);
        assert_eq!((m.state, m.producer_epoch), (TxnState::PrepareAbort, 1));
        // The old producer's EndTxn is fenced.
        assert!(matches!(
            m.end_step(100, 0, true),
            Err(BrokerError::ProducerFenced)
        ));
        m.complete(1012);
        assert_eq!(m.state, TxnState::CompleteAbort);
        // Its KIP-360 re-initialisation with the old epoch is fenced too.
        assert!(matches!(
            m.bump(Some(0), 1000, 1013, no_new_id),
            Err(BrokerError::ProducerFenced)
        ));
        m.bump(None, 1000, 1014, no_new_id).unwrap();
        assert_eq!(m.producer_epoch, 2);
    }

    /// A whole broker on `dir` (no network), with its writer thread.
    fn open_broker(dir: &std::path::Path) -> (Arc<Broker>, std::thread::JoinHandle<()>) {
        use crate::coordinator::group::GroupConfig;
        use crate::coordinator::offsets::OffsetStore;
        use crate::coordinator::GroupCoordinator;
        let raw = [("log.dirs".to_string(), dir.display().to_string())]
            .into_iter()
            .collect();
        let config = crate::config::BrokerConfig::from_map(raw).unwrap().server;
        let store = Store::open(dir).unwrap();
        let catalog = Catalog::load(store.clone(), 1 << 20, None).unwrap();
        let (writer, thread) = crate::storage::writer::Writer::start(store.clone(), false).unwrap();
        let groups = Arc::new(GroupCoordinator::new(
            OffsetStore::load(store.clone(), false).unwrap(),
            GroupConfig {
                initial_rebalance_delay: Duration::ZERO,
                min_session_timeout: Duration::from_secs(1),
                max_session_timeout: Duration::from_secs(60),
                max_size: 10,
            },
            Duration::from_secs(3600),
        ));
        let txns = TxnCoordinator::load(
            store.clone(),
            false,
            TxnConfig {
                max_timeout_ms: 60_000,
                id_expiration_ms: 3_600_000,
            },
            writer.active_txns().clone(),
            &catalog,
        )
        .unwrap();
        let broker_configs =
            crate::config::dynamic::DynamicConfigs::load(store.clone(), config.raw.clone())
                .unwrap();
        let cluster: Arc<dyn crate::cluster::ClusterMetadata> = Arc::new(
            crate::cluster::standalone::Standalone::new(crate::cluster::BrokerInfo {
                node_id: 0,
                rack: None,
                endpoints: Vec::new(),
            }),
        );
        let broker = Broker {
            config,
            broker_configs,
            store: store.clone(),
            catalog,
            writer: writer.clone(),
            metrics: crate::metrics::Metrics::new().unwrap(),
            groups,
            quotas: crate::quotas::QuotaStore::load(store.clone()).unwrap(),
            limiter: crate::quotas::limiter::Limiter::new(Default::default()),
            txns,
            credentials: Arc::new(
                crate::security::credentials::CredentialStore::load(store.clone()).unwrap(),
            ),
            authorizer: crate::security::authorizer::Authorizer::load(
                Default::default(),
                store.clone(),
            )
            .unwrap(),
            listeners: Vec::new(),
            cluster: cluster.clone(),
            producer_ids: Default::default(),
            group_configs: crate::coordinator::group_configs::GroupConfigStore::load(store.clone())
                .unwrap(),
            shares: crate::share::ShareStates::load(store.clone(), false, 10).unwrap(),
            replicas: Arc::new(crate::replication::ReplicaManager::new(
                0,
                None,
                writer.clone(),
                cluster,
            )),
        };
        (Arc::new(broker), thread)
    }

    /// A transactional batch of one record.
    fn txn_record(pid: i64, epoch: i16, seq: i32) -> crate::storage::batch::ValidBatch {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let r = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::from_static(b"x")),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&r],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        crate::storage::batch::split_and_validate(&buf.freeze(), 1 << 20)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_prepared_commit_completes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = crate::types::TopicName::parse("out").unwrap();
        let (pid, epoch) = rt.block_on(async {
            let (b, thread) = open_broker(dir.path());
            let topic = b
                .catalog
                .create_topic(&name, 1, Default::default())
                .unwrap();
            let (pid, epoch) = b
                .txns
                .init_producer_id(&b, "t1", 30_000, None)
                .await
                .unwrap();
            let parts = vec![("out".to_string(), 0)];
            b.txns
                .add_partitions(&b, "t1", pid, epoch, &parts)
                .await
                .unwrap();
            b.txns.add_offsets(&b, "t1", pid, epoch, "g").await.unwrap();
            let offset = PendingOffset {
                group: "g".into(),
                topic: "in".into(),
                partition: 0,
                offset: 42,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: 1,
            };
            b.txns
                .commit_offsets(&b, "t1", pid, epoch, "g", vec![offset])
                .await
                .unwrap();
            assert!(b.txns.has_pending_offset("g", "in", 0));
            let append = PartitionAppend {
                partition: topic.partitions[0].clone(),
                batches: vec![txn_record(pid, epoch, 0)],
            };
            assert_eq!(
                b.writer.submit(vec![append]).await.await[0].as_ref().ok(),
                Some(&0)
            );
            assert_eq!(topic.partitions[0].last_stable_offset(), 0);
            // The broker stops right after persisting PrepareCommit, before any marker.
            {
                let entry = b.txns.entry("t1").unwrap();
                let mut meta = entry.lock().await;
                meta.prepare_end(true, now_ms());
                b.txns.persist(&b, &meta).await.unwrap();
            }
            drop(topic);
            let b = Arc::into_inner(b).expect("only handle");
            drop(b);
            thread.join().unwrap();
            (pid, epoch)
        });
        rt.block_on(async {
            let (b, thread) = open_broker(dir.path());
            let p = b.catalog.get("out").unwrap().partitions[0].clone();
            // Before recovery the transaction still holds the LSO, and its
            // offsets are still pending.
            assert_eq!((p.high_watermark(), p.last_stable_offset()), (1, 0));
            assert!(b.txns.has_pending_offset("g", "in", 0));
            b.txns.recover(&b).await;
            assert_eq!((p.high_watermark(), p.last_stable_offset()), (2, 2));
            assert!(p.aborted_between(0, 2).is_empty());
            assert!(!b.txns.has_pending_offset("g", "in", 0));
            assert_eq!(
                b.groups.offsets.get("g", "in", 0).map(|c| c.offset),
                Some(42)
            );
            let m = b.txns.describe(&b, "t1").await.unwrap();
            assert_eq!(m.state, TxnState::CompleteCommit);
            // A retried EndTxn of the producer succeeds.
            b.txns.end_txn(&b, "t1", pid, epoch, true).await.unwrap();
            // Recovering again writes nothing more.
            b.txns.recover(&b).await;
            assert_eq!(p.high_watermark(), 2);
            drop(p);
            drop(Arc::into_inner(b).expect("only handle"));
            thread.join().unwrap();
        });
    }

    #[test]
    fn transactional_data_without_a_transaction_is_aborted_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = crate::types::TopicName::parse("hang").unwrap();
        rt.block_on(async {
            let (b, thread) = open_broker(dir.path());
            let topic = b
                .catalog
                .create_topic(&name, 1, Default::default())
                .unwrap();
            let p = topic.partitions[0].clone();
            // Data of a producer the coordinator has no transaction for.
            b.writer.active_txns().set(
                999,
                TxnGate {
                    epoch: 3,
                    ongoing: true,
                    partitions: [p.uid].into_iter().collect(),
                },
            );
            let append = PartitionAppend {
                partition: p.clone(),
                batches: vec![txn_record(999, 3, 0)],
            };
            assert!(b.writer.submit(vec![append]).await.await[0].is_ok());
            drop((topic, p));
            drop(Arc::into_inner(b).expect("only handle"));
            thread.join().unwrap();
        });
        rt.block_on(async {
            let (b, thread) = open_broker(dir.path());
            let p = b.catalog.get("hang").unwrap().partitions[0].clone();
            assert_eq!(p.last_stable_offset(), 0);
            b.txns.recover(&b).await;
            assert_eq!((p.high_watermark(), p.last_stable_offset()), (2, 2));
            let aborted = p.aborted_between(0, 2);
            assert_eq!(aborted.len(), 1);
            assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (999, 0));
            drop(p);
            drop(Arc::into_inner(b).expect("only handle"));
            thread.join().unwrap();
        });
    }

    #[test]
    fn state_names_round_trip() {
        for s in TxnState::ALL {
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnState::from_name("Dead"), None);
    }

    #[test]
    fn meta_round_trips_as_json() {
        let mut m = fresh();
        m.bump(None, 1000, 1, no_new_id).unwrap();
        m.add(&[("a".to_string(), 3)], Some("g"), 5).unwrap();
        let json = serde_json::to_vec(&m).unwrap();
        let back: TxnMeta = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, m);
    }
}
