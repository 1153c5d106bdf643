"""Raw protocol checks of well-formed requests: ApiVersions layouts (the v0
response header even for flexible versions) and Metadata v1."""

import pytest

import kafka_wire as kw

pytestmark = pytest.mark.timeout(30)

# Minimum versions the mission's clients need (librdkafka, kafka-python, Java).
REQUIRED_MIN_MAX = {
    kw.API_PRODUCE: 3,
    kw.API_FETCH: 4,
    kw.API_LIST_OFFSETS: 1,
    kw.API_METADATA: 1,
    kw.API_API_VERSIONS: 3,
    kw.API_CREATE_TOPICS: 2,
}


def test_api_versions_v0(broker):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        r = conn.request(kw.API_API_VERSIONS, 0)
        err, apis = kw.parse_api_versions_v0(r)
        assert r.remaining() == 0, "trailing bytes in ApiVersions v0 response"
    assert err == 0
    for key, need in REQUIRED_MIN_MAX.items():
        assert key in apis, "api key %d not advertised" % key
        lo, hi = apis[key]
        assert lo <= need <= hi, "api key %d: advertised %d..%d, need %d" % (key, lo, hi, need)
    for key, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, "api key %d has range %d..%d" % (key, lo, hi)


def test_api_versions_v3_flexible_has_v0_response_header(broker):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        r0 = conn.request(kw.API_API_VERSIONS, 0)
        _, apis_v0 = kw.parse_api_versions_v0(r0)
        # Header v2 request (flexible); the response header stays v0: the
        # correlation id is followed directly by error_code (no tagged fields).
        r3 = conn.request(kw.API_API_VERSIONS, 3, kw.api_versions_v3_body(), flexible=True)
        err, apis_v3, throttle = kw.parse_api_versions_v3(r3)
        assert r3.remaining() == 0, "trailing bytes in ApiVersions v3 response"
    assert err == 0
    assert throttle == 0
    assert apis_v3 == apis_v0, "v0 and v3 advertise different ranges"


def test_metadata_v1_all_topics_and_advertised_listener(broker):
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        r = conn.request(kw.API_METADATA, 1, kw.metadata_v1_body(None))
        md = kw.parse_metadata_v1(r)
        assert r.remaining() == 0, "trailing bytes in Metadata v1 response"
    assert [(b["node_id"], b["host"], b["port"]) for b in md["brokers"]] == [
        (0, "127.0.0.1", broker.port)]
    assert md["controller_id"] == 0
    for t in md["topics"]:
        assert t["error_code"] == 0, t


def test_pipelined_requests_answered_in_order(broker):
    """Clients pipeline many requests on one connection; responses must come back
    in request order with matching correlation ids."""
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        frames = b""
        ids = list(range(1000, 1050))
        for i, corr in enumerate(ids):
            if i % 2:
                frames += kw.build_request(kw.API_API_VERSIONS, 0, corr)
            else:
                frames += kw.build_request(kw.API_METADATA, 1, corr, kw.metadata_v1_body([]))
        conn.send_raw(frames)
        got = [kw.Reader(conn.recv_frame(timeout=10)).i32() for _ in ids]
    assert got == ids


@pytest.mark.parametrize("acks", [1, 0])
def test_pipelined_produce_appends_in_request_order(broker, acks):
    """Kafka handles one request per connection at a time, so pipelined produce
    requests to one partition are appended in the order they were sent
    (librdkafka and kafka-python pipeline up to 5+ requests per connection).
    The first request carries a large batch so a broker that processes
    requests concurrently is likely to finish a later one first."""
    import time as _time

    from ck_helpers import admin_client, consume_n, consumer, create_topic
    from confluent_kafka import TopicPartition
    from runnel_harness import unique_topic

    topic = create_topic(admin_client(broker.bootstrap), unique_topic("pipeline"), partitions=1)
    n = 40
    now = int(_time.time() * 1000)
    frames = b""
    for i in range(n):
        value = b"%d:" % i + (b"z" * 600_000 if i % 10 == 0 else b"")
        batch = kw.encode_record_batch([(None, value, [], now + i)], base_timestamp=now + i)
        frames += kw.build_request(kw.API_PRODUCE, 3, 5000 + i,
                                   kw.produce_v3_body(topic, 0, batch, acks=acks))
    with kw.KafkaConn.to(broker.bootstrap, timeout=30) as conn:
        conn.send_raw(frames)
        if acks:
            base_offsets = []
            for i in range(n):
                r = kw.Reader(conn.recv_frame(timeout=30))
                assert r.i32() == 5000 + i
                topics, _ = kw.parse_produce_v3(r)
                p = topics[0]["partitions"][0]
                assert p["error_code"] == 0, p
                base_offsets.append(p["base_offset"])
            assert base_offsets == list(range(n)), "pipelined produces appended out of order"
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msgs = consume_n(c, n, timeout=30)
    finally:
        c.close()
    assert [int(m.value().split(b":")[0]) for m in msgs] == list(range(n))


def _fetch_one(conn, topic, partition, offset, max_wait_ms):
    r = conn.request(kw.API_FETCH, 4, kw.fetch_v4_body(topic, partition, offset, max_wait_ms),
                     timeout=max_wait_ms / 1000 + 10)
    _, topics = kw.parse_fetch_v4(r)
    assert r.remaining() == 0, "trailing bytes in Fetch v4 response"
    [t] = topics
    [p] = t["partitions"]
    return p


def test_fetch_v4_long_poll_waits_then_wakes(broker):
    """An empty Fetch waits about max_wait_ms (no busy loop for idle consumers);
    a produce wakes it early."""
    import threading
    import time as _time

    from ck_helpers import admin_client, create_topic, producer
    from runnel_harness import unique_topic

    topic = create_topic(admin_client(broker.bootstrap), unique_topic("fetchwait"), partitions=1)
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        t0 = _time.monotonic()
        p = _fetch_one(conn, topic, 0, 0, 800)
        waited = _time.monotonic() - t0
        assert p["error_code"] == 0
        assert p["high_watermark"] == 0
        assert not p["records"]
        assert 0.6 <= waited < 3.0, "empty fetch with max_wait 800 ms returned after %.3f s" % waited

        prod = producer(broker.bootstrap, **{"linger.ms": 0})
        timer = threading.Timer(0.2, lambda: (prod.produce(topic, b"wake", partition=0),
                                              prod.flush(5)))
        t0 = _time.monotonic()
        timer.start()
        p = _fetch_one(conn, topic, 0, 0, 5000)
        waited = _time.monotonic() - t0
        timer.join()
        assert p["error_code"] == 0
        assert p["records"], "fetch woke without records"
        assert p["high_watermark"] == 1
        assert waited < 1.5, "produce did not wake the waiting fetch (%.3f s)" % waited


def test_fetch_v4_errors(broker):
    from ck_helpers import admin_client, create_topic, producer
    from runnel_harness import unique_topic

    topic = create_topic(admin_client(broker.bootstrap), unique_topic("fetcherr"), partitions=1)
    prod = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(3):
        prod.produce(topic, b"e-%d" % i, partition=0)
    assert prod.flush(10) == 0
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        p = _fetch_one(conn, topic, 0, 0, 100)
        assert p["error_code"] == 0 and p["high_watermark"] == 3 and p["records"]
        p = _fetch_one(conn, topic, 0, 50, 100)
        assert p["error_code"] == kw.OFFSET_OUT_OF_RANGE, p
        p = _fetch_one(conn, topic, 7, 0, 100)
        assert p["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION, p
        p = _fetch_one(conn, unique_topic("fetch-missing"), 0, 0, 100)
        assert p["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION, p
