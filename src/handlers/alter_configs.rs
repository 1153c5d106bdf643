//! AlterConfigs (33) and IncrementalAlterConfigs (44) for topics: validate
//! everything first, then store the new overrides (unless `validate_only`).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use crate::config::topic::{lookup, validate_topic_config, ConfigType};
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn topic_only(resource_type: i8) -> BrokerResult<()> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err(BrokerError::InvalidRequest(
            "Changing broker configs at runtime is not supported yet; edit server.properties"
                .into(),
        )),
        other => Err(BrokerError::UnsupportedResource(format!(
            "resource type {other}"
        ))),
    }
}

fn apply(
    ctx: &RequestContext,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> BrokerResult<()> {
    for (k, v) in &configs {
        validate_topic_config(k, Some(v))?;
    }
    if validate_only {
        return Ok(());
    }
    ctx.broker.catalog.set_configs(name, configs)
}

/// AlterConfigs replaces the topic's whole set of overrides.
pub async fn handle(ctx: &RequestContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let b = &ctx.broker;
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let result = topic_only(res.resource_type).and_then(|()| {
                b.catalog
                    .get(res.resource_name.as_str())
                    .ok_or(BrokerError::UnknownTopicOrPartition)?;
                let mut configs = BTreeMap::new();
                for c in &res.configs {
                    let v = c.value.as_ref().ok_or_else(|| {
                        BrokerError::InvalidConfig(format!("Null value not supported for topic config {}", c.name.as_str()))
                    })?;
                    configs.insert(c.name.to_string(), v.to_string());
                }
                apply(ctx, res.resource_name.as_str(), configs, req.validate_only)
            });
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match result {
                Ok(()) => r,
                Err(e) => {
                    b.metrics.error("AlterConfigs", e.code());
                    tracing::info!(peer = %ctx.peer, resource = %res.resource_name.as_str(), error = %e, "AlterConfigs rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per config.
pub async fn handle_incremental(
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let b = &ctx.broker;
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let result = topic_only(res.resource_type).and_then(|()| {
                let topic = b
                    .catalog
                    .get(res.resource_name.as_str())
                    .ok_or(BrokerError::UnknownTopicOrPartition)?;
                let mut configs = topic.configs.clone();
                for c in &res.configs {
                    let name = c.name.as_str();
                    let def = lookup(name)
                        .ok_or_else(|| BrokerError::InvalidConfig(format!("Unknown topic config name: {name}")))?;
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match c.config_operation {
                        OP_SET => {
                            let v = value.ok_or_else(|| BrokerError::InvalidConfig(format!("Null value for {name}")))?;
                            configs.insert(name.to_string(), v);
                        }
                        OP_DELETE => {
                            configs.remove(name);
                        }
                        OP_APPEND | OP_SUBTRACT => {
                            if def.kind != ConfigType::List {
                                return Err(BrokerError::InvalidConfig(format!(
                                    "Config value append/subtract is not allowed for config key {name}, which is not a list"
                                )));
                            }
                            let current = configs.get(name).cloned().unwrap_or_else(|| def.default.to_string());
                            let mut items: Vec<String> = current
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect();
                            let given: Vec<String> = value
                                .unwrap_or_default()
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect();
                            if c.config_operation == OP_APPEND {
                                for g in given {
                                    if !items.contains(&g) {
                                        items.push(g);
                                    }
                                }
                            } else {
                                items.retain(|i| !given.contains(i));
                            }
                            configs.insert(name.to_string(), items.join(","));
                        }
                        other => {
                            return Err(BrokerError::InvalidRequest(format!("Unknown config operation {other}")))
                        }
                    }
                }
                apply(ctx, res.resource_name.as_str(), configs, req.validate_only)
            });
            let r = IncrementalResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match result {
                Ok(()) => r,
                Err(e) => {
                    b.metrics.error("IncrementalAlterConfigs", e.code());
                    tracing::info!(peer = %ctx.peer, resource = %res.resource_name.as_str(), error = %e, "IncrementalAlterConfigs rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
