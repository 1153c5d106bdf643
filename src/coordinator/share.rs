//! The group coordinator's side of KIP-932 share groups: where they live
//! beside classic and consumer groups (one namespace: a group id is of one
//! type), their heartbeats, session expiry and deletion. The records they
//! read are `crate::share`'s.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::consumer_group::TopicsMeta;
use super::share_group::{ShareAnswer, ShareGroup, ShareHeartbeat};
use super::GroupCoordinator;
use crate::error::{BrokerError, BrokerResult};

impl GroupCoordinator {
    fn share(&self) -> BrokerResult<MutexGuard<'_, HashMap<String, ShareGroup>>> {
        self.share_groups
            .lock()
            .map_err(|_| BrokerError::Storage("share group lock poisoned".into()))
    }

    /// ShareGroupHeartbeat. A group id in use by a classic or consumer
    /// group is not a share group (GROUP_ID_NOT_FOUND, as Kafka).
    pub fn share_heartbeat(
        &self,
        group_id: &str,
        hb: ShareHeartbeat,
        session: Duration,
        max_size: usize,
        topics: &TopicsMeta,
    ) -> BrokerResult<ShareAnswer> {
        let other_type = self.lock()?.contains_key(group_id)
            || self.consumer_group(group_id).is_some()
            || self.offsets.has_group(group_id);
        let mut groups = self.share()?;
        if other_type && !groups.contains_key(group_id) {
            return Err(BrokerError::GroupIdNotFound);
        }
        let g = match groups.get_mut(group_id) {
            Some(g) => g,
            None if hb.epoch == 0 => groups
                .entry(group_id.to_string())
                .or_insert_with(|| ShareGroup::new(group_id)),
            None => return Err(BrokerError::UnknownMemberId),
        };
        g.heartbeat(hb, Instant::now(), session, max_size, topics)
    }

    /// A copy of a share group (ShareGroupDescribe).
    pub fn share_group(&self, group_id: &str) -> Option<ShareGroup> {
        self.share().ok()?.get(group_id).cloned()
    }

    /// Every share group with members here: (id, state).
    pub fn share_groups(&self) -> Vec<(String, &'static str)> {
        self.share()
            .map(|g| g.values().map(|s| (s.id.clone(), s.state())).collect())
            .unwrap_or_default()
    }

    pub fn is_share_group(&self, group_id: &str) -> bool {
        self.share().is_ok_and(|g| g.contains_key(group_id))
    }

    /// Whether `member` belongs to share group `group_id`; `None` when
    /// the group has no live state here.
    pub fn share_member_known(&self, group_id: &str, member: &str) -> Option<bool> {
        let groups = self.share().ok()?;
        groups.get(group_id).map(|g| g.members.contains_key(member))
    }

    /// Expires silent members; their (group, member) pairs wait for the
    /// share state to release their records (`take_share_departed`).
    pub(super) fn share_tick(&self, now: Instant) {
        let Ok(mut groups) = self.share() else {
            return;
        };
        let mut gone = Vec::new();
        for g in groups.values_mut() {
            gone.extend(g.expire(now).into_iter().map(|m| (g.id.clone(), m)));
        }
        groups.retain(|_, g| !g.members.is_empty());
        drop(groups);
        if !gone.is_empty() {
            if let Ok(mut d) = self.share_departed.lock() {
                d.extend(gone);
            }
        }
    }

    /// Members that left without a word since the last call.
    pub fn take_share_departed(&self) -> Vec<(String, String)> {
        self.share_departed
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// DeleteGroups / Alter- and DeleteShareGroupOffsets on a share group:
    /// only without members.
    pub fn share_check_empty(&self, group_id: &str) -> BrokerResult<()> {
        match self.share()?.get(group_id) {
            Some(g) if !g.members.is_empty() => Err(BrokerError::NonEmptyGroup),
            _ => Ok(()),
        }
    }
}
