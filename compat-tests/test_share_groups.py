"""KIP-932 share groups (queues) as librdkafka's ShareConsumer uses them.

confluent-kafka `ShareConsumer`s (librdkafka 2.16: ShareGroupHeartbeat v1, ShareFetch v1,
ShareAcknowledge v1) in threads of this process, or in a subprocess where the test must
kill or stop one: records of one partition spread over several members, each accepted
exactly once; RELEASE (back with delivery count + 1), REJECT (never again), a lock that
expires under a stopped or killed member, the delivery-count limit archiving a record,
acknowledgements after the lock expired (INVALID_RECORD_STATE), share state across a
graceful and a kill -9 restart, the group configs (share.auto.offset.reset latest /
earliest / by_duration, share.record.lock.duration.ms, share.heartbeat.interval.ms,
share.session.timeout.ms, share.isolation.level), a share group beside a classic and a
consumer-protocol group on the same topic; and hand-built requests (ShareGroupHeartbeat,
ShareGroupDescribe, ShareFetch, ShareAcknowledge, Describe/Alter/DeleteShareGroupOffsets,
ListGroups v5) for the admin views and the error paths.

How librdkafka's ShareConsumer behaves (what the assertions lean on):
- `share.acknowledgement.mode=explicit`: every record of a poll must be passed to
  `acknowledge(msg, AcknowledgeType.ACCEPT|RELEASE|REJECT)` before the next poll;
  `commit_sync(timeout)` sends them (ShareAcknowledge) and returns
  {TopicPartition: None | KafkaException} per partition (a broker's per-partition
  error such as INVALID_RECORD_STATE lands there). `implicit` (the default): a poll's
  records are accepted on the next poll / commit / close.
- `Message.delivery_count()`: the AcquiredRecords delivery count of the record.
- Records are fetched only inside poll() (no prefetch), so a member that stops polling
  holds exactly what its last poll returned.
- A share consumer takes no group settings (session, heartbeat, auto.offset.reset,
  isolation.level are refused at construction): they come from the broker's
  group.share.* settings and the group's configs (GROUP config resource).

One broker for the module with short share-group settings (heartbeat 500 ms, session 6 s,
record lock 3 s, delivery count limit 3) so locks expire and members settle within
seconds; every test has its own topics and groups. The restart test has a broker of its
own. Records are produced in small batches (batch.num.messages=50) so that the broker's
per-fetch record limit can split them between members.
"""

import collections
import json
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import (AcknowledgeType, Consumer, ConsumerGroupTopicPartitions,
                             KafkaError, KafkaException, Producer, ShareConsumer,
                             TopicCollection, TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, ResourceType)

import kafka_wire as kw
from ck_helpers import admin_client, create_topic
from runnel_harness import Broker, BrokerError, unique_topic

pytestmark = pytest.mark.timeout(240)

HEARTBEAT_MS = 500
SESSION_MS = 6000
LOCK_MS = 3000
LOCK_S = LOCK_MS / 1000.0
DELIVERY_LIMIT = 3

FAST = {
    "group.share.heartbeat.interval.ms": str(HEARTBEAT_MS),
    "group.share.min.heartbeat.interval.ms": "100",
    "group.share.session.timeout.ms": str(SESSION_MS),
    "group.share.min.session.timeout.ms": "1000",
    "group.share.record.lock.duration.ms": str(LOCK_MS),
    "group.share.min.record.lock.duration.ms": "1000",
    "group.share.delivery.count.limit": str(DELIVERY_LIMIT),
    # the consumer-protocol and classic groups some tests run beside the share groups
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "100",
    "group.initial.rebalance.delay.ms": "500",
}

ACCEPT = AcknowledgeType.ACCEPT
RELEASE = AcknowledgeType.RELEASE
REJECT = AcknowledgeType.REJECT
GAP = 0   # on the wire only: an acquired offset without a record

# Error codes (checked against confluent_kafka.KafkaError below).
NONE = 0
UNKNOWN_MEMBER_ID = 25
INVALID_REQUEST = 42
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
INCONSISTENT_GROUP_PROTOCOL = 23
FENCED_MEMBER_EPOCH = 110
INVALID_RECORD_STATE = 121
SHARE_SESSION_NOT_FOUND = 122
INVALID_SHARE_SESSION_EPOCH = 123
assert (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.INVALID_REQUEST, KafkaError.NON_EMPTY_GROUP,
        KafkaError.GROUP_ID_NOT_FOUND, KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        KafkaError.FENCED_MEMBER_EPOCH, KafkaError.INVALID_RECORD_STATE,
        KafkaError.SHARE_SESSION_NOT_FOUND, KafkaError.INVALID_SHARE_SESSION_EPOCH) == (
    UNKNOWN_MEMBER_ID, INVALID_REQUEST, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND,
    INCONSISTENT_GROUP_PROTOCOL, FENCED_MEMBER_EPOCH, INVALID_RECORD_STATE,
    SHARE_SESSION_NOT_FOUND, INVALID_SHARE_SESSION_EPOCH)

GROUP_CONFIG = ConfigSource.GROUP_CONFIG.value


@pytest.fixture(scope="module")
def kb():
    b = Broker(overrides=FAST)
    try:
        b.start()
    except BrokerError as e:
        b.cleanup()
        pytest.fail(str(e), pytrace=False)
    try:
        yield b
        b.stop(expect_clean=True)
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def admin(kb):
    return admin_client(kb.bootstrap)


def unique_group(prefix="sg"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for: %s" % (
                timeout, what() if callable(what) else what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# Topics, records, group configs
# --------------------------------------------------------------------------


def produce(bootstrap, topic, items, timeout=60, **extra):
    """items: [(partition, value bytes)] or [(partition, value, timestamp_ms)] ->
    [(partition, offset, value)] in delivery order. Small batches (50 records)."""
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 50}
    conf.update(extra)
    p = Producer(conf)
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value()))

    for i, item in enumerate(items):
        part, value = item[0], item[1]
        kwargs = {"partition": part, "on_delivery": cb}
        if len(item) > 2:
            kwargs["timestamp"] = item[2]
        while True:
            try:
                p.produce(topic, value, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(timeout) == 0, "messages still in flight after %ss" % timeout
    assert not errors, errors[:5]
    return delivered


def topic_id_bytes(admin, topic):
    td = admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(
        timeout=15)
    return struct.pack(">qq", td.topic_id.get_most_significant_bits(),
                       td.topic_id.get_least_significant_bits())


def group_resource(group, configs=None, op=AlterConfigOpType.SET):
    if configs is None:
        return ConfigResource(ResourceType.GROUP, group)
    return ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, v in configs.items()])


def set_group_configs(admin, group, configs):
    """IncrementalAlterConfigs SET on the GROUP resource (type 32 on the wire)."""
    res = group_resource(group, configs)
    admin.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)


def group_configs(admin, group):
    """{key: (value, source)} as DescribeConfigs reports them."""
    res = group_resource(group)
    got = admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    return {k: (e.value, getattr(e.source, "value", e.source)) for k, e in got.items()}


def earliest(admin, group, **more):
    """The group reads from the log start on its first fetch (instead of the end)."""
    configs = {"share.auto.offset.reset": "earliest"}
    configs.update({k.replace("_", "."): str(v) for k, v in more.items()})
    set_group_configs(admin, group, configs)


# --------------------------------------------------------------------------
# Share consumers
# --------------------------------------------------------------------------

Delivery = collections.namedtuple("Delivery", "t topic partition offset value count member")


def err_code(v):
    """The Kafka error code in a commit_sync value / callback exception (0 for None)."""
    if v is None:
        return 0
    if isinstance(v, KafkaException):
        v = v.args[0]
    if isinstance(v, KafkaError):
        return v.code()
    return int(v)


def commit_codes(result):
    """commit_sync's {TopicPartition: None | KafkaException} -> {(topic, partition): code}."""
    return {(tp.topic, tp.partition): err_code(v) or err_code(tp.error)
            for tp, v in (result or {}).items()}


def share_conf(bootstrap, group, name, mode="explicit", **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "share.acknowledgement.mode": mode,
        # close() and a hung request are bounded by this, not librdkafka's 60 s
        "socket.timeout.ms": 10000,
    }
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def accept_all(d):
    return ACCEPT


class ShareMember:
    """A ShareConsumer owned by a thread of its own (created, subscribed, polled with
    poll(0.2) and closed there). Every record handed to it is a Delivery (handed-over
    time, topic, partition, offset, value, delivery count). In explicit mode
    `decide(delivery)` picks each record's AcknowledgeType (ACCEPT by default); after each
    batch commit_sync sends the acknowledgements, and the partition's result says whether
    they took: `acked` maps (topic, partition, offset) -> (type, time) for those that did,
    `ack_failures` lists (Delivery, type, error code) for those that did not. In implicit
    mode the batch is committed the same way (commit_sync accepts the previous poll).
    With `gate` (a threading.Event) the member subscribes at once but polls only once the
    gate is set. `max_records` stops polling after that many deliveries (the member stays
    in the group, holding nothing)."""

    def __init__(self, bootstrap, group, topics, name, decide=accept_all, mode="explicit",
                 gate=None, max_records=None, **extra):
        self.name = name
        self.conf = share_conf(bootstrap, group, name, mode, **extra)
        self.topics = list(topics)
        self.decide = decide
        self.explicit = mode == "explicit"
        self.gate = gate
        self.max_records = max_records
        self.lock = threading.Lock()
        self.deliveries = []
        self.acked = {}
        self.ack_failures = []
        self.errors = []          # record-level errors and poll() exceptions
        self.callback_results = []   # (offsets {(t, p): set}, code) from the ack-commit callback
        self.fatal = None
        self.closed_at = None
        self._stop = threading.Event()
        self._close = True
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="share-" + name, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "%s: consumer not created within 30 s" % name
        if self.fatal is not None:
            raise AssertionError("%s: could not create/subscribe: %r" % (name, self.fatal))

    def _on_ack_commit(self, offsets, exc):
        got = {(tp.topic, tp.partition): set(offs) for tp, offs in (offsets or {}).items()}
        with self.lock:
            self.callback_results.append((got, err_code(exc)))

    def _run(self):
        try:
            c = ShareConsumer(self.conf)
            c.set_acknowledgement_commit_callback(self._on_ack_commit)
            c.subscribe(self.topics)
        except Exception as e:   # noqa: BLE001 - reported by __init__
            self.fatal = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self._stop.is_set():
                if self.gate is not None and not self.gate.is_set():
                    self.gate.wait(0.05)
                    continue
                if self.max_records is not None and len(self.deliveries) >= self.max_records:
                    time.sleep(0.05)
                    continue
                try:
                    msgs = c.poll(0.2)
                except KafkaException as e:
                    with self.lock:
                        self.errors.append(e.args[0])
                    time.sleep(0.1)
                    continue
                if not len(msgs):
                    continue
                now = time.monotonic()
                batch = []
                for m in msgs:
                    if m.error() is not None:
                        # librdkafka acknowledged it internally (RELEASE / REJECT)
                        with self.lock:
                            self.errors.append(m.error())
                        continue
                    d = Delivery(now, m.topic(), m.partition(), m.offset(), m.value(),
                                 m.delivery_count(), self.name)
                    t = ACCEPT
                    if self.explicit:
                        t = self.decide(d)
                        c.acknowledge(m, t)
                    batch.append((d, t))
                with self.lock:
                    self.deliveries.extend(d for d, _ in batch)
                if not batch:
                    continue
                codes = commit_codes(c.commit_sync(15))
                done = time.monotonic()
                with self.lock:
                    for d, t in batch:
                        code = codes.get((d.topic, d.partition), -1)
                        if code == 0:
                            self.acked[(d.topic, d.partition, d.offset)] = (t, done)
                        else:
                            self.ack_failures.append((d, t, code))
        finally:
            if self._close:
                try:
                    c.close()
                except Exception as e:   # noqa: BLE001 - recorded
                    with self.lock:
                        self.errors.append(("close", e))
            self.closed_at = time.monotonic()

    def got(self):
        with self.lock:
            return list(self.deliveries)

    def accepted(self):
        """{(topic, partition, offset): time} acknowledged ACCEPT with success."""
        with self.lock:
            return {k: when for k, (t, when) in self.acked.items() if t == ACCEPT}

    def problems(self):
        with self.lock:
            return list(self.errors), list(self.ack_failures)

    def stop(self, close=True, timeout=40):
        self._close = close
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "share member %s did not stop within %ss" % (
            self.name, timeout)


def stop_all(members):
    for m in members:
        try:
            m.stop()
        except AssertionError:
            pass


def all_accepted(members):
    out = {}
    for m in members:
        for k, when in m.accepted().items():
            assert k not in out, "%s accepted twice (also by another member)" % (k,)
            out[k] = when
    return out


def assert_clean(members):
    for m in members:
        errors, failures = m.problems()
        assert not errors, "%s: %s" % (m.name, errors[:5])
        assert not failures, "%s: acknowledgements failed: %s" % (m.name, failures[:5])


def assert_none_after_accept(members, accepted):
    """No record was handed to anyone after its ACCEPT was acknowledged."""
    late = [d for m in members for d in m.got()
            if (d.topic, d.partition, d.offset) in accepted
            and d.t > accepted[(d.topic, d.partition, d.offset)]]
    assert not late, "accepted records delivered again: %s" % late[:10]


# A share consumer in a process of its own that acquires records and holds them (never
# acknowledges, never polls again) until it is stopped or killed.
HOLDER_SCRIPT = r"""
import json, sys, time
from confluent_kafka import ShareConsumer
conf = json.loads(sys.argv[1])
topics = json.loads(sys.argv[2])

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

c = ShareConsumer(conf)
c.subscribe(topics)
out(ev="started")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    msgs = c.poll(0.5)
    recs = [[m.topic(), m.partition(), m.offset(), m.delivery_count()]
            for m in msgs if m.error() is None]
    errs = [str(m.error()) for m in msgs if m.error() is not None]
    if recs or errs:
        out(ev="acquired", records=recs, errors=errs)
        break
while True:
    time.sleep(1)
"""


class Holder:
    def __init__(self, bootstrap, group, topics, name, **extra):
        conf = share_conf(bootstrap, group, name, "explicit", **extra)
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, json.dumps(conf), json.dumps(list(topics))],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, text=True)
        self.events = []
        self.acquired_at = None
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if ev["ev"] == "acquired" and self.acquired_at is None:
                    self.acquired_at = time.monotonic()
                self.events.append(ev)

    def acquired(self, timeout=30):
        def got():
            with self.lock:
                return [e for e in self.events if e["ev"] == "acquired"]
        evs = wait_until(got, timeout, lambda: "holder acquired records (stderr: %s)" % (
            self.stderr_tail(),))
        ev = evs[0]
        assert not ev["errors"], ev["errors"]
        return {(t, p, o): dc for t, p, o, dc in ev["records"]}

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def stderr_tail(self, n=2000):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-n:]


# --------------------------------------------------------------------------
# Share-group requests by hand (all flexible: request header v2, response header v1)
# --------------------------------------------------------------------------

API_LIST_GROUPS = 16
API_SHARE_GROUP_HEARTBEAT = 76
API_SHARE_GROUP_DESCRIBE = 77
API_SHARE_FETCH = 78
API_SHARE_ACKNOWLEDGE = 79
API_DESCRIBE_SHARE_GROUP_OFFSETS = 90
API_ALTER_SHARE_GROUP_OFFSETS = 91
API_DELETE_SHARE_GROUP_OFFSETS = 92

T = kw.EMPTY_TAGGED_FIELDS


def _carr(items):
    return kw.compact_array_of(None if items is None else list(items))


def _cstrs(names):
    return _carr(None if names is None else [kw.compact_string(n) for n in names])


def _uuid(r):
    return r._take(16)


def _compact_bytes(r):
    n = r.uvarint()
    return None if n == 0 else r._take(n - 1)


def _done(r, what):
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in %s response" % what


def share_group_heartbeat(conn, group, member_id, epoch, topics=None, rack_id=None):
    """ShareGroupHeartbeat v1 -> dict; assignment None or {topic_id: sorted partitions}."""
    body = (kw.compact_string(group) + kw.compact_string(member_id) + kw.i32(epoch)
            + kw.compact_string(rack_id) + _cstrs(topics) + T)
    r = conn.request(API_SHARE_GROUP_HEARTBEAT, 1, body, flexible=True)
    r.skip_tagged_fields()
    out = {"throttle_time_ms": r.i32(), "error_code": r.i16(),
           "error_message": r.compact_string(), "member_id": r.compact_string(),
           "member_epoch": r.i32(), "heartbeat_interval_ms": r.i32()}

    def tps(rr):
        tid = _uuid(rr)
        parts = rr.compact_array(lambda x: x.i32()) or []
        rr.skip_tagged_fields()
        return tid, sorted(parts)

    if r.i8() < 0:
        out["assignment"] = None
    else:
        out["assignment"] = dict(r.compact_array(tps) or [])
        r.skip_tagged_fields()
    _done(r, "ShareGroupHeartbeat")
    return out


def share_group_describe(conn, groups, include_authorized_operations=False):
    """ShareGroupDescribe v1 -> {group_id: dict}; a member's assignment is
    {(topic_name, partition)} and its topic ids {topic_name: topic_id}."""
    body = _cstrs(groups) + kw.i8(1 if include_authorized_operations else 0) + T
    r = conn.request(API_SHARE_GROUP_DESCRIBE, 1, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms

    def tp(rr):
        tid, name = _uuid(rr), rr.compact_string()
        parts = rr.compact_array(lambda x: x.i32()) or []
        rr.skip_tagged_fields()
        return tid, name, parts

    def member(rr):
        m = {"member_id": rr.compact_string(), "rack_id": rr.compact_string(),
             "member_epoch": rr.i32(), "client_id": rr.compact_string(),
             "client_host": rr.compact_string(),
             "subscribed_topic_names": rr.compact_array(lambda x: x.compact_string()) or []}
        tps = rr.compact_array(tp) or []
        rr.skip_tagged_fields()   # Assignment
        rr.skip_tagged_fields()   # Member
        m["assignment"] = {(name, p) for _, name, ps in tps for p in ps}
        m["topic_ids"] = {name: tid for tid, name, _ in tps}
        return m

    def group(rr):
        g = {"error_code": rr.i16(), "error_message": rr.compact_string(),
             "group_id": rr.compact_string(), "group_state": rr.compact_string(),
             "group_epoch": rr.i32(), "assignment_epoch": rr.i32(),
             "assignor_name": rr.compact_string(), "members": rr.compact_array(member) or [],
             "authorized_operations": rr.i32()}
        rr.skip_tagged_fields()
        return g

    groups_out = r.compact_array(group) or []
    _done(r, "ShareGroupDescribe")
    return {g["group_id"]: g for g in groups_out}


def ack_batch(first, last, types):
    """One AcknowledgementBatch: one type for the range, or one per offset."""
    return kw.i64(first) + kw.i64(last) + _carr([kw.i8(int(t)) for t in types]) + T


def _ack_topics(acks):
    """acks: {(topic_id, partition): [(first, last, [types])]} -> Topics array items."""
    by_topic = collections.OrderedDict()
    for (tid, p), batches in acks.items():
        by_topic.setdefault(tid, []).append((p, batches))
    return [tid + _carr([kw.i32(p) + _carr([ack_batch(*b) for b in batches]) + T
                         for p, batches in parts]) + T
            for tid, parts in by_topic.items()]


def share_fetch(conn, group, member_id, epoch, partitions=(), acks=None, forget=(),
                max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, max_records=500,
                batch_size=500, client_id="runnel-compat"):
    """ShareFetch v1. partitions: [(topic_id, partition)] to fetch (no acknowledgements);
    acks: {(topic_id, partition): [(first, last, [types])]}; forget: [(topic_id, partition)].
    -> dict with the top-level fields and partitions {(topic_id, partition): dict}."""
    items = []
    fetch_only = [tp for tp in partitions if not acks or tp not in acks]
    by_topic = collections.OrderedDict()
    for tid, p in fetch_only:
        by_topic.setdefault(tid, []).append(p)
    items += [tid + _carr([kw.i32(p) + _carr([]) + T for p in parts]) + T
              for tid, parts in by_topic.items()]
    items += _ack_topics(acks or {})
    forgotten = collections.OrderedDict()
    for tid, p in forget:
        forgotten.setdefault(tid, []).append(p)
    body = (kw.compact_string(group) + kw.compact_string(member_id) + kw.i32(epoch)
            + kw.i32(max_wait_ms) + kw.i32(min_bytes) + kw.i32(max_bytes) + kw.i32(max_records)
            + kw.i32(batch_size) + _carr(items)
            + _carr([tid + _carr([kw.i32(p) for p in ps]) + T for tid, ps in forgotten.items()])
            + T)
    r = conn.request(API_SHARE_FETCH, 1, body, flexible=True,
                     timeout=max_wait_ms / 1000.0 + 15, client_id=client_id)
    r.skip_tagged_fields()
    out = {"throttle_time_ms": r.i32(), "error_code": r.i16(),
           "error_message": r.compact_string(), "acquisition_lock_timeout_ms": r.i32()}

    def acquired(rr):
        a = (rr.i64(), rr.i64(), rr.i16())
        rr.skip_tagged_fields()
        return a

    def partition(rr):
        p = {"partition": rr.i32(), "error_code": rr.i16(), "error_message": rr.compact_string(),
             "acknowledge_error_code": rr.i16(),
             "acknowledge_error_message": rr.compact_string()}
        p["current_leader"] = (rr.i32(), rr.i32())
        rr.skip_tagged_fields()
        p["records"] = _compact_bytes(rr)
        p["acquired"] = rr.compact_array(acquired) or []
        rr.skip_tagged_fields()
        return p

    def topic(rr):
        tid = _uuid(rr)
        parts = rr.compact_array(partition) or []
        rr.skip_tagged_fields()
        return tid, parts

    out["partitions"] = {}
    for tid, parts in r.compact_array(topic) or []:
        for p in parts:
            out["partitions"][(tid, p["partition"])] = p

    def endpoint(rr):
        e = (rr.i32(), rr.compact_string(), rr.i32(), rr.compact_string())
        rr.skip_tagged_fields()
        return e

    out["node_endpoints"] = r.compact_array(endpoint) or []
    _done(r, "ShareFetch")
    return out


def share_acknowledge(conn, group, member_id, epoch, acks):
    """ShareAcknowledge v1. acks: {(topic_id, partition): [(first, last, [types])]} ->
    dict with the top-level error and partitions {(topic_id, partition): error_code}."""
    body = (kw.compact_string(group) + kw.compact_string(member_id) + kw.i32(epoch)
            + _carr(_ack_topics(acks)) + T)
    r = conn.request(API_SHARE_ACKNOWLEDGE, 1, body, flexible=True)
    r.skip_tagged_fields()
    out = {"throttle_time_ms": r.i32(), "error_code": r.i16(),
           "error_message": r.compact_string()}

    def partition(rr):
        p = (rr.i32(), rr.i16(), rr.compact_string())
        rr.i32(), rr.i32()   # current leader
        rr.skip_tagged_fields()
        rr.skip_tagged_fields()
        return p

    def topic(rr):
        tid = _uuid(rr)
        parts = rr.compact_array(partition) or []
        rr.skip_tagged_fields()
        return tid, parts

    out["partitions"] = {}
    for tid, parts in r.compact_array(topic) or []:
        for p, err, _msg in parts:
            out["partitions"][(tid, p)] = err

    def endpoint(rr):
        rr.i32(), rr.compact_string(), rr.i32(), rr.compact_string()
        rr.skip_tagged_fields()

    r.compact_array(endpoint)
    _done(r, "ShareAcknowledge")
    return out


def describe_share_group_offsets(conn, groups):
    """DescribeShareGroupOffsets v0. groups: {group_id: None (every partition) |
    {topic: [partitions]}} -> {group_id: {"error_code", "offsets": {(topic, p): (start,
    error_code)}}}."""
    def group_item(g, topics):
        if topics is None:
            t = _carr(None)
        else:
            t = _carr([kw.compact_string(name) + _carr([kw.i32(p) for p in ps]) + T
                       for name, ps in topics.items()])
        return kw.compact_string(g) + t + T

    body = _carr([group_item(g, t) for g, t in groups.items()]) + T
    r = conn.request(API_DESCRIBE_SHARE_GROUP_OFFSETS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms

    def partition(rr):
        p = (rr.i32(), rr.i64(), rr.i32(), rr.i16(), rr.compact_string())
        rr.skip_tagged_fields()
        return p

    def topic(rr):
        name = rr.compact_string()
        _uuid(rr)   # topic id
        parts = rr.compact_array(partition) or []
        rr.skip_tagged_fields()
        return name, parts

    def group(rr):
        gid = rr.compact_string()
        topics = rr.compact_array(topic) or []
        g = {"group_id": gid, "error_code": rr.i16(), "error_message": rr.compact_string()}
        rr.skip_tagged_fields()
        g["offsets"] = {(name, p): (start, err) for name, parts in topics
                        for p, start, _epoch, err, _msg in parts}
        return g

    out = {g["group_id"]: g for g in r.compact_array(group) or []}
    _done(r, "DescribeShareGroupOffsets")
    return out


def alter_share_group_offsets(conn, group, offsets):
    """AlterShareGroupOffsets v0. offsets: {topic: {partition: start offset}} ->
    (top-level error code, {(topic, partition): error code})."""
    body = (kw.compact_string(group)
            + _carr([kw.compact_string(t) + _carr([kw.i32(p) + kw.i64(o) + T
                                                   for p, o in parts.items()]) + T
                     for t, parts in offsets.items()]) + T)
    r = conn.request(API_ALTER_SHARE_GROUP_OFFSETS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms
    top = r.i16()
    r.compact_string()

    def partition(rr):
        p = (rr.i32(), rr.i16())
        rr.compact_string()
        rr.skip_tagged_fields()
        return p

    def topic(rr):
        name = rr.compact_string()
        _uuid(rr)   # topic id
        parts = rr.compact_array(partition) or []
        rr.skip_tagged_fields()
        return name, parts

    errs = {(name, p): e for name, parts in r.compact_array(topic) or [] for p, e in parts}
    _done(r, "AlterShareGroupOffsets")
    return top, errs


def delete_share_group_offsets(conn, group, topics):
    """DeleteShareGroupOffsets v0 -> (top-level error code, {topic: error code})."""
    body = kw.compact_string(group) + _carr([kw.compact_string(t) + T for t in topics]) + T
    r = conn.request(API_DELETE_SHARE_GROUP_OFFSETS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms
    top = r.i16()
    r.compact_string()

    def topic(rr):
        name = rr.compact_string()
        _uuid(rr)   # topic id
        err = rr.i16()
        rr.compact_string()
        rr.skip_tagged_fields()
        return name, err

    errs = dict(r.compact_array(topic) or [])
    _done(r, "DeleteShareGroupOffsets")
    return top, errs


def list_groups_v5(conn, states=(), types=()):
    """ListGroups v5 -> (error code, {group_id: (protocol_type, state, type)})."""
    body = _cstrs(states) + _cstrs(types) + T
    r = conn.request(API_LIST_GROUPS, 5, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms
    err = r.i16()

    def group(rr):
        g = (rr.compact_string(), rr.compact_string(), rr.compact_string(), rr.compact_string())
        rr.skip_tagged_fields()
        return g

    groups = r.compact_array(group) or []
    _done(r, "ListGroups v5")
    return err, {gid: (ptype, state, gtype) for gid, ptype, state, gtype in groups}


def batch_ranges(records):
    """RecordBatch headers in a records blob -> [(base offset, last offset, is_control)]."""
    out, pos = [], 0
    while records and pos + 61 <= len(records):
        base, length = struct.unpack_from(">qi", records, pos)
        if pos + 12 + length > len(records):
            break   # a partial batch at the end
        attrs, last_delta = struct.unpack_from(">hi", records, pos + 21)
        out.append((base, base + last_delta, bool(attrs & 0x20)))
        pos += 12 + length
    return out


def raw(kb):
    return kw.KafkaConn.to(kb.bootstrap, timeout=20)


def describe_group(kb, group):
    with raw(kb) as conn:
        return share_group_describe(conn, [group])[group]


def start_offsets(kb, group, topics=None, missing_ok=False):
    """{(topic, partition): start offset} of a share group (DescribeShareGroupOffsets);
    with missing_ok, {} for a group the broker does not know (yet)."""
    with raw(kb) as conn:
        g = describe_share_group_offsets(conn, {group: topics})[group]
    if missing_ok and g["error_code"] == GROUP_ID_NOT_FOUND:
        return {}
    assert g["error_code"] == NONE, g
    bad = {k: v for k, v in g["offsets"].items() if v[1] != NONE}
    assert not bad, "partition errors: %s" % bad
    return {k: start for k, (start, _) in g["offsets"].items()}


def offsets_now(kb, group):
    """start_offsets, {} while the broker does not know the group (for waits)."""
    return start_offsets(kb, group, missing_ok=True)


def wait_members(kb, group, n, topic=None, nparts=None, timeout=30):
    """Until ShareGroupDescribe shows the group Stable with n members, each assigned
    something (and together every partition of `topic`)."""
    def ok():
        g = describe_group(kb, group)
        if g["error_code"] != NONE or len(g["members"]) != n or g["group_state"] != "Stable":
            return None
        if not all(m["assignment"] for m in g["members"]):
            return None
        if topic is not None:
            got = set().union(*(m["assignment"] for m in g["members"]))
            if got != {(topic, p) for p in range(nparts)}:
                return None
        return g
    return wait_until(ok, timeout, lambda: "share group %s: %d members assigned; described %s"
                      % (group, n, describe_group(kb, group)), interval=0.1)


class RawShareMember:
    """A share-group member driven by hand-built ShareGroupHeartbeat / ShareFetch /
    ShareAcknowledge on one connection; keeps its member epoch and share-session epoch."""

    def __init__(self, bootstrap, group, topics):
        self.conn = kw.KafkaConn.to(bootstrap, timeout=20)
        self.group = group
        self.topics = topics
        self.member_id = "raw-" + uuid.uuid4().hex
        self.epoch = 0
        self.assignment = {}
        self.session_epoch = 0

    def heartbeat(self, epoch, topics=None, member_id=None, group=None):
        return share_group_heartbeat(self.conn, group or self.group,
                                     self.member_id if member_id is None else member_id,
                                     epoch, topics)

    def _took(self, r):
        if r["error_code"] == NONE:
            self.epoch = r["member_epoch"]
            if r["assignment"] is not None:
                self.assignment = r["assignment"]
        return r

    def join(self):
        return self._took(self.heartbeat(0, self.topics))

    def beat(self):
        return self._took(self.heartbeat(self.epoch))

    def wait_assigned(self, tid, parts, timeout=15):
        def ok():
            r = self.beat()
            assert r["error_code"] == NONE, r
            return sorted(self.assignment.get(tid, [])) == sorted(parts)
        wait_until(ok, timeout, lambda: "raw member assigned %s: %s" % (parts, self.assignment),
                   interval=0.2)

    def leave(self):
        return self.heartbeat(-1)

    def fetch(self, partitions=(), acks=None, epoch=None, **kwargs):
        """ShareFetch at the session's epoch (or `epoch`); the next epoch follows a success."""
        e = self.session_epoch if epoch is None else epoch
        r = share_fetch(self.conn, self.group, self.member_id, e, partitions, acks, **kwargs)
        if epoch is None and r["error_code"] == NONE:
            self.session_epoch = e + 1
        return r

    def acknowledge(self, acks, epoch=None):
        e = self.session_epoch if epoch is None else epoch
        r = share_acknowledge(self.conn, self.group, self.member_id, e, acks)
        if epoch is None and r["error_code"] == NONE:
            self.session_epoch = e + 1 if e >= 0 else 0
        return r

    def close(self):
        self.conn.close()


def assert_share_healthy(kb, admin):
    """A well-behaved share consumer still works on this broker."""
    assert kb.is_running(), "broker exited:\n%s" % kb.log_tail()
    topic = create_topic(admin, unique_topic("sh-healthy"))
    group = unique_group("healthy")
    earliest(admin, group)
    produce(kb.bootstrap, topic, [(0, b"still-sharing")])
    m = ShareMember(kb.bootstrap, group, [topic], "healthy")
    try:
        wait_until(lambda: set(m.accepted()) == {(topic, 0, 0)}, 30,
                   lambda: "a fresh share consumer accepts one record: %s" % (m.got(),))
        assert [d.value for d in m.got()] == [b"still-sharing"]
    finally:
        m.stop()
    assert_clean([m])


# ==========================================================================
# 1. Three members on one partition: each gets some, every record accepted once
# ==========================================================================


def test_three_members_share_one_partition_exactly_once(kb, admin):
    topic = create_topic(admin, unique_topic("sh-three"), partitions=1)
    group = unique_group("three")
    # A lock far longer than the test: no record may come back because its lock ran out.
    earliest(admin, group, share_record_lock_duration_ms=30000)
    n = 10000
    produced = produce(kb.bootstrap, topic, [(0, b"%d" % i) for i in range(n)])
    assert len(produced) == n

    gate = threading.Event()
    members = [ShareMember(kb.bootstrap, group, [topic], "three-%d" % i, gate=gate)
               for i in range(3)]
    try:
        # All three in the group (each assigned the partition) before anyone fetches.
        try:
            wait_members(kb, group, 3, topic, 1, timeout=30)
            joined = "yes"
        except AssertionError as e:
            joined = "no: %s" % e
        gate.set()
        want = {(topic, p, o) for p, o, _ in produced}
        wait_until(lambda: len(all_accepted(members)) >= n, 120,
                   lambda: "%d records accepted, got %d (%s)" % (
                       n, len(all_accepted(members)), [len(m.got()) for m in members]))
        time.sleep(1.0)   # anything handed out again would show up now

        accepted = all_accepted(members)
        assert set(accepted) == want, "missing %s" % sorted(want - set(accepted))[:10]
        assert_none_after_accept(members, accepted)
        seen = collections.Counter((d.partition, d.offset) for m in members for d in m.got())
        dups = {k: c for k, c in seen.items() if c > 1}
        assert not dups, "delivered more than once: %s" % sorted(dups.items())[:20]
        counts = collections.Counter(d.count for m in members for d in m.got())
        assert set(counts) == {1}, "delivery counts other than 1: %s" % counts
        per = {m.name: len(m.got()) for m in members}
        assert all(per.values()), "a member got nothing: %s (all three joined first: %s)" % (
            per, joined)
        assert sorted(int(d.value) for m in members for d in m.got()) == list(range(n))
        assert_clean(members)
        wait_until(lambda: offsets_now(kb, group).get((topic, 0)) == n, 20,
                   lambda: "share-partition start offset %d: %s" % (n, offsets_now(kb, group)))
    finally:
        stop_all(members)


# ==========================================================================
# 2. RELEASE comes back with delivery count 2; REJECT never comes back
# ==========================================================================


def poll_loop(c, until, timeout, decide=accept_all, on_batch=None):
    """Polls `c` (explicit mode) until until(deliveries) or timeout; acknowledges each
    record with decide(delivery) and commits each batch. -> (deliveries, {(partition,
    offset): code} for failed acknowledgements)."""
    deliveries, failed = [], {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(deliveries):
        msgs = c.poll(0.2)
        batch = []
        for m in msgs:
            assert m.error() is None, m.error()
            d = Delivery(time.monotonic(), m.topic(), m.partition(), m.offset(), m.value(),
                         m.delivery_count(), "test")
            c.acknowledge(m, decide(d))
            batch.append(d)
        deliveries.extend(batch)
        if batch:
            codes = commit_codes(c.commit_sync(15))
            for d in batch:
                code = codes.get((d.topic, d.partition), -1)
                if code:
                    failed[(d.partition, d.offset)] = code
            if on_batch:
                on_batch(batch, codes)
    return deliveries, failed


def quiet_for(c, seconds, decide=accept_all):
    """Whatever `c` gets within `seconds` (acknowledged with decide)."""
    got, _ = poll_loop(c, lambda ds: False, seconds, decide)
    return got


def test_release_redelivers_and_reject_archives(kb, admin):
    topic = create_topic(admin, unique_topic("sh-rel"), partitions=1)
    group = unique_group("rel")
    earliest(admin, group)
    produce(kb.bootstrap, topic, [(0, b"r%d" % i) for i in range(10)])

    first_time = set()

    def decide(d):
        if d.offset in (3, 5) and d.offset not in first_time:
            first_time.add(d.offset)
            return RELEASE if d.offset == 3 else REJECT
        return ACCEPT

    c = ShareConsumer(share_conf(kb.bootstrap, group, "rel"))
    c2 = None
    try:
        c.subscribe([topic])
        want = set(range(10)) - {5}

        def done(ds):
            return {d.offset for d in ds if (d.offset, d.count) != (3, 1)} >= want

        got, failed = poll_loop(c, done, 30, decide)
        assert not failed, failed
        got += quiet_for(c, 2.0)
        by_offset = collections.defaultdict(list)
        for d in got:
            by_offset[d.offset].append(d.count)
        assert by_offset[3] == [1, 2], "released record: deliveries %s" % by_offset[3]
        assert by_offset[5] == [1], "rejected record: deliveries %s" % by_offset[5]
        for o in set(range(10)) - {3, 5}:
            assert by_offset[o] == [1], (o, by_offset[o])
        assert sorted(by_offset) == list(range(10))

        # A second member of the group gets nothing: 5 is archived, the rest accepted.
        c2 = ShareConsumer(share_conf(kb.bootstrap, group, "rel-2"))
        c2.subscribe([topic])
        assert quiet_for(c2, 3.0) == []
        assert quiet_for(c, 0.5) == []
        wait_until(lambda: offsets_now(kb, group).get((topic, 0)) == 10, 15,
                   lambda: "start offset past the rejected record: %s" % offsets_now(kb, group))
    finally:
        c.close()
        if c2 is not None:
            c2.close()


def test_released_record_may_go_to_another_member(kb, admin):
    """Member a releases its first batch and stops polling (it stays in the group); member
    b accepts: every record ends up accepted by b, a's releases with delivery count 2."""
    topic = create_topic(admin, unique_topic("sh-rel2"), partitions=1)
    group = unique_group("rel2")
    earliest(admin, group)
    produced = produce(kb.bootstrap, topic, [(0, b"x%d" % i) for i in range(200)])
    a = ShareMember(kb.bootstrap, group, [topic], "releaser", decide=lambda d: RELEASE,
                    max_records=1)
    b = None
    try:
        wait_until(lambda: len(a.got()) >= 1, 20, "the releasing member gets records")
        b = ShareMember(kb.bootstrap, group, [topic], "acceptor")
        want = {(topic, p, o) for p, o, _ in produced}
        wait_until(lambda: set(b.accepted()) == want, 60,
                   lambda: "b accepted %d of %d" % (len(b.accepted()), len(want)))
        released = {d.offset for d in a.got()}
        assert released, "a got nothing"
        for d in b.got():
            assert d.count == (2 if d.offset in released else 1), d
        assert len(b.got()) == len(want), "duplicates: %d deliveries" % len(b.got())
        assert_clean([a, b])
    finally:
        stop_all([m for m in (a, b) if m is not None])


# ==========================================================================
# 3. A member killed (kill -9) or stopped (SIGSTOP) while holding records
# ==========================================================================


def test_records_of_killed_member_are_redelivered(kb, admin):
    topic = create_topic(admin, unique_topic("sh-kill"), partitions=1)
    group = unique_group("kill")
    earliest(admin, group)
    produced = produce(kb.bootstrap, topic, [(0, b"k%d" % i) for i in range(100)])
    holder = Holder(kb.bootstrap, group, [topic], "holder-kill", max_poll_records=20)
    b = None
    try:
        held = holder.acquired()
        assert held and set(held.values()) == {1}, held
        holder.kill9()
        t_kill = time.monotonic()

        b = ShareMember(kb.bootstrap, group, [topic], "survivor")
        want = {(topic, p, o) for p, o, _ in produced}
        wait_until(lambda: set(b.accepted()) == want, LOCK_S + 40,
                   lambda: "survivor accepted %d of %d" % (len(b.accepted()), len(want)))
        got = {(d.topic, d.partition, d.offset): d for d in b.got()}
        for k in want:
            assert got[k].count == (2 if k in held else 1), (k, got[k], k in held)
        back = min(got[k].t for k in held) - t_kill
        # Kafka releases a session's records when its connection closes; at the latest
        # they come back when their lock runs out.
        assert back < LOCK_S + 15, "held records came back %.1fs after the kill" % back
        assert len(b.got()) == len(want), "duplicates: %d deliveries" % len(b.got())
        assert_clean([b])
    finally:
        holder.kill9()
        if b is not None:
            b.stop()


def test_lock_expires_under_stopped_member(kb, admin):
    """SIGSTOP keeps the member's connection open and silent: its records come back
    (delivery count 2) when their lock runs out (3 s), not before, and before its session
    times out (6 s) would have released them anyway."""
    topic = create_topic(admin, unique_topic("sh-stop"), partitions=1)
    group = unique_group("stop")
    earliest(admin, group)
    produced = produce(kb.bootstrap, topic, [(0, b"s%d" % i) for i in range(100)])
    holder = Holder(kb.bootstrap, group, [topic], "holder-stop", max_poll_records=20)
    b = None
    try:
        held = holder.acquired()
        t_acquired = holder.acquired_at
        holder.signal(signal.SIGSTOP)
        assert held and set(held.values()) == {1}, held

        b = ShareMember(kb.bootstrap, group, [topic], "waiter")
        want = {(topic, p, o) for p, o, _ in produced}
        wait_until(lambda: set(b.accepted()) == want, LOCK_S + 40,
                   lambda: "waiter accepted %d of %d" % (len(b.accepted()), len(want)))
        got = {(d.topic, d.partition, d.offset): d for d in b.got()}
        for k in want:
            assert got[k].count == (2 if k in held else 1), (k, got[k], k in held)
        back = min(got[k].t for k in held) - t_acquired
        assert back >= LOCK_S - 1.0, \
            "records held by a live (stopped) member came back %.1fs after it acquired " \
            "them, before their %d ms lock ran out" % (back, LOCK_MS)
        assert back < LOCK_S + 15, "held records came back only after %.1fs" % back
        assert len(b.got()) == len(want), "duplicates: %d deliveries" % len(b.got())
        assert_clean([b])
    finally:
        holder.kill9()
        if b is not None:
            b.stop()


def test_acknowledging_after_lock_expired_is_invalid_record_state(kb, admin):
    """The group's share.record.lock.duration.ms (1 s here, the broker default is 3 s)
    decides: a record acknowledged 2.2 s after it was acquired is INVALID_RECORD_STATE for
    its partition in commit_sync, and comes back with delivery count 2."""
    topic = create_topic(admin, unique_topic("sh-late"), partitions=1)
    group = unique_group("late")
    earliest(admin, group, share_record_lock_duration_ms=1000)
    produce(kb.bootstrap, topic, [(0, b"l%d" % i) for i in range(5)])
    c = ShareConsumer(share_conf(kb.bootstrap, group, "late"))
    try:
        c.subscribe([topic])
        first = []
        deadline = time.monotonic() + 30
        while not first and time.monotonic() < deadline:
            first = [m for m in c.poll(0.2)]
        assert first, "no records within 30 s"
        assert all(m.error() is None and m.delivery_count() == 1 for m in first)
        offsets = sorted(m.offset() for m in first)
        time.sleep(2.2)
        for m in first:
            c.acknowledge(m, ACCEPT)
        codes = commit_codes(c.commit_sync(15))
        assert codes == {(topic, 0): INVALID_RECORD_STATE}, codes

        # They come back (to this member, the only one) with delivery count 2.
        again = {}

        def until(ds):
            for d in ds:
                again.setdefault(d.offset, d.count)
            return set(offsets) <= set(again)
        _, failed = poll_loop(c, until, 20)
        assert not failed, failed
        assert {o: again[o] for o in offsets} == {o: 2 for o in offsets}, again
    finally:
        c.close()


# ==========================================================================
# 4. The delivery count limit archives a record
# ==========================================================================


def test_delivery_count_limit_archives_record(kb, admin):
    topic = create_topic(admin, unique_topic("sh-limit"), partitions=1)
    group = unique_group("limit")
    earliest(admin, group)
    produce(kb.bootstrap, topic, [(0, b"p%d" % i) for i in range(5)])
    c = ShareConsumer(share_conf(kb.bootstrap, group, "limit"))
    try:
        c.subscribe([topic])

        def decide(d):
            return RELEASE if d.offset == 0 else ACCEPT

        def done(ds):
            return ({d.offset for d in ds} >= set(range(5))
                    and [d.count for d in ds if d.offset == 0] == list(
                        range(1, DELIVERY_LIMIT + 1)))

        got, failed = poll_loop(c, done, 30, decide)
        assert not failed, failed
        got += quiet_for(c, 2.0, decide)
        poison = [d.count for d in got if d.offset == 0]
        assert poison == list(range(1, DELIVERY_LIMIT + 1)), \
            "a record released at every delivery: delivered with counts %s (limit %d)" % (
                poison, DELIVERY_LIMIT)
        assert sorted(d.offset for d in got if d.offset) == [1, 2, 3, 4]

        # Later records still flow, once each.
        produce(kb.bootstrap, topic, [(0, b"q%d" % i) for i in range(5)])
        later, failed = poll_loop(c, lambda ds: {d.offset for d in ds} >= set(range(5, 10)), 20)
        assert not failed, failed
        later += quiet_for(c, 1.0)
        assert sorted((d.offset, d.count) for d in later) == [(o, 1) for o in range(5, 10)]
        wait_until(lambda: offsets_now(kb, group).get((topic, 0)) == 10, 15,
                   lambda: "start offset past the archived record: %s" % offsets_now(kb, group))
    finally:
        c.close()


# ==========================================================================
# 5. Share state across a broker restart (SIGTERM, then kill -9)
# ==========================================================================


def accept_some(bootstrap, group, topic, at_least, timeout=60):
    """One member accepts whole batches until at least `at_least` records; closes.
    -> (deliveries, {(topic, partition, offset): accept time})."""
    c = ShareConsumer(share_conf(bootstrap, group, "some", max_poll_records=100))
    acc = {}

    def on_batch(batch, codes):
        now = time.monotonic()
        for d in batch:
            if codes.get((d.topic, d.partition)) == 0:
                acc[(d.topic, d.partition, d.offset)] = now
    try:
        c.subscribe([topic])
        got, failed = poll_loop(c, lambda ds: len(acc) >= at_least, timeout,
                                on_batch=on_batch)
        assert not failed, failed
    finally:
        c.close()
    return got, acc


def test_share_state_survives_restart(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("sh-restart"), partitions=2)
    group = unique_group("restart")
    earliest(admin, group)
    produced = produce(b.bootstrap, topic, [(i % 2, b"%d" % i) for i in range(2000)])
    want = {(topic, p, o) for p, o, _ in produced}

    for phase, hard in (("graceful", False), ("kill -9", True)):
        _, acc1 = accept_some(b.bootstrap, group, topic, len(want) // 2)
        assert len(acc1) >= len(want) // 2
        assert len(acc1) < len(want), \
            "%s: all %d records accepted before the restart (the broker returned far more " \
            "than max.poll.records=100 per ShareFetch)" % (phase, len(want))
        b.restart(hard=hard)

        m = ShareMember(b.bootstrap, group, [topic], "after-" + phase.replace(" ", ""))
        try:
            rest = want - set(acc1)
            wait_until(lambda: set(m.accepted()) >= rest, 60,
                       lambda: "%s: %d of the other %d accepted after the restart" % (
                           phase, len(set(m.accepted()) & rest), len(rest)))
            time.sleep(1.5)
            again = [d for d in m.got() if (d.topic, d.partition, d.offset) in acc1]
            assert not again, "%s: records accepted before the restart delivered again: %s" % (
                phase, again[:10])
            assert set(acc1) | set(m.accepted()) == want, "%s: records lost" % phase
            assert_clean([m])
        finally:
            m.stop()
        end = {(topic, p): max(o for t, p_, o in want if p_ == p) + 1 for p in range(2)}
        wait_until(lambda: offsets_now(b, group) == end, 15,
                   lambda: "%s: start offsets %s: %s" % (phase, end, offsets_now(b, group)))
        # Next phase: half of a fresh set of records.
        more = produce(b.bootstrap, topic, [(i % 2, b"m%d" % i) for i in range(2000)])
        want = {(topic, p, o) for p, o, _ in more}


# ==========================================================================
# 6. Group configs: share.auto.offset.reset, heartbeat / session, isolation level
# ==========================================================================


def test_share_auto_offset_reset(kb, admin):
    topic = create_topic(admin, unique_topic("sh-reset"), partitions=1)
    now_ms = int(time.time() * 1000)
    # Five records two hours old, five recent (in batches of their own).
    produce(kb.bootstrap, topic, [(0, b"old%d" % i, now_ms - 7200 * 1000) for i in range(5)])
    produce(kb.bootstrap, topic, [(0, b"new%d" % i, now_ms) for i in range(5)])
    g_latest, g_earliest, g_duration = (unique_group("latest"), unique_group("earliest"),
                                        unique_group("duration"))
    set_group_configs(admin, g_earliest, {"share.auto.offset.reset": "earliest"})
    set_group_configs(admin, g_duration, {"share.auto.offset.reset": "by_duration:PT1H"})
    for g, v in ((g_earliest, "earliest"), (g_duration, "by_duration:PT1H"),
                 (g_latest, "latest")):
        assert group_configs(admin, g)["share.auto.offset.reset"][0] == v

    members = []
    try:
        # latest (the default): the share-partition starts at the end on the first fetch.
        latest = ShareMember(kb.bootstrap, g_latest, [topic], "latest")
        members.append(latest)
        wait_until(lambda: offsets_now(kb, g_latest).get((topic, 0)) == 10, 30,
                   lambda: "latest group's start offset initialised at 10: %s" % (
                       offsets_now(kb, g_latest),))
        early = ShareMember(kb.bootstrap, g_earliest, [topic], "earliest", mode="implicit")
        dur = ShareMember(kb.bootstrap, g_duration, [topic], "duration")
        members += [early, dur]
        wait_until(lambda: len(early.got()) >= 10 and len(dur.got()) >= 5, 30,
                   lambda: "earliest got %d, by_duration got %d" % (len(early.got()),
                                                                    len(dur.got())))
        produce(kb.bootstrap, topic, [(0, b"after%d" % i) for i in range(3)])
        wait_until(lambda: len(latest.accepted()) >= 3 and len(early.accepted()) >= 13
                   and len(dur.accepted()) >= 8, 30,
                   lambda: "accepted: latest %d/3, earliest %d/13, by_duration %d/8" % (
                       len(latest.accepted()), len(early.accepted()), len(dur.accepted())))
        time.sleep(1.0)
        assert sorted(d.offset for d in latest.got()) == [10, 11, 12]
        assert sorted(d.offset for d in early.got()) == list(range(13))
        assert sorted(d.offset for d in dur.got()) == list(range(5, 13))
        assert_clean(members)

        # Implicit mode: what the earliest member got is accepted (on its commits and on
        # close), so another member of that group gets nothing.
        early.stop()
        again = ShareMember(kb.bootstrap, g_earliest, [topic], "earliest-2", mode="implicit")
        members.append(again)
        time.sleep(3.0)
        assert again.got() == [], "accepted records delivered again: %s" % again.got()[:5]
        assert start_offsets(kb, g_earliest)[(topic, 0)] == 13
    finally:
        stop_all(members)

    # The override is the group's own (GROUP_CONFIG source), the others are defaults.
    cfg = group_configs(admin, g_earliest)
    assert cfg["share.auto.offset.reset"] == ("earliest", GROUP_CONFIG), cfg
    assert cfg["share.record.lock.duration.ms"][1] != GROUP_CONFIG


def test_group_heartbeat_and_session_configs(kb, admin):
    """share.heartbeat.interval.ms is what ShareGroupHeartbeat tells the member;
    share.session.timeout.ms is when a silent member is removed."""
    topic = create_topic(admin, unique_topic("sh-hb"), partitions=1)
    g_default, g_custom = unique_group("hb-def"), unique_group("hb-own")
    set_group_configs(admin, g_custom, {"share.heartbeat.interval.ms": "700",
                                        "share.session.timeout.ms": "2000"})
    a = RawShareMember(kb.bootstrap, g_default, [topic])
    b = RawShareMember(kb.bootstrap, g_custom, [topic])
    try:
        r = a.join()
        assert r["error_code"] == NONE and r["heartbeat_interval_ms"] == HEARTBEAT_MS, r
        r = b.join()
        assert r["error_code"] == NONE and r["heartbeat_interval_ms"] == 700, r
        t_silent = time.monotonic()

        def b_gone():
            assert a.beat()["error_code"] == NONE   # a keeps heartbeating meanwhile
            return not describe_group(kb, g_custom)["members"]
        # b stays silent: removed after about 2 s (the group's), not 6 s (the broker's).
        wait_until(b_gone, 10, lambda: "silent member removed: %s" % describe_group(
            kb, g_custom), interval=0.2)
        took = time.monotonic() - t_silent
        assert 1.0 <= took <= 5.0, "silent member removed after %.1fs (session 2 s)" % took
        r = b.beat()
        assert r["error_code"] == UNKNOWN_MEMBER_ID, r
        r = a.beat()
        assert r["error_code"] == NONE, r
        assert [m["member_id"] for m in describe_group(kb, g_default)["members"]] == [a.member_id]
        r = a.leave()
        assert r["error_code"] == NONE and r["member_epoch"] == -1, r
    finally:
        a.close()
        b.close()


def test_share_isolation_level(kb, admin):
    """read_committed: records of an aborted transaction are never delivered; read_uncommitted
    (the default) delivers them. Neither group ever gets a control record, and both
    share-partitions end past every offset (the markers included)."""
    topic = create_topic(admin, unique_topic("sh-iso"), partitions=1)
    g_rc, g_ru = unique_group("iso-rc"), unique_group("iso-ru")
    earliest(admin, g_rc, share_isolation_level="read_committed")
    earliest(admin, g_ru)
    p = Producer({"bootstrap.servers": kb.bootstrap, "transactional.id": unique_group("txn"),
                  "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"committed-%d" % i, partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"aborted-%d" % i, partition=0)
    p.flush(30)
    p.abort_transaction(30)
    produce(kb.bootstrap, topic, [(0, b"plain")])
    # committed 0-2, marker 3, aborted 4-6, marker 7, plain 8
    end = 9

    rc = ShareMember(kb.bootstrap, g_rc, [topic], "rc")
    ru = ShareMember(kb.bootstrap, g_ru, [topic], "ru")
    try:
        wait_until(lambda: len(rc.accepted()) >= 4 and len(ru.accepted()) >= 7, 30,
                   lambda: "read_committed accepted %d/4, read_uncommitted %d/7" % (
                       len(rc.accepted()), len(ru.accepted())))
        time.sleep(1.0)
        assert sorted(d.value for d in rc.got()) == [b"committed-0", b"committed-1",
                                                     b"committed-2", b"plain"]
        assert sorted(d.value for d in ru.got()) == sorted(
            [b"committed-%d" % i for i in range(3)] + [b"aborted-%d" % i for i in range(3)]
            + [b"plain"])
        assert not {3, 7} & {d.offset for d in rc.got() + ru.got()}
        for g in (g_rc, g_ru):
            wait_until(lambda g=g: offsets_now(kb, g).get((topic, 0)) == end, 15,
                       lambda g=g: "%s start offset %d: %s" % (g, end, offsets_now(kb, g)))
        assert_clean([rc, ru])
    finally:
        stop_all([rc, ru])


# ==========================================================================
# 7. A share group beside a classic and a consumer-protocol group
# ==========================================================================


def read_with_group(bootstrap, group, topic, n, protocol, timeout=60):
    """A subscribe() consumer of `protocol` reads n records, commits, closes.
    -> [(partition, offset)]."""
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    if protocol == "classic":
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c = Consumer(conf)
    out = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.2):
                assert m.error() is None or m.error().code() == KafkaError._PARTITION_EOF, \
                    m.error()
                if m.error() is None:
                    out.append((m.partition(), m.offset()))
        c.commit(asynchronous=False)
    finally:
        c.close()
    return out


def test_share_group_beside_classic_and_consumer_groups(kb, admin):
    topic = create_topic(admin, unique_topic("sh-beside"), partitions=3)
    g_share, g_classic, g_consumer = (unique_group("b-share"), unique_group("b-classic"),
                                      unique_group("b-consumer"))
    earliest(admin, g_share)
    produced = produce(kb.bootstrap, topic, [(i % 3, b"%d" % i) for i in range(300)])
    want = {(p, o) for p, o, _ in produced}
    members = [ShareMember(kb.bootstrap, g_share, [topic], "beside-%d" % i) for i in range(2)]
    try:
        results = {}
        threads = [threading.Thread(target=lambda g=g, proto=proto: results.__setitem__(
            proto, read_with_group(kb.bootstrap, g, topic, 300, proto)), daemon=True)
            for g, proto in ((g_classic, "classic"), (g_consumer, "consumer"))]
        for t in threads:
            t.start()
        wait_until(lambda: len(all_accepted(members)) >= 300, 60,
                   lambda: "share group accepted %d/300" % len(all_accepted(members)))
        for t in threads:
            t.join(70)
        for proto in ("classic", "consumer"):
            got = results.get(proto)
            assert got is not None, "%s group reader did not finish" % proto
            assert sorted(got) == sorted(want), "%s group read %d records" % (proto, len(got))
        assert {(p, o) for (_, p, o) in all_accepted(members)} == want
        seen = collections.Counter((d.partition, d.offset) for m in members for d in m.got())
        assert max(seen.values()) == 1
        assert_clean(members)

        # Each group's own progress: committed offsets vs share-partition start offsets.
        for g in (g_classic, g_consumer):
            res = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], request_timeout=10)[g].result(timeout=15)
            assert {(tp.partition, tp.offset) for tp in res.topic_partitions} == \
                {(p, 100) for p in range(3)}, res.topic_partitions
        wait_until(lambda: offsets_now(kb, g_share) == {(topic, p): 100 for p in range(3)},
                   15, lambda: "share start offsets: %s" % offsets_now(kb, g_share))
        with raw(kb) as conn:
            err, groups = list_groups_v5(conn)
        assert err == NONE
        assert groups[g_share][1:] == ("Stable", "share"), groups[g_share]
        assert groups[g_classic][2] == "classic" and groups[g_consumer][2] == "consumer"
    finally:
        stop_all(members)


# ==========================================================================
# 8. Admin views: ListGroups, ShareGroupDescribe, share group offsets
# ==========================================================================


def test_list_and_describe_share_groups(kb, admin):
    topic = create_topic(admin, unique_topic("sh-adm"), partitions=4)
    group, classic = unique_group("adm"), unique_group("adm-classic")
    # A classic group (Empty, committed offsets only) beside it.
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        classic, [TopicPartition(topic, 0, 1)])], request_timeout=10)[classic].result(timeout=15)
    tid = topic_id_bytes(admin, topic)
    members = [ShareMember(kb.bootstrap, group, [topic], "adm-%d" % i) for i in range(2)]
    try:
        g = wait_members(kb, group, 2, topic, 4)
        assert g["group_id"] == group and g["error_code"] == NONE
        assert g["group_epoch"] >= 1 and g["assignment_epoch"] >= 1, g
        assert g["assignor_name"], g
        assert sorted(m["client_id"] for m in g["members"]) == ["adm-0", "adm-1"]
        for m in g["members"]:
            assert m["member_id"] and m["client_host"], m
            assert m["member_epoch"] >= 1, m
            assert m["subscribed_topic_names"] == [topic], m
            assert m["assignment"] <= {(topic, p) for p in range(4)}, m
            assert m["topic_ids"] == {topic: tid}, m

        with raw(kb) as conn:
            # ListGroups: type and protocol type "share", state Stable; the filters.
            err, groups = list_groups_v5(conn)
            assert err == NONE and groups.get(group) == ("share", "Stable", "share"), \
                groups.get(group)
            assert groups.get(classic, (None, None, None))[2] == "classic"
            err, only_share = list_groups_v5(conn, types=["share"])
            assert err == NONE and group in only_share and classic not in only_share
            assert all(t == "share" for _, _, t in only_share.values()), only_share
            err, only_classic = list_groups_v5(conn, types=["classic"])
            assert err == NONE and classic in only_classic and group not in only_classic
            err, empty_share = list_groups_v5(conn, states=["Empty"], types=["share"])
            assert err == NONE and group not in empty_share
            # ShareGroupDescribe: unknown groups and groups of another type.
            nosuch = unique_group("nosuch")
            d = share_group_describe(conn, [nosuch, classic, group])
            assert [d[x]["error_code"] for x in (nosuch, classic, group)] == [
                GROUP_ID_NOT_FOUND, GROUP_ID_NOT_FOUND, NONE], d
            # DescribeGroups (classic view): a share group is GROUP_ID_NOT_FOUND,
            # as Kafka 4 answers; the classic group is described.
            r = conn.request(kw.API_DESCRIBE_GROUPS, 0, kw.array(
                [kw.string(group), kw.string(classic)]))
            described = {}
            for _ in range(r.i32()):
                code, gid, state = r.i16(), r.string(), r.string()
                r.string()
                r.string()
                for _ in range(r.i32()):
                    r.string()
                    r.string()
                    r.string()
                    r._take(r.i32())
                    r._take(r.i32())
                described[gid] = (code, state)
            assert described[group] == (GROUP_ID_NOT_FOUND, "Dead"), described
            assert described[classic][0] == NONE, described
        # librdkafka's ListConsumerGroups keeps protocol types "consumer" and "" only.
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        ids = {x.group_id for x in listed.valid}
        assert classic in ids and group not in ids, sorted(ids)

        stop_all(members)
        wait_until(lambda: describe_group(kb, group)["group_state"] == "Empty", 20,
                   lambda: "group Empty after its members closed: %s" % describe_group(kb, group))
        g = describe_group(kb, group)
        assert g["members"] == [] and g["error_code"] == NONE
        with raw(kb) as conn:
            err, groups = list_groups_v5(conn, states=["Empty"], types=["share"])
            assert groups.get(group) == ("share", "Empty", "share"), groups.get(group)
    finally:
        stop_all(members)


def test_share_group_offsets_describe_alter_delete(kb, admin):
    topic = create_topic(admin, unique_topic("sh-offs"), partitions=4)
    group = unique_group("offs")
    earliest(admin, group)
    produced = produce(kb.bootstrap, topic, [(i % 4, b"%d" % i) for i in range(40)])
    want = {(topic, p, o) for p, o, _ in produced}

    with raw(kb) as conn:
        # Unknown group: GROUP_ID_NOT_FOUND for the group.
        nosuch = unique_group("nosuch")
        d = describe_share_group_offsets(conn, {nosuch: None})
        assert d[nosuch]["error_code"] == GROUP_ID_NOT_FOUND, d

    members = [ShareMember(kb.bootstrap, group, [topic], "offs-%d" % i) for i in range(2)]
    try:
        wait_until(lambda: set(all_accepted(members)) == want, 30,
                   lambda: "accepted %d/40" % len(all_accepted(members)))
        wait_until(lambda: offsets_now(kb, group) == {(topic, p): 10 for p in range(4)}, 15,
                   lambda: "start offsets 10: %s" % offsets_now(kb, group))
        assert start_offsets(kb, group, {topic: [1, 3]}) == {(topic, 1): 10, (topic, 3): 10}

        # Alter / delete need an empty group.
        with raw(kb) as conn:
            top, errs = alter_share_group_offsets(conn, group, {topic: {0: 0}})
            assert top == NON_EMPTY_GROUP or set(errs.values()) == {NON_EMPTY_GROUP}, (top, errs)
            top, errs = delete_share_group_offsets(conn, group, [topic])
            assert top == NON_EMPTY_GROUP or set(errs.values()) == {NON_EMPTY_GROUP}, (top, errs)
        assert start_offsets(kb, group) == {(topic, p): 10 for p in range(4)}
        assert_clean(members)
    finally:
        stop_all(members)
    wait_until(lambda: describe_group(kb, group)["group_state"] == "Empty", 20,
               lambda: "group Empty: %s" % describe_group(kb, group))

    # Alter: partition 0 back to 4, partition 1 back to 0; 2 and 3 untouched.
    with raw(kb) as conn:
        top, errs = alter_share_group_offsets(conn, group, {topic: {0: 4, 1: 0}})
    assert top == NONE and errs == {(topic, 0): NONE, (topic, 1): NONE}, (top, errs)
    assert start_offsets(kb, group) == {(topic, 0): 4, (topic, 1): 0, (topic, 2): 10,
                                        (topic, 3): 10}
    m = ShareMember(kb.bootstrap, group, [topic], "offs-after-alter")
    try:
        wait_until(lambda: len(m.accepted()) >= 16, 30,
                   lambda: "after the alter: accepted %d/16" % len(m.accepted()))
        time.sleep(1.0)
        assert sorted((d.partition, d.offset, d.count) for d in m.got()) == \
            [(0, o, 1) for o in range(4, 10)] + [(1, o, 1) for o in range(10)]
        assert_clean([m])
    finally:
        m.stop()
    wait_until(lambda: describe_group(kb, group)["group_state"] == "Empty", 20,
               lambda: "group Empty: %s" % describe_group(kb, group))

    # Delete: the topic's share-partitions are forgotten; the next fetch initialises them
    # again from share.auto.offset.reset (earliest): every record once more, count 1.
    with raw(kb) as conn:
        top, errs = delete_share_group_offsets(conn, group, [topic])
    assert top == NONE and errs == {topic: NONE}, (top, errs)
    # (Kafka keeps the Empty group and describes no offsets for the topic; Runnel forgets a
    # member-less share group with no share state left: GROUP_ID_NOT_FOUND. Either will do.)
    left = {k: v for k, v in offsets_now(kb, group).items() if v >= 0}
    assert not left, "start offsets after the delete: %s" % left
    m = ShareMember(kb.bootstrap, group, [topic], "offs-after-delete")
    try:
        wait_until(lambda: set(m.accepted()) == want, 30,
                   lambda: "after the delete: accepted %d/40" % len(m.accepted()))
        time.sleep(1.0)
        assert sorted(d.count for d in m.got()) == [1] * 40
        assert_clean([m])
    finally:
        m.stop()


# ==========================================================================
# 9. Bad input over the wire
# ==========================================================================


def test_api_versions_advertise_share_apis(kb):
    with raw(kb) as conn:
        err, apis, _ = kw.parse_api_versions_v3(
            conn.request(kw.API_API_VERSIONS, 3, kw.api_versions_v3_body(), flexible=True))
    assert err == NONE
    for key, version in ((API_SHARE_GROUP_HEARTBEAT, 1), (API_SHARE_GROUP_DESCRIBE, 1),
                         (API_SHARE_FETCH, 1), (API_SHARE_ACKNOWLEDGE, 1),
                         (API_DESCRIBE_SHARE_GROUP_OFFSETS, 0), (API_ALTER_SHARE_GROUP_OFFSETS, 0),
                         (API_DELETE_SHARE_GROUP_OFFSETS, 0)):
        assert key in apis and apis[key][0] <= version <= apis[key][1], (key, apis.get(key))


def test_bad_share_group_heartbeats(kb, admin):
    topic = create_topic(admin, unique_topic("sh-badhb"), partitions=2)
    tid = topic_id_bytes(admin, topic)
    group = unique_group("badhb")
    raw_m = RawShareMember(kb.bootstrap, group, [topic])
    cg_conn = None
    try:
        r = raw_m.join()
        assert r["error_code"] == NONE, r
        assert r["member_id"] == raw_m.member_id, r
        assert r["member_epoch"] >= 1 and r["heartbeat_interval_ms"] == HEARTBEAT_MS, r
        raw_m.wait_assigned(tid, [0, 1])

        with raw(kb) as conn:
            def hb(g, member_id, epoch, topics=None):
                return share_group_heartbeat(conn, g, member_id, epoch, topics)

            # The member with a wrong epoch -> FENCED_MEMBER_EPOCH
            r = hb(group, raw_m.member_id, raw_m.epoch + 10)
            assert r["error_code"] == FENCED_MEMBER_EPOCH, r
            # Unknown member, epoch != 0 -> UNKNOWN_MEMBER_ID
            r = hb(group, "nobody-" + uuid.uuid4().hex, 3)
            assert r["error_code"] == UNKNOWN_MEMBER_ID, r
            # No member id (v1: the client names itself) -> INVALID_REQUEST
            r = hb(group, "", 0, [topic])
            assert r["error_code"] == INVALID_REQUEST, r

            # A classic group's id (Empty, offsets only) -> GROUP_ID_NOT_FOUND
            classic = unique_group("badhb-classic")
            admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
                classic, [TopicPartition(topic, 0, 1)])], request_timeout=10)[classic].result(
                    timeout=15)
            r = hb(classic, "m-" + uuid.uuid4().hex, 0, [topic])
            assert r["error_code"] == GROUP_ID_NOT_FOUND, r
            # A consumer-protocol group's id (with a member) -> GROUP_ID_NOT_FOUND
            cg = unique_group("badhb-consumer")
            cg_conn = kw.KafkaConn.to(kb.bootstrap)
            cg_member = "cg-" + uuid.uuid4().hex
            c = kw.consumer_group_heartbeat(cg_conn, cg, cg_member, 0, rebalance_timeout_ms=30000,
                                            subscribed_topic_names=[topic], topic_partitions=[])
            assert c["error_code"] == NONE, c
            r = hb(cg, "m-" + uuid.uuid4().hex, 0, [topic])
            assert r["error_code"] == GROUP_ID_NOT_FOUND, r
            # ... and the other way round: a ConsumerGroupHeartbeat or a classic JoinGroup
            # into the share group is refused, the share group untouched.
            c = kw.consumer_group_heartbeat(conn, group, "m-" + uuid.uuid4().hex, 0,
                                            rebalance_timeout_ms=30000,
                                            subscribed_topic_names=[topic], topic_partitions=[])
            assert c["error_code"] == GROUP_ID_NOT_FOUND, c
            body = kw.join_group_v5_body(group, "", protocols=[
                ("range", kw.consumer_subscription_v0([topic]))])
            j = kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, body))
            assert j["error_code"] in (INCONSISTENT_GROUP_PROTOCOL, GROUP_ID_NOT_FOUND), j

        # None of that disturbed the member.
        r = raw_m.beat()
        assert r["error_code"] == NONE, r
        g = describe_group(kb, group)
        assert [m["member_id"] for m in g["members"]] == [raw_m.member_id], g
        assert g["members"][0]["assignment"] == {(topic, 0), (topic, 1)}, g
        r = raw_m.leave()
        assert r["error_code"] == NONE and r["member_epoch"] == -1, r
        wait_until(lambda: describe_group(kb, group)["group_state"] == "Empty", 10,
                   "group empty after the raw member left")
        r = raw_m.heartbeat(5)
        assert r["error_code"] == UNKNOWN_MEMBER_ID, r
        kw.consumer_group_heartbeat(cg_conn, cg, cg_member, -1)
    finally:
        raw_m.close()
        if cg_conn is not None:
            cg_conn.close()
    assert_share_healthy(kb, admin)


def test_share_fetch_and_acknowledge_by_hand(kb, admin):
    topic = create_topic(admin, unique_topic("sh-rawfetch"), partitions=2)
    tid = topic_id_bytes(admin, topic)
    group = unique_group("rawfetch")
    earliest(admin, group)
    produce(kb.bootstrap, topic, [(0, b"f%d" % i) for i in range(10)])
    tp0, tp1 = (tid, 0), (tid, 1)
    m = RawShareMember(kb.bootstrap, group, [topic])
    try:
        r = m.join()
        assert r["error_code"] == NONE, r
        m.wait_assigned(tid, [0, 1])

        # Session errors before any session exists.
        r = m.fetch([tp0, tp1], epoch=7)
        assert r["error_code"] == SHARE_SESSION_NOT_FOUND, r
        r = m.acknowledge({tp0: [(0, 0, [ACCEPT])]}, epoch=0)
        assert r["error_code"] == INVALID_SHARE_SESSION_EPOCH, r
        r = m.fetch([tp0, tp1], acks={tp0: [(0, 0, [ACCEPT])]}, epoch=0)
        assert r["error_code"] == INVALID_REQUEST, r

        # Epoch 0 opens the session; fetch until all ten are acquired.
        acquired = {}
        deadline = time.monotonic() + 15
        first = True
        while len(acquired) < 10 and time.monotonic() < deadline:
            if not first:
                assert m.beat()["error_code"] == NONE
            r = m.fetch([tp0, tp1] if first else [])
            assert r["error_code"] == NONE, r
            if first:
                assert r["acquisition_lock_timeout_ms"] == LOCK_MS, r
                first = False
            p0 = r["partitions"].get(tp0)
            if p0 is None:
                continue
            assert p0["error_code"] == NONE, p0
            ranges = batch_ranges(p0["records"] or b"")
            for a, b_, dc in p0["acquired"]:
                assert dc == 1, p0["acquired"]
                for o in range(a, b_ + 1):
                    assert any(lo <= o <= hi and not ctl for lo, hi, ctl in ranges), \
                        "acquired offset %d not in the records returned (%s)" % (o, ranges)
                    acquired[o] = dc
        assert sorted(acquired) == list(range(10)), acquired
        assert m.beat()["error_code"] == NONE

        # A wrong epoch is refused and leaves the session as it was.
        r = m.fetch([], epoch=m.session_epoch + 5)
        assert r["error_code"] == INVALID_SHARE_SESSION_EPOCH, r
        r = m.acknowledge({tp0: [(0, 0, [ACCEPT])]}, epoch=m.session_epoch + 5)
        assert r["error_code"] == INVALID_SHARE_SESSION_EPOCH, r

        # Offsets this member never acquired (past the log end) -> INVALID_RECORD_STATE for
        # the partition (Kafka may say INVALID_REQUEST for offsets past its in-flight window).
        r = m.acknowledge({tp0: [(100, 101, [ACCEPT])]})
        assert r["error_code"] == NONE and r["partitions"][tp0] in (
            INVALID_RECORD_STATE, INVALID_REQUEST) and len(r["partitions"]) == 1, r
        # ACCEPT 0-3, RELEASE 4, REJECT 5, and one batch with a type per offset (6-7).
        r = m.acknowledge({tp0: [(0, 3, [ACCEPT]), (4, 4, [RELEASE]), (5, 5, [REJECT]),
                                 (6, 7, [ACCEPT, ACCEPT])]})
        assert r["error_code"] == NONE and r["partitions"] == {tp0: NONE}, r
        # An accepted record cannot be acknowledged again.
        r = m.acknowledge({tp0: [(2, 2, [REJECT])]})
        assert r["error_code"] == NONE and r["partitions"] == {tp0: INVALID_RECORD_STATE}, r

        # The released record comes back (count 2) in a fetch that also acknowledges 8-9.
        got4 = None
        deadline = time.monotonic() + 10
        acks = {tp0: [(8, 9, [ACCEPT])]}
        while got4 is None and time.monotonic() < deadline:
            assert m.beat()["error_code"] == NONE
            r = m.fetch([], acks=acks)
            assert r["error_code"] == NONE, r
            p0 = r["partitions"].get(tp0)
            if acks:
                assert p0 is not None and p0["acknowledge_error_code"] == NONE, r
                acks = None
            if p0 is not None and p0["acquired"]:
                assert p0["acquired"] == [(4, 4, 2)], p0["acquired"]
                got4 = p0["acquired"]
        assert got4, "the released record did not come back"
        assert m.beat()["error_code"] == NONE

        # Closing the session (epoch -1) with the last acknowledgement; the old epoch is gone.
        old = m.session_epoch
        r = m.acknowledge({tp0: [(4, 4, [ACCEPT])]}, epoch=-1)
        assert r["error_code"] == NONE and r["partitions"] == {tp0: NONE}, r
        r = m.fetch([], epoch=old)
        assert r["error_code"] == SHARE_SESSION_NOT_FOUND, r
        wait_until(lambda: offsets_now(kb, group).get((topic, 0)) == 10, 15,
                   lambda: "start offset 10: %s" % offsets_now(kb, group))
        r = m.leave()
        assert r["error_code"] == NONE, r
    finally:
        m.close()
    assert_share_healthy(kb, admin)


def test_share_state_requests_from_a_client_are_refused(kb, admin):
    """WriteShareGroupState (85) is for brokers talking to share coordinators.
    Sent to a standalone broker — with a state window no broker would keep —
    it is refused (NOT_COORDINATOR), nothing is allocated or written, and the
    broker goes on serving share consumers."""
    not_coordinator = 16
    assert KafkaError.NOT_COORDINATOR == not_coordinator
    topic = create_topic(admin, unique_topic("sh-state"), partitions=1)
    tid = topic_id_bytes(admin, topic)
    batch = kw.i64(0) + kw.i64(2**63 - 1) + kw.i8(2) + kw.i16(1) + T
    partition = kw.i32(0) + kw.i32(0) + kw.i32(-1) + kw.i64(0) + _carr([batch]) + T
    body = (kw.compact_string("sh-state-group") + _carr([tid + _carr([partition]) + T]) + T)
    with raw(kb) as conn:
        r = conn.request(85, 0, body, flexible=True)
        r.skip_tagged_fields()

        def part(rr):
            p, code = rr.i32(), rr.i16()
            rr.compact_string()
            rr.skip_tagged_fields()
            return p, code

        def result(rr):
            _uuid(rr)
            parts = rr.compact_array(part)
            rr.skip_tagged_fields()
            return parts

        results = r.compact_array(result)
        _done(r, "WriteShareGroupState")
        assert results == [[(0, not_coordinator)]], results
    assert_share_healthy(kb, admin)


def test_share_fetch_is_held_to_the_fetch_quota(kb, admin):
    """consumer_byte_rate applies to ShareFetch: the records acquired go out,
    and the response tells an over-quota client how long to wait."""
    from test_client_quotas import alter
    client = "share-quota-" + uuid.uuid4().hex[:8]
    entity = [("client-id", client)]
    assert alter(kb, [(entity, [("consumer_byte_rate", 1024.0, False)])]) == [(0, None)]
    topic = create_topic(admin, unique_topic("sh-quota"), partitions=1)
    tid = topic_id_bytes(admin, topic)
    group = unique_group("quota")
    earliest(admin, group)
    produce(kb.bootstrap, topic, [(0, b"q" * 1000) for _ in range(40)])
    m = RawShareMember(kb.bootstrap, group, [topic])
    try:
        assert m.join()["error_code"] == NONE
        m.wait_assigned(tid, [0])
        r = m.fetch([(tid, 0)], client_id=client)
        assert r["error_code"] == NONE, r
        got = r["partitions"][(tid, 0)]
        assert got["acquired"] and got["records"], got
        assert r["throttle_time_ms"] > 0, r
    finally:
        m.close()
        alter(kb, [(entity, [("consumer_byte_rate", 0.0, True)])])
