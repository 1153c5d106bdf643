"""Hostile input: claims that outgrow the bytes sent, compression bombs, per-record
errors (KIP-467), connection limits, many idle connections, slow consumers and
idle timeouts.  Real clients (confluent-kafka) and raw sockets against the real
binary.

1. Bounded decoding: an array count, string length, bytes length, compact
   (flexible) count, tagged-field count, record count or record header count
   that claims far more than the frame holds closes the connection (request
   level) or fails the partition with CORRUPT_MESSAGE / INVALID_RECORD (record
   level); the broker keeps serving and its RSS stays small.
2. Bounded decompression: a zstd or gzip batch that inflates past
   max(32 MiB, max.message.bytes) is refused where the broker has to look
   inside it (compacted topics, topics with their own compression.type),
   without the broker's RSS following the bomb.
3. KIP-467: keyless records in a batch for a compacted topic, and CreateTime
   timestamps beyond message.timestamp.after.max.ms, are named one by one in
   Produce v8+ record_errors; librdkafka turns that into INVALID_RECORD /
   INVALID_TIMESTAMP for the culprits and _INVALID_DIFFERENT_RECORD for the rest.
4. max.connections.per.ip (+ overrides) and max.connections, with the
   runnel_connections_rejected_total metric.
5. 10,000 idle connections cost little memory.
6. A consumer that pipelines Fetch requests and never reads its socket neither
   grows the broker's memory nor slows other producers down.
7. connections.max.idle.ms closes idle connections only; queued.max.request.bytes
   below socket.request.max.bytes is refused at start-up.

Brokers with special configs come from `make_broker`; the plain cases share a
module broker.  Topic names are unique, so the file runs under pytest-xdist.
"""

import functools
import gzip
import http.client
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition

import kafka_wire as kw
from ck_helpers import admin_client, assert_healthy, consume_n, consumer, create_topic, producer
from runnel_harness import BrokerError, free_port, unique_topic

pytestmark = pytest.mark.timeout(120)

INVALID_RECORD = 87
INVALID_TIMESTAMP = 32
RECORD_LEVEL_ERRORS = (kw.CORRUPT_MESSAGE, INVALID_RECORD)

MiB = 1024 * 1024
RSS_LIMIT_HOSTILE = 200 * MiB      # after hostile requests / during bombs
RSS_LIMIT_IDLE_10K = 100 * MiB     # with 10,000 idle connections
RSS_LIMIT_SLOW_CONSUMER = 300 * MiB

# ---------------------------------------------------------------------------
# Broker health and memory
# ---------------------------------------------------------------------------


def rss_bytes(broker):
    """VmRSS of the broker process in bytes (None if the process is gone)."""
    try:
        with open("/proc/%d/status" % broker.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples the broker's VmRSS every `interval` seconds in a thread."""

    def __init__(self, broker, interval=0.02):
        self.broker = broker
        self.interval = interval
        self.max = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = rss_bytes(self.broker)
            if v is not None:
                self.max = max(self.max, v)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def assert_rss_below(broker, limit, what=""):
    v = rss_bytes(broker)
    assert v is not None, "broker process gone:\n" + broker.log_tail()
    assert v < limit, "broker VmRSS %.1f MiB >= %.0f MiB %s" % (v / MiB, limit / MiB, what)


@pytest.fixture
def b(healthy_broker):
    """The module broker; after each test it must still serve clients and be small."""
    yield healthy_broker
    assert_rss_below(healthy_broker, RSS_LIMIT_HOSTILE, "after hostile input")


def conn_to(broker, timeout=10.0):
    return kw.KafkaConn.to(broker.bootstrap, timeout=timeout)


def watermarks(broker, topic, partition=0):
    c = consumer(broker.bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def closed_unanswered(broker, request=None, timeout=3.0):
    """Open a connection, send `request` (default ApiVersions v0) and read until
    EOF/reset or timeout.  Returns (closed, bytes received, seconds)."""
    request = request or kw.build_request(kw.API_API_VERSIONS, 0, 1)
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    except OSError:
        return True, b"", time.monotonic() - t0
    data = b""
    try:
        try:
            s.sendall(request)
        except OSError:
            return True, data, time.monotonic() - t0
        deadline = t0 + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, data, time.monotonic() - t0
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return False, data, time.monotonic() - t0
            except OSError:
                return True, data, time.monotonic() - t0
            if not chunk:
                return True, data, time.monotonic() - t0
            data += chunk
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Record batches built by hand
# ---------------------------------------------------------------------------

BATCH_COUNT_OFFSET = kw.BATCH_ATTRS_OFFSET + 36    # attrs(2) lod(4) ts(8+8) pid(8) ep(2) seq(4)
BATCH_LOD_OFFSET = kw.BATCH_ATTRS_OFFSET + 2

CODEC_GZIP = 1
CODEC_ZSTD = 4


def fix_crc(batch):
    b = bytearray(batch)
    b[kw.BATCH_CRC_OFFSET:kw.BATCH_CRC_OFFSET + 4] = kw.u32(kw.crc32c(bytes(b[kw.BATCH_ATTRS_OFFSET:])))
    return bytes(b)


def patch_i32(batch, offset, value):
    b = bytearray(batch)
    b[offset:offset + 4] = kw.i32(value)
    return fix_crc(bytes(b))


def raw_batch(records_section, count, attributes=0, ts=None, last_offset_delta=None):
    """A magic-2 batch around an already-encoded (possibly compressed) records section."""
    ts = int(time.time() * 1000) if ts is None else ts
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    after_crc = (kw.i16(attributes) + kw.i32(lod) + kw.i64(ts) + kw.i64(ts) + kw.i64(-1)
                 + kw.i16(-1) + kw.i32(-1) + kw.i32(count) + records_section)
    after_length = kw.i32(-1) + kw.i8(2) + kw.u32(kw.crc32c(after_crc)) + after_crc
    return kw.i64(0) + kw.i32(len(after_length)) + after_length


def raw_record(body):
    return kw.varint(len(body)) + body


def record_body(key=b"k", value=b"v", header_count=0, key_len=None, value_len=None):
    """Record fields with the option to lie about the key/value length or header count."""
    out = kw.i8(0) + kw.varint(0) + kw.varint(0)
    out += kw.varint(len(key) if key_len is None else key_len) + key
    out += kw.varint(len(value) if value_len is None else value_len) + value
    out += kw.varint(header_count)
    return out


def good_batch(value=b"good", key=b"k"):
    ts = int(time.time() * 1000)
    return kw.encode_record_batch([(key, value, [], ts)], base_timestamp=ts)


def one_zero_record_prefix(key, zeros):
    """The bytes of a record with `key` and a value of `zeros` zero bytes, up to
    (not including) the value.  The record ends with the value and a header
    count of 0 (one zero byte), so the plain records section is
    prefix + (zeros + 1) zero bytes."""
    head = kw.i8(0) + kw.varint(0) + kw.varint(0) + kw.varint(len(key)) + key + kw.varint(zeros)
    body_len = len(head) + zeros + 1
    return kw.varint(body_len) + head


def zstd_rle_frame(prefix, zeros, with_content_size=False, block=128 * 1024):
    """A zstd frame (RFC 8878) holding `prefix` in a raw block followed by `zeros`
    zero bytes in RLE blocks of up to 128 KiB: 4 bytes on the wire per 128 KiB."""
    out = bytearray(b"\x28\xb5\x2f\xfd")               # magic 0xFD2FB528, little endian
    if with_content_size:
        out.append(0xC0)                                # FCS field 8 bytes, not single segment
        out.append(7 << 3)                              # window 2^17 = 128 KiB
        out += struct.pack("<Q", len(prefix) + zeros)
    else:
        out.append(0x00)                                # unknown content size
        out.append(7 << 3)

    def block_header(size, block_type, last):
        return struct.pack("<I", (size << 3) | (block_type << 1) | int(last))[:3]

    if prefix:
        out += block_header(len(prefix), 0, zeros == 0) + prefix    # raw block
    left = zeros
    while left > 0:
        n = min(block, left)
        left -= n
        out += block_header(n, 1, left == 0) + b"\x00"             # RLE block
    return bytes(out)


@functools.lru_cache(maxsize=8)
def gzip_zero_stream(prefix, zeros):
    """gzip member of prefix + `zeros` zero bytes, compressed in 1 MiB steps."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [co.compress(prefix)]
    chunk = b"\x00" * MiB
    left = zeros
    while left > 0:
        n = min(MiB, left)
        out.append(co.compress(chunk[:n]))
        left -= n
    out.append(co.flush())
    return b"".join(out)


def zero_value_batch(codec, value_len, key=b"bomb-key"):
    prefix = one_zero_record_prefix(key, value_len)
    if codec == "gzip":
        section, attrs = gzip_zero_stream(prefix, value_len + 1), CODEC_GZIP
    elif codec == "zstd":
        section, attrs = zstd_rle_frame(prefix, value_len + 1), CODEC_ZSTD
    elif codec == "zstd-fcs":
        section, attrs = zstd_rle_frame(prefix, value_len + 1, with_content_size=True), CODEC_ZSTD
    else:
        raise ValueError(codec)
    return raw_batch(section, 1, attributes=attrs)


def test_hand_built_compressed_sections_are_valid():
    """The encoders above, checked without the broker (and with the zstd CLI if present)."""
    prefix = one_zero_record_prefix(b"k", 1000)
    plain = prefix + b"\x00" * 1001
    assert gzip.decompress(gzip_zero_stream(prefix, 1001)) == plain
    # The record's length varint covers exactly the rest of it.
    r = kw.Reader(plain)
    v = r.uvarint()
    assert (v >> 1) ^ -(v & 1) == len(plain) - r.pos
    for fcs in (False, True):
        frame = zstd_rle_frame(prefix, 1001, with_content_size=fcs)
        assert frame[:4] == b"\x28\xb5\x2f\xfd"
        if shutil.which("zstd"):
            out = subprocess.run(["zstd", "-d", "-c"], input=frame, capture_output=True,
                                 timeout=30)
            assert out.returncode == 0 and out.stdout == plain, out.stderr
    # 1 GiB of zeros costs ~32 KB on the wire.
    assert len(zstd_rle_frame(prefix, 1 << 30)) < 40_000


# ---------------------------------------------------------------------------
# Produce v3 / v8 on raw sockets
# ---------------------------------------------------------------------------


def produce_v3(conn, topic, partition, records, acks=1, timeout=30):
    return kw.produce_v3(conn, topic, partition, records, acks=acks, timeout=timeout)


def parse_produce_v8(r):
    def record_error(rr):
        return {"batch_index": rr.i32(), "message": rr.string()}

    def partition(rr):
        return {"partition": rr.i32(), "error_code": rr.i16(), "base_offset": rr.i64(),
                "log_append_time": rr.i64(), "log_start_offset": rr.i64(),
                "record_errors": rr.array(record_error), "error_message": rr.string()}

    topics = r.array(lambda rr: {"name": rr.string(), "partitions": rr.array(partition)})
    throttle = r.i32()
    return topics, throttle


def produce_v8(conn, topic, partition, records, acks=-1):
    r = conn.request(kw.API_PRODUCE, 8, kw.produce_v3_body(topic, partition, records, acks=acks))
    topics, _throttle = parse_produce_v8(r)
    assert r.remaining() == 0, "trailing bytes in Produce v8 response"
    [t] = topics
    [p] = t["partitions"]
    assert (t["name"], p["partition"]) == (topic, partition)
    return p


def produce_v10(conn, topic, partition, records, acks=-1):
    """Produce v10 (flexible, what librdkafka 2.x sends): -> partition dict."""
    body = (kw.uvarint(0) + kw.i16(acks) + kw.i32(10000)
            + kw.uvarint(2) + kw.compact_string(topic)
            + kw.uvarint(2) + kw.i32(partition) + kw.uvarint(len(records) + 1) + records
            + kw.EMPTY_TAGGED_FIELDS + kw.EMPTY_TAGGED_FIELDS + kw.EMPTY_TAGGED_FIELDS)
    r = conn.request(kw.API_PRODUCE, 10, body, flexible=True)
    r.skip_tagged_fields()

    def record_error(rr):
        e = {"batch_index": rr.i32(), "message": rr.compact_string()}
        rr.skip_tagged_fields()
        return e

    def part(rr):
        d = {"partition": rr.i32(), "error_code": rr.i16(), "base_offset": rr.i64(),
             "log_append_time": rr.i64(), "log_start_offset": rr.i64(),
             "record_errors": rr.compact_array(record_error), "error_message": rr.compact_string()}
        rr.skip_tagged_fields()
        return d

    def top(rr):
        d = {"name": rr.compact_string(), "partitions": rr.compact_array(part)}
        rr.skip_tagged_fields()
        return d

    topics = r.compact_array(top)
    r.i32()                     # throttle
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in Produce v10 response"
    [t] = topics
    [p] = t["partitions"]
    assert (t["name"], p["partition"]) == (topic, partition)
    return p


# ---------------------------------------------------------------------------
# 1. Bounded decoding: request level (connection closed)
# ---------------------------------------------------------------------------

BIG = 0x7FFFFFFF


def _frame_with_header(api_key, version, corr, client_id_bytes, rest):
    return kw.frame(kw.i16(api_key) + kw.i16(version) + kw.i32(corr) + client_id_bytes + rest)


def _produce_v3_prefix():
    return kw.nullable_string(None) + kw.i16(1) + kw.i32(10000)


def _list_offsets_v6(topics_count_bytes, rest):
    # replica_id, isolation_level, topics (compact array, non-nullable)
    return kw.i32(-1) + kw.i8(0) + topics_count_bytes + rest


HOSTILE_REQUESTS = {
    # --- array counts (int32)
    "metadata-v1-topic-count": lambda c: kw.build_request(
        kw.API_METADATA, 1, c, kw.i32(BIG) + kw.string("a")),
    "list-offsets-v1-topic-count": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 1, c, kw.i32(-1) + kw.i32(BIG) + kw.string("a")),
    "list-offsets-v1-partition-count": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 1, c,
        kw.i32(-1) + kw.i32(1) + kw.string("a") + kw.i32(BIG) + kw.i32(0) + kw.i64(-1)),
    "produce-v3-topic-count": lambda c: kw.build_request(
        kw.API_PRODUCE, 3, c, _produce_v3_prefix() + kw.i32(BIG) + kw.string("a")),
    "produce-v3-partition-count": lambda c: kw.build_request(
        kw.API_PRODUCE, 3, c,
        _produce_v3_prefix() + kw.i32(1) + kw.string("a") + kw.i32(BIG) + kw.i32(0)),
    "fetch-v4-topic-count": lambda c: kw.build_request(
        kw.API_FETCH, 4, c,
        kw.i32(-1) + kw.i32(500) + kw.i32(1) + kw.i32(MiB) + kw.i8(0) + kw.i32(BIG)
        + kw.string("a")),
    # --- string lengths (int16) and bytes lengths (int32)
    "client-id-length": lambda c: _frame_with_header(
        kw.API_METADATA, 1, c, kw.i16(0x7FFF) + b"abc", b""),
    "metadata-v1-topic-name-length": lambda c: kw.build_request(
        kw.API_METADATA, 1, c, kw.i32(1) + kw.i16(0x7FFF) + b"ab"),
    "produce-v3-transactional-id-length": lambda c: kw.build_request(
        kw.API_PRODUCE, 3, c, kw.i16(0x7FFF) + b"tx"),
    "produce-v3-records-bytes-length": lambda c: kw.build_request(
        kw.API_PRODUCE, 3, c,
        _produce_v3_prefix() + kw.i32(1) + kw.string("a") + kw.i32(1) + kw.i32(0)
        + kw.i32(BIG) + b"\x00" * 16),
    # --- flexible versions: compact counts / lengths as unsigned varints
    "list-offsets-v6-compact-topic-count-ffffffff": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 6, c,
        _list_offsets_v6(kw.uvarint(0xFFFFFFFF), kw.compact_string("a") + b"\x00\x00"),
        flexible=True),
    "list-offsets-v6-compact-topic-count-7fffffff": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 6, c,
        _list_offsets_v6(kw.uvarint(0x7FFFFFFF), kw.compact_string("a") + b"\x00\x00"),
        flexible=True),
    "list-offsets-v6-compact-partition-count": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 6, c,
        _list_offsets_v6(kw.uvarint(2), kw.compact_string("a") + kw.uvarint(0xFFFFFFFF)
                         + kw.i32(0)), flexible=True),
    "list-offsets-v6-compact-name-length": lambda c: kw.build_request(
        kw.API_LIST_OFFSETS, 6, c,
        _list_offsets_v6(kw.uvarint(2), kw.uvarint(0xFFFFFFFF) + b"ab"), flexible=True),
    "metadata-v9-compact-topic-count-7fffffff": lambda c: kw.build_request(
        kw.API_METADATA, 9, c,
        kw.uvarint(0x7FFFFFFF) + kw.compact_string("a") + b"\x00" + b"\x01\x00\x00\x00",
        flexible=True),
    "metadata-v9-overlong-uvarint": lambda c: kw.build_request(
        kw.API_METADATA, 9, c, b"\xff" * 10 + b"\x01" + b"\x01\x00\x00\x00", flexible=True),
    "api-versions-v3-software-name-length": lambda c: kw.build_request(
        kw.API_API_VERSIONS, 3, c, kw.uvarint(0xFFFFFFFF) + b"ab", flexible=True),
    "header-v2-tagged-field-count": lambda c: _frame_with_header(
        kw.API_METADATA, 9, c, kw.nullable_string("c"), kw.uvarint(0x7FFFFFFF) + b"\x00\x00"),
    "header-v2-tagged-field-size": lambda c: _frame_with_header(
        kw.API_METADATA, 9, c, kw.nullable_string("c"),
        kw.uvarint(1) + kw.uvarint(0) + kw.uvarint(0x7FFFFFFF) + b"ab"),
}


def test_flexible_controls_are_answered(b):
    """The well-formed versions of the flexible requests above are answered,
    so a closed connection below is about the hostile field only."""
    name = unique_topic("lo6")
    with conn_to(b) as conn:
        body = _list_offsets_v6(kw.uvarint(2), kw.compact_string(name)
                                + kw.uvarint(2) + kw.i32(0) + kw.i32(-1) + kw.i64(-1) + b"\x00"
                                + b"\x00") + b"\x00"
        r = conn.request(kw.API_LIST_OFFSETS, 6, body, flexible=True)
        r.skip_tagged_fields()
        assert r.i32() == 0                       # throttle
        names = r.compact_array(lambda rr: rr.compact_string())  # 1 topic: read its name only
        assert names == [name], names
    with conn_to(b) as conn:
        body = kw.uvarint(1) + b"\x01\x00\x00\x00"     # zero topics, flags, tags
        r = conn.request(kw.API_METADATA, 9, body, flexible=True)
        r.skip_tagged_fields()
        assert r.i32() == 0
    with conn_to(b) as conn:
        err, apis, _ = kw.parse_api_versions_v3(
            conn.request(kw.API_API_VERSIONS, 3, kw.api_versions_v3_body(), flexible=True))
        assert err == 0 and apis[kw.API_METADATA][1] >= 9 and apis[kw.API_LIST_OFFSETS][1] >= 6


@pytest.mark.parametrize("case", sorted(HOSTILE_REQUESTS))
def test_oversized_claim_closes_connection(b, case):
    rss_before = rss_bytes(b)
    with conn_to(b) as conn:
        conn.send_raw(HOSTILE_REQUESTS[case](77))
        t0 = time.monotonic()
        closed = conn.wait_closed(10)
        took = time.monotonic() - t0
    assert b.is_running(), "broker died on %s:\n%s" % (case, b.log_tail())
    assert closed, "broker kept the connection open after %s" % case
    assert took < 5, "closing took %.1fs" % took
    rss_after = rss_bytes(b)
    assert rss_after < RSS_LIMIT_HOSTILE, "RSS %.1f MiB after %s (before %.1f MiB)" % (
        rss_after / MiB, case, rss_before / MiB)


# ---------------------------------------------------------------------------
# 1. Bounded decoding: record batches (partition error)
# ---------------------------------------------------------------------------


def _claim_batch(case):
    ts = int(time.time() * 1000)
    if case == "record-count":
        batch = kw.encode_record_batch([(b"k", b"v", [], ts)], base_timestamp=ts)
        batch = patch_i32(batch, BATCH_COUNT_OFFSET, BIG)
        return patch_i32(batch, BATCH_LOD_OFFSET, BIG - 1)      # a self-consistent claim
    if case == "record-count-only":
        batch = kw.encode_record_batch([(b"k", b"v", [], ts)], base_timestamp=ts)
        return patch_i32(batch, BATCH_COUNT_OFFSET, BIG)
    if case == "header-count":
        return raw_batch(raw_record(record_body(header_count=BIG)), 1, ts=ts)
    if case == "header-count-negative":
        return raw_batch(raw_record(record_body(header_count=-2)), 1, ts=ts)
    if case == "header-key-length":
        body = record_body(header_count=1) + kw.varint(BIG) + b"h"
        return raw_batch(raw_record(body), 1, ts=ts)
    if case == "key-length":
        return raw_batch(raw_record(record_body(key_len=BIG)), 1, ts=ts)
    if case == "value-length":
        return raw_batch(raw_record(record_body(value_len=BIG)), 1, ts=ts)
    if case == "record-length":
        body = record_body()
        return raw_batch(kw.varint(BIG) + body, 1, ts=ts)
    raise ValueError(case)


CLAIM_CASES = ["record-count", "record-count-only", "header-count", "header-count-negative",
               "header-key-length", "key-length", "value-length", "record-length"]


@pytest.mark.parametrize("policy", ["compact", "delete"])
@pytest.mark.parametrize("case", CLAIM_CASES)
def test_record_batch_claims_rejected(b, case, policy):
    """Produce v3 of a batch whose records claim more than the batch holds.
    `compact` is the contract case (the broker must walk the records for keys);
    `delete` checks that the plain path validates too, as Kafka's LogValidator does."""
    topic = create_topic(admin_client(b.bootstrap), unique_topic("claim"), partitions=1,
                         config={"cleanup.policy": policy})
    with conn_to(b) as conn:
        p = produce_v3(conn, topic, 0, _claim_batch(case))
        assert p["error_code"] in RECORD_LEVEL_ERRORS, (case, p)
        ok = produce_v3(conn, topic, 0, good_batch(b"after-" + case.encode()))
        assert ok["error_code"] == 0 and ok["base_offset"] == 0, ok
    assert watermarks(b, topic) == (0, 1)
    assert_rss_below(b, RSS_LIMIT_HOSTILE, "after record claim " + case)


# ---------------------------------------------------------------------------
# 2. Bounded decompression
# ---------------------------------------------------------------------------

TOPIC_KINDS = {"compact": {"cleanup.policy": "compact"}, "lz4": {"compression.type": "lz4"}}
BOMB_SIZES = {"gzip": 256 * MiB, "zstd": 1024 * MiB, "zstd-fcs": 1024 * MiB}


@pytest.mark.parametrize("kind", sorted(TOPIC_KINDS))
@pytest.mark.parametrize("codec", ["gzip", "zstd", "zstd-fcs"])
def test_compressed_control_batch_accepted(b, codec, kind):
    """The same construction with a 256 KiB value is accepted and reads back:
    the bombs below are refused for their size, not their encoding."""
    topic = create_topic(admin_client(b.bootstrap), unique_topic("ctl"), partitions=1,
                         config=TOPIC_KINDS[kind])
    value_len = 256 * 1024
    with conn_to(b) as conn:
        p = produce_v3(conn, topic, 0, zero_value_batch(codec, value_len))
        assert p["error_code"] == 0, p
    c = consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        [m] = consume_n(c, 1, timeout=15)
        assert m.key() == b"bomb-key" and m.value() == b"\x00" * value_len
    finally:
        c.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(TOPIC_KINDS))
@pytest.mark.parametrize("codec", ["gzip", "zstd", "zstd-fcs"])
def test_decompression_bomb_refused(make_broker, codec, kind):
    broker = make_broker()
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("bomb"), partitions=1,
                         config=TOPIC_KINDS[kind])
    bomb = zero_value_batch(codec, BOMB_SIZES[codec])
    assert len(bomb) < 1_000_000, "bomb is %d bytes on the wire" % len(bomb)
    errors = []
    with RssSampler(broker) as rss:
        with conn_to(broker, timeout=60) as conn:
            for _ in range(3):
                t0 = time.monotonic()
                p = produce_v3(conn, topic, 0, bomb, timeout=60)
                errors.append((p["error_code"], round(time.monotonic() - t0, 2)))
        time.sleep(0.2)
    assert broker.is_running(), broker.log_tail()
    assert all(e in RECORD_LEVEL_ERRORS for e, _ in errors), \
        "%s bomb (%d MiB inflated) to %s topic: (error, seconds) %s" % (
            codec, BOMB_SIZES[codec] // MiB, kind, errors)
    assert rss.samples > 5
    assert rss.max < RSS_LIMIT_HOSTILE, "broker VmRSS peaked at %.1f MiB (%d samples)" % (
        rss.max / MiB, rss.samples)
    assert watermarks(broker, topic) == (0, 0)
    assert_healthy(broker)


# ---------------------------------------------------------------------------
# 3. KIP-467 per-record errors
# ---------------------------------------------------------------------------


def _err_code(err):
    return None if err is None else err.code()


@pytest.mark.parametrize("version", [8, 10])
def test_raw_produce_record_errors_for_keyless_records(b, version):
    topic = create_topic(admin_client(b.bootstrap), unique_topic("kip467raw"), partitions=1,
                         config={"cleanup.policy": "compact"})
    ts = int(time.time() * 1000)
    records = [(None if i % 10 == 0 else b"key-%d" % i, b"v%d" % i, [], ts) for i in range(100)]
    send = produce_v8 if version == 8 else produce_v10
    with conn_to(b) as conn:
        p = send(conn, topic, 0, kw.encode_record_batch(records, base_timestamp=ts))
    assert p["error_code"] == INVALID_RECORD, p
    assert p["base_offset"] == -1, p
    assert [e["batch_index"] for e in p["record_errors"]] == list(range(0, 100, 10)), p
    assert watermarks(b, topic) == (0, 0)


@pytest.mark.parametrize("version", [8, 10])
def test_raw_produce_record_errors_for_future_timestamps(b, version):
    topic = create_topic(admin_client(b.bootstrap), unique_topic("tsraw"), partitions=1)
    now = int(time.time() * 1000)
    later = now + 2 * 3600 * 1000
    send = produce_v8 if version == 8 else produce_v10
    with conn_to(b) as conn:
        for culprits in ([3, 7], [7]):
            records = [(b"k", b"v%d" % i, [], later if i in culprits else now) for i in range(10)]
            p = send(conn, topic, 0, kw.encode_record_batch(records, base_timestamp=now))
            assert p["error_code"] == INVALID_TIMESTAMP, p
            assert [e["batch_index"] for e in p["record_errors"]] == culprits, p
        # 30 minutes ahead is within the default message.timestamp.after.max.ms (1 h).
        ok = send(conn, topic, 0, kw.encode_record_batch(
            [(b"k", b"soon", [], now + 1800 * 1000)], base_timestamp=now + 1800 * 1000))
        assert ok["error_code"] == 0 and not ok["record_errors"], ok
    assert watermarks(b, topic) == (0, 1)


def _kip467_producer(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 100, "batch.num.messages": 1000,
            "acks": "all", "enable.idempotence": False, "message.timeout.ms": 30000}
    conf.update(extra)
    return Producer(conf)


def test_librdkafka_keyless_records_in_one_batch(b):
    topic = create_topic(admin_client(b.bootstrap), unique_topic("kip467"), partitions=1,
                         config={"cleanup.policy": "compact"})
    reports = {}
    p = _kip467_producer(b.bootstrap)
    for i in range(100):
        key = None if i % 10 == 0 else b"key-%d" % i
        p.produce(topic, value=b"v%d" % i, key=key, partition=0,
                  on_delivery=functools.partial(lambda i, err, msg: reports.__setitem__(i, err), i))
    assert p.flush(30) == 0
    assert len(reports) == 100
    codes = {i: _err_code(e) for i, e in reports.items()}
    invalid = sorted(i for i, c in codes.items() if c == KafkaError.INVALID_RECORD)
    different = sorted(i for i, c in codes.items() if c == KafkaError._INVALID_DIFFERENT_RECORD)
    assert invalid == list(range(0, 100, 10)), codes
    assert len(different) == 90, codes
    assert watermarks(b, topic) == (0, 0)

    # Single-record batches: the 90 keyed records land, the 10 keyless fail alone.
    reports.clear()
    p = _kip467_producer(b.bootstrap, **{"linger.ms": 0, "batch.num.messages": 1})
    for i in range(100):
        key = None if i % 10 == 0 else b"key-%d" % i
        p.produce(topic, value=b"v%d" % i, key=key, partition=0,
                  on_delivery=functools.partial(lambda i, err, msg: reports.__setitem__(i, err), i))
        p.poll(0)
    assert p.flush(30) == 0
    codes = {i: _err_code(e) for i, e in reports.items()}
    assert sorted(i for i, c in codes.items() if c == KafkaError.INVALID_RECORD) == \
        list(range(0, 100, 10)), codes
    assert sorted(i for i, c in codes.items() if c is None) == \
        [i for i in range(100) if i % 10], codes
    c = consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = consume_n(c, 90, timeout=20)
        assert [m.value() for m in got] == [b"v%d" % i for i in range(100) if i % 10]
    finally:
        c.close()


def test_librdkafka_future_timestamps(b):
    """Kafka answers INVALID_TIMESTAMP with record_errors naming the records.
    librdkafka reports INVALID_RECORD on each culprit when there are several
    (rd_kafka_msgbatch_handle_Produce_result_record_errors) and
    _INVALID_DIFFERENT_RECORD on the innocent records of the batch; a lone
    culprit gets the partition error, INVALID_TIMESTAMP."""
    topic = create_topic(admin_client(b.bootstrap), unique_topic("ts"), partitions=1)
    now = int(time.time() * 1000)
    later = now + 2 * 3600 * 1000

    def run(future_indices, n=20):
        reports = {}
        p = _kip467_producer(b.bootstrap)
        for i in range(n):
            p.produce(topic, value=b"v%d" % i, key=b"k", partition=0,
                      timestamp=later if i in future_indices else now,
                      on_delivery=functools.partial(
                          lambda i, err, msg: reports.__setitem__(i, err), i))
        assert p.flush(30) == 0
        return {i: _err_code(e) for i, e in reports.items()}

    # One culprit: the broker names it alone (record_errors [7], checked on the
    # wire above).  librdkafka 2.16 then reports the partition error,
    # INVALID_TIMESTAMP, on the culprit; on the others it reports
    # _INVALID_DIFFERENT_RECORD or, as observed with 2.16.0, INVALID_TIMESTAMP
    # too.  Either way every record of the rejected batch fails.
    one = run({7})
    assert one[7] == KafkaError.INVALID_TIMESTAMP, one
    assert all(c in (KafkaError._INVALID_DIFFERENT_RECORD, KafkaError.INVALID_TIMESTAMP)
               for i, c in one.items() if i != 7), one
    assert len(one) == 20

    two = run({5, 15})
    assert two[5] == KafkaError.INVALID_RECORD and two[15] == KafkaError.INVALID_RECORD, two
    assert all(c == KafkaError._INVALID_DIFFERENT_RECORD for i, c in two.items()
               if i not in (5, 15)), two
    assert watermarks(b, topic) == (0, 0)

    ok = run(set())
    assert all(c is None for c in ok.values()) and len(ok) == 20, ok
    assert watermarks(b, topic) == (0, 20)


# ---------------------------------------------------------------------------
# 4. Connection limits
# ---------------------------------------------------------------------------


def http_get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def metrics_broker(make_broker, overrides):
    port = free_port()
    ov = {"metrics.listener": "http://127.0.0.1:%d" % port}
    ov.update(overrides)
    broker = make_broker(ov)
    broker.metrics_port = port
    deadline = time.monotonic() + 15
    while True:
        try:
            if http_get(port, "/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "metrics listener not ready:\n" + broker.log_tail()
        time.sleep(0.05)
    time.sleep(0.2)     # let the start-up probe connection be released
    return broker


_REJECTED = re.compile(r'^runnel_connections_rejected_total\{reason="([^"]*)"\}\s+(\S+)', re.M)


def rejected_counts(broker):
    status, body = http_get(broker.metrics_port, "/metrics")
    assert status == 200
    return {reason: float(v) for reason, v in _REJECTED.findall(body.decode())}


def open_answering(broker, n):
    conns = []
    try:
        for i in range(n):
            conn = conn_to(broker, timeout=10)
            conns.append(conn)
            err, _ = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0, timeout=5))
            assert err == 0
    except Exception:
        for c in conns:
            c.close()
        raise
    return conns


def _check_limit(broker, allowed, reason):
    before = rejected_counts(broker)
    conns = open_answering(broker, allowed)
    try:
        closed, data, took = closed_unanswered(broker, timeout=3)
        assert closed and data == b"", \
            "connection %d: closed=%s after %.1fs, got %r" % (allowed + 1, closed, took, data[:50])
        assert took < 2.5, took
        for c in conns:
            err, _ = kw.parse_api_versions_v0(c.request(kw.API_API_VERSIONS, 0, timeout=5))
            assert err == 0
        after = rejected_counts(broker)
        if reason is not None:
            assert after.get(reason, 0) - before.get(reason, 0) == 1, (before, after)
        else:
            assert sum(after.values()) - sum(before.values()) == 1, (before, after)
        # Closing one frees its slot.
        conns.pop().close()
        deadline = time.monotonic() + 5
        while True:
            try:
                with conn_to(broker, timeout=3) as c:
                    err, _ = kw.parse_api_versions_v0(c.request(kw.API_API_VERSIONS, 0, timeout=3))
                    assert err == 0
                    break
            except (kw.ConnectionClosed, socket.timeout, OSError):
                assert time.monotonic() < deadline, "slot of a closed connection not released"
                time.sleep(0.1)
        return after
    finally:
        for c in conns:
            c.close()


def test_max_connections_per_ip(make_broker):
    broker = metrics_broker(make_broker, {"max.connections.per.ip": "100"})
    _check_limit(broker, 100, "max_connections_per_ip")
    time.sleep(0.3)
    assert_healthy(broker)


def test_max_connections_per_ip_overrides(make_broker):
    broker = metrics_broker(make_broker, {"max.connections.per.ip.overrides": "127.0.0.1:5"})
    _check_limit(broker, 5, "max_connections_per_ip")
    time.sleep(0.3)
    assert_healthy(broker)


def test_max_connections(make_broker):
    broker = metrics_broker(make_broker, {"max.connections": "20"})
    after = _check_limit(broker, 20, None)
    assert "max_connections_per_ip" not in after or after["max_connections_per_ip"] == 0, after
    time.sleep(0.3)
    assert_healthy(broker)


# ---------------------------------------------------------------------------
# 5. 10,000 idle connections
# ---------------------------------------------------------------------------

IDLE_CONNECTIONS = 10_000


def socket_fds(broker):
    fd_dir = "/proc/%d/fd" % broker.proc.pid
    n = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.mark.timeout(150)
def test_ten_thousand_idle_connections(make_broker):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_500:
        pytest.skip("RLIMIT_NOFILE hard limit %d < 10500" % hard)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, 65536)), hard))
    socks = []
    try:
        broker = make_broker()      # started after the raise: inherits the limit
        with open("/proc/%d/limits" % broker.proc.pid) as f:
            limits = f.read()
        deadline = time.monotonic() + 60
        for _ in range(IDLE_CONNECTIONS):
            assert time.monotonic() < deadline, "opened only %d connections in 60 s" % len(socks)
            socks.append(socket.create_connection(("127.0.0.1", broker.port), timeout=10))
        # Wait until the broker holds them (socket fds in /proc: the listener and
        # the accepted connections), not the listen backlog.
        deadline = time.monotonic() + 30
        while socket_fds(broker) < IDLE_CONNECTIONS + 1:
            assert broker.is_running(), broker.log_tail()
            assert time.monotonic() < deadline, "broker holds %d sockets (limits:\n%s)" % (
                socket_fds(broker), limits)
            time.sleep(0.2)
        time.sleep(0.5)
        rss = rss_bytes(broker)
        assert rss < RSS_LIMIT_IDLE_10K, "broker VmRSS %.1f MiB with %d idle connections" % (
            rss / MiB, IDLE_CONNECTIONS)
        assert_healthy(broker)
        # The idle connections are still open (none was dropped to make room).
        dropped = 0
        for s in socks[:: IDLE_CONNECTIONS // 100]:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    dropped += 1
            except BlockingIOError:
                pass
            except OSError:
                dropped += 1
        assert dropped == 0, "%d of 100 sampled idle connections were closed" % dropped
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------
# 6. Slow consumer
# ---------------------------------------------------------------------------

SLOW_PRODUCE_SECONDS = 20
MAX_UNACKED = 100          # "full speed" for a latency-sensitive producer


@pytest.mark.timeout(120)
def test_slow_consumer_does_not_hurt_others(make_broker):
    broker = make_broker()
    admin = admin_client(broker.bootstrap)
    fill = create_topic(admin, unique_topic("fill"), partitions=1)
    lat = create_topic(admin, unique_topic("lat"), partitions=1)

    # ~20 MB in `fill`, so each Fetch answer below is ~20 MB.
    value = os.urandom(1024)
    p = producer(broker.bootstrap, **{"linger.ms": 20})
    for i in range(20_000):
        while True:
            try:
                p.produce(fill, value, partition=0)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    # Two connections that pipeline 300 Fetch requests (50 MB each) and never read.
    fetch = lambda corr: kw.build_request(  # noqa: E731
        kw.API_FETCH, 4, corr, kw.fetch_v4_body(fill, 0, 0, max_wait_ms=0, max_bytes=50 * MiB,
                                                 partition_max_bytes=50 * MiB))
    pipeline = b"".join(fetch(c) for c in range(1, 301))
    slow = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", broker.port))
        s.setblocking(False)
        slow.append([s, pipeline])

    def push():
        for entry in slow:
            s, rest = entry
            while rest:
                try:
                    n = s.send(rest)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    rest = b""
                    break
                rest = rest[n:]
            entry[1] = rest

    latencies = []
    errors = []
    pending = [0]
    value = b"x" * 1024

    def on_delivery(t0, err, msg):
        pending[0] -= 1
        if err is None:
            latencies.append(time.monotonic() - t0)
        else:
            errors.append(err)

    lp = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": 1,
                   "enable.idempotence": False})
    lp.list_topics(lat, timeout=10)
    try:
        with RssSampler(broker) as rss:
            push()
            time.sleep(1.0)             # the broker is busy with the slow readers
            end = time.monotonic() + SLOW_PRODUCE_SECONDS
            last_push = 0.0
            while time.monotonic() < end:
                if pending[0] >= MAX_UNACKED:
                    lp.poll(0.001)
                    continue
                pending[0] += 1
                lp.produce(lat, value, partition=0,
                           on_delivery=functools.partial(on_delivery, time.monotonic()))
                lp.poll(0)
                if time.monotonic() - last_push > 0.1:
                    push()
                    last_push = time.monotonic()
            assert lp.flush(30) == 0
        assert broker.is_running(), broker.log_tail()
        assert not errors, errors[:5]
        assert len(latencies) > 1000, "only %d records delivered in %ds" % (
            len(latencies), SLOW_PRODUCE_SECONDS)
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[int(len(latencies) * 0.99)]
        unsent = [len(rest) for _, rest in slow]
        summary = ("%d records, p50 %.1f ms, p99 %.1f ms, max %.1f ms; broker VmRSS max %.1f MiB "
                   "(%d samples); Fetch bytes not yet accepted per slow socket %s" % (
                       len(latencies), p50 * 1000, p99 * 1000, latencies[-1] * 1000,
                       rss.max / MiB, rss.samples, unsent))
        print(summary)
        assert rss.max < RSS_LIMIT_SLOW_CONSUMER, summary
        assert p99 < 0.050, summary
    finally:
        for s, _ in slow:
            s.close()
    assert_healthy(broker)


# ---------------------------------------------------------------------------
# 7. connections.max.idle.ms and queued.max.request.bytes
# ---------------------------------------------------------------------------


def test_idle_connection_closed_active_kept(make_broker):
    broker = make_broker({"connections.max.idle.ms": "2000"})
    # A connection that never sends anything is closed ~2 s after it opened.
    fresh = conn_to(broker, timeout=10)
    t0 = time.monotonic()
    try:
        assert fresh.wait_closed(10), "idle connection not closed within 10 s"
        took = time.monotonic() - t0
        assert 1.5 <= took <= 6.0, "idle connection closed after %.2fs (idle ms 2000)" % took
    finally:
        fresh.close()

    idle = conn_to(broker, timeout=10)
    active = conn_to(broker, timeout=10)
    try:
        # Active: a request every 0.5 s for 5 s, all answered on the same connection.
        t_end = time.monotonic() + 5
        last_request = time.monotonic()
        while time.monotonic() < t_end:
            err, _ = kw.parse_api_versions_v0(active.request(kw.API_API_VERSIONS, 0, timeout=5))
            last_request = time.monotonic()
            assert err == 0
            time.sleep(0.5)
        # The idle one was closed meanwhile.
        assert idle.wait_closed(1), "idle connection still open after 5 s"
        # The active one, once idle, goes the same way ~2 s after its last request.
        assert active.wait_closed(10), "connection idle for 10 s not closed"
        took = time.monotonic() - last_request
        assert 1.5 <= took <= 6.5, "closed %.2fs after its last request" % took
    finally:
        idle.close()
        active.close()
    # A client that keeps working sees no errors: produce every 0.5 s for 4 s.
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("idle"), partitions=1)
    errs = []
    for i in range(8):
        p.produce(topic, b"x%d" % i, partition=0,
                  on_delivery=lambda err, msg: err and errs.append(err))
        p.flush(10)
        time.sleep(0.5)
    assert not errs, errs
    assert watermarks(broker, topic) == (0, 8)


def test_queued_max_request_bytes_below_request_max_refused(make_broker):
    with pytest.raises(BrokerError) as ei:
        make_broker({"queued.max.request.bytes": "1000"})
    msg = str(ei.value)
    assert "exited with code" in msg, msg
    assert "queued.max.request.bytes" in msg, msg


@pytest.mark.parametrize("overrides", [
    {"queued.max.request.bytes": "-1"},
    {"socket.request.max.bytes": "4096", "queued.max.request.bytes": "4096"},
], ids=["unbounded", "equal"])
def test_queued_max_request_bytes_accepted(make_broker, overrides):
    broker = make_broker(overrides)
    with conn_to(broker) as conn:
        err, _ = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0))
        assert err == 0


# ---------------------------------------------------------------- partition counts


def test_huge_partition_counts_are_refused(b):
    """One small request must not make the broker build billions of partitions:
    more than 10,000 new partitions in one request is INVALID_PARTITIONS."""
    from confluent_kafka.admin import NewPartitions, NewTopic
    admin = admin_client(b.bootstrap)
    # Raw CreateTopics v2 asking for 2^31-1 partitions (librdkafka refuses to send it).
    name = unique_topic("hugeparts")
    body = (kw.array([kw.string(name) + kw.i32(2**31 - 1) + kw.i16(1) + kw.array([])
                      + kw.array([])]) + kw.i32(10000) + kw.i8(0))
    with conn_to(b) as conn:
        r = conn.request(19, 2, body)
        r.i32()  # throttle
        topics = r.array(lambda rr: (rr.string(), rr.i16(), rr.string()))
    assert topics[0][1] == 37, topics  # INVALID_PARTITIONS
    fs = admin.create_topics([NewTopic(name, num_partitions=50_000, replication_factor=1)])
    with pytest.raises(Exception) as e:
        fs[name].result(timeout=15)
    assert "INVALID_PARTITIONS" in str(e.value) or "xcessively" in str(e.value)
    topic = create_topic(admin, unique_topic("growparts"), partitions=1)
    fs = admin.create_partitions([NewPartitions(topic, 50_000)])
    with pytest.raises(Exception) as e:
        fs[topic].result(timeout=15)
    assert "INVALID_PARTITIONS" in str(e.value) or "xcessively" in str(e.value)
    # Within the bound it works.
    fs = admin.create_partitions([NewPartitions(topic, 3)])
    fs[topic].result(timeout=15)
    assert_rss_below(b, 200 << 20, "after huge partition counts")
