//! LeaveGroup (13): a member (v0–2) or a batch of members (v3+) leaves at
//! once, so the rebalance starts without waiting for a session timeout.

use crate::security::acl::Operation;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::dispatch::RequestContext;

pub async fn handle(ctx: &RequestContext, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.as_str();
    if let Err(e) = super::group_served(ctx, Operation::Read, group) {
        b.metrics.error("LeaveGroup", e.code());
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    if ctx.api_version < 3 {
        return match b.groups.leave(group, req.member_id.as_str(), None) {
            Ok(()) => LeaveGroupResponse::default(),
            Err(e) => {
                b.metrics.error("LeaveGroup", e.code());
                LeaveGroupResponse::default().with_error_code(e.code())
            }
        };
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let r = MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone());
            match b
                .groups
                .leave(group, m.member_id.as_str(), m.group_instance_id.as_deref())
            {
                Ok(()) => r,
                Err(e) => {
                    b.metrics.error("LeaveGroup", e.code());
                    tracing::debug!(peer = %ctx.peer, group, member = %m.member_id.as_str(), error = %e, "LeaveGroup error");
                    r.with_error_code(e.code())
                }
            }
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
