"""Consumer groups and producer ids in cluster mode (brokers + etcd): what
clients can rely on when group coordinators live on different brokers.

- Committed offsets are records in the replicated internal topic
  __consumer_offsets (created on the first FindCoordinator for a group; here
  offsets.topic.num.partitions=6, RF 3). A group's coordinator is the leader
  of partition (javaHashCode(group) & 0x7fffffff) % 6; every broker's
  FindCoordinator names it, the others answer group requests (OffsetCommit,
  OffsetFetch, JoinGroup, Heartbeat) with NOT_COORDINATOR (16).
- Coordinator failover under load: three confluent-kafka members (classic
  protocol, synchronous manual commits every ~200 messages) read 30,000
  numbered messages of a 6-partition RF 3 topic; the coordinator is killed
  (kill -9) after about a third. The members finish; every message is read at
  least once, and no partition is ever restarted from before a commit the
  client saw acknowledged (duplicates only from uncommitted progress). The
  final committed offsets read the same through every surviving broker.
- Producer ids: 10,000 InitProducerId (raw, no transactional id) over the
  three brokers, concurrently, never repeat an id (blocks from etcd), nor
  after a broker is killed and restarted.
- ListGroups / DescribeGroups / OffsetFetch through the AdminClient give the
  same answers whichever broker it is bootstrapped to; a raw ListGroups to a
  broker lists exactly the groups it coordinates.
- DeleteGroups writes tombstones: a deleted group stays deleted after the
  coordinator is killed and another broker loads the partition (while a
  group sharing that partition keeps its offsets, and no broker answers
  OffsetFetch before it has loaded them).
- Committed offsets (with their metadata) survive a SIGTERM of every broker
  and a restart of all of them.
- Static membership (group.instance.id, range assignor): when the coordinator
  of a stable group of three static members is killed, the group is STABLE
  again on a survivor within 40 s with the same members, each instance id
  holding exactly the partitions it held before (never another one in
  between); records produced after the kill are all read by their
  partition's owner, and commits succeed again.

Each test runs its own loopback cluster (cluster_harness.Cluster) on the
module's etcd, with broker.session.timeout.ms=3000. Measured times are
printed (pytest -s shows them).
"""

import collections
import threading
import time
import uuid

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, ConsumerGroupTopicPartitions,
                             ElectionType, KafkaError, KafkaException, Producer, TopicPartition)

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from cluster_helpers import admin, create, full_isr, parts, produce_all, wait_parts
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240)]

COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
MEMBER_ID_REQUIRED = 79
API_INIT_PRODUCER_ID = 22

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 6
GROUP_CLUSTER = {
    "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
    "group.initial.rebalance.delay.ms": "500",
    "replica.lag.time.max.ms": "3000",
}


# --------------------------------------------------------------------------
# Where a group lives
# --------------------------------------------------------------------------


def java_hash(s):
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    data = s.encode("utf-16-be")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group, partitions=OFFSETS_PARTITIONS):
    return (java_hash(group) & 0x7FFFFFFF) % partitions


def unique_group(prefix="g"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def find_coordinator(b, group, timeout=5.0):
    """FindCoordinator v1 (group key) sent to broker `b` -> (error, node id)."""
    with kw.KafkaConn.to(b.bootstrap, timeout=timeout) as conn:
        r = conn.request(kw.API_FIND_COORDINATOR, 1, kw.string(group) + kw.i8(0))
    r.i32()  # throttle
    err = r.i16()
    r.string()  # message
    node, _host, _port = r.i32(), r.string(), r.i32()
    assert r.remaining() == 0, "trailing bytes in FindCoordinator v1 response"
    return err, node


def offset_fetch(b, group, topic=None, partitions=(), timeout=5.0):
    """OffsetFetch v3 sent to broker `b` (all of the group's offsets when no
    topic is named) -> (top-level error, {(topic, partition): (offset,
    metadata, error)})."""
    topics = None if topic is None else [kw.string(topic) + kw.array(
        [kw.i32(p) for p in partitions])]
    with kw.KafkaConn.to(b.bootstrap, timeout=timeout) as conn:
        r = conn.request(kw.API_OFFSET_FETCH, 3, kw.string(group) + kw.array(topics))
    r.i32()  # throttle
    out = {}
    for name, ps in r.array(lambda x: (x.string(), x.array(
            lambda y: (y.i32(), y.i64(), y.string(), y.i16())))) or []:
        for p, off, meta, err in ps or []:
            out[(name, p)] = (off, meta, err)
    top = r.i16()
    assert r.remaining() == 0, "trailing bytes in OffsetFetch v3 response"
    return top, out


def offset_commit(b, group, topic, offsets, generation=-1, member=""):
    """OffsetCommit v2 sent to broker `b`; offsets {partition: (offset,
    metadata)} -> {partition: error}."""
    body = kw.offset_commit_v2_body(group, generation, member, {
        topic: [(p, o, m) for p, (o, m) in offsets.items()]})
    with kw.KafkaConn.to(b.bootstrap, timeout=10) as conn:
        r = conn.request(kw.API_OFFSET_COMMIT, 2, body)
    res = kw.parse_offset_commit_v2(r)
    assert r.remaining() == 0, "trailing bytes in OffsetCommit v2 response"
    return {p: err for (t, p), err in res.items() if t == topic}


def list_groups_raw(b):
    """ListGroups v1 sent to broker `b` -> {group: protocol type} (the groups it coordinates)."""
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(kw.API_LIST_GROUPS, 1, b"")
    r.i32()  # throttle
    err = r.i16()
    groups = r.array(lambda x: (x.string(), x.string())) or []
    assert r.remaining() == 0, "trailing bytes in ListGroups v1 response"
    assert err == 0, "ListGroups error %d" % err
    return dict(groups)


def offsets_leaders(c, node=None):
    """{internal partition: leader} as broker `node` (default: the first live one) says."""
    ps = parts(c, OFFSETS_TOPIC, node if node is not None else c.live_ids()[0])
    return {p: s["leader"] for p, s in ps.items()}


def ensure_offsets_topic(c):
    """The first FindCoordinator creates __consumer_offsets; waits until its
    partitions have a leader and the full ISR (RF = live brokers, up to 3).
    Returns {partition: leader}."""
    node = c.live_ids()[0]
    find_coordinator(c.broker(node), "probe-" + uuid.uuid4().hex[:8])
    rf = min(3, len(c.live_ids()))
    ps = wait_parts(c, OFFSETS_TOPIC, node,
                    lambda ps: len(ps) == OFFSETS_PARTITIONS and full_isr(rf)(ps), 20,
                    "%s: %d partitions with an ISR of %d" % (OFFSETS_TOPIC, OFFSETS_PARTITIONS,
                                                             rf))
    return {p: s["leader"] for p, s in ps.items()}


def group_led_by(leaders, node, prefix="g", partition=None):
    """A fresh group name whose internal partition is led by `node` (and is
    `partition`, when given)."""
    for _ in range(10000):
        g = unique_group(prefix)
        p = offsets_partition(g)
        if leaders[p] == node and (partition is None or p == partition):
            return g
    raise AssertionError("no group name maps to a partition led by %d (%r)" % (node, leaders))


def wait_coordinator(c, group, on=None, exclude=(), timeout=25):
    """Waits until every broker in `on` (default: the live ones) names the
    same coordinator for `group` in FindCoordinator, one of them and not in
    `exclude`, and that broker answers OffsetFetch for the group without
    error (it has loaded the group's partition). Returns its node id."""
    on = list(on if on is not None else c.live_ids())
    last = {}

    def probe():
        answers = {i: find_coordinator(c.broker(i), group) for i in on}
        last["answers"] = answers
        if len(set(answers.values())) != 1:
            return None
        ((err, node),) = set(answers.values())
        if err != 0 or node not in on or node in exclude:
            return None
        top, _ = offset_fetch(c.broker(node), group)
        last["fetch"] = (node, top)
        return node if top == 0 else None
    try:
        return wait_until(probe, timeout, interval=0.1,
                          what="a loaded coordinator for %s named by brokers %r" % (group, on))
    except AssertionError as e:
        raise AssertionError("%s\nlast FindCoordinator answers %r, OffsetFetch %r\n%s"
                             % (e, last.get("answers"), last.get("fetch"), c.logs(25))) from None


# --------------------------------------------------------------------------
# AdminClient views through exactly one bootstrap broker
# --------------------------------------------------------------------------


def admin_list_groups(c, node):
    """{group: state name} from list_consumer_groups bootstrapped to `node`."""
    a = admin(c, [node])
    res = a.list_consumer_groups(request_timeout=10).result(timeout=15)
    assert not res.errors, "list_consumer_groups via broker %d: errors %r" % (node, res.errors)
    return {g.group_id: g.state.name for g in res.valid}


def admin_describe(c, node, groups):
    """{group: (state, coordinator id, simple?, assignor, [(member id, client
    id, [(topic, partition)])])} from describe_consumer_groups via `node`."""
    a = admin(c, [node])
    out = {}
    for g, f in a.describe_consumer_groups(list(groups), request_timeout=10).items():
        d = f.result(timeout=15)
        members = sorted((m.member_id, m.client_id, sorted(
            (tp.topic, tp.partition) for tp in m.assignment.topic_partitions))
            for m in d.members)
        out[g] = (d.state.name, d.coordinator.id, d.is_simple_consumer_group,
                  d.partition_assignor, members)
    return out


def admin_offsets(c, node, group, tps=None, metadata=True):
    """{(topic, partition): (offset, metadata or "")} from
    list_consumer_group_offsets via `node` (every committed offset, or the
    TopicPartitions `tps`); {(topic, partition): offset} with metadata=False.

    librdkafka 2.16 copies the metadata of an admin result without a
    terminating NUL, and confluent-kafka reads it as a C string: metadata
    committed without a trailing NUL (any client but confluent-kafka, which
    sends one) reads back with whatever follows it in memory. Such offsets are
    compared with metadata=False, their metadata through a raw OffsetFetch."""
    a = admin(c, [node])
    req = ConsumerGroupTopicPartitions(group, tps) if tps else ConsumerGroupTopicPartitions(group)
    res = a.list_consumer_group_offsets([req], request_timeout=10)[group].result(timeout=15)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, "via broker %d: %s[%d]: %s" % (node, tp.topic, tp.partition,
                                                               tp.error)
        out[(tp.topic, tp.partition)] = (tp.offset, tp.metadata or "") if metadata else tp.offset
    return out


def wait_admin_offsets(c, node, group, want, timeout=20):
    """Waits until admin_offsets(c, node, group) == want (answers right after
    a failover may still be errors); returns it."""
    last = {}

    def probe():
        last["v"] = admin_offsets(c, node, group)
        return last["v"] == want
    try:
        wait_until(probe, timeout, interval=0.2,
                   what="%s's committed offsets via broker %d" % (group, node))
    except AssertionError as e:
        raise AssertionError("%s\nlast: %r\nwant: %r" % (e, last.get("v"), want)) from None
    return last["v"]


def commit_simple(bootstrap, group, topic, offsets):
    """Commits {partition: (offset, metadata)} for `group` with a consumer
    that never joins it (generation -1); the committed TopicPartitions."""
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "socket.timeout.ms": 10000})
    try:
        res = cons.commit(offsets=[TopicPartition(topic, p, o, m) for p, (o, m)
                                   in offsets.items()], asynchronous=False)
    finally:
        cons.close()
    assert all(tp.error is None for tp in res), res
    return res


def high_watermarks(bootstrap, topic, partitions):
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_group("wm")})
    try:
        return {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                              cached=False)[1] for p in partitions}
    finally:
        cons.close()


# --------------------------------------------------------------------------
# 1. Coordinator killed under three committing members
# --------------------------------------------------------------------------


class Journal:
    """What the members did, with monotonic timestamps, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.consumed = []        # (t, member, partition, offset, value)
        self.distinct = set()     # (partition, offset) read at least once
        self.acks = collections.defaultdict(list)   # partition -> [(t_ack, offset, member)]
        self.failed = []          # (t0, t1, member, error text)
        self.assigns = []         # (t, member, [partitions])
        self.revokes = []         # (t, member, [partitions])
        self.restarts = []        # (t_assign, member, partition, first offset read, t_read)
        self.errors = []          # (t, member, consume error)

    def seen(self):
        """How many distinct offsets were read."""
        with self.lock:
            return len(self.distinct)

    def latest_acked(self):
        """{partition: offset of the last commit acknowledged (by time)}."""
        with self.lock:
            return {p: max(v)[1] for p, v in self.acks.items() if v}

    def acked_before(self, partition, t):
        """The highest offset committed for `partition` whose acknowledgement
        the client had seen before `t` (None: none)."""
        with self.lock:
            offs = [o for ta, o, _m in self.acks.get(partition, []) if ta < t]
        return max(offs) if offs else None


class CommittingMember:
    """A confluent-kafka group member polled by its own thread: auto commit
    off, a synchronous commit of its positions every `every` messages (and
    when idle with progress not yet committed), at about `rate` messages/s.
    Positions of revoked partitions are dropped (never committed later)."""

    def __init__(self, bootstrap, group, topic, name, journal, every=200, rate=900):
        self.name, self.topic, self.j = name, topic, journal
        self.every, self.rate = every, rate
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100, "socket.timeout.ms": 10000,
            "topic.metadata.refresh.interval.ms": 2000,
            # Small fetches and prefetch: both partitions of a member advance
            # together (not one read to its end before the other starts).
            "max.partition.fetch.bytes": 8192, "queued.min.messages": 300,
        })
        self.pos = {}             # partition -> next offset to read
        self.committed = {}       # partition -> last offset this member had acknowledged
        self.first_after = {}     # partition -> time of the assignment not yet read from
        self.crashed = []
        self._stop = threading.Event()
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_revoke)
        self.thread = threading.Thread(target=self._run, name="member-" + name, daemon=True)
        self.thread.start()

    def _on_assign(self, _c, partitions):
        t = time.monotonic()
        ps = sorted(tp.partition for tp in partitions)
        with self.j.lock:
            self.j.assigns.append((t, self.name, ps))
        for p in ps:
            self.first_after[p] = t

    def _on_revoke(self, _c, partitions):
        t = time.monotonic()
        ps = sorted(tp.partition for tp in partitions)
        with self.j.lock:
            self.j.revokes.append((t, self.name, ps))
        for p in ps:
            self.pos.pop(p, None)
            self.committed.pop(p, None)
            self.first_after.pop(p, None)

    def _pending(self):
        return [TopicPartition(self.topic, p, o) for p, o in sorted(self.pos.items())
                if self.committed.get(p) != o]

    def _commit(self):
        offsets = self._pending()
        if not offsets:
            return
        t0 = time.monotonic()
        try:
            res = self.c.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            with self.j.lock:
                self.j.failed.append((t0, time.monotonic(), self.name, str(e.args[0])))
            return
        t1 = time.monotonic()
        with self.j.lock:
            for tp in res:
                if tp.error is not None:
                    self.j.failed.append((t0, t1, self.name, "%d: %s" % (tp.partition,
                                                                         tp.error)))
                else:
                    self.committed[tp.partition] = tp.offset
                    self.j.acks[tp.partition].append((t1, tp.offset, self.name))

    def _run(self):
        since = 0
        try:
            while not self._stop.is_set():
                msgs = self.c.consume(num_messages=100, timeout=0.1)
                n = 0
                for m in msgs:
                    if m.error():
                        with self.j.lock:
                            self.j.errors.append((time.monotonic(), self.name, str(m.error())))
                        continue
                    p, o, t = m.partition(), m.offset(), time.monotonic()
                    with self.j.lock:
                        if p in self.first_after:
                            self.j.restarts.append((self.first_after.pop(p), self.name, p, o, t))
                        self.j.consumed.append((t, self.name, p, o, m.value()))
                        self.j.distinct.add((p, o))
                    self.pos[p] = o + 1
                    n += 1
                since += n
                if since >= self.every or (n == 0 and self._pending()):
                    self._commit()
                    since = 0
                if n:
                    time.sleep(n / self.rate)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.crashed.append(repr(e))
        finally:
            self.c.close()

    def stop(self):
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "member %s did not stop" % self.name
        assert not self.crashed, "member %s failed: %r" % (self.name, self.crashed)


def test_coordinator_killed_under_committing_members(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("gfo")
    nparts, total = 6, 30000
    create(c, topic, nparts, 3)
    leaders = ensure_offsets_topic(c)

    # 30,000 numbered messages, acks=all.
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5,
                  "batch.num.messages": 2000})
    produced, errs = {}, []

    def cb(e, m):
        if e is not None:
            errs.append(e)
        else:
            produced[(m.partition(), m.offset())] = m.value()
    for k in range(total):
        p.produce(topic, b"%d" % k, partition=k % nparts, on_delivery=cb)
        if k % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0 and not errs, errs[:5]
    assert len(produced) == total
    hw = {q: total // nparts for q in range(nparts)}
    assert {q: 1 + max(o for pp, o in produced if pp == q) for q in range(nparts)} == hw

    group = unique_group("gfo")
    coord = wait_coordinator(c, group)
    assert coord == leaders[offsets_partition(group)], (coord, leaders, offsets_partition(group))
    j = Journal()
    members = [CommittingMember(c.bootstrap(), group, topic, "m%d" % k, j) for k in range(3)]
    try:
        # The AdminClient names the same coordinator, with the three members.
        desc = wait_until(lambda: (lambda d: d if d[0] == "STABLE" and len(d[4]) == 3 else None)(
            admin_describe(c, coord, [group])[group]), 30, what="three members, stable")
        assert desc[1] == coord, desc
        wait_until(lambda: j.seen() >= total // 3, 60, interval=0.05,
                   what="a third of the messages consumed")
        acked_before = sum(len(v) for v in j.acks.values())
        assert acked_before > 0, "no commit acknowledged before the kill: %r" % j.failed[:5]

        t_kill = time.monotonic()
        c.broker(coord).kill9()
        survivors = [i for i in c.node_ids() if i != coord]
        seen_at_kill = j.seen()

        def finished():
            if j.seen() < total:
                return None
            latest = j.latest_acked()
            return latest if all(latest.get(q) == hw[q] for q in range(nparts)) else None
        try:
            wait_until(finished, 120, interval=0.2,
                       what="every message consumed and the end offsets committed")
        except AssertionError as e:
            raise AssertionError("%s\nseen %d/%d, latest acked %r, hw %r, last failures %r\n%s"
                                 % (e, j.seen(), total, j.latest_acked(), hw,
                                    j.failed[-5:], c.logs(30))) from None
        done = time.monotonic() - t_kill
    finally:
        for m in members:
            m.stop()

    # Every message read at least once, with the value produced at that offset.
    consumed = {(q, o): v for _t, _m, q, o, v in j.consumed}
    assert consumed == produced, "missing %r" % sorted(set(produced) - set(consumed))[:10]
    counts = collections.Counter((q, o) for _t, _m, q, o, _v in j.consumed)
    dups = sum(n - 1 for n in counts.values())

    # Every (re)start of a partition at or after the last commit the client
    # had seen acknowledged before that assignment.
    bad, after_kill = [], []
    for t_a, name, q, first, _t_read in j.restarts:
        floor = j.acked_before(q, t_a)
        if t_a > t_kill:
            after_kill.append((name, q, first, floor))
        if floor is not None and first < floor:
            bad.append((round(t_a - t_kill, 2), name, q, first, floor))
    assert not bad, "partitions restarted before an acknowledged commit (s after kill, " \
        "member, partition, first offset read, acknowledged commit): %r\n%s" % (bad, c.logs(30))

    # The new coordinator: a survivor, named by both survivors; the final
    # offsets read the same through each of them.
    new = wait_coordinator(c, group, on=survivors, exclude=[coord])
    assert new == offsets_leaders(c, survivors[0])[offsets_partition(group)]
    want = {(topic, q): hw[q] for q in range(nparts)}
    for node in survivors:
        wait_admin_offsets(c, node, group, {k: (o, "") for k, o in want.items()})
    top, raw = offset_fetch(c.broker(new), group, topic, range(nparts))
    assert top == 0 and {k: o for k, (o, _m, _e) in raw.items()} == want, (top, raw)
    other = [i for i in survivors if i != new][0]
    assert offset_fetch(c.broker(other), group)[0] == NOT_COORDINATOR
    assert admin_describe(c, other, [group])[group][1] == new

    failed_after = [f for f in j.failed if f[1] > t_kill]
    first_ack = min(t for v in j.acks.values() for t, _o, _m in v if t > t_kill) - t_kill
    print("coordinator %d killed after %d/%d messages; coordinator %d; first commit "
          "acknowledged %.2fs after the kill, all read and committed %.1fs after it; %d "
          "duplicates; %d commits acknowledged (%d before the kill), %d failed after it (e.g. "
          "%r); restarts after the kill (member, partition, first read, last acknowledged "
          "commit): %r"
          % (coord, seen_at_kill, total, new, first_ack, done, dups,
             sum(len(v) for v in j.acks.values()), acked_before, len(failed_after),
             [f[3] for f in failed_after[:3]], after_kill))


# --------------------------------------------------------------------------
# 2. Producer ids unique across brokers
# --------------------------------------------------------------------------


def init_producer_id_v1(conn):
    """InitProducerId v1 without a transactional id -> (error, producer id, epoch)."""
    r = conn.request(API_INIT_PRODUCER_ID, 1, kw.nullable_string(None) + kw.i32(60000))
    _throttle, err, pid, epoch = r.i32(), r.i16(), r.i64(), r.i16()
    assert r.remaining() == 0, "trailing bytes in InitProducerId v1 response"
    return err, pid, epoch


def _allocate(c, plan):
    """plan: [(node, count)], one thread and connection each; returns
    [(node, error, producer id, epoch)]."""
    out, crashed = [], []
    lock = threading.Lock()

    def run(node, n):
        try:
            got = []
            with kw.KafkaConn.to(c.broker(node).bootstrap, timeout=15) as conn:
                for _ in range(n):
                    got.append((node,) + init_producer_id_v1(conn))
            with lock:
                out.extend(got)
        except Exception as e:  # noqa: BLE001 - asserted below
            crashed.append((node, repr(e)))
    threads = [threading.Thread(target=run, args=x, daemon=True) for x in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not crashed, crashed
    assert not any(t.is_alive() for t in threads), "InitProducerId threads hang"
    return out


def test_producer_ids_unique_across_brokers(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    total = 10000
    plan = [(node, total // 6 + (1 if k < total % 6 else 0))
            for k, node in enumerate([1, 2, 3, 1, 2, 3])]
    t0 = time.monotonic()
    res = _allocate(c, plan)
    took = time.monotonic() - t0
    assert len(res) == total
    bad = [r for r in res if r[1] != 0 or r[3] != 0 or r[2] < 0]
    assert not bad, "%d InitProducerId failures, e.g. %r" % (len(bad), bad[:5])
    ids = [r[2] for r in res]
    repeated = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not repeated, "%d producer ids handed out more than once, e.g. %r" % (
        len(repeated), [(i, sorted({r[0] for r in res if r[2] == i})) for i in repeated[:5]])
    per_node = {n: sum(1 for r in res if r[0] == n) for n in (1, 2, 3)}
    assert all(v > 3000 for v in per_node.values()), per_node

    # A broker killed and restarted does not hand its old ids out again.
    c.broker(2).kill9()
    c.broker(2).start()
    c.wait_for_members([1, 2, 3], timeout=c.session_timeout + 15)
    more = _allocate(c, [(2, 1500), (1, 500), (3, 500)])
    assert all(r[1] == 0 for r in more), [r for r in more if r[1] != 0][:5]
    again = set(ids) & {r[2] for r in more}
    assert not again and len({r[2] for r in more}) == len(more), \
        "after broker 2's restart: %d ids repeated, e.g. %r" % (len(again), sorted(again)[:5])
    print("%d producer ids in %.2fs (%r per broker), all distinct; %d more after a restart of "
          "broker 2, none repeated; id range %d..%d"
          % (total, took, per_node, len(more), min(ids), max(ids)))


# --------------------------------------------------------------------------
# 3. The same group views through every broker
# --------------------------------------------------------------------------


class PollingMember:
    """A subscribed consumer that keeps polling (and stays in its group).
    commit() has the polling thread commit its positions: a synchronous
    commit from another thread while this one is in consume() does not
    return (librdkafka / confluent-kafka, standalone broker too)."""

    def __init__(self, bootstrap, group, topic, name):
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "client.id": name, "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                           "heartbeat.interval.ms": 500})
        self.c.subscribe([topic])
        self.lock = threading.Lock()
        self.pos = {}
        self.count = 0
        self.crashed = []
        self._want_commit = threading.Event()
        self._committed = threading.Event()
        self._result = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                for m in self.c.consume(100, 0.1):
                    if m.error() is None:
                        with self.lock:
                            self.pos[m.partition()] = m.offset() + 1
                            self.count += 1
                if self._want_commit.is_set():
                    self._want_commit.clear()
                    offsets = [TopicPartition(self.topic, p, o, "seen-%d" % o)
                               for p, o in sorted(self.pos.items())]
                    try:
                        self._result = self.c.commit(offsets=offsets, asynchronous=False)
                    except KafkaException as e:
                        self._result = e
                    self._committed.set()
        except Exception as e:  # noqa: BLE001 - reported by commit()/stop()
            self.crashed.append(repr(e))
        finally:
            self.c.close()

    def commit(self):
        """Commits the positions read so far; {(topic, partition): offset}."""
        self._committed.clear()
        self._want_commit.set()
        assert self._committed.wait(30), "commit not done within 30 s (%r)" % self.crashed
        res = self._result
        assert not isinstance(res, Exception) and all(tp.error is None for tp in res), res
        return {(tp.topic, tp.partition): tp.offset for tp in res}

    def stop(self):
        self._stop.set()
        self.thread.join(30)
        assert not self.crashed, self.crashed


def test_group_views_same_through_every_broker(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("gviews")
    create(c, topic, 3, 3)
    produce_all(c.bootstrap(), topic, 30, range(3))
    leaders = ensure_offsets_topic(c)
    # One group per coordinator where the leaderships allow it.
    nodes = sorted(set(leaders.values()))
    targets = [nodes[k % len(nodes)] for k in range(3)]
    g_admin = group_led_by(leaders, targets[0], "gadmin")   # offsets set by the AdminClient
    g_left = group_led_by(leaders, targets[1], "gleft")     # a member that committed and left
    g_live = group_led_by(leaders, targets[2], "glive")     # an active member
    groups = [g_admin, g_left, g_live]
    coords = {g: wait_coordinator(c, g) for g in groups}
    assert [coords[g] for g in groups] == targets, (coords, targets)

    a = admin(c)
    req = ConsumerGroupTopicPartitions(g_admin, [TopicPartition(topic, 0, 7, "admin-0"),
                                                 TopicPartition(topic, 2, 9, "admin-2")])
    a.alter_consumer_group_offsets([req], request_timeout=10)[g_admin].result(timeout=15)

    left = PollingMember(c.bootstrap(), g_left, topic, "left-1")
    try:
        wait_until(lambda: left.count >= 90, 30, what="the leaving member reading everything")
        left_offsets = left.commit()
    finally:
        left.stop()
    live = PollingMember(c.bootstrap(), g_live, topic, "live-1")
    try:
        wait_until(lambda: live.count >= 90, 30, what="the live member reading everything")
        live_offsets = live.commit()
        wait_until(lambda: admin_describe(c, 1, [g_live])[g_live][0] == "STABLE", 15,
                   what="%s stable" % g_live)

        expect_offsets = {
            g_admin: {(topic, 0): (7, "admin-0"), (topic, 2): (9, "admin-2")},
            g_left: {k: (o, "seen-%d" % o) for k, o in left_offsets.items()},
            g_live: {k: (o, "seen-%d" % o) for k, o in live_offsets.items()},
        }
        assert left_offsets == live_offsets == {(topic, q): 30 for q in range(3)}
        views = {}
        for node in c.node_ids():
            views[node] = {
                "list": {g: s for g, s in admin_list_groups(c, node).items() if g in groups},
                "describe": admin_describe(c, node, groups),
                "offsets": {g: admin_offsets(c, node, g) for g in groups},
            }
        v1 = views[1]
        assert v1["list"] == {g_admin: "EMPTY", g_left: "EMPTY", g_live: "STABLE"}, v1["list"]
        assert v1["offsets"] == expect_offsets, v1["offsets"]
        for g in groups:
            state, coord, _simple, _assignor, members = v1["describe"][g]
            assert coord == coords[g], (g, v1["describe"][g], coords)
            if g == g_live:
                assert state == "STABLE" and len(members) == 1, v1["describe"][g]
                assert members[0][1] == "live-1" and members[0][2] == [
                    (topic, q) for q in range(3)], members
            else:
                assert state == "EMPTY" and members == [], v1["describe"][g]
        for node in (2, 3):
            assert views[node] == v1, "via broker %d:\n%r\nvia broker 1:\n%r" % (
                node, views[node], v1)

        # Each broker's own ListGroups: exactly the groups it coordinates.
        for node in c.node_ids():
            mine = {g for g in list_groups_raw(c.broker(node)) if g in groups}
            assert mine == {g for g in groups if coords[g] == node}, (node, mine, coords)
    finally:
        live.stop()
    print("coordinators %r; views identical through brokers 1-3" % coords)


# --------------------------------------------------------------------------
# 4. Raw group requests to the coordinator and to the others
# --------------------------------------------------------------------------


def test_non_coordinator_answers_not_coordinator(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("gnc")
    create(c, topic, 2, 3)
    leaders = ensure_offsets_topic(c)
    group = unique_group("gnc")
    coord = wait_coordinator(c, group)
    part = offsets_partition(group)
    # Every broker names the leader of the group's internal partition (each
    # broker's view of the metadata store may lag a moment behind).
    for node in c.node_ids():
        wait_until(lambda: find_coordinator(c.broker(node), group) == (0, coord), 10,
                   interval=0.1, what="broker %d to name coordinator %d" % (node, coord))
        assert find_coordinator(c.broker(node), group) == (0, coord)
        assert offsets_leaders(c, node)[part] == coord == leaders[part]
    others = [i for i in c.node_ids() if i != coord]

    for node in others:
        b = c.broker(node)
        assert offset_commit(b, group, topic, {0: (42, "m"), 1: (43, None)}) == {
            0: NOT_COORDINATOR, 1: NOT_COORDINATOR}, node
        assert offset_fetch(b, group, topic, [0, 1])[0] == NOT_COORDINATOR, node
        assert offset_fetch(b, group)[0] == NOT_COORDINATOR, node
        with kw.KafkaConn.to(b.bootstrap) as conn:
            jr = kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, kw.join_group_v5_body(
                group, protocols=[("range", kw.consumer_subscription_v0([topic]))])))
            hb = kw.parse_heartbeat_v3(conn.request(kw.API_HEARTBEAT, 3,
                                                    kw.heartbeat_v3_body(group, 1, "m-1")))
        assert jr["error_code"] == NOT_COORDINATOR, (node, jr)
        assert hb["error_code"] == NOT_COORDINATOR, (node, hb)

    cb = c.broker(coord)
    # FindCoordinator answers from the shared state; the coordinator itself
    # may still be taking up its leadership and loading the partition
    # (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS, which clients retry).
    last = {}

    def committed():
        last["r"] = offset_commit(cb, group, topic, {0: (42, "m"), 1: (43, None)})
        return last["r"] == {0: 0, 1: 0} or (
            set(last["r"].values()) <= {NOT_COORDINATOR, 14} and None)
    wait_until(committed, 10, interval=0.1, what="the coordinator to accept the commit")
    assert last["r"] == {0: 0, 1: 0}, last
    top, got = offset_fetch(cb, group, topic, [0, 1])
    assert top == 0 and got == {(topic, 0): (42, "m", 0), (topic, 1): (43, "", 0)}, (top, got)
    assert offset_fetch(cb, group) == (0, got)
    with kw.KafkaConn.to(cb.bootstrap) as conn:
        jr = kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, kw.join_group_v5_body(
            group, protocols=[("range", kw.consumer_subscription_v0([topic]))])))
    assert jr["error_code"] == MEMBER_ID_REQUIRED, jr
    # The others still refuse (and do not answer from a copy of their own).
    for node in others:
        assert offset_fetch(c.broker(node), group, topic, [0, 1])[0] == NOT_COORDINATOR
    # Through the AdminClient, bootstrapped to a non-coordinator.
    # (Metadata checked by the raw OffsetFetch above; see admin_offsets.)
    assert admin_offsets(c, others[0], group, metadata=False) == {(topic, 0): 42, (topic, 1): 43}
    print("group %s: coordinator %d (internal partition %d); brokers %r answer NOT_COORDINATOR"
          % (group, coord, part, others))


# --------------------------------------------------------------------------
# 5. A deleted group stays deleted across a coordinator failover
# --------------------------------------------------------------------------


def test_deleted_group_stays_deleted_after_failover(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("gdel")
    create(c, topic, 3, 3)
    produce_all(c.bootstrap(), topic, 20, range(3))
    leaders = ensure_offsets_topic(c)
    group = unique_group("gdel")
    part = offsets_partition(group)
    coord = leaders[part]
    # A group on the same internal partition that is not deleted.
    keep = group_led_by(leaders, coord, "gkeep", partition=part)
    assert wait_coordinator(c, group) == coord == wait_coordinator(c, keep)

    # Several commits (several records per key) for the group, one for the other.
    for k in range(3):
        commit_simple(c.bootstrap(), group, topic, {q: (5 + k + q, "d%d" % k) for q in range(3)})
    commit_simple(c.bootstrap(), keep, topic, {q: (10 + q, "keep") for q in range(3)})
    want_keep = {(topic, q): (10 + q, "keep") for q in range(3)}
    assert admin_offsets(c, coord, group) == {(topic, q): (7 + q, "d2") for q in range(3)}
    assert admin_offsets(c, coord, keep) == want_keep

    a = admin(c)
    res = a.delete_consumer_groups([group], request_timeout=10)
    assert res[group].result(timeout=15) is None
    tps = [TopicPartition(topic, q) for q in range(3)]
    assert admin_offsets(c, coord, group) == {}
    assert admin_offsets(c, coord, group, tps) == {(topic, q): (OFFSET_INVALID, "")
                                                   for q in range(3)}
    listed = admin_list_groups(c, coord)
    assert group not in listed and keep in listed, listed

    # The coordinator dies; watch the survivors answer for both groups.
    survivors = [i for i in c.node_ids() if i != coord]
    answers = []      # (t, node, top error, group offsets, kept offsets)
    t_kill = time.monotonic()
    c.broker(coord).kill9()

    def loaded():
        for node in survivors:
            b = c.broker(node)
            try:
                kt, kept = offset_fetch(b, keep, topic, range(3), timeout=2)
                gt, gone = offset_fetch(b, group, topic, range(3), timeout=2)
            except (OSError, kw.ConnectionClosed):
                continue
            answers.append((time.monotonic() - t_kill, node, kt, gt,
                            {k: v[0] for k, v in gone.items()},
                            {k: v[0] for k, v in kept.items()}))
            if kt == 0 and gt == 0:
                return node
        return None
    new = wait_until(loaded, c.session_timeout + 20, interval=0.05,
                     what="a survivor answering OffsetFetch for both groups")
    took = time.monotonic() - t_kill
    assert new == wait_coordinator(c, group, on=survivors, exclude=[coord])
    codes = collections.Counter((node, kt) for _t, node, kt, *_ in answers)
    assert set(kt for (_n, kt) in codes) <= {0, COORDINATOR_LOAD_IN_PROGRESS,
                                             COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR}, codes
    # Whenever a survivor answered, it answered from the replayed partition:
    # the kept group's offsets, none of the deleted group's.
    for t, node, kt, gt, gone, kept in answers:
        if kt == 0:
            assert kept == {(topic, q): 10 + q for q in range(3)}, (t, node, kept)
        if gt == 0:
            assert gone == {(topic, q): -1 for q in range(3)}, \
                "broker %d answered %.2fs after the kill with the deleted group's offsets %r" % (
                    node, t, gone)

    # Through the AdminClient bootstrapped to the new coordinator only.
    assert admin_offsets(c, new, keep) == want_keep
    assert admin_offsets(c, new, group) == {}
    assert admin_offsets(c, new, group, tps) == {(topic, q): (OFFSET_INVALID, "")
                                                 for q in range(3)}
    for node in survivors:
        listed = admin_list_groups(c, node)
        assert group not in listed and keep in listed, (node, listed)
    d = admin_describe(c, new, [group])[group]
    assert d[0] == "DEAD" and d[4] == [], d
    print("coordinator %d killed; broker %d answered for the partition %.2fs later; answers "
          "(broker, error): %r" % (coord, new, took, dict(codes)))


# --------------------------------------------------------------------------
# 6. Committed offsets across a restart of every broker
# --------------------------------------------------------------------------


def test_committed_offsets_survive_full_cluster_restart(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("grestart")
    create(c, topic, 3, 3)
    produce_all(c.bootstrap(), topic, 50, range(3))
    leaders = ensure_offsets_topic(c)
    nodes = sorted(set(leaders.values()))
    groups = [group_led_by(leaders, nodes[k % len(nodes)], "grs%d" % k) for k in range(3)]
    want = {}
    for k, g in enumerate(groups):
        wait_coordinator(c, g)
        offs = {q: (10 * k + q + 1, "g%d-p%d" % (k, q)) for q in range(3)}
        # Two rounds: only the later one must count.
        commit_simple(c.bootstrap(), g, topic, {q: (0, "first") for q in range(3)})
        commit_simple(c.bootstrap(), g, topic, offs)
        want[g] = {(topic, q): v for q, v in offs.items()}
    before = {g: admin_offsets(c, 1, g) for g in groups}
    assert before == want, before
    # The raw answers of the coordinators (confluent-kafka sends the metadata
    # with a trailing NUL, which the broker keeps: compared as stored).
    raw_before = {g: offset_fetch(c.broker(wait_coordinator(c, g)), g, topic, range(3))
                  for g in groups}
    assert all(top == 0 for top, _ in raw_before.values()), raw_before

    t0 = time.monotonic()
    rcs = {i: c.broker(i).stop() for i in c.node_ids()}
    assert rcs == {1: 0, 2: 0, 3: 0}, rcs
    stopped = time.monotonic() - t0
    c.start(timeout=c.session_timeout + 20)
    t1 = time.monotonic()
    coords = {g: wait_coordinator(c, g, timeout=40) for g in groups}
    back = time.monotonic() - t1
    for node in c.node_ids():
        for g in groups:
            wait_admin_offsets(c, node, g, want[g])
    for g in groups:
        raw = offset_fetch(c.broker(coords[g]), g, topic, range(3))
        assert raw == raw_before[g], (g, raw, raw_before[g])

    # Leaderships back to the preferred replicas (as before the restart): the
    # groups' coordinators move, and each loads the same offsets.
    wait_parts(c, OFFSETS_TOPIC, 1, full_isr(3), 20, "%s back in sync" % OFFSETS_TOPIC)
    # (No request_timeout: confluent-kafka 2.16's elect_leaders raises SystemError with it.)
    a = admin(c)   # kept alive until the future is done
    result = a.elect_leaders(ElectionType.PREFERRED, [
        TopicPartition(OFFSETS_TOPIC, q) for q in range(OFFSETS_PARTITIONS)]).result(20)
    assert all(e is None or e.code() == KafkaError.ELECTION_NOT_NEEDED
               for e in result.values()), result
    for node in c.node_ids():
        wait_parts(c, OFFSETS_TOPIC, node, lambda ps: {q: st["leader"] for q, st in ps.items()}
                   == leaders, 15, "the preferred leaders of %s on broker %d"
                   % (OFFSETS_TOPIC, node))
    moved = {g: wait_coordinator(c, g) for g in groups}
    assert moved == {g: leaders[offsets_partition(g)] for g in groups}, (moved, leaders)
    for g in groups:
        assert offset_fetch(c.broker(moved[g]), g, topic, range(3)) == raw_before[g], g
        for node in c.node_ids():
            assert admin_offsets(c, node, g) == want[g], (g, node)
    # And the groups work on: a member resumes from the committed offsets.
    g = groups[0]
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": g,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        cons.subscribe([topic])
        firsts = {}
        deadline = time.monotonic() + 30
        while len(firsts) < 3 and time.monotonic() < deadline:
            for m in cons.consume(100, 0.2):
                if m.error() is None:
                    firsts.setdefault(m.partition(), m.offset())
    finally:
        cons.close()
    assert firsts == {q: want[g][(topic, q)][0] for q in range(3)}, firsts
    print("3 groups on coordinators %r; all brokers stopped in %.2fs; offsets served again "
          "%.2fs after the restart by %r, and by %r after a preferred election"
          % ({g: leaders[offsets_partition(g)] for g in groups}, stopped, back, coords, moved))


# --------------------------------------------------------------------------
# 7. Static members keep their assignment across a coordinator failover
# --------------------------------------------------------------------------


class StaticMember:
    """A confluent-kafka member with static membership (group.instance.id =
    `instance`, also its client.id; range assignor), polled every 0.1 s by
    its own thread. Manual asynchronous commits of its positions (one in
    flight at a time, another sent if none came back within 10 s), each
    recorded with its outcome; every assignment, revocation and loss, and
    every record read, with monotonic times. Positions of revoked or lost
    partitions are dropped."""

    def __init__(self, bootstrap, group, topic, instance):
        self.name, self.topic = instance, topic
        self.lock = threading.Lock()
        self.assignment = None     # partitions of the last on_assign ([] after revoke/lost)
        self.events = []           # (t, "assign" | "revoke" | "lost", [partitions])
        self.records = []          # (t, partition, offset, value)
        self.commits = []          # (t_sent, t_done, {partition: offset}, error text or None)
        self.acked = {}            # partition -> offset of the last acknowledged commit
        self.pos = {}              # partition -> next offset to read
        self.sent = collections.deque()   # (t_sent, {partition: offset}) awaiting on_commit
        self.max_gap = 0.0         # longest time between two consume() returns
        self.crashed = []
        self._stop = threading.Event()
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": instance,
            "group.instance.id": instance, "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100, "socket.timeout.ms": 10000,
            "topic.metadata.refresh.interval.ms": 2000, "on_commit": self._on_commit,
        })
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)
        self.thread = threading.Thread(target=self._run, name="static-" + instance, daemon=True)
        self.thread.start()

    def _event(self, kind, partitions):
        ps = sorted(tp.partition for tp in partitions)
        with self.lock:
            self.events.append((time.monotonic(), kind, ps))
            self.assignment = ps if kind == "assign" else []
            if kind != "assign":
                for p in ps:
                    self.pos.pop(p, None)
                    self.acked.pop(p, None)

    def _on_assign(self, _c, partitions):
        self._event("assign", partitions)

    def _on_revoke(self, _c, partitions):
        self._event("revoke", partitions)

    def _on_lost(self, _c, partitions):
        self._event("lost", partitions)

    def _on_commit(self, err, partitions):
        t = time.monotonic()
        t_sent, offsets = self.sent.popleft() if self.sent else (None, None)
        with self.lock:
            if err is not None:
                self.commits.append((t_sent, t, offsets, str(err)))
                return
            bad = ["%d: %s" % (tp.partition, tp.error) for tp in partitions
                   if tp.error is not None]
            self.commits.append((t_sent, t, offsets, "; ".join(bad) or None))
            for tp in partitions:
                if tp.error is None:
                    self.acked[tp.partition] = tp.offset

    def current(self):
        with self.lock:
            return self.assignment

    def acked_offsets(self):
        with self.lock:
            return dict(self.acked)

    def _run(self):
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs = self.c.consume(num_messages=100, timeout=0.1)
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - last)
                last = now
                for m in msgs:
                    if m.error() is not None:
                        continue
                    with self.lock:
                        self.records.append((now, m.partition(), m.offset(), m.value()))
                    self.pos[m.partition()] = m.offset() + 1
                pending = {p: o for p, o in self.pos.items() if self.acked.get(p) != o}
                if pending and (not self.sent or now - self.sent[-1][0] > 10):
                    self.sent.append((now, pending))
                    try:
                        self.c.commit(offsets=[TopicPartition(self.topic, p, o)
                                               for p, o in sorted(pending.items())],
                                      asynchronous=True)
                    except KafkaException as e:
                        self.sent.pop()
                        with self.lock:
                            self.commits.append((now, time.monotonic(), pending,
                                                 str(e.args[0])))
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.crashed.append(repr(e))
        finally:
            self.c.close()

    def stop(self):
        """Stops polling and closes the consumer; what went wrong in the thread."""
        self._stop.set()
        self.thread.join(60)
        if self.thread.is_alive():
            return ["member %s did not stop" % self.name]
        return list(self.crashed)


class RoundProducer:
    """A thread producing one record to each of the `nparts` partitions of
    `topic` every `interval` s (b"post-<partition>-<round>"; acks=all,
    idempotent), at most `max_rounds` rounds, until stop(); keeps every
    acknowledgement (partition, offset, value) and every error."""

    def __init__(self, bootstrap, topic, nparts, interval=0.25, max_rounds=400):
        self.topic, self.nparts = topic, nparts
        self.interval, self.max_rounds = interval, max_rounds
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                           "enable.idempotence": True, "linger.ms": 5,
                           "message.timeout.ms": 60000})
        self.lock = threading.Lock()
        self.delivered, self.errors, self.crashed = [], [], []
        self.rounds = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rounds", daemon=True)
        self.thread.start()

    def _cb(self, e, m):
        with self.lock:
            if e is not None:
                self.errors.append((m.partition(), m.value(), str(e)))
            else:
                self.delivered.append((m.partition(), m.offset(), m.value()))

    def _run(self):
        try:
            while not self._stop.is_set() and self.rounds < self.max_rounds:
                for q in range(self.nparts):
                    self.p.produce(self.topic, b"post-%d-%d" % (q, self.rounds), partition=q,
                                   on_delivery=self._cb)
                self.rounds += 1
                deadline = time.monotonic() + self.interval
                while not self._stop.is_set() and time.monotonic() < deadline:
                    self.p.poll(max(0.0, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.crashed.append(repr(e))

    def stop(self, flush=60):
        """Stops producing; waits up to `flush` s for the acknowledgements;
        how many records were not acknowledged."""
        self._stop.set()
        self.thread.join(30)
        if self.thread.is_alive():
            self.crashed.append("producer thread did not stop")
            return -1
        return self.p.flush(flush)

    def close(self):
        self._stop.set()
        self.thread.join(30)
        self.p.purge()
        self.p.flush(5)
        self.p.close()


def describe_static(c, node, group):
    """(state, coordinator id, {group.instance.id: [partitions]}, number of
    members) from describe_consumer_groups bootstrapped to `node` (a fresh
    AdminClient each time: librdkafka can abort the process when a reused
    one's DescribeGroups times out, confluentinc/librdkafka#4605)."""
    a = admin(c, [node])
    d = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    view = {m.group_instance_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
            for m in d.members}
    return d.state.name, d.coordinator.id, view, len(d.members)


def test_static_members_keep_their_assignment_across_coordinator_failover(cluster):
    c = cluster(3, overrides=GROUP_CLUSTER)
    topic = unique_topic("gstatic")
    nparts, pre = 6, 20
    create(c, topic, nparts, 3)
    produce_all(c.bootstrap(), topic, pre, range(nparts), prefix=b"pre")
    ensure_offsets_topic(c)
    group = unique_group("gstatic")
    coord = wait_coordinator(c, group)
    survivors = [i for i in c.node_ids() if i != coord]
    instances = ["s0", "s1", "s2"]
    members, producer, crashed = {}, None, []
    try:
        for inst in instances:
            members[inst] = StaticMember(c.bootstrap(), group, topic, inst)

        # Stable: three static members; the coordinator's view of the
        # assignment is the clients' own; every record read and committed.
        last = {}

        def settled():
            last["describe"] = d = describe_static(c, coord, group)
            last["clients"] = mine = {i: m.current() for i, m in members.items()}
            last["acked"] = acked = {i: m.acked_offsets() for i, m in members.items()}
            state, node, view, n = d
            return (state == "STABLE" and node == coord and n == 3
                    and sorted(view) == instances
                    and all(view[i] == mine[i] for i in instances)
                    and all(acked[i] == {q: pre for q in mine[i]} for i in instances))
        try:
            wait_until(settled, 40, interval=0.3,
                       what="three static members stable, everything read and committed")
        except AssertionError as e:
            raise AssertionError("%s\nlast describe %r, clients %r, acked %r\n%s" % (
                e, last.get("describe"), last.get("clients"), last.get("acked"),
                c.logs(25))) from None
        before = {i: members[i].current() for i in instances}
        assert sorted(q for ps in before.values() for q in ps) == list(range(nparts)) and \
            all(len(ps) == 2 for ps in before.values()), before
        t_rec = time.monotonic()

        # The coordinator dies; records keep coming, one per partition per round.
        t_kill = time.monotonic()
        c.broker(coord).kill9()
        producer = RoundProducer(c.bootstrap(survivors), topic, nparts)

        # Re-formed on a survivor: STABLE with the three static members, each
        # holding its partitions (as the brokers and as the clients see it).
        seen = {}

        def reformed():
            mine = {i: m.current() for i, m in members.items()}
            seen["clients"] = mine
            # The AdminClient only once both survivors name a survivor as the
            # coordinator (DescribeGroups timing out against the dead one can
            # abort the process, see describe_static).
            seen["find"] = found = {i: find_coordinator(c.broker(i), group) for i in survivors}
            if len(set(found.values())) != 1 or found[survivors[0]][0] != 0 \
                    or found[survivors[0]][1] not in survivors:
                return None
            for node in survivors:
                seen[node] = d = describe_static(c, node, group)
                state, new, view, n = d
                if state != "STABLE" or new not in survivors or n != 3 or view != before:
                    return None
            if seen[survivors[0]][1] != seen[survivors[1]][1] or mine != before:
                return None
            return seen[survivors[0]][1]
        try:
            new = wait_until(reformed, 40, interval=0.25,
                             what="the group stable again on a survivor, same assignment")
        except AssertionError as e:
            raise AssertionError("%s\nbefore %r; last seen %r\nevents %r\n%s" % (
                e, before, seen, {i: m.events for i, m in members.items()},
                c.logs(40))) from None
        t_reform = time.monotonic()
        assert new == wait_coordinator(c, group, on=survivors, exclude=[coord])
        time.sleep(2)     # records keep coming to the re-formed group
        left = producer.stop()
        assert left == 0 and not producer.errors and not producer.crashed, (
            left, producer.errors[:5], producer.crashed)
        delivered, rounds = producer.delivered, producer.rounds
        hw = high_watermarks(c.bootstrap(survivors), topic, range(nparts))
        assert all(hw[q] == pre + rounds for q in range(nparts)), (hw, rounds)

        # Every member reads and commits its partitions to the end.
        def caught_up():
            return all(m.acked_offsets() == {q: hw[q] for q in before[i]}
                       for i, m in members.items())
        try:
            wait_until(caught_up, 40, interval=0.2,
                       what="each member committing its partitions' end offsets")
        except AssertionError as e:
            raise AssertionError("%s\nhw %r; acked %r; last commits %r\n%s" % (
                e, hw, {i: m.acked_offsets() for i, m in members.items()},
                {i: m.commits[-3:] for i, m in members.items()}, c.logs(30))) from None
        final = describe_static(c, new, group)
    finally:
        t_end = time.monotonic()
        for m in members.values():
            crashed += m.stop()
        if producer is not None:
            producer.close()
    assert not crashed, crashed
    assert final == ("STABLE", new, before, 3), final

    owner = {q: i for i, ps in before.items() for q in ps}
    wrong = []
    for i, m in members.items():
        # Only ever the partitions it held before, through the failover.
        later = [(round(t - t_kill, 2), kind, ps) for t, kind, ps in m.events
                 if t_rec < t < t_end]
        if not all(ps == before[i] for _t, kind, ps in later if kind == "assign"):
            wrong.append("member %s held %r before the kill; afterwards (s after the kill, "
                         "event, partitions): %r" % (i, before[i], later))
        foreign = [(round(t - t_kill, 2), q, o) for t, q, o, _v in m.records
                   if t > t_rec and q not in before[i]]
        if foreign:
            wrong.append("member %s (partitions %r) read %d records of other partitions (s "
                         "after the kill, partition, offset), e.g. %r"
                         % (i, before[i], len(foreign), foreign[:10]))
    # Every record produced after the kill read by its partition's owner.
    read = {i: {(q, o): v for _t, q, o, v in m.records} for i, m in members.items()}
    lost = [(q, o, v) for q, o, v in delivered if read[owner[q]].get((q, o)) != v]
    if lost:
        wrong.append("%d records produced after the kill not read by their partition's owner "
                     "(partition, offset, value), e.g. %r" % (len(lost), lost[:10]))
    assert not wrong, "coordinator %d killed; group stable again on %d %.2fs later, but:\n%s" % (
        coord, new, t_reform - t_kill, "\n".join(wrong))
    assert len(delivered) == nparts * rounds
    # Commits: none sent after the group re-formed (and after the member's
    # last rebalance event) failed; the end offsets read the same through
    # both survivors.
    failed_after = []
    for i, m in members.items():
        last_event = max(t for t, _k, _p in m.events if t < t_end)
        failed_after += [(i, round(ts - t_kill, 2), offs, err) for ts, _td, offs, err
                         in m.commits if err and ts is not None and ts > max(t_reform,
                                                                             last_event)]
    assert not failed_after, "commits failed after the group re-formed: %r" % failed_after[:10]
    want = {(topic, q): (hw[q], "") for q in range(nparts)}
    for node in survivors:
        wait_admin_offsets(c, node, group, want)

    failed = {i: [(round(ts - t_kill, 2) if ts else None, err) for ts, _td, _o, err
                  in m.commits if err] for i, m in members.items()}
    dups = {i: len(m.records) - len({(q, o) for _t, q, o, _v in m.records})
            for i, m in members.items()}
    print("coordinator %d killed; group stable on %d with the same assignment %r %.2fs after "
          "the kill (seen by describe); rebalance events after the kill %r; %d records "
          "produced after the kill, all read by their owners (duplicates per member %r); "
          "failed commits (s after kill, error) %r; longest poll gap %r"
          % (coord, new, before, t_reform - t_kill,
             {i: [(round(t - t_kill, 2), k, p) for t, k, p in m.events if t_rec < t < t_end]
              for i, m in members.items()},
             len(delivered), dups, failed,
             {i: round(m.max_gap, 2) for i, m in members.items()}))
