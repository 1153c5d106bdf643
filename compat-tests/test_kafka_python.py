"""kafka-python: its own protocol implementation, pure Python."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(90)

N = 1000


@pytest.fixture
def kp_admin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="compat-kp-admin",
                         request_timeout_ms=15000)
    yield a
    a.close()


def wait_listed(kp_admin, name, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in kp_admin.list_topics():
            return
        time.sleep(0.2)
    raise AssertionError("%s not listed by KafkaAdminClient.list_topics()" % name)


def test_admin_create_and_list_topics(kp_admin):
    name = unique_topic("kp-admin")
    kp_admin.create_topics({name: {"num_partitions": 3, "replication_factor": 1}})
    wait_listed(kp_admin, name)
    [desc] = [t for t in kp_admin.describe_topics([name]) if t["name"] == name]
    assert desc["error_code"] == 0
    assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]
    assert all(p["leader_id"] == 0 for p in desc["partitions"])


def test_admin_create_existing_topic_error(kp_admin):
    name = unique_topic("kp-dup")
    kp_admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})
    wait_listed(kp_admin, name)
    res = kp_admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1}},
                                 raise_errors=False)
    codes = _topic_error_codes(res)
    assert codes.get(name) == 36, res   # TOPIC_ALREADY_EXISTS


def _topic_error_codes(res):
    """CreateTopicsResponse (object or dict form) -> {name: error_code}."""
    topics = res["topics"] if isinstance(res, dict) else getattr(res, "topics")
    out = {}
    for t in topics:
        if isinstance(t, dict):
            out[t["name"]] = t["error_code"]
        elif isinstance(t, (tuple, list)):
            out[t[0]] = t[1]
        else:
            out[t.name] = t.error_code
    return out


def test_inferred_broker_version_is_modern(broker):
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        v = p.config["api_version"]
        # Produce v3+ / Fetch v4+ with headers means >= 0.11; the mission's ranges
        # (Produce up to 12, Fetch up to 17, ListOffsets up to 10) infer 4.0.
        assert v >= (2, 1), "kafka-python inferred broker version %s" % (v,)
    finally:
        p.close()


@pytest.mark.parametrize("compression", ["gzip", None], ids=["gzip", "none"])
def test_produce_consume_roundtrip(broker, kp_admin, compression):
    topic = unique_topic("kp-rt")
    kp_admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
    wait_listed(kp_admin, topic)

    base_ts = int(time.time() * 1000) - 1_000_000
    # kafka-python 3 turns idempotence on by default, which needs InitProducerId:
    # that arrives with the exactly-once issue; until then the test opts out.
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=compression,
                      acks="all", linger_ms=5, enable_idempotence=False)
    futures = []
    for i in range(N):
        futures.append(p.send(
            topic, value=b"v-%d" % i, key=b"k-%d" % (i % 50), partition=i % 2,
            headers=[("seq", str(i).encode()), ("h", b"\x00\xff")], timestamp_ms=base_ts + i))
    p.flush(30)
    metas = [f.get(timeout=30) for f in futures]
    p.close()
    offsets = {}
    for i, md in enumerate(metas):
        assert md.partition == i % 2
        offsets[i] = md.offset
    for part in (0, 1):
        assert sorted(o for i, o in offsets.items() if i % 2 == part) == list(range(N // 2))

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      enable_auto_commit=False, check_crcs=True)
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < N and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                got.extend(recs)
        assert c.end_offsets(tps) == {tps[0]: N // 2, tps[1]: N // 2}
    finally:
        c.close()

    assert len(got) == N
    last = {}
    for r in got:
        i = int(r.value.decode().split("-")[1])
        assert r.value == b"v-%d" % i
        assert r.key == b"k-%d" % (i % 50)
        assert r.partition == i % 2
        assert r.offset == offsets[i]
        assert list(r.headers) == [("seq", str(i).encode()), ("h", b"\x00\xff")]
        assert r.timestamp == base_ts + i
        assert r.timestamp_type == 0   # CreateTime
        assert i > last.get(r.partition, -1), "out of order in partition %d" % r.partition
        last[r.partition] = i


def test_default_producer_config_works(broker, kp_admin):
    """KafkaProducer() with defaults, as users write it.  kafka-python 3 turns
    idempotence on when the inferred broker version allows it, so this needs
    InitProducerId (22) whenever the advertised ranges imply a modern broker."""
    topic = unique_topic("kp-default")
    kp_admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
    wait_listed(kp_admin, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        metas = [p.send(topic, b"d-%d" % i).get(timeout=20) for i in range(10)]
    finally:
        p.close(timeout=5)
    assert [m.offset for m in metas] == list(range(10))
