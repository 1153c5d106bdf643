//! The leader's side of replication: what each follower has fetched, the
//! high watermark as the minimum log end over the ISR, ISR expansion when a
//! follower catches up and shrinking when one lags `replica.lag.time.max.ms`
//! (both compare-and-swaps in the metadata store, fenced by the leader
//! epoch), and acks=all waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::{check_epoch, Replica, ReplicaManager, Role};
use crate::cluster::{IsrChange, PartitionState};
use crate::error::{BrokerError, BrokerResult};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The follower's log end (its last fetch offset).
    pub leo: i64,
    /// When it last had everything the leader had (Kafka's lastCaughtUpTime).
    pub caught_up_at: Instant,
    last_fetch_at: Instant,
    leader_end_at_last_fetch: i64,
}

/// The leader's view of a partition it leads.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub followers: HashMap<i32, Progress>,
    /// When this broker took the lead (followers not heard from count as
    /// caught up then).
    since: Instant,
    /// An ISR change is in flight.
    altering: bool,
}

impl LeaderView {
    pub fn new(ps: &PartitionState, now: Instant) -> Self {
        LeaderView {
            epoch: ps.leader_epoch,
            partition_epoch: ps.partition_epoch,
            replicas: ps.replicas.clone(),
            isr: ps.isr.clone(),
            followers: HashMap::new(),
            since: now,
            altering: false,
        }
    }

    /// A newer state of the same epoch (an ISR or replica change).
    pub fn update(&mut self, ps: &PartitionState) {
        if ps.partition_epoch >= self.partition_epoch {
            self.partition_epoch = ps.partition_epoch;
            self.replicas = ps.replicas.clone();
            self.isr = ps.isr.clone();
        }
    }

    /// The smallest log end among the other ISR members (`i64::MAX` with
    /// none; -1 for one not heard from yet, which holds the watermark).
    pub fn floor(&self, me: i32) -> i64 {
        self.isr
            .iter()
            .filter(|r| **r != me)
            .map(|r| self.followers.get(r).map_or(-1, |p| p.leo))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// Replication counters for the metrics page.
#[derive(Default)]
pub struct Stats {
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// Bytes served to followers.
    pub bytes_out: AtomicU64,
    /// Bytes fetched from leaders.
    pub bytes_in: AtomicU64,
}

impl ReplicaManager {
    /// A follower fetched from `fetch_offset`: records its progress, moves
    /// the high watermark and, if it caught up, asks for it to rejoin the
    /// ISR. Fails when this broker does not lead in `current_epoch`.
    pub fn follower_fetched(
        self: &Arc<Self>,
        r: &Arc<Replica>,
        follower: i32,
        fetch_offset: i64,
        current_epoch: i32,
    ) -> BrokerResult<()> {
        let p = &r.partition;
        let now = Instant::now();
        let expand = {
            let mut role = r.role();
            let Role::Leader(v) = &mut *role else {
                return Err(BrokerError::NotLeaderOrFollower);
            };
            check_epoch(current_epoch, v.epoch)?;
            if !v.replicas.contains(&follower) {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            let end = p.log_end_offset();
            let prev = v.followers.get(&follower).copied();
            let caught_up_at = if fetch_offset >= end {
                now
            } else {
                match prev {
                    Some(pr) if fetch_offset >= pr.leader_end_at_last_fetch => pr.last_fetch_at,
                    Some(pr) => pr.caught_up_at,
                    None => v.since,
                }
            };
            v.followers.insert(
                follower,
                Progress {
                    leo: fetch_offset,
                    caught_up_at,
                    last_fetch_at: now,
                    leader_end_at_last_fetch: end,
                },
            );
            p.set_follower_floor(v.floor(self.node_id));
            // Kafka's rule: back in the ISR once it has everything up to the
            // high watermark and from this leader's epoch.
            let epoch_start = p.epochs().end_offset_for(v.epoch - 1, end).1.max(0);
            let rejoin = !v.isr.contains(&follower)
                && !v.altering
                && !self.cluster.is_draining(follower)
                && fetch_offset >= p.high_watermark()
                && fetch_offset >= epoch_start
                // A broker that deregistered (shutting down) stays out.
                && self
                    .cluster
                    .live_brokers()
                    .iter()
                    .any(|b| b.node_id == follower);
            if rejoin {
                v.altering = true;
            }
            rejoin.then_some(v.epoch)
        };
        if let Some(epoch) = expand {
            self.spawn_isr_change(r.clone(), epoch, IsrChange::Expand(follower));
        }
        Ok(())
    }

    /// Leaders: followers that have not caught up for
    /// `replica.lag.time.max.ms` leave the ISR.
    pub fn shrink_pass(self: &Arc<Self>) {
        let Some(cfg) = &self.cfg else { return };
        let now = Instant::now();
        for r in self.all() {
            let change = {
                let mut role = r.role();
                let Role::Leader(v) = &mut *role else {
                    continue;
                };
                if v.altering {
                    continue;
                }
                let laggards: Vec<i32> = v
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| *id != self.node_id)
                    .filter(|id| {
                        let since = v.followers.get(id).map_or(v.since, |p| p.caught_up_at);
                        now.duration_since(since) > cfg.lag_time_max
                    })
                    .collect();
                if laggards.is_empty() {
                    continue;
                }
                v.altering = true;
                (v.epoch, laggards)
            };
            tracing::info!(topic = %r.topic, partition = r.index, lagging = ?change.1, "followers fell behind; shrinking the ISR");
            self.spawn_isr_change(r, change.0, IsrChange::Shrink(change.1));
        }
    }

    fn spawn_isr_change(self: &Arc<Self>, r: Arc<Replica>, epoch: i32, change: IsrChange) {
        let this = self.clone();
        tokio::spawn(async move {
            let shrink = matches!(change, IsrChange::Shrink(_));
            let index = usize::try_from(r.index).unwrap_or(usize::MAX);
            let result = this.cluster.alter_isr(&r.topic, index, epoch, change).await;
            let mut role = r.role();
            if let Role::Leader(v) = &mut *role {
                v.altering = false;
                match result {
                    Ok((ps, changed)) if v.epoch == ps.leader_epoch => {
                        let counter = if shrink {
                            &this.stats.isr_shrinks
                        } else {
                            &this.stats.isr_expands
                        };
                        if changed {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        v.update(&ps);
                        r.partition.set_follower_floor(v.floor(this.node_id));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::info!(topic = %r.topic, partition = r.index, error = %e, "ISR change not made")
                    }
                }
            }
            drop(role);
            r.role_changed.notify_waiters();
        });
    }

    /// Produce with acks=-1, before appending: the ISR must hold at least
    /// `min_isr` replicas.
    pub fn check_min_isr(&self, topic: &str, index: i32, min_isr: i64) -> BrokerResult<()> {
        if self.is_standalone() {
            return Ok(());
        }
        let r = self
            .replica(topic, index)
            .ok_or(BrokerError::NotLeaderOrFollower)?;
        let role = r.role();
        match &*role {
            Role::Leader(v) if (v.isr.len() as i64) < min_isr => {
                Err(BrokerError::NotEnoughReplicas)
            }
            Role::Leader(_) => Ok(()),
            _ => Err(BrokerError::NotLeaderOrFollower),
        }
    }

    /// Produce with acks=-1, after appending: waits until the high watermark
    /// reaches `end` (every ISR member has the batch), this broker stops
    /// leading, or `deadline` passes.
    pub async fn await_replicated(
        &self,
        topic: &str,
        index: i32,
        end: i64,
        min_isr: i64,
        deadline: Instant,
    ) -> BrokerResult<()> {
        if self.is_standalone() {
            return Ok(());
        }
        let r = self
            .replica(topic, index)
            .ok_or(BrokerError::NotLeaderOrFollower)?;
        let p = &r.partition;
        loop {
            let appended = p.appended.notified();
            let role_changed = r.role_changed.notified();
            tokio::pin!(appended, role_changed);
            appended.as_mut().enable();
            role_changed.as_mut().enable();
            let isr = match &*r.role() {
                Role::Leader(v) => v.isr.len() as i64,
                _ => return Err(BrokerError::NotLeaderOrFollower),
            };
            if p.high_watermark() >= end {
                return if isr < min_isr {
                    Err(BrokerError::NotEnoughReplicasAfterAppend)
                } else {
                    Ok(())
                };
            }
            tokio::select! {
                _ = appended => {}
                _ = role_changed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(BrokerError::RequestTimedOut),
            }
        }
    }

    /// (topic, partition, follower, messages behind) for partitions led here.
    pub fn follower_lags(&self) -> Vec<(String, i32, i32, i64)> {
        let mut out = Vec::new();
        for r in self.all() {
            if let Role::Leader(v) = &*r.role() {
                let end = r.partition.log_end_offset();
                for id in v.replicas.iter().filter(|id| **id != self.node_id) {
                    let behind = v.followers.get(id).map_or(end, |p| (end - p.leo).max(0));
                    out.push((r.topic.clone(), r.index, *id, behind));
                }
            }
        }
        out
    }

    /// Partitions led here whose ISR is smaller than their replica set,
    /// and those below `min_isr` (metrics).
    pub fn replication_health(&self, min_isr: impl Fn(&str) -> i64) -> (u64, u64, u64) {
        let (mut led, mut under, mut under_min) = (0, 0, 0);
        for r in self.all() {
            if let Role::Leader(v) = &*r.role() {
                led += 1;
                if v.isr.len() < v.replicas.len() {
                    under += 1;
                }
                if (v.isr.len() as i64) < min_isr(&r.topic) {
                    under_min += 1;
                }
            }
        }
        (led, under, under_min)
    }
}
