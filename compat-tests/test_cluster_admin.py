"""Cluster administration in cluster mode (brokers + etcd): the admin APIs
that move replicas and leaderships or change shared topic state, checked by
what the brokers then do.

- Partition reassignment (AlterPartitionReassignments 45 /
  ListPartitionReassignments 46, raw requests: confluent-kafka has no
  binding): RF 3 replicas [1,2,3] moved to [2,3,4] under an idempotent
  acks=all producer. While the new replica cannot catch up (frozen for a
  second) and until the move completes, the reassignment is listed with
  adding [4] / removing [1]; then every broker names replicas [2,3,4] with the
  full ISR, the leader moves off broker 1 in a higher epoch, broker 1 holds
  the partition no longer, and every acknowledged message is read back once,
  in order. Cancelling with nothing in progress is NO_REASSIGNMENT_IN_PROGRESS
  (85); a target naming an unknown broker is INVALID_REPLICA_ASSIGNMENT (39).
- Preferred leader election (ElectLeaders through the AdminClient): after the
  preferred replica was shut down and came back in sync (automatic
  rebalancing held off), a preferred election makes it lead again in a higher
  epoch; a second one is ELECTION_NOT_NEEDED (84).
- Automatic leader rebalancing (leader.imbalance.check.interval.seconds=2):
  the preferred replicas lead again soon after they are back in the ISR.
- CreatePartitions through one broker: 2 -> 4 partitions of an RF 2 topic,
  seen with 2 replicas and a full ISR by every broker, and usable.
- Topic config changes (IncrementalAlterConfigs) through one broker are seen
  by DescribeConfigs on the others (raw, to exactly that broker, and through
  an AdminClient bootstrapped to it).
- DescribeLogDirs (35, raw) on each broker lists exactly the partitions it is
  a replica of, with sizes > 0 once written; AlterReplicaLogDirs (34 v1, raw)
  to the broker's own log dir is accepted, to another path
  LOG_DIR_NOT_FOUND (57).
- Metrics (each broker with its own metrics.listener): one active controller
  over the cluster, leader counts summing to the partition count,
  under-replicated partitions and ISR shrinks while a broker is down, back to
  zero (with ISR expansions) after it returns.

Each test runs its own loopback cluster (cluster_harness.Cluster) on the
module's etcd, with broker.session.timeout.ms=3000. Measured times are
printed (pytest -s shows them).
"""

import http.client
import os
import re
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, ElectionType, KafkaError, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   ResourceType)

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from cluster_helpers import (Load, admin, compact_int_array, describe_log_dirs, assert_exactly_once, create, full_isr, leader_ready,
                             partition_sizes, parts, produce_all, read_partitions, wait_leaders_ready,
                             wait_parts)
from ck_helpers import consumer
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import free_port, unique_topic
from test_metrics import parse_metrics, value

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240)]

INVALID_REPLICA_ASSIGNMENT = 39
LOG_DIR_NOT_FOUND = 57
ELECTION_NOT_NEEDED = 84
NO_REASSIGNMENT_IN_PROGRESS = 85

API_DESCRIBE_CONFIGS = 32
API_ALTER_REPLICA_LOG_DIRS = 34
API_ALTER_PARTITION_REASSIGNMENTS = 45
API_LIST_PARTITION_REASSIGNMENTS = 46

DYNAMIC_TOPIC_CONFIG = 1   # DescribeConfigs config_source
DEFAULT_RETENTION_MS = "604800000"


# --------------------------------------------------------------------------
# Raw admin requests
# --------------------------------------------------------------------------


def alter_reassignments(b, topic, targets, timeout_ms=30000):
    """AlterPartitionReassignments v0 (flexible) to broker `b`. targets:
    {partition: [replicas] or None (cancel)}. Returns (top error, {partition:
    (error code, message)})."""
    body = kw.i32(timeout_ms) + kw.uvarint(2) + kw.compact_string(topic)
    body += kw.uvarint(len(targets) + 1)
    for p, replicas in targets.items():
        body += kw.i32(p)
        body += kw.uvarint(0) if replicas is None else compact_int_array(replicas)
        body += kw.EMPTY_TAGGED_FIELDS
    body += kw.EMPTY_TAGGED_FIELDS + kw.EMPTY_TAGGED_FIELDS
    with kw.KafkaConn.to(b.bootstrap, timeout=35) as conn:
        r = conn.request(API_ALTER_PARTITION_REASSIGNMENTS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle
    top = (r.i16(), r.compact_string())

    def partition(x):
        out = (x.i32(), x.i16(), x.compact_string())
        x.skip_tagged_fields()
        return out

    def topic_(x):
        name = x.compact_string()
        ps = x.compact_array(partition) or []
        x.skip_tagged_fields()
        return name, ps
    results = r.compact_array(topic_) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in AlterPartitionReassignments response"
    out = {}
    for name, ps in results:
        assert name == topic, (name, topic)
        for p, err, msg in ps:
            out[p] = (err, msg)
    return top, out


def list_reassignments(b, topics=None):
    """ListPartitionReassignments v0 (flexible) to broker `b`; topics: None
    (all) or {name: [partitions]}. Returns {(topic, partition): {"replicas",
    "adding", "removing"}} (an error answer fails)."""
    body = kw.i32(30000)
    if topics is None:
        body += kw.uvarint(0)
    else:
        body += kw.uvarint(len(topics) + 1) + b"".join(
            kw.compact_string(t) + compact_int_array(ps) + kw.EMPTY_TAGGED_FIELDS
            for t, ps in topics.items())
    body += kw.EMPTY_TAGGED_FIELDS
    with kw.KafkaConn.to(b.bootstrap, timeout=10) as conn:
        r = conn.request(API_LIST_PARTITION_REASSIGNMENTS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle
    err, msg = r.i16(), r.compact_string()
    assert err == 0, "ListPartitionReassignments error %d: %s" % (err, msg)

    def ints(x):
        return x.compact_array(lambda y: y.i32()) or []

    def partition(x):
        p = (x.i32(), {"replicas": ints(x), "adding": ints(x), "removing": ints(x)})
        x.skip_tagged_fields()
        return p

    def topic_(x):
        name = x.compact_string()
        ps = x.compact_array(partition) or []
        x.skip_tagged_fields()
        return name, ps
    out = {}
    for name, ps in r.compact_array(topic_) or []:
        for p, state in ps:
            out[(name, p)] = state
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in ListPartitionReassignments response"
    return out


def alter_replica_log_dirs(b, path, topic, partitions):
    """AlterReplicaLogDirs v1 to broker `b`: move `topic`'s `partitions` to
    `path`. Returns {partition: error code}."""
    body = kw.array([kw.string(path) + kw.array(
        [kw.string(topic) + kw.array([kw.i32(p) for p in partitions])])])
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_ALTER_REPLICA_LOG_DIRS, 1, body)
    r.i32()  # throttle
    results = r.array(lambda x: (x.string(), x.array(lambda y: (y.i32(), y.i16())) or [])) or []
    assert r.remaining() == 0, "trailing bytes in AlterReplicaLogDirs response"
    out = {}
    for name, ps in results:
        assert name == topic, (name, topic)
        out.update(dict(ps))
    return out


def describe_topic_configs(b, topic):
    """DescribeConfigs v1 for a topic sent to exactly broker `b`:
    {name: (value, config_source)}."""
    body = kw.array([kw.i8(2) + kw.string(topic) + kw.i32(-1)]) + kw.i8(0)
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_DESCRIBE_CONFIGS, 1, body)
    r.i32()  # throttle

    def config(x):
        name, value, _ro, source, _sens = x.string(), x.string(), x.bool(), x.i8(), x.bool()
        x.array(lambda y: (y.string(), y.string(), y.i8()))
        return name, (value, source)

    def result(x):
        err, msg, _rtype, name = x.i16(), x.string(), x.i8(), x.string()
        return err, msg, name, dict(x.array(config) or [])
    [(err, msg, name, configs)] = r.array(result)
    assert r.remaining() == 0, "trailing bytes in DescribeConfigs v1 response"
    assert err == 0 and name == topic, (err, msg, name)
    return configs


# --------------------------------------------------------------------------
# 1. Partition reassignment
# --------------------------------------------------------------------------


def logged_size(port, topic, partition):
    """kafka_log_log_size of one partition on the broker serving /metrics at `port`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return value(parse_metrics(body), "kafka_log_log_size", topic=topic,
                 partition=str(partition))


def test_reassignment_under_load_moves_replicas(cluster):
    metrics_port = free_port()
    c = cluster(4, overrides={"replica.lag.time.max.ms": "3000"},
                per_broker={1: {"metrics.listener": "http://127.0.0.1:%d" % metrics_port}})
    topic = unique_topic("reassign")
    before = create(c, topic, 1, 3, assignment=[[1, 2, 3]])
    assert before[0]["replicas"] == [1, 2, 3] and before[0]["leader"] == 1, before
    ctl = c.controller()
    # Requests go to the controller, as Kafka clients send them; if that is
    # broker 4 (frozen below), to broker 2.
    via = c.broker(ctl if ctl != 4 else 2)

    load = Load(c.bootstrap(), topic, [0], producers=2, rate=250).start()
    wait_until(lambda: load.count(0) > 500, 20, what="steady load")
    assert logged_size(metrics_port, topic, 0) > 0

    # Broker 4 frozen (well within the session timeout): the reassignment is
    # accepted and stays in progress, since the new replica cannot catch up.
    c.pause(4)
    t_alter = time.monotonic()
    try:
        top, res = alter_reassignments(via, topic, {0: [2, 3, 4]})
        assert top[0] == 0 and res[0][0] == 0, (top, res)
        ongoing = {"replicas": [2, 3, 4, 1], "adding": [4], "removing": [1]}
        listed = []
        while time.monotonic() < t_alter + 1.0:
            listed.append(list_reassignments(via))
            time.sleep(0.1)
        # The same through another broker (every broker reads the shared state).
        listed.append(list_reassignments(c.broker(3), {topic: [0]}))
    finally:
        c.resume(4)
    t_resume = time.monotonic()
    assert all(x == {(topic, 0): ongoing} for x in listed), \
        "while broker 4 was frozen, ListPartitionReassignments answered %r" % listed
    mid = parts(c, topic, 2)[0]
    assert mid["replicas"] == [2, 3, 4, 1] and mid["leader"] == 1, mid

    # Until it completes, it is listed as it was; then not at all.
    seen = []
    while True:
        x = list_reassignments(via)
        if not x:
            break
        seen.append(x)
        assert x == {(topic, 0): ongoing}, "mid-reassignment listing %r" % x
        assert time.monotonic() < t_resume + 20, \
            "reassignment still listed 20 s after broker 4 resumed: %r\n%s" % (x, c.logs(25))
        time.sleep(0.05)
    done_after = time.monotonic() - t_resume

    # Every broker: replicas [2,3,4] in the full ISR, led by one of them in a
    # higher epoch; broker 1 is out.
    for node in (1, 2, 3, 4):
        ps = wait_parts(c, topic, node, lambda ps: ps[0]["replicas"] == [2, 3, 4]
                        and sorted(ps[0]["isr"]) == [2, 3, 4] and ps[0]["leader"] in (2, 3, 4),
                        10, "replicas [2,3,4] with the full ISR on broker %d" % node)
        assert ps[0]["epoch"] > before[0]["epoch"], (before[0], ps[0])
    after = parts(c, topic, 1)[0]
    wait_until(lambda: leader_ready(c.broker(after["leader"]), topic, 0), 10,
               what="the new leader %d serving" % after["leader"])
    # Broker 1 holds no replica of the partition any more (DescribeLogDirs),
    # and has deleted its copy.
    wait_until(lambda: (topic, 0) not in describe_log_dirs(c.broker(1))[1][0]["sizes"], 10,
               what="broker 1's DescribeLogDirs without %s-0" % topic)
    wait_until(lambda: logged_size(metrics_port, topic, 0) == 0, 10,
               what="broker 1 deleting its copy of %s-0" % topic)
    for node in (2, 3, 4):
        _err, dirs = describe_log_dirs(c.broker(node))
        assert (topic, 0) in dirs[0]["sizes"], (node, dirs)

    t_done = time.monotonic()
    wait_until(lambda: load.first_ack_after(0, t_done), 15, interval=0.05,
               what="acks after the reassignment")
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    summary = assert_exactly_once(load, read_partitions(c.bootstrap([2, 3, 4]), topic, [0]))

    # Nothing in progress any more: cancelling is NO_REASSIGNMENT_IN_PROGRESS.
    top, res = alter_reassignments(via, topic, {0: None})
    assert top[0] == 0 and res[0][0] == NO_REASSIGNMENT_IN_PROGRESS, (top, res)
    # A target with a broker that does not exist: INVALID_REPLICA_ASSIGNMENT,
    # and nothing changes.
    top, res = alter_reassignments(via, topic, {0: [2, 3, 9]})
    assert top[0] == 0 and res[0][0] == INVALID_REPLICA_ASSIGNMENT, (top, res)
    assert list_reassignments(via) == {}
    now = parts(c, topic, 3)[0]
    assert (now["replicas"], now["leader"], now["epoch"]) == (
        after["replicas"], after["leader"], after["epoch"]), (after, now)
    print("reassignment [1,2,3] -> [2,3,4]: listed %d times after broker 4 resumed, done "
          "%.2fs after; leader %d epoch %d -> %d; %r"
          % (len(seen), done_after, after["leader"], before[0]["epoch"], after["epoch"], summary))


# --------------------------------------------------------------------------
# 2-3. Preferred leaders
# --------------------------------------------------------------------------


def _preferred_lost(c, topic, ps, partition=0):
    """Shuts the preferred replica of `partition` down (SIGTERM), waits for
    other leaders of what it led, restarts it and waits until it is back in
    every ISR. Returns (preferred id, the partitions once moved, once back)."""
    preferred = ps[partition]["replicas"][0]
    assert ps[partition]["leader"] == preferred, ps
    other = min(i for i in c.node_ids() if i != preferred)
    assert c.broker(preferred).stop() == 0
    led = [p for p, st in ps.items() if st["leader"] == preferred]
    moved = wait_parts(c, topic, other, lambda now: all(
        now[p]["leader"] not in (preferred, -1) for p in led), 10,
        "new leaders for %r after broker %d stopped" % (led, preferred))
    c.broker(preferred).start()
    n = len(ps[partition]["replicas"])
    back = wait_parts(c, topic, other, full_isr(n), 20,
                      "broker %d back in the ISR" % preferred)
    return preferred, moved, back


def test_preferred_leader_election_restores_leader(cluster):
    c = cluster(3, overrides={"leader.imbalance.check.interval.seconds": "3600",
                              "replica.lag.time.max.ms": "3000"})
    topic = unique_topic("elect")
    ps = create(c, topic, 1, 3)
    first = produce_all(c.bootstrap(), topic, 100, [0], prefix=b"before")
    preferred, moved, back = _preferred_lost(c, topic, ps)
    other = min(i for i in c.node_ids() if i != preferred)
    # Back in sync but not leading, and (rebalancing held off) it stays so.
    time.sleep(3)
    held = parts(c, topic, other)[0]
    assert held["leader"] == moved[0]["leader"] != preferred, (moved[0], held)
    assert held["epoch"] == back[0]["epoch"], (back[0], held)

    a = admin(c)
    tp = TopicPartition(topic, 0)
    # (No request_timeout: confluent-kafka 2.16's elect_leaders raises SystemError with it.)
    result = a.elect_leaders(ElectionType.PREFERRED, [tp]).result(20)
    assert list(result.items()) == [(tp, None)] or (
        len(result) == 1 and list(result.values())[0] is None), result
    for node in c.node_ids():
        now = wait_parts(c, topic, node, lambda ps: ps[0]["leader"] == preferred, 10,
                         "broker %d to name the preferred leader %d" % (node, preferred))
        assert now[0]["epoch"] > held["epoch"], (held, now[0])
        assert sorted(now[0]["isr"]) == [1, 2, 3], now[0]
    wait_until(lambda: leader_ready(c.broker(preferred), topic, 0), 10,
               what="broker %d serving as leader" % preferred)

    # Again: not needed.
    result = a.elect_leaders(ElectionType.PREFERRED, [tp]).result(20)
    ((_tp, err),) = result.items()
    assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED \
        == ELECTION_NOT_NEEDED, result
    assert parts(c, topic, other)[0]["epoch"] == now[0]["epoch"]

    # The partition works under its preferred leader; nothing was lost.
    second = produce_all(c.bootstrap(), topic, 100, [0], prefix=b"after")
    got = read_partitions(c.bootstrap(), topic, [0])
    assert [v for _o, v in got[0]] == first[0] + second[0]
    print("preferred leader %d: epoch %d (away, leader %d) -> %d after the election"
          % (preferred, held["epoch"], held["leader"], now[0]["epoch"]))


def test_deleted_records_stay_deleted_under_a_new_leader(cluster):
    """DeleteRecords acts on the leader; the followers move their log start
    with it (the leader's fetch answers carry it), so the next leader neither
    lists nor serves what was deleted."""
    c = cluster(3, overrides={"leader.imbalance.check.interval.seconds": "3600"})
    topic = unique_topic("delrec")
    ps = create(c, topic, 1, 3)
    values = []
    for k in range(10):     # ten batches
        values += produce_all(c.bootstrap(), topic, 10, [0], prefix=b"r%d" % k)[0]
    leader = ps[0]["leader"]
    followers = [i for i in ps[0]["replicas"] if i != leader]
    wait_parts(c, topic, leader, full_isr(3), 10, "the ISR of 3")
    before = {i: partition_sizes(c.broker(i), topic, [0])[0] for i in followers}
    assert all(size > 0 for size in before.values()), before

    a = admin(c)
    fs = a.delete_records([TopicPartition(topic, 0, 60)], request_timeout=15)
    (f,) = fs.values()
    assert f.result(timeout=20).low_watermark == 60
    # The followers drop the wholly deleted batches too.
    wait_until(lambda: all(partition_sizes(c.broker(i), topic, [0])[0] < before[i]
                           for i in followers), 10,
               what="the followers dropping the deleted batches")

    # The leader steps down (controlled shutdown); a follower takes over.
    assert c.broker(leader).stop() == 0
    now = wait_parts(c, topic, followers[0], lambda ps: ps[0]["leader"] in followers, 15,
                     "a new leader among %r" % followers)
    new = now[0]["leader"]
    wait_until(lambda: leader_ready(c.broker(new), topic, 0), 10,
               what="broker %d serving as leader" % new)
    cons = consumer(c.broker(new).bootstrap, **{"group.id": unique_topic("g"),
                                                 "auto.offset.reset": "earliest"})
    try:
        tp = TopicPartition(topic, 0)
        assert cons.get_watermark_offsets(tp, timeout=10, cached=False) == (60, 100)
        cons.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 40 and time.monotonic() < deadline:
            got += [(m.offset(), m.value()) for m in cons.consume(100, 0.5) if m.error() is None]
    finally:
        cons.close()
    assert got == list(zip(range(60, 100), values[60:])), got[:3]
    c.broker(leader).start()


def test_auto_leader_rebalance_restores_preferred_leaders(cluster):
    c = cluster(3, overrides={"leader.imbalance.check.interval.seconds": "2",
                              "replica.lag.time.max.ms": "3000"})
    topic = unique_topic("rebalance")
    ps = create(c, topic, 3, 3)
    preferred = ps[0]["replicas"][0]
    mine = [p for p, s in ps.items() if s["replicas"][0] == preferred]
    for p, s in ps.items():
        assert s["leader"] == s["replicas"][0], ps
    preferred_, moved, _back = _preferred_lost(c, topic, ps)
    assert preferred_ == preferred
    t_back = time.monotonic()
    other = min(i for i in c.node_ids() if i != preferred)
    for p in mine:
        assert moved[p]["leader"] != preferred, moved
    ok = wait_parts(c, topic, other, lambda ps: all(
        s["leader"] == s["replicas"][0] for s in ps.values()), 15,
        "every partition led by its preferred replica again (broker %d for %r)"
        % (preferred, mine))
    took = time.monotonic() - t_back
    for p in mine:
        assert ok[p]["epoch"] > moved[p]["epoch"], (p, moved[p], ok[p])
    # Every broker agrees, and the leaders serve.
    for node in c.node_ids():
        view = wait_parts(c, topic, node, lambda ps: all(
            s["leader"] == s["replicas"][0] for s in ps.values()), 5,
            "broker %d naming the preferred leaders" % node)
        assert {p: s["leader"] for p, s in view.items()} == \
            {p: s["leader"] for p, s in ok.items()}
    wait_leaders_ready(c, topic, ok)
    acked = produce_all(c.bootstrap(), topic, 20, range(3))
    got = read_partitions(c.bootstrap(), topic, range(3))
    for p in range(3):
        assert [v for _o, v in got[p]] == acked[p], p
    print("broker %d led %r again %.2fs after it was back in the ISR" % (preferred, mine, took))


# --------------------------------------------------------------------------
# 4. CreatePartitions
# --------------------------------------------------------------------------


def test_create_partitions_grows_replicated_topic(cluster):
    c = cluster(3)
    topic = unique_topic("grow")
    create(c, topic, 2, 2, ids=[1])
    a = admin(c, [1])
    t0 = time.monotonic()
    a.create_partitions([NewPartitions(topic, 4)], request_timeout=15)[topic].result(timeout=20)
    views = {}
    for node in (1, 2, 3):
        views[node] = wait_parts(c, topic, node, lambda ps: len(ps) == 4 and full_isr(2)(ps), 15,
                                 "4 partitions with 2 replicas in sync on broker %d" % node)
    took = time.monotonic() - t0
    for node in (2, 3):
        assert {p: (s["leader"], s["replicas"]) for p, s in views[node].items()} == \
            {p: (s["leader"], s["replicas"]) for p, s in views[1].items()}, views
    for s in views[1].values():
        assert len(set(s["replicas"])) == 2 and set(s["replicas"]) <= {1, 2, 3}, s
        assert s["leader"] in s["replicas"] and s["error"] == 0, s
    # confluent-kafka's view through another broker.
    md = admin(c, [3]).list_topics(topic, timeout=10).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2, 3]
    for p, pm in md.partitions.items():
        assert len(pm.replicas) == 2 and sorted(pm.isrs) == sorted(pm.replicas), (p, pm)

    wait_leaders_ready(c, topic, views[1])
    acked = produce_all(c.bootstrap([2]), topic, 50, range(4))
    got = read_partitions(c.bootstrap([3]), topic, range(4))
    for p in range(4):
        assert [v for _o, v in got[p]] == acked[p], p
    # The new partitions' followers have the data too (acks=all): their
    # DescribeLogDirs sizes are > 0.
    for p in (2, 3):
        for r in views[1][p]["replicas"]:
            wait_until(lambda: describe_log_dirs(c.broker(r), {topic: [p]})[1][0]["sizes"]
                       .get((topic, p), 0) > 0, 10,
                       what="partition %d's size on replica %d" % (p, r))
    print("2 -> 4 partitions everywhere after %.2fs; new: %r"
          % (took, {p: views[1][p]["replicas"] for p in (2, 3)}))


# --------------------------------------------------------------------------
# 5. Topic configs
# --------------------------------------------------------------------------


def _configs_via_admin(c, node, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = admin(c, [node])   # kept alive until the future is done
    entries = a.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    return {k: e.value for k, e in entries.items()}


def test_topic_config_change_seen_by_every_broker(cluster):
    c = cluster(3)
    topic = unique_topic("cfg")
    create(c, topic, 1, 3, ids=[1])
    for node in (1, 2, 3):
        assert describe_topic_configs(c.broker(node), topic)["retention.ms"][0] == \
            DEFAULT_RETENTION_MS

    def set_via(node, ops):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry(n, v, incremental_operation=op) for n, v, op in ops])
        a = admin(c, [node])   # kept alive until the future is done
        a.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)

    t0 = time.monotonic()
    set_via(1, [("retention.ms", "1234567", AlterConfigOpType.SET)])
    seen = {}
    for node in (1, 2, 3):
        wait_until(lambda: describe_topic_configs(c.broker(node), topic)["retention.ms"] == (
            "1234567", DYNAMIC_TOPIC_CONFIG), 10,
            what="retention.ms=1234567 (topic override) on broker %d" % node)
        seen[node] = time.monotonic() - t0
        assert _configs_via_admin(c, node, topic)["retention.ms"] == "1234567", node

    # Deleted through broker 3: the default again everywhere.
    set_via(3, [("retention.ms", None, AlterConfigOpType.DELETE)])
    for node in (1, 2, 3):
        wait_until(lambda: describe_topic_configs(c.broker(node), topic)["retention.ms"][0]
                   == DEFAULT_RETENTION_MS, 10,
                   what="retention.ms back to the default on broker %d" % node)
        assert _configs_via_admin(c, node, topic)["retention.ms"] == DEFAULT_RETENTION_MS
    print("retention.ms set through broker 1 seen after %r s" % {
        k: round(v, 3) for k, v in seen.items()})


# --------------------------------------------------------------------------
# 6. Log dirs
# --------------------------------------------------------------------------


def test_describe_and_alter_log_dirs_per_broker(cluster):
    c = cluster(3)
    topic = unique_topic("logdirs")
    ps = create(c, topic, 3, 2)
    produce_all(c.bootstrap(), topic, 30, range(3))
    hosted = {n: sorted(p for p, s in ps.items() if n in s["replicas"]) for n in (1, 2, 3)}
    assert sorted(p for n in hosted for p in hosted[n]) == [0, 0, 1, 1, 2, 2], hosted

    for node, b in c.brokers.items():
        def mine():
            err, dirs = describe_log_dirs(b)
            assert err == 0 and len(dirs) == 1 and dirs[0]["error_code"] == 0, (err, dirs)
            return dirs[0]
        d = mine()
        assert os.path.realpath(d["log_dir"]) == os.path.realpath(str(b.data_dir)), \
            (d["log_dir"], b.data_dir)
        assert d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"], d
        listed = sorted(p for (t, p) in d["sizes"] if t == topic)
        assert listed == hosted[node], "broker %d lists %r, Metadata says it hosts %r" % (
            node, listed, hosted[node])
        # Written through acks=all: every replica has the data.
        wait_until(lambda: all(mine()["sizes"][(topic, p)] > 0 for p in hosted[node]), 10,
                   what="sizes > 0 on broker %d" % node)
        # Asking for one topic's partitions: the same subset.
        _err, dirs = describe_log_dirs(b, {topic: [0, 1, 2]})
        assert sorted(p for (t, p) in dirs[0]["sizes"] if t == topic) == hosted[node]

        # AlterReplicaLogDirs: to where it is (the harness's log.dirs, and the
        # path DescribeLogDirs reports) accepted; elsewhere LOG_DIR_NOT_FOUND.
        for path in (str(b.data_dir), d["log_dir"]):
            res = alter_replica_log_dirs(b, path, topic, hosted[node])
            assert res == {p: 0 for p in hosted[node]}, (node, path, res)
        res = alter_replica_log_dirs(b, "/nonexistent", topic, hosted[node])
        assert res == {p: LOG_DIR_NOT_FOUND for p in hosted[node]}, (node, res)
    print("hosted partitions per broker: %r" % hosted)


# --------------------------------------------------------------------------
# 7. Metrics
# --------------------------------------------------------------------------


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')


def scrape(port):
    """/metrics of one broker: {name: sum of its series}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        status, body = r.status, r.read()
    finally:
        conn.close()
    assert status == 200, (status, body[:200])
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, "unparseable metrics line: %r" % line
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


UNDER = "kafka_server_replicamanager_underreplicatedpartitions"
SHRINKS = "kafka_server_replicamanager_isrshrinks_total"
EXPANDS = "kafka_server_replicamanager_isrexpands_total"
ACTIVE = "kafka_controller_kafkacontroller_activecontrollercount"
LEADERS = "kafka_server_replicamanager_leadercount"


def test_replication_metrics_follow_a_broker_outage(cluster):
    ports = {i: free_port() for i in (1, 2, 3)}
    c = cluster(3, overrides={"replica.lag.time.max.ms": "3000"},
                per_broker={i: {"metrics.listener": "http://127.0.0.1:%d" % p}
                            for i, p in ports.items()})
    topic = unique_topic("metrics")
    ps = create(c, topic, 3, 3)

    def views(ids):
        return {i: scrape(ports[i]) for i in ids}

    def total(v, name):
        return sum(m.get(name, 0.0) for m in v.values())

    def settled(ids, under):
        """The scrapes of `ids` when, over them, one controller is active,
        the leader counts sum to 3 and `under` partitions are
        under-replicated, and each broker's leader and under-replicated
        counts match what Metadata says it leads; else None."""
        v = views(ids)
        if not (total(v, ACTIVE) == 1 and total(v, LEADERS) == 3 and total(v, UNDER) == under):
            return None
        md = parts(c, topic, ids[0])
        for i in ids:
            led = [p for p, s in md.items() if s["leader"] == i]
            if v[i][LEADERS] != len(led):
                return None
            if v[i][UNDER] != sum(1 for p in led if len(md[p]["isr"]) < 3):
                return None
        return v, md
    v0, _md = wait_until(lambda: settled([1, 2, 3], 0), 15,
                         what="metrics of a healthy cluster")
    for name in (UNDER, SHRINKS, EXPANDS, ACTIVE, LEADERS):
        assert all(name in m for m in v0.values()), name

    # A broker that is not the controller, killed: every partition (each has a
    # replica on it) is under-replicated at its (surviving) leader.
    ctl = c.controller()
    victim = max(i for i in (1, 2, 3) if i != ctl)
    survivors = [i for i in (1, 2, 3) if i != victim]
    t_kill = time.monotonic()
    c.broker(victim).kill9()
    wait_parts(c, topic, survivors[0], lambda ps: all(
        victim not in s["isr"] and s["leader"] in survivors for s in ps.values()),
        c.session_timeout + 8, "broker %d out of every ISR" % victim)
    v1, now = wait_until(lambda: settled(survivors, 3), 10,
                         what="3 under-replicated partitions over brokers %r" % survivors)
    shrunk = time.monotonic() - t_kill
    for i in survivors:
        led = [p for p, s in now.items() if s["leader"] == i]
        if led:
            assert v1[i][UNDER] >= 1, (i, v1[i], now)
            # Shrunk by the leader (its counter) or by the controller (the ISR).
            assert v1[i][SHRINKS] >= 1 or all(len(now[p]["isr"]) < 3 for p in led), (i, v1, now)
    assert total(v1, ACTIVE) == 1 and v1[ctl][ACTIVE] == 1

    # Back: the ISRs expand, nothing is under-replicated.
    t_start = time.monotonic()
    c.broker(victim).start()
    wait_parts(c, topic, survivors[0], full_isr(3), 20, "broker %d back in every ISR" % victim)
    v2, _md = wait_until(lambda: settled([1, 2, 3], 0), 15, what="metrics back to healthy")
    back = time.monotonic() - t_start
    assert total(v2, EXPANDS) >= 1, v2
    assert total(v2, ACTIVE) == 1 and v2[ctl][ACTIVE] == 1, v2
    print("under-replicated %s after kill -9 of broker %d (%.2fs), back to 0 %.2fs after "
          "restart; shrinks %r, expands %r"
          % ({i: v1[i][UNDER] for i in survivors}, victim, shrunk, back,
             {i: v1[i][SHRINKS] for i in survivors}, {i: v2[i][EXPANDS] for i in (1, 2, 3)}))
