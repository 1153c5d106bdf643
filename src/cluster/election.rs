//! The controller's decisions, as pure functions of the cluster's state:
//! where a new partition's replicas go, and what a partition's state becomes
//! when brokers die, return or shut down (Kafka's leader election from the
//! ISR, unclean election when allowed, controlled-shutdown moves), when an
//! administrator asks (preferred or unclean election, reassignment), and
//! when a reassignment's new replicas have caught up.

use std::collections::BTreeSet;

use super::{assign_leaders, BrokerInfo, PartitionState};

/// Replicas for `partitions` new partitions with `rf` replicas each: the
/// leaders spread over brokers and racks (see `assign_leaders`), followers
/// the next brokers in the same rack-interleaved order.
pub fn assign_replicas(
    brokers: &[BrokerInfo],
    partitions: usize,
    rf: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    // The rack-interleaved order of all brokers: leaders for n = brokers.
    let order = assign_leaders(brokers, brokers.len(), 0);
    if order.is_empty() {
        return Vec::new();
    }
    let n = order.len();
    let rf = rf.min(n);
    (0..partitions)
        .map(|p| {
            // Kafka's layout: leaders round-robin from `start`; followers at
            // a shift that changes once per full round of leaders, so the
            // replica sets of successive rounds differ and stay balanced.
            let first = (start + p) % n;
            let shift = start + p / n;
            let mut replicas = vec![order[first]];
            for j in 0..rf.saturating_sub(1) {
                let idx = (first + 1 + (shift + j) % (n - 1).max(1)) % n;
                replicas.push(order[idx]);
            }
            replicas
        })
        .collect()
}

/// Who may lead: live and not shutting down.
pub struct Eligibility<'a> {
    pub live: &'a BTreeSet<i32>,
    pub draining: &'a BTreeSet<i32>,
}

impl Eligibility<'_> {
    fn can_lead(&self, id: i32) -> bool {
        self.live.contains(&id) && !self.draining.contains(&id)
    }
}

/// The partition's next state, if it must change: dead brokers leave the
/// ISR; a dead or draining leader is replaced by the first eligible ISR
/// member in replica order (the leader epoch bumped); with none, by any
/// live replica if `unclean` allows, else the partition goes offline
/// (leader -1) keeping its last ISR so that a returning member can lead.
pub fn next_state(
    p: &PartitionState,
    who: &Eligibility<'_>,
    unclean: bool,
) -> Option<PartitionState> {
    let alive = |id: &i32| who.live.contains(id);
    let leader_ok = p.leader >= 0 && who.can_lead(p.leader) && p.isr.contains(&p.leader);
    let isr_live: Vec<i32> = p.isr.iter().copied().filter(alive).collect();
    if leader_ok {
        if isr_live == p.isr {
            return None;
        }
        return Some(PartitionState {
            isr: isr_live,
            partition_epoch: p.partition_epoch + 1,
            ..p.clone()
        });
    }
    let candidate = p
        .replicas
        .iter()
        .copied()
        .find(|r| isr_live.contains(r) && who.can_lead(*r));
    let bumped = |leader: i32, isr: Vec<i32>| with_leader(p, leader, isr);
    if let Some(c) = candidate {
        // A draining broker leaves the ISR with its leadership: it is about
        // to stop fetching, and acks=all must not wait for it.
        let isr = isr_live
            .into_iter()
            .filter(|r| *r == c || !who.draining.contains(r))
            .collect();
        return Some(bumped(c, isr));
    }
    // A draining leader with no one to hand over to keeps leading.
    if p.leader >= 0 && alive(&p.leader) && p.isr.contains(&p.leader) {
        return (isr_live != p.isr).then(|| PartitionState {
            isr: isr_live,
            partition_epoch: p.partition_epoch + 1,
            ..p.clone()
        });
    }
    if unclean {
        if let Some(r) = p.replicas.iter().copied().find(|r| who.can_lead(*r)) {
            tracing::warn!(
                leader = r,
                "unclean leader election: a replica outside the ISR leads"
            );
            return Some(bumped(r, vec![r]));
        }
    }
    if p.leader == -1 {
        return None;
    }
    // Offline: keep the last ISR (it is who may lead when they return).
    let isr = if isr_live.is_empty() {
        p.isr.clone()
    } else {
        isr_live
    };
    Some(bumped(-1, isr))
}

/// `p` with a new leader (in a new leader epoch) and ISR.
fn with_leader(p: &PartitionState, leader: i32, isr: Vec<i32>) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch: p.leader_epoch + 1,
        isr,
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    }
}

/// Preferred leader election: the first replica leads if it can and is in
/// sync. `Err` with why not; `Ok(None)` when it already leads.
pub fn preferred(
    p: &PartitionState,
    who: &Eligibility<'_>,
) -> Result<Option<PartitionState>, &'static str> {
    let Some(&first) = p.replicas.first() else {
        return Err("no replicas");
    };
    if p.leader == first {
        return Ok(None);
    }
    if !who.can_lead(first) || !p.isr.contains(&first) {
        return Err("the preferred replica is not live and in sync");
    }
    Ok(Some(with_leader(p, first, p.isr.clone())))
}

/// Unclean election asked for by an administrator: only for a partition
/// without a live leader; an ISR member if one is live, else any live replica.
pub fn unclean(
    p: &PartitionState,
    who: &Eligibility<'_>,
) -> Result<Option<PartitionState>, &'static str> {
    if p.leader >= 0 && who.live.contains(&p.leader) {
        return Ok(None);
    }
    match next_state(p, who, true) {
        Some(n) if n.leader >= 0 => Ok(Some(n)),
        _ => Err("no live replica can lead"),
    }
}

/// Starts moving a partition to `target` (Kafka's reassignment): the
/// replica set becomes target + current until the new replicas are in sync.
pub fn reassign(p: &PartitionState, target: &[i32]) -> PartitionState {
    // Replacing an earlier reassignment: from where that one started.
    let base = cancel(p).unwrap_or_else(|| p.clone());
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !base.replicas.contains(r))
        .collect();
    let removing: Vec<i32> = base
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    PartitionState {
        replicas,
        adding,
        removing,
        partition_epoch: base.partition_epoch + 1,
        ..base
    }
}

/// `p` without the replicas `drop` selects (from the replicas and the ISR),
/// its reassignment over, in the next partition epoch.
fn settled(p: &PartitionState, drop: &[i32]) -> PartitionState {
    let keep = |r: &i32| !drop.contains(r);
    PartitionState {
        replicas: p.replicas.iter().copied().filter(keep).collect(),
        isr: p.isr.iter().copied().filter(keep).collect(),
        adding: Vec::new(),
        removing: Vec::new(),
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    }
}

/// Reverts an ongoing reassignment; `None` if there is none.
pub fn cancel(p: &PartitionState) -> Option<PartitionState> {
    if p.adding.is_empty() && p.removing.is_empty() {
        return None;
    }
    let n = settled(p, &p.adding);
    if p.adding.contains(&p.leader) {
        let leader = n.isr.first().copied().unwrap_or(-1);
        return Some(with_leader(&n, leader, n.isr.clone()));
    }
    Some(n)
}

/// A reassignment whose new replicas are all in the ISR completes: the
/// removed replicas go (leadership moves off them in a new epoch).
pub fn complete_reassignment(p: &PartitionState, who: &Eligibility<'_>) -> Option<PartitionState> {
    if p.adding.is_empty() && p.removing.is_empty() {
        return None;
    }
    if !p.adding.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    let n = settled(p, &p.removing);
    if p.removing.contains(&p.leader) {
        let leader = n
            .replicas
            .iter()
            .copied()
            .find(|r| n.isr.contains(r) && who.can_lead(*r))?;
        return Some(with_leader(&n, leader, n.isr.clone()));
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: i32, rack: &str) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            rack: Some(rack.into()),
            endpoints: Vec::new(),
        }
    }

    fn st(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            isr: isr.to_vec(),
            partition_epoch: 7,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }
    #[test]
    fn reassignment_moves_replicas_once_in_sync() {
        let none = set(&[]);
        let live = set(&[1, 2, 3, 4]);
        let who = Eligibility {
            live: &live,
            draining: &none,
        };
        let start = st(&[1, 2, 3], 1, &[1, 2, 3]);
        let r = reassign(&start, &[2, 3, 4]);
        assert_eq!(r.replicas, vec![2, 3, 4, 1]);
        assert_eq!((r.adding.clone(), r.removing.clone()), (vec![4], vec![1]));
        assert!(
            complete_reassignment(&r, &who).is_none(),
            "4 not in sync yet"
        );
        let caught_up = PartitionState {
            isr: vec![1, 2, 3, 4],
            ..r.clone()
        };
        let done = complete_reassignment(&caught_up, &who).unwrap();
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!((done.leader, done.leader_epoch), (2, 4));
        assert!(done.adding.is_empty() && done.removing.is_empty());
        // Cancelled: the original replicas (in the merged order, as Kafka).
        let c = cancel(&r).unwrap();
        assert_eq!((c.replicas, c.isr), (vec![2, 3, 1], vec![1, 2, 3]));
        let same = reassign(&start, &[1, 2, 3]);
        assert!(same.adding.is_empty() && same.removing.is_empty());
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let none = set(&[]);
        let live = set(&[1, 2]);
        let who = Eligibility {
            live: &live,
            draining: &none,
        };
        let n = preferred(&st(&[1, 2], 2, &[2, 1]), &who).unwrap().unwrap();
        assert_eq!((n.leader, n.leader_epoch), (1, 4));
        assert!(preferred(&st(&[1, 2], 1, &[1, 2]), &who).unwrap().is_none());
        assert!(preferred(&st(&[3, 2], 2, &[2]), &who).is_err());
        let u = unclean(&st(&[3, 2], -1, &[3]), &who).unwrap().unwrap();
        assert_eq!((u.leader, u.isr), (2, vec![2]));
        assert!(unclean(&st(&[1, 2], 1, &[1]), &who).unwrap().is_none());
    }

    fn set(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn replicas_spread_and_distinct() {
        let brokers = [b(1, "a"), b(2, "a"), b(3, "b")];
        let a = assign_replicas(&brokers, 6, 3, 0);
        assert_eq!(a.len(), 6);
        for r in &a {
            let s: BTreeSet<i32> = r.iter().copied().collect();
            assert_eq!(s.len(), 3);
        }
        let leaders: BTreeSet<i32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3);
        // Balanced: every broker holds the same number of replicas, from any start.
        for start in 0..7 {
            let a = assign_replicas(&brokers, 3, 2, start);
            for id in [1, 2, 3] {
                assert_eq!(
                    a.iter().filter(|r| r.contains(&id)).count(),
                    2,
                    "start {start}: {a:?}"
                );
            }
        }
        assert_eq!(assign_replicas(&brokers, 2, 5, 0)[0].len(), 3);
    }

    #[test]
    fn elections_follow_kafka() {
        let none = set(&[]);
        let live = set(&[2, 3]);
        let who = Eligibility {
            live: &live,
            draining: &none,
        };
        // Leader 1 died: 2 (first ISR member in replica order) leads.
        let n = next_state(&st(&[1, 2, 3], 1, &[1, 2, 3]), &who, false).unwrap();
        assert_eq!(
            (n.leader, n.leader_epoch, n.isr.clone()),
            (2, 4, vec![2, 3])
        );
        assert_eq!(n.partition_epoch, 8);
        // A dead follower only leaves the ISR.
        let n = next_state(&st(&[2, 1, 3], 2, &[2, 1, 3]), &who, false).unwrap();
        assert_eq!((n.leader, n.leader_epoch, n.isr), (2, 3, vec![2, 3]));
        // Nothing to do.
        assert!(next_state(&st(&[2, 3], 2, &[2, 3]), &who, false).is_none());
        // Only out-of-sync replicas live: offline unless unclean.
        let n = next_state(&st(&[1, 2], 1, &[1]), &who, false).unwrap();
        assert_eq!((n.leader, n.isr.clone()), (-1, vec![1]));
        assert!(next_state(&n, &who, false).is_none());
        let u = next_state(&st(&[1, 2], 1, &[1]), &who, true).unwrap();
        assert_eq!((u.leader, u.isr), (2, vec![2]));
        // The last ISR member returns: it leads.
        let back = set(&[1, 2, 3]);
        let who_back = Eligibility {
            live: &back,
            draining: &none,
        };
        let r = next_state(&n, &who_back, false).unwrap();
        assert_eq!((r.leader, r.leader_epoch), (1, 5));
    }

    #[test]
    fn controlled_shutdown_moves_leadership() {
        let live = set(&[1, 2, 3]);
        let draining = set(&[1]);
        let who = Eligibility {
            live: &live,
            draining: &draining,
        };
        let n = next_state(&st(&[1, 2, 3], 1, &[1, 2, 3]), &who, false).unwrap();
        assert_eq!((n.leader, n.isr), (2, vec![2, 3]));
        // Nobody to hand over to: stays.
        assert!(next_state(&st(&[1, 2], 1, &[1]), &who, false).is_none());
    }
}
