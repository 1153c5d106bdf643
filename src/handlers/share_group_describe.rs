//! ShareGroupDescribe (77, v1): share groups with their epochs, assignor and
//! members (subscriptions, assignments). A share group without members is
//! Empty while it still has share-partition state; a group of another type,
//! or an unknown one, is GROUP_ID_NOT_FOUND.

use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName};

use super::sb;
use crate::coordinator::consumer_group;
use crate::coordinator::share_group::ShareGroup;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(
    ctx: &RequestContext,
    req: ShareGroupDescribeRequest,
) -> ShareGroupDescribeResponse {
    let b = &ctx.broker;
    let names: std::collections::HashMap<uuid::Uuid, String> = b
        .catalog
        .all()
        .iter()
        .map(|t| (t.id, t.name.to_string()))
        .collect();
    let assignment = |a: &consumer_group::Assignment| {
        Assignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(TopicName(sb(names.get(id).cloned().unwrap_or_default())))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let name = id.0.to_string();
            let found = super::group_served(ctx, Operation::Describe, &name).and_then(|()| {
                b.groups
                    .share_group(&name)
                    .or_else(|| {
                        b.shares
                            .groups()
                            .contains(&name)
                            .then(|| ShareGroup::new(&name))
                    })
                    .ok_or(BrokerError::GroupIdNotFound)
            });
            let g = match found {
                Ok(g) => g,
                Err(e) => {
                    b.metrics.error("ShareGroupDescribe", e.code());
                    let message = match &e {
                        BrokerError::GroupIdNotFound => {
                            format!("Group {name} is not a share group")
                        }
                        other => other.to_string(),
                    };
                    return DescribedGroup::default()
                        .with_group_id(id)
                        .with_error_code(e.code())
                        .with_error_message(Some(sb(message)))
                        .with_authorized_operations(i32::MIN);
                }
            };
            let members = g
                .members
                .values()
                .map(|m| {
                    Member::default()
                        .with_member_id(sb(m.member_id.clone()))
                        .with_rack_id(m.rack_id.clone().map(sb))
                        .with_member_epoch(m.epoch)
                        .with_client_id(sb(m.client_id.clone()))
                        .with_client_host(sb(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.topics.iter().map(|t| TopicName(sb(t.clone()))).collect(),
                        )
                        .with_assignment(assignment(&m.assignment))
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(sb(g.state()))
                .with_group_epoch(g.epoch)
                .with_assignment_epoch(g.epoch)
                .with_assignor_name(sb("simple"))
                .with_members(members)
                .with_authorized_operations(ctx.authorized_operations(
                    req.include_authorized_operations,
                    ResourceType::Group,
                    &name,
                ))
        })
        .collect();
    ShareGroupDescribeResponse::default().with_groups(groups)
}
