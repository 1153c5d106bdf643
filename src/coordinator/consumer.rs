//! The group coordinator's side of KIP-848 consumer groups: where they live
//! beside classic groups (one namespace: a group id is one or the other),
//! their heartbeats, expiry, and the member-epoch checks of offset commits.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Instant;

use super::consumer_group::{
    ConsumerGroup, Heartbeat, HeartbeatAnswer, Limits, PartitionRacks, TopicsMeta,
};
use super::GroupCoordinator;
use crate::error::{BrokerError, BrokerResult};

impl GroupCoordinator {
    fn consumer(&self) -> BrokerResult<MutexGuard<'_, HashMap<String, ConsumerGroup>>> {
        self.consumer_groups
            .lock()
            .map_err(|_| BrokerError::Storage("consumer group lock poisoned".into()))
    }

    /// ConsumerGroupHeartbeat. A classic group with members keeps its id
    /// (GROUP_ID_NOT_FOUND: it is not a consumer group); an empty one, or
    /// one known only by its committed offsets, becomes a consumer group.
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat,
        limits: &Limits,
        topics: &TopicsMeta,
        racks: PartitionRacks,
    ) -> BrokerResult<HeartbeatAnswer> {
        if self.is_share_group(group_id) {
            return Err(BrokerError::GroupIdNotFound);
        }
        // The first consumer-protocol member of a classic group converts it
        // (online upgrade); an empty classic group simply gives way.
        let converted = if hb.epoch == 0 {
            self.upgrade_classic(group_id, limits.migration, limits, topics)?
        } else if self.lock()?.get(group_id).is_some_and(|g| !g.is_empty()) {
            return Err(BrokerError::GroupIdNotFound);
        } else {
            None
        };
        let mut groups = self.consumer()?;
        if let Some(c) = converted {
            groups.insert(group_id.to_string(), c);
        }
        let joining = hb.epoch == 0;
        let g = match groups.get_mut(group_id) {
            Some(g) => g,
            None if joining => groups
                .entry(group_id.to_string())
                .or_insert_with(|| ConsumerGroup::new(group_id)),
            // Only a join creates a group (as Kafka).
            None => return Err(BrokerError::GroupIdNotFound),
        };
        g.racks = racks;
        g.migration = limits.migration;
        let leaving = hb.epoch < 0;
        let before = g.snapshot();
        let answer = g.heartbeat(hb, Instant::now(), limits, topics);
        let after = g.snapshot();
        if after.epoch != before.epoch {
            tracing::info!(
                group = group_id,
                epoch = after.epoch,
                members = after.members.len(),
                "consumer group epoch bumped"
            );
        }
        if after != before {
            g.changed = true;
        }
        drop(groups);
        if leaving && answer.is_ok() {
            self.maybe_downgrade(group_id);
        }
        answer
    }

    /// A copy of a consumer group (ConsumerGroupDescribe, ListGroups).
    pub fn consumer_group(&self, group_id: &str) -> Option<ConsumerGroup> {
        self.consumer().ok()?.get(group_id).cloned()
    }

    /// Every consumer group's (id, state).
    pub fn consumer_groups(&self) -> Vec<(String, &'static str)> {
        self.consumer()
            .map(|g| g.values().map(|c| (c.id.clone(), c.state())).collect())
            .unwrap_or_default()
    }

    /// True if `group_id` is a consumer group with members (classic
    /// JoinGroup must not take it over).
    pub fn is_active_consumer_group(&self, group_id: &str) -> bool {
        self.consumer()
            .is_ok_and(|g| g.get(group_id).is_some_and(|c| !c.members.is_empty()))
    }

    /// The member-epoch check of an OffsetCommit / OffsetFetch / TxnOffsetCommit
    /// to a consumer group; `None` when the group is not one. A commit
    /// without a member (tools, `assign()` users) is allowed only while the
    /// group has no members.
    pub fn consumer_commit_check(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Option<BrokerResult<()>> {
        let groups = self.consumer().ok()?;
        let g = groups.get(group_id)?;
        if member_id.is_empty() && epoch < 0 {
            return Some(if g.members.is_empty() {
                Ok(())
            } else {
                Err(BrokerError::UnknownMemberId)
            });
        }
        Some(g.check_member_epoch(member_id, epoch))
    }

    /// Expires silent members; forgets empty groups with nothing committed.
    pub(super) fn consumer_tick(&self, now: Instant) {
        let Ok(mut groups) = self.consumer() else {
            return;
        };
        let mut shrunk = Vec::new();
        for g in groups.values_mut() {
            if g.tick(now) {
                shrunk.push(g.id.clone());
            }
        }
        drop(groups);
        for id in shrunk {
            self.maybe_downgrade(&id);
        }
        let Ok(mut groups) = self.consumer() else {
            return;
        };
        let replicated = self.replicated.load(std::sync::atomic::Ordering::Relaxed);
        groups.retain(|id, g| {
            !g.members.is_empty() || self.offsets.has_group(id) || (replicated && g.changed)
        });
    }

    /// DeleteGroups on a consumer group: only without members.
    pub(super) fn consumer_delete(&self, group_id: &str) -> Option<BrokerResult<()>> {
        let mut groups = self.consumer().ok()?;
        let g = groups.get(group_id)?;
        if !g.members.is_empty() {
            return Some(Err(BrokerError::NonEmptyGroup));
        }
        groups.remove(group_id);
        Some(Ok(()))
    }

    /// Cluster mode: the consumer groups whose state changed since logged
    /// (their flags cleared); `only` limits it to one group.
    pub(super) fn consumer_take_changed(
        &self,
        only: Option<&str>,
    ) -> Vec<(String, super::consumer_group::ConsumerSnapshot)> {
        let Ok(mut groups) = self.consumer() else {
            return Vec::new();
        };
        groups
            .iter_mut()
            .filter(|(id, g)| g.changed && only.is_none_or(|o| o == id.as_str()))
            .map(|(id, g)| {
                g.changed = false;
                (id.clone(), g.snapshot())
            })
            .collect()
    }

    pub(super) fn consumer_mark_changed(&self, group_id: &str) {
        if let Ok(mut groups) = self.consumer() {
            if let Some(g) = groups.get_mut(group_id) {
                g.changed = true;
            }
        }
    }

    /// Cluster mode: consumer groups as the log left them.
    pub(super) fn consumer_restore(
        &self,
        snapshots: Vec<(String, super::consumer_group::ConsumerSnapshot)>,
        session: impl Fn(&str) -> std::time::Duration,
    ) {
        let Ok(mut groups) = self.consumer() else {
            return;
        };
        let now = Instant::now();
        for (id, snap) in snapshots {
            if snap.members.is_empty() {
                groups.remove(&id);
                continue;
            }
            tracing::info!(group = %id, epoch = snap.epoch, members = snap.members.len(), "consumer group resumed from the log");
            let g = ConsumerGroup::restore(&id, snap, now, session(&id));
            groups.insert(id, g);
        }
    }

    /// Cluster mode: forgets the consumer groups `which` selects (their
    /// coordination moved; their members rejoin the new coordinator).
    pub(super) fn consumer_unload(&self, which: &impl Fn(&str) -> bool) {
        if let Ok(mut groups) = self.consumer() {
            groups.retain(|id, _| !which(id));
        }
    }
}
