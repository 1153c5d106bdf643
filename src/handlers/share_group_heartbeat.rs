//! ShareGroupHeartbeat (76, v1): KIP-932 share group membership. A member
//! names itself, joins with epoch 0 and its subscription, heartbeats with
//! the epoch it was given, and leaves with -1; the answer carries its epoch,
//! the heartbeat interval and, when it changed, its assignment.
//!
//! The group's `share.session.timeout.ms` / `share.heartbeat.interval.ms`
//! (GROUP configs, else the broker's `group.share.*`) apply, and
//! `group.share.max.size` caps its members.

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};

use super::sb;
use crate::coordinator::share_group::{ShareAnswer, ShareHeartbeat};
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(
    ctx: &RequestContext,
    req: ShareGroupHeartbeatRequest,
) -> ShareGroupHeartbeatResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    let (session, interval, max_size) = settings(ctx, &group);
    let member = req.member_id.to_string();
    let leaving = req.member_epoch == -1;
    let answer = heartbeat(ctx, &group, req, session, max_size);
    if leaving && answer.is_ok() {
        // What the member still holds goes back to the others now, not
        // when its locks run out.
        let limits = super::share_fetch::limits(ctx, &group);
        b.shares.sessions.close(&group, &member);
        crate::coordinator::share_state::release_member(b, &group, &member, None, &limits).await;
    }
    match answer {
        Ok(a) => ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(sb(a.member_id)))
            .with_member_epoch(a.epoch)
            .with_heartbeat_interval_ms(interval)
            .with_assignment(a.assignment.map(|asg| {
                Assignment::default().with_topic_partitions(
                    asg.into_iter()
                        .map(|(id, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => {
            b.metrics.error("ShareGroupHeartbeat", e.code());
            tracing::info!(peer = %ctx.peer, group = %group, error = %e, "ShareGroupHeartbeat refused");
            ShareGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(e.message())
                .with_heartbeat_interval_ms(interval)
        }
    }
}

fn heartbeat(
    ctx: &RequestContext,
    group: &str,
    req: ShareGroupHeartbeatRequest,
    session: std::time::Duration,
    max_size: usize,
) -> BrokerResult<ShareAnswer> {
    let b = &ctx.broker;
    if group.is_empty() {
        return Err(BrokerError::InvalidRequest("GroupId can't be empty".into()));
    }
    super::group_served(ctx, Operation::Read, group)?;
    if req.member_id.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "MemberId can't be empty".into(),
        ));
    }
    let topics: Option<Vec<String>> = req
        .subscribed_topic_names
        .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect());
    if let Some(t) = topics
        .iter()
        .flatten()
        .find(|t| !ctx.authorize(Operation::Describe, ResourceType::Topic, t))
    {
        tracing::info!(peer = %ctx.peer, group, topic = %t, "share subscription to a topic the principal may not describe");
        return Err(BrokerError::TopicAuthorizationFailed);
    }
    let hb = ShareHeartbeat {
        member_id: req.member_id.to_string(),
        epoch: req.member_epoch,
        rack_id: req.rack_id.map(|s| s.to_string()),
        client_id: ctx.client().to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        topics,
    };
    let meta = super::consumer_group_heartbeat::topics_meta(ctx);
    b.groups
        .share_heartbeat(group, hb, session, max_size, &meta)
}

/// The group's session timeout and heartbeat interval, and `group.share.max.size`.
fn settings(ctx: &RequestContext, group: &str) -> (std::time::Duration, i32, usize) {
    let b = &ctx.broker;
    let overrides = b.group_configs.get(group);
    let layers = b.broker_configs.layers();
    let broker = &layers.merged;
    let ms = |k: &str, d: i64| {
        crate::config::group::effective_i64(k, &overrides, broker)
            .unwrap_or(d)
            .max(1)
    };
    let session = ms("share.session.timeout.ms", 45_000);
    let interval = ms("share.heartbeat.interval.ms", 5_000);
    let max_size = broker
        .get("group.share.max.size")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(200);
    (
        std::time::Duration::from_millis(session as u64),
        i32::try_from(interval).unwrap_or(i32::MAX),
        max_size,
    )
}
