//! A KIP-932 share group's membership: members join, heartbeat and leave
//! with ShareGroupHeartbeat; the coordinator assigns partitions with the
//! simple assignor, under which a partition may go to several members
//! (records, not partitions, are what members take exclusively, under
//! acquisition locks). An assignment change needs no revocation, so a
//! member takes up its new assignment at its next heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::consumer_group::{Assignment, TopicsMeta};
use crate::error::{BrokerError, BrokerResult};

#[derive(Debug, Clone)]
pub struct ShareMember {
    pub member_id: String,
    /// The epoch the member was last told.
    pub epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    /// The member's assignment at the group's assignment epoch.
    pub assignment: Assignment,
    deadline: Instant,
}

/// One heartbeat's content.
pub struct ShareHeartbeat {
    pub member_id: String,
    pub epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// `None`: unchanged since the last heartbeat.
    pub topics: Option<Vec<String>>,
}

pub struct ShareAnswer {
    pub member_id: String,
    pub epoch: i32,
    /// Sent when it changed (or on joining).
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone)]
pub struct ShareGroup {
    pub id: String,
    pub epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
    /// The subscribed topics' ids and partition counts the assignment was made for.
    assigned_for: TopicsMeta,
}

impl ShareGroup {
    pub fn new(id: &str) -> Self {
        ShareGroup {
            id: id.to_string(),
            epoch: 0,
            members: BTreeMap::new(),
            assigned_for: TopicsMeta::new(),
        }
    }

    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    /// Every topic some member subscribes to.
    pub fn subscribed(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }

    pub fn heartbeat(
        &mut self,
        hb: ShareHeartbeat,
        now: Instant,
        session: Duration,
        max_size: usize,
        topics: &TopicsMeta,
    ) -> BrokerResult<ShareAnswer> {
        let mut changed = false;
        match hb.epoch {
            -1 => {
                if self.members.remove(&hb.member_id).is_none() {
                    return Err(BrokerError::UnknownMemberId);
                }
                tracing::info!(group = %self.id, member = %hb.member_id, "share group member left");
                self.reassign(topics);
                return Ok(ShareAnswer {
                    member_id: hb.member_id,
                    epoch: -1,
                    assignment: None,
                });
            }
            0 => {
                let Some(ts) = hb.topics.clone() else {
                    return Err(BrokerError::InvalidRequest(
                        "SubscribedTopicNames must be set in the first request".into(),
                    ));
                };
                if !self.members.contains_key(&hb.member_id) && self.members.len() >= max_size {
                    return Err(BrokerError::GroupMaxSizeReached);
                }
                tracing::info!(group = %self.id, member = %hb.member_id, topics = ?ts, "share group member joined");
                self.members.insert(
                    hb.member_id.clone(),
                    ShareMember {
                        member_id: hb.member_id.clone(),
                        epoch: 0,
                        rack_id: hb.rack_id.clone(),
                        client_id: hb.client_id.clone(),
                        client_host: hb.client_host.clone(),
                        topics: ts,
                        assignment: Assignment::new(),
                        deadline: now + session,
                    },
                );
                changed = true;
            }
            e if e > 0 => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or(BrokerError::UnknownMemberId)?;
                if e != m.epoch {
                    return Err(BrokerError::FencedMemberEpoch);
                }
                if let Some(ts) = &hb.topics {
                    if *ts != m.topics {
                        m.topics = ts.clone();
                        changed = true;
                    }
                }
            }
            e => {
                return Err(BrokerError::InvalidRequest(format!(
                    "MemberEpoch {e} is invalid"
                )))
            }
        }
        let subscribed = self.subscribed();
        let meta: TopicsMeta = topics
            .iter()
            .filter(|(n, _)| subscribed.contains(*n))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        if changed || meta != self.assigned_for {
            self.reassign(topics);
        }
        // Every epoch bump recomputes the assignment at once: the
        // assignment epoch is the group epoch.
        let assignment_epoch = self.epoch;
        let m = self
            .members
            .get_mut(&hb.member_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        m.deadline = now + session;
        if let Some(r) = hb.rack_id {
            m.rack_id = Some(r);
        }
        let send = m.epoch != assignment_epoch;
        m.epoch = assignment_epoch;
        Ok(ShareAnswer {
            member_id: m.member_id.clone(),
            epoch: m.epoch,
            assignment: send.then(|| m.assignment.clone()),
        })
    }

    /// Removes members whose session ran out; their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        if !gone.is_empty() {
            for id in &gone {
                tracing::info!(group = %self.id, member = %id, "share group member's session expired");
                self.members.remove(id);
            }
            // The leavers' topics drop out; the others' stay as they were.
            let topics = self.assigned_for.clone();
            self.reassign(&topics);
        }
        gone
    }

    /// A new group epoch and assignment (the simple assignor): per topic,
    /// with P partitions and M subscribed members (in id order), partition
    /// i goes to member i mod M when M <= P, else member j gets partition
    /// j mod P, so every member gets work and every partition a reader.
    fn reassign(&mut self, topics: &TopicsMeta) {
        self.epoch += 1;
        let subscribed = self.subscribed();
        self.assigned_for = topics
            .iter()
            .filter(|(n, _)| subscribed.contains(*n))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        for m in self.members.values_mut() {
            m.assignment.clear();
        }
        for (name, (id, count)) in &self.assigned_for {
            let readers: Vec<String> = self
                .members
                .values()
                .filter(|m| m.topics.contains(name))
                .map(|m| m.member_id.clone())
                .collect();
            let (p, n) = (usize::try_from(*count).unwrap_or(0), readers.len());
            if p == 0 || n == 0 {
                continue;
            }
            let pairs: Vec<(usize, usize)> = if n <= p {
                (0..p).map(|i| (i % n, i)).collect()
            } else {
                (0..n).map(|j| (j, j % p)).collect()
            };
            for (member, partition) in pairs {
                if let Some(m) = self.members.get_mut(&readers[member]) {
                    m.assignment
                        .entry(*id)
                        .or_default()
                        .insert(partition as i32);
                }
            }
        }
        tracing::debug!(group = %self.id, epoch = self.epoch, "share group assignment computed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn hb(member: &str, epoch: i32, topics: Option<&[&str]>) -> ShareHeartbeat {
        ShareHeartbeat {
            member_id: member.into(),
            epoch,
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn members_share_a_single_partition_and_follow_epochs() {
        let t = Uuid::new_v4();
        let topics: TopicsMeta = [("t".to_string(), (t, 1))].into();
        let now = Instant::now();
        let s = Duration::from_secs(10);
        let mut g = ShareGroup::new("g");
        let a = g
            .heartbeat(hb("a", 0, Some(&["t"])), now, s, 10, &topics)
            .unwrap();
        assert_eq!(a.epoch, 1);
        assert_eq!(a.assignment.unwrap()[&t], [0].into());
        let b = g
            .heartbeat(hb("b", 0, Some(&["t"])), now, s, 10, &topics)
            .unwrap();
        assert_eq!(b.epoch, 2);
        assert_eq!(b.assignment.unwrap()[&t], [0].into());
        // a's old epoch is still its own; it moves to the group's epoch.
        let a2 = g.heartbeat(hb("a", 1, None), now, s, 10, &topics).unwrap();
        assert_eq!(a2.epoch, 2);
        assert!(a2.assignment.is_some());
        assert!(matches!(
            g.heartbeat(hb("a", 1, None), now, s, 10, &topics),
            Err(BrokerError::FencedMemberEpoch)
        ));
        assert!(matches!(
            g.heartbeat(hb("zz", 3, None), now, s, 10, &topics),
            Err(BrokerError::UnknownMemberId)
        ));
        assert!(matches!(
            g.heartbeat(hb("c", 0, Some(&["t"])), now, s, 2, &topics),
            Err(BrokerError::GroupMaxSizeReached)
        ));
        assert_eq!(g.expire(now + s).len(), 2);
        assert_eq!(g.state(), "Empty");
    }

    #[test]
    fn partitions_spread_over_members_and_new_partitions_are_picked_up() {
        let t = Uuid::new_v4();
        let mut topics: TopicsMeta = [("t".to_string(), (t, 4))].into();
        let now = Instant::now();
        let s = Duration::from_secs(10);
        let mut g = ShareGroup::new("g");
        g.heartbeat(hb("a", 0, Some(&["t"])), now, s, 10, &topics)
            .unwrap();
        g.heartbeat(hb("b", 0, Some(&["t"])), now, s, 10, &topics)
            .unwrap();
        assert_eq!(g.members["a"].assignment[&t], [0, 2].into());
        assert_eq!(g.members["b"].assignment[&t], [1, 3].into());
        topics.insert("t".into(), (t, 6));
        let a = g.heartbeat(hb("a", 1, None), now, s, 10, &topics).unwrap();
        assert_eq!(a.assignment.unwrap()[&t], [0, 2, 4].into());
    }
}
