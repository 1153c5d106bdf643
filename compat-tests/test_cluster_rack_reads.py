"""KIP-392 fetch from follower on a 3-broker cluster: with
`replica.selector.class=...RackAwareReplicaSelector`, a leader sends a
consumer that names its rack (`client.rack`) to the in-sync follower in that
rack, and the follower serves it up to its high watermark.

Raw Fetch v11 shows the protocol (the leader's preferred_read_replica answer,
the follower's records, older versions refused by a follower); librdkafka's
consumer shows a real client reading everything, in order, from the follower
of its rack (its per-broker statistics count the Fetch requests)."""

import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import kafka_wire as kw
from cluster_harness import wait_until
from cluster_helpers import create, full_isr, produce_all, wait_parts
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic

RACK_AWARE = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
NOT_LEADER_OR_FOLLOWER = 6
RACKS = {1: "rack-a", 2: "rack-b", 3: "rack-c"}


def rack_cluster(cluster, selector=RACK_AWARE):
    overrides = {"replica.selector.class": selector} if selector else {}
    return cluster(3, overrides=overrides,
                   per_broker={i: {"broker.rack": r} for i, r in RACKS.items()})


def fetch(b, topic, offset=0, rack="", version=11, epoch=-1):
    """One consumer Fetch (v10 or v11) of partition 0; its partition answer
    with the record bytes."""
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(kw.API_FETCH, version, kw.fetch_v11_body(
            topic, 0, offset, max_wait_ms=100, max_bytes=1 << 20, leader_epoch=epoch,
            rack=rack, version=version))
    top, topics = kw.parse_fetch_v11(r, version)
    assert top == 0 and r.remaining() == 0, (top, r.remaining())
    return topics[0][1][0]


def last_offset(records):
    """The offset after the last whole batch in `records` (-1 if none)."""
    batches = kw.record_batches(records)
    return batches[-1][0] + batches[-1][3] + 1 if batches else -1


def consume_all(c, topic, n, rack=None):
    """Reads the partition from the start with librdkafka; (values, Fetch
    requests per node id, record bytes received per node id)."""
    conf = {"bootstrap.servers": c.bootstrap(), "group.id": unique_topic("g"),
            "enable.auto.commit": False, "statistics.interval.ms": 200,
            "fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 1000}
    stats = []
    conf["stats_cb"] = stats.append
    if rack:
        conf["client.rack"] = rack
    cons = Consumer(conf)
    got = []
    try:
        cons.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            got += [m.value() for m in cons.consume(500, 0.5) if m.error() is None]
        # One more statistics report after the last records.
        seen = len(stats)
        while len(stats) <= seen + 1 and time.monotonic() < deadline:
            cons.poll(0.1)
    finally:
        cons.close()
    last = json.loads(stats[-1])
    fetches, rx = {}, {}
    for b in last["brokers"].values():
        if b.get("nodeid", -1) >= 0:
            fetches[b["nodeid"]] = b.get("req", {}).get("Fetch", 0)
            rx[b["nodeid"]] = b.get("rxbytes", 0)
    return got, fetches, rx


def test_leader_sends_a_consumer_to_the_follower_of_its_rack(cluster):
    c = rack_cluster(cluster)
    topic = unique_topic("rackread")
    ps = create(c, topic, 1, 3)
    values = produce_all(c.bootstrap(), topic, 300, [0])[0]
    leader = ps[0]["leader"]
    wait_parts(c, topic, leader, full_isr(3), 10, "the ISR of 3")
    follower = min(i for i in ps[0]["replicas"] if i != leader)
    lb, fb = c.broker(leader), c.broker(follower)

    # The leader names the follower of the consumer's rack and sends nothing.
    def sent_on():
        p = fetch(lb, topic, rack=RACKS[follower])
        return p if p["preferred"] == follower else None
    p = wait_until(sent_on, 10, interval=0.2,
                   what="the leader naming follower %d for its rack" % follower)
    assert p["error_code"] == 0 and p["records"] == b"" and p["hw"] == 300, p
    # A consumer in the leader's rack, or naming no rack, reads from it.
    for rack in (RACKS[leader], "", "rack-elsewhere"):
        p = fetch(lb, topic, rack=rack)
        assert p["preferred"] == -1 and p["error_code"] == 0 and p["records"], (rack, p)
    # An offset the follower does not have yet is read from the leader.
    assert fetch(lb, topic, offset=10 ** 6, rack=RACKS[follower])["preferred"] == -1

    # The follower serves v11+ consumers up to its high watermark.
    p = wait_until(lambda: (lambda q: q if q["hw"] == 300 else None)(
        fetch(fb, topic, rack=RACKS[follower])), 10, interval=0.2,
        what="the follower's high watermark at 300")
    assert p["error_code"] == 0 and p["preferred"] == -1 and last_offset(p["records"]) > 0, p
    # ... with its leader epoch checked: a later one is unknown to it.
    assert fetch(fb, topic, rack=RACKS[follower], epoch=ps[0]["epoch"] + 5)["error_code"] == 75
    # Without client metadata (v10) only the leader serves.
    assert fetch(fb, topic, version=10)["error_code"] == NOT_LEADER_OR_FOLLOWER
    assert fetch(lb, topic, version=10)["error_code"] == 0

    # librdkafka with client.rack: everything, in order, fetched from the follower.
    got, fetches, rx = consume_all(c, topic, 300, rack=RACKS[follower])
    assert got == values
    assert fetches.get(follower, 0) > 0, fetches
    assert rx[follower] > sum(len(v) for v in values), rx
    # Without client.rack the consumer stays with the leader.
    got, fetches, _rx = consume_all(c, topic, 300)
    assert got == values
    assert fetches.get(follower, 0) == 0 and fetches.get(leader, 0) > 0, fetches


def test_without_the_rack_aware_selector_consumers_read_from_leaders(cluster):
    c = rack_cluster(cluster, selector=None)
    topic = unique_topic("rackoff")
    ps = create(c, topic, 1, 3)
    produce_all(c.bootstrap(), topic, 10, [0])
    leader = ps[0]["leader"]
    follower = min(i for i in ps[0]["replicas"] if i != leader)
    p = fetch(c.broker(leader), topic, rack=RACKS[follower])
    assert p["preferred"] == -1 and p["error_code"] == 0 and p["records"], p
