//! Gauges computed when Prometheus scrapes: per-partition offsets and sizes,
//! consumer group offsets and lag (as kafka_exporter names them), broker
//! totals, RocksDB health and disk space.

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::broker::Broker;
use crate::storage::db::{CF_IDX, CF_LOG, CF_META};
use crate::storage::disk;

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str, v: i64) -> Result<(), prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    g.set(v);
    r.register(Box::new(g))
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The whole `/metrics` page.
pub fn render(b: &Broker) -> Result<String, prometheus::Error> {
    let r = Registry::new();
    partitions(b, &r)?;
    groups(b, &r)?;
    share_partitions(b, &r)?;
    storage(b, &r)?;
    cluster(b, &r)?;
    let mut families = b.metrics.registry.gather();
    families.extend(r.gather());
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Membership as this broker sees it (standalone: itself, its own controller).
fn cluster(b: &Broker, r: &Registry) -> Result<(), prometheus::Error> {
    let controller = b.cluster.controller();
    gauge(
        r,
        "kafka_controller_kafkacontroller_activecontrollercount",
        "1 if this broker is the elected controller",
        i64::from(controller.is_some_and(|c| c.node_id == b.config.node_id)),
    )?;
    gauge(
        r,
        "runnel_cluster_controller_epoch",
        "Fencing epoch of the current controller (0 standalone, -1 while none is elected)",
        controller.map_or(-1, |c| c.epoch),
    )?;
    gauge(
        r,
        "runnel_cluster_live_brokers",
        "Live brokers this broker knows of (itself included)",
        b.cluster.live_brokers().len() as i64,
    )
}

fn partitions(b: &Broker, r: &Registry) -> Result<(), prometheus::Error> {
    let labels = &["topic", "partition"];
    let current = gauge_vec(
        r,
        "kafka_topic_partition_current_offset",
        "High watermark of a partition",
        labels,
    )?;
    let oldest = gauge_vec(
        r,
        "kafka_topic_partition_oldest_offset",
        "Log start offset of a partition",
        labels,
    )?;
    let end = gauge_vec(
        r,
        "kafka_log_log_logendoffset",
        "Log end offset of a partition",
        labels,
    )?;
    let start = gauge_vec(
        r,
        "kafka_log_log_logstartoffset",
        "Log start offset of a partition",
        labels,
    )?;
    let size = gauge_vec(
        r,
        "kafka_log_log_size",
        "Bytes of record batches stored for a partition",
        labels,
    )?;
    let count = gauge_vec(
        r,
        "kafka_topic_partitions",
        "Partitions of a topic",
        &["topic"],
    )?;
    let topics = b.catalog.all();
    let mut total_partitions = 0i64;
    for t in &topics {
        count
            .with_label_values(&[t.name.as_str()])
            .set(t.partitions.len() as i64);
        for p in &t.partitions {
            total_partitions += 1;
            let idx = p.id.get().to_string();
            let l = [t.name.as_str(), idx.as_str()];
            let hw = p.high_watermark();
            current.with_label_values(&l).set(hw);
            end.with_label_values(&l).set(p.log_end_offset().max(hw));
            oldest.with_label_values(&l).set(p.log_start_offset());
            start.with_label_values(&l).set(p.log_start_offset());
            size.with_label_values(&l).set(as_i64(p.size()));
        }
    }
    gauge(
        r,
        "kafka_controller_kafkacontroller_globaltopiccount",
        "Topics in the cluster",
        topics.len() as i64,
    )?;
    gauge(
        r,
        "kafka_controller_kafkacontroller_globalpartitioncount",
        "Partitions in the cluster",
        total_partitions,
    )?;
    gauge(
        r,
        "kafka_server_replicamanager_partitioncount",
        "Partitions on this broker",
        total_partitions,
    )?;
    replication(b, r, total_partitions)
}

/// Replication health. Standalone, every partition's only replica leads and
/// is in sync. In a cluster, each leader reports its own partitions (as in
/// Kafka: sum over brokers for the cluster) and the controller reports the
/// offline ones.
fn replication(b: &Broker, r: &Registry, local: i64) -> Result<(), prometheus::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &b.replicas;
    let layers = b.broker_configs.layers();
    let (led, under, under_min) = if m.is_standalone() {
        (u64::try_from(local).unwrap_or(0), 0, 0)
    } else {
        m.replication_health(|topic| {
            let configs = b
                .catalog
                .get(topic)
                .map(|t| t.configs.clone())
                .unwrap_or_default();
            crate::config::topic::effective_i64("min.insync.replicas", &configs, &layers.merged)
                .unwrap_or(1)
        })
    };
    gauge(
        r,
        "kafka_server_replicamanager_leadercount",
        "Partitions this broker leads",
        led as i64,
    )?;
    gauge(
        r,
        "kafka_server_replicamanager_underreplicatedpartitions",
        "Partitions led here whose ISR is smaller than their replica set",
        under as i64,
    )?;
    gauge(
        r,
        "kafka_server_replicamanager_underminisrpartitioncount",
        "Partitions led here whose ISR is below min.insync.replicas",
        under_min as i64,
    )?;
    let controller = b
        .cluster
        .controller()
        .is_some_and(|c| c.node_id == b.config.node_id);
    let offline = if controller && !m.is_standalone() {
        b.cluster
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader < 0)
            .count() as i64
    } else {
        0
    };
    gauge(
        r,
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "Partitions without a leader (reported by the controller)",
        offline,
    )?;
    let counter = |name: &str, help: &str, v: u64| -> Result<(), prometheus::Error> {
        let c = prometheus::IntCounter::new(name, help)?;
        c.inc_by(v);
        r.register(Box::new(c))
    };
    counter(
        "kafka_server_replicamanager_isrshrinks_total",
        "ISR shrinks made by this broker as leader",
        m.stats.isr_shrinks.load(Relaxed),
    )?;
    counter(
        "kafka_server_replicamanager_isrexpands_total",
        "ISR expansions made by this broker as leader",
        m.stats.isr_expands.load(Relaxed),
    )?;
    counter(
        "kafka_server_brokertopicmetrics_replicationbytesout_total",
        "Bytes served to followers",
        m.stats.bytes_out.load(Relaxed),
    )?;
    counter(
        "kafka_server_brokertopicmetrics_replicationbytesin_total",
        "Bytes fetched from leaders",
        m.stats.bytes_in.load(Relaxed),
    )?;
    // Followers' lag behind this leader, per partition and replica.
    let lag = gauge_vec(
        r,
        "kafka_server_fetcherlagmetrics_consumerlag",
        "Messages a follower is behind this leader's log end",
        &["topic", "partition", "replica"],
    )?;
    for (topic, index, replica, behind) in m.follower_lags() {
        let idx = index.to_string();
        let rep = replica.to_string();
        lag.with_label_values(&[topic.as_str(), idx.as_str(), rep.as_str()])
            .set(behind);
    }
    Ok(())
}

fn groups(b: &Broker, r: &Registry) -> Result<(), prometheus::Error> {
    let labels = &["consumergroup", "topic", "partition"];
    let current = gauge_vec(
        r,
        "kafka_consumergroup_current_offset",
        "Committed offset of a group on a partition",
        labels,
    )?;
    let lag = gauge_vec(
        r,
        "kafka_consumergroup_lag",
        "High watermark minus committed offset",
        labels,
    )?;
    let members = gauge_vec(
        r,
        "kafka_consumergroup_members",
        "Members of a group",
        &["consumergroup"],
    )?;
    let state = gauge_vec(
        r,
        "runnel_consumergroup_state",
        "1 for the group's current state",
        &["consumergroup", "state"],
    )?;
    let kind = gauge_vec(
        r,
        "runnel_consumergroup_type",
        "1 for the group's protocol type (classic, consumer, share)",
        &["consumergroup", "type"],
    )?;
    let Ok(list) = b.groups.list() else {
        return Ok(());
    };
    // (id, members, state, type): classic groups and KIP-848 consumer groups.
    let consumer: Vec<(String, usize, &'static str)> = b
        .groups
        .consumer_groups()
        .into_iter()
        .filter_map(|(id, state)| {
            let n = b.groups.consumer_group(&id)?.members.len();
            Some((id, n, state))
        })
        .collect();
    let classic: Vec<_> = list
        .into_iter()
        .filter(|g| !consumer.iter().any(|(id, ..)| *id == g.id))
        .map(|g| (g.id, g.members.len(), g.state, "classic"))
        .collect();
    let all = classic.into_iter().chain(
        consumer
            .into_iter()
            .map(|(id, n, s)| (id, n, s, "consumer")),
    );
    // Share groups: those with members here, and those known by their state.
    let mut shares: std::collections::BTreeMap<String, (usize, &'static str)> = b
        .shares
        .groups()
        .into_iter()
        .map(|g| (g, (0, "Empty")))
        .collect();
    for (id, st) in b.groups.share_groups() {
        let n = b.groups.share_group(&id).map_or(0, |g| g.members.len());
        shares.insert(id, (n, st));
    }
    let all = all.chain(
        shares
            .iter()
            .map(|(id, (n, s))| (id.clone(), *n, *s, "share")),
    );
    for (id, n, group_state, group_type) in all {
        // In a cluster, the groups this broker coordinates (the others' lag
        // is reported by their coordinators).
        if crate::coordinator::offsets_log::check(b, &id).is_err() {
            continue;
        }
        members.with_label_values(&[&id]).set(n as i64);
        state.with_label_values(&[&id, group_state]).set(1);
        kind.with_label_values(&[&id, group_type]).set(1);
        for (topic, partition, c) in b.groups.offsets.all(&id) {
            let idx = partition.to_string();
            let l = [id.as_str(), topic.as_str(), idx.as_str()];
            current.with_label_values(&l).set(c.offset);
            let hw = b
                .catalog
                .get(&topic)
                .and_then(|t| t.partition(partition).map(|p| p.high_watermark()));
            if let Some(hw) = hw {
                lag.with_label_values(&l).set((hw - c.offset).max(0));
            }
        }
    }
    Ok(())
}

/// Share groups' progress per share-partition this broker leads: the
/// start offset, what is left to finish below the high watermark (lag) and
/// the records held under acquisition locks.
fn share_partitions(b: &Broker, r: &Registry) -> Result<(), prometheus::Error> {
    let labels = &["sharegroup", "topic", "partition"];
    let start = gauge_vec(
        r,
        "kafka_sharegroup_start_offset",
        "Share-partition start offset: every record below it is finished",
        labels,
    )?;
    let lag = gauge_vec(
        r,
        "kafka_sharegroup_lag",
        "Records below the high watermark a share group has not finished",
        labels,
    )?;
    let acquired = gauge_vec(
        r,
        "runnel_sharegroup_acquired_records",
        "Records of a share-partition under an acquisition lock",
        labels,
    )?;
    for (k, e) in b.shares.all() {
        let Some(topic) = b.catalog.get_by_id(&k.topic_id) else {
            continue;
        };
        let Some(p) = topic.partition(k.partition) else {
            continue;
        };
        let hw = p.high_watermark();
        let idx = k.partition.to_string();
        let l = [&*k.group, topic.name.as_str(), idx.as_str()];
        let sp = e.lock();
        start.with_label_values(&l).set(sp.start());
        lag.with_label_values(&l).set(sp.lag(hw));
        acquired.with_label_values(&l).set(sp.acquired() as i64);
    }
    Ok(())
}

fn storage(b: &Broker, r: &Registry) -> Result<(), prometheus::Error> {
    let db = &b.store.db;
    let cf_prop = |name: &str, prop: &str| -> i64 {
        b.store
            .cf(name)
            .ok()
            .and_then(|cf| db.property_int_value_cf(cf, prop).ok().flatten())
            .map_or(0, as_i64)
    };
    let sum = |prop: &str| -> i64 {
        [CF_LOG, CF_IDX, CF_META]
            .iter()
            .map(|c| cf_prop(c, prop))
            .sum()
    };
    gauge(
        r,
        "runnel_rocksdb_live_sst_bytes",
        "Bytes of live SST files",
        sum("rocksdb.live-sst-files-size"),
    )?;
    gauge(
        r,
        "runnel_rocksdb_live_blob_bytes",
        "Bytes of live blob files",
        sum("rocksdb.live-blob-file-size"),
    )?;
    gauge(
        r,
        "runnel_rocksdb_memtable_bytes",
        "Bytes in memtables",
        sum("rocksdb.cur-size-all-mem-tables"),
    )?;
    gauge(
        r,
        "runnel_rocksdb_pending_compaction_bytes",
        "Estimated bytes compaction still has to rewrite",
        sum("rocksdb.estimate-pending-compaction-bytes"),
    )?;
    gauge(
        r,
        "runnel_rocksdb_write_stopped",
        "1 while RocksDB stops writes",
        sum("rocksdb.is-write-stopped"),
    )?;
    gauge(
        r,
        "runnel_rocksdb_delayed_write_rate",
        "Bytes per second RocksDB throttles writes to (0: no stall)",
        sum("rocksdb.actual-delayed-write-rate"),
    )?;
    if let Some(space) = disk::space(&b.config.log_dir) {
        gauge(
            r,
            "runnel_storage_disk_total_bytes",
            "Size of the data directory's file system",
            as_i64(space.total),
        )?;
        gauge(
            r,
            "runnel_storage_disk_free_bytes",
            "Free bytes on the data directory's file system",
            as_i64(space.available),
        )?;
    }
    Ok(())
}
