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
