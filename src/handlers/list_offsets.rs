//! ListOffsets (2): earliest (-2), latest (-1), max timestamp (-3), earliest
//! local (-4), and the first offset at or after a timestamp. Under
//! read_committed (isolation level 1, v2+) latest is the last stable offset
//! and lookups never answer an offset at or past it.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::partition::Partition;
use crate::storage::time_lookup;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let b = &ctx.broker;
    let committed = ctx.api_version >= 2 && req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = super::topic_for(ctx, t.name.0.as_str(), crate::security::acl::Operation::Describe);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let result = super::partition_of(&topic, p.partition_index)
                        .and_then(|part| {
                            super::check_leader(
                                ctx,
                                t.name.0.as_str(),
                                p.partition_index,
                                p.current_leader_epoch,
                            )?;
                            lookup(ctx, part, p.timestamp, committed)
                        });
                    match result {
                        Ok((offset, ts)) => {
                            let r = r.with_offset(offset).with_timestamp(ts);
                            // The field exists from v4; older versions must leave it at -1.
                            if ctx.api_version >= 4 { r.with_leader_epoch(0) } else { r }
                        }
                        Err(e) => {
                            b.metrics.error("ListOffsets", e.code());
                            tracing::debug!(peer = %ctx.peer, topic = %t.name.0.as_str(), partition = p.partition_index, error = %e, "ListOffsets error");
                            r.with_error_code(e.code()).with_offset(-1).with_timestamp(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; -1/-1 when no record matches.
fn lookup(
    ctx: &RequestContext,
    p: &Partition,
    ts: i64,
    committed: bool,
) -> BrokerResult<(i64, i64)> {
    let store = &ctx.broker.store;
    // What a consumer of this isolation level can read up to.
    let fetchable = if committed {
        p.last_stable_offset().min(p.high_watermark())
    } else {
        p.high_watermark()
    };
    let found = match ts {
        LATEST | LATEST_TIERED => return Ok((fetchable, -1)),
        EARLIEST | EARLIEST_LOCAL => return Ok((p.log_start_offset(), -1)),
        MAX_TIMESTAMP => time_lookup::max_timestamp(p, store)?,
        t if t >= 0 => time_lookup::first_at_or_after(p, store, t)?,
        other => {
            return Err(BrokerError::InvalidRequest(format!(
                "Invalid ListOffsets timestamp {other}"
            )))
        }
    };
    Ok(found
        .filter(|(offset, _)| *offset < fetchable)
        .unwrap_or((-1, -1)))
}
