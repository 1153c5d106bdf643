//! One share-partition (KIP-932): what a share group has done with one topic
//! partition. Offsets below the start offset (SPSO) are finished; the
//! in-flight window `[start, end)` holds one slot per offset with its state
//! (available, acquired under a time lock by one member, acknowledged,
//! archived) and delivery count; offsets from `end` on have never been
//! handed out. Pure logic: the caller reads the log, persists and wakes
//! waiters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BrokerError, BrokerResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

impl RecordState {
    fn finished(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }

    /// The persisted code (Kafka's: 0 available, 2 acknowledged, 4 archived);
    /// a lock does not survive a restart, so acquired persists as available.
    pub fn code(self) -> u8 {
        match self {
            RecordState::Available | RecordState::Acquired => 0,
            RecordState::Acknowledged => 2,
            RecordState::Archived => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(RecordState::Available),
            2 => Some(RecordState::Acknowledged),
            4 => Some(RecordState::Archived),
            _ => None,
        }
    }
}

/// An acknowledgement type on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// An offset with no record (compacted away, a control record).
    Gap,
    Accept,
    Release,
    Reject,
}

impl AckType {
    pub fn from_wire(t: i8) -> Option<Self> {
        match t {
            0 => Some(AckType::Gap),
            1 => Some(AckType::Accept),
            2 => Some(AckType::Release),
            3 => Some(AckType::Reject),
            _ => None,
        }
    }
}

/// One acknowledgement batch: either one type for the whole range or one per offset.
#[derive(Debug, Clone)]
pub struct AckBatch {
    pub first: i64,
    pub last: i64,
    pub types: Vec<AckType>,
}

/// One log batch as the acquirer sees it: its offsets, and whether its
/// records go to consumers (control batches and aborted transactions do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub first: i64,
    pub last: i64,
    pub deliverable: bool,
}

/// A range of offsets handed to a member, with their delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first: i64,
    pub last: i64,
    pub deliveries: i16,
}

/// The group's settings that govern the window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub lock: Duration,
    /// `group.share.delivery.count.limit`: a record released or timed out
    /// after this many deliveries is archived.
    pub delivery_limit: i16,
    /// `group.share.partition.max.record.locks`: the most offsets in flight.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone)]
struct Slot {
    state: RecordState,
    deliveries: i16,
    owner: Option<Arc<str>>,
    deadline: Option<Instant>,
}

impl Slot {
    fn fresh(state: RecordState) -> Self {
        Slot {
            state,
            deliveries: 0,
            owner: None,
            deadline: None,
        }
    }
}

/// A persisted run of offsets sharing a state and delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRun {
    pub first: i64,
    pub last: i64,
    pub state: RecordState,
    pub deliveries: i16,
}

/// The longest in-flight window a restored state may have (far above
/// `group.share.partition.max.record.locks`, whose Kafka maximum is 10000).
pub const MAX_WINDOW: i64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct SharePartition {
    start: i64,
    window: VecDeque<Slot>,
    /// Set by every change a restart must see; cleared by the persister.
    pub dirty: bool,
}

impl SharePartition {
    pub fn new(start: i64) -> Self {
        SharePartition {
            start,
            window: VecDeque::new(),
            dirty: true,
        }
    }

    /// Rebuilds a share-partition from its persisted runs; `None` for a
    /// window no broker would have kept (it is bounded by the in-flight
    /// limit), so a corrupt or hostile state cannot make us allocate it.
    pub fn restore(start: i64, end: i64, runs: &[StateRun]) -> Option<Self> {
        if start < 0 || end < start || end - start > MAX_WINDOW {
            return None;
        }
        let len = usize::try_from(end - start).ok()?;
        let mut window: VecDeque<Slot> = (0..len)
            .map(|_| Slot::fresh(RecordState::Available))
            .collect();
        for r in runs {
            for off in r.first.max(start)..=r.last.min(end - 1) {
                if let Some(s) = window.get_mut((off - start) as usize) {
                    s.state = r.state;
                    s.deliveries = r.deliveries;
                }
            }
        }
        let mut sp = SharePartition {
            start,
            window,
            dirty: false,
        };
        sp.compact();
        Some(sp)
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    pub fn end(&self) -> i64 {
        self.start + self.window.len() as i64
    }

    /// The runs a restart needs: every offset of the window, acquired ones as available.
    pub fn runs(&self) -> Vec<StateRun> {
        let mut out: Vec<StateRun> = Vec::new();
        for (i, s) in self.window.iter().enumerate() {
            let off = self.start + i as i64;
            let state = RecordState::from_code(s.state.code()).unwrap_or(RecordState::Available);
            match out.last_mut() {
                Some(r)
                    if r.last + 1 == off && r.state == state && r.deliveries == s.deliveries =>
                {
                    r.last = off
                }
                _ => out.push(StateRun {
                    first: off,
                    last: off,
                    state,
                    deliveries: s.deliveries,
                }),
            }
        }
        out
    }

    /// Moves the start offset forward to `offset` (the log start passed it,
    /// or an administrator reset it), dropping what lies below.
    pub fn skip_to(&mut self, offset: i64) {
        if offset <= self.start {
            return;
        }
        while self.start < offset && self.window.pop_front().is_some() {
            self.start += 1;
        }
        self.start = self.start.max(offset);
        self.dirty = true;
    }

    /// Forgets everything and starts again at `offset` (AlterShareGroupOffsets).
    pub fn reset(&mut self, offset: i64) {
        self.window.clear();
        self.start = offset;
        self.dirty = true;
    }

    /// Releases every lock that has run out; true if any record became available.
    pub fn expire(&mut self, now: Instant, limits: &Limits) -> bool {
        let mut freed = false;
        let mut any = false;
        for s in self.window.iter_mut() {
            if s.state == RecordState::Acquired && s.deadline.is_some_and(|d| d <= now) {
                any = true;
                freed |= Self::release(s, limits);
            }
        }
        if any {
            self.dirty = true;
            self.compact();
        }
        freed
    }

    /// Gives a record back; true if it can be delivered again.
    fn release(s: &mut Slot, limits: &Limits) -> bool {
        s.owner = None;
        s.deadline = None;
        if s.deliveries >= limits.delivery_limit {
            s.state = RecordState::Archived;
            false
        } else {
            s.state = RecordState::Available;
            true
        }
    }

    /// The first offset a fetch should read from: the first available record
    /// in the window, else the window's end.
    pub fn next_to_read(&self) -> i64 {
        self.window
            .iter()
            .position(|s| s.state == RecordState::Available)
            .map_or(self.end(), |i| self.start + i as i64)
    }

    /// True if a fetch could acquire something below `limit` (the high
    /// watermark or the LSO).
    pub fn has_acquirable(&self, limit: i64, limits: &Limits) -> bool {
        self.next_to_read() < self.end()
            || (self.end() < limit && self.window.len() < limits.max_in_flight)
    }

    /// The earliest lock deadline, for a waiter to wake at.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.window.iter().filter_map(|s| s.deadline).min()
    }

    /// Acquires records of the batches read (`segments`, in offset order)
    /// for `member`: available records already in flight one by one, new
    /// batches whole while the window has room, up to `max_records`. Batches
    /// that are not deliverable enter the window archived.
    pub fn acquire(
        &mut self,
        member: &Arc<str>,
        segments: &[Segment],
        max_records: usize,
        now: Instant,
        limits: &Limits,
    ) -> Vec<Acquired> {
        let mut out: Vec<Acquired> = Vec::new();
        let mut count = 0usize;
        let deadline = now + limits.lock;
        'segments: for seg in segments {
            if seg.last < self.start {
                continue;
            }
            let mut admitted = false;
            for off in seg.first.max(self.start)..=seg.last {
                let end = self.end();
                if off >= end {
                    if !admitted {
                        // A new batch enters whole, or not at all.
                        if !seg.deliverable {
                            admitted = true;
                        } else if count >= max_records
                            || (self.window.len() >= limits.max_in_flight)
                        {
                            break 'segments;
                        } else {
                            admitted = true;
                        }
                    }
                    // Offsets between batches hold no record (compaction).
                    while self.end() < off {
                        self.window.push_back(Slot::fresh(RecordState::Archived));
                    }
                    self.window.push_back(Slot::fresh(RecordState::Available));
                    self.dirty = true;
                }
                let Some(s) = self.window.get_mut((off - self.start) as usize) else {
                    break 'segments;
                };
                if s.state != RecordState::Available {
                    continue;
                }
                if !seg.deliverable {
                    s.state = RecordState::Archived;
                    self.dirty = true;
                    continue;
                }
                if count >= max_records && off < end {
                    // Redeliveries stop at the record limit; a new batch is taken whole.
                    continue;
                }
                s.state = RecordState::Acquired;
                s.deliveries = s.deliveries.saturating_add(1);
                s.owner = Some(member.clone());
                s.deadline = Some(deadline);
                count += 1;
                match out.last_mut() {
                    Some(a) if a.last + 1 == off && a.deliveries == s.deliveries => a.last = off,
                    _ => out.push(Acquired {
                        first: off,
                        last: off,
                        deliveries: s.deliveries,
                    }),
                }
            }
        }
        self.compact();
        out
    }

    /// Applies `member`'s acknowledgements. Every offset must be acquired by
    /// `member` under a live lock, else nothing is applied and the answer is
    /// INVALID_RECORD_STATE. True if a record became available again.
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[AckBatch],
        limits: &Limits,
    ) -> BrokerResult<bool> {
        for b in batches {
            if b.last < b.first {
                return Err(BrokerError::InvalidRequest(format!(
                    "acknowledgement batch {}..{} is empty",
                    b.first, b.last
                )));
            }
            let n = i128::from(b.last) - i128::from(b.first) + 1;
            if b.types.len() != 1 && b.types.len() as i128 != n {
                return Err(BrokerError::InvalidRequest(format!(
                    "acknowledgement batch {}..{} has {} types",
                    b.first,
                    b.last,
                    b.types.len()
                )));
            }
            if b.first < self.start || b.last >= self.end() {
                return Err(BrokerError::InvalidRecordState(format!(
                    "offsets {}..{} are not in flight (in flight: {}..{})",
                    b.first,
                    b.last,
                    self.start,
                    self.end()
                )));
            }
            for off in b.first..=b.last {
                let s = &self.window[(off - self.start) as usize];
                if s.state != RecordState::Acquired || s.owner.as_deref() != Some(member) {
                    return Err(BrokerError::InvalidRecordState(format!(
                        "offset {off} is not acquired by this member (its lock may have expired)"
                    )));
                }
            }
        }
        let mut freed = false;
        for b in batches {
            for (i, off) in (b.first..=b.last).enumerate() {
                let t = if b.types.len() == 1 {
                    b.types[0]
                } else {
                    b.types[i]
                };
                let s = &mut self.window[(off - self.start) as usize];
                match t {
                    AckType::Accept => s.state = RecordState::Acknowledged,
                    AckType::Gap | AckType::Reject => s.state = RecordState::Archived,
                    AckType::Release => freed |= Self::release(s, limits),
                }
                s.owner = None;
                s.deadline = None;
            }
        }
        self.dirty = true;
        self.compact();
        Ok(freed)
    }

    /// Gives back every record `member` holds (its session closed, it left
    /// the group); true if any became available.
    pub fn release_member(&mut self, member: &str, limits: &Limits) -> bool {
        let mut freed = false;
        let mut any = false;
        for s in self.window.iter_mut() {
            if s.state == RecordState::Acquired && s.owner.as_deref() == Some(member) {
                any = true;
                freed |= Self::release(s, limits);
            }
        }
        if any {
            self.dirty = true;
            self.compact();
        }
        freed
    }

    /// Records below `high_watermark` not yet finished (the share group's lag).
    pub fn lag(&self, high_watermark: i64) -> i64 {
        let finished = self
            .window
            .iter()
            .take(usize::try_from(high_watermark - self.start).unwrap_or(0))
            .filter(|s| s.state.finished())
            .count() as i64;
        (high_watermark - self.start - finished).max(0)
    }

    /// Records in the window under a lock.
    pub fn acquired(&self) -> usize {
        self.window
            .iter()
            .filter(|s| s.state == RecordState::Acquired)
            .count()
    }

    /// Moves the start past finished records at the front of the window.
    fn compact(&mut self) {
        while self.window.front().is_some_and(|s| s.state.finished()) {
            self.window.pop_front();
            self.start += 1;
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            lock: Duration::from_secs(30),
            delivery_limit: 3,
            max_in_flight: 100,
        }
    }

    fn seg(first: i64, last: i64) -> Segment {
        Segment {
            first,
            last,
            deliverable: true,
        }
    }

    fn ack(first: i64, last: i64, t: AckType) -> AckBatch {
        AckBatch {
            first,
            last,
            types: vec![t],
        }
    }

    #[test]
    fn two_members_never_hold_the_same_record() {
        let l = limits();
        let now = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut sp = SharePartition::new(0);
        let got_a = sp.acquire(&a, &[seg(0, 4), seg(5, 9)], 3, now, &l);
        // The first batch is taken whole even past the record limit.
        assert_eq!(
            got_a,
            vec![Acquired {
                first: 0,
                last: 4,
                deliveries: 1
            }]
        );
        let got_b = sp.acquire(&b, &[seg(0, 4), seg(5, 9)], 100, now, &l);
        assert_eq!(
            got_b,
            vec![Acquired {
                first: 5,
                last: 9,
                deliveries: 1
            }]
        );
        assert!(sp
            .acknowledge("b", &[ack(0, 0, AckType::Accept)], &l)
            .is_err());
        sp.acknowledge("a", &[ack(0, 4, AckType::Accept)], &l)
            .unwrap();
        assert_eq!(sp.start(), 5);
    }

    #[test]
    fn release_redelivers_with_a_higher_count_until_the_limit() {
        let l = limits();
        let now = Instant::now();
        let a: Arc<str> = "a".into();
        let mut sp = SharePartition::new(10);
        for round in 1..=3 {
            let got = sp.acquire(&a, &[seg(10, 10)], 10, now, &l);
            assert_eq!(
                got,
                vec![Acquired {
                    first: 10,
                    last: 10,
                    deliveries: round
                }]
            );
            sp.acknowledge("a", &[ack(10, 10, AckType::Release)], &l)
                .unwrap();
        }
        // Third delivery reached the limit: archived, and the start moved on.
        assert_eq!(sp.start(), 11);
        assert!(sp.acquire(&a, &[seg(10, 10)], 10, now, &l).is_empty());
    }

    #[test]
    fn expired_locks_come_back_and_late_acks_are_refused() {
        let l = limits();
        let now = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut sp = SharePartition::new(0);
        sp.acquire(&a, &[seg(0, 1)], 10, now, &l);
        assert!(sp.expire(now + l.lock, &l));
        let err = sp.acknowledge("a", &[ack(0, 1, AckType::Accept)], &l);
        assert!(matches!(err, Err(BrokerError::InvalidRecordState(_))));
        let got = sp.acquire(&b, &[seg(0, 1)], 10, now, &l);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 1,
                deliveries: 2
            }]
        );
    }

    #[test]
    fn reject_archives_and_gaps_are_skipped() {
        let l = limits();
        let now = Instant::now();
        let a: Arc<str> = "a".into();
        let mut sp = SharePartition::new(0);
        let control = Segment {
            first: 3,
            last: 3,
            deliverable: false,
        };
        // 0..=1, a control batch at 3 (2 compacted away), then 4..=5.
        let got = sp.acquire(&a, &[seg(0, 1), control, seg(4, 5)], 10, now, &l);
        assert_eq!(
            got,
            vec![
                Acquired {
                    first: 0,
                    last: 1,
                    deliveries: 1
                },
                Acquired {
                    first: 4,
                    last: 5,
                    deliveries: 1
                }
            ]
        );
        sp.acknowledge(
            "a",
            &[
                AckBatch {
                    first: 0,
                    last: 1,
                    types: vec![AckType::Accept, AckType::Reject],
                },
                ack(4, 5, AckType::Accept),
            ],
            &l,
        )
        .unwrap();
        assert_eq!(sp.start(), 6);
        assert_eq!(sp.lag(6), 0);
    }

    #[test]
    fn the_window_is_bounded_and_persists_without_locks() {
        let mut l = limits();
        l.max_in_flight = 4;
        let now = Instant::now();
        let a: Arc<str> = "a".into();
        let mut sp = SharePartition::new(0);
        let got = sp.acquire(&a, &[seg(0, 2), seg(3, 5), seg(6, 8)], 100, now, &l);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 5,
                deliveries: 1
            }]
        );
        sp.acknowledge("a", &[ack(1, 1, AckType::Accept)], &l)
            .unwrap();
        let restored = SharePartition::restore(sp.start(), sp.end(), &sp.runs()).unwrap();
        assert!(SharePartition::restore(0, MAX_WINDOW + 1, &[]).is_none());
        assert_eq!((restored.start(), restored.end()), (0, 6));
        assert_eq!(restored.acquired(), 0);
        assert_eq!(restored.next_to_read(), 0);
        // Offset 1 stays acknowledged: not delivered again.
        let mut r = restored;
        let got = r.acquire(&a, &[seg(0, 2), seg(3, 5)], 100, now, &l);
        assert_eq!(
            got,
            vec![
                Acquired {
                    first: 0,
                    last: 0,
                    deliveries: 2
                },
                Acquired {
                    first: 2,
                    last: 5,
                    deliveries: 2
                }
            ]
        );
    }

    #[test]
    fn absurd_acknowledgement_ranges_are_refused_without_work() {
        let l = limits();
        let mut sp = SharePartition::new(0);
        let a: Arc<str> = "a".into();
        sp.acquire(&a, &[seg(0, 1)], 10, Instant::now(), &l);
        let wide = AckBatch {
            first: i64::MIN,
            last: i64::MAX,
            types: vec![AckType::Accept, AckType::Accept],
        };
        assert!(matches!(
            sp.acknowledge("a", &[wide], &l),
            Err(BrokerError::InvalidRequest(_))
        ));
        let beyond = ack(0, i64::MAX, AckType::Accept);
        assert!(matches!(
            sp.acknowledge("a", &[beyond], &l),
            Err(BrokerError::InvalidRecordState(_))
        ));
        assert_eq!(sp.acquired(), 2);
    }

    #[test]
    fn a_leaving_member_gives_its_records_back() {
        let l = limits();
        let now = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut sp = SharePartition::new(0);
        sp.acquire(&a, &[seg(0, 1)], 10, now, &l);
        assert!(sp.release_member("a", &l));
        assert_eq!(sp.acquire(&b, &[seg(0, 1)], 10, now, &l).len(), 1);
    }
}
