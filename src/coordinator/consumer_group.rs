//! One consumer group of the KIP-848 protocol (`group.protocol=consumer`):
//! the broker computes the assignment and reconciles each member towards
//! it through its heartbeats, with Kafka's epochs.
//!
//! - The group epoch goes up whenever what the assignment depends on
//!   changes (members, their subscriptions, the subscribed topics'
//!   partitions); the target assignment is recomputed for that epoch (the
//!   assignment epoch).
//! - A member moves to the new target in steps: first it is asked to revoke
//!   the partitions it must give up (its epoch stays), and only once its
//!   heartbeat no longer lists them are they released; then it receives the
//!   new partitions that no other member holds any more, with the new
//!   epoch. So a partition is never owned by two members at once.
//!
//! Pure logic over `Instant`s, under the coordinator's lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BrokerError, BrokerResult};

pub mod classic;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The subscribed topics' metadata: name → (id, partition count).
pub type TopicsMeta = BTreeMap<String, (Uuid, i32)>;

/// The racks of each partition's replicas (empty when brokers have no racks).
pub type PartitionRacks = BTreeMap<(Uuid, i32), BTreeSet<String>>;

pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Stable,
    /// Asked to revoke partitions; waiting for its heartbeat to drop them.
    UnrevokedPartitions,
    /// Has the new epoch but waits for partitions other members still hold.
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Duration,
    pub server_assignor: Option<String>,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    matcher: Option<regex::Regex>,
    pub epoch: i32,
    previous_epoch: i32,
    pub state: MemberState,
    /// What the member owns (as far as the coordinator let it).
    pub assigned: Assignment,
    /// What it was asked to give up and has not yet.
    pub revoking: Assignment,
    /// What its heartbeats last said it owns (they repeat it only on change).
    reported: Assignment,
    pub target: Assignment,
    session_deadline: Instant,
    revoke_deadline: Option<Instant>,
    /// The assignment last sent: answers carry it only when it changed.
    sent: Option<Assignment>,
    /// A static member that left (epoch -2), held until its session expires.
    left: bool,
    /// A member speaking the classic protocol (online migration).
    pub classic: Option<classic::ClassicMember>,
}

impl Member {
    fn subscribes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
            || self.matcher.as_ref().is_some_and(|r| r.is_match(topic))
    }
}

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub epoch: i32,
    pub assignment: Option<Assignment>,
}

/// The group-level settings a heartbeat is handled with.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session_timeout: Duration,
    pub max_size: usize,
    /// `group.consumer.migration.policy`.
    pub migration: super::migration::MigrationPolicy,
}

#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, Member>,
    statics: HashMap<String, String>,
    /// The subscribed topics' metadata the target was computed from.
    metadata: TopicsMeta,
    /// Partitions held (owned or being revoked) → the member holding them.
    owners: HashMap<(Uuid, i32), String>,
    /// Where the partitions' replicas are, for rack-aware assignment
    /// (refreshed by every heartbeat).
    pub racks: PartitionRacks,
    /// `group.consumer.migration.policy` as of the last heartbeat.
    pub migration: super::migration::MigrationPolicy,
    /// Cluster mode: the state changed since it was last logged.
    pub changed: bool,
}

/// What a coordinator logs about a consumer group (cluster mode), so the
/// next one resumes it: epochs, members with their subscriptions, epochs
/// and assignments (current, being revoked, reported, target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSnapshot {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub metadata: TopicsMeta,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: u64,
    pub server_assignor: Option<String>,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub revoking: Assignment,
    pub reported: Assignment,
    pub target: Assignment,
    #[serde(default)]
    pub left: bool,
    #[serde(default)]
    pub classic: Option<classic::ClassicMember>,
}

/// Kafka's regexes are RE2/J and must match the whole topic name.
pub fn compile_regex(re: &str) -> BrokerResult<regex::Regex> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        BrokerError::InvalidRegularExpression(format!("Invalid regular expression {re}: {e}"))
    })
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let left: BTreeSet<i32> = ps
                .iter()
                .filter(|p| !b.get(t).is_some_and(|x| x.contains(p)))
                .copied()
                .collect();
            (!left.is_empty()).then_some((*t, left))
        })
        .collect()
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|x| !x.is_disjoint(ps)))
}

fn contains(a: &Assignment, t: &Uuid, p: i32) -> bool {
    a.get(t).is_some_and(|x| x.contains(&p))
}

fn subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.iter().all(|p| contains(b, t, *p)))
}

impl ConsumerGroup {
    pub fn new(id: &str) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_string(),
            members: BTreeMap::new(),
            statics: HashMap::new(),
            metadata: TopicsMeta::new(),
            owners: HashMap::new(),
            racks: PartitionRacks::new(),
            migration: Default::default(),
            changed: false,
        }
    }

    pub fn snapshot(&self) -> ConsumerSnapshot {
        ConsumerSnapshot {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            metadata: self.metadata.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    server_assignor: m.server_assignor.clone(),
                    topics: m.topics.clone(),
                    regex: m.regex.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: m.state,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                    reported: m.reported.clone(),
                    target: m.target.clone(),
                    left: m.left,
                    classic: m.classic.clone(),
                })
                .collect(),
        }
    }

    /// A group as a previous coordinator logged it; its members' sessions
    /// start now.
    pub fn restore(id: &str, snap: ConsumerSnapshot, now: Instant, session: Duration) -> Self {
        let mut g = ConsumerGroup::new(id);
        g.epoch = snap.epoch;
        g.assignment_epoch = snap.assignment_epoch;
        g.assignor = snap.assignor;
        g.metadata = snap.metadata;
        for m in snap.members {
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                for p in ps {
                    g.owners.insert((*t, *p), m.id.clone());
                }
            }
            if let Some(i) = &m.instance_id {
                g.statics.insert(i.clone(), m.id.clone());
            }
            let matcher = m.regex.as_deref().and_then(|r| compile_regex(r).ok());
            let rebalance_timeout = Duration::from_millis(m.rebalance_timeout_ms);
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout,
                    server_assignor: m.server_assignor,
                    topics: m.topics,
                    regex: m.regex,
                    matcher,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: m.state,
                    assigned: m.assigned,
                    revoking: m.revoking,
                    reported: m.reported,
                    target: m.target,
                    session_deadline: now + session,
                    revoke_deadline: (m.state == MemberState::UnrevokedPartitions)
                        .then(|| now + rebalance_timeout.max(Duration::from_secs(1))),
                    // The next answer carries the assignment again.
                    sent: None,
                    left: m.left,
                    classic: m.classic,
                },
            );
        }
        g
    }

    /// Kafka's group states: Empty, Assigning (a new epoch's target is not
    /// computed yet), Reconciling (members still moving to it), Stable.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            !m.left && (m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// One heartbeat: joins (epoch 0), leaves (-1, or -2 for a static
    /// member), or reports progress; the member's new epoch and, when it
    /// changed, its assignment. `topics` is every topic's metadata.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        limits: &Limits,
        topics: &TopicsMeta,
    ) -> BrokerResult<HeartbeatAnswer> {
        if let Some(a) = &hb.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(BrokerError::UnsupportedAssignor(format!(
                    "Assignor {a} is not supported; supported: {}",
                    ASSIGNORS.join(", ")
                )));
            }
        }
        let matcher = hb.regex.as_deref().map(compile_regex).transpose()?;
        let mut resend = false;
        let id = match hb.epoch {
            -1 | -2 => {
                let Some(m) = self.members.get_mut(&hb.member_id) else {
                    return Err(BrokerError::UnknownMemberId);
                };
                if hb.epoch == -2 && m.instance_id.is_some() {
                    // A static member stepping away keeps its partitions
                    // until its session expires: back in time (a join with
                    // the same instance id), it takes them up again and
                    // nobody rebalances.
                    m.left = true;
                    tracing::info!(group = %self.id, member = %hb.member_id, "static member left; its partitions wait for it until its session expires");
                } else {
                    self.remove(&hb.member_id);
                }
                return Ok(HeartbeatAnswer {
                    member_id: hb.member_id,
                    epoch: hb.epoch,
                    assignment: None,
                });
            }
            0 => self.join(&hb, matcher.clone(), now, limits)?,
            e => {
                let m = self
                    .members
                    .get(&hb.member_id)
                    .filter(|m| !m.left)
                    .ok_or(BrokerError::UnknownMemberId)?;
                if e != m.epoch {
                    // A member that missed our last answer retries with its
                    // previous epoch: accepted while it owns nothing new.
                    let lost_answer = e == m.previous_epoch
                        && hb.owned.as_ref().is_none_or(|o| subset(o, &m.assigned));
                    if !lost_answer {
                        return Err(BrokerError::FencedMemberEpoch);
                    }
                    resend = true;
                }
                hb.member_id.clone()
            }
        };
        let mut bump = false;
        if let Some(m) = self.members.get_mut(&id) {
            m.session_deadline = now + limits.session_timeout;
            if let Some(o) = &hb.owned {
                m.reported = o.clone();
            }
            if hb.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = Duration::from_millis(hb.rebalance_timeout_ms as u64);
            }
            if hb.rack_id.is_some() {
                m.rack_id = hb.rack_id.clone();
            }
            if let Some(t) = &hb.topics {
                let mut t = t.clone();
                t.sort();
                t.dedup();
                if t != m.topics {
                    m.topics = t;
                    bump = true;
                }
            }
            if hb.regex.is_some() && hb.regex != m.regex {
                // An empty regex clears it.
                m.regex = hb.regex.clone().filter(|r| !r.is_empty());
                m.matcher = matcher.filter(|_| m.regex.is_some());
                bump = true;
            }
            if hb.assignor.is_some() && hb.assignor != m.server_assignor {
                m.server_assignor = hb.assignor.clone();
                bump = true;
            }
        }
        if bump {
            self.epoch += 1;
        }
        self.refresh_metadata(topics);
        if self.epoch > self.assignment_epoch {
            self.compute_target();
        }
        let owned = hb.owned.clone();
        self.reconcile(&id, now)?;
        let m = self
            .members
            .get_mut(&id)
            .ok_or(BrokerError::UnknownMemberId)?;
        let out_of_sync = owned.as_ref().is_some_and(|o| *o != m.assigned);
        let assignment = if resend || out_of_sync || m.sent.as_ref() != Some(&m.assigned) {
            m.sent = Some(m.assigned.clone());
            Some(m.assigned.clone())
        } else {
            None
        };
        Ok(HeartbeatAnswer {
            member_id: id,
            epoch: m.epoch,
            assignment,
        })
    }

    fn join(
        &mut self,
        hb: &Heartbeat,
        matcher: Option<regex::Regex>,
        now: Instant,
        limits: &Limits,
    ) -> BrokerResult<String> {
        if hb.topics.is_none() && hb.regex.is_none() {
            return Err(BrokerError::InvalidRequest(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in the first heartbeat"
                    .into(),
            ));
        }
        let id = if hb.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            hb.member_id.clone()
        };
        // A static member coming back takes over its predecessor's
        // partitions and epoch: no rebalance.
        let previous = hb
            .instance_id
            .as_ref()
            .and_then(|i| self.statics.get(i).cloned())
            .and_then(|old| self.members.remove(&old));
        if let Some(old) = &previous {
            for p in old.assigned.iter().chain(old.revoking.iter()) {
                for i in p.1 {
                    self.owners.insert((*p.0, *i), id.clone());
                }
            }
        } else if self.members.contains_key(&id) {
            // The same member joining again (its first answer was lost).
            self.remove(&id);
        }
        if previous.is_none() && self.members.len() >= limits.max_size {
            return Err(BrokerError::GroupMaxSizeReached);
        }
        let mut topics = hb.topics.clone().unwrap_or_default();
        topics.sort();
        topics.dedup();
        let mut m = Member {
            id: id.clone(),
            instance_id: hb.instance_id.clone(),
            rack_id: hb.rack_id.clone(),
            client_id: hb.client_id.clone(),
            client_host: hb.client_host.clone(),
            rebalance_timeout: Duration::from_millis(hb.rebalance_timeout_ms.max(0) as u64),
            server_assignor: hb.assignor.clone(),
            topics,
            regex: hb.regex.clone().filter(|r| !r.is_empty()),
            matcher,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            reported: Assignment::new(),
            target: Assignment::new(),
            session_deadline: now + limits.session_timeout,
            revoke_deadline: None,
            sent: None,
            left: false,
            classic: None,
        };
        let same_subscription = previous
            .as_ref()
            .is_some_and(|o| o.topics == m.topics && o.regex == m.regex);
        if let Some(old) = previous {
            m.epoch = old.epoch;
            m.previous_epoch = old.previous_epoch;
            m.state = old.state;
            m.assigned = old.assigned;
            m.revoking = old.revoking;
            m.reported = old.reported;
            m.target = old.target;
            m.revoke_deadline = old.revoke_deadline;
        }
        if let Some(i) = &m.instance_id {
            self.statics.insert(i.clone(), id.clone());
        }
        self.members.insert(id.clone(), m);
        if !same_subscription {
            self.epoch += 1;
        }
        Ok(id)
    }

    /// Removes a member and frees what it held; the group epoch goes up.
    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            self.owners.retain(|_, o| o != id);
            if let Some(i) = &m.instance_id {
                if self.statics.get(i).map(String::as_str) == Some(id) {
                    self.statics.remove(i);
                }
            }
            self.epoch += 1;
        }
    }

    /// Picks up topics created, deleted or grown that members subscribe to.
    fn refresh_metadata(&mut self, topics: &TopicsMeta) {
        let subscribed: TopicsMeta = topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| m.subscribes(name)))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        if subscribed != self.metadata {
            self.metadata = subscribed;
            self.epoch += 1;
        }
    }

    /// A new target assignment for the group epoch.
    fn compute_target(&mut self) {
        let chosen = self
            .members
            .values()
            .find_map(|m| m.server_assignor.clone())
            .unwrap_or_else(|| ASSIGNORS[0].to_string());
        let members: Vec<(String, Vec<String>)> = self
            .members
            .values()
            .map(|m| {
                let topics = self
                    .metadata
                    .keys()
                    .filter(|t| m.subscribes(t))
                    .cloned()
                    .collect();
                (m.id.clone(), topics)
            })
            .collect();
        let previous: BTreeMap<String, Assignment> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.target.clone()))
            .collect();
        let targets = if chosen == "range" {
            range(&members, &self.metadata)
        } else {
            let member_racks: BTreeMap<String, String> = self
                .members
                .values()
                .filter_map(|m| Some((m.id.clone(), m.rack_id.clone()?)))
                .collect();
            uniform(
                &members,
                &self.metadata,
                &previous,
                &Racks {
                    members: &member_racks,
                    partitions: &self.racks,
                },
            )
        };
        for m in self.members.values_mut() {
            m.target = targets.get(&m.id).cloned().unwrap_or_default();
        }
        self.assignor = chosen;
        self.assignment_epoch = self.epoch;
    }

    /// Moves a member one step towards its target.
    fn reconcile(&mut self, id: &str, now: Instant) -> BrokerResult<()> {
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return Err(BrokerError::UnknownMemberId);
        };
        if m.state == MemberState::UnrevokedPartitions {
            let still_owned = intersects(&m.reported, &m.revoking);
            if still_owned {
                if m.revoke_deadline.is_some_and(|d| d <= now) {
                    tracing::info!(group = %self.id, member = %id, "member did not revoke its partitions within its rebalance timeout; removed");
                    self.remove(id);
                    return Err(BrokerError::FencedMemberEpoch);
                }
                return Ok(());
            }
            let released = std::mem::take(&mut m.revoking);
            for (t, ps) in &released {
                for p in ps {
                    if self.owners.get(&(*t, *p)).map(String::as_str) == Some(id) {
                        self.owners.remove(&(*t, *p));
                    }
                }
            }
            m.state = MemberState::Stable;
            m.revoke_deadline = None;
        }
        if m.epoch == epoch && m.state == MemberState::Stable {
            return Ok(());
        }
        let revoke = minus(&m.assigned, &m.target);
        if !revoke.is_empty() {
            m.assigned = minus(&m.assigned, &revoke);
            m.revoking = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline = Some(now + m.rebalance_timeout.max(Duration::from_secs(1)));
            return Ok(());
        }
        let mut unreleased = false;
        for (t, ps) in m.target.clone() {
            for p in ps {
                if contains(&m.assigned, &t, p) {
                    continue;
                }
                match self.owners.get(&(t, p)) {
                    Some(o) if o != id => unreleased = true,
                    _ => {
                        self.owners.insert((t, p), id.to_string());
                        m.assigned.entry(t).or_default().insert(p);
                    }
                }
            }
        }
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        Ok(())
    }

    /// Removes members whose session expired; true if any went.
    pub fn tick(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "consumer group member session expired; removed");
            self.remove(id);
            self.changed = true;
        }
        !expired.is_empty()
    }

    /// OffsetCommit / OffsetFetch from a member: it must exist and carry
    /// its current epoch (STALE_MEMBER_EPOCH when older).
    pub fn check_member_epoch(&self, member_id: &str, epoch: i32) -> BrokerResult<()> {
        let m = self
            .members
            .get(member_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        match epoch.cmp(&m.epoch) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(BrokerError::StaleMemberEpoch),
            std::cmp::Ordering::Greater => Err(BrokerError::FencedMemberEpoch),
        }
    }
}

/// Members' racks and partitions' replica racks, for rack-aware assignment.
struct Racks<'a> {
    members: &'a BTreeMap<String, String>,
    partitions: &'a PartitionRacks,
}

impl Racks<'_> {
    #[cfg(test)]
    const NONE: Racks<'static> = Racks {
        members: &BTreeMap::new(),
        partitions: &BTreeMap::new(),
    };

    /// True if `member` sits in a rack holding a replica of the partition.
    fn local(&self, member: &str, t: &Uuid, p: i32) -> bool {
        self.members.get(member).is_some_and(|r| {
            self.partitions
                .get(&(*t, p))
                .is_some_and(|racks| racks.contains(r))
        })
    }
}

/// Balanced and sticky: a partition stays with its previous target owner
/// while that member subscribes to it and has room; the rest go to the
/// least loaded subscribed member, among those preferring one in a rack
/// that holds a replica of the partition (when members and brokers have racks).
fn uniform(
    members: &[(String, Vec<String>)],
    topics: &TopicsMeta,
    previous: &BTreeMap<String, Assignment>,
    racks: &Racks<'_>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    let mut load: BTreeMap<&str, usize> = members.iter().map(|(m, _)| (m.as_str(), 0)).collect();
    let all: Vec<(Uuid, i32, Vec<&str>)> = topics
        .iter()
        .flat_map(|(name, (id, n))| {
            let eligible: Vec<&str> = members
                .iter()
                .filter(|(_, ts)| ts.contains(name))
                .map(|(m, _)| m.as_str())
                .collect();
            (0..*n).map(move |p| (*id, p, eligible.clone()))
        })
        .filter(|(_, _, e)| !e.is_empty())
        .collect();
    // Each member keeps up to `floor` of its previous partitions, and
    // `extra` of them one more, so that a newcomer still gets its share.
    let subscribed = members.iter().filter(|(_, t)| !t.is_empty()).count().max(1);
    let (floor, mut extra) = (all.len() / subscribed, all.len() % subscribed);
    let mut left = Vec::new();
    let mut second = Vec::new();
    for (t, p, eligible) in &all {
        let keep = eligible
            .iter()
            .find(|m| previous.get(**m).is_some_and(|a| contains(a, t, *p)) && load[**m] < floor);
        match keep {
            Some(m) => {
                *load.entry(m).or_default() += 1;
                out.entry(m.to_string())
                    .or_default()
                    .entry(*t)
                    .or_default()
                    .insert(*p);
            }
            None => second.push((*t, *p, eligible)),
        }
    }
    for (t, p, eligible) in second {
        let keep = eligible.iter().find(|m| {
            extra > 0 && previous.get(**m).is_some_and(|a| contains(a, &t, p)) && load[**m] == floor
        });
        match keep {
            Some(m) => {
                extra -= 1;
                *load.entry(m).or_default() += 1;
                out.entry(m.to_string())
                    .or_default()
                    .entry(t)
                    .or_default()
                    .insert(p);
            }
            None => left.push((t, p, eligible)),
        }
    }
    // The most constrained partitions (fewest subscribers) first, so that
    // members with narrow subscriptions still get their share.
    left.sort_by_key(|(_, _, e)| e.len());
    for (t, p, eligible) in left {
        // A member in a replica's rack, if it stays within the balance
        // (floor, or floor + 1 while some may have one more); else the
        // least loaded.
        let within = |m: &str| load[m] < floor || (load[m] == floor && extra > 0);
        let local = eligible
            .iter()
            .filter(|m| racks.local(m, &t, p) && within(m))
            .min_by_key(|m| (load[**m], **m));
        if let Some(m) = local.or_else(|| eligible.iter().min_by_key(|m| (load[**m], **m))) {
            if load[*m] == floor {
                extra = extra.saturating_sub(1);
            }
            *load.entry(m).or_default() += 1;
            out.entry(m.to_string())
                .or_default()
                .entry(t)
                .or_default()
                .insert(p);
        }
    }
    out
}

/// Per topic, contiguous ranges of partitions over the subscribed members
/// in member id order (the first ones get one more when it does not divide).
fn range(members: &[(String, Vec<String>)], topics: &TopicsMeta) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    for (name, (id, n)) in topics {
        let mut subs: Vec<&str> = members
            .iter()
            .filter(|(_, ts)| ts.contains(name))
            .map(|(m, _)| m.as_str())
            .collect();
        if subs.is_empty() {
            continue;
        }
        subs.sort_unstable();
        let n = *n as usize;
        let (per, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0usize;
        for (i, m) in subs.iter().enumerate() {
            let count = per + usize::from(i < extra);
            let set: BTreeSet<i32> = (next..next + count).map(|p| p as i32).collect();
            next += count;
            if !set.is_empty() {
                out.entry(m.to_string()).or_default().insert(*id, set);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            migration: Default::default(),
            session_timeout: Duration::from_secs(45),
            max_size: 10,
        }
    }

    fn hb(member: &str, epoch: i32, owned: Option<&Assignment>) -> Heartbeat {
        Heartbeat {
            member_id: member.into(),
            epoch,
            rebalance_timeout_ms: 30_000,
            topics: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: owned.cloned(),
            ..Default::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn partitions_move_only_once_released() {
        let tid = Uuid::from_u128(7);
        let topics: TopicsMeta = [("t".to_string(), (tid, 6))].into();
        let t0 = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let a = g
            .heartbeat(hb("a", 0, None), t0, &limits(), &topics)
            .unwrap();
        let a_all = a.assignment.clone().unwrap();
        assert_eq!((a.epoch, count(&a_all)), (2, 6));
        assert_eq!(g.state(), "Stable");
        // B joins: the target splits; B gets nothing while A still owns it all.
        let b = g
            .heartbeat(hb("b", 0, None), t0, &limits(), &topics)
            .unwrap();
        assert_eq!(b.epoch, 3);
        assert_eq!(b.assignment.as_ref().map(count), Some(0));
        assert_eq!(g.state(), "Reconciling");
        // A is asked to revoke three, keeping its epoch.
        let a2 = g
            .heartbeat(hb("a", 2, Some(&a_all)), t0, &limits(), &topics)
            .unwrap();
        let kept = a2.assignment.clone().unwrap();
        assert_eq!((a2.epoch, count(&kept)), (2, 3));
        // Until A's heartbeat drops them, B still waits.
        let b2 = g
            .heartbeat(hb("b", 3, Some(&Assignment::new())), t0, &limits(), &topics)
            .unwrap();
        assert_eq!(b2.assignment, None);
        // A revoked: it moves to epoch 3, and B receives the released three.
        let a3 = g
            .heartbeat(hb("a", 2, Some(&kept)), t0, &limits(), &topics)
            .unwrap();
        assert_eq!(a3.epoch, 3);
        let b3 = g
            .heartbeat(hb("b", 3, Some(&Assignment::new())), t0, &limits(), &topics)
            .unwrap();
        let got = b3.assignment.unwrap();
        assert_eq!(count(&got), 3);
        assert!(!intersects(&got, &kept));
        assert_eq!(g.state(), "Stable");
        // Wrong epochs are fenced; unknown members are refused.
        assert!(matches!(
            g.heartbeat(hb("b", 9, None), t0, &limits(), &topics),
            Err(BrokerError::FencedMemberEpoch)
        ));
        assert!(matches!(
            g.heartbeat(hb("zz", 3, None), t0, &limits(), &topics),
            Err(BrokerError::UnknownMemberId)
        ));
        assert!(matches!(
            g.check_member_epoch("a", 2),
            Err(BrokerError::StaleMemberEpoch)
        ));
        g.check_member_epoch("a", 3).unwrap();
        // Logged and resumed elsewhere: the members carry on with their epochs.
        let mut r = ConsumerGroup::restore("g", g.snapshot(), t0, Duration::from_secs(45));
        assert_eq!(r.snapshot(), g.snapshot());
        let again = r
            .heartbeat(hb("b", 3, Some(&got)), t0, &limits(), &topics)
            .unwrap();
        assert_eq!((again.epoch, again.assignment), (3, Some(got.clone())));
        // B's session expires: A gets everything back.
        assert!(g.tick(t0 + Duration::from_secs(46)) || g.members.len() == 2);
    }

    #[test]
    fn a_static_member_that_steps_away_keeps_its_partitions() {
        let tid = Uuid::from_u128(9);
        let topics: TopicsMeta = [("t".to_string(), (tid, 4))].into();
        let t0 = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let join = |id: &str, inst: &str| Heartbeat {
            instance_id: Some(inst.to_string()),
            ..hb(id, 0, None)
        };
        let a = g
            .heartbeat(join("a", "s-a"), t0, &limits(), &topics)
            .unwrap();
        let a_all = a.assignment.clone().unwrap();
        let a2 = g
            .heartbeat(hb("a", a.epoch, Some(&a_all)), t0, &limits(), &topics)
            .unwrap();
        assert_eq!(a2.epoch, a.epoch);
        // Epoch -2: held, not removed; its old id is refused from now on.
        let left = g
            .heartbeat(hb("a", -2, None), t0, &limits(), &topics)
            .unwrap();
        assert_eq!(left.epoch, -2);
        assert!(matches!(
            g.heartbeat(hb("a", a.epoch, None), t0, &limits(), &topics),
            Err(BrokerError::UnknownMemberId)
        ));
        let epoch = g.epoch;
        // Back under a new member id with the same instance id: same partitions, same epoch.
        let back = g
            .heartbeat(join("a-again", "s-a"), t0, &limits(), &topics)
            .unwrap();
        assert_eq!((back.epoch, back.assignment), (a.epoch, Some(a_all)));
        assert_eq!(g.epoch, epoch);
        assert!(!g.members.contains_key("a"));
        // An unknown group id (no such member anywhere) is for the caller to refuse.
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn uniform_prefers_members_in_a_replica_rack() {
        let t = Uuid::from_u128(7);
        let topics: TopicsMeta = [("t".to_string(), (t, 4))].into();
        let members = vec![
            ("m1".to_string(), vec!["t".to_string()]),
            ("m2".to_string(), vec!["t".to_string()]),
        ];
        let member_racks: BTreeMap<String, String> =
            [("m1".into(), "r2".into()), ("m2".into(), "r1".into())].into();
        let partitions: PartitionRacks = (0..4)
            .map(|p| ((t, p), [if p < 2 { "r1" } else { "r2" }.to_string()].into()))
            .collect();
        let racks = Racks {
            members: &member_racks,
            partitions: &partitions,
        };
        let u = uniform(&members, &topics, &BTreeMap::new(), &racks);
        assert_eq!(u["m2"][&t], [0, 1].into());
        assert_eq!(u["m1"][&t], [2, 3].into());
        // Without racks it is balanced all the same.
        let plain = uniform(&members, &topics, &BTreeMap::new(), &Racks::NONE);
        assert_eq!(
            plain.values().map(|a| a[&t].len()).collect::<Vec<_>>(),
            [2, 2]
        );
    }

    #[test]
    fn assignors_balance() {
        let topics: TopicsMeta = [
            ("a".to_string(), (Uuid::from_u128(1), 5)),
            ("b".to_string(), (Uuid::from_u128(2), 2)),
        ]
        .into();
        let members = vec![
            ("m1".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("m2".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("m3".to_string(), vec!["a".to_string()]),
        ];
        let u = uniform(&members, &topics, &BTreeMap::new(), &Racks::NONE);
        let sizes: Vec<usize> = u.values().map(count).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // m3 never gets a partition of b, to which it does not subscribe.
        assert!(!u["m3"].contains_key(&Uuid::from_u128(2)));
        // Sticky: recomputing with the result as the previous target keeps it.
        assert_eq!(uniform(&members, &topics, &u, &Racks::NONE), u);
        // A newcomer gets its share; the others keep what they can.
        let one: TopicsMeta = [("a".to_string(), (Uuid::from_u128(1), 8))].into();
        let four: Vec<(String, Vec<String>)> = (1..=4)
            .map(|i| (format!("m{i}"), vec!["a".to_string()]))
            .collect();
        let before = uniform(&four, &one, &BTreeMap::new(), &Racks::NONE);
        let mut five = four.clone();
        five.push(("m5".to_string(), vec!["a".to_string()]));
        let after = uniform(&five, &one, &before, &Racks::NONE);
        let sizes: Vec<usize> = five
            .iter()
            .map(|(m, _)| after.get(m).map_or(0, count))
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|s| (1..=2).contains(s)), "{sizes:?}");
        let kept: usize = (1..=4)
            .map(|i| {
                let m = format!("m{i}");
                let old: Vec<&i32> = before[&m].values().flatten().collect();
                after.get(&m).map_or(0, |a| {
                    a.values().flatten().filter(|p| old.contains(p)).count()
                })
            })
            .sum();
        assert_eq!(kept, 7);
        let r = range(&members, &topics);
        assert_eq!(r["m1"][&Uuid::from_u128(1)], BTreeSet::from([0, 1]));
        assert_eq!(r["m3"][&Uuid::from_u128(1)], BTreeSet::from([4]));
        assert_eq!(r["m2"][&Uuid::from_u128(2)], BTreeSet::from([1]));
        assert!(compile_regex("orders-.*").unwrap().is_match("orders-eu"));
        assert!(!compile_regex("orders").unwrap().is_match("orders-eu"));
        assert!(compile_regex("(").is_err());
    }
}
