"""Transactions: the transaction coordinator (InitProducerId with a
transactional id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
EndTxn), COMMIT/ABORT markers, the last stable offset and read_committed
consumers, and the admin APIs (DescribeProducers, DescribeTransactions,
ListTransactions).

Raw-protocol tests pin down the wire behaviour (error codes, control batch
layout, aborted-transaction lists); confluent-kafka tests check what
applications see, including exactly-once consume-transform-produce across
SIGKILLed workers and a broker kill -9 under transactional load."""

import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

import kafka_wire as kw
from ck_helpers import admin_client, consume_n, consumer, create_topic, drain, producer
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent

API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_INIT_PRODUCER_ID = 22
API_ADD_PARTITIONS_TO_TXN = 24
API_ADD_OFFSETS_TO_TXN = 25
API_END_TXN = 26
API_TXN_OFFSET_COMMIT = 28
API_DESCRIBE_PRODUCERS = 61
API_DESCRIBE_TRANSACTIONS = 65
API_LIST_TRANSACTIONS = 66

INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
TRANSACTIONAL_ID_NOT_FOUND = 105


# ------------------------------------------------------------- wire helpers


def compact_array(items):
    return kw.uvarint(len(items) + 1) + b"".join(items)


def init_pid(conn, txn_id, timeout_ms=60000, version=1, producer_id=-1, producer_epoch=-1):
    """InitProducerId -> (error, producer_id, epoch). v1 is non-flexible, v3+ KIP-360."""
    if version >= 2:
        body = kw.compact_string(txn_id) + kw.i32(timeout_ms)
        if version >= 3:
            body += kw.i64(producer_id) + kw.i16(producer_epoch)
        body += kw.EMPTY_TAGGED_FIELDS
        r = conn.request(API_INIT_PRODUCER_ID, version, body, flexible=True)
        r.skip_tagged_fields()
    else:
        r = conn.request(API_INIT_PRODUCER_ID, version,
                         kw.nullable_string(txn_id) + kw.i32(timeout_ms))
    _throttle, err, pid, epoch = r.i32(), r.i16(), r.i64(), r.i16()
    return err, pid, epoch


def add_partitions(conn, txn_id, pid, epoch, topic, partitions, version=1):
    """AddPartitionsToTxn v0-2 -> {partition: error}."""
    body = (kw.string(txn_id) + kw.i64(pid) + kw.i16(epoch)
            + kw.array([kw.string(topic) + kw.array([kw.i32(p) for p in partitions])]))
    r = conn.request(API_ADD_PARTITIONS_TO_TXN, version, body)
    r.i32()
    results = r.array(lambda rr: (rr.string(), rr.array(lambda q: (q.i32(), q.i16()))))
    assert r.remaining() == 0
    return {p: e for _t, parts in results for p, e in parts}


def add_offsets(conn, txn_id, pid, epoch, group, version=1):
    body = kw.string(txn_id) + kw.i64(pid) + kw.i16(epoch) + kw.string(group)
    r = conn.request(API_ADD_OFFSETS_TO_TXN, version, body)
    _throttle, err = r.i32(), r.i16()
    return err


def end_txn(conn, txn_id, pid, epoch, commit, version=1):
    body = kw.string(txn_id) + kw.i64(pid) + kw.i16(epoch) + kw.i8(1 if commit else 0)
    r = conn.request(API_END_TXN, version, body, timeout=30)
    _throttle, err = r.i32(), r.i16()
    assert r.remaining() == 0
    return err


def txn_offset_commit(conn, txn_id, group, pid, epoch, topic, partition, offset):
    """TxnOffsetCommit v2 (non-flexible) -> error of the one partition."""
    body = (kw.string(txn_id) + kw.string(group) + kw.i64(pid) + kw.i16(epoch)
            + kw.array([kw.string(topic) + kw.array([
                kw.i32(partition) + kw.i64(offset) + kw.i32(-1) + kw.nullable_string("m")])]))
    r = conn.request(API_TXN_OFFSET_COMMIT, 2, body)
    r.i32()
    [(_t, [(_p, err)])] = r.array(lambda rr: (rr.string(),
                                              rr.array(lambda q: (q.i32(), q.i16()))))
    return err


def offset_fetch_v7(conn, group, topic, partition, require_stable):
    """OffsetFetch v7 (flexible) -> (error, committed offset) of one partition."""
    body = (kw.compact_string(group)
            + compact_array([kw.compact_string(topic) + compact_array([kw.i32(partition)])
                             + kw.EMPTY_TAGGED_FIELDS])
            + kw.i8(1 if require_stable else 0) + kw.EMPTY_TAGGED_FIELDS)
    r = conn.request(API_OFFSET_FETCH, 7, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()

    def part(rr):
        p = (rr.i32(), rr.i64(), rr.i32(), rr.compact_string(), rr.i16())
        rr.skip_tagged_fields()
        return p

    def top(rr):
        t = (rr.compact_string(), rr.compact_array(part))
        rr.skip_tagged_fields()
        return t

    [(_t, [(_p, offset, _e, _m, err)])] = r.compact_array(top)
    return err, offset


def list_offsets_v2(conn, topic, partition, timestamp=-1, isolation=0):
    """ListOffsets v2 (isolation level) -> (error, offset)."""
    body = (kw.i32(-1) + kw.i8(isolation)
            + kw.array([kw.string(topic) + kw.array([kw.i32(partition) + kw.i64(timestamp)])]))
    r = conn.request(kw.API_LIST_OFFSETS, 2, body)
    r.i32()
    [(_t, [(_p, err, _ts, offset)])] = r.array(
        lambda rr: (rr.string(), rr.array(lambda q: (q.i32(), q.i16(), q.i64(), q.i64()))))
    return err, offset


def fetch(conn, topic, partition, offset, isolation):
    _throttle, topics = kw.parse_fetch_v4(conn.request(
        kw.API_FETCH, 4, kw.fetch_v4_body(topic, partition, offset, max_wait_ms=100,
                                          isolation_level=isolation)))
    [t] = topics
    [p] = t["partitions"]
    return p


def find_coordinator_v1(conn, key, key_type):
    r = conn.request(API_FIND_COORDINATOR, 1, kw.string(key) + kw.i8(key_type))
    _throttle, err, _msg, node, host, port = (r.i32(), r.i16(), r.string(), r.i32(), r.string(),
                                              r.i32())
    return err, node, host, port


def list_transactions(conn, states=(), pids=(), duration=-1, version=1):
    body = (compact_array([kw.compact_string(s) for s in states])
            + compact_array([kw.i64(p) for p in pids]))
    if version >= 1:
        body += kw.i64(duration)
    body += kw.EMPTY_TAGGED_FIELDS
    r = conn.request(API_LIST_TRANSACTIONS, version, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()
    err = r.i16()
    unknown = r.compact_array(lambda rr: rr.compact_string()) or []

    def state(rr):
        s = (rr.compact_string(), rr.i64(), rr.compact_string())
        rr.skip_tagged_fields()
        return s

    states = r.compact_array(state) or []
    return err, unknown, {tid: (pid, st) for tid, pid, st in states}


def describe_transactions(conn, ids):
    body = compact_array([kw.compact_string(i) for i in ids]) + kw.EMPTY_TAGGED_FIELDS
    r = conn.request(API_DESCRIBE_TRANSACTIONS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()

    def topic(rr):
        t = (rr.compact_string(), rr.compact_array(lambda q: q.i32()) or [])
        rr.skip_tagged_fields()
        return t

    def state(rr):
        s = {"error": rr.i16(), "id": rr.compact_string(), "state": rr.compact_string(),
             "timeout_ms": rr.i32(), "start_ms": rr.i64(), "producer_id": rr.i64(),
             "epoch": rr.i16(), "topics": dict(rr.compact_array(topic) or [])}
        rr.skip_tagged_fields()
        return s

    return {s["id"]: s for s in r.compact_array(state)}


def describe_producers(conn, topic, partition):
    body = (compact_array([kw.compact_string(topic) + compact_array([kw.i32(partition)])
                           + kw.EMPTY_TAGGED_FIELDS]) + kw.EMPTY_TAGGED_FIELDS)
    r = conn.request(API_DESCRIBE_PRODUCERS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()

    def producer_state(rr):
        s = {"producer_id": rr.i64(), "epoch": rr.i32(), "last_sequence": rr.i32(),
             "last_timestamp": rr.i64(), "coordinator_epoch": rr.i32(),
             "txn_start": rr.i64()}
        rr.skip_tagged_fields()
        return s

    def part(rr):
        p = {"partition": rr.i32(), "error": rr.i16(), "message": rr.compact_string(),
             "producers": rr.compact_array(producer_state) or []}
        rr.skip_tagged_fields()
        return p

    def top(rr):
        t = (rr.compact_string(), rr.compact_array(part))
        rr.skip_tagged_fields()
        return t

    [(_t, [p])] = r.compact_array(top)
    return p


def txn_batch(pid, epoch, seq, values):
    ts = int(time.time() * 1000)
    return kw.encode_record_batch([(b"k", v, [], ts) for v in values], base_timestamp=ts,
                                  attributes=0x10, producer_id=pid, producer_epoch=epoch,
                                  base_sequence=seq)


def produce(conn, topic, records, txn_id=None, partition=0):
    r = conn.request(kw.API_PRODUCE, 3, kw.produce_v3_body(topic, partition, records, acks=-1,
                                                           transactional_id=txn_id))
    topics, _ = kw.parse_produce_v3(r)
    [p] = topics[0]["partitions"]
    return p["error_code"], p["base_offset"]


def read_varint(data, pos):
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def batches_of(records):
    """Parses a fetch response's records into batch dicts (uncompressed
    record keys/values are decoded)."""
    out, pos = [], 0
    while pos + 61 <= len(records):
        base, length = struct.unpack(">qi", records[pos:pos + 12])
        batch = records[pos:pos + 12 + length]
        if len(batch) < 12 + length:
            break
        attrs, delta = struct.unpack(">hi", batch[21:27])
        pid, epoch, seq, count = struct.unpack(">qhii", batch[43:61])
        recs, rp = [], 61
        if attrs & 0x07 == 0:
            for _ in range(count):
                _len, rp = read_varint(batch, rp)
                rp += 1  # attributes
                _tsd, rp = read_varint(batch, rp)
                _od, rp = read_varint(batch, rp)
                klen, rp = read_varint(batch, rp)
                key = None if klen < 0 else batch[rp:rp + klen]
                rp += max(klen, 0)
                vlen, rp = read_varint(batch, rp)
                value = None if vlen < 0 else batch[rp:rp + vlen]
                rp += max(vlen, 0)
                nh, rp = read_varint(batch, rp)
                for _h in range(nh):
                    hk, rp = read_varint(batch, rp)
                    rp += hk
                    hv, rp = read_varint(batch, rp)
                    rp += max(hv, 0)
                recs.append((key, value))
        out.append({"base": base, "last": base + delta, "attributes": attrs, "producer_id": pid,
                    "epoch": epoch, "base_sequence": seq, "records": recs})
        pos += 12 + length
    return out


def txn_producer(bootstrap, txn_id, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def read_values(bootstrap, topic, partitions, isolation, expect=None, quiet_for=1.5):
    c = consumer(bootstrap, **{"isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        msgs = consume_n(c, expect, timeout=30) if expect else []
        msgs += drain(c, quiet_for=quiet_for, timeout=30)
        return [m.value() for m in msgs]
    finally:
        c.close()


def wait_until(cond, timeout=20, every=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting for %s" % what)


@pytest.fixture
def topic1(broker):
    return create_topic(admin_client(broker.bootstrap), unique_topic("txn"), partitions=1)


# ------------------------------------------------------------- wire level


def test_find_coordinator_for_transactional_ids(broker):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err, node, host, port = find_coordinator_v1(conn, "some-txn", 1)
    assert (err, node, host, port) == (0, 0, "127.0.0.1", broker.port)


def test_raw_transaction_markers_lso_and_aborted_list(broker, topic1):
    """A transaction by hand: data is invisible to read_committed until the
    end, the abort marker is a control batch (key: version 0, type 0;
    value: version 0, coordinator epoch), and a read_committed fetch lists
    the aborted transaction so clients can drop its records."""
    tid = unique_topic("raw-txn")
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err, pid, epoch = init_pid(conn, tid)
        assert (err, epoch) == (0, 0) and pid >= 0
        # Writing before the partition joined the transaction is refused.
        err, _ = produce(conn, topic1, txn_batch(pid, epoch, 0, [b"early"]), tid)
        assert err == INVALID_TXN_STATE
        assert add_partitions(conn, tid, pid, epoch, topic1, [0]) == {0: 0}
        assert produce(conn, topic1, kw.encode_record_batch(
            [(None, b"plain-0", [], 1)], base_timestamp=1)) == (0, 0)
        assert produce(conn, topic1, txn_batch(pid, epoch, 0, [b"a0", b"a1"]), tid) == (0, 1)
        assert produce(conn, topic1, kw.encode_record_batch(
            [(None, b"plain-1", [], 1)], base_timestamp=1)) == (0, 3)
        # The open transaction holds the LSO at its first offset.
        assert list_offsets_v2(conn, topic1, 0, isolation=0) == (0, 4)
        assert list_offsets_v2(conn, topic1, 0, isolation=1) == (0, 1)
        p = fetch(conn, topic1, 0, 0, isolation=1)
        assert (p["high_watermark"], p["last_stable_offset"]) == (4, 1)
        assert [b["base"] for b in batches_of(p["records"])] == [0]
        assert p["aborted_transactions"] == []
        assert fetch(conn, topic1, 0, 1, isolation=1)["records"] == b""
        producers = describe_producers(conn, topic1, 0)["producers"]
        assert [(s["producer_id"], s["txn_start"]) for s in producers] == [(pid, 1)]

        assert end_txn(conn, tid, pid, epoch, commit=False) == 0
        # A retried abort succeeds; a commit now is an invalid state.
        assert end_txn(conn, tid, pid, epoch, commit=False) == 0
        assert end_txn(conn, tid, pid, epoch, commit=True) == INVALID_TXN_STATE

        assert list_offsets_v2(conn, topic1, 0, isolation=1) == (0, 5)
        p = fetch(conn, topic1, 0, 0, isolation=1)
        assert (p["high_watermark"], p["last_stable_offset"]) == (5, 5)
        assert p["aborted_transactions"] == [(pid, 1)]
        batches = batches_of(p["records"])
        assert [b["base"] for b in batches] == [0, 1, 3, 4]
        marker = batches[3]
        assert marker["attributes"] & 0x30 == 0x30
        assert (marker["producer_id"], marker["epoch"], marker["base_sequence"]) == (pid, 0, -1)
        assert marker["records"] == [(b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00")]
        assert batches[1]["attributes"] & 0x10
        # A fetch from after the aborted transaction does not list it.
        assert fetch(conn, topic1, 0, 5, isolation=1)["aborted_transactions"] == []
        assert describe_producers(conn, topic1, 0)["producers"][0]["txn_start"] == -1

        # Next transaction of the same producer: commit marker, type 1.
        assert add_partitions(conn, tid, pid, epoch, topic1, [0]) == {0: 0}
        assert produce(conn, topic1, txn_batch(pid, epoch, 2, [b"c0"]), tid) == (0, 5)
        assert end_txn(conn, tid, pid, epoch, commit=True) == 0
        assert end_txn(conn, tid, pid, epoch, commit=True) == 0
        p = fetch(conn, topic1, 0, 5, isolation=1)
        batches = batches_of(p["records"])
        assert [b["base"] for b in batches] == [5, 6]
        assert batches[1]["records"] == [(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")]
        assert p["aborted_transactions"] == []


def test_raw_coordinator_errors(broker, topic1):
    tid = unique_topic("raw-err")
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        # Unknown transactional id.
        assert end_txn(conn, tid, 1, 0, True) == INVALID_PRODUCER_ID_MAPPING
        assert add_partitions(conn, tid, 1, 0, topic1, [0]) == {0: INVALID_PRODUCER_ID_MAPPING}
        # Transaction timeout above transaction.max.timeout.ms (900000 by default).
        assert init_pid(conn, tid, timeout_ms=900001)[0] == INVALID_TRANSACTION_TIMEOUT
        assert init_pid(conn, tid, timeout_ms=0)[0] == INVALID_TRANSACTION_TIMEOUT
        err, pid, epoch = init_pid(conn, tid)
        assert err == 0
        # EndTxn without a transaction.
        assert end_txn(conn, tid, pid, epoch, True) == INVALID_TXN_STATE
        # Wrong producer id, stale epoch (PRODUCER_FENCED from v2 on).
        assert end_txn(conn, tid, pid + 1, epoch, True) == INVALID_PRODUCER_ID_MAPPING
        err, pid2, epoch2 = init_pid(conn, tid)
        assert (err, pid2, epoch2) == (0, pid, epoch + 1)
        assert add_partitions(conn, tid, pid, epoch, topic1, [0], version=1) == {
            0: INVALID_PRODUCER_EPOCH}
        assert add_partitions(conn, tid, pid, epoch, topic1, [0], version=2) == {
            0: PRODUCER_FENCED}
        assert end_txn(conn, tid, pid, epoch, True, version=2) == PRODUCER_FENCED
        # Unknown partitions: that one UNKNOWN_TOPIC_OR_PARTITION, the rest not attempted.
        assert add_partitions(conn, tid, pid2, epoch2, topic1, [0, 7]) == {
            0: 55, 7: kw.UNKNOWN_TOPIC_OR_PARTITION}
        # KIP-360 (v3+): re-initialising with the current id and epoch bumps it;
        # an older epoch is fenced.
        err, pid3, epoch3 = init_pid(conn, tid, version=4, producer_id=pid2,
                                     producer_epoch=epoch2)
        assert (err, pid3, epoch3) == (0, pid, epoch2 + 1)
        assert init_pid(conn, tid, version=4, producer_id=pid, producer_epoch=epoch)[0] == \
            PRODUCER_FENCED
        assert init_pid(conn, tid, version=3, producer_id=pid, producer_epoch=epoch)[0] == \
            INVALID_PRODUCER_EPOCH
        # TxnOffsetCommit for a group not added to the transaction.
        assert add_partitions(conn, tid, pid3, epoch3, topic1, [0]) == {0: 0}
        assert txn_offset_commit(conn, tid, "g-" + tid, pid3, epoch3, topic1, 0, 1) == \
            INVALID_TXN_STATE
        assert end_txn(conn, tid, pid3, epoch3, False) == 0


def add_partitions_v4(conn, txns):
    """AddPartitionsToTxn v4 (batched): txns = [(id, pid, epoch, verify_only, topic,
    [partitions])] -> (top-level error, {id: {partition: error}})."""
    body = compact_array([
        kw.compact_string(tid) + kw.i64(pid) + kw.i16(epoch) + kw.i8(1 if verify else 0)
        + compact_array([kw.compact_string(topic) + compact_array([kw.i32(p) for p in parts])
                         + kw.EMPTY_TAGGED_FIELDS])
        + kw.EMPTY_TAGGED_FIELDS
        for tid, pid, epoch, verify, topic, parts in txns]) + kw.EMPTY_TAGGED_FIELDS
    r = conn.request(API_ADD_PARTITIONS_TO_TXN, 4, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()
    err = r.i16()

    def part(rr):
        x = (rr.i32(), rr.i16())
        rr.skip_tagged_fields()
        return x

    def topic(rr):
        x = (rr.compact_string(), rr.compact_array(part))
        rr.skip_tagged_fields()
        return x

    def txn(rr):
        x = (rr.compact_string(), rr.compact_array(topic))
        rr.skip_tagged_fields()
        return x

    results = r.compact_array(txn)
    return err, {tid: {p: e for _t, ps in topics for p, e in ps} for tid, topics in results}


def test_add_partitions_v4_batched_and_verify_only(broker):
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("txn-v4"), partitions=2)
    a, b = unique_topic("v4-a"), unique_topic("v4-b")
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        _, pid_a, ep_a = init_pid(conn, a)
        _, pid_b, ep_b = init_pid(conn, b)
        err, res = add_partitions_v4(conn, [(a, pid_a, ep_a, False, topic, [0]),
                                            (b, pid_b, ep_b, False, topic, [1])])
        assert (err, res) == (0, {a: {0: 0}, b: {1: 0}})
        # verify_only changes nothing and reports membership per partition.
        err, res = add_partitions_v4(conn, [(a, pid_a, ep_a, True, topic, [0, 1]),
                                            (b, pid_b, ep_b + 1, True, topic, [1])])
        assert (err, res) == (0, {a: {0: 0, 1: INVALID_TXN_STATE}, b: {1: PRODUCER_FENCED}})
        assert describe_transactions(conn, [a])[a]["topics"] == {topic: [0]}
        assert end_txn(conn, a, pid_a, ep_a, False) == 0
        assert end_txn(conn, b, pid_b, ep_b, False) == 0


def test_pending_offsets_apply_on_commit_only(broker, topic1):
    """TxnOffsetCommit offsets are invisible until the commit; OffsetFetch
    with require_stable answers UNSTABLE_OFFSET_COMMIT meanwhile; an abort
    drops them."""
    tid = unique_topic("raw-offsets")
    group = unique_topic("txn-group")
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err, pid, epoch = init_pid(conn, tid)
        assert err == 0
        # Abort: the offset never shows.
        assert add_offsets(conn, tid, pid, epoch, group) == 0
        assert txn_offset_commit(conn, tid, group, pid, epoch, topic1, 0, 11) == 0
        assert offset_fetch_v7(conn, group, topic1, 0, True) == (UNSTABLE_OFFSET_COMMIT, -1)
        assert offset_fetch_v7(conn, group, topic1, 0, False) == (0, -1)
        assert end_txn(conn, tid, pid, epoch, False) == 0
        assert offset_fetch_v7(conn, group, topic1, 0, True) == (0, -1)
        # Commit: it does.
        assert add_offsets(conn, tid, pid, epoch, group) == 0
        assert txn_offset_commit(conn, tid, group, pid, epoch, topic1, 0, 7) == 0
        assert txn_offset_commit(conn, tid, group, pid, epoch, topic1, 0, 12) == 0
        assert offset_fetch_v7(conn, group, topic1, 0, True) == (UNSTABLE_OFFSET_COMMIT, -1)
        assert end_txn(conn, tid, pid, epoch, True) == 0
        assert offset_fetch_v7(conn, group, topic1, 0, True) == (0, 12)


def test_list_and_describe_transactions(broker, topic1):
    tid_open, tid_done = unique_topic("lt-open"), unique_topic("lt-done")
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        _, pid_open, epoch_open = init_pid(conn, tid_open, timeout_ms=45000)
        _, pid_done, epoch_done = init_pid(conn, tid_done)
        assert add_partitions(conn, tid_open, pid_open, epoch_open, topic1, [0]) == {0: 0}
        assert add_partitions(conn, tid_done, pid_done, epoch_done, topic1, [0]) == {0: 0}
        assert end_txn(conn, tid_done, pid_done, epoch_done, True) == 0

        err, unknown, states = list_transactions(conn, version=0)
        assert (err, unknown) == (0, [])
        assert states[tid_open] == (pid_open, "Ongoing")
        assert states[tid_done] == (pid_done, "CompleteCommit")
        _, _, ongoing = list_transactions(conn, states=["Ongoing"])
        assert tid_open in ongoing and tid_done not in ongoing
        _, _, by_pid = list_transactions(conn, pids=[pid_done])
        assert set(by_pid) == {tid_done}
        _, unknown, none = list_transactions(conn, states=["Bogus"])
        assert unknown == ["Bogus"] and none == {}
        # v1 duration filter: nothing has been running for an hour.
        _, _, old = list_transactions(conn, duration=3_600_000)
        assert tid_open not in old

        d = describe_transactions(conn, [tid_open, tid_done, "no-such-txn"])
        assert d[tid_open]["state"] == "Ongoing"
        assert d[tid_open]["timeout_ms"] == 45000
        assert d[tid_open]["start_ms"] > 0
        assert (d[tid_open]["producer_id"], d[tid_open]["epoch"]) == (pid_open, epoch_open)
        assert d[tid_open]["topics"] == {topic1: [0]}
        assert d[tid_done]["state"] == "CompleteCommit" and d[tid_done]["topics"] == {}
        assert d["no-such-txn"]["error"] == TRANSACTIONAL_ID_NOT_FOUND
        assert end_txn(conn, tid_open, pid_open, epoch_open, False) == 0


# ------------------------------------------------------------- confluent-kafka


def test_committed_visible_to_both_aborted_only_to_read_uncommitted(broker):
    admin = admin_client(broker.bootstrap)
    topic = create_topic(admin, unique_topic("txn-vis"), partitions=3)
    p = txn_producer(broker.bootstrap, unique_topic("vis"))
    p.init_transactions(30)
    expected_committed = []
    everything = []
    for name, commit in (("c1", True), ("a1", False), ("c2", True), ("a2", False)):
        p.begin_transaction()
        for i in range(30):
            v = b"%s-%d" % (name.encode(), i)
            p.produce(topic, v, partition=i % 3)
            everything.append(v)
            if commit:
                expected_committed.append(v)
        if commit:
            p.commit_transaction(30)
        else:
            p.flush(10)
            p.abort_transaction(30)
    committed = read_values(broker.bootstrap, topic, 3, "read_committed",
                            expect=len(expected_committed))
    uncommitted = read_values(broker.bootstrap, topic, 3, "read_uncommitted",
                              expect=len(everything))
    assert sorted(committed) == sorted(expected_committed)
    assert sorted(uncommitted) == sorted(everything)
    # Per partition, the committed records keep their order.
    for part in range(3):
        mine = [v for v in expected_committed if int(v.split(b"-")[1]) % 3 == part]
        got = [v for v in committed if int(v.split(b"-")[1]) % 3 == part]
        assert got == mine
    # Every partition got one marker per transaction; all are decided: LSO == HW.
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        for part in range(3):
            hw = list_offsets_v2(conn, topic, part, isolation=0)
            assert hw == (0, 40 + 4)
            assert list_offsets_v2(conn, topic, part, isolation=1) == hw


def test_open_transactions_hold_read_committed_at_lso(broker, topic1):
    bootstrap = broker.bootstrap
    pa = txn_producer(bootstrap, unique_topic("lso-a"))
    pb = txn_producer(bootstrap, unique_topic("lso-b"))
    plain = producer(bootstrap)
    pa.init_transactions(30)
    pb.init_transactions(30)
    pa.begin_transaction()
    pb.begin_transaction()
    for i in range(5):
        pa.produce(topic1, b"a-%d" % i)
    pa.flush(10)
    for i in range(5):
        pb.produce(topic1, b"b-%d" % i)
    pb.flush(10)
    for i in range(5):
        plain.produce(topic1, b"p-%d" % i)
    plain.flush(10)

    rc = consumer(bootstrap, **{"isolation.level": "read_committed"})
    rc.assign([TopicPartition(topic1, 0, 0)])
    try:
        with kw.KafkaConn.to(bootstrap) as conn:
            assert list_offsets_v2(conn, topic1, 0, isolation=0) == (0, 15)
            assert list_offsets_v2(conn, topic1, 0, isolation=1) == (0, 0)
        assert drain(rc, quiet_for=1.5, timeout=10) == []
        assert len(read_values(bootstrap, topic1, 1, "read_uncommitted", expect=15)) == 15

        pa.commit_transaction(30)   # a-* committed; b's transaction still holds the LSO
        got = [m.value() for m in consume_n(rc, 5, timeout=20)]
        got += [m.value() for m in drain(rc, quiet_for=1.5, timeout=10)]
        assert got == [b"a-%d" % i for i in range(5)]
        with kw.KafkaConn.to(bootstrap) as conn:
            assert list_offsets_v2(conn, topic1, 0, isolation=1) == (0, 5)

        pb.abort_transaction(30)    # b-* dropped; the plain records become readable
        got = [m.value() for m in consume_n(rc, 5, timeout=20)]
        got += [m.value() for m in drain(rc, quiet_for=1.5, timeout=10)]
        assert got == [b"p-%d" % i for i in range(5)]
        with kw.KafkaConn.to(bootstrap) as conn:
            assert list_offsets_v2(conn, topic1, 0, isolation=1) == (0, 17)
    finally:
        rc.close()


def test_same_transactional_id_fences_the_older_producer(broker, topic1):
    tid = unique_topic("fence")
    old = txn_producer(broker.bootstrap, tid)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic1, b"old-1")
    old.flush(10)

    new = txn_producer(broker.bootstrap, tid)
    new.init_transactions(30)      # aborts the old producer's transaction, bumps the epoch

    with pytest.raises(KafkaException) as info:
        old.produce(topic1, b"old-2")
        old.commit_transaction(15)
    err = info.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err

    new.begin_transaction()
    new.produce(topic1, b"new-1")
    new.commit_transaction(30)
    assert read_values(broker.bootstrap, topic1, 1, "read_committed", expect=1) == [b"new-1"]


def test_transaction_left_open_is_aborted_after_its_timeout(make_broker):
    b = make_broker({"transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
                     "transaction.max.timeout.ms": "60000"})
    topic = create_topic(admin_client(b.bootstrap), unique_topic("txn-timeout"), partitions=1)
    tid = unique_topic("timeout")
    # Above transaction.max.timeout.ms: refused.
    too_long = txn_producer(b.bootstrap, tid + "-long", **{"transaction.timeout.ms": 120000})
    with pytest.raises(KafkaException) as info:
        too_long.init_transactions(15)
    assert info.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT

    p = txn_producer(b.bootstrap, tid, **{"transaction.timeout.ms": 2000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, b"left-open-%d" % i)
    p.flush(10)
    with kw.KafkaConn.to(b.bootstrap) as conn:
        assert list_offsets_v2(conn, topic, 0, isolation=1) == (0, 0)
        # The broker aborts it (ABORT marker at offset 5) and bumps the epoch.
        wait_until(lambda: list_offsets_v2(conn, topic, 0, isolation=1) == (0, 6), timeout=15,
                   what="the timed-out transaction to be aborted")
        d = describe_transactions(conn, [tid])[tid]
        assert d["state"] == "CompleteAbort" and d["epoch"] == 1
        assert fetch(conn, topic, 0, 0, isolation=1)["aborted_transactions"] == [
            (d["producer_id"], 0)]
    assert read_values(b.bootstrap, topic, 1, "read_committed") == []
    # The producer that left it open cannot commit it.
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def _run_worker(bootstrap, src, dst, group, tid, mode, partitions):
    return subprocess.Popen(
        [sys.executable, str(HERE / "txn_transform.py"), bootstrap, src, dst, group, tid, mode,
         str(partitions)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_line(proc, prefix, timeout):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return True, lines
    return False, lines


def test_consume_transform_produce_exactly_once_across_kills(make_broker):
    b = make_broker({"group.initial.rebalance.delay.ms": "0",
                     "group.min.session.timeout.ms": "1000"})
    admin = admin_client(b.bootstrap)
    src = create_topic(admin, unique_topic("ctp-in"), partitions=2)
    dst = create_topic(admin, unique_topic("ctp-out"), partitions=2)
    group, tid = unique_topic("ctp-group"), unique_topic("ctp-txn")
    n = 1000
    p = producer(b.bootstrap, **{"enable.idempotence": True})
    for i in range(n):
        p.produce(src, b"in-%d" % i, key=b"%d" % i, partition=i % 2)
    assert p.flush(30) == 0

    rng = random.Random(int(os.environ.get("RUNNEL_TEST_SEED", "0")) or None)
    mid_stream = 0
    for _ in range(4):
        w = _run_worker(b.bootstrap, src, dst, group, tid, "forever", 2)
        try:
            ok, lines = _wait_for_line(w, b"started", 60)
            assert ok, b"".join(lines).decode(errors="replace")
            # Joining waits for the killed member's session (2 s) to expire;
            # then kill at a random point of the processing.
            working, _ = _wait_for_line(w, b"committed", 10)
            mid_stream += working
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            w.send_signal(signal.SIGKILL)
            w.wait()
    w = _run_worker(b.bootstrap, src, dst, group, tid, "drain", 2)
    out, _ = w.communicate(timeout=120)
    assert w.returncode == 0, out.decode(errors="replace")
    assert mid_stream >= 2, "the workers were killed after the input was processed"

    got = read_values(b.bootstrap, dst, 2, "read_committed", expect=n)
    assert sorted(got) == sorted(b"out-in-%d" % i for i in range(n)), (
        "duplicates: %d, missing: %d" % (len(got) - len(set(got)),
                                         n - len(set(got))))
    # The group's committed offsets are the ends of the input partitions.
    c = consumer(b.bootstrap, **{"group.id": group})
    try:
        committed = c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)
        assert [tp.offset for tp in committed] == [n // 2, n // 2]
    finally:
        c.close()


class TxnLoad(threading.Thread):
    """Runs transactions of 10 records until stopped: every third is aborted
    on purpose. Records which transactions committed (commit returned), which
    were never committed (aborted on purpose, or abandoned before commit),
    and which are uncertain (commit attempted, outcome unknown)."""

    def __init__(self, bootstrap, topic, tid):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.tid = bootstrap, topic, tid
        self.committed, self.never, self.uncertain = [], [], []
        self.stop_flag = threading.Event()
        self.errors = []

    def _new_producer(self):
        while not self.stop_flag.is_set():
            p = txn_producer(self.bootstrap, self.tid, **{"transaction.timeout.ms": 10000})
            try:
                p.init_transactions(10)
                return p
            except KafkaException as e:
                self.errors.append(str(e))
                time.sleep(0.2)
        return None

    def run(self):
        p = self._new_producer()
        n = 0
        while p is not None and not self.stop_flag.is_set():
            n += 1
            commit = n % 3 != 0
            committing = False
            try:
                p.begin_transaction()
                for i in range(10):
                    p.produce(self.topic, b"%d-%d" % (n, i), partition=i % 2)
                if commit:
                    committing = True
                    p.commit_transaction(10)
                    self.committed.append(n)
                else:
                    p.flush(10)
                    p.abort_transaction(10)
                    self.never.append(n)
            except KafkaException as e:
                self.errors.append(str(e))
                (self.uncertain if committing else self.never).append(n)
                try:
                    p.abort_transaction(5)
                except KafkaException:
                    pass
                # Start over with a fresh producer: its InitProducerId aborts
                # whatever the old one left open.
                p = self._new_producer()
        if p is not None:
            p.flush(5)


def test_broker_kill9_during_transactional_load(make_broker):
    b = make_broker()
    topic = create_topic(admin_client(b.bootstrap), unique_topic("txn-crash"), partitions=2)
    load = TxnLoad(b.bootstrap, topic, unique_topic("crash"))
    load.start()
    wait_until(lambda: len(load.committed) >= 20, timeout=60, what="transactions to commit")
    b.kill9()
    b.start()
    before = len(load.committed)
    wait_until(lambda: len(load.committed) >= before + 10, timeout=60,
               what="transactions to commit after the restart")
    load.stop_flag.set()
    load.join(30)
    assert not load.is_alive()

    with kw.KafkaConn.to(b.bootstrap) as conn:
        # Nothing is left open: the LSO reaches the high watermark.
        for part in range(2):
            wait_until(lambda: list_offsets_v2(conn, topic, part, isolation=1)
                       == list_offsets_v2(conn, topic, part, isolation=0), timeout=30,
                       what="LSO == HW on partition %d" % part)
    values = read_values(b.bootstrap, topic, 2, "read_committed",
                         expect=10 * len(load.committed))
    by_txn = {}
    for v in values:
        n, i = v.split(b"-")
        by_txn.setdefault(int(n), []).append(int(i))
    # No committed record lost.
    for n in load.committed:
        assert sorted(by_txn.get(n, [])) == list(range(10)), "committed txn %d: %s" % (
            n, by_txn.get(n))
    # No aborted record visible; uncertain transactions are all or nothing.
    for n in load.never:
        assert n not in by_txn, "aborted txn %d visible to read_committed" % n
    for n in load.uncertain:
        assert sorted(by_txn.get(n, list(range(10)))) == list(range(10))
    assert set(by_txn) <= set(load.committed) | set(load.uncertain)
    assert len(values) == sum(len(v) for v in by_txn.values())


def test_kafka_python_transactional_producer(broker, topic1):
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=unique_topic("kp"))
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic1, b"kp-committed")
        p.commit_transaction()
        p.begin_transaction()
        p.send(topic1, b"kp-aborted")
        p.flush()
        p.abort_transaction()
    finally:
        p.close(timeout=5)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        c.assign([KTP(topic1, 0)])
        c.seek_to_beginning()
        assert [r.value for r in c] == [b"kp-committed"]
    finally:
        c.close()


def test_compaction_drops_aborted_records_and_keeps_committed_values(make_broker):
    """On a compacted topic an aborted value must not replace the committed
    one: the cleaner removes aborted records (and cleans only below the LSO),
    so read_committed consumers keep the latest committed value per key."""
    b = make_broker({"log.cleaner.backoff.ms": "200"})
    topic = create_topic(admin_client(b.bootstrap), unique_topic("txn-compact"), partitions=1,
                         config={"cleanup.policy": "compact",
                                 "min.cleanable.dirty.ratio": "0.01"})
    p = txn_producer(b.bootstrap, unique_topic("compact"))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"old", key=b"k1")
    p.produce(topic, b"a1", key=b"k2")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"c1", key=b"k1")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"x1", key=b"k1")
    p.produce(topic, b"x2", key=b"k2")
    p.flush(10)
    p.abort_transaction(30)
    # An open transaction holds the cleaner back at the LSO: its undecided
    # value must not shadow the committed one.
    p.begin_transaction()
    p.produce(topic, b"open", key=b"k1")
    p.flush(10)

    def compacted():
        values = read_values(b.bootstrap, topic, 1, "read_uncommitted", quiet_for=0.5)
        return b"old" not in values and b"x1" not in values and values
    values = wait_until(compacted, timeout=30, what="compaction")
    assert sorted(values) == [b"a1", b"c1", b"open"], values
    p.abort_transaction(30)
    assert sorted(read_values(b.bootstrap, topic, 1, "read_committed", expect=2)) == [
        b"a1", b"c1"]
