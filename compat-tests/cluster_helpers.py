"""Helpers and fixtures shared by the cluster-mode test modules
(test_cluster_replication.py, test_cluster_admin.py, test_cluster_groups.py).

Fixtures (import them into a test module's namespace, e.g.
`from cluster_helpers import etcd, cluster  # noqa: F401`):
- `etcd` (module scope): one etcd per test module; each cluster has its own prefix.
- `private_etcd`: an etcd of the test's own (for tests that stop it).
- `cluster`: a factory `cluster(n, overrides=None, etcd=None, **Cluster kwargs)`
  that starts a cluster_harness.Cluster and tears it down after the test (a
  conftest.BrokerFactory, so a failing test gets every broker's log tail).

Helpers: `metadata_v7` (raw Metadata v7 with leader epochs) and `parts` /
`wait_parts` / `full_isr` on top of it; `admin`, `create` (and wait for the
full ISR and serving leaders), `leader_ready`, `wait_leaders_ready`; `Load`
(idempotent producer threads recording every ack), `produce_all`,
`read_partitions`, `assert_exactly_once`; raw `partition_sizes` (DescribeLogDirs
per broker) and `raw_produce`; `log_count`.
"""

import threading
import time

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw
from cluster_harness import Cluster, EtcdError, EtcdServer, wait_until
from ck_helpers import consumer
from conftest import BrokerFactory
from runnel_harness import unique_topic


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def _started_etcd():
    server = EtcdServer()
    try:
        server.start()
    except EtcdError as e:
        server.cleanup()
        pytest.fail(str(e), pytrace=False)
    return server


@pytest.fixture(scope="module")
def etcd():
    """One etcd for the module; each test's cluster has its own prefix."""
    server = _started_etcd()
    yield server
    server.cleanup()


@pytest.fixture
def private_etcd():
    """An etcd of the test's own (for the test that stops it)."""
    server = _started_etcd()
    yield server
    server.cleanup()


class _Factory(BrokerFactory):
    """Makes clusters and tears them down after the test; a BrokerFactory,
    so conftest's failure hook attaches every broker's log tail."""

    def __init__(self, etcd):  # noqa: brokers is derived
        self.etcd = etcd
        self.clusters = []

    @property
    def brokers(self):
        return [b for c in self.clusters for b in c.all_brokers()]

    def __call__(self, n, overrides=None, etcd=None, **kw):
        c = Cluster(n, overrides=overrides, etcd=etcd or self.etcd, **kw)
        self.clusters.append(c)
        try:
            c.start()
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, c.logs())) from None
        return c

    def teardown(self, expect_clean=False):
        for c in self.clusters:
            c.teardown()


@pytest.fixture
def cluster(etcd):
    f = _Factory(etcd)
    yield f
    f.teardown()


# --------------------------------------------------------------------------
# Metadata (raw v7: leader epoch included) and waiting on it
# --------------------------------------------------------------------------


def metadata_v7(b, topics, timeout=5.0):
    """Metadata v7 sent to broker `b` itself: {"brokers": {id: port},
    "controller": id, "topics": {name: {"error": code, "partitions":
    {index: {"error", "leader", "epoch", "replicas", "isr", "offline"}}}}}."""
    body = kw.array([kw.string(t) for t in topics]) + kw.i8(0)  # no auto-creation
    with kw.KafkaConn("127.0.0.1", b.port, timeout=timeout) as conn:
        r = conn.request(kw.API_METADATA, 7, body)
    r.i32()  # throttle
    brokers = r.array(lambda x: (x.i32(), x.string(), x.i32(), x.string()))
    r.string()  # cluster id
    controller = r.i32()

    def ints(x):
        return x.array(lambda y: y.i32()) or []

    def partition(x):
        return {"error": x.i16(), "index": x.i32(), "leader": x.i32(), "epoch": x.i32(),
                "replicas": ints(x), "isr": ints(x), "offline": ints(x)}

    def topic(x):
        err, name, _internal = x.i16(), x.string(), x.bool()
        return name, {"error": err,
                      "partitions": {p["index"]: p for p in x.array(partition) or []}}

    topics_out = dict(r.array(topic) or [])
    assert r.remaining() == 0, "trailing bytes in Metadata v7 response"
    return {"brokers": {bid: port for bid, _h, port, _r in brokers or []},
            "controller": controller, "topics": topics_out}


def parts(c, topic, node):
    """{partition: state} of `topic` as broker `node` reports it."""
    t = metadata_v7(c.broker(node), [topic])["topics"][topic]
    assert t["error"] == 0, "broker %d: topic %s error %d" % (node, topic, t["error"])
    return t["partitions"]


def wait_parts(c, topic, node, pred, timeout, what):
    """Waits until pred(parts) holds on broker `node`; the partitions."""
    last = {}

    def probe():
        last["p"] = parts(c, topic, node)
        return last["p"] if pred(last["p"]) else None
    try:
        return wait_until(probe, timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError("%s\nlast partitions on broker %d: %r\n%s"
                             % (e, node, last.get("p"), c.logs(25))) from None


def full_isr(n):
    def pred(ps):
        return ps and all(p["leader"] > 0 and sorted(p["isr"]) == sorted(p["replicas"])
                          and len(p["replicas"]) == n for p in ps.values())
    return pred


# --------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------


def admin(c, ids=None):
    return AdminClient({"bootstrap.servers": c.bootstrap(ids), "socket.timeout.ms": 10000})


def leader_ready(b, topic, partition):
    """ListOffsets (latest) on broker `b` answers without error."""
    with kw.KafkaConn.to(b.bootstrap, timeout=5) as conn:
        r = conn.request(kw.API_LIST_OFFSETS, 1, kw.list_offsets_v1_body(topic, partition, -1))
        [t] = kw.parse_list_offsets_v1(r)
    return t["partitions"][0]["error_code"] == 0


def wait_leaders_ready(c, topic, ps):
    """Metadata may name a leader a moment before it has set the partition
    up (errors clients retry); raw requests must not hit that window."""
    for p, s in ps.items():
        wait_until(lambda: leader_ready(c.broker(s["leader"]), topic, p), 10,
                   what="leader %d of %s[%d] serving it" % (s["leader"], topic, p))


def create(c, topic, partitions, rf, ids=None, config=None, assignment=None, wait_isr=True):
    """Creates through the given brokers (an explicit `assignment`, a list of
    replica lists, instead of partitions/rf when given) and, with `wait_isr`,
    waits (bounded) for every partition to have a leader and the full ISR on
    the first of them, and for the leaders to serve; the partitions (None
    without `wait_isr`)."""
    a = admin(c, ids)
    if assignment is not None:
        nt = NewTopic(topic, len(assignment), replica_assignment=assignment, config=config or {})
    else:
        nt = NewTopic(topic, partitions, rf, config=config or {})
    a.create_topics([nt], request_timeout=15)[topic].result(timeout=20)
    if not wait_isr:
        return None
    node = (ids or c.live_ids())[0]
    ps = wait_parts(c, topic, node, lambda ps: len(ps) == partitions and full_isr(rf)(ps),
                    15, "topic %s: %d partitions, ISR of %d" % (topic, partitions, rf))
    wait_leaders_ready(c, topic, ps)
    return ps


# --------------------------------------------------------------------------
# Load: producer threads that remember when each message went out
# --------------------------------------------------------------------------


class Load:
    """`producers` threads, each with its own Producer, writing b"<pid>-<seq>"
    to the topic's partitions in the cycle `cycle` (repeat a partition to make
    it busier) at about `rate` messages/s each. For every message the time it
    was handed to produce() is kept, so the first acknowledgement of a
    message produced after an event can be measured."""

    def __init__(self, bootstrap, topic, cycle, producers=3, rate=250, acks="all",
                 idempotent=True, extra=None):
        self.topic = topic
        self.cycle = list(cycle)
        self.rate = rate
        self.conf = {"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
                     "enable.idempotence": idempotent, "message.timeout.ms": 60000}
        self.conf.update(extra or {})
        self.lock = threading.Lock()
        self.acked = {}        # partition -> [(offset, value, t_produce, t_ack)]
        self.errors = []       # (value, error name, t_produce, t_ack)
        self.produced = 0
        self.unflushed = []
        self.crashed = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(producers)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _cb(self, err, msg, t_produce):
        now = time.monotonic()
        with self.lock:
            if err is not None:
                self.errors.append((msg.value(), err.name(), t_produce, now))
            else:
                self.acked.setdefault(msg.partition(), []).append(
                    (msg.offset(), msg.value(), t_produce, now))

    def _run(self, pid):
        try:
            p = Producer(self.conf)
            seq = 0
            next_t = time.monotonic()
            while not self.stop_event.is_set():
                part = self.cycle[seq % len(self.cycle)]
                t = time.monotonic()
                try:
                    p.produce(self.topic, value=b"%d-%d" % (pid, seq), partition=part,
                              on_delivery=lambda e, m, t=t: self._cb(e, m, t))
                except BufferError:
                    p.poll(0.1)
                    continue
                seq += 1
                with self.lock:
                    self.produced += 1
                p.poll(0)
                next_t += 1.0 / self.rate
                delay = next_t - time.monotonic()
                if delay > 0:
                    p.poll(delay)
                elif delay < -1.0:     # fell behind: do not burst to catch up
                    next_t = time.monotonic()
            left = p.flush(70)
            if left:
                self.unflushed.append((pid, left))
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.crashed.append(repr(e))

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(90)
        assert not self.crashed, "producer threads failed: %r" % self.crashed
        assert not any(t.is_alive() for t in self.threads), "producer threads hang"
        return self

    # -- views --

    def count(self, partition=None):
        with self.lock:
            if partition is None:
                return sum(len(v) for v in self.acked.values())
            return len(self.acked.get(partition, []))

    def first_ack_after(self, partition, t):
        """Seconds from `t` to the first acknowledgement of a message
        produced to `partition` after `t` (None: none yet)."""
        with self.lock:
            acks = [a for _o, _v, tp, a in self.acked.get(partition, []) if tp > t]
        return min(acks) - t if acks else None

    def max_latency_after(self, t):
        """The longest produce-to-ack time of messages produced after `t`."""
        with self.lock:
            lat = [a - tp for v in self.acked.values() for _o, _v, tp, a in v if tp > t]
        return max(lat) if lat else None

    def acks_between(self, t0, t1):
        with self.lock:
            return sorted(a for v in self.acked.values() for _o, _v, _tp, a in v
                          if t0 <= a <= t1)


def produce_all(bootstrap, topic, per_partition, partitions, prefix=b"m"):
    """`per_partition` acks=all messages to each partition; {partition: [values]}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 30000})
    errors, acked = [], {}

    def cb(e, m):
        if e is not None:
            errors.append(e)
        else:
            acked.setdefault(m.partition(), []).append(m.value())
    for k in range(per_partition):
        for part in partitions:
            p.produce(topic, b"%s-%d-%d" % (prefix, part, k), partition=part, on_delivery=cb)
    assert p.flush(30) == 0 and not errors, errors
    return acked


def read_partitions(bootstrap, topic, partitions, timeout=40):
    """Every record of the partitions from offset 0 to the high watermark,
    as {partition: [(offset, value)]}."""
    cons = consumer(bootstrap, **{"group.id": unique_topic("g"), "fetch.wait.max.ms": 100})
    try:
        hw = {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                            cached=False)[1] for p in partitions}
        cons.assign([TopicPartition(topic, p, 0) for p in partitions])
        got = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout

        def done():
            return all(hw[p] == 0 or (got[p] and got[p][-1][0] >= hw[p] - 1)
                       for p in partitions)
        while not done() and time.monotonic() < deadline:
            for m in cons.consume(1000, 0.5):
                if m.error() is None:
                    got[m.partition()].append((m.offset(), m.value()))
        assert done(), "could not read up to the high watermarks %r in %ss: read %r" % (
            hw, timeout, {p: len(v) for p, v in got.items()})
        return got
    finally:
        cons.close()


def assert_exactly_once(load, got):
    """Every acknowledged message is in the log exactly once, at the offset
    it was acknowledged with; no value appears twice; each producer's
    messages are in the order it sent them. Returns a per-partition summary."""
    summary = {}
    for p, records in got.items():
        values = [v for _o, v in records]
        at = {v: o for o, v in records}
        dups = sorted({v for v in values if values.count(v) > 1}) if len(at) != len(values) else []
        acked = load.acked.get(p, [])
        missing = [(o, v) for o, v, _tp, _ta in acked if v not in at]
        moved = [(o, v, at[v]) for o, v, _tp, _ta in acked if v in at and at[v] != o]
        last, reordered = {}, []
        for o, v in records:
            pid, seq = v.split(b"-")
            if int(seq) <= last.get(pid, -1):
                reordered.append((o, v))
            last[pid] = int(seq)
        summary[p] = {"acked": len(acked), "read": len(records), "missing": len(missing),
                      "duplicates": len(dups), "moved": len(moved), "reordered": len(reordered)}
        assert not missing, "partition %d: %d acknowledged messages not in the log, e.g. %r" % (
            p, len(missing), missing[:5])
        assert not dups, "partition %d: values read more than once, e.g. %r" % (p, dups[:5])
        assert not moved, "partition %d: acknowledged at one offset, read at another " \
            "(acked offset, value, read offset), e.g. %r" % (p, moved[:5])
        assert not reordered, "partition %d: out of per-producer order, e.g. %r" % (
            p, reordered[:5])
    return summary


# --------------------------------------------------------------------------
# Raw requests to one broker
# --------------------------------------------------------------------------

API_DESCRIBE_LOG_DIRS = 35


def describe_log_dirs(b, topics=None):
    """DescribeLogDirs v4 (flexible) to broker `b`: (top error, [{"error_code",
    "log_dir", "total_bytes", "usable_bytes", "sizes": {(topic, p): size}}])."""
    if topics is None:
        body = kw.uvarint(0)
    else:
        body = kw.uvarint(len(topics) + 1) + b"".join(
            kw.compact_string(t) + compact_int_array(ps) + kw.EMPTY_TAGGED_FIELDS
            for t, ps in topics.items())
    body += kw.EMPTY_TAGGED_FIELDS
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_DESCRIBE_LOG_DIRS, 4, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle
    top_error = r.i16()

    def partition(x):
        p = (x.i32(), x.i64(), x.i64(), x.bool())
        x.skip_tagged_fields()
        return p

    def topic_(x):
        name = x.compact_string()
        ps = x.compact_array(partition) or []
        x.skip_tagged_fields()
        return name, ps

    def result(x):
        d = {"error_code": x.i16(), "log_dir": x.compact_string()}
        ts = x.compact_array(topic_) or []
        d["sizes"] = {(name, p[0]): p[1] for name, ps in ts for p in ps}
        d["total_bytes"], d["usable_bytes"] = x.i64(), x.i64()
        x.skip_tagged_fields()
        return d
    dirs = r.compact_array(result) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in DescribeLogDirs v4 response"
    return top_error, dirs


def partition_sizes(b, topic, partitions):
    """{partition: bytes of its replica's log} on broker `b` for the
    partitions of `topic` it hosts (absent: not hosted)."""
    err, dirs = describe_log_dirs(b, {topic: partitions})
    assert err == 0, "DescribeLogDirs refused: %d" % err
    return {p: size for d in dirs for (t, p), size in d["sizes"].items() if t == topic}


def compact_int_array(values):
    return kw.uvarint(len(values) + 1) + b"".join(kw.i32(v) for v in values)


def raw_produce(b, topic, value, acks, partition=0, timeout_ms=10000):
    """One Produce v3 of one record to broker `b` itself; the partition's
    answer {"error_code", "base_offset", ...}."""
    now = int(time.time() * 1000)
    batch = kw.encode_record_batch([(None, value, (), now)], now)
    with kw.KafkaConn.to(b.bootstrap, timeout=timeout_ms / 1000.0 + 10) as conn:
        r = conn.request(kw.API_PRODUCE, 3, kw.produce_v3_body(
            topic, partition, batch, acks=acks, timeout_ms=timeout_ms))
    topics, _throttle = kw.parse_produce_v3(r)
    [t] = topics
    [p] = t["partitions"]
    assert t["name"] == topic and p["partition"] == partition, topics
    return p


# --------------------------------------------------------------------------
# Broker logs
# --------------------------------------------------------------------------


def log_count(b, text):
    try:
        return b.log_path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0
