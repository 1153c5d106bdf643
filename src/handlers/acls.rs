//! CreateAcls (30), DescribeAcls (29), DeleteAcls (31): ACL management for
//! `kafka-acls` and the AdminClients. Creating and deleting need ALTER on the
//! cluster, describing DESCRIBE; without an authorizer Kafka answers
//! SECURITY_DISABLED, and so do we.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::sb;
use crate::cluster::settings::SettingKind;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
};

/// Why the whole request is refused, if it is.
fn refusal(ctx: &RequestContext, op: Operation) -> Option<BrokerError> {
    if !ctx.broker.authorizer.enabled() {
        Some(BrokerError::SecurityDisabled)
    } else if !ctx.authorize_cluster(op) {
        Some(BrokerError::ClusterAuthorizationFailed)
    } else {
        None
    }
}

/// Pattern types arrived in v1; v0 filters and bindings are LITERAL.
fn pattern_of(version: i16, wire: i8) -> i8 {
    if version == 0 {
        PatternType::Literal.wire()
    } else {
        wire
    }
}

pub async fn create(ctx: &RequestContext, req: CreateAclsRequest) -> CreateAclsResponse {
    let sharing = super::Sharing::begin(ctx, SettingKind::Acl).await;
    let denied = refusal(ctx, Operation::Alter);
    let results = req
        .creations
        .into_iter()
        .map(|c| {
            let result = match &denied {
                Some(e) => Err(e.clone()),
                None => binding(ctx.api_version, &c).and_then(|acl| {
                    let shown = format!("{acl:?}");
                    let item = serde_json::to_string(&acl).ok();
                    ctx.broker.authorizer.acls.create(acl)?;
                    tracing::info!(principal = %ctx.principal, acl = %shown, "ACL created");
                    if let Some(item) = item {
                        sharing.push(SettingKind::Acl, item, Some(Vec::new()));
                    }
                    Ok(())
                }),
            };
            match result {
                // Kafka answers a null message on success.
                Ok(()) => AclCreationResult::default().with_error_message(None),
                Err(e) => {
                    ctx.broker.metrics.error("CreateAcls", e.code());
                    tracing::info!(peer = %ctx.peer, error = %e, "CreateAcls refused");
                    AclCreationResult::default()
                        .with_error_code(e.code())
                        .with_error_message(e.message())
                }
            }
        })
        .collect();
    sharing.finish(ctx).await;
    CreateAclsResponse::default().with_results(results)
}

fn binding(
    version: i16,
    c: &kafka_protocol::messages::create_acls_request::AclCreation,
) -> BrokerResult<AclBinding> {
    let bad = |what: &str, v: i8| BrokerError::InvalidRequest(format!("Invalid {what} {v}"));
    let pattern = pattern_of(version, c.resource_pattern_type);
    let acl = AclBinding {
        resource_type: ResourceType::from_wire(c.resource_type)
            .ok_or_else(|| bad("resourceType", c.resource_type))?,
        name: c.resource_name.to_string(),
        pattern: PatternType::from_wire(pattern).ok_or_else(|| bad("patternType", pattern))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_wire(c.operation)
            .ok_or_else(|| bad("operation", c.operation))?,
        permission: Permission::from_wire(c.permission_type)
            .ok_or_else(|| bad("permissionType", c.permission_type))?,
    };
    acl.validate()?;
    Ok(acl)
}

pub async fn describe(ctx: &RequestContext, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = refusal(ctx, Operation::Describe).map_or_else(
        || {
            AclFilter::from_wire(
                req.resource_type_filter,
                req.resource_name_filter.as_deref(),
                pattern_of(ctx.api_version, req.pattern_type_filter),
                req.principal_filter.as_deref(),
                req.host_filter.as_deref(),
                req.operation,
                req.permission_type,
            )
        },
        Err,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            ctx.broker.metrics.error("DescribeAcls", e.code());
            tracing::info!(peer = %ctx.peer, error = %e, "DescribeAcls refused");
            return DescribeAclsResponse::default()
                .with_error_code(e.code())
                .with_error_message(e.message());
        }
    };
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in ctx.broker.authorizer.acls.describe(&filter) {
        by_resource
            .entry((
                acl.resource_type.wire(),
                acl.name.clone(),
                acl.pattern.wire(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(sb(acl.principal))
                    .with_host(sb(acl.host))
                    .with_operation(acl.operation.wire())
                    .with_permission_type(acl.permission.wire()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((rt, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt)
                .with_resource_name(sb(name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(ctx: &RequestContext, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let sharing = super::Sharing::begin(ctx, SettingKind::Acl).await;
    let denied = refusal(ctx, Operation::Alter);
    let filter_results = req
        .filters
        .into_iter()
        .map(|f| {
            let result = match &denied {
                Some(e) => Err(e.clone()),
                None => AclFilter::from_wire(
                    f.resource_type_filter,
                    f.resource_name_filter.as_deref(),
                    pattern_of(ctx.api_version, f.pattern_type_filter),
                    f.principal_filter.as_deref(),
                    f.host_filter.as_deref(),
                    f.operation,
                    f.permission_type,
                )
                .and_then(|filter| ctx.broker.authorizer.acls.delete(&filter)),
            };
            match result {
                Ok(gone) => {
                    for acl in &gone {
                        tracing::info!(principal = %ctx.principal, acl = ?acl, "ACL deleted");
                        if let Ok(item) = serde_json::to_string(acl) {
                            sharing.push(SettingKind::Acl, item, None);
                        }
                    }
                    DeleteAclsFilterResult::default().with_matching_acls(
                        gone.into_iter()
                            .map(|acl| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(acl.resource_type.wire())
                                    .with_resource_name(sb(acl.name))
                                    .with_pattern_type(acl.pattern.wire())
                                    .with_principal(sb(acl.principal))
                                    .with_host(sb(acl.host))
                                    .with_operation(acl.operation.wire())
                                    .with_permission_type(acl.permission.wire())
                            })
                            .collect(),
                    )
                }
                Err(e) => {
                    ctx.broker.metrics.error("DeleteAcls", e.code());
                    tracing::info!(peer = %ctx.peer, error = %e, "DeleteAcls refused");
                    DeleteAclsFilterResult::default()
                        .with_error_code(e.code())
                        .with_error_message(e.message())
                }
            }
        })
        .collect();
    sharing.finish(ctx).await;
    DeleteAclsResponse::default().with_filter_results(filter_results)
}
