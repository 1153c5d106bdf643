"""Topic configuration, retention, compaction and the admin APIs around them
(issue 4: "What it must show").

- confluent-kafka AdminClient: the MISSION.md section 1 scenario 2 topic (compact, lz4,
  delete.retention.ms=100, file.delete.delay.ms=100) described with sources and synonyms;
  AlterConfigs (replaces the overrides), IncrementalAlterConfigs (SET / DELETE / APPEND /
  SUBTRACT), validate_only, invalid values refused with INVALID_CONFIG and a message
  naming the key; broker-level defaults feeding topic configs.
- Time retention (retention.ms) and size retention (retention.bytes) enforced in the
  background: the log start offset moves, consumers below it get OFFSET_OUT_OF_RANGE and
  reset per auto.offset.reset, DescribeLogDirs sizes shrink.
- Compaction: 20,000 records over 100 keys plus 10 tombstones -> exactly the latest value
  of the 90 live keys at their original offsets; sizes shrink; min.compaction.lag.ms,
  min.cleanable.dirty.ratio, max.compaction.lag.ms and delete.retention.ms honoured.
- Topic compression.type recompression and message.timestamp.type=LogAppendTime.
- Broker restart (graceful and kill -9) keeps every config and log start offset.
- DeleteRecords; bad input (unknown names, negative retention, cleanup.policy=bogus,
  DeleteRecords beyond the high watermark, CreatePartitions to fewer partitions) with
  Kafka's error codes and nothing changed.
- DescribeLogDirs, DescribeTopicPartitions (with its cursor) and
  ListPartitionReassignments over raw requests; ElectLeaders through the AdminClient.

Brokers private to a test get fast background passes
(log.retention.check.interval.ms / log.cleaner.backoff.ms = 500 ms).
"""

import base64
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME,
                             TIMESTAMP_LOG_APPEND_TIME, ElectionType, KafkaError,
                             KafkaException, TopicCollection, TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, OffsetSpec,
                                   ResourceType)

import kafka_wire as kw
from ck_helpers import (admin_client, consumer, create_topic, producer, topic_metadata, wait_until,
                        watermarks)
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(90)

FAST = {"log.retention.check.interval.ms": "500", "log.cleaner.backoff.ms": "500"}

# The topic of MISSION.md section 1 scenario 2, exactly as the Python scenario creates it.
SCENARIO_CONFIG = {"cleanup.policy": "compact", "compression.type": "lz4",
                   "delete.retention.ms": 100, "file.delete.delay.ms": 100}

# Kafka's defaults for some topic configs (no broker file overrides in the harness).
KAFKA_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}

DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
STATIC_BROKER = ConfigSource.STATIC_BROKER_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value

SET = AlterConfigOpType.SET
DELETE = AlterConfigOpType.DELETE
APPEND = AlterConfigOpType.APPEND
SUBTRACT = AlterConfigOpType.SUBTRACT


# --------------------------------------------------------------------------
# Helpers: configs
# --------------------------------------------------------------------------


@pytest.fixture
def admin(broker):
    return admin_client(broker.bootstrap)


def fast_broker(make_broker, **extra):
    ov = dict(FAST)
    ov.update(extra)
    return make_broker(ov)


def source_of(entry):
    return getattr(entry.source, "value", entry.source)


def describe(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)


def snapshot(admin, topic):
    """{name: (value, source)} of every config DescribeConfigs reports for a topic."""
    return {k: (e.value, source_of(e)) for k, e in describe(admin, topic).items()}


def overrides(admin, topic):
    """{name: value} of the configs set on the topic itself."""
    return {k: e.value for k, e in describe(admin, topic).items()
            if source_of(e) == DYNAMIC_TOPIC}


def incremental(admin, topic, ops, validate_only=False):
    """ops: [(name, value, AlterConfigOpType)]. Returns the future's result."""
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(n, v, incremental_operation=op) for n, v, op in ops])
    return admin.incremental_alter_configs([res], request_timeout=15,
                                           validate_only=validate_only)[res].result(timeout=20)


def alter(admin, topic, configs, validate_only=False):
    """AlterConfigs (deprecated in confluent-kafka, still the AlterConfigs API)."""
    res = ConfigResource(ResourceType.TOPIC, topic, set_config=configs)
    with pytest.warns(DeprecationWarning):
        fs = admin.alter_configs([res], request_timeout=15, validate_only=validate_only)
    return fs[res].result(timeout=20)


def error_of(fn, *args, **kwargs):
    """The KafkaError `fn` raises (fails the test when it does not raise)."""
    with pytest.raises(KafkaException) as ei:
        fn(*args, **kwargs)
    return ei.value.args[0]


def create_error(admin, name, config, partitions=1):
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                       config=config)], request_timeout=15)
    return error_of(fs[name].result, timeout=20)


# --------------------------------------------------------------------------
# Helpers: offsets, reading, sizes
# --------------------------------------------------------------------------


def admin_offsets(admin, topic, partition=0):
    """(earliest, latest) through ListOffsets from the AdminClient."""
    tp = TopicPartition(topic, partition)
    out = []
    for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):
        out.append(admin.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=20)
                   .offset)
    return tuple(out)


def produce_all(bootstrap, topic, records, partition=0, flush_each=False, **conf):
    """records: [(key, value)] or [(key, value, timestamp_ms)]. Returns delivery reports
    [(err, offset, timestamp)]."""
    p = producer(bootstrap, **conf)
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.offset() if err is None else None, msg.timestamp()))

    for r in records:
        kw_ = {"key": r[0], "value": r[1], "partition": partition, "on_delivery": on_delivery}
        if len(r) > 2:
            kw_["timestamp"] = r[2]
        while True:
            try:
                p.produce(topic, **kw_)
                break
            except BufferError:
                p.poll(0.1)
        if flush_each:
            assert p.flush(15) == 0
    assert p.flush(30) == 0
    errors = [e for e, _, _ in reports if e is not None]
    assert not errors, "produce failed: %s" % errors[:3]
    assert len(reports) == len(records)
    return reports


def read_partition(bootstrap, topic, partition=0, start=OFFSET_BEGINNING, quiet=1.0,
                   timeout=30, **conf):
    """Reads from `start` until partition EOF, or until nothing arrived for `quiet` s.
    Returns (messages, reached_eof, position)."""
    c = consumer(bootstrap, **dict({"enable.partition.eof": True}, **conf))
    out, eof = [], False
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while not eof and time.monotonic() < deadline and time.monotonic() - last < quiet:
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    raise AssertionError("consumer error: %s" % m.error())
                out.append(m)
                last = time.monotonic()
        position = c.position([TopicPartition(topic, partition)])[0].offset
    finally:
        c.close()
    return out, eof, position


def kv(msgs):
    return [(m.offset(), m.key(), m.value()) for m in msgs]


def _dld_request(version, topics):
    """DescribeLogDirs request body. topics: None (all) or {name: [partitions]}."""
    if version >= 2:
        if topics is None:
            body = kw.uvarint(0)
        else:
            body = kw.uvarint(len(topics) + 1) + b"".join(
                kw.compact_string(t) + kw.uvarint(len(ps) + 1)
                + b"".join(kw.i32(p) for p in ps) + kw.EMPTY_TAGGED_FIELDS
                for t, ps in topics.items())
        return body + kw.EMPTY_TAGGED_FIELDS
    if topics is None:
        return kw.i32(-1)
    return kw.array([kw.string(t) + kw.array([kw.i32(p) for p in ps])
                     for t, ps in topics.items()])


def describe_log_dirs(bootstrap, topics=None, version=4):
    """DescribeLogDirs (35) over a raw connection. Returns (top_error, [dir dicts]) where
    each dir is {error_code, log_dir, total_bytes, usable_bytes,
    sizes: {(topic, partition): size}}."""
    flexible = version >= 2
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(35, version, _dld_request(version, topics), flexible=flexible)
    if flexible:
        r.skip_tagged_fields()
        arr = r.compact_array
        s = r.compact_string
    else:
        arr = r.array
        s = r.string
    r.i32()  # throttle
    top_error = r.i16() if version >= 3 else 0

    def partition(rr):
        p = (rr.i32(), rr.i64(), rr.i64(), rr.bool())
        if flexible:
            rr.skip_tagged_fields()
        return p

    def topic(rr):
        name = rr.compact_string() if flexible else rr.string()
        parts = (rr.compact_array(partition) if flexible else rr.array(partition)) or []
        if flexible:
            rr.skip_tagged_fields()
        return name, parts

    def result(rr):
        d = {"error_code": rr.i16(), "log_dir": s(), "total_bytes": None, "usable_bytes": None}
        ts = (rr.compact_array(topic) if flexible else rr.array(topic)) or []
        d["sizes"] = {(name, p[0]): p[1] for name, parts in ts for p in parts}
        if version >= 4:
            d["total_bytes"], d["usable_bytes"] = rr.i64(), rr.i64()
        if flexible:
            rr.skip_tagged_fields()
        return d

    dirs = arr(result) or []
    if flexible:
        r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in DescribeLogDirs v%d response" % version
    return top_error, dirs


def partition_size(bootstrap, topic, partition=0):
    err, dirs = describe_log_dirs(bootstrap, {topic: [partition]})
    assert err == 0 and len(dirs) == 1 and dirs[0]["error_code"] == 0, (err, dirs)
    sizes = dirs[0]["sizes"]
    assert (topic, partition) in sizes, "DescribeLogDirs does not list %s-%d: %r" % (
        topic, partition, sizes)
    return sizes[(topic, partition)]


# ==========================================================================
# Configs through the AdminClient
# ==========================================================================


def test_scenario_topic_configs_sources_and_defaults(admin, bootstrap):
    name = unique_topic("cfg-scenario")
    create_topic(admin, name, partitions=5, config=SCENARIO_CONFIG)
    entries = describe(admin, name)

    for key, value in SCENARIO_CONFIG.items():
        e = entries[key]
        assert e.value == str(value), (key, e.value)
        assert source_of(e) == DYNAMIC_TOPIC, (key, e.source)
        assert not e.is_default and not e.is_read_only and not e.is_sensitive, key
        # The synonyms start with the topic override itself (compression.type's broker
        # synonym has the same name, which confluent-kafka's dict cannot tell apart).
        if key != "compression.type":
            assert key in e.synonyms, (key, sorted(e.synonyms))
            assert source_of(e.synonyms[key]) == DYNAMIC_TOPIC, key
    # Below the override: the broker-level key with Kafka's default.
    syn = entries["cleanup.policy"].synonyms
    assert "log.cleanup.policy" in syn, sorted(syn)
    assert syn["log.cleanup.policy"].value == "delete"
    assert source_of(syn["log.cleanup.policy"]) in (STATIC_BROKER, DEFAULT)
    assert entries["delete.retention.ms"].synonyms["log.cleaner.delete.retention.ms"].value \
        == "86400000"

    # Everything else: not a topic override, with Kafka's default value.
    others = {k: e for k, e in entries.items() if k not in SCENARIO_CONFIG}
    assert len(others) >= 20, sorted(others)
    for k, e in others.items():
        assert source_of(e) in (DEFAULT, STATIC_BROKER), (k, e.source)
        assert not e.is_sensitive, k
        if source_of(e) == DEFAULT:
            assert e.is_default, k
    for k, v in KAFKA_DEFAULTS.items():
        if k not in SCENARIO_CONFIG:
            assert others[k].value == v, (k, others[k].value, v)

    # The configs are in force: keyed records are stored as lz4 batches, keyless ones refused.
    produce_all(bootstrap, name, [(b"k%d" % i, b"v" * 100) for i in range(20)],
                **{"compression.type": "none", "linger.ms": 20})
    codecs = {a & 0x07 for _, a, _ in fetch_v11_batches(bootstrap, name)}
    assert codecs == {3}, "batch codecs %s on a compression.type=lz4 topic" % codecs
    p = producer(bootstrap, **{"linger.ms": 0})
    res = []
    p.produce(name, b"no key", partition=0, on_delivery=lambda e, m: res.append(e))
    p.flush(15)
    assert res and res[0] is not None and res[0].code() == KafkaError.INVALID_RECORD, res


def test_alter_configs_replaces_all_overrides(admin):
    name = unique_topic("cfg-alter")
    create_topic(admin, name, partitions=1, config=SCENARIO_CONFIG)

    alter(admin, name, {"retention.ms": "1234567", "cleanup.policy": "compact,delete"})
    got = describe(admin, name)
    assert overrides(admin, name) == {"retention.ms": "1234567",
                                      "cleanup.policy": "compact,delete"}
    assert got["retention.ms"].value == "1234567"
    # What the request left out went back to the default.
    for k in ("compression.type", "delete.retention.ms", "file.delete.delay.ms"):
        assert got[k].value == KAFKA_DEFAULTS[k], (k, got[k].value)
        assert source_of(got[k]) == DEFAULT, (k, got[k].source)

    # validate_only: accepted, nothing changed.
    before = snapshot(admin, name)
    alter(admin, name, {"retention.ms": "1", "max.message.bytes": "2000"}, validate_only=True)
    assert snapshot(admin, name) == before
    # validate_only still reports errors.
    err = error_of(alter, admin, name, {"retention.ms": "-5"}, validate_only=True)
    assert err.code() == KafkaError.INVALID_CONFIG
    assert snapshot(admin, name) == before

    # An empty AlterConfigs removes every override.
    alter(admin, name, {})
    assert overrides(admin, name) == {}
    assert describe(admin, name)["cleanup.policy"].value == "delete"


def test_incremental_alter_set_delete_append_subtract(admin, broker):
    name = unique_topic("cfg-incr")
    create_topic(admin, name, partitions=1, config=SCENARIO_CONFIG)

    incremental(admin, name, [("retention.ms", "5000", SET), ("max.message.bytes", "200000", SET)])
    got = overrides(admin, name)
    assert got == {"cleanup.policy": "compact", "compression.type": "lz4",
                   "delete.retention.ms": "100", "file.delete.delay.ms": "100",
                   "retention.ms": "5000", "max.message.bytes": "200000"}

    incremental(admin, name, [("cleanup.policy", "delete", APPEND)])
    assert describe(admin, name)["cleanup.policy"].value == "compact,delete"
    # Appending a value already there changes nothing.
    incremental(admin, name, [("cleanup.policy", "delete", APPEND)])
    assert describe(admin, name)["cleanup.policy"].value == "compact,delete"

    incremental(admin, name, [("cleanup.policy", "compact", SUBTRACT)])
    assert describe(admin, name)["cleanup.policy"].value == "delete"
    # The change takes effect: keyless records are accepted again.
    produce_all(broker.bootstrap, name, [(None, b"no key")])

    incremental(admin, name, [("retention.ms", None, DELETE), ("compression.type", None, DELETE)])
    entries = describe(admin, name)
    assert entries["retention.ms"].value == "604800000"
    assert source_of(entries["retention.ms"]) == DEFAULT
    assert entries["compression.type"].value == "producer"
    assert source_of(entries["compression.type"]) == DEFAULT
    # DELETE of something not set is fine.
    incremental(admin, name, [("segment.ms", None, DELETE)])

    # validate_only: accepted, nothing changed.
    before = snapshot(admin, name)
    incremental(admin, name, [("retention.ms", "1", SET), ("cleanup.policy", "compact", APPEND),
                              ("delete.retention.ms", None, DELETE)], validate_only=True)
    assert snapshot(admin, name) == before

    # APPEND / SUBTRACT only on list configs.
    for op in (APPEND, SUBTRACT):
        err = error_of(incremental, admin, name, [("retention.ms", "5", op)])
        assert err.code() == KafkaError.INVALID_CONFIG, err
        assert "retention.ms" in err.str(), err.str()
    assert snapshot(admin, name) == before


@pytest.mark.parametrize("key,value", [
    ("no.such.config", "1"),
    ("retention.ms", "-5"),
    ("retention.bytes", "-7"),
    ("cleanup.policy", "bogus"),
    ("cleanup.policy", "compact,bogus"),
    ("compression.type", "brotli"),
    ("min.cleanable.dirty.ratio", "1.5"),
    ("segment.bytes", "lots"),
    ("max.message.bytes", "-1"),
    ("unclean.leader.election.enable", "maybe"),
], ids=["unknown-name", "negative-retention-ms", "negative-retention-bytes", "policy-bogus",
        "policy-list-bogus", "codec-brotli", "ratio-above-1", "not-a-number", "negative-size",
        "not-a-bool"])
def test_invalid_configs_refused_everywhere_with_a_message(admin, key, value):
    # CreateTopics: INVALID_CONFIG, topic not created.
    bad = unique_topic("cfg-badcreate")
    err = create_error(admin, bad, {key: value})
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert key in err.str(), "message should name %s: %s" % (key, err.str())
    assert topic_metadata(admin, bad) is None

    # AlterConfigs / IncrementalAlterConfigs on an existing topic: refused, nothing changed,
    # also when valid changes come in the same request.
    name = create_topic(admin, unique_topic("cfg-bad"), partitions=1,
                        config={"retention.ms": "777777"})
    before = snapshot(admin, name)
    for validate_only in (False, True):
        err = error_of(alter, admin, name, {"retention.bytes": "4096", key: value},
                       validate_only=validate_only)
        assert err.code() == KafkaError.INVALID_CONFIG, err
        assert key in err.str(), err.str()
        err = error_of(incremental, admin, name,
                       [("segment.ms", "100000", SET), (key, value, SET)],
                       validate_only=validate_only)
        assert err.code() == KafkaError.INVALID_CONFIG, err
        assert key in err.str(), err.str()
    assert snapshot(admin, name) == before


def test_configs_of_unknown_topic(admin):
    name = unique_topic("cfg-nosuch")
    res = ConfigResource(ResourceType.TOPIC, name)
    err = error_of(admin.describe_configs([res], request_timeout=15)[res].result, timeout=20)
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    err = error_of(incremental, admin, name, [("retention.ms", "1000", SET)])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    err = error_of(alter, admin, name, {"retention.ms": "1000"})
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    assert topic_metadata(admin, name) is None


def test_broker_file_supplies_topic_defaults(make_broker):
    b = make_broker({"log.retention.hours": "48", "log.cleaner.delete.retention.ms": "5000"})
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("cfg-brokerdef"), partitions=1,
                        config={"delete.retention.ms": "100"})
    entries = describe(admin, name)

    rm = entries["retention.ms"]
    assert rm.value == str(48 * 3600 * 1000)
    assert source_of(rm) == STATIC_BROKER, rm.source
    assert not rm.is_default
    # Kafka lists log.retention.hours twice (STATIC_BROKER_CONFIG 48, then its
    # DEFAULT_CONFIG 168); confluent-kafka's dict keeps the last one.
    assert "log.retention.hours" in rm.synonyms, sorted(rm.synonyms)

    drm = entries["delete.retention.ms"]
    assert (drm.value, source_of(drm)) == ("100", DYNAMIC_TOPIC)
    # (Kafka lists log.cleaner.delete.retention.ms twice among the synonyms, as
    # STATIC_BROKER_CONFIG and DEFAULT_CONFIG; confluent-kafka's dict keeps one of them.)
    assert "log.cleaner.delete.retention.ms" in drm.synonyms, sorted(drm.synonyms)

    res = ConfigResource(ResourceType.BROKER, "0")
    broker_entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    ldr = broker_entries["log.cleaner.delete.retention.ms"]
    assert (ldr.value, source_of(ldr)) == ("5000", STATIC_BROKER)

    # Removing the topic override falls back to the broker file's value.
    incremental(admin, name, [("delete.retention.ms", None, DELETE)])
    drm = describe(admin, name)["delete.retention.ms"]
    assert (drm.value, source_of(drm)) == ("5000", STATIC_BROKER)


    # The broker resource reports the key the file set, and does not claim another
    # effective retention under log.retention.ms (Kafka: log.retention.ms=null, no default).
    assert "log.retention.hours" in broker_entries, sorted(broker_entries)
    lrh = broker_entries["log.retention.hours"]
    assert (lrh.value, source_of(lrh)) == ("48", STATIC_BROKER)
    if "log.retention.ms" in broker_entries:
        assert broker_entries["log.retention.ms"].value in (None, str(48 * 3600 * 1000)), \
            broker_entries["log.retention.ms"]
    # Synonyms carry the broker key's own value (in hours), as Kafka reports
    # them: 48 from the file, then Kafka's default 168 (the dict keeps the
    # last; test_broker_configs.py checks the whole list over the wire).
    syn = rm.synonyms["log.retention.hours"]
    assert syn.value in ("48", "168"), syn


def test_max_message_bytes_topic_override_enforced(admin, broker):
    name = create_topic(admin, unique_topic("cfg-maxmsg"), partitions=1)
    incremental(admin, name, [("max.message.bytes", "2000", SET)])
    p = producer(broker.bootstrap, **{"linger.ms": 0, "compression.type": "none"})
    results = []
    p.produce(name, b"x" * 5000, partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(15)  # separate batches: Kafka refuses a too-large batch as a whole
    p.produce(name, b"y" * 100, partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(15)
    codes = sorted(e.code() if e else 0 for e in results)
    assert codes == sorted([0, KafkaError.MSG_SIZE_TOO_LARGE]), results
    assert watermarks(broker.bootstrap, name) == (0, 1)


# ==========================================================================
# compression.type and message.timestamp.type on the topic
# ==========================================================================


def fetch_v11_batches(bootstrap, topic, partition=0, offset=0):
    """Fetch v11 (zstd-capable) over a raw connection; returns the complete record
    batches as (base_offset, attributes, record_count) tuples."""
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(kw.API_FETCH, 11, kw.fetch_v11_body(topic, partition, offset))
    top, topics = kw.parse_fetch_v11(r)
    assert top == 0
    p = topics[0][1][0]
    assert p["error_code"] == 0, p
    return [(base, attrs, count) for base, attrs, count, _ in kw.record_batches(p["records"])]


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_topic_compression_zstd_recompresses_gzip_batches(admin, broker, idempotent):
    name = create_topic(admin, unique_topic("cfg-zstd"), partitions=1,
                        config={"compression.type": "zstd"})
    records = [(b"k%d" % (i % 7), b"value-%d-" % i + b"z" * 200) for i in range(500)]
    produce_all(broker.bootstrap, name, records, **{
        "compression.type": "gzip", "linger.ms": 20, "enable.idempotence": idempotent})

    batches = fetch_v11_batches(broker.bootstrap, name)
    assert batches, "no batches fetched"
    assert sum(c for _, _, c in batches) == 500
    codecs = {a & 0x07 for _, a, _ in batches}
    assert codecs == {4}, "stored batch codecs %s, expected only zstd (4)" % codecs

    msgs, eof, _ = read_partition(broker.bootstrap, name)
    assert eof
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == [
        (i, k, v) for i, (k, v) in enumerate(records)]


def test_topic_compression_producer_keeps_batches_as_sent(admin, broker):
    name = create_topic(admin, unique_topic("cfg-asis"), partitions=1)  # producer (default)
    # Compressible values: librdkafka sends a batch uncompressed when the codec
    # would make it larger, which a tiny batch (split off under load) can be.
    produce_all(broker.bootstrap, name, [(None, b"v%d-" % i + b"x" * 300) for i in range(50)],
                **{"compression.type": "snappy", "linger.ms": 20})
    codecs = {a & 0x07 for _, a, _ in fetch_v11_batches(broker.bootstrap, name)}
    assert codecs == {2}, codecs  # snappy


def test_log_append_time_stamps_batches(admin, broker):
    name = create_topic(admin, unique_topic("cfg-lat"), partitions=1,
                        config={"message.timestamp.type": "LogAppendTime"})
    old = int(time.time() * 1000) - 86400 * 1000
    before = int(time.time() * 1000)
    reports = produce_all(broker.bootstrap, name, [(None, b"v%d" % i, old) for i in range(5)])
    after = int(time.time() * 1000)
    for _, _, (ttype, ts) in reports:
        assert ttype == TIMESTAMP_LOG_APPEND_TIME, "delivery report timestamp type %s" % ttype
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)
    msgs, _, _ = read_partition(broker.bootstrap, name)
    assert len(msgs) == 5
    for m in msgs:
        ttype, ts = m.timestamp()
        assert ttype == TIMESTAMP_LOG_APPEND_TIME, ttype
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)
    # A CreateTime topic keeps the producer's timestamp.
    plain = create_topic(admin, unique_topic("cfg-ct"), partitions=1)
    produce_all(broker.bootstrap, plain, [(None, b"v", old)])
    (m,), _, _ = read_partition(broker.bootstrap, plain)
    assert m.timestamp() == (TIMESTAMP_CREATE_TIME, old)


# ==========================================================================
# Retention
# ==========================================================================


def test_time_retention_moves_log_start_and_consumers_reset(make_broker):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("ret-time"), partitions=1,
                        config={"retention.ms": "2000"})
    produce_all(b.bootstrap, name, [(None, b"old-%d" % i) for i in range(50)],
                **{"linger.ms": 0})
    produced_at = time.monotonic()
    size_before = partition_size(b.bootstrap, name)
    assert size_before > 50 * 5

    # Not before retention.ms has passed.
    time.sleep(max(0.0, produced_at + 1.0 - time.monotonic()))
    assert watermarks(b.bootstrap, name) == (0, 50), "records removed before retention.ms"

    # Then within retention.ms + check interval + slack.
    wait_until("earliest offset moves to 50",
               lambda: watermarks(b.bootstrap, name) == (50, 50), timeout=10)
    elapsed = time.monotonic() - produced_at
    assert elapsed >= 1.9, "removed after %.2fs with retention.ms=2000" % elapsed
    assert admin_offsets(admin, name) == (50, 50)
    assert partition_size(b.bootstrap, name) == 0

    # A raw fetch below the log start: OFFSET_OUT_OF_RANGE.
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(kw.API_FETCH, 4, kw.fetch_v4_body(name, 0, 10, max_wait_ms=0))
        _, topics = kw.parse_fetch_v4(r)
    assert topics[0]["partitions"][0]["error_code"] == kw.OFFSET_OUT_OF_RANGE

    # Keep what comes next, then consumers positioned at an old offset reset.
    incremental(admin, name, [("retention.ms", "3600000", SET)])
    time.sleep(0.6)  # let a pass that began before the change finish
    produce_all(b.bootstrap, name, [(None, b"new-%d" % i) for i in range(10)])
    assert watermarks(b.bootstrap, name) == (50, 60)

    msgs, _, _ = read_partition(b.bootstrap, name, start=10, **{"auto.offset.reset": "earliest"})
    assert [(m.offset(), m.value()) for m in msgs] == [(50 + i, b"new-%d" % i)
                                                       for i in range(10)]

    c = consumer(b.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(name, 0, 5)])
        errs = []
        deadline = time.monotonic() + 10
        while not errs and time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.5):
                assert not (m.error() is None), "read %d from below the log start" % m.offset()
                errs.append(m.error())
        assert errs and errs[0].code() == KafkaError._AUTO_OFFSET_RESET, errs
        assert "out of range" in errs[0].str().lower(), errs[0].str()
    finally:
        c.close()


def test_size_retention_keeps_partition_within_retention_bytes(make_broker):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("ret-size"), partitions=1)
    n = 100
    produce_all(b.bootstrap, name, [(None, b"%04d" % i + b"s" * 996) for i in range(n)],
                flush_each=True, **{"linger.ms": 0, "compression.type": "none"})
    size_before = partition_size(b.bootstrap, name)
    batch = size_before / n          # one record per batch
    assert 1000 < batch < 1200, batch
    assert watermarks(b.bootstrap, name) == (0, n)

    limit = 20000
    incremental(admin, name, [("retention.bytes", str(limit), SET)])
    wait_until("log start moves", lambda: watermarks(b.bootstrap, name)[0] > 0, timeout=10)
    time.sleep(1.2)  # let further passes run: they must not remove more
    low, high = watermarks(b.bootstrap, name)
    assert high == n
    size = partition_size(b.bootstrap, name)
    # Whole batches go: within one batch of the limit either way.
    assert limit - batch <= size <= limit + batch, (size, limit, batch)
    assert abs(size - (n - low) * batch) <= batch, (size, low, batch)
    assert admin_offsets(admin, name) == (low, n)

    msgs, eof, _ = read_partition(b.bootstrap, name)
    assert eof
    assert [m.offset() for m in msgs] == list(range(low, n))
    assert msgs[0].value()[:4] == b"%04d" % low

    # The describe-all form (no topic filter) reports the same; every version agrees.
    for version in (1, 2, 3, 4):
        err, dirs = describe_log_dirs(b.bootstrap, None, version=version)
        assert err == 0 and len(dirs) == 1, (version, err, dirs)
        assert dirs[0]["sizes"][(name, 0)] == size, version
    err, dirs = describe_log_dirs(b.bootstrap, None, version=4)
    d = dirs[0]
    assert d["log_dir"] and d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"]


def test_retention_skips_compact_only_topics(make_broker):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    compact = create_topic(admin, unique_topic("ret-compact"), partitions=1,
                           config={"cleanup.policy": "compact", "retention.ms": "500",
                                   "min.compaction.lag.ms": "3600000"})
    both = create_topic(admin, unique_topic("ret-both"), partitions=1,
                        config={"cleanup.policy": "compact,delete", "retention.ms": "500",
                                "min.compaction.lag.ms": "3600000"})
    for t in (compact, both):
        produce_all(b.bootstrap, t, [(b"k%d" % i, b"v") for i in range(20)])
    wait_until("compact,delete topic loses old records",
               lambda: watermarks(b.bootstrap, both) == (20, 20), timeout=10)
    assert watermarks(b.bootstrap, compact) == (0, 20)


# ==========================================================================
# Compaction
# ==========================================================================


def test_compaction_keeps_latest_value_per_key(make_broker):
    """20,000 records over 100 keys, tombstones for 10 keys: the 90 live keys' latest
    values remain, at their original offsets; the partition shrinks. A small
    log.cleaner.io.buffer.size makes the pass write in many chunks."""
    b = fast_broker(make_broker, **{"log.cleaner.io.buffer.size": "65536"})
    admin = admin_client(b.bootstrap)
    # Held back by min.compaction.lag.ms until the log is complete and measured.
    name = create_topic(admin, unique_topic("compact"), partitions=1, config={
        "cleanup.policy": "compact", "delete.retention.ms": "100",
        "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "3600000"})
    n, keys = 20000, 100
    records = [(b"key-%d" % (i % keys), b"value-%d-" % i + b"p" * 80) for i in range(n)]
    records += [(b"key-%d" % k, None) for k in range(10)]  # tombstones
    produce_all(b.bootstrap, name, records, **{"linger.ms": 20, "compression.type": "none"})
    total = n + 10
    assert watermarks(b.bootstrap, name) == (0, total)

    time.sleep(1.6)  # three cleaner passes: nothing is old enough
    size_before = partition_size(b.bootstrap, name)
    msgs, eof, _ = read_partition(b.bootstrap, name)
    assert len(msgs) == total, "compacted despite min.compaction.lag.ms"
    assert size_before > n * 90

    incremental(admin, name, [("min.compaction.lag.ms", None, DELETE)])

    expected = [(n - keys + k, b"key-%d" % k, records[n - keys + k][1]) for k in range(10, keys)]
    prev = None

    def settled():
        nonlocal prev
        got, _, _ = read_partition(b.bootstrap, name, quiet=1.0)
        count = len(got)
        done = count < total and prev == count
        prev = count
        return got if done else None

    got, waited = wait_until("compaction settles", settled, timeout=30, interval=0.5)
    assert len(got) == len(expected), "read %d records, expected %d: first %r" % (
        len(got), len(expected), kv(got)[:5])
    assert kv(got) == expected, "first mismatches: %r" % [
        (g, e) for g, e in zip(kv(got), expected) if g != e][:3]
    offsets = [m.offset() for m in got]
    assert offsets == sorted(set(offsets))

    size_after = partition_size(b.bootstrap, name)
    assert size_after < size_before / 10, (size_before, size_after)
    # Compaction does not move the log start offset (as in Kafka).
    assert watermarks(b.bootstrap, name) == (0, total)

    # Records written after the cleaning point are read as written, after the compacted ones.
    incremental(admin, name, [("min.compaction.lag.ms", "3600000", SET)])
    time.sleep(0.6)
    newer = [(b"key-50", b"newer-%d" % i) for i in range(3)] + [(b"key-0", b"reborn"),
                                                                 (b"key-999", b"brand-new")]
    produce_all(b.bootstrap, name, newer)
    msgs, eof, position = read_partition(b.bootstrap, name)
    assert kv(msgs) == expected + [(total + i, k, v) for i, (k, v) in enumerate(newer)]
    assert eof and position == total + len(newer)


def test_consumer_reaches_end_when_compaction_removes_the_tail(make_broker):
    """Tombstones at the end of the log are removed; a consumer from earliest still
    reaches the high watermark (end-of-partition, position == high watermark), as a
    Kafka Streams restore or `kafka-console-consumer --max-messages` needs."""
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("compact-tail"), partitions=1, config={
        "cleanup.policy": "compact", "delete.retention.ms": "100",
        "min.compaction.lag.ms": "3600000"})
    produce_all(b.bootstrap, name, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"b", None)])
    time.sleep(0.3)
    incremental(admin, name, [("min.compaction.lag.ms", None, DELETE)])
    wait_until("compaction leaves only a=2",
               lambda: kv(read_partition(b.bootstrap, name, quiet=1.0)[0]) == [(2, b"a", b"2")],
               timeout=15, interval=0.3)
    assert watermarks(b.bootstrap, name) == (0, 4)
    msgs, eof, position = read_partition(b.bootstrap, name, quiet=5.0)
    assert kv(msgs) == [(2, b"a", b"2")]
    # The compacted batch still spans offsets 2..3, so the consumer reaches the end
    # (EOF). librdkafka's position() is the last delivered offset + 1 (3) even though
    # its fetch position has moved to the high watermark, as against Kafka.
    assert eof and position in (3, 4), (
        "consumer stuck at offset %s below the high watermark 4 (eof=%s)" % (position, eof))


def test_tombstones_kept_for_delete_retention_ms_then_removed(make_broker):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("compact-tomb"), partitions=1, config={
        "cleanup.policy": "compact", "delete.retention.ms": "3000"})
    produce_all(b.bootstrap, name, [(b"a", b"1"), (b"b", b"1"), (b"a", None), (b"c", b"1")])
    produced_at = time.monotonic()
    # The cleaner has run (a=1 is gone) but the tombstone is younger than 3 s.
    wait_until("a=1 compacted away",
               lambda: kv(read_partition(b.bootstrap, name, quiet=0.5)[0])[0][0] != 0,
               timeout=10, interval=0.3)
    got = kv(read_partition(b.bootstrap, name)[0])
    if time.monotonic() - produced_at < 2.5:
        assert got == [(1, b"b", b"1"), (2, b"a", None), (3, b"c", b"1")], got
    # No new writes: the tombstone still goes once delete.retention.ms has passed.
    wait_until("tombstone removed after delete.retention.ms",
               lambda: kv(read_partition(b.bootstrap, name, quiet=0.5)[0])
               == [(1, b"b", b"1"), (3, b"c", b"1")], timeout=15, interval=0.5)
    assert time.monotonic() - produced_at >= 2.9


def test_dirty_ratio_and_max_compaction_lag(make_broker):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    # Written as a delete topic, then switched to compact: everything is dirty at once.
    name = create_topic(admin, unique_topic("compact-ratio"), partitions=1)
    produce_all(b.bootstrap, name, [(b"k%d" % (i % 10), b"%d-" % i + b"r" * 300)
                                    for i in range(1000)])
    incremental(admin, name, [("cleanup.policy", "compact", SET),
                              ("min.cleanable.dirty.ratio", "0.9", SET)])
    wait_until("first compaction",
               lambda: len(read_partition(b.bootstrap, name, quiet=0.5)[0]) == 10, timeout=15,
               interval=0.3)

    # A small dirty tail (ratio well under 0.9) is left alone...
    produce_all(b.bootstrap, name, [(b"k0", b"again-1"), (b"k0", b"again-2")])
    time.sleep(2.0)
    got = kv(read_partition(b.bootstrap, name)[0])
    assert len(got) == 12 and got[-2:] == [(1000, b"k0", b"again-1"), (1001, b"k0", b"again-2")]

    # ...until it is older than max.compaction.lag.ms.
    incremental(admin, name, [("max.compaction.lag.ms", "1000", SET)])
    wait_until("max.compaction.lag.ms forces a pass",
               lambda: len(read_partition(b.bootstrap, name, quiet=0.5)[0]) == 10, timeout=10,
               interval=0.3)
    got = kv(read_partition(b.bootstrap, name)[0])
    assert got[-1] == (1001, b"k0", b"again-2")
    assert sorted(k for _, k, _ in got) == sorted(b"k%d" % i for i in range(10))


def test_keyless_records_rejected_on_compacted_topics(admin, broker):
    for policy in ("compact", "compact,delete"):
        name = create_topic(admin, unique_topic("compact-nokey"), partitions=1,
                            config={"cleanup.policy": policy})
        p = producer(broker.bootstrap, **{"linger.ms": 0})
        results = []
        p.produce(name, b"no key", partition=0, on_delivery=lambda e, m: results.append(e))
        p.flush(15)
        assert len(results) == 1 and results[0] is not None, results
        assert results[0].code() == KafkaError.INVALID_RECORD, results[0]
        assert watermarks(broker.bootstrap, name) == (0, 0)
        produce_all(broker.bootstrap, name, [(b"k", b"keyed")])
        assert watermarks(broker.bootstrap, name) == (0, 1)


# ==========================================================================
# DeleteRecords
# ==========================================================================


def delete_records(admin, topic, offset, partition=0):
    fs = admin.delete_records([TopicPartition(topic, partition, offset)], request_timeout=15)
    (f,) = fs.values()
    return f.result(timeout=20)


def test_delete_records_moves_log_start(admin, broker):
    name = create_topic(admin, unique_topic("delrec"), partitions=2)
    produce_all(broker.bootstrap, name, [(None, b"v%d" % i) for i in range(10)], flush_each=True,
                **{"linger.ms": 0})
    produce_all(broker.bootstrap, name, [(None, b"w%d" % i) for i in range(10, 20)])  # 1 batch
    size_before = partition_size(broker.bootstrap, name)

    assert delete_records(admin, name, 5).low_watermark == 5
    assert watermarks(broker.bootstrap, name) == (5, 20)
    assert admin_offsets(admin, name) == (5, 20)
    assert partition_size(broker.bootstrap, name) < size_before
    msgs, _, _ = read_partition(broker.bootstrap, name)
    assert [m.offset() for m in msgs] == list(range(5, 20))

    # In the middle of a batch: the start is exactly there, nothing before is read.
    assert delete_records(admin, name, 13).low_watermark == 13
    msgs, _, _ = read_partition(broker.bootstrap, name)
    assert [(m.offset(), m.value()) for m in msgs] == [(i, b"w%d" % i) for i in range(13, 20)]

    # Below the current start: no-op, reports the current start.
    assert delete_records(admin, name, 2).low_watermark == 13
    assert watermarks(broker.bootstrap, name) == (13, 20)

    # Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing changed.
    err = error_of(delete_records, admin, name, 21)
    assert err.code() == KafkaError.OFFSET_OUT_OF_RANGE, err
    assert watermarks(broker.bootstrap, name) == (13, 20)

    # The other partition is untouched; OFFSET_END (-1) means the high watermark.
    assert watermarks(broker.bootstrap, name, 1) == (0, 0)
    assert delete_records(admin, name, OFFSET_END).low_watermark == 20
    assert watermarks(broker.bootstrap, name) == (20, 20)
    assert partition_size(broker.bootstrap, name) == 0

    # The partition keeps working from there.
    reports = produce_all(broker.bootstrap, name, [(None, b"after")])
    assert reports[0][1] == 20


# ==========================================================================
# Restart
# ==========================================================================


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill9"])
def test_restart_keeps_configs_and_log_start_offsets(make_broker, hard):
    b = fast_broker(make_broker)
    admin = admin_client(b.bootstrap)
    scenario = create_topic(admin, unique_topic("rs-scenario"), partitions=5,
                            config=SCENARIO_CONFIG)
    incremental(admin, scenario, [("min.cleanable.dirty.ratio", "0.2", SET),
                                  ("cleanup.policy", "delete", APPEND),
                                  ("file.delete.delay.ms", None, DELETE)])
    altered = create_topic(admin, unique_topic("rs-altered"), partitions=1,
                           config={"segment.ms": "3600000"})
    alter(admin, altered, {"retention.bytes": "1000000", "max.message.bytes": "500000"})

    # Log start moved by DeleteRecords ...
    deleted = create_topic(admin, unique_topic("rs-delrec"), partitions=1)
    produce_all(b.bootstrap, deleted, [(None, b"d%d" % i) for i in range(30)])
    assert delete_records(admin, deleted, 12).low_watermark == 12
    # ... and by time retention (then retention lifted so nothing more goes).
    retained = create_topic(admin, unique_topic("rs-retain"), partitions=1,
                            config={"retention.ms": "1000"})
    produce_all(b.bootstrap, retained, [(None, b"r%d" % i) for i in range(20)])
    wait_until("retention", lambda: watermarks(b.bootstrap, retained) == (20, 20), timeout=10)
    incremental(admin, retained, [("retention.ms", "-1", SET)])
    time.sleep(0.6)
    produce_all(b.bootstrap, retained, [(None, b"r%d" % i) for i in range(20, 25)])

    topics = [scenario, altered, deleted, retained]
    configs = {t: snapshot(admin, t) for t in topics}
    assert configs[scenario]["cleanup.policy"] == ("compact,delete", DYNAMIC_TOPIC)
    assert configs[altered]["segment.ms"] == ("604800000", DEFAULT)
    marks = {t: watermarks(b.bootstrap, t) for t in topics}
    assert marks[deleted] == (12, 30) and marks[retained] == (20, 25)

    b.restart(hard=hard)
    admin = admin_client(b.bootstrap)
    for t in topics:
        assert snapshot(admin, t) == configs[t], t
        assert watermarks(b.bootstrap, t) == marks[t], t
    assert len(topic_metadata(admin, scenario).partitions) == 5
    msgs, _, _ = read_partition(b.bootstrap, deleted)
    assert [m.value() for m in msgs] == [b"d%d" % i for i in range(12, 30)]
    msgs, _, _ = read_partition(b.bootstrap, retained)
    assert [m.offset() for m in msgs] == list(range(20, 25))
    # The restored configs are in force (compacted topic still refuses keyless records).
    p = producer(b.bootstrap, **{"linger.ms": 0})
    res = []
    p.produce(scenario, b"no key", partition=0, on_delivery=lambda e, m: res.append(e))
    p.flush(15)
    assert res and res[0] is not None and res[0].code() == KafkaError.INVALID_RECORD, res


# ==========================================================================
# CreatePartitions
# ==========================================================================


def test_create_partitions_validate_only_and_fewer(admin):
    name = create_topic(admin, unique_topic("cp"), partitions=3,
                        config={"retention.ms": "999999"})
    before = snapshot(admin, name)

    fs = admin.create_partitions([NewPartitions(name, 6)], validate_only=True,
                                 request_timeout=15)
    assert fs[name].result(timeout=20) is None
    time.sleep(0.3)
    assert len(topic_metadata(admin, name).partitions) == 3

    for count in (2, 3):
        fs = admin.create_partitions([NewPartitions(name, count)], request_timeout=15)
        err = error_of(fs[name].result, timeout=20)
        assert err.code() == KafkaError.INVALID_PARTITIONS, err
        fs = admin.create_partitions([NewPartitions(name, count)], validate_only=True,
                                     request_timeout=15)
        err = error_of(fs[name].result, timeout=20)
        assert err.code() == KafkaError.INVALID_PARTITIONS, err
    assert len(topic_metadata(admin, name).partitions) == 3
    assert snapshot(admin, name) == before

    # New partitions get the topic's configs.
    fs = admin.create_partitions([NewPartitions(name, 4)], request_timeout=15)
    fs[name].result(timeout=20)
    assert snapshot(admin, name) == before
    _, dirs = describe_log_dirs(admin_bootstrap(admin), {name: [0, 1, 2, 3]})
    assert sorted(p for (t, p) in dirs[0]["sizes"] if t == name) == [0, 1, 2, 3]


def admin_bootstrap(admin):
    md = admin.list_topics(timeout=10)
    b = md.brokers[0]
    return "%s:%d" % (b.host, b.port)


# ==========================================================================
# ElectLeaders, DescribeTopicPartitions, ListPartitionReassignments
# ==========================================================================


def test_elect_leaders_not_needed_on_one_node(admin):
    # (No request_timeout: confluent-kafka 2.16's elect_leaders raises SystemError with it.)
    name = create_topic(admin, unique_topic("elect"), partitions=2)
    tps = [TopicPartition(name, 0), TopicPartition(name, 1)]
    result = admin.elect_leaders(ElectionType.PREFERRED, tps).result(20)
    assert len(result) == 2
    for tp, err in result.items():
        assert err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)

    # A partition that does not exist.
    result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(name, 9)]).result(20)
    ((tp, err),) = result.items()
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err

    # All partitions: nothing to do, no error.
    result = admin.elect_leaders(ElectionType.PREFERRED, None).result(20)
    for tp, err in result.items():
        assert err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)


API_DESCRIBE_TOPIC_PARTITIONS = 75
API_LIST_PARTITION_REASSIGNMENTS = 46


def describe_topic_partitions(bootstrap, topics, limit, cursor=None):
    """DescribeTopicPartitions v0 (flexible). cursor: None or (topic, partition).
    Returns (topics, next_cursor)."""
    body = kw.uvarint(len(topics) + 1) + b"".join(
        kw.compact_string(t) + kw.EMPTY_TAGGED_FIELDS for t in topics)
    body += kw.i32(limit)
    if cursor is None:
        body += kw.i8(-1)
    else:
        body += kw.i8(1) + kw.compact_string(cursor[0]) + kw.i32(cursor[1]) \
            + kw.EMPTY_TAGGED_FIELDS
    body += kw.EMPTY_TAGGED_FIELDS
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(API_DESCRIBE_TOPIC_PARTITIONS, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle

    def int_array(rr):
        return rr.compact_array(lambda x: x.i32())

    def partition(rr):
        p = {"error_code": rr.i16(), "partition": rr.i32(), "leader": rr.i32(),
             "leader_epoch": rr.i32(), "replicas": int_array(rr), "isr": int_array(rr),
             "elr": int_array(rr), "last_known_elr": int_array(rr),
             "offline": int_array(rr)}
        rr.skip_tagged_fields()
        return p

    def topic(rr):
        t = {"error_code": rr.i16(), "name": rr.compact_string(), "topic_id": rr._take(16),
             "is_internal": rr.bool(), "partitions": rr.compact_array(partition) or [],
             "authorized_operations": rr.i32()}
        rr.skip_tagged_fields()
        return t

    out = r.compact_array(topic) or []
    next_cursor = None
    if r.i8() != -1:
        next_cursor = (r.compact_string(), r.i32())
        r.skip_tagged_fields()
    r.skip_tagged_fields()
    assert r.remaining() == 0
    return out, next_cursor


def test_describe_topic_partitions_pages_with_cursor(admin, broker):
    base = unique_topic("dtp")
    a = create_topic(admin, base + "-a", partitions=3)
    bb = create_topic(admin, base + "-b", partitions=2)
    missing = base + "-zz-missing"

    pages, cursor, seen = 0, None, []
    while True:
        topics, cursor = describe_topic_partitions(broker.bootstrap, [bb, missing, a], 2, cursor)
        pages += 1
        for t in topics:
            if t["name"] == missing:
                assert t["error_code"] == kw.UNKNOWN_TOPIC_OR_PARTITION
                continue
            assert t["error_code"] == 0 and t["topic_id"] != b"\0" * 16 and not t["is_internal"]
            for p in t["partitions"]:
                assert p["error_code"] == 0
                assert (p["leader"], p["replicas"], p["isr"]) == (0, [0], [0]), p
                seen.append((t["name"], p["partition"]))
        if cursor is None or pages > 10:
            break
    assert seen == [(a, 0), (a, 1), (a, 2), (bb, 0), (bb, 1)], seen
    assert pages == 3

    # The topic id matches what DescribeTopics (Metadata) reports.
    topics, _ = describe_topic_partitions(broker.bootstrap, [a], 100)
    d = admin.describe_topics(TopicCollection([a]), request_timeout=15)[a].result(timeout=20)
    raw_id = base64.b64encode(topics[0]["topic_id"]).rstrip(b"=").decode()  # librdkafka form
    assert raw_id == str(d.topic_id), (raw_id, str(d.topic_id))


def test_list_partition_reassignments_is_empty(admin, broker):
    name = create_topic(admin, unique_topic("reassign"), partitions=2)
    for topics in (None, [(name, [0, 1])]):
        if topics is None:
            body = kw.i32(30000) + kw.uvarint(0) + kw.EMPTY_TAGGED_FIELDS
        else:
            body = kw.i32(30000) + kw.uvarint(len(topics) + 1) + b"".join(
                kw.compact_string(t) + kw.uvarint(len(ps) + 1)
                + b"".join(kw.i32(p) for p in ps) + kw.EMPTY_TAGGED_FIELDS
                for t, ps in topics) + kw.EMPTY_TAGGED_FIELDS
        with kw.KafkaConn.to(broker.bootstrap) as conn:
            r = conn.request(API_LIST_PARTITION_REASSIGNMENTS, 0, body, flexible=True)
        r.skip_tagged_fields()
        r.i32()
        assert r.i16() == 0
        r.compact_string()
        assert (r.compact_array(lambda rr: None) or []) == []
        r.skip_tagged_fields()
        assert r.remaining() == 0
