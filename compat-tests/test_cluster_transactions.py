"""Transactions in cluster mode (brokers + etcd): what transactional clients
can rely on when the transaction coordinator, the group coordinator and the
partition leaders are different brokers, and when the coordinator dies.

The contract is Kafka's:
- A transactional id's coordinator is the leader of partition
  abs(javaHashCode(id)) % transaction.state.log.num.partitions of the
  replicated internal topic __transaction_state (created on the first
  FindCoordinator / InitProducerId for a transactional id; RF = live brokers,
  up to 3). Every broker's FindCoordinator (key type 1) names it; the others
  answer the transactional APIs (InitProducerId with a transactional id,
  AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions) with
  NOT_COORDINATOR (16) and do not list its transactions in ListTransactions.
  Here transaction.state.log.num.partitions=6, and every transactional id
  used has a non-negative Java hash (so abs() and `& 0x7fffffff` agree).
- The coordinator writes COMMIT / ABORT markers to every partition of a
  transaction, on whichever broker leads it (WriteTxnMarkers over the
  inter-broker listener); offsets sent with send_offsets_to_transaction go to
  the group coordinator and count from the commit.
- The state of each transaction is replicated in __transaction_state: when
  the coordinator dies, the new leader of its partition loads it, completes
  transactions it finds in PrepareCommit / PrepareAbort (sending the markers
  again) and aborts ongoing ones that time out.

Tests:
1. Commit, abort, commit over a 6-partition RF 3 topic whose leaders are
   spread over the 3 brokers (so the coordinator is not the leader of most
   partitions): read_committed sees exactly the two committed transactions
   (values, per-partition order), read_uncommitted sees everything; every
   partition has exactly one marker per transaction and LSO == HW; the
   coordinator describes the transaction as CompleteCommit.
2. Consume-transform-produce (read_committed consumer in a group +
   transactional producer with send_offsets_to_transaction) over 3,000
   records while the transaction coordinator is killed (kill -9), restarted,
   and the coordinator of the moment killed again: the output holds every
   input record exactly once, in order, the group's offsets are the input's
   ends and no transaction is left open.
3. A transaction in PrepareCommit whose marker cannot reach one partition
   leader (its inter-broker listener cut through the harness's LinkProxy) is
   completed by the next coordinator after the first is killed and the link
   healed: read_committed sees it, the new coordinator describes it as
   CompleteCommit, and the transactional id works on with a new producer.
4. Raw requests: non-coordinators answer NOT_COORDINATOR to InitProducerId
   (v1 and v4), AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
   DescribeTransactions for the id, and leave it out of ListTransactions;
   InitProducerId without a transactional id still works on every broker.

Each test runs its own loopback cluster (cluster_harness.Cluster) on the
module's etcd, with broker.session.timeout.ms=3000. Measured times are
printed (pytest -s shows them).
"""

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from cluster_helpers import create, full_isr, parts, wait_parts
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from txn_worker import TransformWorker, wait_worker
from runnel_harness import unique_topic
from test_cluster_groups import (high_watermarks, init_producer_id_v1, java_hash,
                                 offsets_partition, unique_group)
from test_transactions import (add_offsets, add_partitions, describe_transactions, end_txn,
                               find_coordinator_v1, init_pid, list_offsets_v2,
                               list_transactions)

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240)]

COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
CONCURRENT_TRANSACTIONS = 51
KEY_TYPE_TRANSACTION = 1


TXN_TOPIC = "__transaction_state"
TXN_PARTITIONS = 6
OFFSETS_TOPIC = "__consumer_offsets"
TXN_CLUSTER = {
    "transaction.state.log.num.partitions": str(TXN_PARTITIONS),
    "offsets.topic.num.partitions": "6",
    "group.initial.rebalance.delay.ms": "500",
    "replica.lag.time.max.ms": "3000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
}


# --------------------------------------------------------------------------
# Where a transactional id lives
# --------------------------------------------------------------------------


def unique_txn_id(prefix="tx"):
    """A fresh transactional id whose Java hash is not negative: Kafka's
    Utils.abs(hash) and `hash & 0x7fffffff` then place it alike."""
    for _ in range(1000):
        tid = unique_group(prefix)
        if java_hash(tid) >= 0:
            return tid
    raise AssertionError("no transactional id with a non-negative hash")


def txn_partition(tid):
    return offsets_partition(tid, TXN_PARTITIONS)


def find_txn_coordinator(b, tid, timeout=5.0):
    """FindCoordinator v1 (transaction key) sent to broker `b` -> (error, node id)."""
    with kw.KafkaConn.to(b.bootstrap, timeout=timeout) as conn:
        err, node, _host, _port = find_coordinator_v1(conn, tid, KEY_TYPE_TRANSACTION)
    return err, node


def ensure_txn_topic(c):
    """The first FindCoordinator for a transactional id creates
    __transaction_state; waits until its partitions have a leader and the
    full ISR (RF = live brokers, up to 3). Returns {partition: state}."""
    node = c.live_ids()[0]
    probe_id = unique_txn_id("probe")
    rf = min(3, len(c.live_ids()))
    last = {}

    def probe():
        last["find"] = find_txn_coordinator(c.broker(node), probe_id)
        last["parts"] = parts(c, TXN_TOPIC, node)
        ps = last["parts"]
        return ps if len(ps) == TXN_PARTITIONS and full_isr(rf)(ps) else None
    try:
        return wait_until(probe, 30, interval=0.2,
                          what="%s: %d partitions with an ISR of %d"
                          % (TXN_TOPIC, TXN_PARTITIONS, rf))
    except AssertionError as e:
        raise AssertionError("%s\nlast FindCoordinator %r, partitions %r\n%s"
                             % (e, last.get("find"), last.get("parts"), c.logs(25))) from None


def wait_txn_coordinator(c, tid, on=None, exclude=(), timeout=30):
    """Waits until every broker in `on` (default: the live ones) names the
    same coordinator for transactional id `tid`, one of them and not in
    `exclude`, and that broker's Metadata has it leading the id's
    __transaction_state partition. Returns its node id."""
    on = list(on if on is not None else c.live_ids())
    part = txn_partition(tid)
    last = {}

    def probe():
        answers = {i: find_txn_coordinator(c.broker(i), tid) for i in on}
        last["answers"] = answers
        if len(set(answers.values())) != 1:
            return None
        ((err, node),) = set(answers.values())
        if err != 0 or node not in on or node in exclude:
            return None
        last["leader"] = parts(c, TXN_TOPIC, node)[part]["leader"]
        return node if last["leader"] == node else None
    try:
        return wait_until(probe, timeout, interval=0.1,
                          what="brokers %r to name the leader of %s[%d] as the coordinator "
                          "of %s" % (on, TXN_TOPIC, part, tid))
    except AssertionError as e:
        raise AssertionError("%s\nlast FindCoordinator answers %r, leader of %s[%d] %r\n%s"
                             % (e, last.get("answers"), TXN_TOPIC, part, last.get("leader"),
                                c.logs(25))) from None


def describe_txn(b, tid):
    """DescribeTransactions v0 sent to broker `b`: the id's entry
    {"error", "state", "producer_id", "epoch", "topics", ...}."""
    with kw.KafkaConn.to(b.bootstrap, timeout=5) as conn:
        return describe_transactions(conn, [tid])[tid]


def wait_txn_state(c, node, tid, states, timeout, what):
    """Waits until broker `node` describes `tid` without error in one of
    `states`; the description."""
    last = {}

    def probe():
        last["d"] = describe_txn(c.broker(node), tid)
        d = last["d"]
        return d if d["error"] == 0 and d["state"] in states else None
    try:
        return wait_until(probe, timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError("%s\nlast DescribeTransactions answer of broker %d: %r\n%s"
                             % (e, node, last.get("d"), c.logs(25))) from None


# --------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------


def read_records(bootstrap, topic, partitions, isolation, expect, timeout=40, quiet_for=1.5):
    """Every record of the partitions from offset 0 with `isolation`
    ("read_committed" / "read_uncommitted"): reads until at least `expect`
    arrived and then nothing for `quiet_for` seconds (or `timeout`).
    Returns [(partition, offset, value)] in the order read."""
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_group("rd"),
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "isolation.level": isolation, "fetch.wait.max.ms": 100,
                     "socket.timeout.ms": 10000})
    try:
        cons.assign([TopicPartition(topic, p, 0) for p in partitions])
        got = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            for m in cons.consume(1000, 0.2):
                if m.error() is None:
                    got.append((m.partition(), m.offset(), m.value()))
                    last = time.monotonic()
            if len(got) >= expect and time.monotonic() - last >= quiet_for:
                break
        return got
    finally:
        cons.close()


def offsets_at(c, node, topic, partition):
    """((error, high watermark), (error, last stable offset)) of a partition,
    asked of broker `node` (its leader)."""
    with kw.KafkaConn.to(c.broker(node).bootstrap, timeout=5) as conn:
        return (list_offsets_v2(conn, topic, partition, isolation=0),
                list_offsets_v2(conn, topic, partition, isolation=1))


def wait_stable(c, topic, leaders, timeout=30):
    """Waits until every partition's leader (leaders: {partition: node})
    reports its last stable offset equal to its high watermark (no
    transaction left open); {partition: high watermark}."""
    out = {}
    for p, node in sorted(leaders.items()):
        last = {}

        def probe():
            last["v"] = offsets_at(c, node, topic, p)
            (e0, hw), (e1, lso) = last["v"]
            return (e0, e1) == (0, 0) and lso == hw
        try:
            wait_until(probe, timeout, interval=0.2,
                       what="LSO == HW of %s[%d] on its leader %d" % (topic, p, node))
        except AssertionError as e:
            raise AssertionError("%s\nlast ((error, HW), (error, LSO)): %r\n%s"
                                 % (e, last.get("v"), c.logs(25))) from None
        out[p] = last["v"][0][1]
    return out


def leaders_of(c, topic, node=None):
    """{partition: leader} of `topic` as broker `node` (default: the first live one) says."""
    ps = parts(c, topic, node if node is not None else c.live_ids()[0])
    return {p: s["leader"] for p, s in ps.items()}


def txn_producer(bootstrap, tid, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5,
            "socket.timeout.ms": 10000}
    conf.update(extra)
    return Producer(conf)


# --------------------------------------------------------------------------
# 1. Commit and abort with markers on every broker
# --------------------------------------------------------------------------


def test_transactions_commit_and_abort_across_brokers(cluster):
    c = cluster(3, overrides=TXN_CLUSTER)
    topic = unique_topic("txx")
    nparts, per = 6, 20
    # Leaders spread: each broker leads two partitions.
    ps = create(c, topic, nparts, 3, assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2],
                                                 [1, 3, 2], [2, 1, 3], [3, 2, 1]])
    leaders = {p: s["leader"] for p, s in ps.items()}
    assert set(leaders.values()) == {1, 2, 3}, "leaders not spread over the brokers: %r" % (
        leaders,)
    txn_leaders = {p: s["leader"] for p, s in ensure_txn_topic(c).items()}
    tid = unique_txn_id("txx")
    coord = wait_txn_coordinator(c, tid)
    assert coord == txn_leaders[txn_partition(tid)], (coord, txn_leaders, txn_partition(tid))
    remote = sorted(p for p, node in leaders.items() if node != coord)
    assert remote, "coordinator %d leads every partition %r: no marker crosses brokers" % (
        coord, leaders)

    p = txn_producer(c.bootstrap(), tid, **{"transaction.timeout.ms": 60000})
    t0 = time.monotonic()
    p.init_transactions(40)
    committed, everything = [], []
    for name, commit in ((b"c1", True), (b"a1", False), (b"c2", True)):
        p.begin_transaction()
        for k in range(per):
            for q in range(nparts):
                v = b"%s-%d-%d" % (name, q, k)
                p.produce(topic, v, partition=q)
                everything.append((q, v))
                if commit:
                    committed.append((q, v))
        if commit:
            p.commit_transaction(40)
        else:
            assert p.flush(30) == 0
            p.abort_transaction(40)
    took = time.monotonic() - t0

    # No failover happened: the same coordinator, which completed the last commit.
    assert wait_txn_coordinator(c, tid) == coord
    d = wait_txn_state(c, coord, tid, ("CompleteCommit",), 20,
                       "coordinator %d to complete the last commit of %s" % (coord, tid))
    assert d["topics"] == {}, d
    # Every partition, on whichever broker leads it: one marker per
    # transaction (3 x 20 records + 3 markers) and nothing left open.
    hws = wait_stable(c, topic, leaders)
    assert hws == {q: 3 * per + 3 for q in range(nparts)}, hws

    got = read_records(c.bootstrap(), topic, range(nparts), "read_committed", len(committed))
    values = sorted(v for _q, _o, v in got)
    assert len(values) == len(set(values)), "duplicates read: %d" % (
        len(values) - len(set(values)))
    assert values == sorted(v for _q, v in committed), \
        "read_committed: %d records, expected %d; unexpected %r, missing %r" % (
            len(values), len(committed), sorted(set(values) - {v for _q, v in committed})[:5],
            sorted({v for _q, v in committed} - set(values))[:5])
    for q in range(nparts):
        mine = [v for pq, v in committed if pq == q]
        assert [v for pq, _o, v in got if pq == q] == mine, "partition %d out of order" % q
    every = read_records(c.bootstrap(), topic, range(nparts), "read_uncommitted",
                         len(everything))
    assert sorted(v for _q, _o, v in every) == sorted(v for _q, v in everything), \
        "read_uncommitted: %d records, expected %d" % (len(every), len(everything))
    print("coordinator %d (%s[%d]); partition leaders %r, markers to other brokers for "
          "partitions %r; 3 transactions in %.2fs"
          % (coord, TXN_TOPIC, txn_partition(tid), leaders, remote, took))


# --------------------------------------------------------------------------
# 2. Consume-transform-produce across coordinator kills
# --------------------------------------------------------------------------


def test_consume_transform_produce_survives_coordinator_kills(cluster):
    c = cluster(3, overrides=TXN_CLUSTER)
    src, dst = unique_topic("ctp-in"), unique_topic("ctp-out")
    nparts, n = 3, 3000
    create(c, src, nparts, 3)
    create(c, dst, nparts, 3)
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True})
    for i in range(n):
        p.produce(src, b"in-%d" % i, key=b"%d" % i, partition=i % nparts)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    ends = {q: n // nparts for q in range(nparts)}
    assert high_watermarks(c.bootstrap(), src, range(nparts)) == ends

    ensure_txn_topic(c)
    tid, group = unique_txn_id("ctp"), unique_group("ctp")
    # Held back before the second kill, so that some work is left for after it.
    w = TransformWorker(c.bootstrap(), src, dst, group, tid, ends, rate=200,
                        gate=n - 600).start()
    kills = []
    t_start = time.monotonic()
    try:
        wait_worker(c, w, lambda: w.progress() >= n // 6, 60,
                    "the transform loop to commit %d records" % (n // 6))

        # First kill: the coordinator of the moment.
        first = wait_txn_coordinator(c, tid)
        at = w.progress()
        c.broker(first).kill9()
        t_kill = time.monotonic()
        survivors = [i for i in c.node_ids() if i != first]
        wait_worker(c, w, lambda: w.progress() >= at + 200, 60,
                    "progress after killing coordinator %d" % first)
        resumed = time.monotonic() - t_kill
        moved = wait_txn_coordinator(c, tid, on=survivors, exclude=[first])
        kills.append((first, at, moved, resumed))

        # Back with all replicas in sync (so the next kill leaves an ISR of
        # two everywhere, as transaction.state.log.min.isr=2 needs).
        c.broker(first).start()
        c.wait_for_members(c.node_ids(), timeout=c.session_timeout + 20)
        for t in (TXN_TOPIC, OFFSETS_TOPIC, src, dst):
            wait_parts(c, t, survivors[0], full_isr(3), 40,
                       "%s back to an ISR of 3 after broker %d's restart" % (t, first))

        # Second kill: whichever broker coordinates now.
        second = wait_txn_coordinator(c, tid)
        at = w.progress()
        c.broker(second).kill9()
        t_kill = time.monotonic()
        w.gate = n
        survivors = [i for i in c.node_ids() if i != second]
        wait_worker(c, w, w.done, 90,
                    "the transform loop to commit every record after killing coordinator %d"
                    % second)
        finished = time.monotonic() - t_kill
        moved = wait_txn_coordinator(c, tid, on=survivors, exclude=[second])
        kills.append((second, at, moved, finished))
    finally:
        w.stop()
    total = time.monotonic() - t_start

    # Nothing left open on the output; every input record exactly once, in order.
    live = c.live_ids()
    hws = wait_stable(c, dst, leaders_of(c, dst, live[0]))
    got = read_records(c.bootstrap(live), dst, range(nparts), "read_committed", n)
    values = [v for _q, _o, v in got]
    want = {b"out-in-%d" % i for i in range(n)}
    dups = len(values) - len(set(values))
    assert not dups and set(values) == want, \
        "output: %d records, %d duplicates, %d missing (e.g. %r), %d unexpected" % (
            len(values), dups, len(want - set(values)), sorted(want - set(values))[:5],
            len(set(values) - want))
    for q in range(nparts):
        assert [v for pq, _o, v in got if pq == q] == [b"out-in-%d" % i
                                                       for i in range(q, n, nparts)], \
            "output partition %d out of order" % q
    # The group's committed offsets are the ends of the input.
    cons = Consumer({"bootstrap.servers": c.bootstrap(live), "group.id": group,
                     "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        committed = cons.committed([TopicPartition(src, q) for q in range(nparts)], timeout=15)
    finally:
        cons.close()
    assert {tp.partition: tp.offset for tp in committed} == ends, committed
    counts, errors = w.summary()
    print("%d records transformed exactly once in %.1fs; kills (coordinator, progress at the "
          "kill, next coordinator, s to progress / to the end): %r; output HWs %r; worker %r; "
          "errors (where, name): count %r" % (n, total, kills, hws, counts, errors))


# --------------------------------------------------------------------------
# 3. PrepareCommit completed by the next coordinator
# --------------------------------------------------------------------------


def test_prepare_commit_completed_by_new_coordinator(cluster):
    c = cluster(3, overrides=TXN_CLUSTER, proxied=True)
    ensure_txn_topic(c)
    tid = unique_txn_id("tpc")
    part = txn_partition(tid)
    coord = wait_txn_coordinator(c, tid)
    state = parts(c, TXN_TOPIC, coord)[part]
    assert state["leader"] == coord and len(state["replicas"]) == 3, state
    # After the coordinator's death the first other replica in order takes
    # over (y); the partition whose marker is held back is led by the last (x),
    # so the next coordinator has to reach x through its cut link.
    y, x = [r for r in state["replicas"] if r != coord]
    topic = unique_topic("tpc")
    create(c, topic, 2, 3, assignment=[[x, y, coord], [y, x, coord]])
    wait_parts(c, topic, x, lambda ps: ps[0]["leader"] == x and ps[1]["leader"] == y, 15,
               "%s[0] led by %d, %s[1] by %d" % (topic, x, topic, y))
    k = 20

    p = txn_producer(c.bootstrap(), tid, **{"transaction.timeout.ms": 60000})
    p.init_transactions(40)
    p.begin_transaction()
    expected = []
    for i in range(k):
        for q in (0, 1):
            v = b"tpc-%d-%d" % (q, i)
            p.produce(topic, v, partition=q)
            expected.append(v)
    assert p.flush(30) == 0
    assert offsets_at(c, x, topic, 0) == ((0, k), (0, 0))

    # Markers cannot reach x; the commit is decided (PrepareCommit) but stuck.
    c.cut(x, "drop")
    outcome = {}

    def commit():
        t0 = time.monotonic()
        try:
            p.commit_transaction(20)
            outcome["result"] = "committed"
        except KafkaException as e:
            outcome["result"] = e.args[0].name()
        outcome["took"] = round(time.monotonic() - t0, 2)
    committer = threading.Thread(target=commit, daemon=True)
    committer.start()
    d = wait_txn_state(c, coord, tid, ("PrepareCommit",), 20,
                       "coordinator %d to move %s to PrepareCommit" % (coord, tid))
    assert set(d["topics"]) <= {topic} and set(d["topics"].get(topic, [])) <= {0, 1}, d
    # It stays there while the marker cannot be delivered (a describe may
    # wait while the coordinator is trying: polled, not asked once).
    time.sleep(1.5)
    d = wait_txn_state(c, coord, tid, ("PrepareCommit", "CompleteCommit"), 15,
                       "coordinator %d to describe %s again" % (coord, tid))
    assert d["state"] == "PrepareCommit", \
        "the transaction completed although its marker could not reach broker %d: %r" % (x, d)
    assert offsets_at(c, x, topic, 0) == ((0, k), (0, 0)), \
        "%s[0] on broker %d is readable although the link to it is cut" % (topic, x)

    # The coordinator dies; the next one must finish the commit once x is reachable.
    c.broker(coord).kill9()
    t_kill = time.monotonic()
    survivors = [x, y]
    new = wait_txn_coordinator(c, tid, on=survivors, exclude=[coord],
                               timeout=c.session_timeout + 30)
    loaded = wait_txn_state(c, new, tid, ("PrepareCommit", "CompleteCommit"), 30,
                            "the new coordinator %d to load %s" % (new, tid))
    took_over = time.monotonic() - t_kill
    time.sleep(1.0)
    c.heal(x)
    t_heal = time.monotonic()

    got = read_records(c.bootstrap(survivors), topic, [0, 1], "read_committed", len(expected),
                       timeout=40)
    visible = time.monotonic() - t_heal
    assert sorted(v for _q, _o, v in got) == sorted(expected), \
        "read_committed after the failover: %d of %d records (%r)\n%s" % (
            len(got), len(expected), sorted({q for q, _o, _v in got}), c.logs(30))
    hws = wait_stable(c, topic, {0: x, 1: y})
    wait_txn_state(c, new, tid, ("CompleteCommit",), 30,
                   "the new coordinator %d to complete the commit" % new)
    committer.join(40)
    assert not committer.is_alive(), "commit_transaction did not return"

    # The id works on: a new producer fences the old one and commits.
    p2 = txn_producer(c.bootstrap(survivors), tid, **{"transaction.timeout.ms": 60000})
    p2.init_transactions(40)
    p2.begin_transaction()
    for q in (0, 1):
        p2.produce(topic, b"after-%d" % q, partition=q)
    p2.commit_transaction(40)
    got = read_records(c.bootstrap(survivors), topic, [0, 1], "read_committed",
                       len(expected) + 2)
    assert sorted(v for _q, _o, v in got) == sorted(expected + [b"after-0", b"after-1"]), got
    print("coordinator %d killed with %s in PrepareCommit (marker to broker %d cut); broker %d "
          "took over %.2fs later (state %s); records visible %.2fs after the heal; HWs %r; "
          "the first producer's commit_transaction: %r"
          % (coord, tid, x, new, took_over, loaded["state"], visible, hws, outcome))


# --------------------------------------------------------------------------
# 4. Raw transactional requests to the coordinator and to the others
# --------------------------------------------------------------------------


def test_non_coordinator_refuses_transactional_apis(cluster):
    c = cluster(3, overrides=TXN_CLUSTER)
    topic = unique_topic("tnc")
    create(c, topic, 1, 3)
    txn_leaders = {p: s["leader"] for p, s in ensure_txn_topic(c).items()}
    tid = unique_txn_id("tnc")
    group = unique_group("tnc")
    coord = wait_txn_coordinator(c, tid)
    assert coord == txn_leaders[txn_partition(tid)], (coord, txn_leaders)
    for node in c.node_ids():
        assert find_txn_coordinator(c.broker(node), tid) == (0, coord), node
    others = [i for i in c.node_ids() if i != coord]

    for node in others:
        with kw.KafkaConn.to(c.broker(node).bootstrap) as conn:
            assert init_pid(conn, tid)[0] == NOT_COORDINATOR, node
            assert init_pid(conn, tid, version=4)[0] == NOT_COORDINATOR, node
            # Idempotent producers (no transactional id) get an id anywhere.
            err, pid, _epoch = init_producer_id_v1(conn)
            assert err == 0 and pid >= 0, (node, err, pid)

    # The coordinator itself (it may still be loading the partition: retried).
    cb = c.broker(coord)
    last = {}

    def initialised():
        with kw.KafkaConn.to(cb.bootstrap) as conn:
            last["r"] = init_pid(conn, tid, timeout_ms=60000)
        return last["r"][0] == 0 or (last["r"][0] in (
            COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
            CONCURRENT_TRANSACTIONS) and None)
    wait_until(initialised, 15, interval=0.1, what="coordinator %d to accept InitProducerId"
               % coord)
    err, pid, epoch = last["r"]
    assert (err, epoch) == (0, 0) and pid >= 0, last["r"]
    with kw.KafkaConn.to(cb.bootstrap) as conn:
        assert add_partitions(conn, tid, pid, epoch, topic, [0]) == {0: 0}
        d = describe_transactions(conn, [tid])[tid]
        assert (d["error"], d["state"], d["producer_id"], d["epoch"]) == (
            0, "Ongoing", pid, epoch), d
        assert d["topics"] == {topic: [0]}, d
        err, _unknown, listed = list_transactions(conn)
        assert err == 0 and listed.get(tid) == (pid, "Ongoing"), listed

    for node in others:
        with kw.KafkaConn.to(c.broker(node).bootstrap) as conn:
            assert add_partitions(conn, tid, pid, epoch, topic, [0]) == {0: NOT_COORDINATOR}, \
                node
            assert add_offsets(conn, tid, pid, epoch, group) == NOT_COORDINATOR, node
            assert end_txn(conn, tid, pid, epoch, commit=True) == NOT_COORDINATOR, node
            d = describe_transactions(conn, [tid])[tid]
            assert d["error"] == NOT_COORDINATOR, (node, d)
            err, _unknown, listed = list_transactions(conn)
            assert err == 0 and tid not in listed, (node, listed)

    # Nothing the others refused reached the transaction: it is still open
    # on the coordinator, with its one partition, and aborts there.
    with kw.KafkaConn.to(cb.bootstrap) as conn:
        d = describe_transactions(conn, [tid])[tid]
        assert (d["state"], d["epoch"], d["topics"]) == ("Ongoing", epoch, {topic: [0]}), d
        assert end_txn(conn, tid, pid, epoch, commit=False) == 0
    wait_txn_state(c, coord, tid, ("CompleteAbort",), 20,
                   "coordinator %d to complete the abort" % coord)
    hws = wait_stable(c, topic, leaders_of(c, topic))
    assert hws == {0: 1}, hws     # just the ABORT marker
    print("%s: coordinator %d (%s[%d]); brokers %r answer NOT_COORDINATOR"
          % (tid, coord, TXN_TOPIC, txn_partition(tid), others))
