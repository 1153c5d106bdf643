//! DescribeGroups (15): state, protocol and members with their metadata and
//! assignments; unknown groups are reported as Dead, as Kafka does, and
//! share groups as GROUP_ID_NOT_FOUND (they are described by ShareGroupDescribe).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{sb, AUTHORIZED_OPERATIONS_OMITTED};
use crate::dispatch::RequestContext;
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(ctx: &RequestContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let b = &ctx.broker;
    let v = ctx.api_version;
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let d = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            if let Err(e) = super::group_served(ctx, Operation::Describe, id.0.as_str()) {
                b.metrics.error("DescribeGroups", e.code());
                return d.with_error_code(e.code()).with_group_state(sb("Dead"));
            }
            let d = d.with_authorized_operations(ctx.authorized_operations(
                req.include_authorized_operations,
                ResourceType::Group,
                id.0.as_str(),
            ));
            match b.groups.describe(id.0.as_str()) {
                Ok(Some(g)) => d
                    .with_group_state(sb(g.state))
                    .with_protocol_type(sb(g.protocol_type))
                    .with_protocol_data(sb(g.protocol_name))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                let dm = DescribedGroupMember::default()
                                    .with_member_id(sb(m.member_id))
                                    .with_client_id(sb(m.client_id))
                                    .with_client_host(sb(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if v >= 4 {
                                    dm.with_group_instance_id(m.instance_id.map(sb))
                                } else {
                                    dm
                                }
                            })
                            .collect(),
                    ),
                // A share group is not a classic group: GROUP_ID_NOT_FOUND,
                // as Kafka 4 answers (ShareGroupDescribe describes it).
                Ok(None)
                    if b.groups.is_share_group(id.0.as_str())
                        || b.shares.groups().contains(id.0.as_str()) =>
                {
                    let e = crate::error::BrokerError::GroupIdNotFound;
                    b.metrics.error("DescribeGroups", e.code());
                    d.with_error_code(e.code()).with_group_state(sb("Dead"))
                }
                Ok(None) => d.with_group_state(sb("Dead")),
                Err(e) => {
                    b.metrics.error("DescribeGroups", e.code());
                    d.with_error_code(e.code()).with_group_state(sb("Dead"))
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
