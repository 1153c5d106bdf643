"""Malformed and hostile input over raw sockets.  Each case must get the right
Kafka error or a closed connection, and the broker must keep serving others.

These tests use a broker of their own (module scope) so a crash here cannot
take the shared broker down with it."""

import random
import socket
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

import kafka_wire as kw
from ck_helpers import admin_client, assert_healthy, consume_n, consumer, create_topic, producer
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def b(healthy_broker):
    return healthy_broker


def conn_to(broker, timeout=10.0):
    return kw.KafkaConn.to(broker.bootstrap, timeout=timeout)


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize("size", [0x7FFFFFFF, 0x40000000, 200 * 1024 * 1024],
                         ids=["2GiB", "1GiB", "200MiB"])
def test_huge_length_prefix_closes_connection(b, size):
    with conn_to(b) as conn:
        conn.send_raw(kw.i32(size) + kw.request_header(kw.API_METADATA, 1, 1)
                      + kw.metadata_v1_body())
        assert conn.wait_closed(10), "broker kept a connection whose frame claims %d bytes" % size


def test_negative_length_prefix_closes_connection(b):
    with conn_to(b) as conn:
        conn.send_raw(kw.i32(-5) + b"\x00" * 16)
        assert conn.wait_closed(10)


def test_http_request_closes_connection(b):
    with conn_to(b) as conn:
        conn.send_raw(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.wait_closed(10)


def test_framed_random_garbage_closes_connection(b):
    rng = random.Random(20240611)
    for attempt in range(5):
        payload = bytearray(rng.randbytes(512))
        payload[0:2] = kw.i16(9000 + attempt)   # not an API key
        with conn_to(b) as conn:
            conn.send_raw(kw.frame(bytes(payload)))
            assert conn.wait_closed(10), "garbage frame %d did not close the connection" % attempt


@pytest.mark.parametrize("api_key", [9999, -1, 32767])
def test_unknown_api_key_closes_connection(b, api_key):
    with conn_to(b) as conn:
        conn.send_raw(kw.build_request(api_key, 0, 7, b""))
        assert conn.wait_closed(10), "unknown api key %d did not close the connection" % api_key


def test_malformed_body_of_known_api_closes_connection(b):
    # Metadata v1 claiming 1000 topics but carrying 3 bytes.
    with conn_to(b) as conn:
        conn.send_raw(kw.build_request(kw.API_METADATA, 1, 3, kw.i32(1000) + b"\x00\x05a"))
        assert conn.wait_closed(10)
    # Produce v3 whose topic-name length runs past the end of the frame.
    with conn_to(b) as conn:
        body = kw.nullable_string(None) + kw.i16(1) + kw.i32(1000) + kw.i32(1) + kw.i16(300) + b"x"
        conn.send_raw(kw.build_request(kw.API_PRODUCE, 3, 4, body))
        assert conn.wait_closed(10)


def test_truncated_request_then_close(b):
    with conn_to(b) as conn:
        conn.send_raw(kw.i32(100) + b"\x00\x03\x00\x01\x00\x00\x00\x09\x00\x00")  # 10 of 100
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.wait_closed(10), "broker did not close after a half-sent frame + EOF"


def test_truncated_request_stalled_does_not_block_others(b):
    stalled = conn_to(b)
    try:
        stalled.send_raw(kw.i32(100) + b"\x00\x03\x00\x01\x00\x00\x00\x09\x00\x00")
        # While that connection waits for 90 more bytes, everyone else is served.
        t0 = time.monotonic()
        assert_healthy(b)
        assert time.monotonic() - t0 < 20
        with conn_to(b) as conn:
            err, apis = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0, timeout=5))
            assert err == 0
    finally:
        stalled.close()


def test_many_connections_opened_and_dropped(b):
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        if i % 2:
            s.sendall(kw.i32(50) + b"\x00\x12")
        s.close()
    assert_healthy(b)


# ---------------------------------------------------------------- ApiVersions


def test_api_versions_unsupported_version_answers_v0_layout(b):
    with conn_to(b) as conn:
        corr = 4242
        body = kw.api_versions_v3_body()
        conn.send_raw(kw.build_request(kw.API_API_VERSIONS, 99, corr, body, flexible=True))
        r = kw.Reader(conn.recv_frame(timeout=10))
        assert r.i32() == corr
        err, apis = kw.parse_api_versions_v0(r)
        assert err == kw.UNSUPPORTED_VERSION
        assert apis, "UNSUPPORTED_VERSION response must still list the supported APIs"
        assert kw.API_API_VERSIONS in apis
        lo, hi = apis[kw.API_API_VERSIONS]
        assert lo == 0 and hi >= 3
        # The connection stays usable: the client retries with a version it can use.
        err2, apis2 = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0))
        assert err2 == 0
        assert apis2 == apis


# ---------------------------------------------------------------- record batches


@pytest.fixture
def raw_topic(b):
    return create_topic(admin_client(b.bootstrap), unique_topic("raw"), partitions=1)


def one_record_batch(value=b"hello-raw", key=b"k"):
    ts = int(time.time() * 1000)
    return kw.encode_record_batch([(key, value, [("h", b"v")], ts)], base_timestamp=ts)


def produce_v3(conn, topic, partition, records, acks=1, timeout=30):
    return kw.produce_v3(conn, topic, partition, records, acks=acks, timeout=timeout)


def test_raw_produce_valid_batch_accepted(b, raw_topic):
    """Control case for the CRC tests: the hand-built batch is valid."""
    with conn_to(b) as conn:
        p = produce_v3(conn, raw_topic, 0, one_record_batch(b"valid-1"))
        assert p["error_code"] == 0
        assert p["base_offset"] == 0
    c = consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(raw_topic, 0, 0)])
        [m] = consume_n(c, 1, timeout=15)
        assert (m.key(), m.value(), m.headers()) == (b"k", b"valid-1", [("h", b"v")])
    finally:
        c.close()


@pytest.mark.parametrize("where", ["crc-field", "record-value", "base-timestamp"])
def test_raw_produce_corrupt_crc_rejected(b, raw_topic, where):
    batch = one_record_batch(b"must-not-be-stored")
    if where == "crc-field":
        bad = kw.flip_byte(batch, kw.BATCH_CRC_OFFSET + 3)
    elif where == "record-value":
        # The record ends with: value, header count, "h" (len+1), "v" (len+1).
        bad = kw.flip_byte(batch, len(batch) - 6, 0x01)   # last byte of the value
    else:
        # attributes(2) lastOffsetDelta(4) then baseTimestamp(8): flip a bit in it.
        bad = kw.flip_byte(batch, kw.BATCH_ATTRS_OFFSET + 9, 0x01)
    assert bad != batch
    with conn_to(b) as conn:
        p = produce_v3(conn, raw_topic, 0, bad)
        assert p["error_code"] == kw.CORRUPT_MESSAGE, p
        # Same connection still works, and the good batch lands at offset 0.
        ok = produce_v3(conn, raw_topic, 0, one_record_batch(b"good"))
        assert ok["error_code"] == 0
        assert ok["base_offset"] == 0, "a corrupt batch consumed offsets"
    c = consumer(b.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(raw_topic, 0), timeout=10) == (0, 1)
    finally:
        c.close()


def test_raw_produce_truncated_batch_rejected(b, raw_topic):
    batch = one_record_batch()
    with conn_to(b) as conn:
        try:
            p = produce_v3(conn, raw_topic, 0, batch[:-7])
        except (kw.ConnectionClosed, socket.timeout):
            p = None   # closing the connection is acceptable too
        if p is not None:
            assert p["error_code"] in (kw.CORRUPT_MESSAGE, kw.INVALID_REQUEST), p
    c = consumer(b.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(raw_topic, 0), timeout=10) == (0, 0)
    finally:
        c.close()


# ---------------------------------------------------------------- unknown partitions


def test_produce_to_nonexistent_partition(b, raw_topic):
    with conn_to(b) as conn:
        p = produce_v3(conn, raw_topic, 99, one_record_batch())
        assert p["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION, p


def test_produce_to_nonexistent_topic_does_not_autocreate(b):
    name = unique_topic("raw-missing")
    with conn_to(b) as conn:
        p = produce_v3(conn, name, 0, one_record_batch())
        assert p["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION, p
    md = admin_client(b.bootstrap).list_topics(timeout=10)
    assert name not in md.topics


def test_list_offsets_nonexistent_partition(b, raw_topic):
    with conn_to(b) as conn:
        r = conn.request(kw.API_LIST_OFFSETS, 1, kw.list_offsets_v1_body(raw_topic, 99, -1))
        [t] = kw.parse_list_offsets_v1(r)
        [p] = t["partitions"]
        assert p["partition"] == 99
        assert p["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION, p


# ---------------------------------------------------------------- invalid topics


def test_create_topic_with_slash_invalid(b):
    admin = admin_client(b.bootstrap)
    fs = admin.create_topics([NewTopic("bad/name", num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as ei:
        fs["bad/name"].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.TOPIC_EXCEPTION   # 17


def test_metadata_for_invalid_topic_name(b):
    # Metadata v1 with auto-create: an invalid name must not be created.
    with conn_to(b) as conn:
        r = conn.request(kw.API_METADATA, 1, kw.metadata_v1_body(["bad/name"]))
        md = kw.parse_metadata_v1(r)
        [t] = md["topics"]
        assert t["name"] == "bad/name"
        assert t["error_code"] == kw.INVALID_TOPIC_EXCEPTION, t
