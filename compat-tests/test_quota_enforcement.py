"""Client quota enforcement, measured with real clients against the real broker.

Quotas are set with hand-built AlterClientQuotas requests (the helpers of
test_client_quotas.py: neither Python client exposes quota admin) and then
measured from the outside:

- producer_byte_rate on a client-id: once the initial burst (one quota
  window, (quota.window.num - 1) x quota.window.size.seconds = 10 s worth by
  default) is spent, a confluent-kafka producer writing as fast as it can is
  held to the quota (1 MiB/s +- 20 % over a 10 s span), librdkafka sees
  throttle_time_ms in its statistics, and a producer with another client-id on
  the same broker at the same time is not throttled at all.
- Kafka's precedence: a `user` quota (the principal is ANONYMOUS on a
  PLAINTEXT listener) wins over a `client-id` quota, and is shared by every
  client-id of that user; Produce v3 (before KIP-219) gets its answer delayed
  by the throttle time.
- consumer_byte_rate: a consumer reading a backlog gets burst + rate x t, i.e.
  2 MiB/s +- 25 % once the burst is spent, and the broker counts Fetch throttle
  time in kafka_server_quota_throttle_time_ms_total.
- connection_creation_rate for the default `ip` entity: past its burst, new
  connections are held for the throttle time (as Kafka, at most
  quota.window.size.seconds) and then closed unanswered
  (runnel_connections_rejected_total{reason="ip_connection_rate"}); as in
  Kafka, refused connections are not charged against the rate, so a few
  seconds later the IP may connect again.
- Removing a quota (AlterClientQuotas remove=True) stops the throttling.

Each test has its own broker (make_broker) with a metrics listener, so
quotas and their token buckets never leak between tests. Every loop has a
deadline. Measured figures are printed (run with -s to see them).
"""

import json
import re
import socket
import threading
import time
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

import kafka_wire as kw
from ck_helpers import admin_client, consumer, create_topic, producer
from runnel_harness import free_port, unique_topic
from test_client_quotas import alter, describe

MiB = 1024 * 1024
PRODUCE = "Produce"
FETCH = "Fetch"
THROTTLE_METRIC = "kafka_server_quota_throttle_time_ms_total"
USAGE_METRIC = "kafka_server_quota_usage_total"
REJECTED_METRIC = "runnel_connections_rejected_total"
API_VERSIONS = 18


# --------------------------------------------------------------------------
# Broker, quotas and metrics
# --------------------------------------------------------------------------

def quota_broker(make_broker, **overrides):
    """A private broker serving /metrics on a free port (`.metrics_port`).
    Keyword names use '_' for '.'."""
    port = free_port()
    ov = {"metrics.listener": "http://127.0.0.1:%d" % port}
    ov.update({k.replace("_", "."): v for k, v in overrides.items()})
    b = make_broker(ov)
    b.metrics_port = port
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
                if r.status == 200:
                    return b
        except OSError:
            pass
        assert time.monotonic() < deadline, "metrics listener not ready:\n" + b.log_tail()
        time.sleep(0.05)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(b):
    """{(name, frozenset(labels)): value} from the broker's /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % b.metrics_port,
                                timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, "unparseable metrics line %r" % line
            name, labels, value = m.groups()
            out[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return out


def metric(samples, name, **labels):
    """One series' value (0 when absent: counters start at 0)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def quota_series(samples, name):
    """{(quota, user, client_id): value} of a per-entity quota counter."""
    out = {}
    for (n, lbl), v in samples.items():
        if n == name:
            d = dict(lbl)
            out[(d.get("quota"), d.get("user"), d.get("client_id"))] = v
    return out


def set_quota(b, entity, key, value):
    assert alter(b, [(entity, [(key, float(value), False)])]) == [(0, None)]


def remove_quota(b, entity, key):
    assert alter(b, [(entity, [(key, 0.0, True)])]) == [(0, None)]


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

class ThrottleStats:
    """stats_cb: the largest brokers[*].throttle.max seen, and when first > 0."""

    def __init__(self):
        self.max = 0
        self.first_throttled = None
        self.callbacks = 0

    def __call__(self, stats_json):
        d = json.loads(stats_json)
        self.callbacks += 1
        m = max([br.get("throttle", {}).get("max", 0) for br in d.get("brokers", {}).values()]
                or [0])
        if m > 0 and self.first_throttled is None:
            self.first_throttled = time.monotonic()
        self.max = max(self.max, m)


class Deliveries:
    """Delivery callback: (monotonic time, value bytes) of each delivered message."""

    PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)

    def __init__(self):
        self.events = []
        self.errors = []

    def __call__(self, err, msg):
        if err is None:
            self.events.append((time.monotonic(), len(msg.value())))
        elif err.code() not in self.PURGED:
            self.errors.append(err)

    def total(self):
        return sum(n for _, n in self.events)

    def between(self, start, end):
        return sum(n for t, n in self.events if start <= t < end)


def stats_producer(b, client_id, stats, **extra):
    conf = {"client.id": client_id, "linger.ms": 5, "statistics.interval.ms": 1000,
            "stats_cb": stats, "queue.buffering.max.messages": 20000,
            "compression.type": "none"}
    conf.update(extra)
    return producer(b.bootstrap, **conf)


def flood(p, topic, value, until, deliveries, max_msgs=None, stop=None, tick=None):
    """Produce `value` as fast as the producer takes it (polling when its queue
    is full) until `until` (monotonic), `max_msgs` or stop(); returns how many
    were queued."""
    sent = 0
    while time.monotonic() < until and (max_msgs is None or sent < max_msgs):
        if stop is not None and stop():
            break
        if tick is not None:
            tick()
        try:
            p.produce(topic, value, on_delivery=deliveries)
        except BufferError:
            p.poll(0.01)
            continue
        sent += 1
        if sent % 100 == 0:
            p.poll(0)
    p.poll(0)
    return sent


def discard(p):
    """Drop what a (throttled) producer still holds instead of waiting for it."""
    p.purge()
    p.flush(5)


def mib(n):
    return n / MiB


# --------------------------------------------------------------------------
# 1. producer_byte_rate on a client-id
# --------------------------------------------------------------------------

def test_producer_byte_rate_holds_client_to_quota(make_broker):
    b = quota_broker(make_broker)
    topic = create_topic(admin_client(b.bootstrap), unique_topic("quota-prod"))
    quota = 1048576
    set_quota(b, [("client-id", "q-prod")], "producer_byte_rate", quota)

    value = b"p" * 1000
    stats, got = ThrottleStats(), Deliveries()
    p = stats_producer(b, "q-prod", stats)
    free_id = unique_topic("free")
    free_stats, free_got = ThrottleStats(), Deliveries()
    fp = stats_producer(b, free_id, free_stats)

    t0 = time.monotonic()
    span = (t0 + 4, t0 + 14)
    seen_at_span = {}
    free_done = {}

    def free_run():
        # Starts with the measured span, once the q-prod burst is spent.
        while time.monotonic() < span[0]:
            fp.poll(0.05)
        flood(fp, topic, value, span[1], free_got, max_msgs=50_000)
        left = fp.flush(max(0.1, span[1] + 5 - time.monotonic()))
        free_done["at"] = time.monotonic()
        free_done["left"] = left
        end = time.monotonic() + 1.5      # one more statistics interval
        while time.monotonic() < end:
            fp.poll(0.1)

    def tick():
        if "samples" not in seen_at_span and time.monotonic() >= span[0]:
            seen_at_span["samples"] = scrape(b)
            seen_at_span["delivered"] = got.total()

    th = threading.Thread(target=free_run, daemon=True)
    th.start()
    try:
        flood(p, topic, value, t0 + 18, got, tick=tick)
        th.join(30)
        assert not th.is_alive(), "free producer thread stuck"
    finally:
        discard(p)
        discard(fp)
    after = scrape(b)

    rate = got.between(*span) / 10.0
    free_in_span = free_got.between(*span)
    free_end = min(max([t for t, _ in free_got.events] or [span[0]]), span[1])
    free_rate = free_in_span / max(free_end - span[0], 0.001)
    throttled = metric(seen_at_span["samples"], THROTTLE_METRIC,
                       quota=PRODUCE, user="", client_id="q-prod")
    print("\n[producer quota] delivered by t+4s %.2f MiB (q-prod throttle %d ms so far); "
          "q-prod %.3f MiB/s over t+4..14s (quota %.3f); first stats throttle at t+%.1fs, "
          "max %d ms; free %s %.2f MiB/s (%.2f MiB in %.2fs), stats throttle max %d ms"
          % (mib(seen_at_span["delivered"]), throttled, mib(rate), mib(quota),
             (stats.first_throttled or float("nan")) - t0, stats.max, free_id,
             mib(free_rate), mib(free_in_span), free_end - span[0], free_stats.max))

    assert not got.errors and not free_got.errors, (got.errors[:3], free_got.errors[:3])
    # The burst (10 s worth) is spent and throttling under way before the span.
    assert throttled > 0, "q-prod not throttled 4 s into a flood"
    assert seen_at_span["delivered"] >= 10 * quota * 0.9
    assert stats.first_throttled is not None and stats.max > 0, \
        "librdkafka never saw throttle_time_ms"
    assert 0.8 * quota <= rate <= 1.2 * quota, \
        "q-prod produced %.3f MiB/s over 10 s, quota 1 MiB/s" % mib(rate)
    # Another client-id at the same time is not throttled.
    assert free_done.get("left") == 0
    assert free_stats.callbacks >= 2 and free_stats.max == 0
    for (q, user, cid), v in quota_series(after, THROTTLE_METRIC).items():
        assert cid != free_id, "free producer throttled: %r" % ((q, user, cid, v),)
    assert free_rate > 3 * quota, "free producer only %.2f MiB/s" % mib(free_rate)
    # What the broker counted for q-prod: about the burst plus 1 MiB/s.
    usage = metric(after, USAGE_METRIC, quota=PRODUCE, user="", client_id="q-prod")
    assert usage >= got.total()


# --------------------------------------------------------------------------
# 2. Precedence: user over client-id
# --------------------------------------------------------------------------

def test_user_quota_wins_over_client_id_quota(make_broker):
    b = quota_broker(make_broker)
    topic = create_topic(admin_client(b.bootstrap), unique_topic("quota-user"))
    quota = 1048576
    set_quota(b, [("user", "ANONYMOUS")], "producer_byte_rate", quota)
    set_quota(b, [("client-id", "q-cid")], "producer_byte_rate", 100_000_000)

    stats, got = ThrottleStats(), Deliveries()
    p = stats_producer(b, "q-cid", stats, **{"queue.buffering.max.messages": 200})
    t0 = time.monotonic()
    try:
        flood(p, topic, b"u" * 100_000, t0 + 15, got, stop=lambda: stats.max > 0)
        end = time.monotonic() + 2
        while stats.max == 0 and time.monotonic() < end:
            p.poll(0.1)
    finally:
        discard(p)
    samples = scrape(b)
    series = quota_series(samples, THROTTLE_METRIC)
    print("\n[user precedence] throttle seen by librdkafka after %.1fs, %.1f MiB delivered, "
          "max %d ms; broker throttle series %r"
          % ((stats.first_throttled or float("nan")) - t0, mib(got.total()), stats.max, series))

    assert not got.errors, got.errors[:3]
    assert stats.max > 0, "client q-cid never throttled although user ANONYMOUS has 1 MiB/s"
    # The user entity's bucket was charged, not the client-id's.
    assert series.get((PRODUCE, "ANONYMOUS", ""), 0) > 0, series
    assert (PRODUCE, "", "q-cid") not in series, series
    assert metric(samples, USAGE_METRIC, quota=PRODUCE, user="ANONYMOUS", client_id="") \
        >= got.total()

    # The user quota is shared by all its client ids: a raw Produce v3 under
    # another client id is throttled too, and (pre KIP-219) its answer is
    # delayed by the throttle time.
    records = kw.encode_record_batch([(None, b"x" * 1000, (), int(time.time() * 1000))],
                                     int(time.time() * 1000))
    with kw.KafkaConn.to(b.bootstrap, timeout=20) as c:
        started = time.monotonic()
        r = c.request(0, 3, kw.produce_v3_body(topic, 0, records), client_id="other-cid")
        took = time.monotonic() - started
        topics, throttle_ms = kw.parse_produce_v3(r)
    print("[user precedence] raw Produce v3 as other-cid: throttle_time_ms=%d, answered "
          "after %.2fs" % (throttle_ms, took))
    assert topics[0]["partitions"][0]["error_code"] == 0
    assert throttle_ms > 0
    assert took >= throttle_ms / 1000.0 * 0.9


# --------------------------------------------------------------------------
# 3. consumer_byte_rate
# --------------------------------------------------------------------------

def test_consumer_byte_rate_holds_fetches_to_quota(make_broker):
    b = quota_broker(make_broker)
    topic = create_topic(admin_client(b.bootstrap), unique_topic("quota-cons"))
    quota = 2097152
    burst = 10 * quota
    # A backlog larger than what 12 s of quota lets through (burst 20 MiB +
    # 24 MiB), loaded before any quota exists.
    value = b"c" * 100_000
    n = 600
    loaded = Deliveries()
    lp = producer(b.bootstrap, **{"client.id": "loader", "linger.ms": 20,
                                  "compression.type": "none"})
    for _ in range(n):
        while True:
            try:
                lp.produce(topic, value, on_delivery=loaded)
                break
            except BufferError:
                lp.poll(0.05)
        lp.poll(0)
    assert lp.flush(60) == 0
    assert len(loaded.events) == n and not loaded.errors

    set_quota(b, [("client-id", "q-cons")], "consumer_byte_rate", quota)
    c = consumer(b.bootstrap, **{"client.id": "q-cons", "group.id": unique_topic("g"),
                                 "check.crcs": False})
    got = []
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        t0 = time.monotonic()
        while time.monotonic() < t0 + 12:
            m = c.poll(0.1)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append((time.monotonic(), len(m.value())))
    finally:
        c.close()
    samples = scrape(b)

    def upto(t):
        return sum(x for ts, x in got if ts < t0 + t)

    rate = (upto(12) - upto(6)) / 6.0
    throttled = metric(samples, THROTTLE_METRIC, quota=FETCH, user="", client_id="q-cons")
    print("\n[consumer quota] consumed %s MiB at t+1..12s; %.3f MiB/s over t+6..12s "
          "(quota %.3f); Fetch throttle %d ms; burst+rate*12 = %.1f MiB"
          % ([round(mib(upto(s)), 1) for s in range(1, 13)], mib(rate), mib(quota),
             throttled, mib(burst + 12 * quota)))

    assert upto(12) < n * len(value), "consumer read the whole backlog: not throttled"
    assert 0.75 * quota <= rate <= 1.25 * quota, \
        "consumed %.3f MiB/s over t+6..12s, quota 2 MiB/s" % mib(rate)
    # Never more than the burst plus the rate (a throttled Fetch is answered
    # empty); the burst itself came early.
    assert upto(12) <= (burst + 12 * quota) * 1.05
    assert upto(6) >= burst * 0.9
    assert throttled > 0


# --------------------------------------------------------------------------
# 4. connection_creation_rate
# --------------------------------------------------------------------------

def api_versions_frame(corr):
    return kw.build_request(API_VERSIONS, 0, corr)


def test_connection_creation_rate_per_ip(make_broker):
    b = quota_broker(make_broker, quota_window_num=2, quota_window_size_seconds=1)
    set_quota(b, [("ip", None)], "connection_creation_rate", 5)
    before = metric(scrape(b), REJECTED_METRIC, reason="ip_connection_rate")

    conns = []
    t_open = time.monotonic()
    for i in range(30):
        c = kw.KafkaConn.to(b.bootstrap, timeout=5)
        c.send_raw(api_versions_frame(1))
        conns.append((c, time.monotonic()))
    opened_in = time.monotonic() - t_open

    answered, refused, hung, holds = 0, 0, 0, []
    for c, t in conns:
        try:
            r = kw.Reader(c.recv_frame(timeout=max(0.1, t + 4 - time.monotonic())))
            assert r.i32() == 1
            err, apis = kw.parse_api_versions_v0(r)
            assert err == 0 and API_VERSIONS in apis
            answered += 1
        except kw.ConnectionClosed:
            refused += 1
            holds.append(time.monotonic() - t)
        except socket.timeout:
            hung += 1
        finally:
            c.close()
    rejected = metric(scrape(b), REJECTED_METRIC, reason="ip_connection_rate") - before
    print("\n[connection rate] 30 connections opened in %.2fs: %d answered, %d closed "
          "unanswered (held %.2f..%.2fs), %d hung; rejected metric +%d"
          % (opened_in, answered, refused, min(holds or [0]), max(holds or [0]), hung,
             rejected))
    assert hung == 0
    assert answered >= 1 and refused >= 1
    # Burst 5 connections (one 1 s window at 5/s), plus what refills meanwhile.
    assert answered <= 5 + 5 * opened_in + 1
    assert rejected == refused

    # Both checks below are Kafka's behaviour (ConnectionQuotas in
    # SocketServer): collected so that one run reports both.
    problems = []
    # Kafka bounds a connection's throttle by quota.window.size.seconds (1 s).
    if max(holds) > 1.0 + 0.3:
        problems.append(
            "refused connections were held up to %.2fs before being closed; Kafka bounds "
            "the connection throttle by quota.window.size.seconds (1 s)" % max(holds))
    # Kafka un-records a refused connection, so refusals do not prolong the
    # lockout: 3 s later the IP has its allowance back.
    time.sleep(3)
    with kw.KafkaConn.to(b.bootstrap, timeout=5) as c:
        c.send_raw(api_versions_frame(7))
        try:
            r = kw.Reader(c.recv_frame())
            assert r.i32() == 7
            assert kw.parse_api_versions_v0(r)[0] == 0
        except (kw.ConnectionClosed, socket.timeout) as e:
            problems.append(
                "a fresh connection 3 s after the burst was refused (%s; rejected metric now "
                "+%d): refused connections seem to be charged against connection_creation_rate,"
                " which Kafka un-records" % (e, metric(scrape(b), REJECTED_METRIC,
                                                       reason="ip_connection_rate") - before))
    print("[connection rate] problems: %r" % (problems,))
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# 5. Removing a quota
# --------------------------------------------------------------------------

def test_removed_quota_stops_throttling(make_broker):
    b = quota_broker(make_broker)
    topic = create_topic(admin_client(b.bootstrap), unique_topic("quota-rm"))
    entity = [("client-id", "q-rm")]
    quota = 524288
    set_quota(b, entity, "producer_byte_rate", quota)
    value = b"r" * 100_000

    stats, got = ThrottleStats(), Deliveries()
    p = stats_producer(b, "q-rm", stats, **{"queue.buffering.max.messages": 200})
    t0 = time.monotonic()
    try:
        flood(p, topic, value, t0 + 15, got, stop=lambda: stats.max > 0)
    finally:
        discard(p)
    throttled_before = metric(scrape(b), THROTTLE_METRIC, quota=PRODUCE, user="",
                              client_id="q-rm")
    assert stats.max > 0 and throttled_before > 0, "never throttled with the quota set"

    remove_quota(b, entity, "producer_byte_rate")
    assert describe(b, [("client-id", 0, "q-rm")])[1] == []

    stats2, got2 = ThrottleStats(), Deliveries()
    p2 = stats_producer(b, "q-rm", stats2, **{"queue.buffering.max.messages": 400})
    n = 200                                  # 20 MB
    started = time.monotonic()
    try:
        for _ in range(n):
            while True:
                try:
                    p2.produce(topic, value, on_delivery=got2)
                    break
                except BufferError:
                    p2.poll(0.01)
            p2.poll(0)
        left = p2.flush(10)
        took = time.monotonic() - started
        end = started + 3.5                  # statistics over ~3 s
        while time.monotonic() < end or stats2.callbacks < 2:
            p2.poll(0.1)
            assert time.monotonic() < started + 15
    finally:
        discard(p2)
    throttled_after = metric(scrape(b), THROTTLE_METRIC, quota=PRODUCE, user="",
                             client_id="q-rm")
    print("\n[quota removed] throttled before removal after %.1fs (max %d ms); after: "
          "%.1f MiB in %.2fs (%.1f MiB/s), stats throttle max %d ms over %d callbacks, "
          "broker throttle counter %d -> %d"
          % (stats.first_throttled - t0, stats.max, mib(got2.total()), took,
             mib(got2.total()) / took, stats2.max, stats2.callbacks,
             throttled_before, throttled_after))
    assert left == 0 and not got2.errors and len(got2.events) == n
    assert stats2.max == 0
    assert throttled_after == throttled_before
    # 20 MB at the removed 0.5 MiB/s quota would take far longer.
    assert took < 5


def test_request_percentage_throttles_request_floods(make_broker):
    """request_percentage=0.1 (1 ms of handling per second) for one client id:
    a Metadata flood from it is held down by the muted connection, while the
    same flood from another client id runs at full speed."""
    b = quota_broker(make_broker)

    def rate(client_id, seconds):
        n = 0
        with kw.KafkaConn.to(b.bootstrap) as conn:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                conn.request(kw.API_METADATA, 1, kw.metadata_v1_body(), client_id=client_id)
                n += 1
        return n / seconds

    free = rate("rp-free", 2)
    set_quota(b, [("client-id", "rp-limited")], "request_percentage", 0.1)
    rate("rp-limited", 3)  # spends the first window's allowance
    limited = rate("rp-limited", 3)
    other = rate("rp-other", 2)
    assert limited < free / 10, (limited, free)
    assert other > free / 3, (other, free)
    samples = scrape(b)
    assert metric(samples, "kafka_server_quota_throttle_time_ms_total",
                  quota="Request", user="", client_id="rp-limited") > 0
