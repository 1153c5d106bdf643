//! Quota enforcement: measures what each client entity takes against its
//! quota and, when it is over, answers how long to throttle it so that it
//! comes back within the quota (see `Meter`).
//!
//! Which quota applies follows Kafka's precedence, separately for each quota
//! type: user+client-id, user+default client, user, default user+client-id,
//! default user+default client, default user, client-id, default client-id.
//! A default entity gives each user (or client) its own allowance.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Entity, QuotaStore, CLIENT_ID, IP, USER};

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaType {
    /// Bytes produced per second (`producer_byte_rate`).
    Produce,
    /// Bytes fetched per second (`consumer_byte_rate`).
    Fetch,
    /// Request handling time (`request_percentage` of one thread), counted
    /// in microseconds.
    Request,
}

impl QuotaType {
    fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => "producer_byte_rate",
            QuotaType::Fetch => "consumer_byte_rate",
            QuotaType::Request => "request_percentage",
        }
    }

    /// The quota's value in units recorded per second (a percentage of one
    /// thread is that share of 1,000,000 microseconds).
    fn per_second(self, value: f64) -> f64 {
        match self {
            QuotaType::Request => value * 10_000.0,
            _ => value,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "Produce",
            QuotaType::Fetch => "Fetch",
            QuotaType::Request => "Request",
        }
    }
}

/// `quota.window.num` and `quota.window.size.seconds`.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub samples: usize,
    pub sample: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            samples: 11,
            sample: Duration::from_secs(1),
        }
    }
}

/// A client's allowance: a token bucket refilled at the quota's rate and
/// holding at most one window's worth (`quota.window.num - 1` samples of
/// `quota.window.size.seconds`, the burst Kafka's sampled rate lets through
/// after an idle spell). Kafka's own byte-rate sensor averages over sliding
/// samples; measured with librdkafka that let a throttled producer through in
/// bursts of a whole window every window (1.4x its quota over 25 s), where
/// the bucket holds it to the quota once the first burst is spent.
#[derive(Debug)]
struct Meter {
    tokens: f64,
    last: Instant,
}

impl Meter {
    fn new(now: Instant, burst: f64) -> Self {
        Meter {
            tokens: burst,
            last: now,
        }
    }

    /// Takes `value` (negative gives back) and answers how long until the
    /// allowance is no longer overdrawn.
    fn record(&mut self, now: Instant, value: f64, bound: f64, burst: f64) -> Duration {
        let refill = now.duration_since(self.last).as_secs_f64() * bound;
        self.tokens = (self.tokens + refill).min(burst) - value;
        self.tokens = self.tokens.min(burst);
        self.last = now;
        if self.tokens >= 0.0 || bound <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / bound)
        }
    }
}

/// The quota that applies to a client, and whose allowance it draws on.
#[derive(Debug, Clone)]
struct Resolved {
    bound: f64,
    /// Metric tags of the entity (user, client-id), "" where not part of it.
    tags: (String, String),
}

/// Meters and resolved quotas; bounded so clients naming ever new client ids
/// cannot grow them without limit.
pub struct Limiter {
    window: WindowConfig,
    meters: Mutex<HashMap<MeterKey, Meter>>,
    /// Resolved quotas, with the quota store version they were resolved at.
    resolved: Mutex<HashMap<MeterKey, (u64, Option<Resolved>)>>,
    ip_meters: Mutex<HashMap<IpAddr, Meter>>,
}

const MAX_TRACKED: usize = 10_000;

/// (quota type, user tag, client-id tag).
type MeterKey = (QuotaType, String, String);

/// Who is measured: the authenticated user's name and the client id.
pub struct Client<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

fn entity(parts: &[(&str, Option<&str>)]) -> Entity {
    let mut e: Entity = parts
        .iter()
        .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
        .collect();
    e.sort();
    e
}

impl WindowConfig {
    /// What a client may take at once after being idle: one window's worth.
    fn window(&self) -> Duration {
        self.sample * self.samples.saturating_sub(1).max(1) as u32
    }

    fn burst(&self, bound: f64) -> f64 {
        bound * self.window().as_secs_f64()
    }

    /// The longest throttle handed out: the whole window.
    fn max_throttle(&self) -> Duration {
        self.sample * self.samples as u32
    }
}

impl Limiter {
    pub fn new(window: WindowConfig) -> Self {
        Limiter {
            window,
            meters: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            ip_meters: Mutex::new(HashMap::new()),
        }
    }

    fn resolve(&self, store: &QuotaStore, t: QuotaType, c: &Client<'_>) -> Option<Resolved> {
        let version = store.version();
        let cache_key = (t, c.user.to_string(), c.client_id.to_string());
        if let Ok(cache) = self.resolved.lock() {
            if let Some((v, r)) = cache.get(&cache_key) {
                if *v == version {
                    return r.clone();
                }
            }
        }
        let (u, cid) = (c.user, c.client_id);
        let order: [(Entity, (&str, &str)); 8] = [
            (entity(&[(USER, Some(u)), (CLIENT_ID, Some(cid))]), (u, cid)),
            (entity(&[(USER, Some(u)), (CLIENT_ID, None)]), (u, cid)),
            (entity(&[(USER, Some(u))]), (u, "")),
            (entity(&[(USER, None), (CLIENT_ID, Some(cid))]), (u, cid)),
            (entity(&[(USER, None), (CLIENT_ID, None)]), (u, cid)),
            (entity(&[(USER, None)]), (u, "")),
            (entity(&[(CLIENT_ID, Some(cid))]), ("", cid)),
            (entity(&[(CLIENT_ID, None)]), ("", cid)),
        ];
        let found = order.iter().find_map(|(e, (tu, tc))| {
            store.get(e, t.key()).map(|bound| Resolved {
                bound: t.per_second(bound),
                tags: (tu.to_string(), tc.to_string()),
            })
        });
        if let Ok(mut cache) = self.resolved.lock() {
            if cache.len() >= MAX_TRACKED {
                cache.clear();
            }
            cache.insert(cache_key, (version, found.clone()));
        }
        found
    }

    /// Records `value` for the client and answers the throttle time (zero
    /// when within quota or when it has none), with the entity's tags for
    /// metrics.
    pub fn record(
        &self,
        store: &QuotaStore,
        t: QuotaType,
        c: &Client<'_>,
        value: f64,
    ) -> Option<(Duration, (String, String))> {
        if store.is_empty() {
            return None;
        }
        let r = self.resolve(store, t, c)?;
        let now = Instant::now();
        let burst = self.window.burst(r.bound);
        let mut meters = self.meters.lock().ok()?;
        if meters.len() >= MAX_TRACKED {
            // A full bucket is the same as none.
            let refill = self.window.window();
            meters.retain(|_, m| now.duration_since(m.last) < refill);
        }
        let m = meters
            .entry((t, r.tags.0.clone(), r.tags.1.clone()))
            .or_insert_with(|| Meter::new(now, burst));
        let delay = m.record(now, value, r.bound, burst);
        Some((delay.min(self.window.max_throttle()), r.tags))
    }

    /// Takes back a recorded `value` (a Fetch answered empty because it was
    /// throttled did not send what was counted).
    pub fn unrecord(&self, store: &QuotaStore, t: QuotaType, c: &Client<'_>, value: f64) {
        if let Some(r) = self.resolve(store, t, c) {
            if let Ok(mut meters) = self.meters.lock() {
                if let Some(m) = meters.get_mut(&(t, r.tags.0, r.tags.1)) {
                    let burst = self.window.burst(r.bound);
                    m.record(Instant::now(), -value, r.bound, burst);
                }
            }
        }
    }

    /// The most a client may take in one window, if it has a quota: a Fetch
    /// is capped to it so that one answer can always pass (as Kafka).
    pub fn max_in_window(&self, store: &QuotaStore, t: QuotaType, c: &Client<'_>) -> Option<usize> {
        if store.is_empty() {
            return None;
        }
        let r = self.resolve(store, t, c)?;
        Some(self.window.burst(r.bound).max(1.0) as usize)
    }

    /// A new connection from `ip`: how long to hold it before closing it when
    /// the IP is over its `connection_creation_rate` (zero: accept it).
    pub fn connection(&self, store: &QuotaStore, ip: IpAddr) -> Duration {
        if store.is_empty() {
            return Duration::ZERO;
        }
        let ip_s = ip.to_string();
        let Some(bound) = store
            .get(&entity(&[(IP, Some(&ip_s))]), "connection_creation_rate")
            .or_else(|| store.get(&entity(&[(IP, None)]), "connection_creation_rate"))
        else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let burst = self.window.burst(bound);
        let Ok(mut meters) = self.ip_meters.lock() else {
            return Duration::ZERO;
        };
        if meters.len() >= MAX_TRACKED {
            let refill = self.window.window();
            meters.retain(|_, m| now.duration_since(m.last) < refill);
        }
        let m = meters.entry(ip).or_insert_with(|| Meter::new(now, burst));
        let hold = m.record(now, 1.0, bound, burst);
        if hold.is_zero() {
            return hold;
        }
        // A refused connection does not use the allowance (as Kafka), so a
        // client retrying too fast is let in again once the rate allows.
        m.record(now, -1.0, bound, burst);
        // Kafka holds a refused connection for at most one sample window.
        hold.min(self.window.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::db::Store;

    #[test]
    fn precedence_and_throttle() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuotaStore::load(Store::open(dir.path()).unwrap()).unwrap();
        let set = |parts: &[(&str, Option<&str>)], v: f64| {
            store
                .alter(
                    entity(parts),
                    &[("producer_byte_rate".into(), Some(v))],
                    false,
                )
                .unwrap()
        };
        let lim = Limiter::new(WindowConfig {
            samples: 2,
            sample: Duration::from_secs(1),
        });
        let alice = Client {
            user: "alice",
            client_id: "app",
        };
        assert!(lim
            .record(&store, QuotaType::Produce, &alice, 1e9)
            .is_none());
        set(&[(CLIENT_ID, None)], 1000.0);
        set(&[(USER, Some("alice"))], 100.0);
        let (t, tags) = lim
            .record(&store, QuotaType::Produce, &alice, 50.0)
            .unwrap();
        assert_eq!(tags, ("alice".to_string(), String::new()));
        assert_eq!(t, Duration::ZERO);
        // A 100-byte allowance (one 1 s window at 100 B/s) overdrawn by 150
        // bytes: 1.5 s of throttle.
        let (t, _) = lim
            .record(&store, QuotaType::Produce, &alice, 200.0)
            .unwrap();
        assert!(
            t > Duration::from_millis(1400) && t <= Duration::from_millis(1500),
            "{t:?}"
        );
        // Never more than the whole window (2 s).
        let (t, _) = lim.record(&store, QuotaType::Produce, &alice, 1e6).unwrap();
        assert_eq!(t, Duration::from_secs(2));
        // Another user falls to the default client-id quota.
        let bob = Client {
            user: "bob",
            client_id: "app",
        };
        let (t, tags) = lim.record(&store, QuotaType::Produce, &bob, 300.0).unwrap();
        assert_eq!(tags, (String::new(), "app".to_string()));
        assert_eq!(t, Duration::ZERO);
        // Fetch quotas are separate.
        assert!(lim.record(&store, QuotaType::Fetch, &alice, 1e9).is_none());
        // request_percentage=10: 100 ms of handling per second; 150 ms at
        // once overdraws a 1 s window by 50 ms, half a second at that rate.
        store
            .alter(
                entity(&[(USER, Some("alice"))]),
                &[("request_percentage".into(), Some(10.0))],
                false,
            )
            .unwrap();
        let (t, _) = lim
            .record(&store, QuotaType::Request, &alice, 150_000.0)
            .unwrap();
        assert!(
            t > Duration::from_millis(450) && t <= Duration::from_millis(500),
            "{t:?}"
        );
    }
}
