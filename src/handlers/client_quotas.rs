//! DescribeClientQuotas (48) and AlterClientQuotas (49): quotas per user,
//! client id or ip, stored and reported (not yet enforced).

use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};

use super::sb;
use crate::cluster::settings::SettingKind;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::quotas::Entity;
use crate::quotas::NameMatch;
use crate::security::acl::Operation;

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

pub async fn describe(
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, Operation::DescribeConfigs) {
        b.metrics.error("DescribeClientQuotas", e.code());
        return DescribeClientQuotasResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let mut components = Vec::with_capacity(req.components.len());
    for c in &req.components {
        let m = match (c.match_type, &c._match) {
            (MATCH_EXACT, Some(n)) => NameMatch::Exact(n.to_string()),
            (MATCH_DEFAULT, _) => NameMatch::Default,
            (MATCH_ANY, _) => NameMatch::Any,
            (t, _) => {
                let e = BrokerError::InvalidRequest(format!("Invalid quota match type {t}"));
                b.metrics.error("DescribeClientQuotas", e.code());
                return DescribeClientQuotasResponse::default()
                    .with_error_code(e.code())
                    .with_error_message(e.message());
            }
        };
        components.push((c.entity_type.to_string(), m));
    }
    match b.quotas.describe(&components, req.strict) {
        Ok(found) => DescribeClientQuotasResponse::default()
            // The crate defaults this to ""; Kafka sends null on success.
            .with_error_message(None)
            .with_entries(Some(
                found
                    .into_iter()
                    .map(|(entity, values)| {
                        EntryData::default()
                            .with_entity(
                                entity
                                    .into_iter()
                                    .map(|(t, n)| {
                                        EntityData::default()
                                            .with_entity_type(sb(t))
                                            .with_entity_name(n.map(sb))
                                    })
                                    .collect(),
                            )
                            .with_values(
                                values
                                    .into_iter()
                                    .map(|(k, v)| {
                                        ValueData::default().with_key(sb(k)).with_value(v)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )),
        Err(e) => {
            b.metrics.error("DescribeClientQuotas", e.code());
            DescribeClientQuotasResponse::default()
                .with_error_code(e.code())
                .with_error_message(e.message())
        }
    }
}

pub async fn alter(
    ctx: &RequestContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let b = &ctx.broker;
    let allowed = super::cluster_allowed(ctx, Operation::AlterConfigs);
    let sharing = super::Sharing::begin(ctx, SettingKind::Quota).await;
    let entries = req
        .entries
        .into_iter()
        .map(|entry| {
            let entity: Entity = entry
                .entity
                .iter()
                .map(|e| {
                    (
                        e.entity_type.to_string(),
                        e.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect();
            let ops: Vec<(String, Option<f64>)> = entry
                .ops
                .iter()
                .map(|o| (o.key.to_string(), (!o.remove).then_some(o.value)))
                .collect();
            let r = AlterEntry::default().with_entity(
                entry
                    .entity
                    .into_iter()
                    .map(|e| {
                        AlterEntity::default()
                            .with_entity_type(e.entity_type)
                            .with_entity_name(e.entity_name)
                    })
                    .collect(),
            );
            let shared = entity.clone();
            let result = allowed
                .clone()
                .and_then(|()| b.quotas.alter(entity, &ops, req.validate_only));
            if result.is_ok() && !req.validate_only {
                if let Ok((item, value)) = b.quotas.shared_item(shared) {
                    sharing.push(SettingKind::Quota, item, value);
                }
            }
            match result {
                Ok(()) => r.with_error_message(None),
                Err(e) => {
                    b.metrics.error("AlterClientQuotas", e.code());
                    tracing::info!(peer = %ctx.peer, error = %e, "AlterClientQuotas rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        })
        .collect();
    sharing.finish(ctx).await;
    AlterClientQuotasResponse::default().with_entries(entries)
}
