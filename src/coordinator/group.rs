//! One consumer group's state machine (Kafka's classic group protocol):
//! Empty → PreparingRebalance → CompletingRebalance → Stable, with members
//! joining, syncing, heartbeating, leaving and expiring.
//!
//! Pure logic over `Instant`s: the coordinator calls it under a lock and a
//! ticker drives the deadlines, so everything here is unit-testable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::BrokerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Broker settings that shape every group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub max_size: usize,
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

/// One member in a JoinGroup response (the leader gets them all).
#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinResponse {
    pub error: Option<BrokerError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinedMember>,
    /// The leader already computed this generation's assignment (static rejoin).
    pub skip_assignment: bool,
}

impl JoinResponse {
    pub fn error(e: BrokerError, member_id: &str) -> Self {
        JoinResponse {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncResponse {
    pub error: Option<BrokerError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(e: BrokerError) -> Self {
        SyncResponse {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Either an answer now or one that arrives when the rebalance moves on.
pub enum Pending<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncResponse>>,
    heartbeat_deadline: Instant,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn fail_waiters(&mut self, e: &BrokerError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(JoinResponse::error(e.clone(), &self.id));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(SyncResponse::error(e.clone()));
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first member becomes leader when none is left.
    pub members: IndexMap<String, Member>,
    /// Dynamic members told MEMBER_ID_REQUIRED, with when they expire.
    pending: HashMap<String, Instant>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    rebalance_deadline: Instant,
    /// Initial delay: completion waits at least until here.
    join_ready_at: Instant,
    initial_delay_started: Option<Instant>,
    /// Cluster mode: the group reached a state the log must keep (a new
    /// stable generation, a replaced static member, no members left).
    pub changed: bool,
}

/// What a group's coordinator logs about a group (cluster mode) so that the
/// next coordinator resumes it as it was: its stable generation, members
/// and their assignments. Members keep heartbeating and committing across
/// the failover without a rebalance, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

impl Group {
    pub fn new(id: &str, now: Instant) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: now,
            join_ready_at: now,
            initial_delay_started: None,
            changed: false,
        }
    }

    /// The state to log: a stable group with its members, or a group left
    /// without members. `None` mid-rebalance (the next stable state is logged).
    pub fn snapshot(&self) -> Option<GroupSnapshot> {
        let members = match self.state {
            GroupState::Stable => self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            _ if self.members.is_empty() => Vec::new(),
            _ => return None,
        };
        Some(GroupSnapshot {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members,
        })
    }

    /// A group as a previous coordinator logged it. Its members' sessions
    /// start now: those that are gone expire and cause a rebalance.
    pub fn restore(id: &str, snap: GroupSnapshot, now: Instant) -> Self {
        let mut g = Group::new(id, now);
        g.generation = snap.generation;
        g.protocol_type = snap.protocol_type;
        g.protocol_name = snap.protocol_name;
        for m in snap.members {
            let session_timeout = Duration::from_millis(m.session_timeout_ms);
            if let Some(inst) = &m.instance_id {
                g.static_members.insert(inst.clone(), m.id.clone());
            }
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|(n, b)| (n, Bytes::from(b)))
                        .collect(),
                    assignment: Bytes::from(m.assignment),
                    join_waiter: None,
                    sync_waiter: None,
                    heartbeat_deadline: now + session_timeout,
                },
            );
        }
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
            g.leader = snap
                .leader
                .filter(|l| g.members.contains_key(l))
                .or_else(|| g.members.keys().next().cloned());
        }
        g
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Protocols every member supports, in the first member's order.
    fn common_protocols(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .common_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Each member votes for its most preferred common protocol.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.common_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(p)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        // max_by_key keeps the last maximum; iterate reversed so ties go to the first.
        votes
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(c, _)| c)
    }

    fn check_instance(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        if let Some(inst) = instance_id {
            match self.static_members.get(inst) {
                Some(owner) if owner != member_id => return Err(BrokerError::FencedInstanceId),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Pending<JoinResponse> {
        if req.session_timeout < cfg.min_session_timeout
            || req.session_timeout > cfg.max_session_timeout
        {
            return Pending::Now(JoinResponse::error(
                BrokerError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return Pending::Now(JoinResponse::error(
                BrokerError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(inst) = req.instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&inst).cloned() {
                    return self.replace_static_member(&old_id, new_id, req, now);
                }
                return self.add_member(new_id, req, now, cfg);
            }
            if req.require_known_member_id {
                self.pending
                    .insert(new_id.clone(), now + req.session_timeout);
                return Pending::Now(JoinResponse::error(BrokerError::MemberIdRequired, &new_id));
            }
            return self.add_member(new_id, req, now, cfg);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member(id, req, now, cfg);
        }
        if let Err(e) = self.check_instance(&req.member_id, req.instance_id.as_deref()) {
            return Pending::Now(JoinResponse::error(e, &req.member_id));
        }
        let state = self.state;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return Pending::Now(JoinResponse::error(
                BrokerError::UnknownMemberId,
                &req.member_id,
            ));
        };
        let changed = m.protocols != req.protocols;
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.heartbeat_deadline = now + m.session_timeout;
        let (tx, rx) = oneshot::channel();
        match state {
            GroupState::PreparingRebalance => {
                m.join_waiter = Some(tx);
                self.maybe_complete_join(now);
                Pending::Later(rx)
            }
            GroupState::CompletingRebalance if !changed => {
                let id = m.id.clone();
                Pending::Now(self.join_response_for(&id))
            }
            GroupState::Stable if !changed && !is_leader => {
                let id = m.id.clone();
                Pending::Now(self.join_response_for(&id))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.join_waiter = Some(tx);
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
                Pending::Later(rx)
            }
            GroupState::Empty => Pending::Now(JoinResponse::error(
                BrokerError::UnknownMemberId,
                &req.member_id,
            )),
        }
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Pending<JoinResponse> {
        if self.members.len() >= cfg.max_size {
            return Pending::Now(JoinResponse::error(BrokerError::GroupMaxSizeReached, &id));
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let (tx, rx) = oneshot::channel();
        if let Some(inst) = &req.instance_id {
            self.static_members.insert(inst.clone(), id.clone());
        }
        let rebalance_timeout = req.rebalance_timeout;
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                heartbeat_deadline: now + req.session_timeout,
            },
        );
        match self.state {
            GroupState::Empty => {
                // The first join waits group.initial.rebalance.delay.ms so that
                // members starting together land in one generation.
                self.prepare_rebalance(now);
                self.initial_delay_started = Some(now);
                self.join_ready_at = now + cfg.initial_rebalance_delay.min(rebalance_timeout);
            }
            GroupState::PreparingRebalance => {
                if let Some(started) = self.initial_delay_started {
                    let limit = started + self.max_rebalance_timeout();
                    self.join_ready_at = (now + cfg.initial_rebalance_delay).min(limit);
                }
                self.rebalance_deadline = self.rebalance_deadline.max(now + rebalance_timeout);
            }
            GroupState::CompletingRebalance | GroupState::Stable => self.prepare_rebalance(now),
        }
        self.maybe_complete_join(now);
        Pending::Later(rx)
    }

    /// A static member restarted with a new member id: it takes the old one's place.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        now: Instant,
    ) -> Pending<JoinResponse> {
        let Some(mut m) = self.members.shift_remove(old_id) else {
            self.static_members.retain(|_, v| v != old_id);
            return Pending::Now(JoinResponse::error(BrokerError::UnknownMemberId, &new_id));
        };
        m.fail_waiters(&BrokerError::FencedInstanceId);
        // As in Kafka, a static member coming back only forces a rebalance if
        // the group's chosen protocol would no longer fit; metadata may differ.
        let keeps_protocol = self
            .protocol_name
            .as_ref()
            .is_some_and(|chosen| req.protocols.iter().any(|(n, _)| n == chosen));
        m.id = new_id.clone();
        m.protocols = req.protocols;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.heartbeat_deadline = now + m.session_timeout;
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(inst) = &m.instance_id {
            self.static_members.insert(inst.clone(), new_id.clone());
        }
        let (tx, rx) = oneshot::channel();
        match self.state {
            // Same protocol: keep the assignment, no rebalance. A returning
            // leader gets the members but is told the assignment stands.
            GroupState::Stable if keeps_protocol => {
                self.members.insert(new_id.clone(), m);
                self.changed = true;
                let mut resp = self.join_response_for(&new_id);
                resp.skip_assignment = was_leader;
                Pending::Now(resp)
            }
            GroupState::PreparingRebalance => {
                m.join_waiter = Some(tx);
                self.members.insert(new_id, m);
                self.maybe_complete_join(now);
                Pending::Later(rx)
            }
            _ => {
                m.join_waiter = Some(tx);
                self.members.insert(new_id, m);
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
                Pending::Later(rx)
            }
        }
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// A rebalance every member must rejoin for (a group converted back
    /// from the consumer protocol).
    pub fn force_rebalance(&mut self, now: Instant) {
        self.changed = true;
        self.prepare_rebalance(now);
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResponse::error(BrokerError::RebalanceInProgress));
                }
            }
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = now + self.max_rebalance_timeout();
        self.join_ready_at = now;
        self.initial_delay_started = None;
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), "preparing rebalance");
    }

    /// Completes the join phase once everyone rejoined (after any initial
    /// delay) or the rebalance timeout passed.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        if (all_joined && now >= self.join_ready_at) || now >= self.rebalance_deadline {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member_entry(&id);
        }
        self.pending.clear();
        self.initial_delay_started = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = ?self.protocol_name,
            "join phase complete"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.join_response_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.heartbeat_deadline = now + m.session_timeout;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(resp);
                }
            }
        }
    }

    /// The JoinGroup answer for the current generation; the leader gets every
    /// member's metadata to compute the assignment.
    fn join_response_for(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    fn member_checked(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&mut Member, BrokerError> {
        self.check_instance(member_id, instance_id)?;
        let current = self.generation;
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        if generation != current {
            return Err(BrokerError::IllegalGeneration);
        }
        Ok(m)
    }

    pub fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncResponse> {
        let state = self.state;
        let (ptype, pname) = (self.protocol_type.clone(), self.protocol_name.clone());
        let is_leader = self.leader.as_deref() == Some(member_id);
        let m = match self.member_checked(generation, member_id, instance_id) {
            Ok(m) => m,
            Err(e) => return Pending::Now(SyncResponse::error(e)),
        };
        if protocol.0.is_some_and(|t| Some(t) != ptype.as_deref())
            || protocol.1.is_some_and(|n| Some(n) != pname.as_deref())
        {
            return Pending::Now(SyncResponse::error(BrokerError::InconsistentGroupProtocol));
        }
        m.heartbeat_deadline = now + m.session_timeout;
        match state {
            GroupState::Empty => Pending::Now(SyncResponse::error(BrokerError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Pending::Now(SyncResponse::error(BrokerError::RebalanceInProgress))
            }
            GroupState::Stable => Pending::Now(SyncResponse {
                error: None,
                protocol_type: ptype,
                protocol_name: pname,
                assignment: m.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                m.sync_waiter = Some(tx);
                if is_leader {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.changed = true;
                    tracing::info!(group = %self.id, generation = self.generation, "group stable");
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResponse {
                                error: None,
                                protocol_type: ptype.clone(),
                                protocol_name: pname.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Pending::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), BrokerError> {
        let state = self.state;
        let m = self.member_checked(generation, member_id, instance_id)?;
        m.heartbeat_deadline = now + m.session_timeout;
        match state {
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress),
            GroupState::Empty => Err(BrokerError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), BrokerError> {
        let id = match instance_id {
            Some(inst) => {
                let owner = self
                    .static_members
                    .get(inst)
                    .cloned()
                    .ok_or(BrokerError::UnknownMemberId)?;
                if !member_id.is_empty() && owner != member_id {
                    return Err(BrokerError::FencedInstanceId);
                }
                owner
            }
            None => {
                if self.pending.remove(member_id).is_some() {
                    self.maybe_complete_join(now);
                    return Ok(());
                }
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return Err(BrokerError::UnknownMemberId);
        }
        tracing::info!(group = %self.id, member = %id, "member left");
        self.remove_member(&id, now);
        Ok(())
    }

    fn remove_member_entry(&mut self, id: &str) {
        if let Some(mut m) = self.members.shift_remove(id) {
            m.fail_waiters(&BrokerError::UnknownMemberId);
            if self.members.is_empty() {
                self.changed = true;
            }
            if let Some(inst) = &m.instance_id {
                if self.static_members.get(inst).map(String::as_str) == Some(id) {
                    self.static_members.remove(inst);
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        self.remove_member_entry(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        self.maybe_complete_join(now);
    }

    /// Expires silent members and moves rebalances past their deadlines.
    pub fn tick(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline <= now
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session timeout expired; member removed");
            self.remove_member(&id, now);
        }
        if before != self.pending.len() || self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now);
        }
    }

    /// Checks an OffsetCommit against membership and generation. Commits with
    /// generation -1 and no member come from tools or `assign()` users and are
    /// allowed only while the group has no members.
    pub fn validate_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(BrokerError::UnknownMemberId)
            };
        }
        self.check_instance(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(BrokerError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(BrokerError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(BrokerError::IllegalGeneration);
        }
        Ok(())
    }

    /// Checks a transactional offset commit (TxnOffsetCommit v3+) as Kafka
    /// does: a fenced static member, an unknown member id or a stale
    /// generation is refused; a rebalance in progress is not.
    pub fn validate_txn_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        self.check_instance(member_id, instance_id)?;
        if !member_id.is_empty() && !self.members.contains_key(member_id) {
            return Err(BrokerError::UnknownMemberId);
        }
        if generation >= 0 && generation != self.generation {
            return Err(BrokerError::IllegalGeneration);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(0),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(1800),
            max_size: 100,
        }
    }

    fn req(member: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn now_val<T: std::fmt::Debug>(p: Pending<T>) -> T {
        match p {
            Pending::Now(v) => v,
            Pending::Later(mut rx) => rx.try_recv().expect("answer ready"),
        }
    }

    #[test]
    fn a_logged_stable_group_resumes_without_a_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new("g", t0);
        let a = now_val(g.join(req("", Some("s1")), t0, &cfg()));
        assert_eq!(a.generation, 1);
        let _ = now_val(g.sync(
            1,
            &a.member_id,
            Some("s1"),
            (None, None),
            vec![(a.member_id.clone(), Bytes::from_static(b"p0"))],
            t0,
        ));
        assert!(g.changed);
        let snap = g.snapshot().expect("stable: logged");
        let t1 = t0 + Duration::from_secs(5);
        let mut r = Group::restore("g", snap, t1);
        assert_eq!((r.state, r.generation), (GroupState::Stable, 1));
        assert_eq!(r.leader.as_deref(), Some(a.member_id.as_str()));
        // The member heartbeats and syncs on as before; its session restarted.
        r.heartbeat(1, &a.member_id, Some("s1"), t1).unwrap();
        let again = now_val(r.sync(1, &a.member_id, Some("s1"), (None, None), vec![], t1));
        assert_eq!(&again.assignment[..], b"p0");
        r.tick(t1 + Duration::from_secs(9));
        assert_eq!(r.members.len(), 1);
        // Its static id still maps to it: a rejoin with it replaces it in place.
        let back = now_val(r.join(req("", Some("s1")), t1, &cfg()));
        assert!(back.error.is_none(), "{:?}", back.error);
        // Silent past its session: removed, and the empty group is logged.
        r.tick(t1 + Duration::from_secs(30));
        assert!(r.members.is_empty() && r.changed);
        assert_eq!(r.snapshot().map(|s| s.members.len()), Some(0));
    }

    #[test]
    fn two_members_join_sync_and_rebalance_on_leave() {
        let t0 = Instant::now();
        let mut g = Group::new("g", t0);
        let first = now_val(g.join(req("", None), t0, &cfg()));
        assert!(matches!(first.error, Some(BrokerError::MemberIdRequired)));
        let a = now_val(g.join(req(&first.member_id, None), t0, &cfg()));
        assert_eq!(a.generation, 1);
        assert_eq!(a.leader, a.member_id);
        let sync = now_val(g.sync(
            1,
            &a.member_id,
            None,
            (None, None),
            vec![(a.member_id.clone(), Bytes::from_static(b"x"))],
            t0,
        ));
        assert_eq!(&sync.assignment[..], b"x");
        assert_eq!(g.state, GroupState::Stable);

        // A second member triggers a rebalance; the first learns via heartbeat.
        let second = now_val(g.join(req("", None), t0, &cfg()));
        let Pending::Later(mut rx_b) = g.join(req(&second.member_id, None), t0, &cfg()) else {
            panic!("must wait for the rebalance")
        };
        assert!(matches!(
            g.heartbeat(1, &a.member_id, None, t0),
            Err(BrokerError::RebalanceInProgress)
        ));
        let a2 = now_val(g.join(req(&a.member_id, None), t0, &cfg()));
        let b2 = rx_b.try_recv().unwrap();
        assert_eq!(a2.generation, 2);
        assert_eq!(a2.members.len(), 2);
        assert!(b2.members.is_empty());
        // Stale generation is rejected.
        assert!(matches!(
            g.heartbeat(1, &a.member_id, None, t0),
            Err(BrokerError::IllegalGeneration)
        ));
        // Empty assignment for b is still an answer.
        let Pending::Later(mut rx_sb) = g.sync(2, &b2.member_id, None, (None, None), vec![], t0)
        else {
            panic!()
        };
        let _ = now_val(g.sync(
            2,
            &a.member_id,
            None,
            (None, None),
            vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
            t0,
        ));
        assert!(rx_sb.try_recv().unwrap().assignment.is_empty());

        g.leave(&b2.member_id, None, t0).unwrap();
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn session_timeout_expires_member() {
        let t0 = Instant::now();
        let mut g = Group::new("g", t0);
        let mut r = req("", None);
        r.require_known_member_id = false;
        let a = now_val(g.join(r, t0, &cfg()));
        let _ = now_val(g.sync(1, &a.member_id, None, (None, None), vec![], t0));
        g.tick(t0 + Duration::from_secs(5));
        assert_eq!(g.members.len(), 1);
        g.tick(t0 + Duration::from_secs(11));
        assert!(g.members.is_empty());
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new("g", t0);
        let a = now_val(g.join(req("", Some("i-a")), t0, &cfg()));
        let b_wait = g.join(req("", Some("i-b")), t0, &cfg());
        assert!(matches!(b_wait, Pending::Later(_)));
        let a = now_val(g.join(req(&a.member_id, Some("i-a")), t0, &cfg()));
        let gen = a.generation;
        let leader = a.leader.clone();
        let follower_instance = if leader == a.member_id { "i-b" } else { "i-a" };
        let follower_id = g.static_members[follower_instance].clone();
        let Pending::Later(_f) = g.sync(gen, &follower_id, None, (None, None), vec![], t0) else {
            panic!()
        };
        let _ = now_val(g.sync(
            gen,
            &leader,
            None,
            (None, None),
            vec![(follower_id.clone(), Bytes::from_static(b"p0"))],
            t0,
        ));
        // The follower restarts with a new process: same instance id, no member id.
        let again = now_val(g.join(req("", Some(follower_instance)), t0, &cfg()));
        assert_eq!(again.generation, gen);
        assert_eq!(g.state, GroupState::Stable);
        let s = now_val(g.sync(
            gen,
            &again.member_id,
            Some(follower_instance),
            (None, None),
            vec![],
            t0,
        ));
        assert_eq!(&s.assignment[..], b"p0");
        // The old member id is fenced.
        assert!(matches!(
            g.heartbeat(gen, &follower_id, Some(follower_instance), t0),
            Err(BrokerError::FencedInstanceId)
        ));
    }

    #[test]
    fn rejects_bad_session_timeout_and_protocol() {
        let t0 = Instant::now();
        let mut g = Group::new("g", t0);
        let mut r = req("", None);
        r.session_timeout = Duration::from_millis(10);
        assert!(matches!(
            now_val(g.join(r, t0, &cfg())).error,
            Some(BrokerError::InvalidSessionTimeout)
        ));
        let mut r = req("", None);
        r.require_known_member_id = false;
        let _ = g.join(r, t0, &cfg());
        let mut other = req("", None);
        other.protocol_type = "connect".into();
        assert!(matches!(
            now_val(g.join(other, t0, &cfg())).error,
            Some(BrokerError::InconsistentGroupProtocol)
        ));
    }
}
