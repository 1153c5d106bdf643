//! The controller's decisions, as pure functions of the cluster's state:
//! where a new partition's replicas go, and what a partition's state becomes
//! when brokers die, return or shut down (Kafka's leader election from the
//! ISR, unclean election when allowed, controlled-shutdown moves).

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
            let first = (start + p) % n;
            // Kafka shifts followers by a per-round amount so that the
            // replica sets of successive rounds differ.
            let shift = 1 + ((start + p) / n) % (n.max(2) - 1);
            let mut replicas = vec![order[first]];
            let mut j = 0;
            while replicas.len() < rf {
                let candidate = order[(first + shift + j) % n];
                if !replicas.contains(&candidate) {
                    replicas.push(candidate);
                }
                j += 1;
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
    let bumped = |leader: i32, isr: Vec<i32>| PartitionState {
        replicas: p.replicas.clone(),
        leader,
        leader_epoch: p.leader_epoch + 1,
        isr,
        partition_epoch: p.partition_epoch + 1,
    };
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
        }
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
