//! DescribeConfigs (32): every topic config with its effective value and
//! source, and the broker's own settings. Read-only here; changing configs
//! belongs to AlterConfigs / IncrementalAlterConfigs.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::sb;
use crate::config::docs::topic_config_doc;
use crate::config::dynamic::{is_dynamic, key_type, Scope};
use crate::config::topic::{
    broker_synonym_keys, resolve_all, supplied_by, ConfigSource, ConfigType, TOPIC_CONFIGS,
};
use crate::config::ServerConfig;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::Operation;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;

pub async fn handle(ctx: &RequestContext, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let b = &ctx.broker;
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match describe(ctx, &res, req.include_synonyms) {
                Ok(configs) if req.include_documentation => r.with_configs(
                    configs
                        .into_iter()
                        .map(|c| {
                            let doc = documentation(res.resource_type, c.name.as_str());
                            c.with_documentation(doc.map(sb))
                        })
                        .collect(),
                ),
                Ok(configs) => r.with_configs(configs),
                Err(e) => {
                    b.metrics.error("DescribeConfigs", e.code());
                    tracing::debug!(peer = %ctx.peer, resource = %res.resource_name.as_str(), error = %e, "DescribeConfigs error");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn wanted(res: &DescribeConfigsResource, name: &str) -> bool {
    res.configuration_keys
        .as_ref()
        .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
}

fn entry(
    name: &str,
    value: Option<String>,
    source: ConfigSource,
    kind: ConfigType,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(sb(name))
        .with_value(value.map(sb))
        .with_read_only(read_only)
        .with_config_source(source as i8)
        .with_is_sensitive(false)
        .with_config_type(kind as i8)
        // Null unless asked for (the crate's default is an empty string).
        .with_documentation(None)
}

/// A config's documentation: a topic config's own, or for a broker key the
/// documentation of the topic config it supplies the default of.
fn documentation(resource_type: i8, name: &str) -> Option<&'static str> {
    if resource_type == RESOURCE_GROUP {
        return crate::config::group::lookup(name).map(|d| d.doc);
    }
    if resource_type == RESOURCE_TOPIC {
        return topic_config_doc(name);
    }
    topic_config_doc(supplied_by(name)?.name)
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(sb(name))
        .with_value(Some(sb(value)))
        .with_source(source as i8)
}

fn describe(
    ctx: &RequestContext,
    res: &DescribeConfigsResource,
    synonyms: bool,
) -> BrokerResult<Vec<DescribeConfigsResourceResult>> {
    let b = &ctx.broker;
    super::config_allowed(
        ctx,
        res.resource_type,
        res.resource_name.as_str(),
        Operation::DescribeConfigs,
    )?;
    match res.resource_type {
        RESOURCE_TOPIC => {
            let topic = b
                .catalog
                .get(res.resource_name.as_str())
                .ok_or(BrokerError::UnknownTopicOrPartition)?;
            let layers = b.broker_configs.layers();
            Ok(resolve_all(&topic.configs, &layers)
                .into_iter()
                .filter(|c| wanted(res, c.def.name))
                .map(|c| {
                    let mut syn = Vec::new();
                    if synonyms {
                        if c.source == ConfigSource::DynamicTopic {
                            syn.push(synonym(c.def.name, &c.value, ConfigSource::DynamicTopic));
                        }
                        for (key, v, source) in layers.synonyms(broker_synonym_keys(c.def)) {
                            syn.push(synonym(key, v, source));
                        }
                        // Kafka's own default sits on log.retention.hours.
                        if c.def.name == "retention.ms" {
                            syn.push(synonym("log.retention.hours", "168", ConfigSource::Default));
                        } else if let Some(key) = c.def.broker_key {
                            syn.push(synonym(key, c.def.default, ConfigSource::Default));
                        }
                    }
                    entry(c.def.name, Some(c.value), c.source, c.def.kind, false).with_synonyms(syn)
                })
                .collect())
        }
        RESOURCE_BROKER => {
            let scope = Scope::of(res.resource_name.as_str(), b.config.node_id)?;
            let layers = b.broker_configs.layers();
            if scope == Scope::ClusterDefault {
                // As Kafka: the default resource lists only what was set on it.
                return Ok(layers
                    .dynamic_default
                    .iter()
                    .filter(|(k, _)| wanted(res, k))
                    .map(|(k, v)| {
                        let source = ConfigSource::DynamicDefaultBroker;
                        let mut e = entry(k, Some(v.clone()), source, key_type(k), false);
                        if synonyms {
                            e = e.with_synonyms(vec![synonym(k, v, source)]);
                        }
                        e
                    })
                    .collect());
            }
            Ok(broker_entries(&b.config, &layers.merged)
                .into_iter()
                .filter(|(k, ..)| wanted(res, k))
                .map(|(k, v, kind)| {
                    let source = layers.source_of(k);
                    let mut e = entry(k, v, source, kind, !is_dynamic(k));
                    if synonyms {
                        e = e.with_synonyms(
                            layers
                                .synonyms(&[k])
                                .into_iter()
                                .map(|(k, v, s)| synonym(k, v, s))
                                .collect(),
                        );
                    }
                    e
                })
                .collect())
        }
        RESOURCE_GROUP => {
            let name = res.resource_name.as_str();
            if name.is_empty() {
                return Err(BrokerError::InvalidRequest(
                    "The group id of a GROUP config resource must not be empty".into(),
                ));
            }
            let overrides = b.group_configs.get(name);
            let layers = b.broker_configs.layers();
            Ok(crate::config::group::GROUP_CONFIGS
                .iter()
                .filter(|d| wanted(res, d.name))
                .map(|d| {
                    let (value, own) =
                        crate::config::group::effective(d, &overrides, &layers.merged);
                    let source = if own {
                        ConfigSource::Group
                    } else {
                        ConfigSource::Default
                    };
                    let mut e = entry(d.name, Some(value.clone()), source, d.kind, false);
                    if synonyms {
                        e = e.with_synonyms(vec![synonym(d.name, &value, source)]);
                    }
                    e
                })
                .collect())
        }
        other => Err(BrokerError::UnsupportedResource(format!(
            "DescribeConfigs for resource type {other} is not supported"
        ))),
    }
}

/// The broker settings we report, with their effective values; `merged` is
/// the file's settings with dynamic changes applied.
fn broker_entries(
    c: &ServerConfig,
    merged: &BTreeMap<String, String>,
) -> Vec<(&'static str, Option<String>, ConfigType)> {
    // Every listener, as `NAME://host:port` (bound, then advertised).
    let endpoints = |advertised: bool| {
        c.listeners
            .iter()
            .map(|l| {
                let (h, p) = if advertised {
                    (&l.advertised_host, l.advertised_port)
                } else {
                    (&l.host, l.port)
                };
                format!("{}://{h}:{p}", l.name)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = vec![
        ("node.id", Some(c.node_id.to_string()), ConfigType::Int),
        ("broker.id", Some(c.node_id.to_string()), ConfigType::Int),
        ("listeners", Some(endpoints(false)), ConfigType::List),
        (
            "advertised.listeners",
            Some(endpoints(true)),
            ConfigType::List,
        ),
        (
            "log.dirs",
            Some(c.log_dir.display().to_string()),
            ConfigType::List,
        ),
        (
            "num.partitions",
            Some(c.num_partitions.to_string()),
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            Some(c.default_replication_factor.to_string()),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            Some(c.auto_create_topics_enable.to_string()),
            ConfigType::Boolean,
        ),
        (
            "socket.request.max.bytes",
            Some(c.socket_request_max_bytes.to_string()),
            ConfigType::Int,
        ),
        (
            "log.flush.interval.messages",
            Some(c.flush_interval_messages.to_string()),
            ConfigType::Long,
        ),
    ];
    // Retention as Kafka reports it: hours has a default, the finer keys are
    // unset (null) unless set.
    out.push((
        "log.retention.hours",
        Some(
            merged
                .get("log.retention.hours")
                .cloned()
                .unwrap_or_else(|| "168".into()),
        ),
        ConfigType::Int,
    ));
    out.push((
        "log.retention.minutes",
        merged.get("log.retention.minutes").cloned(),
        ConfigType::Int,
    ));
    out.push((
        "log.retention.ms",
        merged.get("log.retention.ms").cloned(),
        ConfigType::Long,
    ));
    // Other topic defaults set at broker level (log.cleanup.policy,
    // message.max.bytes, ...).
    for d in TOPIC_CONFIGS {
        if let Some(key) = d.broker_key {
            if out.iter().any(|(k, ..)| *k == key) {
                continue;
            }
            let v = merged
                .get(key)
                .cloned()
                .unwrap_or_else(|| d.default.to_string());
            out.push((key, Some(v), d.kind));
        }
    }
    out
}
