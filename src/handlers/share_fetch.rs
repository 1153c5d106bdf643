//! ShareFetch (78, v1): a share consumer's fetch. It first applies the
//! acknowledgements it carries, then acquires records for the member from
//! every partition of its share session (available ones again, then new
//! ones, under a lock of `share.record.lock.duration.ms`), long-polling up
//! to `max_wait_ms` when there is nothing to take. The records go back as
//! the stored batches containing them; `AcquiredRecords` says which
//! offsets are the member's, with their delivery counts.
//!
//! The share-partition is created on the group's first fetch from a
//! partition, at the offset `share.auto.offset.reset` names. Fetch quotas
//! apply: they cap the bytes taken and set the throttle time.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use uuid::Uuid;

use crate::coordinator::share_state;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::quotas::limiter::QuotaType;
use crate::security::acl::{Operation, ResourceType};
use crate::share::partition::{AckBatch, AckType, Acquired, Limits, Segment};
use crate::share::sessions::SessionPartitions;
use crate::share::{ShareEntry, ShareKey};
use crate::storage::partition::Partition;

/// Longest long-poll we honour, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
/// A waiting fetch looks again this often (locks running out wake nobody).
const RECHECK: Duration = Duration::from_millis(100);

/// The group's window settings.
pub fn limits(ctx: &RequestContext, group: &str) -> Limits {
    let b = &ctx.broker;
    crate::share::limits(
        &b.broker_configs.layers().merged,
        &b.group_configs.get(group),
    )
}

/// Acknowledgement batches as a request carries them, merged by partition
/// (a topic may appear more than once): (first, last, types).
pub type RequestedAcks = BTreeMap<(Uuid, i32), Vec<(i64, i64, Vec<i8>)>>;

/// A request's partitions and their acknowledgement batches, merged.
pub fn merge_acks(
    parts: impl IntoIterator<Item = ((Uuid, i32), Vec<(i64, i64, Vec<i8>)>)>,
) -> RequestedAcks {
    let mut out = RequestedAcks::new();
    for (tp, batches) in parts {
        out.entry(tp).or_default().extend(batches);
    }
    out
}

/// A request's acknowledgement batches in our terms (INVALID_REQUEST for an
/// unknown type).
pub fn ack_batches(
    wire: impl IntoIterator<Item = (i64, i64, Vec<i8>)>,
) -> BrokerResult<Vec<AckBatch>> {
    wire.into_iter()
        .map(|(first, last, types)| {
            let types = types
                .into_iter()
                .map(|t| {
                    AckType::from_wire(t).ok_or_else(|| {
                        BrokerError::InvalidRequest(format!("unknown acknowledge type {t}"))
                    })
                })
                .collect::<BrokerResult<Vec<_>>>()?;
            if types.is_empty() {
                return Err(BrokerError::InvalidRequest(
                    "an acknowledgement batch without types".into(),
                ));
            }
            Ok(AckBatch { first, last, types })
        })
        .collect()
}

/// The topic a share request names by id, if the principal may read it.
fn topic_of(ctx: &RequestContext, id: &Uuid) -> BrokerResult<Arc<crate::storage::catalog::Topic>> {
    let t = ctx
        .broker
        .catalog
        .get_by_id(id)
        .ok_or(BrokerError::UnknownTopicId)?;
    if !ctx.authorize(Operation::Read, ResourceType::Topic, t.name.as_str()) {
        return Err(BrokerError::TopicAuthorizationFailed);
    }
    Ok(t)
}

/// Applies one partition's acknowledgements for `member`; answers once
/// the outcome is durable.
pub async fn acknowledge(
    ctx: &RequestContext,
    group: &str,
    member: &str,
    (topic_id, partition): (Uuid, i32),
    batches: BrokerResult<Vec<AckBatch>>,
    limits: &Limits,
) -> BrokerResult<()> {
    let b = &ctx.broker;
    let batches = batches?;
    let topic = topic_of(ctx, &topic_id)?;
    super::check_leader(ctx, topic.name.as_str(), partition, -1)?;
    let key = ShareKey {
        group: group.into(),
        topic_id,
        partition,
    };
    let entry = b.shares.get(&key).ok_or_else(|| {
        BrokerError::InvalidRecordState("no records of this partition were acquired".into())
    })?;
    let freed = {
        let mut sp = entry.lock();
        sp.expire(std::time::Instant::now(), limits);
        sp.acknowledge(member, &batches, limits)?
    };
    if freed {
        entry.released.notify_waiters();
    }
    // Durable before the member hears it is done.
    share_state::save(b, &key, &entry).await
}

/// Where `group` starts reading a partition it has never read.
fn initial_offset(ctx: &RequestContext, group: &str, p: &Partition) -> BrokerResult<i64> {
    let b = &ctx.broker;
    let layers = b.broker_configs.layers();
    let def = crate::config::group::lookup("share.auto.offset.reset")
        .ok_or_else(|| BrokerError::Storage("share.auto.offset.reset is not defined".into()))?;
    let (reset, _) =
        crate::config::group::effective(def, &b.group_configs.get(group), &layers.merged);
    if reset == "earliest" {
        return Ok(p.log_start_offset());
    }
    if let Some(d) = reset
        .strip_prefix("by_duration:")
        .and_then(crate::config::group::parse_duration)
    {
        let ts =
            crate::types::now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some((offset, _)) = crate::storage::time_lookup::first_at_or_after(p, &b.store, ts)?
        {
            return Ok(offset);
        }
    }
    Ok(p.high_watermark())
}

/// One session partition, resolved.
struct Source {
    topic_id: Uuid,
    index: i32,
    found: BrokerResult<(Arc<Partition>, Arc<ShareEntry>)>,
}

async fn resolve(ctx: &RequestContext, group: &str, (topic_id, index): (Uuid, i32)) -> Source {
    let b = &ctx.broker;
    let found = async {
        let topic = topic_of(ctx, &topic_id)?;
        super::check_leader(ctx, topic.name.as_str(), index, -1)?;
        let p = topic
            .partition(index)
            .cloned()
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        let key = ShareKey {
            group: group.into(),
            topic_id,
            partition: index,
        };
        let entry =
            share_state::open(b, &key, p.leader_epoch(), || initial_offset(ctx, group, &p)).await?;
        Ok((p, entry))
    }
    .await;
    Source {
        topic_id,
        index,
        found,
    }
}

/// Whether records of a transactional batch were aborted.
fn aborted(
    h: &crate::storage::batch::BatchHeader,
    list: &[crate::storage::txns::AbortedTxn],
) -> bool {
    h.attributes & 0x10 != 0
        && list.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset < a.last_offset
        })
}

/// Acquires what it can of one partition for `member`: the records
/// (whole batches, trimmed to those holding acquired offsets) and the
/// acquired ranges.
fn take(
    ctx: &RequestContext,
    (p, entry): &(Arc<Partition>, Arc<ShareEntry>),
    member: &Arc<str>,
    max_records: usize,
    max_bytes: usize,
    committed: bool,
    limits: &Limits,
) -> BrokerResult<(Bytes, Vec<Acquired>)> {
    let b = &ctx.broker;
    let now = std::time::Instant::now();
    let hw = p.high_watermark();
    let limit = if committed {
        p.last_stable_offset().min(hw)
    } else {
        hw
    };
    let from = {
        let mut sp = entry.lock();
        if sp.expire(now, limits) {
            entry.released.notify_waiters();
        }
        let log_start = p.log_start_offset();
        if sp.start() < log_start {
            // Retention removed records the group had not finished (the
            // ticker writes the new start).
            sp.skip_to(log_start);
        }
        if !sp.has_acquirable(limit, limits) {
            return Ok((Bytes::new(), Vec::new()));
        }
        sp.next_to_read()
    };
    if from >= limit {
        return Ok((Bytes::new(), Vec::new()));
    }
    // Read outside the lock: other members of the group take from the same
    // partition meanwhile, and `acquire` skips what they took.
    let bytes = p
        .read_upto(&b.store, from, max_bytes.max(1), committed)?
        .into_bytes();
    let mut batches: Vec<(usize, usize, crate::storage::batch::BatchHeader)> = Vec::new();
    let mut pos = 0usize;
    while let Some(h) = crate::storage::batch::read_header(&bytes[pos..]) {
        let len =
            crate::records::layout::be_i32(&bytes, pos + crate::records::layout::BATCH_LENGTH_AT);
        let end = pos + crate::records::layout::LOG_OVERHEAD + usize::try_from(len).unwrap_or(0);
        if end > bytes.len() || end <= pos {
            break;
        }
        batches.push((pos, end, h));
        pos = end;
    }
    let aborted_list = match (committed, batches.last()) {
        (true, Some((_, _, h))) => p.aborted_between(from, h.last_offset() + 1),
        _ => Vec::new(),
    };
    let segments: Vec<Segment> = batches
        .iter()
        .map(|(_, _, h)| Segment {
            first: h.base_offset,
            last: h.last_offset(),
            deliverable: !h.is_control() && !aborted(h, &aborted_list),
        })
        .collect();
    let acquired = {
        let mut sp = entry.lock();
        sp.acquire(member, &segments, max_records, now, limits)
    };
    let (Some(lo), Some(hi)) = (acquired.first(), acquired.last()) else {
        return Ok((Bytes::new(), acquired));
    };
    let (lo, hi) = (lo.first, hi.last);
    let start = batches
        .iter()
        .find(|(_, _, h)| h.last_offset() >= lo)
        .map_or(0, |b| b.0);
    let end = batches
        .iter()
        .rev()
        .find(|(_, _, h)| h.base_offset <= hi)
        .map_or(bytes.len(), |b| b.1);
    Ok((bytes.slice(start..end.max(start)), acquired))
}

pub async fn handle(ctx: &RequestContext, req: ShareFetchRequest) -> ShareFetchResponse {
    let b = &ctx.broker;
    let group = req
        .group_id
        .as_ref()
        .map(|g| g.0.to_string())
        .unwrap_or_default();
    let member = req
        .member_id
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let limits = limits(ctx, &group);
    let lock_ms = i32::try_from(limits.lock.as_millis()).unwrap_or(i32::MAX);
    let fail = |e: BrokerError| {
        b.metrics.error("ShareFetch", e.code());
        tracing::info!(peer = %ctx.peer, group = %group, member = %member, error = %e, "ShareFetch refused");
        ShareFetchResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message())
            .with_acquisition_lock_timeout_ms(lock_ms)
    };
    if group.is_empty() {
        return fail(BrokerError::InvalidRequest("GroupId can't be empty".into()));
    }
    if member.is_empty() {
        return fail(BrokerError::InvalidRequest(
            "MemberId can't be empty".into(),
        ));
    }
    if let Err(e) = super::group_allowed(ctx, Operation::Read, &group) {
        return fail(e);
    }
    // A topic may appear more than once; merge by partition.
    let wanted = merge_acks(req.topics.into_iter().flat_map(|t| {
        t.partitions.into_iter().map(move |p| {
            (
                (t.topic_id, p.partition_index),
                p.acknowledgement_batches
                    .into_iter()
                    .map(|a| (a.first_offset, a.last_offset, a.acknowledge_types))
                    .collect::<Vec<_>>(),
            )
        })
    }));
    let epoch = req.share_session_epoch;
    if epoch == 0 && wanted.values().any(|a| !a.is_empty()) {
        return fail(BrokerError::InvalidRequest(
            "Acknowledge data present on initial fetch request".into(),
        ));
    }
    if epoch != -1 {
        let known = b.groups.share_member_known(&group, &member);
        if known == Some(false) || (known.is_none() && b.cluster.is_standalone()) {
            return fail(BrokerError::UnknownMemberId);
        }
    }
    let forget: SessionPartitions = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    let named: SessionPartitions = wanted.keys().copied().collect();
    let session = match epoch {
        0 => b.shares.sessions.open(&group, &member, named),
        -1 => Ok(SessionPartitions::new()),
        e if e > 0 => b
            .shares
            .sessions
            .advance(&group, &member, e, &named, &forget),
        e => Err(BrokerError::InvalidShareSessionEpoch(format!(
            "share session epoch {e} is invalid"
        ))),
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => return fail(e),
    };

    let mut out: BTreeMap<Uuid, BTreeMap<i32, PartitionData>> = BTreeMap::new();
    for (tp, acks) in wanted {
        if acks.is_empty() {
            continue;
        }
        let result = acknowledge(ctx, &group, &member, tp, ack_batches(acks), &limits).await;
        let mut pd = empty_partition(tp.1);
        if let Err(e) = result {
            b.metrics.error("ShareFetch", e.code());
            tracing::debug!(peer = %ctx.peer, group = %group, partition = tp.1, error = %e, "share acknowledgement refused");
            pd = pd
                .with_acknowledge_error_code(e.code())
                .with_acknowledge_error_message(e.message());
        }
        out.entry(tp.0).or_default().insert(tp.1, pd);
    }
    if epoch == -1 {
        let closed = b.shares.sessions.close(&group, &member);
        share_state::release_member(b, &group, &member, closed.as_ref(), &limits).await;
        return respond(out, lock_ms);
    }

    let max_records = usize::try_from(req.max_records).unwrap_or(0);
    // Fetch quotas apply to share consumers too (the record bytes they take).
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(b.config.fetch_max_bytes)
        .min(ctx.quota_cap(QuotaType::Fetch).unwrap_or(usize::MAX))
        .max(1);
    let committed = committed_isolation(ctx, &group);
    let mut sources: Vec<Source> = Vec::new();
    if max_records > 0 {
        for tp in &session {
            sources.push(resolve(ctx, &group, *tp).await);
        }
    }
    let member: Arc<str> = member.into();
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    loop {
        let mut waits: Vec<Pin<Box<Notified<'_>>>> = Vec::new();
        for s in &sources {
            if let Ok((p, e)) = &s.found {
                waits.push(Box::pin(p.appended.notified()));
                waits.push(Box::pin(e.released.notified()));
            }
        }
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        let mut got = false;
        let mut errors = false;
        let (mut records_left, mut bytes_left) = (max_records, max_bytes);
        let mut out_bytes = 0usize;
        let mut answers: Vec<(Uuid, PartitionData)> = Vec::new();
        for s in &sources {
            let mut pd = empty_partition(s.index);
            let taken = s.found.as_ref().map_err(Clone::clone).and_then(|f| {
                if records_left == 0 || bytes_left == 0 {
                    return Ok((Bytes::new(), Vec::new()));
                }
                take(
                    ctx,
                    f,
                    &member,
                    records_left,
                    bytes_left,
                    committed,
                    &limits,
                )
            });
            match taken {
                Ok((bytes, acquired)) if !acquired.is_empty() => {
                    got = true;
                    let n: i64 = acquired.iter().map(|a| a.last - a.first + 1).sum();
                    records_left = records_left.saturating_sub(usize::try_from(n).unwrap_or(0));
                    bytes_left = bytes_left.saturating_sub(bytes.len());
                    out_bytes += bytes.len();
                    if let Ok((p, _)) = &s.found {
                        b.metrics
                            .bytes_out
                            .with_label_values(&[&*p.topic])
                            .inc_by(bytes.len() as u64);
                    }
                    pd = pd.with_records(Some(bytes)).with_acquired_records(
                        acquired
                            .iter()
                            .map(|a| {
                                AcquiredRecords::default()
                                    .with_first_offset(a.first)
                                    .with_last_offset(a.last)
                                    .with_delivery_count(a.deliveries)
                            })
                            .collect(),
                    );
                    answers.push((s.topic_id, pd));
                }
                Ok(_) => {}
                Err(e) => {
                    errors = true;
                    b.metrics.error("ShareFetch", e.code());
                    tracing::debug!(peer = %ctx.peer, group = %*group, partition = s.index, error = %e, "share fetch error");
                    answers.push((
                        s.topic_id,
                        pd.with_error_code(e.code()).with_error_message(e.message()),
                    ));
                }
            }
        }
        if got || errors || Instant::now() >= deadline {
            // The records are the member's already (under its locks): they
            // go out, and an over-quota client waits before its next fetch.
            let throttle = ctx.throttle(QuotaType::Fetch, out_bytes as f64);
            for (t, pd) in answers {
                let slot = out.entry(t).or_default();
                let merged = match slot.remove(&pd.partition_index) {
                    // Keep the acknowledgement result already there.
                    Some(ack) => pd
                        .with_acknowledge_error_code(ack.acknowledge_error_code)
                        .with_acknowledge_error_message(ack.acknowledge_error_message),
                    None => pd,
                };
                slot.insert(merged.partition_index, merged);
            }
            return respond(out, lock_ms).with_throttle_time_ms(throttle);
        }
        let until = deadline.min(Instant::now() + RECHECK);
        if waits.is_empty() {
            tokio::time::sleep_until(until).await;
        } else {
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// The group's `share.isolation.level` is read_committed.
pub fn committed_isolation(ctx: &RequestContext, group: &str) -> bool {
    let b = &ctx.broker;
    let layers = b.broker_configs.layers();
    crate::config::group::lookup("share.isolation.level").is_some_and(|def| {
        crate::config::group::effective(def, &b.group_configs.get(group), &layers.merged).0
            == "read_committed"
    })
}

/// A partition's answer with no records: an empty records field, never
/// null (librdkafka refuses a null one).
fn empty_partition(index: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_records(Some(Bytes::new()))
}

fn respond(out: BTreeMap<Uuid, BTreeMap<i32, PartitionData>>, lock_ms: i32) -> ShareFetchResponse {
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            out.into_iter()
                .map(|(id, ps)| {
                    ShareFetchableTopicResponse::default()
                        .with_topic_id(id)
                        .with_partitions(ps.into_values().collect())
                })
                .collect(),
        )
}
