//! ListGroups (16): every group with its protocol type, state (v4+) and type
//! (v5+), filtered by state and type when asked.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::sb;
use crate::dispatch::RequestContext;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};

/// Every group here speaks the classic protocol.
const GROUP_TYPE: &str = "classic";

pub async fn handle(ctx: &RequestContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let b = &ctx.broker;
    let v = ctx.api_version;
    let groups = match b.groups.list() {
        Ok(g) => g,
        Err(e) => {
            b.metrics.error("ListGroups", e.code());
            return ListGroupsResponse::default().with_error_code(e.code());
        }
    };
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    // DESCRIBE on the cluster lists every group; otherwise only the groups
    // the principal may describe.
    let all = ctx.authorize_quiet(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let listed = groups
        .into_iter()
        // In a cluster each broker lists the groups it coordinates (the
        // AdminClient asks every broker and merges).
        .filter(|g| crate::coordinator::offsets_log::check(b, &g.id).is_ok())
        .filter(|g| all || ctx.authorize_quiet(Operation::Describe, ResourceType::Group, &g.id))
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == GROUP_TYPE))
        .map(|g| {
            let l = ListedGroup::default()
                .with_group_id(GroupId(sb(g.id)))
                .with_protocol_type(sb(g.protocol_type));
            let l = if v >= 4 {
                l.with_group_state(sb(g.state))
            } else {
                l
            };
            if v >= 5 {
                l.with_group_type(sb(GROUP_TYPE))
            } else {
                l
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
