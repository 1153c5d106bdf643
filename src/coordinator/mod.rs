//! The group coordinator: every consumer group on this node, their
//! membership state machines (`group`) and committed offsets (`offsets`).
//! The transaction coordinator (`txn`) lives alongside.
//!
//! Groups live behind one lock; no operation awaits while holding it. A
//! ticker drives session timeouts, rebalance timeouts and the initial delay.

mod consumer;
pub mod consumer_group;
pub mod group;
pub mod group_configs;
pub mod internal_topic;
pub mod migration;
pub mod offsets;
pub mod offsets_log;
mod share;
pub mod share_group;
pub mod share_state;
pub mod txn;
pub mod txn_log;
pub mod txn_markers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{BrokerError, BrokerResult};
use group::{Group, GroupConfig, GroupState, JoinRequest, JoinResponse, Pending, SyncResponse};
use offsets::OffsetStore;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// How often expired offsets of member-less groups are looked for.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// A group's state as logged in `__consumer_offsets` (cluster mode).
#[derive(Debug, Clone)]
pub enum LoggedGroup {
    Classic(group::GroupSnapshot),
    Consumer(consumer_group::ConsumerSnapshot),
}

/// What DescribeGroups and ListGroups report about a group.
pub struct GroupSummary {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberSummary>,
}

pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Who sends a SyncGroup.
pub struct SyncMember<'a> {
    pub generation: i32,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// KIP-848 consumer groups (`consumer` and `consumer_group`).
    consumer_groups: Mutex<HashMap<String, consumer_group::ConsumerGroup>>,
    /// KIP-932 share groups with members.
    share_groups: Mutex<HashMap<String, share_group::ShareGroup>>,
    /// Share group members whose session expired, for the share state to release.
    share_departed: Mutex<Vec<(String, String)>>,
    pub offsets: OffsetStore,
    /// Cluster mode: the `__consumer_offsets` partitions loaded here.
    pub loaded: internal_topic::Loaded,
    /// Cluster mode: offsets committed by transactions not ended yet.
    pub txn_offsets: offsets_log::TxnOffsets,
    pub config: GroupConfig,
    /// `offsets.retention.minutes`: offsets of a group without members older than this go.
    offsets_retention: Duration,
    /// Cluster mode: group state and offsets live in `__consumer_offsets`;
    /// expiry goes through it (`offsets_log::expire`), not the ticker, and
    /// groups whose state changed stay until it is logged.
    pub replicated: std::sync::atomic::AtomicBool,
}

impl GroupCoordinator {
    pub fn new(offsets: OffsetStore, config: GroupConfig, offsets_retention: Duration) -> Self {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            consumer_groups: Mutex::new(HashMap::new()),
            share_groups: Mutex::new(HashMap::new()),
            share_departed: Mutex::new(Vec::new()),
            offsets,
            loaded: Default::default(),
            txn_offsets: Default::default(),
            config,
            offsets_retention,
            replicated: Default::default(),
        }
    }

    fn lock(&self) -> BrokerResult<MutexGuard<'_, HashMap<String, Group>>> {
        self.groups
            .lock()
            .map_err(|_| BrokerError::Storage("group coordinator lock poisoned".into()))
    }

    /// Cluster mode: forgets the live state (members, generations) of the
    /// groups `which` selects, whose coordination moved to another broker.
    pub fn unload(&self, which: impl Fn(&str) -> bool) {
        if let Ok(mut groups) = self.lock() {
            groups.retain(|id, _| !which(id));
        }
        self.consumer_unload(&which);
    }

    /// Starts the deadline ticker; it stops when the coordinator is dropped.
    pub fn spawn_ticker(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last_expiry = Instant::now();
            loop {
                interval.tick().await;
                let Some(c) = weak.upgrade() else { break };
                let now = Instant::now();
                c.tick(now);
                if now.duration_since(last_expiry) >= EXPIRY_CHECK {
                    last_expiry = now;
                    c.expire_offsets();
                }
            }
        });
    }

    fn tick(&self, now: Instant) {
        self.consumer_tick(now);
        self.share_tick(now);
        let Ok(mut groups) = self.lock() else { return };
        for g in groups.values_mut() {
            g.tick(now);
        }
        // Forget empty groups that have nothing committed (in a cluster,
        // once their last state is logged).
        let replicated = self.replicated.load(std::sync::atomic::Ordering::Relaxed);
        groups.retain(|id, g| {
            !(g.is_empty()
                && g.state == GroupState::Empty
                && !self.offsets.has_group(id)
                && !(replicated && g.changed))
        });
    }

    /// Kafka keeps a group's offsets while it has members; once empty, each
    /// offset lives `offsets.retention.minutes` from its commit. The offsets
    /// due to go, by group.
    pub fn expired_offsets(&self) -> BrokerResult<offsets::GroupPartitions> {
        let idle: Vec<String> = {
            let groups = self.lock()?;
            self.offsets
                .groups()
                .into_iter()
                .filter(|g| groups.get(g).is_none_or(|grp| grp.members.is_empty()))
                .collect()
        };
        let retention_ms = i64::try_from(self.offsets_retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::types::now_ms().saturating_sub(retention_ms);
        self.offsets.older_than(&idle, cutoff)
    }

    /// Standalone expiry: the local store is the truth. (In a cluster the
    /// tombstones go through `__consumer_offsets` first: `offsets_log::expire`.)
    fn expire_offsets(&self) {
        if self.replicated.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let result = self.expired_offsets().and_then(|due| {
            due.iter().try_fold(0, |n, (g, keys)| {
                self.offsets.delete(g, Some(keys)).map(|()| n + keys.len())
            })
        });
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired committed offsets of empty groups"),
            Err(e) => tracing::warn!(error = %e, "offset expiry failed"),
        }
    }

    /// Cluster mode: the groups (of either protocol) whose state the log
    /// must keep now, with that state (their flags cleared); `only` limits
    /// it to one group.
    pub fn take_changed(&self, only: Option<&str>) -> Vec<(String, LoggedGroup)> {
        let mut out: Vec<(String, LoggedGroup)> = match self.lock() {
            Ok(mut groups) => groups
                .iter_mut()
                .filter(|(id, g)| g.changed && only.is_none_or(|o| o == id.as_str()))
                .filter_map(|(id, g)| {
                    let snap = g.snapshot()?;
                    g.changed = false;
                    Some((id.clone(), LoggedGroup::Classic(snap)))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.extend(
            self.consumer_take_changed(only)
                .into_iter()
                .map(|(id, s)| (id, LoggedGroup::Consumer(s))),
        );
        out
    }

    /// The group's state must be logged again (an attempt failed).
    pub fn mark_changed(&self, group_id: &str) {
        if let Ok(mut groups) = self.lock() {
            if let Some(g) = groups.get_mut(group_id) {
                g.changed = true;
            }
        }
        self.consumer_mark_changed(group_id);
    }

    /// Cluster mode: groups as the log left them, on loading their partition.
    pub fn restore(
        &self,
        snapshots: Vec<(String, LoggedGroup)>,
        session: impl Fn(&str) -> Duration,
    ) {
        let mut consumer = Vec::new();
        let mut classic = Vec::new();
        for (id, s) in snapshots {
            match s {
                LoggedGroup::Classic(s) => classic.push((id, s)),
                LoggedGroup::Consumer(s) => consumer.push((id, s)),
            }
        }
        self.consumer_restore(consumer, session);
        let Ok(mut groups) = self.lock() else { return };
        let now = Instant::now();
        for (id, snap) in classic {
            if snap.members.is_empty() {
                groups.remove(&id);
                continue;
            }
            tracing::info!(group = %id, generation = snap.generation, members = snap.members.len(), "group resumed from the log");
            groups.insert(id.clone(), Group::restore(&id, snap, now));
        }
    }

    pub async fn join(
        &self,
        group_id: &str,
        req: JoinRequest,
        ctx: &migration::ProtocolContext,
    ) -> JoinResponse {
        if group_id.is_empty() {
            return JoinResponse::error(BrokerError::InvalidGroupId, &req.member_id);
        }
        if self.is_share_group(group_id) {
            return JoinResponse::error(BrokerError::InconsistentGroupProtocol, &req.member_id);
        }
        // A consumer group with members takes classic members too (online
        // migration): the coordinator assigns them.
        if let Some(r) = self.classic_join_consumer(group_id, &req, ctx) {
            return r;
        }
        let member_id = req.member_id.clone();
        let pending = match self.lock() {
            Ok(mut groups) => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, Instant::now()))
                .join(req, Instant::now(), &self.config),
            Err(e) => return JoinResponse::error(e, &member_id),
        };
        match pending {
            Pending::Now(r) => r,
            Pending::Later(rx) => rx
                .await
                .unwrap_or_else(|_| JoinResponse::error(BrokerError::UnknownMemberId, &member_id)),
        }
    }

    /// SyncGroup. `names` names topics by id, for a classic member of a
    /// consumer group whose assignment the coordinator encodes.
    pub async fn sync(
        &self,
        group_id: &str,
        who: SyncMember<'_>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        names: impl FnOnce() -> std::collections::BTreeMap<uuid::Uuid, String>,
    ) -> SyncResponse {
        let SyncMember {
            generation,
            member_id,
            instance_id,
        } = who;
        if let Some(r) =
            self.classic_sync_consumer(group_id, generation, member_id, instance_id, names)
        {
            return r;
        }
        let pending = match self.lock() {
            Ok(mut groups) => match groups.get_mut(group_id) {
                Some(g) => g.sync(
                    generation,
                    member_id,
                    instance_id,
                    protocol,
                    assignments,
                    Instant::now(),
                ),
                None => return SyncResponse::error(BrokerError::UnknownMemberId),
            },
            Err(e) => return SyncResponse::error(e),
        };
        match pending {
            Pending::Now(r) => r,
            Pending::Later(rx) => rx
                .await
                .unwrap_or_else(|_| SyncResponse::error(BrokerError::RebalanceInProgress)),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> BrokerResult<()> {
        {
            let mut groups = self.lock()?;
            if let Some(g) = groups.get_mut(group_id) {
                return g.heartbeat(generation, member_id, instance_id, Instant::now());
            }
        }
        self.classic_heartbeat_consumer(group_id, generation, member_id, instance_id)
            .unwrap_or(Err(BrokerError::UnknownMemberId))
    }

    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> BrokerResult<()> {
        {
            let mut groups = self.lock()?;
            if let Some(g) = groups.get_mut(group_id) {
                return g.leave(member_id, instance_id, Instant::now());
            }
        }
        self.classic_leave_consumer(group_id, member_id, instance_id)
            .unwrap_or(Err(BrokerError::UnknownMemberId))
    }

    /// The membership checks of an offset commit (a member-less commit
    /// creates the group).
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> BrokerResult<()> {
        if group_id.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        if self.is_share_group(group_id) {
            // A share group commits nothing: its progress is its share state.
            return Err(BrokerError::GroupIdNotFound);
        }
        if let Some(r) = self.consumer_commit_check(group_id, member_id, generation) {
            return r;
        }
        {
            let mut groups = self.lock()?;
            match groups.get(group_id) {
                Some(g) => g.validate_commit(generation, member_id, instance_id)?,
                None if generation < 0 => {
                    groups.insert(group_id.to_string(), Group::new(group_id, Instant::now()));
                }
                None => return Err(BrokerError::IllegalGeneration),
            }
        }
        Ok(())
    }

    /// Membership checks for a transactional offset commit (the offsets
    /// themselves wait for the transaction, see `txn`).
    pub fn validate_txn_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> BrokerResult<()> {
        if group_id.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        if let Some(r) = self.consumer_commit_check(group_id, member_id, generation) {
            return r;
        }
        let groups = self.lock()?;
        match groups.get(group_id) {
            Some(g) => g.validate_txn_commit(generation, member_id, instance_id),
            None if !member_id.is_empty() => Err(BrokerError::UnknownMemberId),
            None => Ok(()),
        }
    }

    fn summary(&self, g: &Group) -> GroupSummary {
        let protocol = g.protocol_name.clone().unwrap_or_default();
        GroupSummary {
            id: g.id.clone(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// `None` for a group this node has never seen (Kafka reports it as Dead).
    pub fn describe(&self, group_id: &str) -> BrokerResult<Option<GroupSummary>> {
        let groups = self.lock()?;
        if let Some(g) = groups.get(group_id) {
            return Ok(Some(self.summary(g)));
        }
        Ok(self.offsets.has_group(group_id).then(|| GroupSummary {
            id: group_id.to_string(),
            state: GroupState::Empty.name(),
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        }))
    }

    pub fn list(&self) -> BrokerResult<Vec<GroupSummary>> {
        let groups = self.lock()?;
        let mut out: Vec<GroupSummary> = groups.values().map(|g| self.summary(g)).collect();
        for id in self.offsets.groups() {
            if !groups.contains_key(&id) {
                out.push(GroupSummary {
                    id,
                    state: GroupState::Empty.name(),
                    protocol_type: String::new(),
                    protocol_name: String::new(),
                    members: Vec::new(),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// DeleteGroups: only groups without members; their offsets go too.
    /// DeleteGroups' checks: the group exists and has no members.
    pub fn check_deletable(&self, group_id: &str) -> BrokerResult<()> {
        if let Some(g) = self.consumer_group(group_id) {
            return if g.members.is_empty() {
                Ok(())
            } else {
                Err(BrokerError::NonEmptyGroup)
            };
        }
        let groups = self.lock()?;
        match groups.get(group_id) {
            Some(g) if !g.is_empty() => Err(BrokerError::NonEmptyGroup),
            Some(_) => Ok(()),
            None if self.offsets.has_group(group_id) => Ok(()),
            None => Err(BrokerError::GroupIdNotFound),
        }
    }

    pub fn delete_group(&self, group_id: &str) -> BrokerResult<()> {
        if let Some(r) = self.consumer_delete(group_id) {
            r?;
            self.offsets.delete(group_id, None)?;
            tracing::info!(group = group_id, "consumer group deleted");
            return Ok(());
        }
        let mut groups = self.lock()?;
        match groups.get(group_id) {
            Some(g) if !g.is_empty() => return Err(BrokerError::NonEmptyGroup),
            Some(_) => {}
            None if self.offsets.has_group(group_id) => {}
            None => return Err(BrokerError::GroupIdNotFound),
        }
        self.offsets.delete(group_id, None)?;
        groups.remove(group_id);
        tracing::info!(group = group_id, "group deleted");
        Ok(())
    }

    /// Topics the group's current members subscribed to (for OffsetDelete).
    pub fn subscribed_topics(&self, group_id: &str) -> BrokerResult<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let groups = self.lock()?;
        let Some(g) = groups.get(group_id) else {
            return Ok(Vec::new());
        };
        if g.protocol_type.as_deref() != Some("consumer") {
            return Ok(Vec::new());
        }
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let mut topics = Vec::new();
        for m in g.members.values() {
            let mut meta = m.metadata_for(&protocol);
            if meta.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            let _ = bytes::Buf::get_i16(&mut meta);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut meta, version.clamp(0, 3)) {
                topics.extend(sub.topics.iter().map(|t| t.to_string()));
            }
        }
        Ok(topics)
    }
}
