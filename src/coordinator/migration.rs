//! Routing between the two group protocols in one group (KIP-848 online
//! migration): classic JoinGroup / SyncGroup / Heartbeat / LeaveGroup of a
//! member of a consumer group go to that consumer group, and the first
//! consumer-protocol member of a classic group converts it (its members
//! and generation carried over, committed offsets untouched), when
//! `group.consumer.migration.policy` allows upgrades.

use std::collections::BTreeMap;
use std::time::Instant;

use uuid::Uuid;

use super::consumer_group::classic::{self, ClassicJoin, ImportedMember};
use super::consumer_group::{ConsumerGroup, Limits, TopicsMeta};
use super::group::{JoinRequest, JoinResponse, SyncResponse};
use super::GroupCoordinator;
use crate::error::{BrokerError, BrokerResult};

/// `group.consumer.migration.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    #[default]
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "disabled" => Some(MigrationPolicy::Disabled),
            _ => None,
        }
    }

    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

/// What the classic handlers bring for a consumer group: topics, limits.
pub struct ProtocolContext {
    pub topics: TopicsMeta,
    pub limits: Limits,
}

impl GroupCoordinator {
    /// Converts a classic group with members into a consumer group (the
    /// first consumer-protocol member is joining). GROUP_ID_NOT_FOUND when
    /// the policy or the group's protocol does not allow it.
    pub(super) fn upgrade_classic(
        &self,
        group_id: &str,
        policy: MigrationPolicy,
        limits: &Limits,
        topics: &TopicsMeta,
    ) -> BrokerResult<Option<ConsumerGroup>> {
        let mut classic = self.lock()?;
        let Some(g) = classic.get(group_id) else {
            return Ok(None);
        };
        if g.is_empty() {
            classic.remove(group_id);
            return Ok(None);
        }
        if !policy.upgrades() {
            tracing::info!(
                group = group_id,
                "classic group not upgraded: group.consumer.migration.policy forbids it"
            );
            return Err(BrokerError::GroupIdNotFound);
        }
        if g.protocol_type.as_deref() != Some("consumer") || g.members.len() > limits.max_size {
            tracing::info!(
                group = group_id,
                "classic group not upgraded: not the consumer protocol, or too many members"
            );
            return Err(BrokerError::GroupIdNotFound);
        }
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = g
            .members
            .values()
            .map(|m| ImportedMember {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout: m.session_timeout,
                rebalance_timeout: m.rebalance_timeout,
                protocols: m.protocols.clone(),
                protocol_name: protocol.clone(),
                assignment: m.assignment.clone(),
            })
            .collect();
        let converted =
            ConsumerGroup::from_classic(group_id, g.generation, members, topics, Instant::now())
                .inspect_err(|_| {
                    tracing::info!(
                        group = group_id,
                        "classic group not upgraded: a member's subscription does not decode"
                    );
                })?;
        // Members waiting in a join or sync phase hear REBALANCE_IN_PROGRESS
        // (their waiters are dropped) and rejoin the consumer group.
        classic.remove(group_id);
        tracing::info!(
            group = group_id,
            generation = converted.epoch,
            members = converted.members.len(),
            "classic group converted to a consumer group (online upgrade)"
        );
        Ok(Some(converted))
    }

    /// Online downgrade: a consumer group whose last consumer-protocol
    /// member left, with classic members still in it, becomes a classic
    /// group again (when the policy allows downgrades); its members rejoin
    /// in a rebalance and their leader assigns.
    pub(super) fn maybe_downgrade(&self, group_id: &str) {
        let Ok(mut consumer) = self.consumer_groups.lock() else {
            return;
        };
        let Some(g) = consumer.get(group_id) else {
            return;
        };
        if !g.migration.downgrades() {
            return;
        }
        let Some(snap) = g.to_classic() else {
            return;
        };
        let Ok(mut classic) = self.lock() else {
            return;
        };
        consumer.remove(group_id);
        let now = Instant::now();
        let mut group = super::group::Group::restore(group_id, snap, now);
        group.force_rebalance(now);
        tracing::info!(
            group = group_id,
            generation = group.generation,
            members = group.members.len(),
            "consumer group converted to a classic group (online downgrade)"
        );
        classic.insert(group_id.to_string(), group);
    }

    /// JoinGroup of a classic member to a consumer group with members;
    /// `None` when the group is not one.
    pub(super) fn classic_join_consumer(
        &self,
        group_id: &str,
        req: &JoinRequest,
        ctx: &ProtocolContext,
    ) -> Option<JoinResponse> {
        if !self.is_active_consumer_group(group_id) {
            return None;
        }
        if req.protocol_type != "consumer" {
            return Some(JoinResponse::error(
                BrokerError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if classic::subscription(&req.protocols).is_none() {
            return Some(JoinResponse::error(
                BrokerError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() && req.instance_id.is_none() && req.require_known_member_id {
            let new_id = format!("{}-{}", req.client_id, Uuid::new_v4());
            return Some(JoinResponse::error(BrokerError::MemberIdRequired, &new_id));
        }
        let member_id = if req.member_id.is_empty() {
            format!("{}-{}", req.client_id, Uuid::new_v4())
        } else {
            req.member_id.clone()
        };
        let mut groups = match self.consumer_groups.lock() {
            Ok(g) => g,
            Err(_) => {
                return Some(JoinResponse::error(
                    BrokerError::Storage("consumer group lock poisoned".into()),
                    &member_id,
                ))
            }
        };
        let g = groups.get_mut(group_id)?;
        let joined = g.classic_join(
            ClassicJoin {
                member_id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols.clone(),
            },
            Instant::now(),
            &ctx.limits,
            &ctx.topics,
        );
        g.changed = true;
        Some(match joined {
            Ok((id, epoch, protocol)) => {
                tracing::info!(group = group_id, member = %id, epoch, "classic member joined a consumer group");
                JoinResponse {
                    error: None,
                    generation: epoch,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some(protocol),
                    // Nobody leads: the coordinator assigns.
                    leader: String::new(),
                    member_id: id,
                    members: Vec::new(),
                    skip_assignment: false,
                }
            }
            Err(e) => JoinResponse::error(e, &member_id),
        })
    }

    /// SyncGroup of a classic member of a consumer group.
    pub(super) fn classic_sync_consumer(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        names: impl FnOnce() -> BTreeMap<Uuid, String>,
    ) -> Option<SyncResponse> {
        let mut groups = self.consumer_groups.lock().ok()?;
        let g = groups.get_mut(group_id)?;
        if !g.has_classic_member(member_id, instance_id) {
            return None;
        }
        Some(
            match g.classic_sync(member_id, generation, Instant::now()) {
                Ok((assigned, meta)) => SyncResponse {
                    error: None,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some(meta.protocol_name),
                    assignment: classic::encode_assignment(&assigned, &names(), meta.version),
                },
                Err(e) => SyncResponse::error(e),
            },
        )
    }

    /// Heartbeat of a classic member of a consumer group.
    pub(super) fn classic_heartbeat_consumer(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<BrokerResult<()>> {
        let mut groups = self.consumer_groups.lock().ok()?;
        let g = groups.get_mut(group_id)?;
        if !g.has_classic_member(member_id, instance_id) {
            return Some(Err(BrokerError::UnknownMemberId));
        }
        Some(g.classic_heartbeat(member_id, generation, Instant::now()))
    }

    /// LeaveGroup of a classic member of a consumer group.
    pub(super) fn classic_leave_consumer(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<BrokerResult<()>> {
        let mut groups = self.consumer_groups.lock().ok()?;
        let g = groups.get_mut(group_id)?;
        if !g.has_classic_member(member_id, instance_id) {
            return Some(Err(BrokerError::UnknownMemberId));
        }
        Some(g.classic_leave(member_id, instance_id))
    }
}
