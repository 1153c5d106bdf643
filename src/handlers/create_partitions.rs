//! CreatePartitions (37): grows a topic; shrinking or keeping the count is
//! INVALID_PARTITIONS; assignments must name this node; `validate_only`.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};

pub async fn handle(
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let b = &ctx.broker;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result: BrokerResult<()> = (|| {
                if !b.cluster.is_standalone() {
                    return Err(BrokerError::InvalidRequest(
                        "CreatePartitions is not supported in cluster mode yet".into(),
                    ));
                }
                let topic = super::topic_for(
                    ctx,
                    t.name.0.as_str(),
                    crate::security::acl::Operation::Alter,
                )?;
                let current = topic.partitions.len() as i32;
                if t.count <= current {
                    return Err(BrokerError::InvalidPartitions(format!(
                        "Topic currently has {current} partitions, which is higher than the requested {}.",
                        t.count
                    )));
                }
                super::create_topics::check_new_partitions(t.count - current)?;
                if let Some(assignments) = &t.assignments {
                    if assignments.len() as i32 != t.count - current {
                        return Err(BrokerError::InvalidReplicaAssignment(format!(
                            "Increasing the number of partitions by {} but {} assignments provided.",
                            t.count - current,
                            assignments.len()
                        )));
                    }
                    if assignments
                        .iter()
                        .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != b.config.node_id)
                    {
                        return Err(BrokerError::InvalidReplicaAssignment(format!(
                            "Each new partition must be assigned to exactly [{}] on this single-node cluster",
                            b.config.node_id
                        )));
                    }
                }
                if req.validate_only {
                    return Ok(());
                }
                b.catalog.add_partitions(t.name.0.as_str(), t.count)
            })();
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match result {
                Ok(()) => r,
                Err(e) => {
                    b.metrics.error("CreatePartitions", e.code());
                    tracing::info!(peer = %ctx.peer, topic = %t.name.0.as_str(), error = %e, "CreatePartitions rejected");
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
