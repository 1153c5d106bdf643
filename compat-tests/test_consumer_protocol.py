"""KIP-848 consumer groups (`group.protocol=consumer`) as librdkafka uses them.

confluent-kafka members in threads of this process (ConsumerGroupHeartbeat v1,
server-side assignors), AdminClient views (ConsumerGroupDescribe, ListGroups
with group types, the DescribeGroups fallback for classic groups), committed
offsets with member epochs, static members, regex subscriptions, and
hand-built ConsumerGroupHeartbeat / OffsetCommit v9 / JoinGroup requests for
the error paths.

One broker for the module, with short consumer-group session and heartbeat
settings (the broker's group.consumer.* defaults and their lower bounds), so
that members settle within a second or two; every test has its own topics
and groups.
"""

import collections
import math
import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             ConsumerGroupType, KafkaError, KafkaException, Producer,
                             TopicPartition)

import kafka_wire as kw
from ck_helpers import admin_client, create_topic
from runnel_harness import Broker, BrokerError, unique_topic

pytestmark = pytest.mark.timeout(180)

SESSION_MS = 6000
HEARTBEAT_MS = 500

FAST = {
    "group.consumer.session.timeout.ms": str(SESSION_MS),
    "group.consumer.heartbeat.interval.ms": str(HEARTBEAT_MS),
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "100",
    # for the classic groups some tests run beside the consumer groups
    "group.initial.rebalance.delay.ms": "500",
}


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


def unique_group(prefix="cg"):
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


def tps(topic, parts):
    return {(topic, p) for p in parts}


# --------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------


class EventLog:
    """Assignment changes of several members, in one time-ordered list:
    (monotonic time, member name, "assign" | "revoke" | "lost", frozenset of (topic, partition))."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def add(self, member, kind, parts):
        with self.lock:
            self.events.append((time.monotonic(), member, kind, parts))

    def snapshot(self):
        with self.lock:
            return list(self.events)


def consumer_conf(bootstrap, group, name, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    conf.update(extra)
    return conf


class Member:
    """A confluent-kafka group member polled (every <= 100 ms) by a thread of
    its own.  Records its assignment changes (also into a shared EventLog) and
    every message, with the time it was handed to the application.  Commits
    asynchronously after each batch (commit="batch"), not at all ("none"), and
    synchronously in on_revoke when commit_on_revoke."""

    def __init__(self, bootstrap, group, topics, name, log=None, commit="batch",
                 commit_on_revoke=False, **extra):
        self.name = name
        self.log = log if log is not None else EventLog()
        self.commit_mode = commit
        self.commit_on_revoke = commit_on_revoke
        conf = consumer_conf(bootstrap, group, name, **extra)
        conf["on_commit"] = self._on_commit
        self.c = Consumer(conf)
        self.lock = threading.Lock()
        self.assignment = set()
        self.events = []          # (time, kind, frozenset)
        self.messages = []        # (time, topic, partition, offset, value)
        self.errors = []
        self.commit_errors = []
        self.closed_at = None
        self._stop = threading.Event()
        self._close = True
        self._calls = collections.deque()   # work for the polling thread: (fn, done, box)
        self.c.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)
        self.thread = threading.Thread(target=self._run, name="member-" + name, daemon=True)
        self.thread.start()

    def _record(self, kind, partitions):
        s = frozenset((p.topic, p.partition) for p in partitions)
        with self.lock:
            if kind == "assign":
                self.assignment |= s
            else:
                self.assignment -= s
            self.events.append((time.monotonic(), kind, s))
        self.log.add(self.name, kind, s)

    def _on_assign(self, consumer, partitions):
        self._record("assign", partitions)

    def _on_revoke(self, consumer, partitions):
        if self.commit_on_revoke and partitions:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    with self.lock:
                        self.commit_errors.append(("on_revoke", e.args[0]))
        self._record("revoke", partitions)

    def _on_lost(self, consumer, partitions):
        self._record("lost", partitions)

    def _on_commit(self, err, partitions):
        bad = [(p.topic, p.partition, p.error) for p in partitions or [] if p.error]
        if (err is not None and err.code() != KafkaError._NO_OFFSET) or bad:
            with self.lock:
                self.commit_errors.append((err, bad))

    def _run(self):
        try:
            while not self._stop.is_set():
                while self._calls:
                    fn, done, box = self._calls.popleft()
                    try:
                        box.append((True, fn(self.c)))
                    except Exception as e:   # noqa: BLE001 - handed to the caller
                        box.append((False, e))
                    done.set()
                msgs = self.c.consume(num_messages=500, timeout=0.1)
                now = time.monotonic()
                got = []
                for m in msgs:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            with self.lock:
                                self.errors.append(m.error())
                        continue
                    got.append((now, m.topic(), m.partition(), m.offset(), m.value()))
                if got:
                    with self.lock:
                        self.messages.extend(got)
                    if self.commit_mode == "batch":
                        self.c.commit(asynchronous=True)
        finally:
            if self._close:
                self.c.close()
                self.closed_at = time.monotonic()

    def call(self, fn, timeout=30):
        """Runs fn(consumer) on the polling thread (a consumer is used by one
        thread only) and returns its result, or raises what it raised."""
        done, box = threading.Event(), []
        self._calls.append((fn, done, box))
        assert done.wait(timeout), "%s: call not run within %ss" % (self.name, timeout)
        ok, v = box[0]
        if not ok:
            raise v
        return v

    def current(self):
        with self.lock:
            return set(self.assignment)

    def got(self):
        with self.lock:
            return list(self.messages)

    def counts(self):
        with self.lock:
            return len(self.events)

    def stop(self, close=True, timeout=30):
        self._close = close
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "member %s did not stop within %ss" % (
            self.name, timeout)


def stop_all(members):
    for m in members:
        try:
            m.stop()
        except AssertionError:
            pass


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def described_assignment(d):
    """{client_id: {(topic, partition)}} from a ConsumerGroupDescription."""
    return {m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
            for m in d.members}


def assignments_str(members):
    return "; ".join("%s=%s" % (m.name, sorted(m.current())) for m in members)


def settled(admin, group, members, topic, nparts, sizes):
    """The members' own view (rebalance callbacks) and the coordinator's
    (ConsumerGroupDescribe) agree: STABLE, these members only, partition
    counts `sizes` (in any order), every partition held exactly once."""
    cur = [m.current() for m in members]
    if sorted(len(a) for a in cur) != sorted(sizes):
        return False
    if sum(len(a) for a in cur) != nparts or set().union(*cur) != tps(topic, range(nparts)):
        return False
    d = describe(admin, group)
    if d.state != ConsumerGroupState.STABLE:
        return False
    return described_assignment(d) == {m.name: c for m, c in zip(members, cur)}


def wait_settled(admin, group, members, topic, nparts, sizes, timeout=45):
    def what():
        try:
            d = describe(admin, group)
            dv = "%s %s" % (d.state, sorted((k, sorted(v))
                                             for k, v in described_assignment(d).items()))
        except KafkaException as e:
            dv = repr(e)
        return "group %s settled at %s: members %s; described %s" % (
            group, sizes, assignments_str(members), dv)
    wait_until(lambda: settled(admin, group, members, topic, nparts, sizes), timeout, what,
               interval=0.2)


def committed(admin, group):
    res = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=10)[group].result(timeout=15)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, "offset fetch error for %s: %s" % (tp, tp.error)
        out[(tp.topic, tp.partition)] = tp.offset
    return out


def produce(bootstrap, topic, items, timeout=60):
    """items: [(partition, value bytes)] -> [(partition, offset, value)]."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value()))

    for i, (part, value) in enumerate(items):
        while True:
            try:
                p.produce(topic, value, partition=part, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(timeout) == 0, "messages still in flight after %ss" % timeout
    assert not errors, errors[:5]
    return delivered


def topic_id_bytes(admin, topic):
    from confluent_kafka import TopicCollection
    td = admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(
        timeout=15)
    return struct.pack(">qq", td.topic_id.get_most_significant_bits(),
                       td.topic_id.get_least_significant_bits())


# --------------------------------------------------------------------------
# 1. Three members, six partitions, 30,000 messages exactly once
# --------------------------------------------------------------------------


def test_three_members_consume_30000_exactly_once(kb, admin):
    topic = create_topic(admin, unique_topic("cp-three"), partitions=6)
    group = unique_group("three")
    members = [Member(kb.bootstrap, group, [topic], "three-%d" % i) for i in range(3)]
    try:
        wait_settled(admin, group, members, topic, 6, [2, 2, 2])
        d = describe(admin, group)
        assert d.type == ConsumerGroupType.CONSUMER, d.type
        assert len(d.members) == 3
        baseline = [m.counts() for m in members]

        n = 30000
        produced = produce(kb.bootstrap, topic, [(i % 6, b"%d" % i) for i in range(n)])
        assert len(produced) == n

        wait_until(lambda: sum(len(m.got()) for m in members) >= n, 90,
                   lambda: "%d messages, got %d" % (n, sum(len(m.got()) for m in members)))
        time.sleep(1.0)   # anything delivered twice would show up now

        seen = collections.Counter()
        for m in members:
            mine = m.current()
            for (_, t, p, o, v) in m.got():
                assert (t, p) in mine, "%s got %s/%d which is not assigned to it (%s)" % (
                    m.name, t, p, sorted(mine))
                seen[(p, o)] += 1
        dups = {k: c for k, c in seen.items() if c > 1}
        assert not dups, "delivered more than once: %s" % sorted(dups.items())[:20]
        assert set(seen) == {(p, o) for p, o, _ in produced}
        assert [m.counts() for m in members] == baseline, "a rebalance happened mid-test: %s" % (
            [m.events for m in members])
        for m in members:
            assert not m.errors, "%s: %s" % (m.name, m.errors)

        # The asynchronous per-batch commits (OffsetCommit with member epochs)
        # all landed: every partition committed at its end.
        want = {(topic, p): n // 6 for p in range(6)}
        wait_until(lambda: committed(admin, group) == want, 20,
                   lambda: "committed %s == %s" % (sorted(committed(admin, group).items()),
                                                    sorted(want.items())))
        for m in members:
            assert not m.commit_errors, "%s: %s" % (m.name, m.commit_errors)
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 3
    finally:
        stop_all(members)


# --------------------------------------------------------------------------
# 2. Ownership never overlaps while a member joins and another leaves
# --------------------------------------------------------------------------


def ownership_intervals(events, end_times):
    """events: EventLog entries -> {tp: [(start, end, member)]}.  A partition a
    member still holds at the end is open until end_times[member] (inf when
    the member is still running)."""
    open_ = {}
    out = collections.defaultdict(list)
    problems = []
    for t, member, kind, parts in sorted(events, key=lambda e: e[0]):
        for tp in sorted(parts):
            if kind == "assign":
                if (member, tp) in open_:
                    problems.append("%s assigned %s twice" % (member, tp))
                    continue
                open_[(member, tp)] = t
            else:
                start = open_.pop((member, tp), None)
                if start is None:
                    problems.append("%s: %s of %s it did not hold" % (member, kind, tp))
                    continue
                out[tp].append((start, t, member))
    for (member, tp), start in open_.items():
        out[tp].append((start, end_times.get(member, math.inf), member))
    return out, problems


def overlaps(intervals):
    found = []
    for tp, ivs in intervals.items():
        ivs = sorted(ivs)
        held = None   # the interval reaching furthest so far
        for iv in ivs:
            if held is not None and iv[0] < held[1]:
                found.append((tp, held, iv))
            if held is None or iv[1] > held[1]:
                held = iv
    return found


def stale_only(commit_error):
    err, parts = commit_error
    return (err is not None and err.code() == KafkaError.STALE_MEMBER_EPOCH
            and all(e.code() == KafkaError.STALE_MEMBER_EPOCH for _, _, e in parts))


def test_partition_ownership_never_overlaps(kb, admin):
    topic = create_topic(admin, unique_topic("cp-own"), partitions=6)
    group = unique_group("own")
    log = EventLog()
    members = [Member(kb.bootstrap, group, [topic], "own-%d" % i, log=log,
                      commit_on_revoke=True) for i in range(3)]
    everyone = list(members)
    stop_producing = threading.Event()
    produced, perrs = [], []

    def producer_loop():
        p = Producer({"bootstrap.servers": kb.bootstrap, "linger.ms": 2})

        def cb(err, msg):
            if err:
                perrs.append(err)
            else:
                produced.append((msg.partition(), msg.offset(), int(msg.value())))
        i = 0
        while not stop_producing.is_set():
            p.produce(topic, b"%d" % i, partition=i % 6, on_delivery=cb)
            p.poll(0)
            i += 1
            time.sleep(0.005)
        p.flush(30)

    pt = threading.Thread(target=producer_loop, daemon=True)
    try:
        wait_settled(admin, group, members, topic, 6, [2, 2, 2])
        pt.start()
        wait_until(lambda: all(len(m.got()) >= 20 for m in members), 30,
                   lambda: "all three consuming: %s" % [len(m.got()) for m in members])

        # A fourth member joins: two partitions move to it.
        fourth = Member(kb.bootstrap, group, [topic], "own-3", log=log, commit_on_revoke=True)
        everyone.append(fourth)
        members.append(fourth)
        wait_settled(admin, group, members, topic, 6, [1, 1, 2, 2])
        wait_until(lambda: len(fourth.got()) >= 10, 20, "the fourth member consuming")

        # One of the first three closes: its partitions move to the others.
        leaver = members.pop(0)
        leaver.stop()
        wait_settled(admin, group, members, topic, 6, [2, 2, 2])
        counts = [len(m.got()) for m in members]
        wait_until(lambda: all(len(m.got()) >= c + 10 for m, c in zip(members, counts)), 20,
                   "all three remaining consuming after the leave")

        stop_producing.set()
        pt.join(40)
        assert not pt.is_alive(), "producer did not finish"
        assert not perrs, perrs[:5]
        assert len(produced) > 300, len(produced)
        want = {v for _, _, v in produced}

        def consumed():
            return {int(m_[4]) for m in everyone for m_ in m.got()}
        wait_until(lambda: want <= consumed(), 30,
                   lambda: "every produced record consumed; missing %d, e.g. %s" % (
                       len(want - consumed()), sorted(want - consumed())[:10]))

        events = log.snapshot()
        end_times = {leaver.name: leaver.closed_at}
        intervals, problems = ownership_intervals(events, end_times)
        assert not problems, problems
        assert not [e for e in events if e[2] == "lost"], \
            "partitions lost (member fenced): %s" % [e for e in events if e[2] == "lost"]
        ov = overlaps(intervals)
        assert not ov, "a partition was held by two members at once: %s\nevents: %s" % (
            ov, events)

        # Every partition ends with exactly one (live) member; the leaver holds nothing.
        assert leaver.current() == set()
        final = [m.current() for m in members]
        assert sum(len(a) for a in final) == 6 and set().union(*final) == tps(topic, range(6))
        for tp in tps(topic, range(6)):
            open_owners = [iv[2] for iv in intervals[tp] if iv[1] == math.inf]
            assert len(open_owners) == 1, (tp, intervals[tp])

        # Messages were handed to a member only while it held the partition.
        for m in everyone:
            for (t, tp_topic, p, o, v) in m.got():
                ok = any(member == m.name and s <= t <= e
                         for s, e, member in intervals[(tp_topic, p)])
                assert ok, "%s got %s/%d@%d at %.3f outside its ownership %s" % (
                    m.name, tp_topic, p, o, t, intervals[(tp_topic, p)])

        # At least once; duplicates only on partitions that changed hands.
        moved = {tp[1] for tp, ivs in intervals.items() if len({iv[2] for iv in ivs}) > 1}
        assert moved, "no partition changed hands: %s" % dict(intervals)
        seen = collections.Counter()
        for m in everyone:
            for (_, _, p, o, _) in m.got():
                seen[(p, o)] += 1
        dups = {k: c for k, c in seen.items() if c > 1}
        assert all(p in moved for p, _ in dups), \
            "duplicates on partitions that never moved: %s (moved %s)" % (dups, moved)
        # Synchronous commits in on_revoke (the member's epoch is unchanged
        # while it revokes) all succeed; an asynchronous per-batch commit may
        # race with a heartbeat that moves the member to a new epoch
        # (STALE_MEMBER_EPOCH, retriable), but fails for no other reason.
        for m in everyone:
            assert not m.errors, "%s: %s" % (m.name, m.errors)
            bad = [e for e in m.commit_errors if isinstance(e[0], str) or not stale_only(e)]
            assert not bad, "%s: %s" % (m.name, bad)
    finally:
        stop_producing.set()
        if pt.is_alive():
            pt.join(40)
        stop_all(everyone)


# --------------------------------------------------------------------------
# 2b. Online migration: a classic group taken over member by member
# --------------------------------------------------------------------------

CLASSIC = {"group.protocol": "classic", "session.timeout.ms": 6000,
           "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"}


def test_classic_group_is_taken_over_by_consumer_members(kb, admin):
    """Two classic (eager, range) members consume; consumer-protocol members
    join one by one while the classic ones leave one by one. The group
    becomes a consumer group on the first consumer-protocol member, keeps
    its committed offsets, never has a partition held by two members at
    once, and consumes every record."""
    topic = create_topic(admin, unique_topic("cp-mig"), partitions=6)
    group = unique_group("mig")
    log = EventLog()
    c1 = Member(kb.bootstrap, group, [topic], "classic-1", log=log, commit_on_revoke=True,
                **CLASSIC)
    c2 = Member(kb.bootstrap, group, [topic], "classic-2", log=log, commit_on_revoke=True,
                **CLASSIC)
    everyone = [c1, c2]
    stop_producing = threading.Event()
    produced, perrs = [], []

    def producer_loop():
        p = Producer({"bootstrap.servers": kb.bootstrap, "linger.ms": 2})

        def cb(err, msg):
            if err:
                perrs.append(err)
            else:
                produced.append((msg.partition(), msg.offset(), int(msg.value())))
        i = 0
        while not stop_producing.is_set():
            p.produce(topic, b"%d" % i, partition=i % 6, on_delivery=cb)
            p.poll(0)
            i += 1
            time.sleep(0.005)
        p.flush(30)

    pt = threading.Thread(target=producer_loop, daemon=True)
    try:
        def classic_settled():
            cur = [c1.current(), c2.current()]
            return (sorted(len(a) for a in cur) == [3, 3]
                    and set().union(*cur) == tps(topic, range(6)))
        wait_until(classic_settled, 45, lambda: "classic members settled: %s" %
                   assignments_str([c1, c2]))
        pt.start()
        wait_until(lambda: all(len(m.got()) >= 20 for m in (c1, c2)), 30,
                   "both classic members consuming")
        wait_until(lambda: sum(committed(admin, group).values()) > 0, 20,
                   "classic members committed offsets")
        before = committed(admin, group)
        assert admin.list_consumer_groups(request_timeout=10).result(timeout=15) is not None

        # The first consumer-protocol member converts the group.
        k1 = Member(kb.bootstrap, group, [topic], "consumer-1", log=log, commit_on_revoke=True)
        everyone.append(k1)
        wait_settled(admin, group, [c1, c2, k1], topic, 6, [2, 2, 2])
        d = describe(admin, group)
        assert d.type == ConsumerGroupType.CONSUMER, d.type
        # Offsets committed by the classic members survived the conversion.
        after = committed(admin, group)
        for tp, off in before.items():
            assert after.get(tp, -1) >= off, (tp, before, after)
        wait_until(lambda: len(k1.got()) >= 10, 20, "the consumer-protocol member consuming")

        # Classic members leave one by one; a second consumer-protocol member joins.
        c1.stop()
        wait_settled(admin, group, [c2, k1], topic, 6, [3, 3])
        k2 = Member(kb.bootstrap, group, [topic], "consumer-2", log=log, commit_on_revoke=True)
        everyone.append(k2)
        wait_settled(admin, group, [c2, k1, k2], topic, 6, [2, 2, 2])
        c2.stop()
        wait_settled(admin, group, [k1, k2], topic, 6, [3, 3])
        counts = [len(m.got()) for m in (k1, k2)]
        wait_until(lambda: all(len(m.got()) >= c + 10 for m, c in zip((k1, k2), counts)), 20,
                   "both consumer-protocol members consuming")

        stop_producing.set()
        pt.join(40)
        assert not pt.is_alive(), "producer did not finish"
        assert not perrs, perrs[:5]
        want = {v for _, _, v in produced}

        def consumed():
            return {int(m_[4]) for m in everyone for m_ in m.got()}
        wait_until(lambda: want <= consumed(), 30,
                   lambda: "every produced record consumed; missing %d" % len(want - consumed()))

        events = log.snapshot()
        intervals, problems = ownership_intervals(
            events, {c1.name: c1.closed_at, c2.name: c2.closed_at})
        assert not problems, problems
        assert not [e for e in events if e[2] == "lost"], [e for e in events if e[2] == "lost"]
        ov = overlaps(intervals)
        assert not ov, "a partition was held by two members at once: %s\nevents: %s" % (
            ov, events)

        # The final commits land at the end of every partition.
        ends = {}
        for p_, o, _ in produced:
            ends[(topic, p_)] = max(ends.get((topic, p_), 0), o + 1)
        wait_until(lambda: committed(admin, group) == ends, 30,
                   lambda: "committed %s == ends %s" % (committed(admin, group), ends))
        for m in everyone:
            assert not m.errors, "%s: %s" % (m.name, m.errors)
    finally:
        stop_producing.set()
        if pt.is_alive():
            pt.join(40)
        stop_all(everyone)


# --------------------------------------------------------------------------
# 3. A regex subscription picks up a topic created later
# --------------------------------------------------------------------------


def test_regex_subscription_picks_up_new_topic(kb, admin):
    tag = uuid.uuid4().hex[:10]
    first = create_topic(admin, "rx-%s-a" % tag, partitions=2)
    # Names the regex must not match (it matches whole names only).
    decoy1 = create_topic(admin, "other-rx-%s-a" % tag, partitions=1)
    decoy2 = create_topic(admin, "rx-%s" % tag, partitions=1)
    group = unique_group("rx")
    m = Member(kb.bootstrap, group, ["^rx-%s-.*" % tag], "rx-1",
               **{"topic.metadata.refresh.interval.ms": 1000})
    try:
        wait_until(lambda: m.current() == tps(first, range(2)), 30,
                   lambda: "regex member assigned %s: %s" % (first, sorted(m.current())))
        produce(kb.bootstrap, first, [(0, b"a0"), (1, b"a1")])
        produce(kb.bootstrap, decoy1, [(0, b"d1")])
        produce(kb.bootstrap, decoy2, [(0, b"d2")])
        wait_until(lambda: {v for *_, v in m.got()} >= {b"a0", b"a1"}, 20,
                   "regex member consumes the first topic")

        second = create_topic(admin, "rx-%s-b" % tag, partitions=3)
        t_created = time.monotonic()
        wait_until(lambda: tps(second, range(3)) <= m.current(), 30,
                   lambda: "regex member picks up %s: %s" % (second, sorted(m.current())))
        picked_up = time.monotonic() - t_created
        assert picked_up < 15, "took %.1fs to pick up the new topic" % picked_up
        produce(kb.bootstrap, second, [(p, b"b%d" % p) for p in range(3)])
        wait_until(lambda: {v for *_, v in m.got()} >= {b"b0", b"b1", b"b2"}, 20,
                   "regex member consumes the new topic")

        assert m.current() == tps(first, range(2)) | tps(second, range(3))
        assert {t for _, t, *_ in m.got()} == {first, second}
        d = describe(admin, group)
        assert d.type == ConsumerGroupType.CONSUMER
        assert described_assignment(d) == {"rx-1": tps(first, range(2)) | tps(second, range(3))}
        assert not m.errors, m.errors
    finally:
        m.stop()


# --------------------------------------------------------------------------
# 4. AdminClient: describe / list with group types; classic groups beside
# --------------------------------------------------------------------------


def test_admin_describe_and_list_consumer_groups(kb, admin):
    topic = create_topic(admin, unique_topic("cp-adm"), partitions=4)
    g_uniform = unique_group("adm-u")
    g_range = unique_group("adm-r")
    g_classic = unique_group("adm-c")
    uni = [Member(kb.bootstrap, g_uniform, [topic], "adm-u-%d" % i) for i in range(2)]
    rng = [Member(kb.bootstrap, g_range, [topic], "adm-r-%d" % i,
                  **{"group.remote.assignor": "range"}) for i in range(2)]
    classic = Member(kb.bootstrap, g_classic, [topic], "adm-c-0",
                     **{"group.protocol": "classic", "session.timeout.ms": 6000,
                        "heartbeat.interval.ms": 500})
    everyone = uni + rng + [classic]
    try:
        wait_settled(admin, g_uniform, uni, topic, 4, [2, 2])
        wait_settled(admin, g_range, rng, topic, 4, [2, 2])
        wait_until(lambda: classic.current() == tps(topic, range(4)), 30, "classic member assigned")

        # ConsumerGroupDescribe
        for group, members, assignor in ((g_uniform, uni, "uniform"), (g_range, rng, "range")):
            d = describe(admin, group)
            assert d.group_id == group
            assert d.type == ConsumerGroupType.CONSUMER, d.type
            assert d.state == ConsumerGroupState.STABLE, d.state
            assert not d.is_simple_consumer_group
            assert d.partition_assignor == assignor, d.partition_assignor
            assert d.coordinator.id == 0
            assert sorted(m.client_id for m in d.members) == sorted(m.name for m in members)
            by_name = {m.name: m for m in members}
            for dm in d.members:
                assert dm.member_id and dm.host, dm
                assert dm.group_instance_id is None
                got = {(tp.topic, tp.partition) for tp in dm.assignment.topic_partitions}
                assert got == by_name[dm.client_id].current(), (dm.client_id, got)
                assert dm.target_assignment is not None
                target = {(tp.topic, tp.partition)
                          for tp in dm.target_assignment.topic_partitions}
                assert target == got, (dm.client_id, target, got)
        # The range assignor gives each member a contiguous range.
        assert sorted(sorted(p for _, p in m.current()) for m in rng) == [[0, 1], [2, 3]]

        # The classic group: DescribeGroups (after GROUP_ID_NOT_FOUND from
        # ConsumerGroupDescribe) reports it as CLASSIC.
        d = describe(admin, g_classic)
        assert d.type == ConsumerGroupType.CLASSIC, d.type
        assert d.state == ConsumerGroupState.STABLE, d.state
        assert d.partition_assignor in ("range", "roundrobin"), d.partition_assignor
        assert [m.client_id for m in d.members] == ["adm-c-0"]
        assert described_assignment(d) == {"adm-c-0": tps(topic, range(4))}

        # ListGroups: types, and the type filter
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        assert not listed.errors, listed.errors
        by_id = {g.group_id: g for g in listed.valid}
        for group, typ in ((g_uniform, ConsumerGroupType.CONSUMER),
                           (g_range, ConsumerGroupType.CONSUMER),
                           (g_classic, ConsumerGroupType.CLASSIC)):
            assert group in by_id, (group, sorted(by_id))
            assert by_id[group].type == typ, (group, by_id[group].type)
            assert by_id[group].state == ConsumerGroupState.STABLE, (group, by_id[group].state)
            assert not by_id[group].is_simple_consumer_group
        only_consumer = admin.list_consumer_groups(
            types={ConsumerGroupType.CONSUMER}, request_timeout=10).result(timeout=15)
        ids = {g.group_id for g in only_consumer.valid}
        assert {g_uniform, g_range} <= ids and g_classic not in ids, ids
        assert all(g.type == ConsumerGroupType.CONSUMER for g in only_consumer.valid)
        only_classic = admin.list_consumer_groups(
            types={ConsumerGroupType.CLASSIC}, request_timeout=10).result(timeout=15)
        ids = {g.group_id for g in only_classic.valid}
        assert g_classic in ids and not ({g_uniform, g_range} & ids), ids
        both = admin.list_consumer_groups(
            types={ConsumerGroupType.CONSUMER}, states={ConsumerGroupState.STABLE},
            request_timeout=10).result(timeout=15)
        assert {g_uniform, g_range} <= {g.group_id for g in both.valid}
        none = admin.list_consumer_groups(
            types={ConsumerGroupType.CONSUMER}, states={ConsumerGroupState.EMPTY},
            request_timeout=10).result(timeout=15)
        assert not ({g_uniform, g_range} & {g.group_id for g in none.valid})

        # Once its members close, a consumer group is EMPTY (still type CONSUMER).
        stop_all(uni)
        wait_until(lambda: describe(admin, g_uniform).state == ConsumerGroupState.EMPTY, 20,
                   lambda: "uniform group empty: %s" % describe(admin, g_uniform).state)
        d = describe(admin, g_uniform)
        assert d.members == [] and d.type == ConsumerGroupType.CONSUMER
        for m in everyone:
            assert not m.errors, (m.name, m.errors)
    finally:
        stop_all(everyone)


# --------------------------------------------------------------------------
# 5. Committed offsets survive the members; a new member resumes from them
# --------------------------------------------------------------------------


def test_committed_offsets_resume_after_all_members_close(kb, admin):
    topic = create_topic(admin, unique_topic("cp-off"), partitions=4)
    group = unique_group("off")
    produce(kb.bootstrap, topic, [(p, b"%d-%d" % (p, i)) for i in range(10) for p in range(4)])
    members = [Member(kb.bootstrap, group, [topic], "off-%d" % i, commit="none")
               for i in range(2)]
    resumed = None
    try:
        wait_settled(admin, group, members, topic, 4, [2, 2])
        wait_until(lambda: sum(len(m.got()) for m in members) >= 40, 20,
                   lambda: "all 40 consumed: %d" % sum(len(m.got()) for m in members))
        # Each member commits offset 3 + partition for the partitions it holds
        # (a synchronous OffsetCommit carrying its member epoch).
        want = {(topic, p): 3 + p for p in range(4)}
        for m in members:
            offs = [TopicPartition(t, p, want[(t, p)]) for (t, p) in sorted(m.current())]
            res = m.call(lambda c, offs=offs: c.commit(offsets=offs, asynchronous=False))
            assert all(tp.error is None for tp in res), res
        assert committed(admin, group) == want

        stop_all(members)
        wait_until(lambda: describe(admin, group).state == ConsumerGroupState.EMPTY, 20,
                   "group empty after its members closed")
        assert committed(admin, group) == want

        resumed = Member(kb.bootstrap, group, [topic], "off-new", commit="none")
        wait_settled(admin, group, [resumed], topic, 4, [4])
        wait_until(lambda: len(resumed.got()) >= 40 - sum(want.values()), 20,
                   lambda: "resumed member got %d" % len(resumed.got()))
        time.sleep(1.0)
        got = collections.defaultdict(list)
        for (_, t, p, o, _) in resumed.got():
            got[p].append(o)
        assert {p: sorted(os_) for p, os_ in got.items()} == \
            {p: list(range(3 + p, 10)) for p in range(4)}, dict(got)
        for m in members + [resumed]:
            assert not m.errors, (m.name, m.errors)
    finally:
        stop_all(members + ([resumed] if resumed else []))


# --------------------------------------------------------------------------
# 6. Static membership
# --------------------------------------------------------------------------


def test_static_member_returns_to_its_partitions(kb, admin):
    topic = create_topic(admin, unique_topic("cp-static"), partitions=4)
    group = unique_group("static")
    inst_a, inst_b = "inst-a-" + uuid.uuid4().hex[:8], "inst-b-" + uuid.uuid4().hex[:8]
    a = Member(kb.bootstrap, group, [topic], "st-a", **{"group.instance.id": inst_a})
    b = Member(kb.bootstrap, group, [topic], "st-b", **{"group.instance.id": inst_b})
    a2 = None
    try:
        wait_settled(admin, group, [a, b], topic, 4, [2, 2])
        d = describe(admin, group)
        assert {m.client_id: m.group_instance_id for m in d.members} == \
            {"st-a": inst_a, "st-b": inst_b}
        pa, pb = a.current(), b.current()
        b_events = b.counts()

        # a closes (librdkafka: ConsumerGroupHeartbeat with epoch -2, a static
        # member's temporary leave) and comes back with the same instance id
        # well within the session timeout: it gets the same partitions, and b
        # is not disturbed meanwhile.
        a.stop()
        t_left = time.monotonic()
        time.sleep(2.0)   # a restart: several heartbeat intervals, well within the session
        a2 = Member(kb.bootstrap, group, [topic], "st-a2", **{"group.instance.id": inst_a})
        wait_settled(admin, group, [a2, b], topic, 4, [2, 2])
        assert a2.current() == pa, "returning static member got %s, had %s" % (
            sorted(a2.current()), sorted(pa))
        assert b.current() == pb
        assert b.counts() == b_events, \
            "the other member was rebalanced while the static member was away: %s" % (
                b.events[b_events:],)
        assert time.monotonic() - t_left < SESSION_MS / 1000.0 + 10
        d = describe(admin, group)
        assert {m.client_id: m.group_instance_id for m in d.members} == \
            {"st-a2": inst_a, "st-b": inst_b}

        # a2 closes and stays away: its partitions wait for the session timeout
        # before they move to b.
        a2.stop()
        t_left = time.monotonic()
        wait_until(lambda: b.current() == tps(topic, range(4)), SESSION_MS / 1000.0 + 20,
                   lambda: "b takes over after the session timeout: %s" % sorted(b.current()))
        took = time.monotonic() - t_left
        assert took >= SESSION_MS / 1000.0 - 2, \
            "a departed static member's partitions moved after %.1fs, before its session " \
            "timeout (%d ms)" % (took, SESSION_MS)
        wait_settled(admin, group, [b], topic, 4, [4])
        assert not a.errors and not a2.errors and not b.errors
    finally:
        stop_all([a, b] + ([a2] if a2 else []))


# --------------------------------------------------------------------------
# 7. Bad input over the wire
# --------------------------------------------------------------------------


class RawMember:
    """A consumer-group member driven by hand-built ConsumerGroupHeartbeat v1."""

    def __init__(self, bootstrap, group, topics, member_id=None):
        self.conn = kw.KafkaConn.to(bootstrap, timeout=15)
        self.group = group
        self.topics = topics
        self.member_id = member_id or "raw-" + uuid.uuid4().hex
        self.epoch = 0
        self.assignment = {}

    def heartbeat(self, **kwargs):
        return kw.consumer_group_heartbeat(self.conn, self.group, self.member_id, **kwargs)

    def join(self, **extra):
        args = dict(member_epoch=0, rebalance_timeout_ms=30000,
                    subscribed_topic_names=self.topics, topic_partitions=[])
        args.update(extra)
        r = self.heartbeat(**args)
        if r["error_code"] == kw.NONE:
            self.epoch = r["member_epoch"]
            if r["assignment"] is not None:
                self.assignment = r["assignment"]
        return r

    def beat(self):
        """A heartbeat reporting what it owns (its last assignment)."""
        r = self.heartbeat(member_epoch=self.epoch,
                           topic_partitions=sorted(self.assignment.items()))
        if r["error_code"] == kw.NONE:
            self.epoch = r["member_epoch"]
            if r["assignment"] is not None:
                self.assignment = r["assignment"]
        return r

    def leave(self):
        return self.heartbeat(member_epoch=-1)

    def close(self):
        self.conn.close()


def test_bad_consumer_group_heartbeats_get_kafka_errors(kb, admin):
    topic = create_topic(admin, unique_topic("cp-bad"), partitions=2)
    tid = topic_id_bytes(admin, topic)
    group = unique_group("bad")
    raw = RawMember(kb.bootstrap, group, [topic])
    classic = None
    try:
        with kw.KafkaConn.to(kb.bootstrap) as conn:
            def hb(g, member_id, epoch, version=1, **kwargs):
                return kw.consumer_group_heartbeat(conn, g, member_id, epoch,
                                                   version=version, **kwargs)

            # A member joins (epoch 0, its own member id): epoch >= 1, the
            # group's heartbeat interval, both partitions of the topic.
            r = raw.join()
            assert r["error_code"] == kw.NONE, r
            assert r["member_id"] == raw.member_id, r
            assert r["member_epoch"] >= 1, r
            assert r["heartbeat_interval_ms"] == HEARTBEAT_MS, r
            assert r["assignment"] == {tid: [0, 1]}, r
            r = raw.beat()
            assert r["error_code"] == kw.NONE and r["member_epoch"] == raw.epoch, r

            # Unknown member, epoch > 0 -> UNKNOWN_MEMBER_ID
            r = hb(group, "nobody-" + uuid.uuid4().hex, 5)
            assert r["error_code"] == kw.UNKNOWN_MEMBER_ID, r
            # The member with a wrong epoch -> FENCED_MEMBER_EPOCH
            r = hb(group, raw.member_id, raw.epoch + 10)
            assert r["error_code"] == kw.FENCED_MEMBER_EPOCH, r
            # Unsupported server assignor -> UNSUPPORTED_ASSIGNOR
            r = hb(group, "m-" + uuid.uuid4().hex, 0, rebalance_timeout_ms=30000,
                   subscribed_topic_names=[topic], server_assignor="no-such-assignor",
                   topic_partitions=[])
            assert r["error_code"] == kw.UNSUPPORTED_ASSIGNOR, r
            # A regex that does not compile -> INVALID_REGULAR_EXPRESSION
            r = hb(group, "m-" + uuid.uuid4().hex, 0, rebalance_timeout_ms=30000,
                   subscribed_topic_regex="(", topic_partitions=[])
            assert r["error_code"] == kw.INVALID_REGULAR_EXPRESSION, r
            # v1 without a member id -> INVALID_REQUEST
            r = hb(group, "", 0, rebalance_timeout_ms=30000, subscribed_topic_names=[topic],
                   topic_partitions=[])
            assert r["error_code"] == kw.INVALID_REQUEST, r
            # v0: the coordinator names the member (and it can leave again).
            g0 = unique_group("bad-v0")
            r = hb(g0, "", 0, version=0, rebalance_timeout_ms=30000,
                   subscribed_topic_names=[topic], topic_partitions=[])
            assert r["error_code"] == kw.NONE and r["member_id"], r
            r = hb(g0, r["member_id"], -1, version=0)
            assert r["error_code"] == kw.NONE and r["member_epoch"] == -1, r

            # None of that disturbed the real member.
            r = raw.beat()
            assert r["error_code"] == kw.NONE, r
            assert raw.assignment == {tid: [0, 1]}, raw.assignment
            d = describe(admin, group)
            assert d.type == ConsumerGroupType.CONSUMER and d.state == ConsumerGroupState.STABLE
            assert [m.member_id for m in d.members] == [raw.member_id]

            # A classic JoinGroup into the consumer group is a migrating
            # member: MEMBER_ID_REQUIRED first (v4+); one of another protocol
            # type, or without a consumer subscription, is
            # INCONSISTENT_GROUP_PROTOCOL.
            body = kw.join_group_v5_body(group, "", protocols=[
                ("range", kw.consumer_subscription_v0([topic]))])
            j = kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, body))
            assert j["error_code"] == kw.MEMBER_ID_REQUIRED and j["member_id"], j
            for ptype, meta in (("connect", kw.consumer_subscription_v0([topic])),
                                ("consumer", b"\x00")):
                body = kw.join_group_v5_body(group, "", protocol_type=ptype,
                                             protocols=[("range", meta)])
                j = kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, body))
                assert j["error_code"] == kw.INCONSISTENT_GROUP_PROTOCOL, j

            # OffsetCommit v9 with member epochs
            def commit(epoch, member_id, offset):
                return kw.offset_commit_v9(conn, group, epoch, member_id,
                                           {topic: [(0, offset, None)]})
            assert commit(raw.epoch, raw.member_id, 1) == {(topic, 0): kw.NONE}
            assert commit(raw.epoch - 1, raw.member_id, 2) == {(topic, 0): kw.STALE_MEMBER_EPOCH}
            assert commit(raw.epoch + 1, raw.member_id, 3) == \
                {(topic, 0): kw.FENCED_MEMBER_EPOCH}
            assert commit(raw.epoch, "nobody", 4) == {(topic, 0): kw.UNKNOWN_MEMBER_ID}
            assert commit(-1, "", 5) == {(topic, 0): kw.UNKNOWN_MEMBER_ID}, \
                "a commit without a member while the group has members"
            assert committed(admin, group)[(topic, 0)] == 1

            r = raw.leave()
            assert r["error_code"] == kw.NONE and r["member_epoch"] == -1, r
            wait_until(lambda: describe(admin, group).state == ConsumerGroupState.EMPTY, 10,
                       "group empty after the raw member left")

            # A heartbeat (not a join) to a classic group with an active
            # member -> GROUP_ID_NOT_FOUND, and the classic member is
            # unaffected. (A join converts the group: see the migration tests.)
            cgroup = unique_group("bad-classic")
            classic = Member(kb.bootstrap, cgroup, [topic], "bad-classic",
                             **{"group.protocol": "classic", "session.timeout.ms": 6000,
                                "heartbeat.interval.ms": 500})
            wait_until(lambda: classic.current() == tps(topic, range(2)), 30,
                       "classic member assigned")
            base = classic.counts()
            r = hb(cgroup, "m-" + uuid.uuid4().hex, 3)
            assert r["error_code"] in (kw.GROUP_ID_NOT_FOUND, kw.UNKNOWN_MEMBER_ID), r
            n0 = len(classic.got())
            produce(kb.bootstrap, topic, [(p, b"classic-%d" % p) for p in range(2)])
            wait_until(lambda: {v for *_, v in classic.got()[n0:]} >= {b"classic-0",
                                                                         b"classic-1"},
                       15, "classic member keeps consuming")
            time.sleep(1.0)
            assert classic.counts() == base, "the classic member was rebalanced"
            d = describe(admin, cgroup)
            assert d.type == ConsumerGroupType.CLASSIC and d.state == ConsumerGroupState.STABLE
            assert [m.client_id for m in d.members] == ["bad-classic"]
            assert not classic.errors, classic.errors
    finally:
        raw.close()
        if classic:
            classic.stop()


def test_consumer_group_goes_back_to_classic_when_its_last_consumer_member_leaves(kb, admin):
    """Rolling downgrade: classic members join a consumer group, the
    consumer-protocol member leaves, and the group becomes a classic group
    again (policy bidirectional): its members rejoin, the leader assigns,
    every record is consumed, a partition is never held twice, and the
    committed offsets stay."""
    topic = create_topic(admin, unique_topic("cp-down"), partitions=4)
    group = unique_group("down")
    log = EventLog()
    produce(kb.bootstrap, topic, [(i % 4, b"%d" % i) for i in range(400)])
    k1 = Member(kb.bootstrap, group, [topic], "down-consumer", log=log, commit_on_revoke=True)
    everyone = [k1]
    try:
        wait_settled(admin, group, [k1], topic, 4, [4])
        wait_until(lambda: len(k1.got()) >= 100, 20, "the consumer-protocol member consuming")
        c1 = Member(kb.bootstrap, group, [topic], "down-classic-1", log=log,
                    commit_on_revoke=True, **CLASSIC)
        everyone.append(c1)
        wait_settled(admin, group, [k1, c1], topic, 4, [2, 2])
        assert describe(admin, group).type == ConsumerGroupType.CONSUMER
        k1.stop()
        # Only a classic member left: a classic group again, and it owns everything.
        wait_until(lambda: describe(admin, group).type == ConsumerGroupType.CLASSIC, 30,
                   lambda: "group back to classic: %s" % describe(admin, group).type)
        wait_until(lambda: c1.current() == tps(topic, range(4)), 30,
                   lambda: "classic member owns all: %s" % sorted(c1.current()))
        c2 = Member(kb.bootstrap, group, [topic], "down-classic-2", log=log,
                    commit_on_revoke=True, **CLASSIC)
        everyone.append(c2)

        def split():
            a, b = c1.current(), c2.current()
            return len(a) == 2 and len(b) == 2 and a | b == tps(topic, range(4))
        wait_until(split, 45, lambda: "classic members split the partitions: %s" %
                   assignments_str([c1, c2]))
        produce(kb.bootstrap, topic, [(i % 4, b"%d" % i) for i in range(400, 800)])
        want = set(range(800))

        def consumed():
            return {int(m_[4]) for m in everyone for m_ in m.got()}
        wait_until(lambda: want <= consumed(), 30,
                   lambda: "all consumed; missing %d" % len(want - consumed()))
        intervals, problems = ownership_intervals(log.snapshot(), {k1.name: k1.closed_at})
        assert not problems, problems
        ov = overlaps(intervals)
        assert not ov, "a partition was held by two members at once: %s" % ov
        wait_until(lambda: sum(committed(admin, group).values()) == 800, 30,
                   lambda: "committed %s" % committed(admin, group))
        for m in everyone:
            assert not m.errors, "%s: %s" % (m.name, m.errors)
    finally:
        stop_all(everyone)


def test_migration_policy_disabled_keeps_a_classic_group_classic():
    """group.consumer.migration.policy=disabled: a consumer-protocol join
    to a classic group with members is GROUP_ID_NOT_FOUND (as Kafka), and
    the classic member goes on undisturbed."""
    b = Broker(overrides=dict(FAST, **{"group.consumer.migration.policy": "disabled"}))
    try:
        b.start()
    except BrokerError as e:
        b.cleanup()
        pytest.fail(str(e), pytrace=False)
    classic = None
    try:
        adm = admin_client(b.bootstrap)
        topic = create_topic(adm, unique_topic("cp-nomig"), partitions=2)
        group = unique_group("nomig")
        classic = Member(b.bootstrap, group, [topic], "nomig-classic", **CLASSIC)
        wait_until(lambda: classic.current() == tps(topic, range(2)), 30,
                   "classic member assigned")
        base = classic.counts()
        with kw.KafkaConn.to(b.bootstrap) as conn:
            r = kw.consumer_group_heartbeat(conn, group, "m-" + uuid.uuid4().hex, 0,
                                            rebalance_timeout_ms=30000,
                                            subscribed_topic_names=[topic],
                                            topic_partitions=[])
            assert r["error_code"] == kw.GROUP_ID_NOT_FOUND, r
        n0 = len(classic.got())
        produce(b.bootstrap, topic, [(p, b"nomig-%d" % p) for p in range(2)])
        wait_until(lambda: {v for *_, v in classic.got()[n0:]} >= {b"nomig-0", b"nomig-1"},
                   15, "classic member keeps consuming")
        assert classic.counts() == base, "the classic member was rebalanced"
        d = describe(adm, group)
        assert d.type == ConsumerGroupType.CLASSIC and d.state == ConsumerGroupState.STABLE
        assert not classic.errors, classic.errors
    finally:
        if classic:
            classic.stop()
        b.stop(expect_clean=True)
        b.cleanup()


def test_heartbeat_for_unknown_group_is_group_id_not_found(kb):
    """Kafka: a heartbeat with epoch != 0 for a group that does not exist is
    GROUP_ID_NOT_FOUND (getOrMaybeCreateConsumerGroup, createIfNotExists only
    for epoch 0)."""
    with kw.KafkaConn.to(kb.bootstrap) as conn:
        r = kw.consumer_group_heartbeat(conn, unique_group("nosuch"), "m-" + uuid.uuid4().hex, 5)
        assert r["error_code"] == kw.GROUP_ID_NOT_FOUND, r


# --------------------------------------------------------------------------
# 8. Session expiry, and revoke-before-assign seen from the wire
# --------------------------------------------------------------------------


def test_silent_member_expires_and_partitions_move_only_after_revocation(kb, admin):
    topic = create_topic(admin, unique_topic("cp-exp"), partitions=4)
    tid = topic_id_bytes(admin, topic)
    group = unique_group("exp")
    real = Member(kb.bootstrap, group, [topic], "exp-real")
    raw = RawMember(kb.bootstrap, group, [topic])
    try:
        wait_settled(admin, group, [real], topic, 4, [4])
        # The raw member joins: nothing yet, since every partition is still
        # owned by the real member until it revokes.
        r = raw.join()
        assert r["error_code"] == kw.NONE, r
        first = r["assignment"] or {}
        assert not first.get(tid), "partitions handed out before the owner revoked: %s" % r

        # Heartbeat until it has two partitions, checking that whatever it gets
        # is no longer held by the real member at that moment.
        def got_two():
            r = raw.beat()
            assert r["error_code"] == kw.NONE, r
            mine = {(topic, p) for p in raw.assignment.get(tid, [])}
            overlap = mine & real.current()
            assert not overlap, "handed out %s while the real member still holds them" % (
                sorted(overlap),)
            return len(mine) == 2
        wait_until(got_two, 20, lambda: "raw member gets two partitions: %s" % raw.assignment,
                   interval=0.2)
        wait_until(lambda: len(real.current()) == 2, 10, "real member down to two")
        assert {(topic, p) for p in raw.assignment[tid]} | real.current() == tps(topic, range(4))
        d = describe(admin, group)
        assert len(d.members) == 2

        # The raw member goes silent: after the session timeout it is removed
        # and the real member gets everything back.
        t_silent = time.monotonic()
        wait_until(lambda: real.current() == tps(topic, range(4)), SESSION_MS / 1000.0 + 20,
                   "the real member gets all partitions after the raw member's session expired")
        took = time.monotonic() - t_silent
        assert took >= SESSION_MS / 1000.0 - 1.5, "moved after %.1fs" % took
        wait_settled(admin, group, [real], topic, 4, [4])
        r = raw.beat()
        assert r["error_code"] == kw.UNKNOWN_MEMBER_ID, r
        assert not real.errors, real.errors
    finally:
        raw.close()
        real.stop()
