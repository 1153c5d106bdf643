//! AlterConfigs (33) and IncrementalAlterConfigs (44) for topics, for the
//! broker (its dynamic configs) and for groups (Kafka 4's GROUP resource,
//! bounded by the broker's `group.*` settings): validate everything in a
//! resource first,
//! then store the new set (unless `validate_only`). A resource is changed
//! wholly or not at all.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use crate::cluster::settings::SettingKind;
use crate::config::dynamic::{self, Scope};
use crate::config::topic::{lookup, supplied_by, validate_topic_config, ConfigType};
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::Operation;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// What a resource in the request addresses.
enum Target {
    Topic,
    Broker(Scope),
    Group,
}

fn target(ctx: &RequestContext, resource_type: i8, name: &str) -> BrokerResult<Target> {
    super::config_allowed(ctx, resource_type, name, Operation::AlterConfigs)?;
    match resource_type {
        RESOURCE_TOPIC => Ok(Target::Topic),
        RESOURCE_BROKER => Ok(Target::Broker(Scope::of(name, ctx.broker.config.node_id)?)),
        RESOURCE_GROUP if name.is_empty() => Err(BrokerError::InvalidRequest(
            "The group id of a GROUP config resource must not be empty".into(),
        )),
        RESOURCE_GROUP => Ok(Target::Group),
        other => Err(BrokerError::UnsupportedResource(format!(
            "resource type {other}"
        ))),
    }
}

/// Validates and (unless `validate_only`) stores a resource's new set of configs.
async fn store(
    ctx: &RequestContext,
    sharing: &super::Sharing,
    target: &Target,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> BrokerResult<()> {
    match target {
        Target::Broker(scope) => {
            let old = ctx.broker.broker_configs.get(*scope);
            let tls_change = configs
                .keys()
                .chain(old.keys())
                .any(|k| dynamic::is_ssl_store_key(k));
            if !tls_change {
                let shared = (*scope == dynamic::Scope::ClusterDefault && !validate_only)
                    .then(|| serde_json::to_vec(&configs).ok())
                    .flatten();
                ctx.broker
                    .broker_configs
                    .replace(*scope, configs, validate_only)?;
                // Cluster-wide values reach every broker.
                if let Some(v) = shared {
                    sharing.push(
                        SettingKind::BrokerDefaults,
                        crate::startup::DEFAULTS_ITEM.to_string(),
                        Some(v),
                    );
                }
                return Ok(());
            }
            if *scope == dynamic::Scope::ClusterDefault {
                return Err(BrokerError::InvalidRequest(
                    "Cannot update TLS keystore or truststore configs at default cluster level, broker id must be specified".into(),
                ));
            }
            let acceptors = crate::network::reload::check(&ctx.broker, &configs)?;
            ctx.broker
                .broker_configs
                .replace(*scope, configs, validate_only)?;
            if !validate_only {
                crate::network::reload::apply(acceptors);
            }
            Ok(())
        }
        Target::Group => {
            let b = &ctx.broker;
            crate::config::group::validate(&configs, &b.broker_configs.layers().merged)?;
            if validate_only {
                return Ok(());
            }
            let shared = (!configs.is_empty())
                .then(|| serde_json::to_vec(&configs).ok())
                .flatten();
            b.group_configs.set(name, configs)?;
            if !b.cluster.is_standalone() {
                sharing.push(SettingKind::GroupConfigs, name.to_string(), shared);
            }
            Ok(())
        }
        Target::Topic => {
            for (k, v) in &configs {
                validate_topic_config(k, Some(v))?;
            }
            if validate_only {
                return Ok(());
            }
            if !ctx.broker.cluster.is_standalone() {
                // Shared: every broker applies it from the metadata store.
                let wanted = configs.clone();
                let change = Box::new(move |t: &mut crate::cluster::TopicState| {
                    let changed = t.configs != wanted;
                    t.configs = wanted.clone();
                    Ok(changed)
                });
                ctx.broker.cluster.update_topic(name, change).await?;
            }
            ctx.broker.catalog.set_configs(name, configs)
        }
    }
}

/// A change of the cluster-wide broker configs (the BROKER resource with an
/// empty name) builds on the store's latest set and is shared after.
async fn sharing_for<'a>(
    ctx: &RequestContext,
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> super::Sharing {
    let kinds: Vec<(i8, bool)> = resources.map(|(t, name)| (t, name.is_empty())).collect();
    if kinds.contains(&(RESOURCE_BROKER, true)) {
        super::Sharing::begin(ctx, SettingKind::BrokerDefaults).await
    } else if kinds.iter().any(|(t, _)| *t == RESOURCE_GROUP) {
        super::Sharing::begin(ctx, SettingKind::GroupConfigs).await
    } else {
        super::Sharing::default()
    }
}

/// The configs a resource holds now (a topic's overrides, a broker scope's dynamic values).
fn current(
    ctx: &RequestContext,
    target: &Target,
    name: &str,
) -> BrokerResult<BTreeMap<String, String>> {
    match target {
        Target::Broker(scope) => Ok(ctx.broker.broker_configs.get(*scope)),
        Target::Group => Ok(ctx.broker.group_configs.get(name)),
        Target::Topic => Ok(ctx
            .broker
            .catalog
            .get(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)?
            .configs
            .clone()),
    }
}

/// Name check, value type and Kafka default of a config being altered.
fn describe_key(target: &Target, name: &str) -> BrokerResult<(ConfigType, String)> {
    match target {
        Target::Topic => lookup(name)
            .map(|d| (d.kind, d.default.to_string()))
            .ok_or_else(|| {
                BrokerError::InvalidConfig(format!("Unknown topic config name: {name}"))
            }),
        Target::Group => crate::config::group::lookup(name)
            .map(|d| (d.kind, d.default.to_string()))
            .ok_or_else(|| {
                BrokerError::InvalidConfig(format!("Unknown group config name: {name}"))
            }),
        Target::Broker(_) => {
            dynamic::check_key(name)?;
            let default = supplied_by(name)
                .map(|d| d.default.to_string())
                .unwrap_or_default();
            Ok((dynamic::key_type(name), default))
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Applies one IncrementalAlterConfigs operation to a resource's configs.
fn apply_op(
    target: &Target,
    configs: &mut BTreeMap<String, String>,
    c: &AlterableConfig,
) -> BrokerResult<()> {
    let name = c.name.as_str();
    let (kind, default) = describe_key(target, name)?;
    let value = c.value.as_ref().map(|v| v.to_string());
    match c.config_operation {
        OP_SET => {
            let v = value
                .ok_or_else(|| BrokerError::InvalidConfig(format!("Null value for {name}")))?;
            configs.insert(name.to_string(), v);
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            if kind != ConfigType::List {
                return Err(BrokerError::InvalidConfig(format!(
                    "Config value append/subtract is not allowed for config key {name}, which is not a list"
                )));
            }
            let mut items = split_list(configs.get(name).unwrap_or(&default));
            let given = split_list(&value.unwrap_or_default());
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
            return Err(BrokerError::InvalidRequest(format!(
                "Unknown config operation {other}"
            )))
        }
    }
    Ok(())
}

/// AlterConfigs replaces the resource's whole set of configs.
pub async fn handle(ctx: &RequestContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let b = &ctx.broker;
    let sharing = sharing_for(
        ctx,
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    )
    .await;
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let r = {
            let name = res.resource_name.as_str();
            let prepared = target(ctx, res.resource_type, name).and_then(|t| {
                current(ctx, &t, name)?;
                let mut configs = BTreeMap::new();
                for c in &res.configs {
                    let v = c.value.as_ref().ok_or_else(|| {
                        BrokerError::InvalidConfig(format!(
                            "Null value not supported for config {}",
                            c.name.as_str()
                        ))
                    })?;
                    configs.insert(c.name.to_string(), v.to_string());
                }
                Ok((t, configs))
            });
            let result = match prepared {
                Ok((t, configs)) => {
                    store(ctx, &sharing, &t, name, configs, req.validate_only).await
                }
                Err(e) => Err(e),
            };
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match result {
                Ok(()) => {
                    tracing::info!(peer = %ctx.peer, resource_type = res.resource_type, resource = %name, validate_only = req.validate_only, "AlterConfigs applied");
                    r.with_error_message(None)
                }
                Err(e) => {
                    b.metrics.error("AlterConfigs", e.code());
                    tracing::info!(peer = %ctx.peer, resource = %name, error = %e, "AlterConfigs rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        };
        responses.push(r);
    }
    sharing.finish(ctx).await;
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT per config.
pub async fn handle_incremental(
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let b = &ctx.broker;
    let sharing = sharing_for(
        ctx,
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    )
    .await;
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let r = {
            let name = res.resource_name.as_str();
            let prepared = target(ctx, res.resource_type, name).and_then(|t| {
                let mut configs = current(ctx, &t, name)?;
                for c in &res.configs {
                    apply_op(&t, &mut configs, c)?;
                }
                Ok((t, configs))
            });
            let result = match prepared {
                Ok((t, configs)) => {
                    store(ctx, &sharing, &t, name, configs, req.validate_only).await
                }
                Err(e) => Err(e),
            };
            let r = IncrementalResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match result {
                Ok(()) => {
                    tracing::info!(peer = %ctx.peer, resource_type = res.resource_type, resource = %name, validate_only = req.validate_only, "IncrementalAlterConfigs applied");
                    r.with_error_message(None)
                }
                Err(e) => {
                    b.metrics.error("IncrementalAlterConfigs", e.code());
                    tracing::info!(peer = %ctx.peer, resource = %name, error = %e, "IncrementalAlterConfigs rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        };
        responses.push(r);
    }
    sharing.finish(ctx).await;
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
