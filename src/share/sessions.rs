//! Share sessions (KIP-932): the partitions a share consumer fetches from
//! this broker, kept between ShareFetch requests so incremental requests
//! name only what changes. Epoch 0 opens (or replaces) a member's session,
//! -1 closes it, and every other request carries the next epoch in turn.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{BrokerError, BrokerResult};

pub type SessionPartitions = BTreeSet<(Uuid, i32)>;

struct Session {
    next_epoch: i32,
    partitions: SessionPartitions,
    last_used: Instant,
}

/// A session unused this long (its consumer went away without closing it)
/// gives its place to a new one when the cache is full.
const IDLE: Duration = Duration::from_secs(120);

pub struct ShareSessions {
    sessions: Mutex<HashMap<(String, String), Session>>,
    /// `group.share.max.share.sessions`.
    max: usize,
}

fn next(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl ShareSessions {
    pub fn new(max: usize) -> Self {
        ShareSessions {
            sessions: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Epoch 0: a new session with `partitions`, replacing any the member had.
    pub fn open(
        &self,
        group: &str,
        member: &str,
        partitions: SessionPartitions,
    ) -> BrokerResult<SessionPartitions> {
        let mut s = self.lock();
        let k = (group.to_string(), member.to_string());
        let now = Instant::now();
        if !s.contains_key(&k) && s.len() >= self.max {
            s.retain(|_, v| now.duration_since(v.last_used) < IDLE);
            if s.len() >= self.max {
                return Err(BrokerError::ShareSessionLimitReached);
            }
        }
        s.insert(
            k,
            Session {
                next_epoch: 1,
                partitions: partitions.clone(),
                last_used: now,
            },
        );
        Ok(partitions)
    }

    /// An incremental request at `epoch`: adds and forgets partitions and
    /// returns the session's partitions afterwards.
    pub fn advance(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        add: &SessionPartitions,
        forget: &SessionPartitions,
    ) -> BrokerResult<SessionPartitions> {
        let mut s = self.lock();
        let session = s
            .get_mut(&(group.to_string(), member.to_string()))
            .ok_or(BrokerError::ShareSessionNotFound)?;
        if epoch != session.next_epoch {
            return Err(BrokerError::InvalidShareSessionEpoch(format!(
                "share session epoch {epoch} is not the expected {}",
                session.next_epoch
            )));
        }
        session.next_epoch = next(epoch);
        session.last_used = Instant::now();
        session.partitions.extend(add.iter().copied());
        for f in forget {
            session.partitions.remove(f);
        }
        Ok(session.partitions.clone())
    }

    /// Epoch -1: the session ends; its partitions, if there was one.
    pub fn close(&self, group: &str, member: &str) -> Option<SessionPartitions> {
        self.lock()
            .remove(&(group.to_string(), member.to_string()))
            .map(|s| s.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_advance_in_turn() {
        let s = ShareSessions::new(1);
        let t = Uuid::new_v4();
        let none = SessionPartitions::new();
        assert!(matches!(
            s.advance("g", "m", 1, &none, &none),
            Err(BrokerError::ShareSessionNotFound)
        ));
        s.open("g", "m", [(t, 0)].into()).unwrap();
        assert!(matches!(
            s.open("g", "other", none.clone()),
            Err(BrokerError::ShareSessionLimitReached)
        ));
        assert!(matches!(
            s.advance("g", "m", 2, &none, &none),
            Err(BrokerError::InvalidShareSessionEpoch(_))
        ));
        let p = s
            .advance("g", "m", 1, &[(t, 1)].into(), &[(t, 0)].into())
            .unwrap();
        assert_eq!(p, [(t, 1)].into());
        assert!(s.advance("g", "m", 2, &none, &none).is_ok());
        assert_eq!(s.close("g", "m"), Some([(t, 1)].into()));
        assert_eq!(s.close("g", "m"), None);
    }
}
