"""Describe/AlterClientQuotas (48/49) over the wire: neither Python client
exposes them, so these tests build v0 requests by hand. Quotas are stored,
reported and survive a restart (they are not enforced yet)."""

import struct

import kafka_wire as kw

API_DESCRIBE = 48
API_ALTER = 49
INVALID_REQUEST = 42


def f64(v):
    return struct.pack(">d", v)


def alter_body(entries, validate_only=False):
    """entries: [([(type, name-or-None)], [(key, value, remove)])]"""
    def entry(e):
        entity, ops = e
        return (kw.array([kw.string(t) + kw.nullable_string(n) for t, n in entity])
                + kw.array([kw.string(k) + f64(v) + kw.i8(1 if rm else 0) for k, v, rm in ops]))
    return kw.array([entry(e) for e in entries]) + kw.i8(1 if validate_only else 0)


def parse_alter(r):
    r.i32()  # throttle

    def entry(rr):
        code = rr.i16()
        msg = rr.string()
        rr.array(lambda x: (x.string(), x.string()))
        return code, msg
    return r.array(entry)


def describe_body(components, strict=False):
    """components: [(type, match_type, match-or-None)]"""
    return kw.array([kw.string(t) + kw.i8(m) + kw.nullable_string(n) for t, m, n in components]) \
        + kw.i8(1 if strict else 0)


def parse_describe(r):
    r.i32()  # throttle
    code = r.i16()
    r.string()
    entries = r.array(lambda rr: (
        tuple(rr.array(lambda x: (x.string(), x.string()))),
        dict(rr.array(lambda x: (x.string(), struct.unpack(">d", x._take(8))[0]))),
    ))
    return code, entries or []


def alter(b, entries, validate_only=False):
    with kw.KafkaConn.to(b.bootstrap) as c:
        return parse_alter(c.request(API_ALTER, 0, alter_body(entries, validate_only)))


def describe(b, components, strict=False):
    with kw.KafkaConn.to(b.bootstrap) as c:
        return parse_describe(c.request(API_DESCRIBE, 0, describe_body(components, strict)))


def test_quotas_stored_filtered_and_persisted(make_broker):
    b = make_broker()
    assert alter(b, [([("user", "alice")], [("producer_byte_rate", 1024.0, False)]),
                     ([("user", None)], [("consumer_byte_rate", 2048.0, False)])]) == [(0, None), (0, None)]
    # validate_only stores nothing.
    assert alter(b, [([("client-id", "app")], [("request_percentage", 50.0, False)])],
                 validate_only=True) == [(0, None)]
    code, found = describe(b, [("user", 0, "alice")])
    assert code == 0
    assert found == [((("user", "alice"),), {"producer_byte_rate": 1024.0})]
    code, found = describe(b, [("user", 1, None)], strict=True)
    assert found == [((("user", None),), {"consumer_byte_rate": 2048.0})]
    assert len(describe(b, [("user", 2, None)])[1]) == 2
    assert describe(b, [("client-id", 2, None)])[1] == []

    b.restart()
    assert describe(b, [("user", 0, "alice")])[1] == [((("user", "alice"),), {"producer_byte_rate": 1024.0})]
    # Removing the last value removes the entity.
    assert alter(b, [([("user", "alice")], [("producer_byte_rate", 0.0, True)])]) == [(0, None)]
    assert describe(b, [("user", 0, "alice")])[1] == []


def test_bad_quotas_refused(make_broker):
    b = make_broker()
    (code, msg), = alter(b, [([("user", "bob")], [("bogus_rate", 1.0, False)])])
    assert code == INVALID_REQUEST and "bogus_rate" in msg
    (code, _), = alter(b, [([("ip", None), ("user", None)], [("connection_creation_rate", 1.0, False)])])
    assert code == INVALID_REQUEST
    (code, _), = alter(b, [([("nobody", "x")], [("producer_byte_rate", 1.0, False)])])
    assert code == INVALID_REQUEST
    assert describe(b, [("user", 2, None)])[1] == []
