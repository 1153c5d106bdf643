"""KIP-932 share groups in cluster mode (brokers + etcd): share-partition state
across a partition leader's failover, and the share-group admin view.

The contract (Kafka's):
- Membership (ShareGroupHeartbeat) is served by the group coordinator, the
  leader of the group's __consumer_offsets partition (FindCoordinator key
  type 0, as for consumer groups).
- ShareFetch / ShareAcknowledge are served by the topic partition's leader.
  Each share-partition's state (start offset, acknowledged / archived records,
  delivery counts) is kept by its share coordinator, the leader of partition
  (javaHashCode("group:topicId:partition") & 0x7fffffff) % n of the
  replicated internal topic __share_group_state (here n = 6, RF 3, created on
  first need). The partition leader writes every change there before it
  answers an acknowledgement, and a new partition leader reads it back
  (ReadShareGroupState). Acquisition locks are not kept across a failover:
  records acquired but not acknowledged come back available.

Tests:
1. Two partitions (RF 3, min.insync.replicas 2), 4,000 records (acks=all).
   The group is chosen so that the share coordinator of partition 0 is the
   leader of partition 0 itself (so the failover moves both the partition and
   its __share_group_state partition) while the group coordinator and the
   share coordinator of partition 1 are elsewhere. One ShareConsumer (explicit
   acknowledgements, commit_sync after every poll, max.poll.records=100)
   accepts about half; then, while it holds a polled batch with records of
   partition 0 (acquired, not yet acknowledged), the leader of partition 0 is
   killed (kill -9) and the consumer acknowledges and commits that batch. The
   consumer follows the new leader and accepts the rest.
   Every produced record is accepted; no record is handed out again after a
   commit_sync reported its acceptance successful (in particular none
   committed before the kill); records delivered more than once are only ones
   whose acknowledgement did not succeed, at most one poll's worth per
   partition; and once everything is accepted nothing more comes (records
   produced afterwards do, once each).
2. DescribeShareGroupOffsets (raw, v0) asked of the group coordinator after a
   group accepted every record of a 3-partition topic whose leaders are
   spread over the brokers: each partition's start offset is its end offset
   (whichever broker leads it); the other brokers answer NOT_COORDINATOR.

Each test runs its own loopback cluster (cluster_harness.Cluster) on the
module's etcd, with broker.session.timeout.ms=3000. Measured times are printed
(pytest -s shows them).
"""

import collections
import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaException, ShareConsumer, TopicCollection

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from cluster_helpers import admin, create, full_isr, partition_sizes, parts, wait_parts
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic
from test_cluster_groups import (ensure_offsets_topic, find_coordinator, java_hash,
                                 offsets_partition, wait_coordinator)
from test_share_groups import (ACCEPT, ShareMember, commit_codes, describe_share_group_offsets,
                               earliest, produce, share_conf)

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(300)]

NOT_COORDINATOR = 16

STATE_TOPIC = "__share_group_state"
STATE_PARTITIONS = 6
OFFSETS_PARTITIONS = 6
LOCK_MS = 3000
MAX_POLL = 100

SHARE_CLUSTER = {
    "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
    "share.coordinator.state.topic.num.partitions": str(STATE_PARTITIONS),
    "group.initial.rebalance.delay.ms": "500",
    "replica.lag.time.max.ms": "3000",
    "group.share.heartbeat.interval.ms": "500",
    "group.share.min.heartbeat.interval.ms": "100",
    "group.share.session.timeout.ms": "6000",
    "group.share.min.session.timeout.ms": "1000",
    "group.share.record.lock.duration.ms": str(LOCK_MS),
    "group.share.min.record.lock.duration.ms": "1000",
}


# --------------------------------------------------------------------------
# Where a share-partition's state lives
# --------------------------------------------------------------------------


def unique_group(prefix="sg"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def topic_uuid(c, topic):
    """The topic's id as Runnel prints it in share coordinator keys (hyphenated hex)."""
    a = admin(c)
    td = a.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(
        timeout=15)
    msb = td.topic_id.get_most_significant_bits() & 0xFFFFFFFFFFFFFFFF
    lsb = td.topic_id.get_least_significant_bits() & 0xFFFFFFFFFFFFFFFF
    return str(uuid.UUID(int=(msb << 64) | lsb))


def state_partition(group, tid, partition):
    """The __share_group_state partition of share-partition (group, topic id, partition)."""
    return (java_hash("%s:%s:%d" % (group, tid, partition)) & 0x7FFFFFFF) % STATE_PARTITIONS


def leaders(c, topic, node=None):
    ps = parts(c, topic, node if node is not None else c.live_ids()[0])
    return {p: s["leader"] for p, s in ps.items()}


def wait_state_topic(c, rf=3, timeout=30):
    """__share_group_state with STATE_PARTITIONS partitions, each with a leader and
    the full ISR; {partition: leader}."""
    node = c.live_ids()[0]
    ps = wait_parts(c, STATE_TOPIC, node,
                    lambda ps: len(ps) == STATE_PARTITIONS and full_isr(rf)(ps), timeout,
                    "%s: %d partitions with an ISR of %d" % (STATE_TOPIC, STATE_PARTITIONS, rf))
    return {p: s["leader"] for p, s in ps.items()}


def warm_up(c):
    """One share group accepting one record: creates __consumer_offsets and
    __share_group_state (both created on first need) and shows share groups
    work in this cluster at all."""
    topic = unique_topic("shc-warm")
    create(c, topic, 1, 3)
    group = unique_group("warm")
    earliest(admin(c), group)
    produce(c.bootstrap(), topic, [(0, b"warm")], acks="all")
    m = ShareMember(c.bootstrap(), group, [topic], "warm")
    try:
        try:
            wait_until(lambda: set(m.accepted()) == {(topic, 0, 0)}, 40,
                       what="a share consumer accepting one record (warm-up)")
        except AssertionError as e:
            raise AssertionError("%s\ngot %r, problems %r\n%s" % (
                e, m.got(), m.problems(), share_logs(c))) from None
    finally:
        m.stop()


# --------------------------------------------------------------------------
# A share consumer that records every delivery and its commit result
# --------------------------------------------------------------------------


class Journal:
    """One ShareConsumer (explicit acknowledgements) in a thread of its own; every
    record it is handed is accepted and each poll's batch committed with commit_sync.

    `deliveries`: [t_poll, partition, offset, value, delivery_count, code, t_done]
    per record handed over (code: the commit_sync result of its partition, 0 =
    success, -1 = partition missing from the result, None = no result, e.g.
    commit_sync raised; t_done: when commit_sync returned)."""

    def __init__(self, bootstrap, group, topic, name, pause=0.0, hold_when=None):
        self.conf = share_conf(bootstrap, group, name, "explicit",
                               max_poll_records=MAX_POLL)
        self.topic = topic
        self.pause = pause
        # hold_when(batch) true once: the thread stops before committing that batch,
        # sets `held` and goes on when `release` is set (bounded).
        self.hold_when = hold_when
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_batch = None
        self.lock = threading.Lock()
        self.deliveries = []
        self.poll_errors = []     # (t, repr) of poll() / commit_sync() exceptions
        self.record_errors = []   # (t, partition, error) of records with an error
        self.fatal = None
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="share-" + name, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "%s: consumer not created within 30 s" % name
        assert self.fatal is None, "%s: could not create/subscribe: %r" % (name, self.fatal)

    def _run(self):
        try:
            c = ShareConsumer(self.conf)
            c.subscribe([self.topic])
        except Exception as e:  # noqa: BLE001 - reported by __init__
            self.fatal = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self._stop.is_set():
                try:
                    msgs = c.poll(0.2)
                except KafkaException as e:
                    with self.lock:
                        self.poll_errors.append((time.monotonic(), repr(e)))
                    time.sleep(0.1)
                    continue
                now = time.monotonic()
                batch = []
                for m in msgs:
                    if m.error() is not None:
                        with self.lock:
                            self.record_errors.append((now, m.partition(), str(m.error())))
                        continue
                    c.acknowledge(m, ACCEPT)
                    batch.append([now, m.partition(), m.offset(), m.value(),
                                  m.delivery_count(), None, None])
                if not batch:
                    continue
                with self.lock:
                    self.deliveries.extend(batch)
                if self.hold_when is not None and not self.held.is_set() \
                        and self.hold_when(batch):
                    self.held_batch = [(d[1], d[2]) for d in batch]
                    self.held.set()
                    self.release.wait(60)
                try:
                    codes = commit_codes(c.commit_sync(15))
                except KafkaException as e:
                    codes = None
                    with self.lock:
                        self.poll_errors.append((time.monotonic(), "commit_sync: %r" % e))
                done = time.monotonic()
                with self.lock:
                    for d in batch:
                        d[5] = None if codes is None else codes.get((self.topic, d[1]), -1)
                        d[6] = done
                if self.pause:
                    time.sleep(self.pause)
        finally:
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - recorded
                with self.lock:
                    self.poll_errors.append((time.monotonic(), "close: %r" % e))

    def snapshot(self):
        with self.lock:
            return [list(d) for d in self.deliveries]

    def confirmed(self):
        """{(partition, offset): t_done of its first successful commit}."""
        out = {}
        for d in self.snapshot():
            if d[5] == 0:
                out.setdefault((d[1], d[2]), d[6])
        return out

    def attempted(self):
        return {(d[1], d[2]) for d in self.snapshot()}

    def problems(self):
        with self.lock:
            return list(self.poll_errors), list(self.record_errors)

    def stop(self, timeout=40):
        self._stop.set()
        self.release.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "share consumer did not stop within %ss" % timeout


def share_log_lines(b, limit=60):
    """The lines of broker `b`'s log about share groups / state and errors."""
    try:
        text = b.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    keys = ("share", "Share", "WriteShareGroupState", "ReadShareGroupState", "ERROR", "WARN")
    lines = [ln for ln in text.splitlines() if any(k in ln for k in keys)]
    return "\n".join(lines[-limit:])


def share_logs(c, limit=40):
    return "\n".join("--- node %s %s ---\n%s" % (i, c.broker(i).log_path,
                                                  share_log_lines(c.broker(i), limit))
                     for i in c.node_ids())


# ==========================================================================
# 1. Share state across the failover of a partition's leader
# ==========================================================================


def test_share_state_survives_leader_failover(cluster):
    c = cluster(3, overrides=SHARE_CLUSTER)
    warm_up(c)
    state_leaders = wait_state_topic(c)
    group_coords = ensure_offsets_topic(c)

    topic = unique_topic("shc-fo")
    nparts, total = 2, 4000
    create(c, topic, nparts, 3, config={"min.insync.replicas": "2"})
    tid = topic_uuid(c, topic)
    lead = leaders(c, topic)
    victim = lead[0]

    # The share coordinator of partition 0 on partition 0's leader; the group
    # coordinator and partition 1's share coordinator elsewhere.
    group = None
    for _ in range(20000):
        g = unique_group("fo")
        if (state_leaders[state_partition(g, tid, 0)] == victim
                and state_leaders[state_partition(g, tid, 1)] != victim
                and group_coords[offsets_partition(g)] != victim):
            group = g
            break
    assert group is not None, "no group name with the wanted layout (%r, %r, %r)" % (
        lead, state_leaders, group_coords)
    layout = {"partition leaders": lead,
              "share coordinators": {p: state_leaders[state_partition(group, tid, p)]
                                     for p in range(nparts)},
              "state partitions": {p: state_partition(group, tid, p) for p in range(nparts)},
              "group coordinator": group_coords[offsets_partition(group)]}
    earliest(admin(c), group)
    time.sleep(1.0)   # the group config reaches every broker (shared settings)

    produced = produce(c.bootstrap(), topic,
                       [(i % nparts, b"%d" % i) for i in range(total)], acks="all")
    want = {(p, o) for p, o, _ in produced}
    per_part = collections.Counter(p for p, _ in want)
    assert len(want) == total and all(per_part[p] == total // nparts for p in range(nparts))

    # A short pause after each commit keeps the consumer from finishing before the
    # kill. Once about half is accepted, the consumer stops after a poll that handed it
    # records of partition 0 (acquired at the leader, not yet acknowledged); the leader
    # is killed then, and the consumer acknowledges and commits that batch afterwards.
    armed = threading.Event()
    j = Journal(c.bootstrap(), group, topic, "fo", pause=0.05,
                hold_when=lambda batch: armed.is_set() and any(d[1] == 0 for d in batch))
    t_kill = None
    try:
        wait_until(lambda: len(j.confirmed()) >= total // 2, 90, interval=0.02,
                   what="half of the records accepted before the kill")
        armed.set()
        assert j.held.wait(30), "no poll with records of partition 0 after half was " \
            "accepted: %r" % (collections.Counter(p for p, _ in j.confirmed()),)
        held = list(j.held_batch)
        # Both share-partitions' states were written to the coordinators we computed.
        sizes = partition_sizes(c.broker(state_leaders[0]), STATE_TOPIC,
                                list(range(STATE_PARTITIONS)))
        assert all(sizes.get(layout["state partitions"][p], 0) > 0 for p in range(nparts)), \
            "share state not where expected: layout %r, %s partition sizes %r" % (
                layout, STATE_TOPIC, sizes)

        confirmed_before = j.confirmed()
        unfinished0 = {(p, o) for p, o in want if p == 0} - set(confirmed_before)
        assert unfinished0, "partition 0 finished before the kill: %r" % (
            collections.Counter(p for p, _ in confirmed_before),)
        t_kill = time.monotonic()
        c.broker(victim).kill9()
        j.release.set()
        survivors = [i for i in c.node_ids() if i != victim]

        # Partition 0 and its state partition move to survivors.
        wait_parts(c, topic, survivors[0],
                   lambda ps: ps[0]["leader"] in survivors, 20,
                   "partition 0 led by a survivor")
        wait_parts(c, STATE_TOPIC, survivors[0],
                   lambda ps: ps[layout["state partitions"][0]]["leader"] in survivors, 20,
                   "the share coordinator of partition 0 on a survivor")

        def finished():
            return j.attempted() >= want and set(j.confirmed()) >= want
        try:
            wait_until(finished, 90, interval=0.1,
                       what="every record accepted after the failover")
        except AssertionError as e:
            errs, rec_errs = j.problems()
            missing = sorted(want - set(j.confirmed()))
            raise AssertionError(
                "%s\nlayout %r, killed %d\n%d records never confirmed (e.g. %r), %d never "
                "delivered; partitions now %r\npoll/commit errors %r\nrecord errors %r\n%s"
                % (e, layout, victim, len(missing), missing[:10],
                   len(want - j.attempted()), parts(c, topic, survivors[0]), errs[-10:],
                   rec_errs[-10:], share_logs(c))) from None
        t_done = time.monotonic()

        # Nothing more comes; records produced now do, once each.
        time.sleep(LOCK_MS / 1000.0 + 2.0)
        n_before = len(j.snapshot())
        more = produce(c.bootstrap(), topic, [(p, b"more-%d" % p) for p in range(nparts)],
                       acks="all")
        more_keys = {(p, o) for p, o, _ in more}
        wait_until(lambda: set(j.confirmed()) >= more_keys, 30, interval=0.1,
                   what="the records produced after the end accepted")
        time.sleep(1.0)
    finally:
        j.stop()

    deliveries = j.snapshot()
    errs, rec_errs = j.problems()
    late_extra = [d for d in deliveries[n_before:] if (d[1], d[2]) not in more_keys]
    assert not late_extra, "records delivered again once everything was accepted: %r" % (
        late_extra[:10],)

    # Every produced record was accepted (a successful commit_sync result).
    confirmed = j.confirmed()
    assert set(confirmed) >= want

    # Never handed out after a commit_sync reported its acceptance successful.
    again = [(d[1], d[2], round(d[0] - t_kill, 2), d[4]) for d in deliveries
             if (d[1], d[2]) in confirmed and d[0] > confirmed[(d[1], d[2])]]
    again_pre_kill = [x for x in again if (x[0], x[1]) in confirmed_before]
    assert not again_pre_kill, \
        "records accepted with a successful commit before the kill delivered again " \
        "after it (partition, offset, s after kill, delivery count): %r\nlayout %r, " \
        "killed %d\n%s" % (again_pre_kill[:20], layout, victim, share_logs(c))
    assert not again, \
        "records delivered again after a successful commit (partition, offset, s after " \
        "the kill, delivery count): %r\nlayout %r, killed %d\n%s" % (
            again[:20], layout, victim, share_logs(c))

    # Redeliveries: only of records whose acknowledgement did not succeed, at most
    # one poll's worth per partition.
    by_record = collections.defaultdict(list)
    for d in deliveries:
        by_record[(d[1], d[2])].append(d)
    redelivered = {k: ds for k, ds in by_record.items() if len(ds) > 1}
    wrong = {k: [(round(d[0] - t_kill, 2), d[4], d[5]) for d in ds]
             for k, ds in redelivered.items() if any(d[5] == 0 for d in ds[:-1])}
    assert not wrong, "redelivered although an earlier acknowledgement succeeded: %r" % (
        sorted(wrong.items())[:10],)
    per_partition = collections.Counter(p for p, _ in redelivered)
    assert all(n <= MAX_POLL for n in per_partition.values()), \
        "more redeliveries than one poll's worth (max.poll.records=%d) per partition: %r; " \
        "first deliveries of those (s after the kill): %r\nlayout %r, killed %d\n%s" % (
            MAX_POLL, dict(per_partition),
            sorted({round(ds[0][0] - t_kill, 2) for ds in redelivered.values()})[:20],
            layout, victim, share_logs(c))

    # The batch held over the kill: its partition-0 records (acquired at the dead
    # leader, their acknowledgement sent after it died) came back from the new leader.
    held_codes = collections.Counter(
        (d[1], d[5]) for d in deliveries if d[0] < t_kill and (d[1], d[2]) in set(held))
    held0_failed = [k for k in held if k[0] == 0 and by_record[k][0][5] != 0]
    not_back = [k for k in held0_failed if len(by_record[k]) < 2]
    assert not not_back, "partition-0 records held over the kill (acknowledgement " \
        "failed) never delivered again: %r" % (not_back[:10],)

    failed_acks = [(d[1], d[2], round(d[0] - t_kill, 2), d[5]) for d in deliveries
                   if d[5] != 0]
    print("layout %r; broker %d killed after %d/%d records confirmed, holding a batch of "
          "%d (commit results (partition, code): %r); all accepted %.1fs after the kill; %d "
          "records redelivered %r (delivery counts %r); %d deliveries whose commit failed "
          "(e.g. %r); %d poll/commit errors (e.g. %r), %d record errors (e.g. %r)"
          % (layout, victim, len(confirmed_before), total, len(held), dict(held_codes),
             t_done - t_kill, len(redelivered), dict(per_partition),
             dict(collections.Counter(d[4] for ds in redelivered.values() for d in ds[1:])),
             len(failed_acks), failed_acks[:5], len(errs), errs[:3], len(rec_errs),
             rec_errs[:3]))

    # The killed broker comes back and rejoins.
    c.broker(victim).start()
    c.wait_for_members(c.node_ids(), timeout=20)


# ==========================================================================
# 2. DescribeShareGroupOffsets at the group coordinator
# ==========================================================================


def describe_offsets_at(c, node, group, topic, nparts):
    with kw.KafkaConn.to(c.broker(node).bootstrap, timeout=20) as conn:
        return describe_share_group_offsets(conn, {group: {topic: list(range(nparts))}})[group]


def test_share_offsets_admin_in_cluster(cluster):
    c = cluster(3, overrides=SHARE_CLUSTER)
    warm_up(c)
    topic = unique_topic("shc-offs")
    nparts, per = 3, 100
    create(c, topic, nparts, 3)
    lead = leaders(c, topic)
    group = unique_group("offs")
    coord = wait_coordinator(c, group)
    earliest(admin(c), group)
    time.sleep(1.0)
    produced = produce(c.bootstrap(), topic,
                       [(i % nparts, b"%d" % i) for i in range(nparts * per)], acks="all")
    want = {(topic, p, o) for p, o, _ in produced}
    end = {(topic, p): per for p in range(nparts)}

    m = ShareMember(c.bootstrap(), group, [topic], "offs")
    try:
        wait_until(lambda: set(m.accepted()) >= want, 60, interval=0.1,
                   what="every record accepted")
        others = {node: describe_offsets_at(c, node, group, topic, nparts)
                  for node in c.node_ids() if node != coord}
        last = {}

        def described():
            g = describe_offsets_at(c, coord, group, topic, nparts)
            last["g"] = g
            return g["error_code"] == 0 and g["offsets"] == {k: (v, 0) for k, v in end.items()}
        try:
            wait_until(described, 15, interval=0.2,
                       what="start offsets at the end, described by the group coordinator")
        except AssertionError as e:
            raise AssertionError(
                "%s\ngroup coordinator %d, partition leaders %r; end offsets %r; described "
                "(start offset, error) %r; other brokers answered %r\n%s"
                % (e, coord, lead, end, last.get("g"), others, share_logs(c))) from None
        for node, g in others.items():
            assert g["error_code"] == NOT_COORDINATOR, (node, g)
        errors, failures = m.problems()
        assert not errors and not failures, (errors[:5], failures[:5])
    finally:
        m.stop()
    # (a find_coordinator answer from every broker names the same coordinator)
    assert {find_coordinator(c.broker(i), group) for i in c.node_ids()} == {(0, coord)}
