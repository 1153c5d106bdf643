"""Replicated partitions in cluster mode (brokers + etcd): what Kafka clients
can rely on when a topic has a replication factor above one.

- Topics take RF up to the number of live brokers (more is refused with
  INVALID_REPLICATION_FACTOR); every broker's Metadata lists the leader, the
  replicas and the ISR (and the leader epoch, read over raw Metadata v7);
  explicit replica assignments are honoured.
- Failover: a leader's broker killed (kill -9), frozen (SIGSTOP past the
  session timeout) or shut down (SIGTERM, controlled shutdown) under three
  idempotent acks=all producers: a new leader from the ISR serves within the
  session timeout (+ slack), the epoch goes up, and every acknowledged
  message is read back exactly once, at its acknowledged offset, in
  per-producer order. The old leader comes back as a follower and rejoins
  the ISR.
- min.insync.replicas: acks=all is refused with NOT_ENOUGH_REPLICAS (19,
  before appending) when the ISR is too small; acks=1 still works.
- A follower that stops fetching for replica.lag.time.max.ms leaves the ISR
  (acks=all stalls at most about that long) and rejoins when it catches up.
- etcd down: leaders keep serving acks=1 produce and fetch; afterwards the
  cluster works again (new topics). The controller killed: another broker
  takes over and new topics (RF = live brokers) work.

Each test runs its own loopback cluster (cluster_harness.Cluster) on the
module's etcd (or its own, for the etcd outage), with
broker.session.timeout.ms=3000 unless said otherwise. Measured times are
printed (pytest -s shows them).
"""

import logging
import signal
import socket
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from ck_helpers import consumer
from cluster_helpers import (Load, admin, assert_exactly_once, create, full_isr, log_count,
                             metadata_v7, parts, read_partitions, wait_parts)
from cluster_helpers import cluster, etcd, private_etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240)]

NOT_ENOUGH_REPLICAS = 19
INVALID_REPLICATION_FACTOR = 38
SLACK = 2.0   # seconds on top of what the protocol needs, for a loaded 2-core box


# --------------------------------------------------------------------------
# Helpers (the shared ones, fixtures included, are in cluster_helpers.py)
# --------------------------------------------------------------------------


def create_error(c, topic, partitions, rf, ids=None):
    """The KafkaError of a refused CreateTopics."""
    a = admin(c, ids)
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(topic, partitions, rf)],
                        request_timeout=15)[topic].result(timeout=20)
    return ei.value.args[0]


# --------------------------------------------------------------------------
# 1. Placement and Metadata
# --------------------------------------------------------------------------


def test_rf3_metadata_everywhere_and_acks_all_round_trip(cluster):
    c = cluster(3)
    topic = unique_topic("rf3")
    a = admin(c, [1])
    a.create_topics([NewTopic(topic, 6, 3)], request_timeout=15)[topic].result(timeout=20)
    # Every broker, asked itself (raw Metadata v7), agrees: 3 brokers, six
    # partitions with three replicas, the full ISR and a leader among them.
    views = {}
    for i in (1, 2, 3):
        views[i] = wait_parts(c, topic, i, lambda ps: len(ps) == 6 and full_isr(3)(ps), 15,
                              "6 partitions with an ISR of 3 on broker %d" % i)
        assert sorted(metadata_v7(c.broker(i), [])["brokers"]) == [1, 2, 3]
    for i in (2, 3):
        assert {p: (s["leader"], s["replicas"], s["epoch"]) for p, s in views[i].items()} == \
            {p: (s["leader"], s["replicas"], s["epoch"]) for p, s in views[1].items()}, views
    for s in views[1].values():
        assert sorted(s["replicas"]) == [1, 2, 3] and s["leader"] in s["isr"], s
        assert s["error"] == 0 and s["offline"] == [] and s["epoch"] >= 0, s
    lead = {p: s["leader"] for p, s in views[1].items()}
    assert len(set(lead.values())) >= 2, "all leaders on one broker: %r" % lead

    # confluent-kafka's view, bootstrapped on each broker in turn.
    for i in (1, 2, 3):
        md = admin(c, [i]).list_topics(topic, timeout=10)
        assert sorted(md.brokers) == [1, 2, 3], "via broker %d: %r" % (i, md.brokers)
        t = md.topics[topic]
        assert t.error is None and len(t.partitions) == 6
        for p, pm in t.partitions.items():
            assert pm.leader == lead[p], (i, p, pm.leader, lead)
            assert sorted(pm.replicas) == [1, 2, 3] and sorted(pm.isrs) == [1, 2, 3], \
                (i, p, pm.replicas, pm.isrs)

    # More replicas than brokers: refused, and nothing is created.
    too_many = unique_topic("rf4")
    err = create_error(c, too_many, 3, 4)
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR == INVALID_REPLICATION_FACTOR, err
    assert err.name() == "INVALID_REPLICATION_FACTOR", err
    assert too_many not in a.list_topics(timeout=10).topics

    # An explicit assignment is kept as given (the first replica leads).
    assigned = unique_topic("assigned")
    layout = [[3, 1], [1, 2], [2, 3]]
    a.create_topics([NewTopic(assigned, len(layout), replica_assignment=layout)],
                    request_timeout=15)[assigned].result(timeout=20)
    ps = wait_parts(c, assigned, 2, lambda ps: len(ps) == 3 and all(
        sorted(ps[k]["isr"]) == sorted(layout[k]) for k in range(3)), 15,
        "the assigned topic with its full ISRs")
    assert [ps[k]["replicas"] for k in range(3)] == layout, ps
    assert [ps[k]["leader"] for k in range(3)] == [3, 1, 2], ps

    # 1000 acks=all messages through broker 1, read back through broker 3.
    p = Producer({"bootstrap.servers": c.bootstrap([1]), "acks": "all", "linger.ms": 5})
    errors, acked = [], {}

    def cb(e, m):
        if e is not None:
            errors.append(e)
        else:
            acked[m.value()] = (m.partition(), m.offset())
    for k in range(1000):
        p.produce(topic, b"v%d" % k, partition=k % 6, on_delivery=cb)
    assert p.flush(30) == 0 and not errors, errors
    assert len(acked) == 1000
    got = read_partitions(c.bootstrap([3]), topic, range(6))
    read = {v: (part, o) for part, recs in got.items() for o, v in recs}
    assert read == acked
    print("leaders %r" % lead)


# --------------------------------------------------------------------------
# 2-3. Leader failure under idempotent acks=all load
# --------------------------------------------------------------------------


def _failover_cluster(cluster):
    c = cluster(3, overrides={"replica.lag.time.max.ms": "3000"})
    topic = unique_topic("fo")
    create(c, topic, 3, 3)
    return c, topic


def test_kill9_leader_fails_over_without_loss(cluster):
    c, topic = _failover_cluster(cluster)
    # Partition 0 gets half of the messages: the busiest.
    load = Load(c.bootstrap(), topic, [0, 0, 1, 2]).start()
    wait_until(lambda: all(load.count(p) > 100 for p in range(3)), 15, what="steady load")
    time.sleep(1)
    busiest = max(range(3), key=load.count)
    before = parts(c, topic, 1)
    victim = before[busiest]["leader"]
    led = [p for p, s in before.items() if s["leader"] == victim]
    survivor = min(i for i in (1, 2, 3) if i != victim)
    acked_before = load.count()

    t_kill = time.monotonic()
    c.broker(victim).kill9()
    bound = c.session_timeout + 2 + SLACK
    delay = wait_until(lambda: load.first_ack_after(busiest, t_kill), bound + 10,
                       interval=0.05, what="an ack on partition %d after the kill" % busiest)
    assert delay <= bound, "first ack on partition %d %.2fs after kill -9 of its leader " \
        "(bound %.1fs)\n%s" % (busiest, delay, bound, c.logs(30))
    for p in led:
        wait_until(lambda: load.first_ack_after(p, t_kill), 10, what="acks on partition %d" % p)

    # New leaders from the ISR, and the dead broker out of every ISR.
    after = wait_parts(c, topic, survivor, lambda ps: all(
        s["leader"] not in (victim, -1) and victim not in s["isr"] for s in ps.values()), 10,
        "new leaders for %r and broker %d out of every ISR" % (led, victim))
    for p in led:
        assert after[p]["leader"] in before[p]["isr"], (p, before[p], after[p])
        assert after[p]["epoch"] > before[p]["epoch"], (p, before[p], after[p])

    # The killed broker comes back as a follower and rejoins every ISR, under load.
    t_restart = time.monotonic()
    c.broker(victim).start()
    wait_parts(c, topic, survivor, full_isr(3), 20, "every ISR back to 3 members")
    rejoined = time.monotonic() - t_restart
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    assert load.count() > acked_before + 500, (acked_before, load.count())
    summary = assert_exactly_once(load, read_partitions(c.bootstrap(), topic, range(3)))
    print("kill -9 of broker %d (leader of %r): first ack on partition %d after %.2fs; "
          "ISR full again %.2fs after restart; %r"
          % (victim, led, busiest, delay, rejoined, summary))


def test_sigstop_leader_past_session_timeout_then_resume(cluster):
    c, topic = _failover_cluster(cluster)
    load = Load(c.bootstrap(), topic, [0, 1, 2]).start()
    wait_until(lambda: all(load.count(p) > 100 for p in range(3)), 15, what="steady load")
    before = parts(c, topic, 1)
    victim = before[0]["leader"]
    survivor = min(i for i in (1, 2, 3) if i != victim)

    t_stop = time.monotonic()
    c.pause(victim)
    moved = wait_parts(c, topic, survivor,
                       lambda ps: ps[0]["leader"] not in (victim, -1)
                       and ps[0]["epoch"] > before[0]["epoch"],
                       c.session_timeout + 2 + SLACK,
                       "a new leader of partition 0 while broker %d is stopped" % victim)
    elected = time.monotonic() - t_stop
    time.sleep(max(0.0, t_stop + c.session_timeout + 2 - time.monotonic()))
    c.resume(victim)
    t_cont = time.monotonic()

    # Right after SIGCONT the others name the new leader, with a higher epoch.
    now = parts(c, topic, survivor)
    assert now[0]["leader"] == moved[0]["leader"] != victim, (before[0], now[0])
    assert now[0]["epoch"] > before[0]["epoch"], (before[0], now[0])
    # The resumed broker learns it (bounded) and does not claim the partition.
    try:
        first_view = parts(c, topic, victim)[0]
    except Exception as e:  # noqa: BLE001 - only reported
        first_view = e
    mine = wait_parts(c, topic, victim,
                      lambda ps: ps[0]["leader"] == moved[0]["leader"]
                      and ps[0]["epoch"] == now[0]["epoch"], 5,
                      "the resumed broker %d to name the new leader" % victim)
    assert mine[0]["leader"] != victim
    # It rejoins the ISR as a follower.
    wait_parts(c, topic, survivor, lambda ps: victim in ps[0]["isr"], 15,
               "broker %d back in the ISR of partition 0" % victim)
    rejoined = time.monotonic() - t_cont
    resumed_ack = wait_until(lambda: load.first_ack_after(0, t_cont), 30, interval=0.05,
                             what="acks on partition 0 after SIGCONT")
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    during = load.first_ack_after(0, t_stop)
    summary = assert_exactly_once(load, read_partitions(c.bootstrap(), topic, range(3)))
    print("SIGSTOP of broker %d: new leader %d (epoch %d -> %d) after %.2fs; first ack on "
          "partition 0 for a message produced after SIGSTOP: %s s after it; after SIGCONT: "
          "%.2fs; back in the ISR %.2fs after SIGCONT; the resumed broker's first answer %r; %r"
          % (victim, moved[0]["leader"], before[0]["epoch"], now[0]["epoch"], elected,
             "%.2f" % during if during is not None else None, resumed_ack, rejoined,
             first_view, summary))


# --------------------------------------------------------------------------
# 4. min.insync.replicas
# --------------------------------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def raw_produce(b, topic, value, acks):
    now = int(time.time() * 1000)
    batch = kw.encode_record_batch([(None, value, (), now)], now)
    with kw.KafkaConn.to(b.bootstrap, timeout=15) as conn:
        return kw.produce_v3(conn, topic, 0, batch, acks=acks)


def test_min_insync_replicas_refuses_acks_all_not_acks_1(cluster):
    c = cluster(3, overrides={"replica.lag.time.max.ms": "2000"})
    topic = unique_topic("minisr")
    ps = create(c, topic, 1, 3, config={"min.insync.replicas": "2"})
    leader = ps[0]["leader"]
    lb = c.broker(leader)
    # While the ISR is full, acks=all works.
    for k in range(3):
        r = raw_produce(lb, topic, b"ok-%d" % k, acks=-1)
        assert r["error_code"] == 0 and r["base_offset"] == k, r

    followers = [i for i in ps[0]["replicas"] if i != leader]
    for f in followers:
        c.broker(f).kill9()
    wait_parts(c, topic, leader, lambda ps: ps[0]["isr"] == [leader], c.session_timeout + 8,
               "the ISR of partition 0 down to the leader %d alone" % leader)

    # acks=all: NOT_ENOUGH_REPLICAS (19) before appending, every time.
    for k in range(2):
        r = raw_produce(lb, topic, b"refused-%d" % k, acks=-1)
        assert r["error_code"] == NOT_ENOUGH_REPLICAS, r
    # acks=1 appends (right after the three acks=all messages: nothing refused
    # was appended).
    r = raw_produce(lb, topic, b"acks1", acks=1)
    assert r["error_code"] == 0 and r["base_offset"] == 3, r

    # confluent-kafka: the acks=all delivery fails with NOT_ENOUGH_REPLICAS
    # (librdkafka retries it until message.timeout.ms, then reports either it
    # or a timeout); the acks=1 one succeeds.
    logs = _ListHandler()
    log = logging.getLogger(unique_topic("rdkafka"))
    log.addHandler(logs)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    p = Producer({"bootstrap.servers": lb.bootstrap, "acks": "all", "message.timeout.ms": 5000,
                  "retry.backoff.ms": 200, "logger": log, "debug": "msg,protocol"})
    res = []
    p.produce(topic, b"ck-all", partition=0, on_delivery=lambda e, m: res.append(e))
    p.flush(15)
    assert len(res) == 1 and res[0] is not None, res
    assert res[0].code() in (KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._MSG_TIMED_OUT), res
    answers = [line for line in logs.lines
               if "NOT_ENOUGH_REPLICAS" in line or "Not enough in-sync replicas" in line]
    if res[0].code() == KafkaError._MSG_TIMED_OUT:
        assert answers, "timed out without NOT_ENOUGH_REPLICAS in librdkafka's log: %r" % (
            logs.lines[-10:],)
    p1 = Producer({"bootstrap.servers": lb.bootstrap, "acks": "1", "message.timeout.ms": 10000})
    res1 = []
    p1.produce(topic, b"ck-1", partition=0, on_delivery=lambda e, m: res1.append((e, m.offset())))
    assert p1.flush(15) == 0
    assert res1 == [(None, 4)], res1

    # One follower back: the ISR grows to 2 and acks=all works again.
    back = followers[0]
    c.broker(back).start()
    wait_parts(c, topic, leader, lambda ps: sorted(ps[0]["isr"]) == sorted([leader, back]), 15,
               "broker %d back in the ISR" % back)
    r = raw_produce(lb, topic, b"ok-again", acks=-1)
    assert r["error_code"] == 0 and r["base_offset"] == 5, r
    print("acks=all via confluent-kafka: %s after %d NOT_ENOUGH_REPLICAS answers"
          % (res[0].name(), len(answers)))


# --------------------------------------------------------------------------
# 5. etcd outage
# --------------------------------------------------------------------------


def test_etcd_outage_leaders_keep_serving_acks_1(cluster, private_etcd):
    c = cluster(3, etcd=private_etcd, overrides={"replica.lag.time.max.ms": "3000"})
    topic = unique_topic("outage")
    create(c, topic, 3, 3)
    load = Load(c.bootstrap(), topic, [0, 1, 2], producers=1, rate=300, acks="1",
                idempotent=False).start()

    consumed = []   # (t, partition, offset, value)
    stop = threading.Event()
    cons_err = []

    def consume():
        cons = consumer(c.bootstrap(), **{"group.id": unique_topic("g"),
                                          "fetch.wait.max.ms": 100})
        try:
            cons.assign([TopicPartition(topic, p, 0) for p in range(3)])
            while not stop.is_set():
                for m in cons.consume(500, 0.2):
                    if m.error() is None:
                        consumed.append((time.monotonic(), m.partition(), m.offset(),
                                         m.value()))
        except Exception as e:  # noqa: BLE001
            cons_err.append(repr(e))
        finally:
            cons.close()
    ct = threading.Thread(target=consume, daemon=True)
    ct.start()
    wait_until(lambda: load.count() > 300 and len(consumed) > 300, 15, what="steady traffic")

    lost = {i: log_count(b, "metadata store session lost") for i, b in c.brokers.items()}
    t_down = time.monotonic()
    private_etcd.stop()
    assert not private_etcd.is_running()
    time.sleep(10)
    t_up = time.monotonic()
    # Every broker noticed the outage (so the traffic below really ran without etcd).
    assert all(log_count(b, "metadata store session lost") > lost[i]
               for i, b in c.brokers.items()), c.logs(10)
    acks = load.acks_between(t_down, t_up)
    reads = [t for t, *_ in consumed if t_down <= t <= t_up]
    gaps = [b - a for a, b in zip([t_down] + acks, acks + [t_up])]
    private_etcd.start()
    # Acknowledged and consumed all through the outage (no gap over 2 s).
    assert len(acks) > 1000 and max(gaps) < 2.0, \
        "during the 10 s outage: %d acks, longest gap %.2fs\n%s" % (
            len(acks), max(gaps), c.logs(20))
    assert len(reads) > 1000, "only %d messages consumed during the outage" % len(reads)

    # Back: members and a controller again, and a new topic works.
    c.wait_for_members([1, 2, 3], timeout=15)
    fresh = unique_topic("after")
    create(c, fresh, 2, 3)
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all"})
    errs = []
    for k in range(200):
        p.produce(fresh, b"n%d" % k, partition=k % 2, on_delivery=lambda e, m: e and errs.append(e))
    assert p.flush(20) == 0 and not errs, errs
    got = read_partitions(c.bootstrap(), fresh, range(2))
    assert sorted(v for recs in got.values() for _o, v in recs) == sorted(
        b"n%d" % k for k in range(200))

    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed

    # The live consumer (running all along) gets every acknowledged message.
    def missed():
        seen = {(p, o) for _t, p, o, _v in list(consumed)}
        return [(p, o) for p, v in load.acked.items() for o, *_ in v if (p, o) not in seen]
    try:
        wait_until(lambda: not missed(), 15, what="the live consumer to read every ack")
    finally:
        stop.set()
        ct.join(10)
    assert not cons_err, cons_err
    summary = assert_exactly_once(load, read_partitions(c.bootstrap(), topic, range(3)))
    print("etcd outage 10s: %d acks (longest gap %.3fs), %d consumed; %r"
          % (len(acks), max(gaps), len(reads), summary))


# --------------------------------------------------------------------------
# 6. Controller failure
# --------------------------------------------------------------------------


def test_controller_killed_new_one_creates_topics(cluster):
    c = cluster(3)
    old = unique_topic("before")
    create(c, old, 3, 3)
    ctl = c.metadata(1)["controller_id"]
    assert ctl in (1, 2, 3)
    survivors = [i for i in (1, 2, 3) if i != ctl]

    t0 = time.monotonic()
    c.broker(ctl).kill9()
    new_ctl = c.wait_for_members(survivors, on=survivors, timeout=c.session_timeout + 5,
                                 exclude_controller=ctl)
    took = time.monotonic() - t0
    assert new_ctl in survivors
    # The old topic: every partition led by a survivor, the dead one out of the ISRs.
    wait_parts(c, old, survivors[0], lambda ps: all(
        s["leader"] in survivors and ctl not in s["isr"] for s in ps.values()), 10,
        "the old topic led by survivors only")

    # Only two brokers live: RF 3 is refused, RF 2 works.
    err = create_error(c, unique_topic("rf3"), 2, 3, ids=survivors)
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
    topic = unique_topic("after")
    ps = create(c, topic, 4, 2, ids=survivors)
    for s in ps.values():
        assert sorted(s["replicas"]) == survivors, ps
    p = Producer({"bootstrap.servers": c.bootstrap([survivors[0]]), "acks": "all"})
    errs = []
    for k in range(500):
        for t in (topic, old):
            p.produce(t, b"m%d" % k, partition=k % 3, on_delivery=lambda e, m: e and errs.append(e))
    assert p.flush(30) == 0 and not errs, errs
    for t, n in ((topic, 3), (old, 3)):
        got = read_partitions(c.bootstrap([survivors[1]]), t, range(n))
        assert sorted(v for recs in got.values() for _o, v in recs) == sorted(
            b"m%d" % k for k in range(500)), t
    print("controller %d killed; broker %d took over after %.2fs" % (ctl, new_ctl, took))


# --------------------------------------------------------------------------
# 7. Controlled shutdown
# --------------------------------------------------------------------------


def test_sigterm_leader_moves_leadership_without_errors(cluster):
    c = cluster(3, overrides={"replica.lag.time.max.ms": "3000"})
    topic = unique_topic("term")
    create(c, topic, 3, 3)
    load = Load(c.bootstrap(), topic, [0, 1, 2]).start()
    wait_until(lambda: all(load.count(p) > 100 for p in range(3)), 15, what="steady load")
    before = parts(c, topic, 1)
    victim = before[0]["leader"]
    led = [p for p, s in before.items() if s["leader"] == victim]
    survivor = min(i for i in (1, 2, 3) if i != victim)

    t0 = time.monotonic()
    assert c.broker(victim).stop() == 0
    stopped = time.monotonic() - t0
    after = wait_parts(c, topic, survivor, lambda ps: all(
        s["leader"] not in (victim, -1) for s in ps.values()), 5,
        "every partition led by another broker")
    for p in led:
        assert after[p]["leader"] in before[p]["isr"], (p, before[p], after[p])
        assert after[p]["epoch"] > before[p]["epoch"], (p, before[p], after[p])
    firsts = {p: wait_until(lambda: load.first_ack_after(p, t0), 15, interval=0.05,
                            what="acks on partition %d after SIGTERM" % p) for p in led}
    time.sleep(2)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    summary = assert_exactly_once(load, read_partitions(c.bootstrap(), topic, range(3)))
    assert max(firsts.values()) <= c.session_timeout + 2 + SLACK, \
        "controlled shutdown: first acks %r s after SIGTERM (slower than a crash)" % firsts
    print("SIGTERM of broker %d (exit after %.2fs): first acks %r; %r"
          % (victim, stopped, {p: round(v, 2) for p, v in firsts.items()}, summary))


def test_sigterm_moves_leadership_before_refusing_clients(cluster):
    """Controlled shutdown as Kafka does it: the leaderships move while the
    broker still serves, so a client that finds the old leader gone (its
    connection refused) and asks another broker for Metadata already learns
    the new leader, instead of being sent back to a broker that refuses it.
    A consumer's long-poll Fetch (2 s) is in flight on the leader when
    SIGTERM arrives, as it usually is on an idle partition."""
    c = cluster(3)
    topic = unique_topic("order")
    create(c, topic, 1, 3)
    before = parts(c, topic, 1)
    victim = before[0]["leader"]
    survivor = min(i for i in (1, 2, 3) if i != victim)
    b = c.broker(victim)

    poll = kw.KafkaConn.to(b.bootstrap)
    poll.send_raw(kw.build_request(kw.API_FETCH, 4, poll.next_correlation_id(),
                                   kw.fetch_v4_body(topic, 0, 0, max_wait_ms=2000)))
    time.sleep(0.2)   # the Fetch is waiting on the leader
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    refused = named = None
    deadline = t0 + 10
    while refused is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", b.port), timeout=0.5):
                pass
        except OSError:
            refused = time.monotonic() - t0
            named = parts(c, topic, survivor)[0]
            break
        time.sleep(0.01)
    assert refused is not None, "broker %d still accepted connections 10 s after SIGTERM" % victim
    moved = wait_parts(c, topic, survivor, lambda ps: ps[0]["leader"] not in (victim, -1), 5,
                       "a new leader after SIGTERM")
    t_moved = time.monotonic() - t0
    assert b.proc.wait(20) == 0
    poll.close()
    assert named["leader"] != victim, \
        "broker %d refused connections %.3fs after SIGTERM while broker %d's Metadata still " \
        "named it the leader of partition 0 (%r); the new leader %d (epoch %d) was named " \
        "only ~%.3fs after SIGTERM.\n%s" % (
            victim, refused, survivor, named, moved[0]["leader"], moved[0]["epoch"], t_moved,
            b.log_tail(12))
    print("SIGTERM of broker %d: refused connections after %.3fs, leadership moved by then"
          % (victim, refused))


# --------------------------------------------------------------------------
# 8. A follower that stops fetching
# --------------------------------------------------------------------------


def test_stalled_follower_leaves_isr_then_rejoins(cluster):
    lag = 2.0
    c = cluster(3, overrides={"broker.session.timeout.ms": "20000",
                              "replica.lag.time.max.ms": str(int(lag * 1000))})
    topic = unique_topic("lag")
    ps = create(c, topic, 1, 3)
    leader = ps[0]["leader"]
    ctl = c.metadata(leader)["controller_id"]
    followers = [i for i in ps[0]["replicas"] if i != leader]
    # Prefer a follower that is not the controller (nothing else changes then).
    follower = sorted(followers, key=lambda i: i == ctl)[0]

    load = Load(c.bootstrap(), topic, [0], producers=1, rate=200).start()
    wait_until(lambda: load.count(0) > 200, 15, what="steady load")
    assert load.max_latency_after(time.monotonic() - 1) < 1.0

    t_stop = time.monotonic()
    c.pause(follower)
    shrunk = wait_parts(c, topic, leader, lambda ps: sorted(ps[0]["isr"]) == sorted(
        i for i in ps[0]["replicas"] if i != follower), lag + 5,
        "broker %d out of the ISR" % follower)
    t_shrunk = time.monotonic()
    assert shrunk[0]["leader"] == leader
    # Acknowledged again after the shrink, at normal latency.
    wait_until(lambda: load.first_ack_after(0, t_shrunk + 0.5), 5, interval=0.05,
               what="acks after the ISR shrank")
    time.sleep(1)
    stall = load.max_latency_after(t_stop)
    assert stall <= lag + SLACK + 1, "acks=all stalled %.2fs (replica.lag.time.max.ms %.1fs)" % (
        stall, lag)
    assert stall >= 0.5, "acks=all did not wait for the stopped follower at all (%.2fs): " \
        "acknowledged before every ISR member had the batch?" % stall
    settled = load.max_latency_after(t_shrunk + 0.5)
    assert settled < 1.0, "latency after the shrink %.2fs" % settled

    c.resume(follower)
    t_cont = time.monotonic()
    wait_parts(c, topic, leader, lambda ps: follower in ps[0]["isr"], 15,
               "broker %d back in the ISR" % follower)
    rejoined = time.monotonic() - t_cont
    time.sleep(1)
    load.stop()
    assert not load.errors, load.errors[:5]
    summary = assert_exactly_once(load, read_partitions(c.bootstrap(), topic, [0]))
    print("follower %d stopped: ISR shrank after %.2fs, longest acks=all wait %.2fs; "
          "rejoined %.2fs after SIGCONT; %r"
          % (follower, t_shrunk - t_stop, stall, rejoined, summary))
