//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51):
//! SCRAM users, stored salted (the client sends the salted password).
//! Changes apply to the next login at once.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::settings::SettingKind;
use crate::dispatch::RequestContext;
use crate::security::credentials::{
    ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};

fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub async fn describe(
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if let Err(e) = super::cluster_allowed(ctx, crate::security::acl::Operation::Describe) {
        ctx.broker
            .metrics
            .error("DescribeUserScramCredentials", e.code());
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let all = ctx.broker.credentials.users();
    let info = |mechs: &Vec<(ScramMechanism, i32)>| -> Vec<CredentialInfo> {
        mechs
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.wire_id())
                    .with_iterations(*i)
            })
            .collect()
    };
    // Kafka describes every user for a null or an empty list.
    let users = req.users.filter(|u| !u.is_empty());
    let results = match users {
        None => all
            .iter()
            .map(|(user, mechs)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(sb(user.clone()))
                    .with_credential_infos(info(mechs))
            })
            .collect(),
        Some(users) => {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for u in &users {
                *seen.entry(u.name.to_string()).or_default() += 1;
            }
            let mut out = Vec::new();
            for (name, n) in seen {
                let r = DescribeUserScramCredentialsResult::default().with_user(sb(name.clone()));
                out.push(if n > 1 {
                    r.with_error_code(ResponseError::DuplicateResource.code())
                        .with_error_message(Some(sb(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}"))))
                } else if let Some(mechs) = all.get(&name) {
                    r.with_credential_infos(info(mechs))
                } else {
                    r.with_error_code(ResponseError::ResourceNotFound.code())
                        .with_error_message(Some(sb(format!(
                            "Attempt to describe a user credential that does not exist: {name}"
                        ))))
                });
            }
            out
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub async fn alter(
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let sharing = super::Sharing::begin(ctx, SettingKind::Scram).await;
    let creds = &ctx.broker.credentials;
    let allowed = ctx.authorize_cluster(crate::security::acl::Operation::Alter);
    // One result per user; the first error of a user's alterations wins.
    let mut results: BTreeMap<String, Option<(i16, String)>> = BTreeMap::new();
    let mut touched: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for d in &req.deletions {
        *touched
            .entry((d.name.to_string(), d.mechanism))
            .or_default() += 1;
    }
    for u in &req.upsertions {
        *touched
            .entry((u.name.to_string(), u.mechanism))
            .or_default() += 1;
    }
    fn failed(
        results: &mut BTreeMap<String, Option<(i16, String)>>,
        user: &str,
        e: ResponseError,
        msg: String,
    ) {
        let slot = results.entry(user.to_string()).or_insert(None);
        if slot.is_none() {
            *slot = Some((e.code(), msg));
        }
    }
    // The checks deletions and upsertions share: a known mechanism, and each
    // (user, mechanism) altered once per request.
    let checked = |results: &mut BTreeMap<String, Option<(i16, String)>>,
                   user: &str,
                   mech_id: i8|
     -> Option<ScramMechanism> {
        if !allowed {
            failed(
                results,
                user,
                ResponseError::ClusterAuthorizationFailed,
                "Cluster authorization failed".into(),
            );
            return None;
        }
        let Some(mech) = ScramMechanism::from_wire_id(mech_id) else {
            failed(
                results,
                user,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {mech_id}"),
            );
            return None;
        };
        if touched
            .get(&(user.to_string(), mech_id))
            .copied()
            .unwrap_or(0)
            > 1
        {
            failed(
                results,
                user,
                ResponseError::DuplicateResource,
                format!("A user credential cannot be altered twice in the same request: {user}"),
            );
            return None;
        }
        Some(mech)
    };
    let mut apply: Vec<(String, ScramMechanism, Option<ScramCredential>)> = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        let Some(mech) = checked(&mut results, &user, d.mechanism) else {
            continue;
        };
        if creds.get(&user, mech).is_none() {
            failed(
                &mut results,
                &user,
                ResponseError::ResourceNotFound,
                format!("Attempt to delete a user credential that does not exist: {user}"),
            );
            continue;
        }
        apply.push((user, mech, None));
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        let Some(mech) = checked(&mut results, &user, u.mechanism) else {
            continue;
        };
        if user.is_empty() {
            failed(
                &mut results,
                &user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
            continue;
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&u.iterations) {
            failed(
                &mut results,
                &user,
                ResponseError::UnacceptableCredential,
                format!(
                    "Iterations {} must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}",
                    u.iterations
                ),
            );
            continue;
        }
        if u.salt.is_empty() || u.salted_password.is_empty() {
            failed(
                &mut results,
                &user,
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty".into(),
            );
            continue;
        }
        let c = ScramCredential::from_salted_password(
            mech,
            u.salt.to_vec(),
            &u.salted_password,
            u.iterations,
        );
        apply.push((user, mech, Some(c)));
    }
    for (user, mech, c) in apply {
        if results.get(&user).is_some_and(|r| r.is_some()) {
            continue;
        }
        let outcome = match c {
            Some(c) => creds.upsert(&user, mech, c),
            None => creds.delete(&user, mech).map(|_| ()),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(peer = %ctx.peer, user = %user, mechanism = mech.name(), "SCRAM credential changed");
                let (item, value) = creds.shared_item(&user, mech);
                sharing.push(SettingKind::Scram, item, value);
                results.entry(user).or_insert(None);
            }
            Err(e) => failed(
                &mut results,
                &user,
                ResponseError::KafkaStorageError,
                e.to_string(),
            ),
        }
    }
    let results = results
        .into_iter()
        .map(|(user, err)| {
            let r = AlterUserScramCredentialsResult::default().with_user(sb(user));
            match err {
                None => r.with_error_message(None),
                Some((code, msg)) => {
                    ctx.broker.metrics.error("AlterUserScramCredentials", code);
                    r.with_error_code(code).with_error_message(Some(sb(msg)))
                }
            }
        })
        .collect();
    sharing.finish(ctx).await;
    AlterUserScramCredentialsResponse::default().with_results(results)
}
