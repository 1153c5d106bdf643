//! DescribeLogDirs (35): the one data directory with each partition's real
//! size (bytes of stored batches) and, from v4, the disk's total and free bytes.

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::sb;
use crate::dispatch::RequestContext;
use crate::storage::disk;

pub async fn handle(ctx: &RequestContext, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, crate::security::acl::Operation::Describe) {
        b.metrics.error("DescribeLogDirs", e.code());
        // Before v3 there is no error field: Kafka answers no log dirs.
        return DescribeLogDirsResponse::default().with_error_code(e.code());
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let topics: Vec<DescribeLogDirsTopic> = b
        .catalog
        .all()
        .into_iter()
        .filter_map(|t| {
            let parts: Vec<i32> = match &wanted {
                None => t.partitions.iter().map(|p| p.id.get()).collect(),
                Some(w) => w.iter().find(|(n, _)| n == t.name.as_str())?.1.clone(),
            };
            let partitions = parts
                .into_iter()
                .filter_map(|i| t.partition(i))
                // In a cluster, only the replicas this broker holds.
                .filter(|p| b.replicas.hosts(t.name.as_str(), p.id.get()))
                .map(|p| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.id.get())
                        .with_partition_size(i64::try_from(p.size()).unwrap_or(i64::MAX))
                        .with_offset_lag(0)
                })
                .collect();
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(sb(t.name.as_str())))
                    .with_partitions(partitions),
            )
        })
        .collect();
    let dir = std::fs::canonicalize(&b.config.log_dir).unwrap_or_else(|_| b.config.log_dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(sb(dir.display().to_string()))
        .with_topics(topics);
    if ctx.api_version >= 4 {
        if let Some(space) = disk::space(&b.config.log_dir) {
            result = result
                .with_total_bytes(i64::try_from(space.total).unwrap_or(i64::MAX))
                .with_usable_bytes(i64::try_from(space.available).unwrap_or(i64::MAX));
        }
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
