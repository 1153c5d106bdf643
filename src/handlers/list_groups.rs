//! ListGroups (16): every group with its protocol type, state (v4+) and type
//! (v5+: "classic", "consumer" or "share"), filtered by state and type when asked.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::sb;
use crate::dispatch::RequestContext;
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};

const CLASSIC: &str = "classic";
const CONSUMER: &str = "consumer";
const SHARE: &str = "share";

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
    let all_allowed = ctx.authorize_quiet(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let consumer = b.groups.consumer_groups();
    let classic: Vec<_> = groups
        .into_iter()
        .filter(|g| !consumer.iter().any(|(id, _)| *id == g.id))
        .map(|g| (g.id, g.state, g.protocol_type, CLASSIC))
        .collect();
    let modern = consumer
        .into_iter()
        .map(|(id, state)| (id, state, CONSUMER.to_string(), CONSUMER));
    // Share groups: those with members, and those known by their share
    // state alone (Empty).
    let mut shares: std::collections::BTreeMap<String, &'static str> = b
        .shares
        .groups()
        .into_iter()
        .map(|g| (g, "Empty"))
        .collect();
    shares.extend(b.groups.share_groups());
    let shares = shares
        .into_iter()
        .map(|(id, state)| (id, state, SHARE.to_string(), SHARE));
    let mut all: Vec<_> = classic.into_iter().chain(modern).chain(shares).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let listed = all
        .into_iter()
        // In a cluster each broker lists the groups it coordinates (the
        // AdminClient asks every broker and merges).
        .filter(|g| crate::coordinator::offsets_log::check(b, &g.0).is_ok())
        .filter(|g| {
            all_allowed || ctx.authorize_quiet(Operation::Describe, ResourceType::Group, &g.0)
        })
        .filter(|g| states.is_empty() || states.contains(&g.1.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.3))
        .map(|(id, state, protocol_type, kind)| {
            let l = ListedGroup::default()
                .with_group_id(GroupId(sb(id)))
                .with_protocol_type(sb(protocol_type));
            let l = if v >= 4 {
                l.with_group_state(sb(state))
            } else {
                l
            };
            if v >= 5 {
                l.with_group_type(sb(kind))
            } else {
                l
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
