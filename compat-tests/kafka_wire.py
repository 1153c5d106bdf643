"""Just enough of the Kafka wire protocol, written by hand, to send malformed
and hand-crafted requests to the broker from tests.

Only what the tests need is here: request framing (request header v1 and v2),
ApiVersions, Metadata v1, ListOffsets v1, Produce v3 and a magic-2 RecordBatch
encoder (with CRC-32C).  Everything is big-endian, as on the wire.
"""

import socket
import struct
import time

# --------------------------------------------------------------------------
# Error codes and API keys used by the tests
# --------------------------------------------------------------------------

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REQUEST = 42

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19

# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table driven.
# --------------------------------------------------------------------------


def _make_crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # standard check value

# --------------------------------------------------------------------------
# Primitive encoders
# --------------------------------------------------------------------------


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def u32(v):
    return struct.pack(">I", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    """Non-nullable STRING: int16 length + UTF-8 bytes."""
    b = s.encode("utf-8")
    return i16(len(b)) + b


def nullable_string(s):
    if s is None:
        return i16(-1)
    return string(s)


def nullable_bytes(b):
    """BYTES / RECORDS: int32 length (-1 = null) + bytes."""
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items):
    """ARRAY of already-encoded items: int32 count + items; None = null (-1)."""
    if items is None:
        return i32(-1)
    return i32(len(items)) + b"".join(items)


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v):
    """Zig-zag signed varint (used for int32 and int64 fields in records)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s):
    if s is None:
        return uvarint(0)
    b = s.encode("utf-8")
    return uvarint(len(b) + 1) + b


EMPTY_TAGGED_FIELDS = b"\x00"

# --------------------------------------------------------------------------
# Primitive decoder
# --------------------------------------------------------------------------


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def _take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(
                "response truncated: need %d bytes at %d, have %d"
                % (n, self.pos, len(self.data))
            )
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self):
        return struct.unpack(">b", self._take(1))[0]

    def i16(self):
        return struct.unpack(">h", self._take(2))[0]

    def i32(self):
        return struct.unpack(">i", self._take(4))[0]

    def i64(self):
        return struct.unpack(">q", self._take(8))[0]

    def bool(self):
        return self.i8() != 0

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        return self._take(n).decode("utf-8")

    def uvarint(self):
        shift = 0
        result = 0
        while True:
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def compact_string(self):
        n = self.uvarint()
        if n == 0:
            return None
        return self._take(n - 1).decode("utf-8")

    def skip_tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())

    def array(self, fn):
        n = self.i32()
        if n < 0:
            return None
        return [fn(self) for _ in range(n)]

    def compact_array(self, fn):
        n = self.uvarint()
        if n == 0:
            return None
        return [fn(self) for _ in range(n - 1)]

    def remaining(self):
        return len(self.data) - self.pos


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------


def request_header(api_key, api_version, correlation_id, client_id="runnel-compat",
                   flexible=False):
    """Request header v1 (or v2 when flexible=True: adds empty tagged fields)."""
    h = i16(api_key) + i16(api_version) + i32(correlation_id) + nullable_string(client_id)
    if flexible:
        h += EMPTY_TAGGED_FIELDS
    return h


def frame(payload):
    return i32(len(payload)) + payload


def build_request(api_key, api_version, correlation_id, body=b"",
                  client_id="runnel-compat", flexible=False):
    return frame(request_header(api_key, api_version, correlation_id, client_id, flexible)
                 + body)


class ConnectionClosed(Exception):
    pass


class KafkaConn:
    """A raw TCP connection to the broker."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._next_corr = 1

    @classmethod
    def to(cls, bootstrap, timeout=10.0):
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_correlation_id(self):
        c = self._next_corr
        self._next_corr += 1
        return c

    def send_raw(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, n, deadline):
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out reading %d bytes (got %d)" % (n, len(buf)))
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise ConnectionClosed("connection reset by broker") from e
            if not chunk:
                raise ConnectionClosed(
                    "connection closed by broker after %d of %d bytes" % (len(buf), n))
            buf.extend(chunk)
        return bytes(buf)

    def recv_frame(self, timeout=None):
        """Read one response frame; returns its payload (without the size).

        Raises ConnectionClosed on EOF/reset and socket.timeout on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        size = struct.unpack(">i", self._recv_exact(4, deadline))[0]
        if size < 0 or size > 256 * 1024 * 1024:
            raise ValueError("bogus response frame size %d" % size)
        return self._recv_exact(size, deadline)

    def request(self, api_key, api_version, body=b"", flexible=False, timeout=None,
                client_id="runnel-compat"):
        """Send one request and return (correlation_id, Reader positioned after the
        response header's correlation id).  Response header tagged fields (v1
        header) are NOT consumed: callers of flexible APIs other than ApiVersions
        must call reader.skip_tagged_fields() themselves."""
        corr = self.next_correlation_id()
        self.send_raw(build_request(api_key, api_version, corr, body, client_id, flexible))
        payload = self.recv_frame(timeout)
        r = Reader(payload)
        got = r.i32()
        if got != corr:
            raise AssertionError("correlation id mismatch: sent %d, got %d" % (corr, got))
        return r

    def wait_closed(self, timeout=5.0):
        """True if the broker closes the connection within `timeout` seconds.
        Any bytes the broker sends before closing are discarded."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True


# --------------------------------------------------------------------------
# API helpers
# --------------------------------------------------------------------------


def parse_api_versions_v0(r):
    """ApiVersions response v0 body -> (error_code, {api_key: (min, max)})."""
    err = r.i16()
    entries = r.array(lambda rr: (rr.i16(), rr.i16(), rr.i16())) or []
    return err, {k: (lo, hi) for k, lo, hi in entries}


def parse_api_versions_v3(r):
    """ApiVersions response v3 body (flexible; header is still v0)."""
    err = r.i16()

    def entry(rr):
        k, lo, hi = rr.i16(), rr.i16(), rr.i16()
        rr.skip_tagged_fields()
        return k, lo, hi

    entries = r.compact_array(entry) or []
    throttle = r.i32()
    r.skip_tagged_fields()
    return err, {k: (lo, hi) for k, lo, hi in entries}, throttle


def api_versions_v3_body(software_name="runnel-compat", software_version="1.0"):
    return compact_string(software_name) + compact_string(software_version) + EMPTY_TAGGED_FIELDS


def metadata_v1_body(topics=None):
    """Metadata v1 request: topics array; None means all topics (-1)."""
    if topics is None:
        return i32(-1)
    return array([string(t) for t in topics])


def parse_metadata_v1(r):
    brokers = r.array(lambda rr: {
        "node_id": rr.i32(), "host": rr.string(), "port": rr.i32(), "rack": rr.string()})
    controller_id = r.i32()

    def partition(rr):
        return {
            "error_code": rr.i16(),
            "partition": rr.i32(),
            "leader": rr.i32(),
            "replicas": rr.array(lambda x: x.i32()),
            "isr": rr.array(lambda x: x.i32()),
        }

    def topic(rr):
        return {
            "error_code": rr.i16(),
            "name": rr.string(),
            "is_internal": rr.bool(),
            "partitions": rr.array(partition),
        }

    topics = r.array(topic)
    return {"brokers": brokers, "controller_id": controller_id, "topics": topics}


def list_offsets_v1_body(topic, partition, timestamp, replica_id=-1):
    return i32(replica_id) + array([
        string(topic) + array([i32(partition) + i64(timestamp)])
    ])


def parse_list_offsets_v1(r):
    def partition(rr):
        return {"partition": rr.i32(), "error_code": rr.i16(),
                "timestamp": rr.i64(), "offset": rr.i64()}

    return r.array(lambda rr: {"name": rr.string(), "partitions": rr.array(partition)})


def fetch_v4_body(topic, partition, offset, max_wait_ms=500, min_bytes=1,
                  max_bytes=1 << 20, partition_max_bytes=1 << 20, isolation_level=0):
    return (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(isolation_level)
            + array([string(topic) + array([i32(partition) + i64(offset)
                                            + i32(partition_max_bytes)])]))


def parse_fetch_v4(r):
    throttle = r.i32()

    def aborted(rr):
        return (rr.i64(), rr.i64())

    def partition(rr):
        p = {"partition": rr.i32(), "error_code": rr.i16(), "high_watermark": rr.i64(),
             "last_stable_offset": rr.i64(), "aborted_transactions": rr.array(aborted)}
        n = rr.i32()
        p["records"] = None if n < 0 else rr._take(n)
        return p

    topics = r.array(lambda rr: {"name": rr.string(), "partitions": rr.array(partition)})
    return throttle, topics


def fetch_v11_body(topic, partition, offset, max_wait_ms=500, max_bytes=1 << 24,
                   leader_epoch=-1, rack="", version=11):
    """A consumer's Fetch v10 or v11 body for one partition (v11 adds the
    client's rack, KIP-392)."""
    body = (i32(-1) + i32(max_wait_ms) + i32(1) + i32(max_bytes) + i8(0) + i32(0) + i32(-1)
            + array([string(topic) + array([i32(partition) + i32(leader_epoch) + i64(offset)
                                            + i64(-1) + i32(max_bytes)])])
            + array([]))
    return body + string(rack) if version >= 11 else body


def parse_fetch_v11(r, version=11):
    """Fetch v10/v11 answer: (top error code, [(topic, [partition dicts])]);
    `preferred` is -1 in v10, which has no preferred read replica."""
    r.i32()  # throttle
    top = r.i16()
    r.i32()  # session id

    def partition(rr):
        p = {"partition": rr.i32(), "error_code": rr.i16(), "hw": rr.i64(), "lso": rr.i64(),
             "log_start": rr.i64()}
        rr.array(lambda x: (x.i64(), x.i64()))
        p["preferred"] = rr.i32() if version >= 11 else -1
        n = rr.i32()
        p["records"] = b"" if n < 0 else rr._take(n)
        return p

    return top, r.array(lambda rr: (rr.string(), rr.array(partition)))


def record_batches(data):
    """The whole record batches in `data`: (base offset, attributes, record
    count, last offset delta) each; a trailing partial batch is skipped."""
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack(">qi", data[pos:pos + 12])
        if pos + 12 + length > len(data):
            break
        batch = data[pos:pos + 12 + length]
        attrs = struct.unpack(">h", batch[21:23])[0]
        delta = struct.unpack(">i", batch[23:27])[0]
        count = struct.unpack(">i", batch[57:61])[0]
        out.append((base, attrs, count, delta))
        pos += 12 + length
    return out


def produce_v3_body(topic, partition, records, acks=1, timeout_ms=10000,
                    transactional_id=None):
    return (nullable_string(transactional_id) + i16(acks) + i32(timeout_ms)
            + array([string(topic) + array([i32(partition) + nullable_bytes(records)])]))


def produce_v3(conn, topic, partition, records, acks=1, timeout=None):
    """One Produce v3 for one partition; returns that partition's answer
    (partition, error_code, base_offset, log_append_time)."""
    r = conn.request(API_PRODUCE, 3, produce_v3_body(topic, partition, records, acks=acks),
                     timeout=timeout)
    topics, _throttle = parse_produce_v3(r)
    assert r.remaining() == 0, "trailing bytes in Produce v3 response"
    [t] = topics
    assert t["name"] == topic
    [p] = t["partitions"]
    assert p["partition"] == partition
    return p


def parse_produce_v3(r):
    def partition(rr):
        return {"partition": rr.i32(), "error_code": rr.i16(),
                "base_offset": rr.i64(), "log_append_time": rr.i64()}

    topics = r.array(lambda rr: {"name": rr.string(), "partitions": rr.array(partition)})
    throttle = r.i32()
    return topics, throttle


# --------------------------------------------------------------------------
# RecordBatch (magic 2)
# --------------------------------------------------------------------------

BATCH_CRC_OFFSET = 17     # baseOffset(8) batchLength(4) leaderEpoch(4) magic(1)
BATCH_ATTRS_OFFSET = 21   # CRC covers attributes .. end of batch


def encode_record(offset_delta, timestamp_delta, key, value, headers=()):
    body = bytearray()
    body += i8(0)                       # record attributes (unused)
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    if key is None:
        body += varint(-1)
    else:
        body += varint(len(key)) + key
    if value is None:
        body += varint(-1)
    else:
        body += varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hkb = hk.encode("utf-8")
        body += varint(len(hkb)) + hkb
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def encode_record_batch(records, base_timestamp, base_offset=0, attributes=0,
                        producer_id=-1, producer_epoch=-1, base_sequence=-1):
    """records: list of (key, value, headers, timestamp) tuples.  Uncompressed."""
    encoded = b"".join(
        encode_record(i, ts - base_timestamp, k, v, h) for i, (k, v, h, ts) in enumerate(records))
    max_ts = max(ts for (_, _, _, ts) in records)
    after_crc = (i16(attributes) + i32(len(records) - 1) + i64(base_timestamp) + i64(max_ts)
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(records)) + encoded)
    crc = crc32c(after_crc)
    after_length = i32(-1) + i8(2) + u32(crc) + after_crc   # leaderEpoch, magic, crc
    batch = i64(base_offset) + i32(len(after_length)) + after_length
    assert batch[BATCH_ATTRS_OFFSET:] == after_crc
    return batch


def flip_byte(data, index, mask=0xFF):
    b = bytearray(data)
    b[index] ^= mask
    return bytes(b)


# --------------------------------------------------------------------------
# Consumer groups: JoinGroup v5, SyncGroup v3, Heartbeat v3, LeaveGroup v1,
# OffsetCommit v2 (all non-flexible), and the "consumer" embedded protocol
# (subscription / assignment, version 0).
# --------------------------------------------------------------------------

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15
API_LIST_GROUPS = 16

ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82


def join_group_v5_body(group_id, member_id="", protocol_type="consumer",
                       protocols=(("range", b""),), session_timeout_ms=10000,
                       rebalance_timeout_ms=10000, group_instance_id=None):
    """JoinGroup v5 request. protocols: [(name, metadata bytes)]."""
    return (string(group_id) + i32(session_timeout_ms) + i32(rebalance_timeout_ms)
            + string(member_id) + nullable_string(group_instance_id) + string(protocol_type)
            + array([string(name) + nullable_bytes(meta) for name, meta in protocols]))


def _bytes_field(r):
    n = r.i32()
    return None if n < 0 else r._take(n)


def parse_join_group_v5(r):
    out = {"throttle_time_ms": r.i32(), "error_code": r.i16(), "generation_id": r.i32(),
           "protocol_name": r.string(), "leader": r.string(), "member_id": r.string()}
    out["members"] = r.array(lambda rr: {
        "member_id": rr.string(), "group_instance_id": rr.string(),
        "metadata": _bytes_field(rr)}) or []
    return out


def sync_group_v3_body(group_id, generation_id, member_id, assignments=(),
                       group_instance_id=None):
    """SyncGroup v3 request. assignments: [(member_id, assignment bytes)]."""
    return (string(group_id) + i32(generation_id) + string(member_id)
            + nullable_string(group_instance_id)
            + array([string(m) + nullable_bytes(a) for m, a in assignments]))


def parse_sync_group_v3(r):
    return {"throttle_time_ms": r.i32(), "error_code": r.i16(), "assignment": _bytes_field(r)}


def heartbeat_v3_body(group_id, generation_id, member_id, group_instance_id=None):
    return (string(group_id) + i32(generation_id) + string(member_id)
            + nullable_string(group_instance_id))


def parse_heartbeat_v3(r):
    return {"throttle_time_ms": r.i32(), "error_code": r.i16()}


def leave_group_v1_body(group_id, member_id):
    return string(group_id) + string(member_id)


def parse_leave_group_v1(r):
    return {"throttle_time_ms": r.i32(), "error_code": r.i16()}


def offset_commit_v2_body(group_id, generation_id, member_id, offsets, retention_time_ms=-1):
    """OffsetCommit v2 request. offsets: {topic: [(partition, offset, metadata)]}."""
    return (string(group_id) + i32(generation_id) + string(member_id) + i64(retention_time_ms)
            + array([string(t) + array([i32(p) + i64(o) + nullable_string(md)
                                        for p, o, md in parts])
                     for t, parts in offsets.items()]))


def parse_offset_commit_v2(r):
    """-> {(topic, partition): error_code}"""
    out = {}
    for t in r.array(lambda rr: (rr.string(), rr.array(lambda x: (x.i32(), x.i16())))) or []:
        name, parts = t
        for p, err in parts or []:
            out[(name, p)] = err
    return out


def consumer_subscription_v0(topics, user_data=None):
    """ConsumerProtocolSubscription v0: the member metadata of protocol type "consumer"."""
    return i16(0) + array([string(t) for t in topics]) + nullable_bytes(user_data)


def parse_consumer_subscription(data):
    r = Reader(data)
    version = r.i16()
    topics = r.array(lambda rr: rr.string()) or []
    return {"version": version, "topics": topics}


def consumer_assignment_v0(assignment, user_data=None):
    """ConsumerProtocolAssignment v0. assignment: {topic: [partitions]}."""
    return (i16(0) + array([string(t) + array([i32(p) for p in parts])
                            for t, parts in assignment.items()])
            + nullable_bytes(user_data))


def parse_consumer_assignment(data):
    """-> {topic: [partitions]} ({} for an empty / null assignment)."""
    if not data:
        return {}
    r = Reader(data)
    r.i16()  # version
    out = {}
    for t, parts in r.array(lambda rr: (rr.string(), rr.array(lambda x: x.i32()))) or []:
        out[t] = sorted(parts or [])
    return out


# --------------------------------------------------------------------------
# ListConfigResources (74): v0 (was ListClientMetricsResources) and v1, both
# flexible (request header v2, response header v1).
# --------------------------------------------------------------------------

API_LIST_CONFIG_RESOURCES = 74
CLIENT_METRICS_RESOURCE = 16   # the type of every v0 entry (v0 has no type field)


def list_config_resources_body(version, resource_types=()):
    """v1: resource_types (compact array of int8; empty = every type); v0: no fields."""
    if version >= 1:
        return (uvarint(len(resource_types) + 1) + b"".join(i8(t) for t in resource_types)
                + EMPTY_TAGGED_FIELDS)
    return EMPTY_TAGGED_FIELDS


def parse_list_config_resources(r, version):
    """Response body after the correlation id (its header tagged fields included):
    (throttle_time_ms, error_code, [(resource_name, resource_type)])."""
    r.skip_tagged_fields()  # response header v1
    throttle = r.i32()
    err = r.i16()

    def resource(rr):
        name = rr.compact_string()
        rtype = rr.i8() if version >= 1 else CLIENT_METRICS_RESOURCE
        rr.skip_tagged_fields()
        return name, rtype

    resources = r.compact_array(resource) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in ListConfigResources v%d response" % version
    return throttle, err, resources


def list_config_resources(bootstrap, version=1, resource_types=(), timeout=10.0):
    """One ListConfigResources request to `bootstrap`:
    (throttle_time_ms, error_code, [(resource_name, resource_type)])."""
    with KafkaConn.to(bootstrap, timeout=timeout) as conn:
        r = conn.request(API_LIST_CONFIG_RESOURCES, version,
                         list_config_resources_body(version, resource_types), flexible=True)
        return parse_list_config_resources(r, version)


# --------------------------------------------------------------------------
# KIP-848 consumer groups: ConsumerGroupHeartbeat (68) v0-1 and OffsetCommit
# v9, both flexible (request header v2, response header v1).
# --------------------------------------------------------------------------

API_CONSUMER_GROUP_HEARTBEAT = 68

GROUP_ID_NOT_FOUND = 69
FENCED_MEMBER_EPOCH = 110
UNRELEASED_INSTANCE_ID = 111
UNSUPPORTED_ASSIGNOR = 112
STALE_MEMBER_EPOCH = 113
INVALID_REGULAR_EXPRESSION = 128


def compact_array_of(items):
    """COMPACT_ARRAY of already-encoded items: uvarint(count + 1) + items;
    None = null (0)."""
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(items)


def consumer_group_heartbeat_body(group_id, member_id, member_epoch, instance_id=None,
                                  rack_id=None, rebalance_timeout_ms=-1,
                                  subscribed_topic_names=None, subscribed_topic_regex=None,
                                  server_assignor=None, topic_partitions=None, version=1):
    """ConsumerGroupHeartbeat request v0/v1.  topic_partitions: None (unchanged)
    or [(topic_id 16 bytes, [partitions])].  subscribed_topic_regex is v1 only."""
    body = (compact_string(group_id) + compact_string(member_id) + i32(member_epoch)
            + compact_string(instance_id) + compact_string(rack_id)
            + i32(rebalance_timeout_ms)
            + compact_array_of(None if subscribed_topic_names is None
                               else [compact_string(t) for t in subscribed_topic_names]))
    if version >= 1:
        body += compact_string(subscribed_topic_regex)
    elif subscribed_topic_regex is not None:
        raise ValueError("SubscribedTopicRegex needs ConsumerGroupHeartbeat v1")
    body += compact_string(server_assignor)
    body += compact_array_of(None if topic_partitions is None else [
        bytes(tid) + compact_array_of([i32(p) for p in parts]) + EMPTY_TAGGED_FIELDS
        for tid, parts in topic_partitions])
    return body + EMPTY_TAGGED_FIELDS


def parse_consumer_group_heartbeat(r):
    """Response (after the correlation id, header tagged fields included) ->
    dict; assignment is None or {topic_id bytes: sorted partitions}."""
    r.skip_tagged_fields()  # response header v1
    out = {"throttle_time_ms": r.i32(), "error_code": r.i16(),
           "error_message": r.compact_string(), "member_id": r.compact_string(),
           "member_epoch": r.i32(), "heartbeat_interval_ms": r.i32()}

    def topic_partitions(rr):
        tid = rr._take(16)
        parts = rr.compact_array(lambda x: x.i32()) or []
        rr.skip_tagged_fields()
        return tid, sorted(parts)

    present = r.i8()
    if present < 0:
        out["assignment"] = None
    else:
        tps = r.compact_array(topic_partitions) or []
        r.skip_tagged_fields()
        out["assignment"] = dict(tps)
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in ConsumerGroupHeartbeat response"
    return out


def consumer_group_heartbeat(conn, group_id, member_id, member_epoch, version=1, **kwargs):
    """One ConsumerGroupHeartbeat on `conn`; returns the parsed response."""
    body = consumer_group_heartbeat_body(group_id, member_id, member_epoch, version=version,
                                         **kwargs)
    return parse_consumer_group_heartbeat(
        conn.request(API_CONSUMER_GROUP_HEARTBEAT, version, body, flexible=True))


def offset_commit_v9_body(group_id, member_epoch, member_id, offsets, group_instance_id=None):
    """OffsetCommit v9 request. offsets: {topic: [(partition, offset, metadata)]}."""
    return (compact_string(group_id) + i32(member_epoch) + compact_string(member_id)
            + compact_string(group_instance_id)
            + compact_array_of([
                compact_string(t) + compact_array_of([
                    i32(p) + i64(o) + i32(-1) + compact_string(md) + EMPTY_TAGGED_FIELDS
                    for p, o, md in parts]) + EMPTY_TAGGED_FIELDS
                for t, parts in offsets.items()])
            + EMPTY_TAGGED_FIELDS)


def parse_offset_commit_v9(r):
    """-> {(topic, partition): error_code} (response header v1 tagged fields included)."""
    r.skip_tagged_fields()
    r.i32()  # throttle_time_ms

    def partition(rr):
        p, err = rr.i32(), rr.i16()
        rr.skip_tagged_fields()
        return p, err

    def topic(rr):
        name = rr.compact_string()
        parts = rr.compact_array(partition) or []
        rr.skip_tagged_fields()
        return name, parts

    out = {}
    for name, parts in r.compact_array(topic) or []:
        for p, err in parts:
            out[(name, p)] = err
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in OffsetCommit v9 response"
    return out


def offset_commit_v9(conn, group_id, member_epoch, member_id, offsets, group_instance_id=None):
    return parse_offset_commit_v9(conn.request(
        API_OFFSET_COMMIT, 9,
        offset_commit_v9_body(group_id, member_epoch, member_id, offsets, group_instance_id),
        flexible=True))
