"""Idempotent producers: InitProducerId, duplicate batches acknowledged with
their original offset and written once, sequence gaps and stale epochs
refused, and producer state kept across a restart. Transactions are in
test_transactions.py."""

import random
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

import kafka_wire as kw
from ck_helpers import admin_client, consume_n, consumer, create_topic, drain, producer
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(120)

API_INIT_PRODUCER_ID = 22
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_RECORD = 87


def random_pid():
    """A producer id far above what the broker allocates, so raw tests sharing
    the broker never collide with real producers (or each other)."""
    return random.randrange(1 << 40, 1 << 50)


# ------------------------------------------------------------- wire helpers


def init_producer_id(conn, version, transactional_id=None, timeout_ms=60000,
                     producer_id=-1, producer_epoch=-1):
    """InitProducerId at `version` -> (error_code, producer_id, producer_epoch)."""
    flexible = version >= 2
    if flexible:
        body = kw.compact_string(transactional_id) + kw.i32(timeout_ms)
        if version >= 3:
            body += kw.i64(producer_id) + kw.i16(producer_epoch)
        body += kw.EMPTY_TAGGED_FIELDS
    else:
        body = kw.nullable_string(transactional_id) + kw.i32(timeout_ms)
    r = conn.request(API_INIT_PRODUCER_ID, version, body, flexible=flexible)
    if flexible:
        r.skip_tagged_fields()   # response header v1
    throttle, err, pid, epoch = r.i32(), r.i16(), r.i64(), r.i16()
    assert throttle == 0
    if flexible:
        r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in InitProducerId v%d response" % version
    return err, pid, epoch


def idem_batch(pid, epoch, seq, values):
    ts = int(time.time() * 1000)
    return kw.encode_record_batch([(b"k", v, [], ts) for v in values], base_timestamp=ts,
                                  producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def produce_request(topic, records, partition=0):
    return kw.produce_v3_body(topic, partition, records, acks=-1)


def parse_one(r, topic, partition=0):
    topics, _ = kw.parse_produce_v3(r)
    assert r.remaining() == 0, "trailing bytes in Produce v3 response"
    [t] = topics
    assert t["name"] == topic
    [p] = t["partitions"]
    assert p["partition"] == partition
    return p


def produce(conn, topic, records, partition=0):
    """One Produce v3 (acks=all) -> (error_code, base_offset)."""
    r = conn.request(kw.API_PRODUCE, 3, produce_request(topic, records, partition))
    p = parse_one(r, topic, partition)
    return p["error_code"], p["base_offset"]


def read_all(bootstrap, topic, partitions=1, expect=None, timeout=30):
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        if expect is not None:
            msgs = consume_n(c, expect, timeout=timeout)
            # Anything beyond `expect` would be a duplicate: read on briefly.
            msgs += drain(c, quiet_for=1.0, timeout=10)
            return msgs
        return drain(c, quiet_for=1.5, timeout=timeout)
    finally:
        c.close()


def high_watermark(bootstrap, topic, partition=0):
    c = consumer(bootstrap)
    try:
        _lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                          cached=False)
        return hi
    finally:
        c.close()


@pytest.fixture
def topic1(broker):
    return create_topic(admin_client(broker.bootstrap), unique_topic("idem"), partitions=1)


# ------------------------------------------------------------- InitProducerId


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_init_producer_id_allocates_fresh_ids(broker, version):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err1, pid1, epoch1 = init_producer_id(conn, version)
        err2, pid2, epoch2 = init_producer_id(conn, version)
    assert (err1, err2) == (0, 0)
    assert pid1 >= 0 and pid2 > pid1
    assert epoch1 == epoch2 == 0


def test_init_producer_id_with_existing_id_gets_a_new_one(broker):
    """KIP-360 re-initialisation without a transactional id: like Kafka, a new
    producer id with epoch 0 (never the same id again)."""
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        _, pid, epoch = init_producer_id(conn, 4)
        err, pid2, epoch2 = init_producer_id(conn, 4, producer_id=pid, producer_epoch=epoch)
    assert err == 0
    assert pid2 > pid and epoch2 == 0


@pytest.mark.parametrize("version", [0, 3])
def test_init_producer_id_empty_transactional_id_refused(broker, version):
    """An empty transactional id is INVALID_REQUEST, as in Kafka (transactions
    themselves are covered by test_transactions.py)."""
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err, pid, epoch = init_producer_id(conn, version, transactional_id="")
        # The connection keeps working.
        assert init_producer_id(conn, version)[0] == 0
    assert err == kw.INVALID_REQUEST
    assert (pid, epoch) == (-1, -1)


def test_transactional_apis_advertised(broker):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        _, apis = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0))
    assert apis.get(API_INIT_PRODUCER_ID) == (0, 5)
    expected = {24: (0, 5), 25: (0, 4), 26: (0, 4), 28: (0, 4), 61: (0, 0), 65: (0, 0),
                66: (0, 1)}
    for key, versions in expected.items():
        assert apis.get(key) == versions, "API %d" % key


# ------------------------------------------------------------- real clients


def test_confluent_idempotent_producer_exactly_once_in_order(broker):
    """librdkafka with enable.idempotence: 10,000 messages over 3 partitions
    arrive once each, in the order produced per partition."""
    n, parts = 10000, 3
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("idem-ck"), partitions=parts)
    errors, client_errors = [], []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    p = producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 2,
                                      "batch.num.messages": 200,
                                      "error_cb": client_errors.append})
    for i in range(n):
        p.produce(topic, value=b"%d" % i, key=b"key-%d" % (i % 17), on_delivery=on_delivery)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert errors == [], [e.str() for e in errors]
    assert [e for e in client_errors if e.fatal()] == []

    msgs = read_all(broker.bootstrap, topic, parts, expect=n, timeout=60)
    values = [int(m.value()) for m in msgs]
    assert len(values) == n, "expected %d messages, got %d" % (n, len(values))
    assert sorted(values) == list(range(n))
    by_part = {}
    for m in msgs:
        by_part.setdefault(m.partition(), []).append((m.offset(), int(m.value())))
    assert len(by_part) == parts
    for part, recs in by_part.items():
        recs.sort()
        assert [v for _, v in recs] == sorted(v for _, v in recs), \
            "partition %d out of order" % part
        # Offsets are dense: nothing was written twice or skipped.
        assert [o for o, _ in recs] == list(range(len(recs)))


# ------------------------------------------------------------- raw Produce


def test_resent_batch_gets_same_offset_and_is_stored_once(broker, topic1):
    pid = random_pid()
    b0 = idem_batch(pid, 0, 0, [b"a0", b"a1", b"a2"])
    b1 = idem_batch(pid, 0, 3, [b"b0"])
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, b0) == (0, 0)
        assert produce(conn, topic1, b0) == (0, 0)   # the same request again
        assert produce(conn, topic1, b1) == (0, 3)
        assert produce(conn, topic1, b0) == (0, 0)   # still within the last five
        assert produce(conn, topic1, b1) == (0, 3)
    assert high_watermark(broker.bootstrap, topic1) == 4
    msgs = read_all(broker.bootstrap, topic1, expect=4)
    assert [m.value() for m in msgs] == [b"a0", b"a1", b"a2", b"b0"]


def test_pipelined_duplicate_is_stored_once(broker, topic1):
    """The same request sent twice back to back (both queued before either is
    written): the second is recognised against the first, not yet durable."""
    pid = random_pid()
    req = produce_request(topic1, idem_batch(pid, 0, 0, [b"x", b"y"]))
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        c1, c2 = conn.next_correlation_id(), conn.next_correlation_id()
        conn.send_raw(kw.build_request(kw.API_PRODUCE, 3, c1, req)
                      + kw.build_request(kw.API_PRODUCE, 3, c2, req))
        results = []
        for corr in (c1, c2):
            r = kw.Reader(conn.recv_frame())
            assert r.i32() == corr
            p = parse_one(r, topic1)
            results.append((p["error_code"], p["base_offset"]))
    assert results == [(0, 0), (0, 0)]
    assert high_watermark(broker.bootstrap, topic1) == 2
    assert [m.value() for m in read_all(broker.bootstrap, topic1, expect=2)] == [b"x", b"y"]


def test_sequence_gap_is_out_of_order(broker, topic1):
    pid = random_pid()
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, idem_batch(pid, 0, 0, [b"0", b"1"])) == (0, 0)
        err, base = produce(conn, topic1, idem_batch(pid, 0, 3, [b"3"]))   # 2 is missing
        assert (err, base) == (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
        # An old sequence that is no longer a known batch is out of order too.
        assert produce(conn, topic1, idem_batch(pid, 0, 1, [b"1"]))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        # The refused batches took no offsets; the right sequence goes on.
        assert produce(conn, topic1, idem_batch(pid, 0, 2, [b"2"])) == (0, 2)
    assert high_watermark(broker.bootstrap, topic1) == 3


def test_epoch_fencing(broker, topic1):
    pid = random_pid()
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, idem_batch(pid, 1, 0, [b"e1"])) == (0, 0)
        # A newer epoch must start at sequence 0.
        assert produce(conn, topic1, idem_batch(pid, 2, 5, [b"bad"]))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(conn, topic1, idem_batch(pid, 2, 0, [b"e2"])) == (0, 1)
        # The older epoch is fenced.
        assert produce(conn, topic1, idem_batch(pid, 1, 1, [b"old"]))[0] == \
            INVALID_PRODUCER_EPOCH
    assert high_watermark(broker.bootstrap, topic1) == 2


def test_unknown_producer_accepted_at_any_sequence(broker, topic1):
    """As in Kafka since KIP-360: no UNKNOWN_PRODUCER_ID for a producer the
    partition has no state for (e.g. its records were deleted)."""
    pid = random_pid()
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, idem_batch(pid, 0, 1000, [b"x"])) == (0, 0)
        assert produce(conn, topic1, idem_batch(pid, 0, 1001, [b"y"])) == (0, 1)


def test_two_idempotent_batches_in_one_partition_refused(broker, topic1):
    pid = random_pid()
    both = idem_batch(pid, 0, 0, [b"a"]) + idem_batch(pid, 0, 1, [b"b"])
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, both)[0] == INVALID_RECORD
        assert produce(conn, topic1, idem_batch(pid, 0, 0, [b"a"])) == (0, 0)


def test_idempotent_and_plain_producers_interleave(broker, topic1):
    pid = random_pid()
    ts = int(time.time() * 1000)
    plain = kw.encode_record_batch([(None, b"plain", [], ts)], base_timestamp=ts)
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        assert produce(conn, topic1, idem_batch(pid, 0, 0, [b"i0"])) == (0, 0)
        assert produce(conn, topic1, plain) == (0, 1)
        assert produce(conn, topic1, plain) == (0, 2)   # plain batches are never deduplicated
        assert produce(conn, topic1, idem_batch(pid, 0, 0, [b"i0"])) == (0, 0)
        assert produce(conn, topic1, idem_batch(pid, 0, 1, [b"i1"])) == (0, 3)
    assert high_watermark(broker.bootstrap, topic1) == 4


# ------------------------------------------------------------- restart


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill9"])
def test_producer_state_survives_restart(make_broker, hard):
    b = make_broker()
    topic = create_topic(admin_client(b.bootstrap), unique_topic("idem-restart"), partitions=1)
    with kw.KafkaConn.to(b.bootstrap) as conn:
        _, pid, epoch = init_producer_id(conn, 4)
        batches = [idem_batch(pid, epoch, 2 * i, [b"v%d" % (2 * i), b"v%d" % (2 * i + 1)])
                   for i in range(8)]
        bases = [produce(conn, topic, bt) for bt in batches]
    assert bases == [(0, 2 * i) for i in range(8)]

    b.restart(hard=hard)

    with kw.KafkaConn.to(b.bootstrap) as conn:
        # The last batch and one a little older are recognised.
        assert produce(conn, topic, batches[-1]) == (0, 14)
        assert produce(conn, topic, batches[-3]) == (0, 10)
        # A gap is still a gap.
        assert produce(conn, topic, idem_batch(pid, epoch, 17, [b"gap"]))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        # Producer ids handed out before the restart are never handed out again.
        err, pid2, _ = init_producer_id(conn, 4)
        assert err == 0 and pid2 > pid
        # And the producer carries on where it was.
        assert produce(conn, topic, idem_batch(pid, epoch, 16, [b"v16"])) == (0, 16)
    msgs = read_all(b.bootstrap, topic, expect=17)
    assert [m.value() for m in msgs] == [b"v%d" % i for i in range(17)]


def test_confluent_idempotent_producer_across_restart(make_broker):
    """A librdkafka idempotent producer keeps producing through a broker
    restart (its retries are deduplicated or accepted, never fatal)."""
    b = make_broker()
    topic = create_topic(admin_client(b.bootstrap), unique_topic("idem-ck-restart"))
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    p = producer(b.bootstrap, **{"enable.idempotence": True, "linger.ms": 1,
                                 "message.timeout.ms": 60000})
    for i in range(500):
        p.produce(topic, value=b"%d" % i, on_delivery=on_delivery)
    assert p.flush(30) == 0
    b.restart()
    for i in range(500, 1000):
        p.produce(topic, value=b"%d" % i, on_delivery=on_delivery)
    assert p.flush(60) == 0
    assert errors == [], [e.str() for e in errors]
    msgs = read_all(b.bootstrap, topic, expect=1000, timeout=60)
    assert [int(m.value()) for m in msgs] == list(range(1000))


def test_fatal_error_never_raised_by_sequence_checks(broker):
    """Sanity: an idempotent librdkafka producer with many in-flight requests
    over one connection sees no OUT_OF_ORDER_SEQUENCE_NUMBER."""
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("idem-inflight"))
    errors = []
    p = producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 0, "batch.num.messages": 10,
        "max.in.flight.requests.per.connection": 5,
        "error_cb": lambda e: errors.append(e)})
    for i in range(3000):
        p.produce(topic, value=b"%d" % i)
        p.poll(0)
    assert p.flush(60) == 0
    assert [e for e in errors if e.fatal() or e.code() != KafkaError._TRANSPORT] == []
    assert high_watermark(broker.bootstrap, topic) == 3000


# ------------------------------------------------------------- expiry


def test_idle_producer_state_expires(make_broker):
    """producer.id.expiration.ms: a producer idle that long is forgotten on
    the partition (DescribeProducers no longer lists it; a retry of its old
    batch is then a new batch, as in Kafka), while an active one is kept."""
    from test_transactions import describe_producers

    b = make_broker({"producer.id.expiration.ms": "3000",
                     "producer.id.expiration.check.interval.ms": "200"})
    topic = create_topic(admin_client(b.bootstrap), unique_topic("idem-expire"), partitions=1)
    idle, active = random_pid(), random_pid()
    with kw.KafkaConn.to(b.bootstrap) as conn:
        assert produce(conn, topic, idem_batch(idle, 0, 0, [b"i0"])) == (0, 0)
        assert produce(conn, topic, idem_batch(active, 0, 0, [b"a0"])) == (0, 1)
        listed = {p["producer_id"]: p for p in describe_producers(conn, topic, 0)["producers"]}
        assert set(listed) == {idle, active}
        # Last append time is reported, in broker time.
        assert abs(listed[idle]["last_timestamp"] - time.time() * 1000) < 60_000
        # Within the window a retry is a duplicate.
        assert produce(conn, topic, idem_batch(idle, 0, 0, [b"i0"])) == (0, 0)
        seq, deadline = 1, time.time() + 20
        while time.time() < deadline:
            # Keep `active` busy; wait for `idle` to be forgotten.
            assert produce(conn, topic, idem_batch(active, 0, seq, [b"a"]))[0] == 0
            seq += 1
            listed = {p["producer_id"] for p in describe_producers(conn, topic, 0)["producers"]}
            if idle not in listed:
                break
            time.sleep(0.25)
        assert idle not in listed, "idle producer state never expired"
        assert active in listed
        # The forgotten producer's old batch is no longer recognised: it is
        # written again (Kafka behaves the same after expiry).
        err, base = produce(conn, topic, idem_batch(idle, 0, 0, [b"i0"]))
        assert err == 0 and base > 1
        # The active producer's sequence checks still hold.
        assert produce(conn, topic, idem_batch(active, 0, seq + 5, [b"gap"]))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
