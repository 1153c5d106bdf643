//! One module per Kafka API. Each validates its input, maps failures to Kafka
//! error codes through `BrokerError`, logs with `tracing` and counts errors.

pub mod acls;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod client_quotas;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_config_resources;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_admin;
pub mod produce;
pub mod sasl;
pub mod share_acknowledge;
pub mod share_fetch;
pub mod share_group_describe;
pub mod share_group_heartbeat;
pub mod share_group_offsets;
pub mod share_group_state;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod user_scram_credentials;
pub mod write_txn_markers;

use kafka_protocol::messages::ApiKey;

use crate::cluster::settings::SettingKind;
use kafka_protocol::protocol::StrBytes;

/// Every API we answer and the versions we advertise: exactly what is
/// implemented, so clients fall back where something is missing.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::ListConfigResources, 0, 1),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // KIP-932 share groups: the versions stable since Kafka 4.1.
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
    // Between brokers: share-partition leaders and share coordinators.
    (ApiKey::ReadShareGroupState, 0, 0),
    (ApiKey::WriteShareGroupState, 0, 0),
    (ApiKey::DeleteShareGroupState, 0, 0),
];

pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

pub fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's placeholder when authorized operations were not requested.
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

use std::sync::Arc;

use crate::broker::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::catalog::Topic;
use crate::types::TopicName;

/// Creates a topic on first use with the broker defaults, as Kafka's
/// `auto.create.topics.enable` does; a concurrent creation is not an error.
pub fn auto_create(broker: &Broker, name: &str) -> BrokerResult<Arc<Topic>> {
    let name = TopicName::parse(name)?;
    match broker
        .catalog
        .create_topic(&name, broker.config.num_partitions, Default::default())
    {
        Ok(t) => {
            tracing::info!(topic = %name, "topic auto-created");
            Ok(t)
        }
        Err(BrokerError::TopicAlreadyExists(_)) => broker
            .catalog
            .get(name.as_str())
            .ok_or(BrokerError::UnknownTopicOrPartition),
        Err(e) => Err(e),
    }
}

/// The wire code of a transaction error: PRODUCER_FENCED exists only from
/// `fenced_from` on; older versions get INVALID_PRODUCER_EPOCH (KIP-588).
pub fn txn_error_code(e: &BrokerError, version: i16, fenced_from: i16) -> i16 {
    match e {
        BrokerError::ProducerFenced if version < fenced_from => {
            kafka_protocol::error::ResponseError::InvalidProducerEpoch.code()
        }
        e => e.code(),
    }
}

/// A topic the request named, if the principal may perform `op` on it:
/// TOPIC_AUTHORIZATION_FAILED comes before existence (whether a topic exists
/// is itself protected), then UNKNOWN_TOPIC_OR_PARTITION.
pub fn topic_for(
    ctx: &crate::dispatch::RequestContext,
    name: &str,
    op: crate::security::acl::Operation,
) -> BrokerResult<Arc<Topic>> {
    if !ctx.authorize(op, crate::security::acl::ResourceType::Topic, name) {
        return Err(BrokerError::TopicAuthorizationFailed);
    }
    ctx.broker
        .catalog
        .get(name)
        .ok_or(BrokerError::UnknownTopicOrPartition)
}

/// Only the partition's leader serves it, in the leader epoch the client
/// names (-1: any): NOT_LEADER_OR_FOLLOWER elsewhere, so the client
/// refreshes its metadata; FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for an
/// older / newer epoch. Standalone: this broker leads everything in epoch 0.
pub fn check_leader(
    ctx: &crate::dispatch::RequestContext,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> BrokerResult<()> {
    ctx.broker
        .replicas
        .check_leader(topic, partition, current_leader_epoch)
}

/// KIP-951: the partition's current leader and epoch (for a
/// NOT_LEADER_OR_FOLLOWER answer), so the client can go there without a
/// metadata round trip. `None` standalone or while no live broker leads.
pub fn current_leader(
    ctx: &crate::dispatch::RequestContext,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32)> {
    let c = &ctx.broker.cluster;
    if c.is_standalone() {
        return None;
    }
    let p = c
        .topic(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?
        .clone();
    (p.leader >= 0).then_some((p.leader, p.leader_epoch))
}

/// Before KIP-219 (Produce v6, Fetch v8) clients did not back off by
/// themselves: the broker held the throttled response back instead.
pub async fn delay_for_old_clients(
    ctx: &crate::dispatch::RequestContext,
    throttle_ms: i32,
    kip219_from: i16,
) {
    if throttle_ms > 0 && ctx.api_version < kip219_from {
        tokio::time::sleep(std::time::Duration::from_millis(throttle_ms as u64)).await;
    }
}

/// Shared settings a request changed (cluster mode): written to the
/// metadata store before the request is answered, after the local change.
#[derive(Default)]
pub struct Sharing(std::sync::Mutex<Vec<crate::cluster::settings::Change>>);

impl Sharing {
    /// Catches up with the store's `kind` settings first, so this request's
    /// change builds on every earlier one, wherever it was made.
    pub async fn begin(ctx: &crate::dispatch::RequestContext, kind: SettingKind) -> Sharing {
        if let Err(e) = crate::startup::catch_up(&ctx.broker, kind).await {
            tracing::warn!(kind = kind.name(), error = %e, "cannot read the shared settings; using this broker's");
        }
        Sharing::default()
    }

    pub fn push(&self, kind: SettingKind, item: String, value: Option<Vec<u8>>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((kind, item, value));
    }

    /// Writes the changes to the metadata store, in order.
    pub async fn finish(self, ctx: &crate::dispatch::RequestContext) {
        let items = self
            .0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, item, value) in items {
            if let Err(e) = ctx.broker.cluster.put_setting(kind, item, value).await {
                tracing::warn!(kind = kind.name(), error = %e, "a setting changed here could not be shared with the other brokers");
            }
        }
    }
}

/// `group_allowed`, and (cluster mode) this broker coordinates the group
/// with its state loaded: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS
/// otherwise, so the client looks the coordinator up again.
pub fn group_served(
    ctx: &crate::dispatch::RequestContext,
    op: crate::security::acl::Operation,
    group: &str,
) -> BrokerResult<()> {
    group_allowed(ctx, op, group)?;
    crate::coordinator::offsets_log::check(&ctx.broker, group)
}

/// GROUP_AUTHORIZATION_FAILED unless the principal may perform `op` on the group.
pub fn group_allowed(
    ctx: &crate::dispatch::RequestContext,
    op: crate::security::acl::Operation,
    group: &str,
) -> BrokerResult<()> {
    if ctx.authorize(op, crate::security::acl::ResourceType::Group, group) {
        Ok(())
    } else {
        Err(BrokerError::GroupAuthorizationFailed)
    }
}

/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED unless the principal may perform
/// `op` on the transactional id.
pub fn txn_id_allowed(
    ctx: &crate::dispatch::RequestContext,
    op: crate::security::acl::Operation,
    id: &str,
) -> BrokerResult<()> {
    if ctx.authorize(op, crate::security::acl::ResourceType::TransactionalId, id) {
        Ok(())
    } else {
        Err(BrokerError::TransactionalIdAuthorizationFailed)
    }
}

/// May the principal describe (DESCRIBE_CONFIGS) or alter (ALTER_CONFIGS)
/// a config resource? Topics are checked by name, brokers (4) and broker
/// loggers (8) on the cluster, as Kafka.
pub fn config_allowed(
    ctx: &crate::dispatch::RequestContext,
    resource_type: i8,
    name: &str,
    op: crate::security::acl::Operation,
) -> BrokerResult<()> {
    use crate::security::acl::ResourceType;
    match resource_type {
        2 if !ctx.authorize(op, ResourceType::Topic, name) => {
            Err(BrokerError::TopicAuthorizationFailed)
        }
        4 | 8 if !ctx.authorize_cluster(op) => Err(BrokerError::ClusterAuthorizationFailed),
        32 if !ctx.authorize(op, ResourceType::Group, name) => {
            Err(BrokerError::GroupAuthorizationFailed)
        }
        _ => Ok(()),
    }
}

/// CLUSTER_AUTHORIZATION_FAILED unless the principal may perform `op` on the cluster.
pub fn cluster_allowed(
    ctx: &crate::dispatch::RequestContext,
    op: crate::security::acl::Operation,
) -> BrokerResult<()> {
    if ctx.authorize_cluster(op) {
        Ok(())
    } else {
        Err(BrokerError::ClusterAuthorizationFailed)
    }
}

/// A partition of a topic looked up with `topic_for`, or the topic's error,
/// or UNKNOWN_TOPIC_OR_PARTITION: the lookup every per-partition handler
/// starts with.
pub fn partition_of(
    topic: &BrokerResult<Arc<Topic>>,
    index: i32,
) -> BrokerResult<&Arc<crate::storage::partition::Partition>> {
    match topic {
        Ok(t) => t
            .partition(index)
            .ok_or(BrokerError::UnknownTopicOrPartition),
        Err(e) => Err(e.clone()),
    }
}
