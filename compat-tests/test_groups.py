"""Consumer groups (issue 3): the classic group protocol as real clients use it.

confluent-kafka members in threads of this process (or in subprocesses, when a
member must die without closing), kafka-python members, AdminClient group
views, and hand-built JoinGroup / SyncGroup / Heartbeat / OffsetCommit requests
for the error paths.  Every test runs on a broker of its own (make_broker) with
a short group.initial.rebalance.delay.ms, and on its own topic/group names.
"""

import collections
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, ConsumerGroupState,
                             ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             Producer, TopicPartition)

import kafka_wire as kw
from ck_helpers import admin_client, create_topic, kafka_error_of
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(90)

# Group settings that keep the tests fast: all members started together land
# in the first generation, without the default 3 s wait.
FAST = {"group.initial.rebalance.delay.ms": "500"}


def unique_group(prefix="g"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for: %s" % (timeout, what()
                                                                          if callable(what)
                                                                          else what))
        time.sleep(interval)


def tps(topic, parts):
    return {(topic, p) for p in parts}


# --------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------


def member_conf(bootstrap, group, name, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
    }
    conf.update(extra)
    return conf


class Member:
    """A confluent-kafka group consumer polled by a thread of its own.  Records
    assignments (on_assign / on_revoke / on_lost) and every message it gets."""

    def __init__(self, bootstrap, group, topics, name, **extra):
        self.name = name
        self.conf = member_conf(bootstrap, group, name, **extra)
        self.c = Consumer(self.conf)
        self.lock = threading.Lock()
        self.assignment = set()
        self.assign_events = []   # (monotonic time, frozenset of (topic, partition))
        self.revoke_events = []
        self.messages = []        # (topic, partition, offset, value)
        self.errors = []
        self.closed_at = None
        self._stop = threading.Event()
        self._close = True
        self.c.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_revoke)
        self.thread = threading.Thread(target=self._run, name="member-" + name, daemon=True)
        self.thread.start()

    def _on_assign(self, consumer, partitions):
        s = frozenset((p.topic, p.partition) for p in partitions)
        with self.lock:
            self.assignment |= s
            self.assign_events.append((time.monotonic(), s))

    def _on_revoke(self, consumer, partitions):
        s = frozenset((p.topic, p.partition) for p in partitions)
        with self.lock:
            self.assignment -= s
            self.revoke_events.append((time.monotonic(), s))

    def _run(self):
        try:
            while not self._stop.is_set():
                for m in self.c.consume(num_messages=100, timeout=0.1):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            with self.lock:
                                self.errors.append(m.error())
                        continue
                    with self.lock:
                        self.messages.append((m.topic(), m.partition(), m.offset(), m.value()))
        finally:
            if self._close:
                self.c.close()
                self.closed_at = time.monotonic()

    def current(self):
        with self.lock:
            return set(self.assignment)

    def got(self):
        with self.lock:
            return list(self.messages)

    def counts(self):
        with self.lock:
            return len(self.assign_events), len(self.revoke_events)

    def stop(self, close=True, timeout=30):
        self._close = close
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "member %s did not stop within %ss" % (
            self.name, timeout)


# A group member in a separate process, so that it can die by SIGKILL without
# librdkafka sending LeaveGroup.  Reports events as JSON lines on stdout.
MEMBER_SCRIPT = r"""
import json, sys
from confluent_kafka import Consumer, KafkaError
conf = json.loads(sys.argv[1])
topics = json.loads(sys.argv[2])

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def parts(ps):
    return [[p.topic, p.partition] for p in ps]

c = Consumer(conf)
c.subscribe(topics, on_assign=lambda cc, ps: out(ev="assign", parts=parts(ps)),
            on_revoke=lambda cc, ps: out(ev="revoke", parts=parts(ps)),
            on_lost=lambda cc, ps: out(ev="revoke", parts=parts(ps)))
out(ev="started")
while True:
    for m in c.consume(num_messages=100, timeout=0.1):
        if m.error():
            out(ev="error", err=str(m.error()))
            continue
        out(ev="msg", t=m.topic(), p=m.partition(), o=m.offset())
"""


class ProcMember:
    def __init__(self, conf, topics):
        self.name = conf.get("client.id", "proc")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MEMBER_SCRIPT, json.dumps(conf), json.dumps(list(topics))],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, text=True)
        self.lock = threading.Lock()
        self.assignment = set()
        self.assign_events = []
        self.revoke_events = []
        self.messages = []
        self.errors = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if ev["ev"] == "assign":
                    s = frozenset(tuple(x) for x in ev["parts"])
                    self.assignment |= s
                    self.assign_events.append((time.monotonic(), s))
                elif ev["ev"] == "revoke":
                    s = frozenset(tuple(x) for x in ev["parts"])
                    self.assignment -= s
                    self.revoke_events.append((time.monotonic(), s))
                elif ev["ev"] == "msg":
                    self.messages.append((ev["t"], ev["p"], ev["o"], None))
                elif ev["ev"] == "error":
                    self.errors.append(ev["err"])

    def current(self):
        with self.lock:
            return set(self.assignment)

    def got(self):
        with self.lock:
            return list(self.messages)

    def counts(self):
        with self.lock:
            return len(self.assign_events), len(self.revoke_events)

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.reader.join(10)

    def stderr_tail(self, n=3000):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-n:]


def balanced(members, topic, nparts, per):
    """Every member holds exactly `per` partitions and together they hold the
    topic's partitions exactly once."""
    cur = [m.current() for m in members]
    return (all(len(a) == per for a in cur) and sum(len(a) for a in cur) == nparts
            and set().union(*cur) == tps(topic, range(nparts)))


def assignments_str(members):
    return "; ".join("%s=%s" % (m.name, sorted(m.current())) for m in members)


# --------------------------------------------------------------------------
# Admin and produce helpers
# --------------------------------------------------------------------------


def produce(bootstrap, topic, items, timeout=15):
    """items: [(partition, value bytes)] -> [(partition, offset)] in delivery order."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    for part, value in items:
        p.produce(topic, value, partition=part, on_delivery=cb)
    assert p.flush(timeout) == 0, "messages still in flight after %ss" % timeout
    assert not errors, errors
    return delivered


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def committed(admin, group):
    """{(topic, partition): offset} from OffsetFetch (list_consumer_group_offsets)."""
    res = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=10)[group].result(timeout=15)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, "offset fetch error for %s: %s" % (tp, tp.error)
        out[(tp.topic, tp.partition)] = tp.offset
    return out


def watermarks(bootstrap, topic, nparts):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_group("wm")})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                for p in range(nparts)}
    finally:
        c.close()


class OffsetWatcher:
    """Polls the group's committed offsets (OffsetFetch through AdminClient)
    and records every value seen, per partition."""

    def __init__(self, admin, group, interval=0.25):
        self.admin, self.group, self.interval = admin, group, interval
        self.history = collections.defaultdict(list)
        self.failures = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                for tp, off in committed(self.admin, self.group).items():
                    h = self.history[tp]
                    if not h or h[-1] != off:
                        h.append(off)
            except Exception as e:   # noqa: BLE001 - recorded and asserted on
                self.failures.append(repr(e))
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self.thread.join(20)


# --------------------------------------------------------------------------
# 1. Three members, six partitions, exactly once
# --------------------------------------------------------------------------


def test_three_members_split_six_partitions_exactly_once(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grp6"), partitions=6)
    group = unique_group("three")
    members = [Member(b.bootstrap, group, [topic], "three-%d" % i) for i in range(3)]
    try:
        wait_until(lambda: balanced(members, topic, 6, 2), 30,
                   lambda: "2 partitions each: " + assignments_str(members))
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE, d.state
        assert len(d.members) == 3
        baseline = [m.counts() for m in members]

        items = [(p, b"m-%d-%d" % (p, i)) for i in range(10) for p in range(6)]
        produced = produce(b.bootstrap, topic, items)
        assert len(produced) == 60

        wait_until(lambda: sum(len(m.got()) for m in members) >= 60, 30,
                   lambda: "60 messages, got %d" % sum(len(m.got()) for m in members))
        time.sleep(1.0)   # anything delivered twice would show up now

        seen = collections.Counter()
        for m in members:
            mine = m.current()
            for (t, p, o, v) in m.got():
                assert (t, p) in mine, "%s got %s/%d which is not assigned to it (%s)" % (
                    m.name, t, p, sorted(mine))
                seen[(p, o)] += 1
        dups = {k: n for k, n in seen.items() if n > 1}
        assert not dups, "delivered more than once: %s" % dups
        assert set(seen) == set(produced), "missing %s, unexpected %s" % (
            sorted(set(produced) - set(seen)), sorted(set(seen) - set(produced)))
        assert [m.counts() for m in members] == baseline, "a rebalance happened mid-test"
        for m in members:
            assert not m.errors, "%s: %s" % (m.name, m.errors)
    finally:
        for m in members:
            m.stop()


# --------------------------------------------------------------------------
# 2. Failure: a member killed without close(), and a member that closes
# --------------------------------------------------------------------------


def test_killed_member_partitions_move_after_session_timeout(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpkill"), partitions=6)
    group = unique_group("kill")
    victim = ProcMember(member_conf(b.bootstrap, group, "victim"), [topic])
    survivors = [Member(b.bootstrap, group, [topic], "surv-%d" % i) for i in range(2)]
    everyone = survivors + [victim]
    watcher = None
    stop_producing = threading.Event()
    produced, perrs = [], []

    def producer_loop():
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 2})

        def cb(err, msg):
            (perrs.append(err) if err else produced.append((msg.partition(), msg.offset())))
        i = 0
        while not stop_producing.is_set():
            p.produce(topic, b"k-%d" % i, partition=i % 6, on_delivery=cb)
            p.poll(0)
            i += 1
            time.sleep(0.01)
        p.flush(15)

    pt = threading.Thread(target=producer_loop, daemon=True)
    try:
        wait_until(lambda: balanced(everyone, topic, 6, 2), 30,
                   lambda: "2 partitions each: " + assignments_str(everyone))
        victim_parts = victim.current()
        watcher = OffsetWatcher(admin, group)
        pt.start()
        # Let the victim consume (and auto-commit) for a while, then kill it.
        wait_until(lambda: len(victim.got()) >= 30, 20, "victim consuming")
        time.sleep(1.0)
        victim.kill9()
        t_kill = time.monotonic()

        def taken_over():
            cur = [m.current() for m in survivors]
            return (all(len(a) == 3 for a in cur)
                    and set().union(*cur) == tps(topic, range(6)))
        wait_until(taken_over, 25, lambda: "survivors own all 6 partitions: "
                   + assignments_str(survivors))
        # Time of the assignment that handed over the victim's partitions.
        t_moved = min(t for m in survivors for (t, s) in m.assign_events
                      if t > t_kill and s & victim_parts)
        elapsed = t_moved - t_kill
        # The broker must wait for the session timeout (6 s after the last
        # heartbeat, which was at most 0.5 s before the kill), not react to the
        # closed connection, and must not wait much longer either.
        print("victim's partitions moved %.2fs after SIGKILL" % elapsed)
        assert 4.0 <= elapsed <= 14.0, \
            "victim's partitions moved %.2fs after SIGKILL (session.timeout.ms=6000)" % elapsed

        time.sleep(1.0)
        stop_producing.set()
        pt.join(20)
        assert not perrs, perrs
        all_produced = set(produced)
        assert len(all_produced) > 100

        def consumed():
            return {(p, o) for m in everyone for (_, p, o, _) in m.got()}
        wait_until(lambda: all_produced <= consumed(), 30,
                   lambda: "%d produced messages never consumed" % len(all_produced - consumed()))
        for m in survivors:
            m.stop()      # close() commits the final positions
        watcher.stop()

        assert not watcher.failures, watcher.failures[:3]
        backwards = {tp: h for tp, h in watcher.history.items()
                     if any(b2 < a for a, b2 in zip(h, h[1:]))}
        assert not backwards, "committed offsets went backwards: %s" % backwards
        assert set(watcher.history) == tps(topic, range(6)), sorted(watcher.history)
        print("committed offsets seen per partition:",
              {tp[1]: len(h) for tp, h in sorted(watcher.history.items())})
        assert all(len(h) >= 3 for h in watcher.history.values()), \
            "the watcher saw too few commits to judge monotonicity: %s" % dict(watcher.history)
        marks = watermarks(b.bootstrap, topic, 6)
        final = committed(admin, group)
        assert final == {(topic, p): marks[p][1] for p in range(6)}, (final, marks)
    finally:
        stop_producing.set()
        victim.kill9()
        for m in survivors:
            if m.thread.is_alive():
                m.stop()
        if watcher:
            watcher.stop()


def test_member_close_rebalances_at_once(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpclose"), partitions=4)
    group = unique_group("close")
    # A session timeout far longer than anything this test waits for: only
    # the LeaveGroup sent by close() can explain a fast hand-over.
    slow = {"session.timeout.ms": 30000}
    stay = Member(b.bootstrap, group, [topic], "stay", **slow)
    leave = Member(b.bootstrap, group, [topic], "leave", **slow)
    try:
        wait_until(lambda: balanced([stay, leave], topic, 4, 2), 30,
                   lambda: assignments_str([stay, leave]))
        t0 = time.monotonic()
        leave.stop(close=True)
        wait_until(lambda: stay.current() == tps(topic, range(4)), 10,
                   lambda: "remaining member owns all 4 partitions: " + assignments_str([stay]))
        elapsed = time.monotonic() - t0
        print("hand-over after close(): %.2fs" % elapsed)
        assert elapsed < 5.0, "rebalance after close() took %.2fs" % elapsed
        produced = produce(b.bootstrap, topic, [(p, b"after-%d" % p) for p in range(4)])
        wait_until(lambda: set(produced) <= {(p, o) for (_, p, o, _) in stay.got()}, 15,
                   "remaining member consumes all partitions")
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 1, d
    finally:
        for m in (stay, leave):
            if m.thread.is_alive():
                m.stop()


# --------------------------------------------------------------------------
# 3. Static membership
# --------------------------------------------------------------------------


def test_static_member_restart_keeps_partitions_without_rebalance(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpstatic"), partitions=4)
    group = unique_group("static")
    conf = {name: member_conf(b.bootstrap, group, name, **{
        "group.instance.id": "inst-%s-%s" % (name, group), "session.timeout.ms": 10000})
        for name in ("static-a", "static-b")}
    inst = {name: c["group.instance.id"] for name, c in conf.items()}
    # Both members run in subprocesses so that each can be restarted with
    # SIGKILL (no LeaveGroup); both are restarted in turn, so the group leader
    # is certainly among them.
    live = {name: ProcMember(c, [topic]) for name, c in conf.items()}
    dead = []
    try:
        wait_until(lambda: balanced(list(live.values()), topic, 4, 2), 30,
                   lambda: assignments_str(list(live.values())))
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE
        assert sorted(m.group_instance_id for m in d.members) == sorted(inst.values())
        parts = {name: m.current() for name, m in live.items()}
        produced_all = []

        for name, other_name in (("static-a", "static-b"), ("static-b", "static-a")):
            other = live[other_name]
            baseline = other.counts()
            old_id = [m.member_id for m in describe(admin, group).members
                      if m.group_instance_id == inst[name]][0]

            # Restart well within the session timeout.
            live[name].kill9()
            dead.append(live[name])
            t_kill = time.monotonic()
            live[name] = again = ProcMember(conf[name], [topic])
            wait_until(lambda: again.assign_events, 9,
                       "restarted static member %s gets an assignment" % name)
            assert time.monotonic() - t_kill < 10.0
            assert again.current() == parts[name], \
                "restarted static member %s got %s, had %s" % (
                    name, sorted(again.current()), sorted(parts[name]))

            time.sleep(2.5)   # five heartbeat intervals: a rebalance would show by now
            assert other.counts() == baseline, \
                "%s saw a rebalance when static member %s restarted within its session " \
                "timeout (assign/revoke counts %s -> %s); Kafka keeps a Stable group as it " \
                "is when a static member (leader or not) rejoins with unchanged protocols" % (
                    other_name, name, baseline, other.counts())
            assert other.current() == parts[other_name]
            assert again.counts() == (1, 0), again.counts()
            d = describe(admin, group)
            assert d.state == ConsumerGroupState.STABLE, d.state
            assert sorted(m.group_instance_id for m in d.members) == sorted(inst.values())
            new = [m for m in d.members if m.group_instance_id == inst[name]][0]
            assert {(tp.topic, tp.partition) for tp in new.assignment.topic_partitions} == \
                parts[name]
            assert new.member_id != old_id, "a static rejoin gets a new member id"

            # Both keep consuming their own partitions.
            produced = produce(b.bootstrap, topic, [(p, b"%s-%d" % (name.encode(), p))
                                                    for p in range(4)])
            produced_all += produced
            for n, m in live.items():
                want = {(p, o) for (p, o) in produced if (topic, p) in parts[n]}
                wait_until(lambda: want <= {(p, o) for (_, p, o, _) in m.got()}, 15,
                           "%s consumes after the restart of %s" % (n, name))
    finally:
        for m in list(live.values()) + dead:
            m.kill9()


# --------------------------------------------------------------------------
# 4. Committed offsets across a broker restart; auto.offset.reset
# --------------------------------------------------------------------------


def test_resume_from_committed_offset_after_broker_restart(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grprestart"), partitions=2)
    group = unique_group("restart")
    produced = produce(b.bootstrap, topic, [(i % 2, b"r-%d" % i) for i in range(20)])
    c = Consumer(member_conf(b.bootstrap, group, "before", **{"enable.auto.commit": False}))
    c.subscribe([topic])
    got = []
    try:
        deadline = time.monotonic() + 20
        while len(got) < 12 and time.monotonic() < deadline:
            for m in c.consume(num_messages=12 - len(got), timeout=0.2):
                assert not m.error(), m.error()
                got.append((m.partition(), m.offset()))
        assert len(got) == 12
        c.commit(asynchronous=False)
    finally:
        c.close()
    expected_commit = {}
    for p, o in got:
        expected_commit[(topic, p)] = max(expected_commit.get((topic, p), 0), o + 1)
    assert committed(admin, group) == expected_commit

    b.restart()
    admin = admin_client(b.bootstrap)
    assert committed(admin, group) == expected_commit, "committed offsets lost in restart"

    # auto.offset.reset=latest would skip everything: only the committed
    # offsets explain reading the 8 remaining messages.
    c = Consumer(member_conf(b.bootstrap, group, "after", **{"auto.offset.reset": "latest"}))
    c.subscribe([topic])
    rest = []
    try:
        deadline = time.monotonic() + 20
        while len(rest) < 8 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.2):
                assert not m.error(), m.error()
                rest.append((m.partition(), m.offset()))
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for m in c.consume(num_messages=100, timeout=0.2):
                assert not m.error(), m.error()
                rest.append((m.partition(), m.offset()))
    finally:
        c.close()
    assert sorted(rest) == sorted(set(produced) - set(got))


def _wait_fetch_position(c, stats, topic, partition, want, timeout=15):
    """Poll (expecting no messages) until librdkafka's statistics show the
    partition fetching from offset `want` (the position it reset to)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        for m in c.consume(num_messages=10, timeout=0.2):
            raise AssertionError("unexpected message/event before the reset: %s" % (
                m.error() or (m.partition(), m.offset())))
        if stats:
            p = json.loads(stats[-1]).get("topics", {}).get(topic, {}).get(
                "partitions", {}).get(str(partition), {})
            last = (p.get("fetch_state"), p.get("next_offset"))
            if last == ("active", want):
                return
        assert time.monotonic() < deadline, \
            "fetch state/next offset stayed %s, wanted active/%s" % (last, want)


def test_auto_offset_reset_without_commit(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpreset"), partitions=1)
    produce(b.bootstrap, topic, [(0, b"old-%d" % i) for i in range(5)])

    # earliest: the group starts at the log start.
    c = Consumer(member_conf(b.bootstrap, unique_group("earliest"), "earliest"))
    c.subscribe([topic])
    try:
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:
            got += [m.offset() for m in c.consume(10, timeout=0.2) if not m.error()]
        assert got == [0, 1, 2, 3, 4]
    finally:
        c.close()

    # latest: the group starts at the high watermark and sees only new messages.
    stats = []
    c = Consumer(member_conf(b.bootstrap, unique_group("latest"), "latest",
                             **{"auto.offset.reset": "latest",
                                "statistics.interval.ms": 100, "stats_cb": stats.append}))
    c.subscribe([topic])
    try:
        _wait_fetch_position(c, stats, topic, 0, 5)
        produce(b.bootstrap, topic, [(0, b"new-%d" % i) for i in range(3)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got += [(m.offset(), m.value()) for m in c.consume(10, timeout=0.2)
                    if not m.error()]
        assert got == [(5, b"new-0"), (6, b"new-1"), (7, b"new-2")]
    finally:
        c.close()

    # error (Java's "none"): no committed offset is an error, no message is read.
    group_none = unique_group("none")
    c = Consumer(member_conf(b.bootstrap, group_none, "none",
                             **{"auto.offset.reset": "error"}))
    c.subscribe([topic])
    try:
        err = None
        deadline = time.monotonic() + 20
        while err is None and time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.2):
                assert m.error() is not None, "read offset %d without a committed offset" % (
                    m.offset())
                err = m.error()
        assert err is not None, "no error for auto.offset.reset=error without a commit"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    finally:
        c.close()

    # ... and with a committed offset (set by the admin on the now empty
    # group) the same configuration reads from it.
    wait_until(lambda: describe(admin, group_none).state == ConsumerGroupState.EMPTY, 10,
               "group empty after close")
    res = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group_none, [TopicPartition(topic, 0, 6)])],
        request_timeout=10)[group_none].result(timeout=15)
    assert [(t.partition, t.offset, t.error) for t in res.topic_partitions] == [(0, 6, None)]
    c = Consumer(member_conf(b.bootstrap, group_none, "none2",
                             **{"auto.offset.reset": "error"}))
    c.subscribe([topic])
    try:
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.2):
                assert not m.error(), m.error()
                got.append(m.offset())
        assert got == [6, 7]
    finally:
        c.close()


# --------------------------------------------------------------------------
# 5. Regex subscription
# --------------------------------------------------------------------------


def test_regex_subscription_picks_up_new_topic(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    prefix = unique_topic("rx")
    first = create_topic(admin, prefix + "-first", partitions=1)
    other = create_topic(admin, unique_topic("notrx"), partitions=1)
    produce(b.bootstrap, first, [(0, b"f-%d" % i) for i in range(3)])
    produce(b.bootstrap, other, [(0, b"o-%d" % i) for i in range(3)])
    m = Member(b.bootstrap, unique_group("regex"), ["^" + prefix + ".*"], "regex",
               **{"topic.metadata.refresh.interval.ms": 1000})
    try:
        wait_until(lambda: len([x for x in m.got() if x[0] == first]) == 3, 20,
                   "messages of the topic that existed at subscribe time")
        later = create_topic(admin, prefix + "-later", partitions=2)
        produced = produce(b.bootstrap, later, [(i % 2, b"l-%d" % i) for i in range(4)])
        t0 = time.monotonic()
        wait_until(lambda: {(p, o) for (t, p, o, _) in m.got() if t == later} == set(produced),
                   20, lambda: "messages of the topic created after subscribing; assignment %s"
                   % sorted(m.current()))
        print("new topic consumed %.2fs after creation" % (time.monotonic() - t0))
        assert time.monotonic() - t0 < 15
        assert m.current() == {(first, 0), (later, 0), (later, 1)}
        assert not [x for x in m.got() if x[0] == other], "consumed a non-matching topic"
    finally:
        m.stop()


# --------------------------------------------------------------------------
# 6. kafka-python
# --------------------------------------------------------------------------


class KpMember:
    def __init__(self, bootstrap, group, topic, name):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        self.name = name
        self.lock = threading.Lock()
        self.assignment = set()
        self.messages = []
        self.revokes = 0
        self._stop = threading.Event()
        outer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                with outer.lock:
                    outer.assignment -= {(tp.topic, tp.partition) for tp in revoked}
                    outer.revokes += 1

            def on_partitions_assigned(self, assigned):
                with outer.lock:
                    outer.assignment |= {(tp.topic, tp.partition) for tp in assigned}

        self.c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                               auto_offset_reset="earliest", enable_auto_commit=True,
                               auto_commit_interval_ms=500, session_timeout_ms=6000,
                               heartbeat_interval_ms=500, request_timeout_ms=20000)
        self.c.subscribe([topic], listener=Listener())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                for tp, records in self.c.poll(timeout_ms=100).items():
                    with self.lock:
                        self.messages += [(r.topic, r.partition, r.offset, r.value)
                                          for r in records]
        finally:
            self.c.close()

    def current(self):
        with self.lock:
            return set(self.assignment)

    def got(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self._stop.set()
        self.thread.join(30)


def test_kafka_python_group_members(make_broker):
    from kafka import KafkaProducer

    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpkp"), partitions=4)
    group = unique_group("kp")
    members = [KpMember(b.bootstrap, group, topic, "kp-%d" % i) for i in range(2)]
    try:
        wait_until(lambda: balanced(members, topic, 4, 2), 40,
                   lambda: assignments_str(members))
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 2
        assert sorted(m.client_id for m in d.members) == ["kp-0", "kp-1"]
        revokes = [m.revokes for m in members]

        p = KafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False, acks=1)
        futs = [p.send(topic, value=b"kp-%d" % i, partition=i % 4) for i in range(40)]
        produced = [(md.partition, md.offset) for md in (f.get(timeout=15) for f in futs)]
        p.close()

        wait_until(lambda: sum(len(m.got()) for m in members) >= 40, 30,
                   lambda: "40 messages, got %d" % sum(len(m.got()) for m in members))
        time.sleep(1.0)
        seen = collections.Counter()
        for m in members:
            for (t, part, o, v) in m.got():
                assert (t, part) in m.current(), "%s got unassigned %s/%d" % (m.name, t, part)
                seen[(part, o)] += 1
        assert all(n == 1 for n in seen.values()), "duplicates: %s" % seen
        assert set(seen) == set(produced)
        assert [m.revokes for m in members] == revokes, "unexpected rebalance"
    finally:
        for m in members:
            m.stop()
    # close() committed the consumed positions.
    assert committed(admin, group) == {(topic, part): 10 for part in range(4)}


# --------------------------------------------------------------------------
# 7. AdminClient group views and lag
# --------------------------------------------------------------------------


def test_admin_group_views_lag_alter_delete(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpadmin"), partitions=3)
    group = unique_group("admin")

    assigned = {}

    def make(name):
        c = Consumer(member_conf(b.bootstrap, group, name, **{
            "enable.auto.commit": False, "enable.auto.offset.store": False}))

        def on_assign(cons, parts):
            assigned[name] = {(p.topic, p.partition) for p in parts}
        c.subscribe([topic], on_assign=on_assign)
        return c

    consumers = {"adm-1": make("adm-1"), "adm-2": make("adm-2")}
    budget = {"adm-1": 7, "adm-2": 6}
    processed = collections.Counter()   # per partition
    done = {n: 0 for n in consumers}
    try:
        def settled():
            return (len(assigned) == 2
                    and set().union(*assigned.values()) == tps(topic, range(3))
                    and sum(len(a) for a in assigned.values()) == 3)
        # Settle the group on the empty topic first, so that no rebalance can
        # separate processing from committing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not settled():
            for c in consumers.values():
                assert c.consume(num_messages=10, timeout=0.1) == []
        assert settled(), assigned
        produce(b.bootstrap, topic, [(i % 3, b"a-%d" % i) for i in range(30)])
        # Each consumer processes (stores the offset of) only its budget of
        # messages, polling both in turn so both stay in the group.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                settled() and all(done[n] == budget[n] for n in consumers)):
            for name, c in consumers.items():
                for m in c.consume(num_messages=10, timeout=0.1):
                    assert not m.error(), m.error()
                    if done[name] < budget[name]:
                        c.store_offsets(m)
                        done[name] += 1
                        processed[m.partition()] += 1
        assert settled(), assigned
        assert done == budget, done
        for c in consumers.values():
            c.commit(asynchronous=False)

        # list_consumer_groups, with and without a state filter
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, [g.group_id for g in listed.valid]
        assert mine[0].state == ConsumerGroupState.STABLE
        assert not mine[0].is_simple_consumer_group
        stable = admin.list_consumer_groups(
            states={ConsumerGroupState.STABLE}, request_timeout=10).result(timeout=15)
        assert group in [g.group_id for g in stable.valid]
        empty = admin.list_consumer_groups(
            states={ConsumerGroupState.EMPTY}, request_timeout=10).result(timeout=15)
        assert group not in [g.group_id for g in empty.valid]

        # describe_consumer_groups: members, their assignments, state
        d = describe(admin, group)
        assert d.group_id == group
        assert d.state == ConsumerGroupState.STABLE
        assert not d.is_simple_consumer_group
        assert d.partition_assignor in ("range", "roundrobin"), d.partition_assignor
        assert d.coordinator.id == 0
        assert sorted(m.client_id for m in d.members) == ["adm-1", "adm-2"]
        for m in d.members:
            assert m.member_id and m.host, m
            got = {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
            assert got == assigned[m.client_id], (m.client_id, got, assigned)

        # list_consumer_group_offsets and lag
        marks = watermarks(b.bootstrap, topic, 3)
        offs = committed(admin, group)
        lag = {}
        for p in range(3):
            lo, hi = marks[p]
            assert hi == 10
            off = offs.get((topic, p), OFFSET_INVALID)
            lag[p] = hi - (off if off >= 0 else lo)
            assert lag[p] == 10 - processed[p], (p, off, processed)
        assert sum(lag.values()) == 30 - 13

        # delete_consumer_groups refuses a group with members
        with pytest.raises(KafkaException) as ei:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        assert kafka_error_of(ei.value).code() == KafkaError.NON_EMPTY_GROUP, ei.value

        for c in consumers.values():
            c.close()
        consumers = {}
        wait_until(lambda: describe(admin, group).state == ConsumerGroupState.EMPTY, 10,
                   "group empty after the members closed")
        d = describe(admin, group)
        assert d.members == []

        # alter_consumer_group_offsets on the empty group
        new = [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4),
               TopicPartition(topic, 2, 5)]
        res = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, new)], request_timeout=10)[group].result(
                timeout=15)
        assert sorted((t.partition, t.offset, t.error) for t in res.topic_partitions) == \
            [(0, 3, None), (1, 4, None), (2, 5, None)]
        assert committed(admin, group) == {(topic, 0): 3, (topic, 1): 4, (topic, 2): 5}

        # delete_consumer_groups succeeds on the empty group
        assert admin.delete_consumer_groups([group], request_timeout=10)[group].result(
            timeout=15) is None
        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        assert group not in [g.group_id for g in listed.valid]
        assert all(off < 0 for off in committed(admin, group).values()), \
            "offsets survived the group's deletion"
    finally:
        for c in consumers.values():
            c.close()


# --------------------------------------------------------------------------
# 8. Bad input over the wire; the group keeps working
# --------------------------------------------------------------------------


class RawMember:
    """A group member driven by hand-built requests (JoinGroup v5, SyncGroup v3,
    Heartbeat v3, LeaveGroup v1, OffsetCommit v2), heartbeating in a thread."""

    def __init__(self, bootstrap, group, topic, nparts):
        self.bootstrap, self.group, self.topic, self.nparts = bootstrap, group, topic, nparts
        self.conn = kw.KafkaConn.to(bootstrap, timeout=30)
        self.hb_conn = kw.KafkaConn.to(bootstrap, timeout=10)
        self.member_id = ""
        self.generation = -1
        self.assignment = {}
        self.heartbeats = []   # (monotonic time, error code)
        self._stop = threading.Event()
        self.hb_thread = None

    def join(self):
        sub = kw.consumer_subscription_v0([self.topic])
        body = kw.join_group_v5_body(self.group, "", protocols=[("range", sub)])
        r = kw.parse_join_group_v5(self.conn.request(kw.API_JOIN_GROUP, 5, body))
        assert r["error_code"] == kw.MEMBER_ID_REQUIRED and r["member_id"], r
        self.member_id = r["member_id"]
        body = kw.join_group_v5_body(self.group, self.member_id, protocols=[("range", sub)])
        r = kw.parse_join_group_v5(self.conn.request(kw.API_JOIN_GROUP, 5, body))
        assert r["error_code"] == kw.NONE, r
        assert r["protocol_name"] == "range" and r["member_id"] == self.member_id, r
        self.generation = r["generation_id"]
        assignments = []
        if r["leader"] == self.member_id:
            ids = sorted(m["member_id"] for m in r["members"])
            plan = {mid: [] for mid in ids}
            for p in range(self.nparts):
                plan[ids[p % len(ids)]].append(p)
            assignments = [(mid, kw.consumer_assignment_v0({self.topic: ps}))
                           for mid, ps in plan.items()]
        s = kw.parse_sync_group_v3(self.conn.request(kw.API_SYNC_GROUP, 3, kw.sync_group_v3_body(
            self.group, self.generation, self.member_id, assignments)))
        assert s["error_code"] == kw.NONE, s
        self.assignment = kw.parse_consumer_assignment(s["assignment"])
        self.hb_thread = threading.Thread(target=self._beat, daemon=True)
        self.hb_thread.start()
        return r

    def _beat(self):
        while not self._stop.wait(0.5):
            r = kw.parse_heartbeat_v3(self.hb_conn.request(
                kw.API_HEARTBEAT, 3, kw.heartbeat_v3_body(self.group, self.generation,
                                                          self.member_id)))
            self.heartbeats.append((time.monotonic(), r["error_code"]))

    def heartbeats_ok_since(self, t0, timeout=5):
        """Waits for a heartbeat answered after t0; all since t0 must be NONE
        (a REBALANCE_IN_PROGRESS would mean the bad request disturbed the group)."""
        wait_until(lambda: any(t > t0 + 0.1 for t, _ in self.heartbeats), timeout,
                   "a heartbeat after the bad request")
        codes = [e for t, e in self.heartbeats if t > t0]
        assert codes and all(e == kw.NONE for e in codes), \
            "heartbeat errors after the bad request: %s" % codes

    def commit(self, generation, member_id, offsets):
        return kw.parse_offset_commit_v2(self.conn.request(
            kw.API_OFFSET_COMMIT, 2, kw.offset_commit_v2_body(self.group, generation, member_id,
                                                              offsets)))

    def leave(self):
        self._stop.set()
        if self.hb_thread:
            self.hb_thread.join(5)
        return kw.parse_leave_group_v1(self.conn.request(
            kw.API_LEAVE_GROUP, 1, kw.leave_group_v1_body(self.group, self.member_id)))

    def close(self):
        self._stop.set()
        if self.hb_thread:
            self.hb_thread.join(5)
        self.conn.close()
        self.hb_conn.close()


def test_bad_group_requests_get_kafka_errors_and_group_keeps_working(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("grpbad"), partitions=2)
    group = unique_group("bad")
    real = Member(b.bootstrap, group, [topic], "real")
    raw = RawMember(b.bootstrap, group, topic, 2)
    counter = [0]

    def real_keeps_consuming(step):
        """Produce one message to each partition the real member owns; it must read them."""
        mine = sorted(p for (_, p) in real.current())
        assert mine, "real member has no partitions after %s" % step
        items = []
        for p in mine:
            counter[0] += 1
            items.append((p, ("%s-%d" % (step, counter[0])).encode()))
        produced = set(produce(b.bootstrap, topic, items))
        wait_until(lambda: produced <= {(p, o) for (_, p, o, _) in real.got()}, 15,
                   "real member consumes after %s" % step)

    def send_join(**kwargs):
        body = kw.join_group_v5_body(group, **kwargs)
        with kw.KafkaConn.to(b.bootstrap) as conn:
            return kw.parse_join_group_v5(conn.request(kw.API_JOIN_GROUP, 5, body))

    def members_now():
        return sorted(m.member_id for m in describe(admin, group).members)

    try:
        wait_until(lambda: real.current() == tps(topic, range(2)), 30, "real member assigned")
        real_keeps_consuming("warmup")

        # The raw member joins; the group rebalances to two members, one partition each.
        raw.join()
        assert raw.generation >= 2
        wait_until(lambda: len(real.current()) == 1, 20,
                   lambda: "real member down to one partition: %s" % sorted(real.current()))
        assert sum(len(v) for v in raw.assignment.values()) == 1, raw.assignment
        assert {(topic, p) for p in raw.assignment[topic]} | real.current() == \
            tps(topic, range(2))
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 2
        two = members_now()
        real_keeps_consuming("after-raw-join")
        raw_part = raw.assignment[topic][0]

        # OffsetCommit from a stale generation -> ILLEGAL_GENERATION
        t0 = time.monotonic()
        r = raw.commit(raw.generation - 1, raw.member_id, {topic: [(raw_part, 777, "stale")]})
        assert r == {(topic, raw_part): kw.ILLEGAL_GENERATION}, r
        # ... a non-member -> UNKNOWN_MEMBER_ID, and the current generation -> NONE
        r = raw.commit(raw.generation, "not-a-member", {topic: [(raw_part, 778, None)]})
        assert r == {(topic, raw_part): kw.UNKNOWN_MEMBER_ID}, r
        assert committed(admin, group).get((topic, raw_part)) not in (777, 778), \
            "a rejected commit was stored"
        r = raw.commit(raw.generation, raw.member_id, {topic: [(raw_part, 0, "ok")]})
        assert r == {(topic, raw_part): kw.NONE}, r
        assert committed(admin, group)[(topic, raw_part)] == 0
        raw.heartbeats_ok_since(t0)
        real_keeps_consuming("after-stale-commit")

        # SyncGroup (and Heartbeat) from a non-member -> UNKNOWN_MEMBER_ID
        t0 = time.monotonic()
        with kw.KafkaConn.to(b.bootstrap) as conn:
            s = kw.parse_sync_group_v3(conn.request(kw.API_SYNC_GROUP, 3, kw.sync_group_v3_body(
                group, raw.generation, "not-a-member",
                [("not-a-member", kw.consumer_assignment_v0({topic: [0, 1]}))])))
            assert s["error_code"] == kw.UNKNOWN_MEMBER_ID, s
            h = kw.parse_heartbeat_v3(conn.request(kw.API_HEARTBEAT, 3, kw.heartbeat_v3_body(
                group, raw.generation, "not-a-member")))
            assert h["error_code"] == kw.UNKNOWN_MEMBER_ID, h
        raw.heartbeats_ok_since(t0)
        assert members_now() == two
        real_keeps_consuming("after-foreign-sync")

        # JoinGroup with another protocol type (or no common protocol) for the
        # existing "consumer" group -> INCONSISTENT_GROUP_PROTOCOL
        t0 = time.monotonic()
        r = send_join(protocol_type="not-consumer",
                      protocols=[("range", kw.consumer_subscription_v0([topic]))])
        assert r["error_code"] == kw.INCONSISTENT_GROUP_PROTOCOL, r
        r = send_join(protocol_type="consumer",
                      protocols=[("no-such-assignor", kw.consumer_subscription_v0([topic]))])
        assert r["error_code"] == kw.INCONSISTENT_GROUP_PROTOCOL, r
        raw.heartbeats_ok_since(t0)
        assert members_now() == two
        real_keeps_consuming("after-inconsistent-protocol")

        # Session timeouts outside [group.min, group.max] -> INVALID_SESSION_TIMEOUT
        t0 = time.monotonic()
        sub = [("range", kw.consumer_subscription_v0([topic]))]
        for st in (5999, 1800001, 0):
            r = send_join(session_timeout_ms=st, protocols=sub)
            assert r["error_code"] == kw.INVALID_SESSION_TIMEOUT, (st, r)
        r = send_join(member_id=raw.member_id, session_timeout_ms=1000, protocols=sub)
        assert r["error_code"] == kw.INVALID_SESSION_TIMEOUT, r
        raw.heartbeats_ok_since(t0)
        assert members_now() == two
        real_keeps_consuming("after-invalid-session-timeout")

        # The raw member leaves: the real member takes both partitions and consumes.
        assert raw.leave()["error_code"] == kw.NONE
        wait_until(lambda: real.current() == tps(topic, range(2)), 20,
                   "real member gets both partitions after the raw member left")
        real_keeps_consuming("after-raw-leave")
        d = describe(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 1
        assert not real.errors, real.errors
    finally:
        raw.close()
        real.stop()
