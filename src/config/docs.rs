//! One-line documentation for each topic config, as DescribeConfigs (v3+)
//! returns it when asked; written for Runnel, so it says where a config has
//! no effect on a single node.

/// The documentation of a topic config, or of the broker key supplying its default.
pub fn topic_config_doc(name: &str) -> Option<&'static str> {
    Some(match name {
        "cleanup.policy" => "How old records leave the log: delete (by retention.ms / retention.bytes), compact (keep the latest record per key), or both.",
        "compression.type" => "Codec the broker stores batches in: producer keeps each batch as sent; gzip, snappy, lz4 or zstd recompress incoming batches; uncompressed stores them plain.",
        "compression.gzip.level" => "Level used when the broker recompresses into gzip.",
        "compression.lz4.level" => "Level used when the broker recompresses into lz4.",
        "compression.zstd.level" => "Level used when the broker recompresses into zstd.",
        "delete.retention.ms" => "How long a tombstone (a null value) stays in a compacted topic after compaction reached it, so consumers can see the delete.",
        "file.delete.delay.ms" => "Delay before deleted log files are removed; Runnel reclaims space through RocksDB and accepts this for compatibility.",
        "flush.messages" => "Records between forced flushes; Runnel's flush policy is broker-wide (log.flush.interval.messages).",
        "flush.ms" => "Time between forced flushes; accepted for compatibility, Runnel's flush policy is broker-wide.",
        "follower.replication.throttled.replicas" => "Replicas whose follower fetches are throttled; no effect on a single node.",
        "leader.replication.throttled.replicas" => "Replicas whose leader-side replication is throttled; no effect on a single node.",
        "index.interval.bytes" => "Spacing of offset index entries in Kafka's segment files; Runnel indexes every batch.",
        "local.retention.bytes" => "Tiered storage: bytes kept locally; no effect without remote storage.",
        "local.retention.ms" => "Tiered storage: time data is kept locally; no effect without remote storage.",
        "max.compaction.lag.ms" => "Longest time a record may stay uncompacted: a partition this overdue is cleaned whatever its dirty ratio.",
        "max.message.bytes" => "Largest record batch the topic accepts (after compression); bigger ones get MESSAGE_TOO_LARGE.",
        "message.timestamp.after.max.ms" => "How far in the future a CreateTime timestamp may be.",
        "message.timestamp.before.max.ms" => "How far in the past a CreateTime timestamp may be.",
        "message.timestamp.type" => "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock.",
        "min.cleanable.dirty.ratio" => "Share of a compacted log written since the last cleaning that triggers the next one.",
        "min.compaction.lag.ms" => "Records younger than this are never compacted.",
        "min.insync.replicas" => "Replicas that must acknowledge an acks=all write; one node is always the whole set here.",
        "preallocate" => "Preallocate segment files; no effect on RocksDB storage.",
        "remote.log.copy.disable" => "Tiered storage: stop copying to remote storage; no effect without it.",
        "remote.log.delete.on.disable" => "Tiered storage: delete remote data when disabled; no effect without it.",
        "remote.storage.enable" => "Tiered storage for the topic; not available in Runnel.",
        "retention.bytes" => "Largest size a partition keeps before its oldest batches are deleted (-1: no limit).",
        "retention.ms" => "How long batches are kept before deletion, by their newest timestamp (-1: forever).",
        "segment.bytes" => "Kafka's segment file size; Runnel stores batches in RocksDB and retains by batch.",
        "segment.index.bytes" => "Kafka's index file size; no effect on RocksDB storage.",
        "segment.jitter.ms" => "Random jitter on segment rolling; no effect on RocksDB storage.",
        "segment.ms" => "Kafka's segment roll time; Runnel retains and compacts by batch, so it has no effect.",
        "unclean.leader.election.enable" => "Elect an out-of-sync replica as leader; no effect on a single node.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_topic_config_is_documented() {
        for d in super::super::topic::TOPIC_CONFIGS {
            assert!(super::topic_config_doc(d.name).is_some(), "{}", d.name);
        }
    }
}
