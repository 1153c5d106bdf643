//! SyncGroup (14): the leader hands in assignments; every member receives
//! its own (possibly empty) once the leader's arrive.

use crate::security::acl::Operation;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::sb;
use crate::dispatch::RequestContext;

pub async fn handle(ctx: &RequestContext, req: SyncGroupRequest) -> SyncGroupResponse {
    let b = &ctx.broker;
    let group_id = req.group_id.0.to_string();
    if let Err(e) = super::group_served(ctx, Operation::Read, &group_id) {
        b.metrics.error("SyncGroup", e.code());
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let r = b
        .groups
        .sync(
            &group_id,
            crate::coordinator::SyncMember {
                generation: req.generation_id,
                member_id: req.member_id.as_str(),
                instance_id: req.group_instance_id.as_deref(),
            },
            (req.protocol_type.as_deref(), req.protocol_name.as_deref()),
            assignments,
            || {
                b.catalog
                    .all()
                    .iter()
                    .map(|t| (t.id, t.name.to_string()))
                    .collect()
            },
        )
        .await;
    if r.error.is_none() && !b.cluster.is_standalone() {
        // The leader's SyncGroup made the group stable: its state is on the
        // in-sync replicas before the leader hears back (as in Kafka).
        crate::coordinator::offsets_log::log_groups(b, Some(&group_id)).await;
    }
    let mut resp = SyncGroupResponse::default().with_assignment(r.assignment);
    if ctx.api_version >= 5 {
        resp = resp
            .with_protocol_type(r.protocol_type.map(sb))
            .with_protocol_name(r.protocol_name.map(sb));
    }
    if let Some(e) = r.error {
        b.metrics.error("SyncGroup", e.code());
        tracing::debug!(peer = %ctx.peer, group = %group_id, member = %req.member_id.as_str(), error = %e, "SyncGroup error");
        resp = resp.with_error_code(e.code());
    }
    resp
}
