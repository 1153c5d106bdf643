"""Produce and consume through confluent-kafka (librdkafka)."""

import statistics
import threading
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME, KafkaError,
                             TopicPartition)
from confluent_kafka.admin import OffsetSpec

from ck_helpers import (admin_client, consume_n, consumer, create_topic, drain, producer,
                        wait_high_watermarks)
from runnel_harness import unique_topic

N_MESSAGES = 10_000
N_PARTITIONS = 6


def headers_for(i):
    h = [("seq", str(i).encode()), ("bin", bytes([i % 256, 0, 255])), ("dup", b"1"),
         ("dup", b"2")]
    if i % 10 == 0:
        h.append(("nullval", None))
    return h


def key_for(i):
    return None if i % 97 == 0 else ("key-%d" % (i % 500)).encode()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("acks", ["0", "1", "all"])
@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_roundtrip_10k(broker, compression, acks):
    topic = unique_topic("rt-%s-acks%s" % (compression, acks))
    admin = admin_client(broker.bootstrap)
    create_topic(admin, topic, partitions=N_PARTITIONS)

    base_ts = int(time.time() * 1000) - 3_600_000  # explicit, distinct, in the past hour
    p = producer(broker.bootstrap, **{
        "acks": acks, "compression.type": compression, "linger.ms": 5,
        "enable.idempotence": False})
    delivered = {}   # seq -> (partition, offset)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
            return
        seq = int(msg.value().split(b":", 1)[0])
        delivered[seq] = (msg.partition(), msg.offset())

    for i in range(N_MESSAGES):
        value = b"%d:" % i + b"payload-%d-" % i + b"x" * (i % 200)
        while True:
            try:
                p.produce(topic, value=value, key=key_for(i), headers=headers_for(i),
                          timestamp=base_ts + i, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "messages still undelivered after flush"
    assert errors == [], "delivery errors: %s" % errors[:5]
    assert len(delivered) == N_MESSAGES

    c = consumer(broker.bootstrap)
    try:
        marks = wait_high_watermarks(c, topic, N_PARTITIONS, N_MESSAGES)
        assert sum(hi - lo for lo, hi in marks.values()) == N_MESSAGES, marks
        c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(N_PARTITIONS)])
        msgs = consume_n(c, N_MESSAGES, timeout=90)
        extra = drain(c, quiet_for=0.5, timeout=5)
    finally:
        c.close()

    assert extra == [], "more messages than produced"
    assert len(msgs) == N_MESSAGES
    by_part = {}
    seen = set()
    for m in msgs:
        seq = int(m.value().split(b":", 1)[0])
        assert seq not in seen, "duplicate message seq %d" % seq
        seen.add(seq)
        assert m.topic() == topic
        assert m.value() == b"%d:" % seq + b"payload-%d-" % seq + b"x" * (seq % 200)
        assert m.key() == key_for(seq)
        assert m.headers() == headers_for(seq), "headers of seq %d" % seq
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, base_ts + seq)
        if acks != "0":
            assert (m.partition(), m.offset()) == delivered[seq], \
                "seq %d delivered at %s but read at %s" % (
                    seq, delivered[seq], (m.partition(), m.offset()))
        by_part.setdefault(m.partition(), []).append((m.offset(), seq))
    assert seen == set(range(N_MESSAGES))

    for part, rows in by_part.items():
        offsets = [o for o, _ in rows]
        seqs = [s for _, s in rows]
        assert offsets == list(range(len(rows))), "partition %d offsets not contiguous" % part
        assert seqs == sorted(seqs), "partition %d out of produce order" % part
    # Same key -> same partition.
    key_part = {}
    for m in msgs:
        if m.key() is not None:
            assert key_part.setdefault(m.key(), m.partition()) == m.partition()


@pytest.mark.timeout(60)
def test_long_poll_wakes_up_on_produce(broker):
    """A consumer parked in a Fetch long-poll (fetch.wait.max.ms=500 by default)
    must be woken by a produce, not wait out the timeout."""
    topic = unique_topic("longpoll")
    create_topic(admin_client(broker.bootstrap), topic, partitions=1)

    p = producer(broker.bootstrap, **{"linger.ms": 0, "acks": "1"})
    c = consumer(broker.bootstrap, **{"fetch.wait.max.ms": 500})
    c.assign([TopicPartition(topic, 0, OFFSET_END)])

    received = {}
    arrived = threading.Event()
    stop = threading.Event()

    def poll_loop():
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            received[m.value()] = time.monotonic()
            arrived.set()

    t = threading.Thread(target=poll_loop, daemon=True)
    t.start()
    try:
        # Warm up until the consumer has a fetch position at the end and sees a message.
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            p.produce(topic, b"warmup")
            p.flush(5)
            arrived.wait(1.0)
        assert received, "consumer never received the warm-up message"
        time.sleep(0.5)

        delays = []
        for i in range(20):
            arrived.clear()
            time.sleep(0.15)  # let the consumer park in a long-poll fetch
            value = b"lat-%d" % i
            sent = time.monotonic()
            p.produce(topic, value)
            p.poll(0)
            assert arrived.wait(5.0), "message %d not received within 5 s" % i
            delays.append(received[value] - sent)
        p.flush(5)
    finally:
        stop.set()
        t.join(5)
        c.close()
    median_ms = statistics.median(delays) * 1000
    print("produce->consume delays (ms):", ["%.1f" % (d * 1000) for d in delays])
    assert median_ms < 100, "median produce->consume delay %.1f ms (all: %s)" % (
        median_ms, ["%.0f" % (d * 1000) for d in delays])


@pytest.mark.timeout(60)
def test_list_offsets_by_timestamp(broker):
    topic = unique_topic("ts-lookup")
    admin = admin_client(broker.bootstrap)
    create_topic(admin, topic, partitions=2, config={"retention.ms": "-1"})
    base = (int(time.time() * 1000) // 1000) * 1000 - 3_600_000
    ts = [base + 1000 * i for i in range(10)]   # base, base+1000, ..., base+9000

    # Partition 0: one batch per message.  Partition 1: all ten in one batch,
    # so the lookup must find an offset inside a batch.
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i, t in enumerate(ts):
        p.produce(topic, b"m%d" % i, partition=0, timestamp=t)
        assert p.flush(10) == 0
    p2 = producer(broker.bootstrap, **{"linger.ms": 200})
    for i, t in enumerate(ts):
        p2.produce(topic, b"m%d" % i, partition=1, timestamp=t)
    assert p2.flush(10) == 0

    c = consumer(broker.bootstrap)
    try:
        for part in (0, 1):
            assert c.get_watermark_offsets(TopicPartition(topic, part), timeout=10) == (0, 10)
            cases = {
                base + 2500: 3,       # first ts >= T
                base + 3000: 3,       # exact match
                base: 0,
                base - 50_000: 0,     # before everything
                base + 9000: 9,
                base + 9001: -1,      # after everything: no offset (OFFSET_END)
                base + 100_000: -1,
            }
            tps = [TopicPartition(topic, part, t) for t in cases]
            for query, res in zip(cases, [c.offsets_for_times([tp], timeout=10)[0] for tp in tps]):
                assert res.error is None, res.error
                assert res.offset == cases[query], \
                    "partition %d: offsets_for_times(%d) -> %d, want %d" % (
                        part, query - base, res.offset, cases[query])
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_list_offsets_earliest_latest_max_timestamp(broker):
    topic = unique_topic("ts-specs")
    admin = admin_client(broker.bootstrap)
    create_topic(admin, topic, partitions=1)
    base = int(time.time() * 1000) - 600_000
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i, t in enumerate([base + 5000, base + 9000, base + 1000]):
        p.produce(topic, b"m%d" % i, partition=0, timestamp=t)
        assert p.flush(10) == 0

    tp = TopicPartition(topic, 0)
    res = {}
    for name, spec in [("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                       ("max", OffsetSpec.max_timestamp())]:
        res[name] = admin.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=20)
    assert res["earliest"].offset == 0
    assert res["latest"].offset == 3
    assert res["max"].offset == 1
    assert res["max"].timestamp == base + 9000


@pytest.mark.timeout(60)
def test_max_message_bytes_enforced(broker):
    topic = unique_topic("maxbytes")
    admin = admin_client(broker.bootstrap)
    create_topic(admin, topic, partitions=1, config={"max.message.bytes": "100000"})
    # Client-side limit raised so the broker is the one that must refuse.
    p = producer(broker.bootstrap, **{"message.max.bytes": 10_000_000, "linger.ms": 0,
                                       "compression.type": "none", "retries": 0})
    results = []
    p.produce(topic, b"s" * 50_000, partition=0,
              on_delivery=lambda e, m: results.append(("small", e)))
    p.flush(15)
    p.produce(topic, b"B" * 200_000, partition=0,
              on_delivery=lambda e, m: results.append(("big", e)))
    p.flush(15)
    assert results[0] == ("small", None)
    assert results[1][0] == "big" and results[1][1] is not None
    assert results[1][1].code() == KafkaError.MSG_SIZE_TOO_LARGE, results[1][1]

    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 1)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = consume_n(c, 1, timeout=20)
        assert [len(m.value()) for m in got] == [50_000]
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_auto_create_topic_on_produce(broker):
    topic = unique_topic("autocreate")
    p = producer(broker.bootstrap)
    errs = []
    p.produce(topic, b"hello", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(20) == 0
    assert errs == [None]
    md = admin_client(broker.bootstrap).list_topics(timeout=10)
    assert topic in md.topics
    assert len(md.topics[topic].partitions) == 1   # num.partitions=1


@pytest.mark.timeout(60)
def test_fetch_from_middle_of_batch(broker):
    """Fetching offset 5 of a 10-record batch returns the whole batch; the
    client must see exactly offsets 5..9."""
    topic = unique_topic("midbatch")
    create_topic(admin_client(broker.bootstrap), topic, partitions=1)
    p = producer(broker.bootstrap, **{"linger.ms": 200, "compression.type": "lz4"})
    for i in range(10):
        p.produce(topic, b"b-%d" % i, partition=0)
    assert p.flush(10) == 0
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 5)])
        got = consume_n(c, 5, timeout=20)
        got += drain(c, quiet_for=1.0, timeout=5)
    finally:
        c.close()
    assert [(m.offset(), m.value()) for m in got] == [(i, b"b-%d" % i) for i in range(5, 10)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reset,expected", [("earliest", list(range(10))), ("latest", [10])])
def test_out_of_range_offset_resets(broker, reset, expected):
    """Fetching past the end gets OFFSET_OUT_OF_RANGE; the client then resets
    per auto.offset.reset."""
    topic = unique_topic("oor-" + reset)
    create_topic(admin_client(broker.bootstrap), topic, partitions=1)
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(10):
        p.produce(topic, b"o-%d" % i, partition=0)
    assert p.flush(10) == 0
    c = consumer(broker.bootstrap, **{"auto.offset.reset": reset})
    try:
        c.assign([TopicPartition(topic, 0, 1000)])
        if reset == "latest":
            time.sleep(2.0)   # let the reset to the end happen, then produce one more
            p.produce(topic, b"o-10", partition=0)
            assert p.flush(10) == 0
        got = consume_n(c, len(expected), timeout=20)
    finally:
        c.close()
    assert [m.offset() for m in got] == expected
