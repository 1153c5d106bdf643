//! ConsumerGroupDescribe (69, v0–1): KIP-848 consumer groups with their
//! epochs, assignor and members (subscriptions, current and target
//! assignments). A classic group, or an unknown one, is GROUP_ID_NOT_FOUND —
//! which is how clients know to describe it with DescribeGroups instead.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::sb;
use crate::coordinator::consumer_group;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType};

/// KIP-1099's member types: a member of the classic protocol (in a group
/// being migrated) or of the consumer protocol.
const MEMBER_TYPE_CLASSIC: i8 = 0;
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn handle(
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
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
                    .consumer_group(&name)
                    .ok_or(BrokerError::GroupIdNotFound)
            });
            let g = match found {
                Ok(g) => g,
                Err(e) => {
                    b.metrics.error("ConsumerGroupDescribe", e.code());
                    let message = match &e {
                        BrokerError::GroupIdNotFound => {
                            format!("Group {name} is not a consumer group")
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
                        .with_member_id(sb(m.id.clone()))
                        .with_instance_id(m.instance_id.clone().map(sb))
                        .with_rack_id(m.rack_id.clone().map(sb))
                        .with_member_epoch(m.epoch)
                        .with_client_id(sb(m.client_id.clone()))
                        .with_client_host(sb(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.topics.iter().map(|t| TopicName(sb(t.clone()))).collect(),
                        )
                        .with_subscribed_topic_regex(m.regex.clone().map(sb))
                        .with_assignment(assignment(&m.assigned))
                        .with_target_assignment(assignment(&m.target))
                        .with_member_type(if m.classic.is_some() {
                            MEMBER_TYPE_CLASSIC
                        } else {
                            MEMBER_TYPE_CONSUMER
                        })
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(sb(g.state()))
                .with_group_epoch(g.epoch)
                .with_assignment_epoch(g.assignment_epoch)
                .with_assignor_name(sb(g.assignor.clone()))
                .with_members(members)
                .with_authorized_operations(ctx.authorized_operations(
                    req.include_authorized_operations,
                    ResourceType::Group,
                    &name,
                ))
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
