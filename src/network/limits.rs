//! Admission of new connections (`max.connections`, `max.connections.per.ip`
//! and its overrides) and the broker-wide budget of request bytes read but not
//! yet answered (`queued.max.request.bytes`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConnectionLimits;

/// Why a connection was refused; the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Shared by the accept loop and every connection.
pub struct Admission {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    request_bytes: Option<Arc<Semaphore>>,
}

/// Held by a connection for its lifetime; gives its slot back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        let request_bytes = limits
            .queued_max_request_bytes
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
            request_bytes,
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// A slot for a new connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.max_connections {
            return Err(Refusal::MaxConnections);
        }
        let per_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip >= self.limits.per_ip(ip) {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        c.total += 1;
        c.per_ip.insert(ip, per_ip + 1);
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Waits until `bytes` more request bytes may be held (never, if the
    /// budget is unbounded). Config validation keeps every frame within it.
    pub async fn reserve_request_bytes(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let sem = self.request_bytes.as_ref()?;
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        sem.clone().acquire_many_owned(n).await.ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn limits(total: usize, per_ip: usize) -> ConnectionLimits {
        let mut per_ip_overrides = BTreeMap::new();
        per_ip_overrides.insert("10.0.0.9".parse().unwrap(), 3);
        ConnectionLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            per_ip_overrides,
            queued_max_request_bytes: Some(100),
            idle: Duration::from_secs(1),
            response_queue_bytes: 1,
        }
    }

    #[test]
    fn counts_per_ip_and_in_total_and_frees_slots() {
        let a = Admission::new(limits(4, 2));
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(ip1).unwrap();
        let _s2 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).err(), Some(Refusal::MaxConnectionsPerIp));
        let _s3 = a.admit(ip2).unwrap();
        drop(s1);
        let _s4 = a.admit(ip1).unwrap();
        let _s5 = a.admit(ip2).unwrap();
        assert_eq!(
            a.admit("10.0.0.3".parse().unwrap()).err(),
            Some(Refusal::MaxConnections)
        );
    }

    #[test]
    fn overrides_win_over_the_per_ip_default() {
        let a = Admission::new(limits(100, 1));
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let _held: Vec<_> = (0..3).map(|_| a.admit(ip).unwrap()).collect();
        assert!(a.admit(ip).is_err());
    }

    #[tokio::test]
    async fn request_bytes_wait_for_release() {
        let a = Admission::new(limits(4, 4));
        let p = a.reserve_request_bytes(80).await;
        assert!(p.is_some());
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), a.reserve_request_bytes(30)).await;
        assert!(waiting.is_err(), "over budget must wait");
        drop(p);
        assert!(a.reserve_request_bytes(30).await.is_some());
    }
}
