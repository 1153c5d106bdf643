//! Heartbeat (12): keeps a member's session alive and tells it when to rejoin.

use crate::security::acl::Operation;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::dispatch::RequestContext;

pub async fn handle(ctx: &RequestContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let b = &ctx.broker;
    let allowed = super::group_served(ctx, Operation::Read, req.group_id.0.as_str());
    match allowed.and_then(|()| {
        b.groups.heartbeat(
            req.group_id.0.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
        )
    }) {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => {
            b.metrics.error("Heartbeat", e.code());
            tracing::debug!(peer = %ctx.peer, group = %req.group_id.0.as_str(), error = %e, "Heartbeat error");
            HeartbeatResponse::default().with_error_code(e.code())
        }
    }
}
