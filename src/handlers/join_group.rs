//! JoinGroup (11): enters a member into a group's rebalance and answers when
//! the join phase completes (MEMBER_ID_REQUIRED first for new members, v4+).

use crate::security::acl::Operation;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::sb;
use crate::coordinator::group::JoinRequest;
use crate::dispatch::RequestContext;

fn millis(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

pub async fn handle(ctx: &RequestContext, req: JoinGroupRequest) -> JoinGroupResponse {
    let b = &ctx.broker;
    let v = ctx.api_version;
    let group_id = req.group_id.0.to_string();
    if let Err(e) = super::group_served(ctx, Operation::Read, &group_id) {
        b.metrics.error("JoinGroup", e.code());
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id);
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client().to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout: millis(req.session_timeout_ms),
        // v0 has no rebalance timeout: the session timeout serves both.
        rebalance_timeout: if v == 0 {
            millis(req.session_timeout_ms)
        } else {
            millis(req.rebalance_timeout_ms)
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let (limits, _) = super::consumer_group_heartbeat::settings(ctx, &group_id);
    let protocols = crate::coordinator::migration::ProtocolContext {
        topics: super::consumer_group_heartbeat::topics_meta(ctx),
        limits,
    };
    let r = b.groups.join(&group_id, join, &protocols).await;
    let mut resp = JoinGroupResponse::default()
        .with_generation_id(r.generation)
        .with_leader(sb(r.leader))
        .with_member_id(sb(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    let jm = JoinGroupResponseMember::default()
                        .with_member_id(sb(m.member_id))
                        .with_metadata(m.metadata);
                    if v >= 5 {
                        jm.with_group_instance_id(m.instance_id.map(sb))
                    } else {
                        jm
                    }
                })
                .collect(),
        );
    // v7 added protocol type; the name is nullable from v7 only.
    resp = if v >= 7 {
        resp.with_protocol_type(r.protocol_type.map(sb))
            .with_protocol_name(r.protocol_name.map(sb))
    } else {
        resp.with_protocol_name(Some(sb(r.protocol_name.unwrap_or_default())))
    };
    if v >= 9 {
        resp = resp.with_skip_assignment(r.skip_assignment);
    }
    if let Some(e) = r.error {
        b.metrics.error("JoinGroup", e.code());
        tracing::debug!(peer = %ctx.peer, group = %group_id, error = %e, "JoinGroup error");
        resp = resp.with_error_code(e.code());
    }
    resp
}
