"""Shared topics in cluster mode: a topic created through any broker lives in
etcd with its partitions' state (leaders spread over the live brokers, racks
interleaved), every broker serves the same Metadata, each partition is served
by its leader only (NOT_LEADER_OR_FOLLOWER elsewhere), a partition whose leader
is gone has no leader (LEADER_NOT_AVAILABLE) while the others keep working,
and a deletion through any broker removes the topic everywhere. A topic may
have a replication factor up to the number of live brokers (more is refused
with INVALID_REPLICATION_FACTOR); replication itself (ISR, failover,
acks=all) is tested in test_cluster_replication.py.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw
from cluster_harness import etcd_bin, wait_until
from ck_helpers import consumer
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(180)]


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def create(b, topic, partitions, rf=1):
    a = admin(b)  # kept alive until the answer arrives
    a.create_topics([NewTopic(topic, partitions, rf)])[topic].result(timeout=15)


def delete(b, topic):
    a = admin(b)
    a.delete_topics([topic])[topic].result(timeout=15)


def leaders(b, topic):
    t = admin(b).list_topics(topic=topic, timeout=5).topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p: t.partitions[p].leader for p in t.partitions}


def test_topic_shared_produced_and_consumed_across_brokers(cluster):
    c = cluster(3)
    topic = unique_topic("shared")
    create(c.broker(2), topic, 6, 1)
    # Every broker answers the same placement, spread over all three.
    wait_until(lambda: all(leaders(c.broker(i), topic) and len(leaders(c.broker(i), topic)) == 6
                           for i in (1, 2, 3)), 10, what="the topic on every broker")
    placements = [leaders(c.broker(i), topic) for i in (1, 2, 3)]
    assert placements[0] == placements[1] == placements[2], placements
    assert set(placements[0].values()) == {1, 2, 3}, placements[0]

    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all"})
    errors = []
    for i in range(600):
        p.produce(topic, b"v%d" % i, partition=i % 6,
                  on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors, errors
    cons = consumer(c.bootstrap(), **{"group.id": unique_topic("g")})
    cons.assign([TopicPartition(topic, i, 0) for i in range(6)])
    got = set()
    deadline = time.time() + 30
    while len(got) < 600 and time.time() < deadline:
        for m in cons.consume(500, 1):
            if m.error() is None:
                got.add(m.value())
    cons.close()
    assert got == {b"v%d" % i for i in range(600)}


def test_only_the_leader_serves_a_partition(cluster):
    c = cluster(2)
    topic = unique_topic("lead")
    create(c.broker(1), topic, 2, 1)
    wait_until(lambda: leaders(c.broker(1), topic) and leaders(c.broker(2), topic),
               10, what="the topic on both brokers")
    lead = leaders(c.broker(1), topic)
    now = int(time.time() * 1000)
    batch = kw.encode_record_batch([(None, b"x", (), now)], now)
    for part, leader in lead.items():
        other = 1 if leader == 2 else 2
        with kw.KafkaConn.to(c.broker(other).bootstrap) as conn:
            code = kw.produce_v3(conn, topic, part, batch)["error_code"]
            assert code == 6, (part, leader, code)  # NOT_LEADER_OR_FOLLOWER
        # Wait for the leader's local storage to exist, then it serves.
        def served():
            with kw.KafkaConn.to(c.broker(leader).bootstrap) as conn:
                return kw.produce_v3(conn, topic, part, batch)["error_code"] == 0
        wait_until(served, 10, what="partition %d served by its leader %d" % (part, leader))


def test_partitions_of_a_dead_broker_have_no_leader(cluster):
    c = cluster(3)
    topic = unique_topic("dead")
    create(c.broker(1), topic, 6, 1)
    wait_until(lambda: leaders(c.broker(1), topic), 10, what="the topic")
    lead = leaders(c.broker(1), topic)
    victim = lead[0]
    alive = [i for i in (1, 2, 3) if i != victim][0]
    c.broker(victim).kill9()

    def offline():
        now = leaders(c.broker(alive), topic)
        return now and all((now[p] == -1) == (lead[p] == victim) for p in now)
    wait_until(offline, c.session_timeout + 5, what="the dead broker's partitions without leader")
    # The other partitions keep working.
    p = Producer({"bootstrap.servers": c.broker(alive).bootstrap, "message.timeout.ms": 10000})
    errors = []
    for part in (q for q in lead if lead[q] != victim):
        p.produce(topic, b"still", partition=part, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(15) == 0 and not errors, errors


def test_delete_through_any_broker_removes_it_everywhere(cluster):
    c = cluster(3)
    topic = unique_topic("del")
    create(c.broker(1), topic, 3, 1)
    wait_until(lambda: all(leaders(c.broker(i), topic) for i in (1, 2, 3)), 10, what="the topic")
    delete(c.broker(3), topic)
    wait_until(lambda: all(topic not in admin(c.broker(i)).list_topics(timeout=5).topics
                           for i in (1, 2, 3)), 10, what="the topic gone everywhere")
    # Created again (a new topic id), it works.
    create(c.broker(2), topic, 1, 1)
    wait_until(lambda: leaders(c.broker(1), topic), 10, what="the topic again")


def test_duplicate_and_over_replicated_creations_refused(cluster):
    c = cluster(2)
    topic = unique_topic("dup")
    create(c.broker(1), topic, 1, 1)
    wait_until(lambda: leaders(c.broker(2), topic), 10, what="the topic on broker 2")
    with pytest.raises(KafkaException) as e:
        create(c.broker(2), topic, 1, 1)
    assert e.value.args[0].code() == 36  # TOPIC_ALREADY_EXISTS
    # A replication factor up to the live brokers is accepted: both replicas,
    # both in the ISR, on every broker.
    replicated = unique_topic("rf2")
    create(c.broker(1), replicated, 2, 2)

    def placed(b):
        t = admin(b).list_topics(topic=replicated, timeout=5).topics.get(replicated)
        return t is not None and t.error is None and len(t.partitions) == 2 and all(
            sorted(p.replicas) == [1, 2] and sorted(p.isrs) == [1, 2] and p.leader in (1, 2)
            for p in t.partitions.values())
    wait_until(lambda: placed(c.broker(1)) and placed(c.broker(2)), 10,
               what="two replicas in the ISR of each partition")
    # More than the live brokers: refused, and not created.
    other = unique_topic("rf")
    with pytest.raises(KafkaException) as e:
        create(c.broker(1), other, 1, 3)
    assert e.value.args[0].code() == 38  # INVALID_REPLICATION_FACTOR
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    assert other not in admin(c.broker(2)).list_topics(timeout=5).topics


def find_coordinator(b, group):
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(10, 1, kw.string(group) + kw.i8(0))  # FindCoordinator v1
        r.i32()  # throttle
        code = r.i16()
        r.string()  # error message (nullable)
        return code, r.i32()


def test_group_meets_at_one_coordinator(cluster):
    """Every broker names the same coordinator for a group, so consumers
    bootstrapped through different brokers form one group."""
    c = cluster(3)
    group = unique_topic("grp")
    answers = {find_coordinator(c.broker(i), group) for i in (1, 2, 3)}
    assert len(answers) == 1 and next(iter(answers))[0] == 0, answers
    topic = unique_topic("grpt")
    create(c.broker(1), topic, 6, 1)
    wait_until(lambda: leaders(c.broker(1), topic), 10, what="the topic")
    p = Producer({"bootstrap.servers": c.bootstrap()})
    for i in range(300):
        p.produce(topic, b"m%d" % i, partition=i % 6)
    assert p.flush(30) == 0
    members = [consumer(c.broker(i).bootstrap, **{"group.id": group,
                                                  "auto.offset.reset": "earliest"})
               for i in (1, 3)]
    for m in members:
        m.subscribe([topic])
    got = {0: [], 1: []}
    deadline = time.time() + 45
    while sum(len(v) for v in got.values()) < 300 and time.time() < deadline:
        for k, m in enumerate(members):
            for msg in m.consume(100, 0.2):
                if msg.error() is None:
                    got[k].append(msg.value())
    assignments = [set(tp.partition for tp in m.assignment()) for m in members]
    for m in members:
        m.close()
    everything = got[0] + got[1]
    assert sorted(set(everything)) == sorted(b"m%d" % i for i in range(300))
    assert assignments[0] and assignments[1] and not (assignments[0] & assignments[1]), assignments


def test_idempotent_producers_on_different_brokers_get_distinct_ids(cluster):
    """Producer ids come from each broker's own counter, tagged with its node
    id: two brokers never hand out the same id (a partition leader would
    take one producer's batches for the other's duplicates)."""
    c = cluster(2)
    ids = set()
    for i in (1, 2):
        for _ in range(5):
            with kw.KafkaConn.to(c.broker(i).bootstrap) as conn:
                r = conn.request(22, 0, kw.nullable_string(None) + kw.i32(60000))  # InitProducerId v0
                r.i32()  # throttle
                assert r.i16() == 0
                ids.add(r.i64())
    assert len(ids) == 10, ids
    # And idempotent producers through both brokers write one partition cleanly.
    topic = unique_topic("idem")
    create(c.broker(1), topic, 1, 1)
    wait_until(lambda: leaders(c.broker(2), topic), 10, what="the topic")
    for i in (1, 2):
        p = Producer({"bootstrap.servers": c.broker(i).bootstrap, "enable.idempotence": True})
        for k in range(50):
            p.produce(topic, b"b%d-%d" % (i, k))
        assert p.flush(20) == 0
    cons = consumer(c.bootstrap(), **{"group.id": unique_topic("g")})
    cons.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 20
    while len(got) < 100 and time.time() < deadline:
        for m in cons.consume(100, 0.5):
            if m.error() is None:
                got.append(m.value())
    cons.close()
    assert sorted(got) == sorted(b"b%d-%d" % (i, k) for i in (1, 2) for k in range(50))


def test_transactions_on_a_one_broker_cluster(cluster):
    # The internal topics take the live broker count as replication factor
    # (and cap their min.insync.replicas by it): one broker is enough.
    c = cluster(1)
    topic = unique_topic("tx1")
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)
    p = Producer({"bootstrap.servers": c.bootstrap(), "transactional.id": unique_topic("tx")})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"committed")
    p.commit_transaction(30)
    cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": unique_topic("g"),
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    try:
        # From offset 0: no group coordinator needed to read.
        cons.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 40
        got = None
        while got is None and time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got = m.value()
        assert got == b"committed"
    finally:
        cons.close()
