//! ListConfigResources (74, Kafka 4.1; v0 was ListClientMetricsResources):
//! the resources configs can be described for, of the types asked (all of
//! them when none are named). v0 lists client-metrics resources only, of
//! which this broker has none. Needs DESCRIBE_CONFIGS on the cluster.

use std::collections::BTreeSet;

use kafka_protocol::messages::list_config_resources_response::ConfigResource;
use kafka_protocol::messages::{ListConfigResourcesRequest, ListConfigResourcesResponse};

use super::sb;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::Operation;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;
const CLIENT_METRICS: i8 = 16;
const GROUP: i8 = 32;
const ALL: [i8; 5] = [TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP];

pub async fn handle(
    ctx: &RequestContext,
    req: ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    let b = &ctx.broker;
    let resp = ListConfigResourcesResponse::default().with_throttle_time_ms(0);
    let fail = |e: BrokerError| {
        b.metrics.error("ListConfigResources", e.code());
        tracing::info!(peer = %ctx.peer, error = %e, "ListConfigResources refused");
        ListConfigResourcesResponse::default().with_error_code(e.code())
    };
    if let Err(e) = super::cluster_allowed(ctx, Operation::DescribeConfigs) {
        return fail(e);
    }
    let types: Vec<i8> = if ctx.api_version == 0 {
        vec![CLIENT_METRICS]
    } else if req.resource_types.is_empty() {
        ALL.to_vec()
    } else {
        req.resource_types.clone()
    };
    if let Some(t) = types.iter().find(|t| !ALL.contains(t)) {
        // As Kafka: v1 knows exactly these types; others need a newer version.
        return fail(BrokerError::UnsupportedVersion(format!(
            "resource type {t} is not supported by ListConfigResources v{}",
            ctx.api_version
        )));
    }
    let mut out = Vec::new();
    let mut push = |name: String, kind: i8| {
        out.push(
            ConfigResource::default()
                .with_resource_name(sb(name))
                .with_resource_type(kind),
        )
    };
    for t in types {
        match t {
            TOPIC => {
                for topic in b.catalog.all() {
                    push(topic.name.to_string(), TOPIC);
                }
            }
            BROKER | BROKER_LOGGER => {
                let ids: BTreeSet<i32> = if b.cluster.is_standalone() {
                    [b.config.node_id].into()
                } else {
                    b.cluster.live_brokers().iter().map(|x| x.node_id).collect()
                };
                for id in ids {
                    push(id.to_string(), t);
                }
            }
            GROUP => {
                let mut groups: BTreeSet<String> = b.group_configs.groups().into_iter().collect();
                if let Ok(known) = b.groups.list() {
                    groups.extend(
                        known
                            .into_iter()
                            .filter(|g| crate::coordinator::offsets_log::check(b, &g.id).is_ok())
                            .map(|g| g.id),
                    );
                }
                for g in groups {
                    push(g, GROUP);
                }
            }
            // No client-metrics subscriptions exist on this broker.
            _ => {}
        }
    }
    resp.with_config_resources(out)
}
