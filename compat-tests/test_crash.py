"""Durability across kill -9 and graceful restarts."""

import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from ck_helpers import (admin_client, consume_n, consumer, create_topic, drain, producer,
                        wait_for_topic)
from runnel_harness import unique_topic

N_PRODUCERS = 3


class SeqProducer(threading.Thread):
    """Produces b"<producer>:<seq>" to its own partition until stopped, recording
    which sequence numbers the broker acknowledged."""

    def __init__(self, bootstrap, topic, idx):
        super().__init__(daemon=True)
        self.topic = topic
        self.idx = idx
        self.p = producer(bootstrap, **{
            "acks": "all", "linger.ms": 2, "enable.idempotence": False,
            "message.timeout.ms": 60000, "queue.buffering.max.messages": 20000})
        self.acked = []
        self.failed = 0
        self.sent = 0
        self.stop_flag = threading.Event()

    def _on_delivery(self, err, msg):
        if err is None:
            seq = int(msg.value().split(b":")[1])
            self.acked.append((seq, msg.offset()))
        else:
            self.failed += 1

    def run(self):
        seq = 0
        while not self.stop_flag.is_set():
            try:
                self.p.produce(self.topic, b"%d:%d" % (self.idx, seq), partition=self.idx,
                               on_delivery=self._on_delivery)
                seq += 1
            except BufferError:
                self.p.poll(0.01)
            if seq % 100 == 0:
                self.p.poll(0)
            # Keep the rate bounded (<= ~20k msg/s per producer): this is a
            # durability test, not a benchmark.
            if seq % 100 == 0:
                time.sleep(0.002)
        self.sent = seq

    def abandon(self):
        """Drop everything not yet acknowledged so nothing is retried after restart."""
        self.p.purge(in_queue=True, in_flight=True, blocking=False)
        self.p.flush(5)


def read_all(bootstrap, topic, partitions):
    c = consumer(bootstrap)
    try:
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                 for p in range(partitions)}
        total = sum(hi - lo for lo, hi in marks.values())
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        msgs = consume_n(c, total, timeout=90)
        assert len(msgs) == total, "read %d of %d messages (watermarks %s)" % (
            len(msgs), total, marks)
        assert drain(c, quiet_for=0.5, timeout=5) == []
        return marks, msgs
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_kill9_during_load_keeps_acknowledged_messages(make_broker):
    b = make_broker()
    topic = unique_topic("crash")
    admin = admin_client(b.bootstrap)
    create_topic(admin, topic, partitions=N_PRODUCERS)

    producers = [SeqProducer(b.bootstrap, topic, i) for i in range(N_PRODUCERS)]
    for p in producers:
        p.start()
    time.sleep(2.0)
    assert all(len(p.acked) > 0 for p in producers), "no acks before the crash: %s" % (
        [len(p.acked) for p in producers])
    # Kill while every producer has messages outstanding (queued or in flight).
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not all(len(p.p) > 0 for p in producers):
        time.sleep(0.0005)
    b.kill9()
    for p in producers:
        p.stop_flag.set()
    for p in producers:
        p.join(10)
        p.abandon()
    acked = {p.idx: list(p.acked) for p in producers}
    print("acked per producer:", {i: len(a) for i, a in acked.items()},
          "sent:", [p.sent for p in producers], "failed:", [p.failed for p in producers])
    assert sum(len(a) for a in acked.values()) >= 1000, "too little load before the crash"
    for p in producers:
        del p.p
    del producers

    b.start()
    wait_for_topic(admin_client(b.bootstrap), topic, N_PRODUCERS, timeout=30)
    marks, msgs = read_all(b.bootstrap, topic, N_PRODUCERS)
    print("recovered watermarks:", marks)

    per_part = {i: [] for i in range(N_PRODUCERS)}
    for m in msgs:
        idx, seq = map(int, m.value().split(b":"))
        assert idx == m.partition(), "message of producer %d in partition %d" % (idx, m.partition())
        per_part[idx].append((m.offset(), seq))

    for idx in range(N_PRODUCERS):
        rows = per_part[idx]
        offsets = [o for o, _ in rows]
        seqs = [s for _, s in rows]
        lo, hi = marks[idx]
        assert offsets == list(range(lo, hi)), "partition %d: offsets not contiguous" % idx
        assert len(seqs) == len(set(seqs)), "partition %d: duplicated messages" % idx
        assert seqs == sorted(seqs), "partition %d: messages reordered" % idx
        stored = dict((s, o) for o, s in rows)
        lost = [s for s, _ in acked[idx] if s not in stored]
        assert not lost, "partition %d: %d acknowledged messages lost after kill -9, e.g. %s" % (
            idx, len(lost), lost[:10])
        moved = [(s, o, stored[s]) for s, o in acked[idx] if stored[s] != o]
        assert not moved, "partition %d: acknowledged offsets changed (seq, acked, now): %s" % (
            idx, moved[:10])

    # New writes continue right after the recovered end: no overlap, no reuse.
    p = producer(b.bootstrap, **{"acks": "all", "linger.ms": 0})
    new = {i: [] for i in range(N_PRODUCERS)}

    def cb(err, msg):
        assert err is None, err
        new[msg.partition()].append(msg.offset())

    for idx in range(N_PRODUCERS):
        for k in range(100):
            p.produce(topic, b"%d:after-%d" % (idx, k), partition=idx, on_delivery=cb)
    assert p.flush(30) == 0
    for idx in range(N_PRODUCERS):
        hi = marks[idx][1]
        assert sorted(new[idx]) == list(range(hi, hi + 100)), \
            "partition %d: new offsets %s.. after recovered end %d" % (idx, new[idx][:3], hi)

    c = consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(topic, i, marks[i][1]) for i in range(N_PRODUCERS)])
        after = consume_n(c, 300, timeout=30)
    finally:
        c.close()
    assert sorted((m.partition(), m.value()) for m in after) == sorted(
        (i, b"%d:after-%d" % (i, k)) for i in range(N_PRODUCERS) for k in range(100))


@pytest.mark.timeout(120)
def test_graceful_restart_preserves_topics_data_and_configs(make_broker):
    b = make_broker()
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("restart"), partitions=2,
                         config={"retention.ms": "987654321"})
    base_ts = int(time.time() * 1000) - 60_000
    p = producer(b.bootstrap, **{"acks": "all"})
    for i in range(1000):
        p.produce(topic, b"r-%d" % i, key=b"k%d" % i, partition=i % 2, timestamp=base_ts + i)
    assert p.flush(30) == 0
    del p

    b.restart()   # SIGTERM (must exit 0), then start on the same port and data dir

    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = admin_client(b.bootstrap)
    wait_for_topic(admin, topic, 2, timeout=30)
    res = ConfigResource(ResourceType.TOPIC, topic)
    cfg = admin.describe_configs([res])[res].result(timeout=20)
    assert cfg["retention.ms"].value == "987654321"

    marks, msgs = read_all(b.bootstrap, topic, 2)
    assert marks == {0: (0, 500), 1: (0, 500)}
    got = sorted((m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]) for m in msgs)
    want = sorted((i % 2, i // 2, b"k%d" % i, b"r-%d" % i, base_ts + i)
                  for i in range(1000))
    assert got == want


@pytest.mark.timeout(120)
def test_kill9_when_idle_then_restart(make_broker):
    b = make_broker()
    admin = admin_client(b.bootstrap)
    topic = create_topic(admin, unique_topic("idlekill"), partitions=1)
    p = producer(b.bootstrap, **{"acks": "all", "linger.ms": 0})
    for i in range(200):
        p.produce(topic, b"i-%d" % i)
    assert p.flush(30) == 0
    del p
    time.sleep(0.5)
    b.restart(hard=True)
    wait_for_topic(admin_client(b.bootstrap), topic, 1, timeout=30)
    marks, msgs = read_all(b.bootstrap, topic, 1)
    assert marks == {0: (0, 200)}
    assert [m.value() for m in msgs] == [b"i-%d" % i for i in range(200)]
