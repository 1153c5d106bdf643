//! Online migration between the classic and the consumer protocol (KIP-848,
//! `group.consumer.migration.policy`): a consumer group whose members may
//! still speak the classic protocol. A classic member is a member like any
//! other — the server-side assignor gives it partitions and reconciliation
//! keeps a partition from being owned twice — but it learns of changes
//! through JoinGroup / SyncGroup / Heartbeat: its heartbeat answers
//! REBALANCE_IN_PROGRESS when it must catch up, its JoinGroup reports what
//! it still owns (cooperative clients) or nothing (eager ones), and its
//! SyncGroup returns what the coordinator assigned, whatever a leader sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    contains, Assignment, ConsumerGroup, Heartbeat, Limits, Member, MemberState, TopicsMeta,
};
use crate::error::{BrokerError, BrokerResult};

/// What the coordinator keeps of a member that speaks the classic protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMember {
    pub session_timeout_ms: u64,
    /// The protocol (client-side assignor name) it takes part with, and the
    /// consumer protocol version its subscription used.
    pub protocol_name: String,
    pub version: i16,
    /// Every (protocol, metadata) it offered, for DescribeGroups.
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// A classic member of a classic group being converted.
pub struct ImportedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub protocol_name: String,
    pub assignment: Bytes,
}

/// A classic JoinGroup to a consumer group, decoded.
pub struct ClassicJoin {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
}

/// The consumer-protocol subscription a classic member sent: the first
/// protocol whose metadata decodes, its name and version.
pub fn subscription(
    protocols: &[(String, Bytes)],
) -> Option<(String, i16, ConsumerProtocolSubscription)> {
    protocols.iter().find_map(|(name, meta)| {
        let mut b = meta.clone();
        if b.len() < 2 {
            return None;
        }
        let version = i16::from_be_bytes([b[0], b[1]]);
        let _ = bytes::Buf::get_i16(&mut b);
        ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
            .ok()
            .map(|s| (name.clone(), version, s))
    })
}

fn by_name(parts: impl IntoIterator<Item = (String, Vec<i32>)>, topics: &TopicsMeta) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in parts {
        if let Some((id, n)) = topics.get(&t) {
            a.entry(*id)
                .or_default()
                .extend(ps.into_iter().filter(|p| *p >= 0 && p < n));
        }
    }
    a.retain(|_, ps| !ps.is_empty());
    a
}

/// A member's assignment in the classic embedded protocol, at `version`.
pub fn encode_assignment(a: &Assignment, names: &BTreeMap<Uuid, String>, version: i16) -> Bytes {
    let parts = a
        .iter()
        .filter_map(|(id, ps)| {
            Some(
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(names.get(id)?.clone())))
                    .with_partitions(ps.iter().copied().collect()),
            )
        })
        .collect();
    let version = version.clamp(0, 3);
    let body = ConsumerProtocolAssignment::default().with_assigned_partitions(parts);
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&version.to_be_bytes());
    if body.encode(&mut out, version).is_err() {
        return Bytes::new();
    }
    out.freeze()
}

fn decode_assignment(b: &Bytes, topics: &TopicsMeta) -> Assignment {
    let mut b = b.clone();
    if b.len() < 2 {
        return Assignment::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = bytes::Buf::get_i16(&mut b);
    match ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3)) {
        Ok(a) => by_name(
            a.assigned_partitions
                .into_iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions)),
            topics,
        ),
        Err(_) => Assignment::new(),
    }
}

impl ConsumerGroup {
    /// A classic group taken over by the consumer protocol: its members keep
    /// their partitions and generation (as epoch) until they catch up.
    pub fn from_classic(
        id: &str,
        generation: i32,
        members: Vec<ImportedMember>,
        topics: &TopicsMeta,
        now: Instant,
    ) -> BrokerResult<Self> {
        let mut g = ConsumerGroup::new(id);
        g.epoch = generation.max(0);
        g.assignment_epoch = g.epoch;
        for im in members {
            let (name, version, sub) =
                subscription(&im.protocols).ok_or(BrokerError::GroupIdNotFound)?;
            let protocol_name = if im.protocol_name.is_empty() {
                name
            } else {
                im.protocol_name.clone()
            };
            let mut assigned = decode_assignment(&im.assignment, topics);
            // A partition claimed twice (a torn generation) stays with the first.
            assigned.iter_mut().for_each(|(t, ps)| {
                ps.retain(|p| !g.owners.contains_key(&(*t, *p)));
            });
            assigned.retain(|_, ps| !ps.is_empty());
            for (t, ps) in &assigned {
                for p in ps {
                    g.owners.insert((*t, *p), im.id.clone());
                }
            }
            let mut subscribed: Vec<String> = sub.topics.iter().map(|t| t.to_string()).collect();
            subscribed.sort();
            subscribed.dedup();
            if let Some(i) = &im.instance_id {
                g.statics.insert(i.clone(), im.id.clone());
            }
            g.members.insert(
                im.id.clone(),
                Member {
                    id: im.id.clone(),
                    instance_id: im.instance_id,
                    rack_id: sub.rack_id.map(|r| r.to_string()),
                    client_id: im.client_id,
                    client_host: im.client_host,
                    rebalance_timeout: im.rebalance_timeout,
                    server_assignor: None,
                    topics: subscribed,
                    regex: None,
                    matcher: None,
                    epoch: g.epoch,
                    previous_epoch: -1,
                    state: MemberState::Stable,
                    reported: assigned.clone(),
                    target: assigned.clone(),
                    assigned,
                    revoking: Assignment::new(),
                    session_deadline: now + im.session_timeout,
                    revoke_deadline: None,
                    sent: None,
                    left: false,
                    classic: Some(ClassicMember {
                        session_timeout_ms: im.session_timeout.as_millis() as u64,
                        protocol_name,
                        version,
                        protocols: im
                            .protocols
                            .iter()
                            .map(|(n, m)| (n.clone(), m.to_vec()))
                            .collect(),
                    }),
                },
            );
        }
        g.metadata = topics
            .iter()
            .filter(|(name, _)| g.members.values().any(|m| m.subscribes(name)))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        g.changed = true;
        Ok(g)
    }

    /// A classic member's JoinGroup: it joins (or rejoins) as a member of
    /// this consumer group and moves towards its target with what it says
    /// it still owns. The member id and epoch (its generation) it is given.
    pub fn classic_join(
        &mut self,
        j: ClassicJoin,
        now: Instant,
        limits: &Limits,
        topics: &TopicsMeta,
    ) -> BrokerResult<(String, i32, String)> {
        let (name, version, sub) =
            subscription(&j.protocols).ok_or(BrokerError::InconsistentGroupProtocol)?;
        let owned = by_name(
            sub.owned_partitions
                .iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions.clone())),
            topics,
        );
        let existing = self
            .members
            .get(&j.member_id)
            .filter(|m| !m.left)
            .map(|m| m.epoch);
        if let (Some(_), Some(m)) = (&existing, self.members.get(&j.member_id)) {
            if m.classic.is_none() {
                // A consumer-protocol member's id used by a classic client.
                return Err(BrokerError::InconsistentGroupProtocol);
            }
        }
        let hb = Heartbeat {
            member_id: j.member_id.clone(),
            epoch: existing.unwrap_or(0),
            instance_id: j.instance_id.clone(),
            rack_id: sub.rack_id.as_ref().map(|r| r.to_string()),
            client_id: j.client_id.clone(),
            client_host: j.client_host.clone(),
            rebalance_timeout_ms: i32::try_from(j.rebalance_timeout.as_millis())
                .unwrap_or(i32::MAX),
            topics: Some(sub.topics.iter().map(|t| t.to_string()).collect()),
            regex: None,
            assignor: None,
            owned: Some(owned),
        };
        let answer = self.heartbeat(hb, now, limits, topics)?;
        // An eager client rejoins owning nothing: what it had to revoke is
        // revoked already, so it takes its new partitions in this same join.
        if self.members.get(&answer.member_id).is_some_and(|m| {
            m.state == MemberState::UnrevokedPartitions
                && !super::intersects(&m.reported, &m.revoking)
        }) {
            self.reconcile(&answer.member_id, now)?;
        }
        let m = self
            .members
            .get_mut(&answer.member_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        m.session_deadline = now + j.session_timeout;
        m.classic = Some(ClassicMember {
            session_timeout_ms: j.session_timeout.as_millis() as u64,
            protocol_name: name.clone(),
            version,
            protocols: j
                .protocols
                .iter()
                .map(|(n, meta)| (n.clone(), meta.to_vec()))
                .collect(),
        });
        Ok((answer.member_id, m.epoch, name))
    }

    fn classic_member(&mut self, member_id: &str, generation: i32) -> BrokerResult<&mut Member> {
        let m = self
            .members
            .get_mut(member_id)
            .filter(|m| !m.left)
            .ok_or(BrokerError::UnknownMemberId)?;
        if m.classic.is_none() {
            return Err(BrokerError::UnknownMemberId);
        }
        if generation != m.epoch {
            return Err(BrokerError::IllegalGeneration);
        }
        Ok(m)
    }

    /// A classic member's SyncGroup: what the coordinator assigned it
    /// (REBALANCE_IN_PROGRESS while it must rejoin first).
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> BrokerResult<(Assignment, ClassicMember)> {
        let must_rejoin = self.must_rejoin(member_id);
        let m = self.classic_member(member_id, generation)?;
        let classic = m.classic.clone().ok_or(BrokerError::UnknownMemberId)?;
        m.session_deadline = now + Duration::from_millis(classic.session_timeout_ms);
        if must_rejoin && m.state == MemberState::UnrevokedPartitions {
            return Err(BrokerError::RebalanceInProgress);
        }
        m.sent = Some(m.assigned.clone());
        Ok((m.assigned.clone(), classic))
    }

    /// A classic member's Heartbeat: REBALANCE_IN_PROGRESS when the group
    /// moved on, it must revoke partitions, or partitions it waits for are
    /// free now.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> BrokerResult<()> {
        let must_rejoin = self.must_rejoin(member_id);
        let m = self.classic_member(member_id, generation)?;
        let timeout = m.classic.as_ref().map_or(Duration::from_secs(45), |c| {
            Duration::from_millis(c.session_timeout_ms)
        });
        m.session_deadline = now + timeout;
        if must_rejoin {
            Err(BrokerError::RebalanceInProgress)
        } else {
            Ok(())
        }
    }

    fn must_rejoin(&self, member_id: &str) -> bool {
        let Some(m) = self.members.get(member_id) else {
            return false;
        };
        let freed = m.state == MemberState::UnreleasedPartitions
            && m.target.iter().any(|(t, ps)| {
                ps.iter().any(|p| {
                    !contains(&m.assigned, t, *p)
                        && self
                            .owners
                            .get(&(*t, *p))
                            .is_none_or(|o| o.as_str() == member_id)
                })
            });
        m.epoch < self.epoch || m.state == MemberState::UnrevokedPartitions || freed
    }

    /// A classic member's LeaveGroup (by member id, or instance id for a static one).
    pub fn classic_leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> BrokerResult<()> {
        let id = match instance_id {
            Some(i) => self
                .statics
                .get(i)
                .cloned()
                .ok_or(BrokerError::UnknownMemberId)?,
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return Err(BrokerError::UnknownMemberId);
        }
        tracing::info!(group = %self.id, member = %id, "classic member left the consumer group");
        self.remove(&id);
        self.changed = true;
        Ok(())
    }

    /// Online downgrade: once only classic members are left, the group as
    /// a classic group (generation = group epoch, each member's partitions
    /// encoded in the embedded protocol); `None` while any member speaks
    /// the consumer protocol.
    pub fn to_classic(&self) -> Option<super::super::group::GroupSnapshot> {
        use super::super::group::{GroupSnapshot, MemberSnapshot};
        if self.members.is_empty() || self.members.values().any(|m| m.classic.is_none() || m.left) {
            return None;
        }
        let names: BTreeMap<Uuid, String> = self
            .metadata
            .iter()
            .map(|(n, (id, _))| (*id, n.clone()))
            .collect();
        let protocol = self
            .members
            .values()
            .find_map(|m| m.classic.as_ref().map(|c| c.protocol_name.clone()))?;
        let members = self
            .members
            .values()
            .filter_map(|m| {
                let c = m.classic.as_ref()?;
                Some(MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: c.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: c.protocols.clone(),
                    assignment: encode_assignment(&m.assigned, &names, c.version).to_vec(),
                })
            })
            .collect();
        Some(GroupSnapshot {
            generation: self.epoch,
            protocol_type: Some("consumer".into()),
            protocol_name: Some(protocol),
            leader: None,
            members,
        })
    }

    /// True if `member_id` is a member speaking the classic protocol.
    pub fn has_classic_member(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        let id = instance_id
            .and_then(|i| self.statics.get(i).cloned())
            .unwrap_or_else(|| member_id.to_string());
        self.members.get(&id).is_some_and(|m| m.classic.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub_meta(topics: &[&str], owned: &[(&str, &[i32])]) -> Bytes {
        let s = ConsumerProtocolSubscription::default()
            .with_topics(topics.iter().map(|t| StrBytes::from_string(t.to_string())).collect())
            .with_owned_partitions(
                owned
                    .iter()
                    .map(|(t, ps)| {
                        kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps.to_vec())
                    })
                    .collect(),
            );
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&1i16.to_be_bytes());
        s.encode(&mut out, 1).unwrap();
        out.freeze()
    }

    #[test]
    fn a_classic_group_is_taken_over_without_owning_a_partition_twice() {
        let t = Uuid::new_v4();
        let topics: TopicsMeta = [("t".to_string(), (t, 4))].into();
        let names: BTreeMap<Uuid, String> = [(t, "t".to_string())].into();
        let now = Instant::now();
        let limits = Limits {
            migration: Default::default(),
            session_timeout: Duration::from_secs(10),
            max_size: 10,
        };
        let all: Assignment = [(t, [0, 1, 2, 3].into())].into();
        let old = ImportedMember {
            id: "classic-1".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocols: vec![("range".into(), sub_meta(&["t"], &[]))],
            protocol_name: "range".into(),
            assignment: encode_assignment(&all, &names, 1),
        };
        let mut g = ConsumerGroup::from_classic("g", 5, vec![old], &topics, now).unwrap();
        assert_eq!(g.members["classic-1"].assigned, all);
        // A consumer-protocol member arrives: it gets nothing the classic one holds.
        let hb = Heartbeat {
            member_id: "new".into(),
            epoch: 0,
            topics: Some(vec!["t".into()]),
            rebalance_timeout_ms: 10_000,
            ..Default::default()
        };
        let a = g.heartbeat(hb, now, &limits, &topics).unwrap();
        assert!(a.assignment.unwrap_or_default().is_empty());
        // The classic member is told to rejoin; an eager client rejoins owning nothing.
        assert!(matches!(
            g.classic_heartbeat("classic-1", 5, now),
            Err(BrokerError::RebalanceInProgress)
        ));
        let (id, epoch, name) = g
            .classic_join(
                ClassicJoin {
                    member_id: "classic-1".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/h".into(),
                    session_timeout: Duration::from_secs(10),
                    rebalance_timeout: Duration::from_secs(10),
                    protocols: vec![("range".into(), sub_meta(&["t"], &[]))],
                },
                now,
                &limits,
                &topics,
            )
            .unwrap();
        assert_eq!((id.as_str(), name.as_str()), ("classic-1", "range"));
        assert_eq!(epoch, g.epoch);
        let (mine, _) = g.classic_sync("classic-1", epoch, now).unwrap();
        assert_eq!(mine.values().map(|p| p.len()).sum::<usize>(), 2);
        // The newcomer now gets the other two.
        let hb = Heartbeat {
            member_id: "new".into(),
            epoch: g.members["new"].epoch,
            owned: Some(Assignment::new()),
            ..Default::default()
        };
        let a = g.heartbeat(hb, now, &limits, &topics).unwrap();
        let theirs = a.assignment.unwrap();
        assert_eq!(theirs.values().map(|p| p.len()).sum::<usize>(), 2);
        assert!(mine[&t].is_disjoint(&theirs[&t]));
        assert!(g.classic_heartbeat("classic-1", epoch, now).is_ok());
        g.classic_leave("classic-1", None).unwrap();
        assert!(!g.has_classic_member("classic-1", None));
    }
}
