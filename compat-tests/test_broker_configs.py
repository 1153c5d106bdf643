"""Dynamic broker configs: AlterConfigs / IncrementalAlterConfigs / DescribeConfigs on
BROKER resources, as in Apache Kafka.

- Resource name "" is the cluster-wide default (source DYNAMIC_DEFAULT_BROKER_CONFIG);
  the broker's node id is its own value (DYNAMIC_BROKER_CONFIG). Per-broker beats the
  cluster default, which beats server.properties (STATIC_BROKER_CONFIG), which beats
  Kafka's defaults (DEFAULT_CONFIG).
- Only the broker keys that supply topic defaults change at runtime; static keys are
  refused with INVALID_REQUEST ("Cannot update these configs dynamically"), unknown names
  and bad values with INVALID_CONFIG, and a refused resource changes nothing.
- Topics without their own override follow the new broker value at once (DescribeConfigs
  sources and synonyms, max message size on produce, time retention); the values persist
  across restarts.

The per-broker resource goes through confluent-kafka's AdminClient. librdkafka cannot
address the cluster-default resource (rd_kafka_ConfigResource_new refuses an empty name,
confluent-kafka raises ValueError "Invalid ConfigResource"), so the "" resource goes over
raw DescribeConfigs v4 / AlterConfigs v2 / IncrementalAlterConfigs v1 requests, as Kafka's
Java AdminClient and kafka-configs.sh --entity-default send them.

The node id is read from Metadata (the harness writes node.id=0, so the per-broker
resource is "0" here; Kafka's KRaft quickstart would use "1").

Broker configs are broker-wide: every test starts its own broker (make_broker).
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, ResourceType)

import kafka_wire as kw
from ck_helpers import admin_client, create_topic, producer, wait_until, watermarks
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(90)

DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
DYNAMIC_BROKER = ConfigSource.DYNAMIC_BROKER_CONFIG.value
DYNAMIC_DEFAULT = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
STATIC_BROKER = ConfigSource.STATIC_BROKER_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value
# librdkafka's enum is the wire's ConfigSource; the raw requests below rely on it.
assert (DYNAMIC_TOPIC, DYNAMIC_BROKER, DYNAMIC_DEFAULT, STATIC_BROKER, DEFAULT) == (1, 2, 3, 4, 5)

SET = AlterConfigOpType.SET
DELETE = AlterConfigOpType.DELETE
WIRE_OP = {AlterConfigOpType.SET: 0, AlterConfigOpType.DELETE: 1,
           AlterConfigOpType.APPEND: 2, AlterConfigOpType.SUBTRACT: 3}

CLUSTER = ""            # the cluster-default BROKER resource
KAFKA_RETENTION_MS = "604800000"
KB10 = b"x" * 10240

# Every dynamically changeable broker key with a valid value, the topic config it
# supplies and the topic value that results (Kafka's LogConfig synonyms).
DYNAMIC_KEYS = [
    ("log.retention.ms", "86400000", "retention.ms", "86400000"),
    ("log.retention.minutes", "1440", "retention.ms", "86400000"),
    ("log.retention.hours", "24", "retention.ms", "86400000"),
    ("log.retention.bytes", "1073741824", "retention.bytes", "1073741824"),
    ("log.cleanup.policy", "compact", "cleanup.policy", "compact"),
    ("message.max.bytes", "2000000", "max.message.bytes", "2000000"),
    ("compression.type", "gzip", "compression.type", "gzip"),
    ("log.message.timestamp.type", "LogAppendTime", "message.timestamp.type", "LogAppendTime"),
    ("log.cleaner.delete.retention.ms", "3600000", "delete.retention.ms", "3600000"),
    ("log.cleaner.min.compaction.lag.ms", "1000", "min.compaction.lag.ms", "1000"),
    ("log.cleaner.max.compaction.lag.ms", "86400000", "max.compaction.lag.ms", "86400000"),
    ("log.cleaner.min.cleanable.ratio", "0.3", "min.cleanable.dirty.ratio", "0.3"),
    ("log.segment.bytes", "104857600", "segment.bytes", "104857600"),
    ("log.roll.ms", "3600000", "segment.ms", "3600000"),
    ("min.insync.replicas", "1", "min.insync.replicas", "1"),
    ("unclean.leader.election.enable", "true", "unclean.leader.election.enable", "true"),
]
# Listed as dynamic in the brief (and in Kafka); checked on its own below.
FLUSH_KEY = ("log.flush.interval.messages", "10000", "flush.messages", "10000")

# Known broker keys that are read once at start-up.
STATIC_KEYS = [
    ("log.dirs", "/tmp/runnel-elsewhere"),
    ("listeners", "PLAINTEXT://127.0.0.1:1"),
    ("node.id", "5"),
    ("broker.id", "5"),
    ("num.partitions", "7"),
    ("auto.create.topics.enable", "false"),
]

UNKNOWN_KEYS = ["no.such.broker.config", "retention.ms"]  # (the second is a topic-level name)

BAD_VALUES = [
    ("log.retention.ms", "abc"),
    ("log.retention.ms", "-5"),
    ("log.cleanup.policy", "bogus"),
    ("log.retention.bytes", "-7"),
    ("message.max.bytes", "-1"),
    ("log.segment.bytes", "lots"),
    ("compression.type", "brotli"),
    ("log.cleaner.min.cleanable.ratio", "1.5"),
    ("unclean.leader.election.enable", "maybe"),
]


def source_of(entry):
    return getattr(entry.source, "value", entry.source)


# --------------------------------------------------------------------------
# Raw requests for the cluster-default resource (and for exact synonym lists)
# --------------------------------------------------------------------------

API_DESCRIBE_CONFIGS = 32
API_ALTER_CONFIGS = 33
API_INCREMENTAL_ALTER_CONFIGS = 44
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
TAGS = kw.EMPTY_TAGGED_FIELDS


def _compact_array(items):
    return kw.uvarint(len(items) + 1) + b"".join(items)


def _alter_response(r, resource_type, name):
    """AlterConfigs v2 / IncrementalAlterConfigs v1 response for one resource:
    (error_code, error_message)."""
    r.skip_tagged_fields()
    r.i32()  # throttle

    def result(rr):
        out = (rr.i16(), rr.compact_string(), rr.i8(), rr.compact_string())
        rr.skip_tagged_fields()
        return out

    results = r.compact_array(result) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in the alter response"
    assert len(results) == 1, results
    code, message, rtype, rname = results[0]
    assert (rtype, rname) == (resource_type, name), results[0]
    return code, message


def raw_incremental(bootstrap, name, ops, validate_only=False, resource_type=RESOURCE_BROKER):
    """IncrementalAlterConfigs v1 on one resource. ops: [(key, value, AlterConfigOpType)].
    Returns (error_code, error_message)."""
    entries = [kw.compact_string(k) + kw.i8(WIRE_OP[op]) + kw.compact_string(v) + TAGS
               for k, v, op in ops]
    body = (_compact_array([kw.i8(resource_type) + kw.compact_string(name)
                            + _compact_array(entries) + TAGS])
            + kw.i8(1 if validate_only else 0) + TAGS)
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(API_INCREMENTAL_ALTER_CONFIGS, 1, body, flexible=True)
    return _alter_response(r, resource_type, name)


def raw_alter(bootstrap, name, configs, validate_only=False, resource_type=RESOURCE_BROKER):
    """AlterConfigs v2 on one resource (replaces its whole set). configs: {key: value}.
    Returns (error_code, error_message)."""
    entries = [kw.compact_string(k) + kw.compact_string(v) + TAGS for k, v in configs.items()]
    body = (_compact_array([kw.i8(resource_type) + kw.compact_string(name)
                            + _compact_array(entries) + TAGS])
            + kw.i8(1 if validate_only else 0) + TAGS)
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(API_ALTER_CONFIGS, 2, body, flexible=True)
    return _alter_response(r, resource_type, name)


def raw_describe(bootstrap, name, resource_type=RESOURCE_BROKER, keys=None, synonyms=True,
                 documentation=False):
    """DescribeConfigs v4 on one resource. Returns (error_code, error_message, configs)
    where configs is {key: {"value", "read_only", "source", "sensitive",
    "synonyms": [(name, value, source)]}} (synonyms in the order the broker sent them)."""
    key_list = kw.uvarint(0) if keys is None else _compact_array(
        [kw.compact_string(k) for k in keys])
    body = (_compact_array([kw.i8(resource_type) + kw.compact_string(name) + key_list + TAGS])
            + kw.i8(1 if synonyms else 0) + kw.i8(1 if documentation else 0) + TAGS)
    with kw.KafkaConn.to(bootstrap) as conn:
        r = conn.request(API_DESCRIBE_CONFIGS, 4, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle

    def synonym(rr):
        s = (rr.compact_string(), rr.compact_string(), rr.i8())
        rr.skip_tagged_fields()
        return s

    def config(rr):
        key = rr.compact_string()
        c = {"value": rr.compact_string(), "read_only": rr.bool(), "source": rr.i8(),
             "sensitive": rr.bool(), "synonyms": rr.compact_array(synonym) or []}
        c["type"] = rr.i8()
        c["documentation"] = rr.compact_string()
        rr.skip_tagged_fields()
        return key, c

    def result(rr):
        code, message, rtype, rname = rr.i16(), rr.compact_string(), rr.i8(), rr.compact_string()
        configs = rr.compact_array(config) or []
        rr.skip_tagged_fields()
        return code, message, rtype, rname, configs

    results = r.compact_array(result) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in the DescribeConfigs response"
    assert len(results) == 1, results
    code, message, rtype, rname, configs = results[0]
    assert (rtype, rname) == (resource_type, name), results[0][:4]
    out = dict(configs)
    assert len(out) == len(configs), "duplicate keys in DescribeConfigs: %r" % [
        k for k, _ in configs]
    return code, message, out


def topic_synonyms(bootstrap, topic, keys=None):
    """{topic config: [(name, value, source)]} of a topic, in the broker's order."""
    code, message, configs = raw_describe(bootstrap, topic, resource_type=RESOURCE_TOPIC,
                                          keys=keys)
    assert code == 0, (code, message)
    return {k: c["synonyms"] for k, c in configs.items()}


# --------------------------------------------------------------------------
# One interface over both BROKER resources
# --------------------------------------------------------------------------


class Configs:
    """A private broker's BROKER resources: CLUSTER ("") over raw requests, the node id
    through confluent-kafka's AdminClient; alter calls return (error_code, message)."""

    def __init__(self, b):
        self.b = b
        self.bootstrap = b.bootstrap
        self.admin = admin_client(b.bootstrap)
        md = self.admin.list_topics(timeout=10)
        assert len(md.brokers) == 1, md.brokers
        self.node = str(next(iter(md.brokers)))

    def reconnect(self):
        self.admin = admin_client(self.bootstrap)

    @staticmethod
    def _outcome(fs, res):
        try:
            fs[res].result(timeout=20)
            return 0, None
        except KafkaException as e:
            err = e.args[0]
            return err.code(), err.str()

    def incremental(self, resource, ops, validate_only=False):
        """ops: [(key, value, AlterConfigOpType)]."""
        if resource == CLUSTER:
            return raw_incremental(self.bootstrap, CLUSTER, ops, validate_only)
        res = ConfigResource(ResourceType.BROKER, resource, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
        fs = self.admin.incremental_alter_configs([res], request_timeout=15,
                                                  validate_only=validate_only)
        return self._outcome(fs, res)

    def alter(self, resource, configs, validate_only=False):
        """Non-incremental AlterConfigs: configs {key: value} replace the resource's set."""
        if resource == CLUSTER:
            return raw_alter(self.bootstrap, CLUSTER, configs, validate_only)
        res = ConfigResource(ResourceType.BROKER, resource, set_config=configs)
        with pytest.warns(DeprecationWarning):
            fs = self.admin.alter_configs([res], request_timeout=15,
                                          validate_only=validate_only)
        return self._outcome(fs, res)

    def ok_set(self, resource, *pairs):
        """SET key/value pairs; the request must succeed."""
        ops = [(k, v, SET) for k, v in pairs]
        got = self.incremental(resource, ops)
        assert got[0] == 0, "SET %r on BROKER %r: %r" % (pairs, resource, got)

    def ok_delete(self, resource, *keys):
        got = self.incremental(resource, [(k, None, DELETE) for k in keys])
        assert got[0] == 0, "DELETE %r on BROKER %r: %r" % (keys, resource, got)

    def describe_node(self):
        res = ConfigResource(ResourceType.BROKER, self.node)
        return self.admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)

    def node_snapshot(self):
        return {k: (e.value, source_of(e), e.is_read_only)
                for k, e in self.describe_node().items()}

    def cluster_entries(self):
        code, message, configs = raw_describe(self.bootstrap, CLUSTER)
        assert code == 0, "DescribeConfigs BROKER \"\": %s %s" % (code, message)
        return configs

    def dynamic(self, resource):
        """{key: value} set dynamically on the resource itself."""
        if resource == CLUSTER:
            configs = self.cluster_entries()
            for k, c in configs.items():
                assert c["source"] == DYNAMIC_DEFAULT, (k, c)
                assert not c["read_only"], (k, c)
            return {k: c["value"] for k, c in configs.items()}
        return {k: e.value for k, e in self.describe_node().items()
                if source_of(e) == DYNAMIC_BROKER}

    def topic(self, name):
        res = ConfigResource(ResourceType.TOPIC, name)
        return self.admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)

    def topic_value(self, name, key):
        e = self.topic(name)[key]
        return e.value, source_of(e)

    def topic_snapshot(self, name):
        return {k: (e.value, source_of(e)) for k, e in self.topic(name).items()}


@pytest.fixture
def cfg(make_broker):
    return Configs(make_broker())


# --------------------------------------------------------------------------
# Producing and offsets
# --------------------------------------------------------------------------


def plain_producer(bootstrap):
    # One record per request, uncompressed: the batch size is the record size.
    return producer(bootstrap, **{"linger.ms": 0, "compression.type": "none"})


def produce_one(p, topic, value, key=None):
    """Produces one record and waits for it; returns its delivery error (None = stored)."""
    results = []
    p.produce(topic, value, key=key, partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(15)
    assert len(results) == 1, "no delivery report within 15 s"
    return results[0]


def produce_many(bootstrap, topic, n, prefix=b"r"):
    p = plain_producer(bootstrap)
    errors = []
    for i in range(n):
        p.produce(topic, prefix + b"%d" % i, partition=0,
                  on_delivery=lambda e, m: errors.append(e))
    assert p.flush(30) == 0
    assert errors == [None] * n, errors[:3]


def code_name(code):
    return "%s (%s)" % (code, KafkaError(code).name() if isinstance(code, int) else "?")


# ==========================================================================
# Cluster default and per-broker values, their sources and effect on topics
# ==========================================================================


def test_cluster_default_set_describe_effect_delete(cfg):
    admin = cfg.admin
    before = create_topic(admin, unique_topic("bc-def-before"))
    own = create_topic(admin, unique_topic("bc-def-own"),
                       config={"retention.ms": "1000000", "cleanup.policy": "delete"})

    # Nothing set yet: the default resource lists nothing.
    assert cfg.cluster_entries() == {}

    cfg.ok_set(CLUSTER, ("log.retention.ms", "123456789"), ("log.cleanup.policy", "compact"))
    configs = cfg.cluster_entries()
    assert sorted(configs) == ["log.cleanup.policy", "log.retention.ms"], sorted(configs)
    for key, value in (("log.retention.ms", "123456789"), ("log.cleanup.policy", "compact")):
        c = configs[key]
        assert (c["value"], c["source"], c["read_only"], c["sensitive"]) == (
            value, DYNAMIC_DEFAULT, False, False), (key, c)
    # The broker's own resource shows the default with its source.
    node = cfg.describe_node()
    assert (node["log.retention.ms"].value, source_of(node["log.retention.ms"])) == (
        "123456789", DYNAMIC_DEFAULT)
    assert (node["log.cleanup.policy"].value, source_of(node["log.cleanup.policy"])) == (
        "compact", DYNAMIC_DEFAULT)
    assert cfg.dynamic(cfg.node) == {}

    # Topics without their own value follow at once, whether created before or after.
    after = create_topic(admin, unique_topic("bc-def-after"))
    for t in (before, after):
        entries = cfg.topic(t)
        rm = entries["retention.ms"]
        assert (rm.value, source_of(rm)) == ("123456789", DYNAMIC_DEFAULT), (t, rm.value,
                                                                               rm.source)
        assert not rm.is_default
        cp = entries["cleanup.policy"]
        assert (cp.value, source_of(cp)) == ("compact", DYNAMIC_DEFAULT), t
        # The synonyms start with the broker key in force. (Over raw DescribeConfigs:
        # confluent-kafka's synonyms dict keeps one entry per name, and Kafka may list a
        # name twice, e.g. with its DEFAULT_CONFIG value after the dynamic one.)
        syns = topic_synonyms(cfg.bootstrap, t)
        assert syns["retention.ms"][:1] == [("log.retention.ms", "123456789", DYNAMIC_DEFAULT)], \
            syns["retention.ms"]
        assert syns["cleanup.policy"][:1] == [("log.cleanup.policy", "compact", DYNAMIC_DEFAULT)], \
            syns["cleanup.policy"]
    # A topic's own values win.
    assert cfg.topic_value(own, "retention.ms") == ("1000000", DYNAMIC_TOPIC)
    assert cfg.topic_value(own, "cleanup.policy") == ("delete", DYNAMIC_TOPIC)

    # In force: compacted topics refuse records without a key.
    p = plain_producer(cfg.bootstrap)
    err = produce_one(p, before, b"no key")
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    assert produce_one(p, own, b"no key") is None

    # DELETE: back to Kafka's defaults; the default was not copied into the topics.
    cfg.ok_delete(CLUSTER, "log.retention.ms", "log.cleanup.policy")
    assert cfg.cluster_entries() == {}
    for t in (before, after):
        assert cfg.topic_value(t, "retention.ms") == (KAFKA_RETENTION_MS, DEFAULT), t
        assert cfg.topic_value(t, "cleanup.policy") == ("delete", DEFAULT), t
    node = cfg.describe_node()
    assert source_of(node["log.cleanup.policy"]) in (STATIC_BROKER, DEFAULT)
    assert produce_one(p, before, b"no key") is None
    # DELETE of something not set is fine.
    cfg.ok_delete(CLUSTER, "log.retention.ms")

    # The coarser retention keys feed retention.ms too (in milliseconds).
    cfg.ok_set(CLUSTER, ("log.retention.hours", "2"))
    assert cfg.topic_value(before, "retention.ms") == ("7200000", DYNAMIC_DEFAULT)
    syns = topic_synonyms(cfg.bootstrap, before, ["retention.ms"])["retention.ms"]
    assert syns[:1] == [("log.retention.hours", "2", DYNAMIC_DEFAULT)], syns
    assert cfg.dynamic(CLUSTER) == {"log.retention.hours": "2"}


def test_per_broker_beats_cluster_default_beats_file(make_broker):
    cfg = Configs(make_broker({"log.retention.ms": "3333333"}))
    plain = create_topic(cfg.admin, unique_topic("bc-prec"))
    own = create_topic(cfg.admin, unique_topic("bc-prec-own"), config={"retention.ms": "99999"})
    assert cfg.topic_value(plain, "retention.ms") == ("3333333", STATIC_BROKER)

    cfg.ok_set(CLUSTER, ("log.retention.ms", "4444444"))
    assert cfg.topic_value(plain, "retention.ms") == ("4444444", DYNAMIC_DEFAULT)

    cfg.ok_set(cfg.node, ("log.retention.ms", "5555555"))
    assert cfg.topic_value(plain, "retention.ms") == ("5555555", DYNAMIC_BROKER)
    assert cfg.topic_value(own, "retention.ms") == ("99999", DYNAMIC_TOPIC)

    # Every layer is listed among the synonyms, the one in force first.
    code, _, topic = raw_describe(cfg.bootstrap, plain, resource_type=RESOURCE_TOPIC,
                                  keys=["retention.ms"])
    assert code == 0
    rm = topic["retention.ms"]
    assert (rm["value"], rm["source"]) == ("5555555", DYNAMIC_BROKER)
    syns = rm["synonyms"]
    assert syns and syns[0] == ("log.retention.ms", "5555555", DYNAMIC_BROKER), syns
    for s in [("log.retention.ms", "4444444", DYNAMIC_DEFAULT),
              ("log.retention.ms", "3333333", STATIC_BROKER)]:
        assert s in syns, (s, syns)
    # The topic override comes first for a topic that has one.
    code, _, topic = raw_describe(cfg.bootstrap, own, resource_type=RESOURCE_TOPIC,
                                  keys=["retention.ms"])
    assert topic["retention.ms"]["synonyms"][0] == ("retention.ms", "99999", DYNAMIC_TOPIC)
    assert ("log.retention.ms", "5555555", DYNAMIC_BROKER) in topic["retention.ms"]["synonyms"]

    # Both resources describe their own layer.
    node = cfg.describe_node()["log.retention.ms"]
    assert (node.value, source_of(node), node.is_read_only) == ("5555555", DYNAMIC_BROKER, False)
    assert cfg.dynamic(cfg.node) == {"log.retention.ms": "5555555"}
    assert cfg.dynamic(CLUSTER) == {"log.retention.ms": "4444444"}

    # Peeling the layers off again.
    cfg.ok_delete(cfg.node, "log.retention.ms")
    assert cfg.topic_value(plain, "retention.ms") == ("4444444", DYNAMIC_DEFAULT)
    node = cfg.describe_node()["log.retention.ms"]
    assert (node.value, source_of(node)) == ("4444444", DYNAMIC_DEFAULT)
    assert cfg.dynamic(cfg.node) == {}

    cfg.ok_delete(CLUSTER, "log.retention.ms")
    assert cfg.topic_value(plain, "retention.ms") == ("3333333", STATIC_BROKER)
    node = cfg.describe_node()["log.retention.ms"]
    assert (node.value, source_of(node)) == ("3333333", STATIC_BROKER)
    assert cfg.topic_value(own, "retention.ms") == ("99999", DYNAMIC_TOPIC)


def _dynamic_key_failures(cfg, plain, key, value, topic_key, topic_value):
    """SET then DELETE key on both resources; what went wrong, as messages."""
    failures = []
    for resource, source in ((cfg.node, DYNAMIC_BROKER), (CLUSTER, DYNAMIC_DEFAULT)):
        where = "%s on BROKER %r" % (key, resource)
        code, message = cfg.incremental(resource, [(key, value, SET)])
        if code != 0:
            failures.append("%s=%s refused: %s %s" % (where, value, code_name(code), message))
            continue
        if cfg.dynamic(resource) != {key: value}:
            failures.append("%s: dynamic values %r" % (where, cfg.dynamic(resource)))
        e = cfg.describe_node().get(key)
        if e is None or (e.value, source_of(e), e.is_read_only) != (value, source, False):
            failures.append("%s: broker entry (value, source, read-only) %r" % (
                where, e and (e.value, source_of(e), e.is_read_only)))
        got = cfg.topic_value(plain, topic_key)
        if got != (topic_value, source):
            failures.append("%s: topic %s is %r, expected %r" % (
                where, topic_key, got, (topic_value, source)))
        code, message = cfg.incremental(resource, [(key, None, DELETE)])
        if code != 0:
            failures.append("%s: DELETE refused: %s %s" % (where, code_name(code), message))
        elif cfg.dynamic(resource) != {}:
            failures.append("%s: left after DELETE: %r" % (where, cfg.dynamic(resource)))
        elif cfg.topic_value(plain, topic_key)[1] not in (STATIC_BROKER, DEFAULT):
            failures.append("%s: topic %s after DELETE %r" % (
                where, topic_key, cfg.topic_value(plain, topic_key)))
    return failures


def test_every_dynamic_key_accepted_on_both_resources(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-keys"))
    failures = []
    for key, value, topic_key, topic_value in DYNAMIC_KEYS:
        failures += _dynamic_key_failures(cfg, plain, key, value, topic_key, topic_value)
    assert not failures, "\n".join(failures)


def test_log_flush_interval_messages_is_static(cfg):
    """Runnel's choice (Kafka allows it dynamically): log.flush.interval.messages
    picks the write path's fsync policy at start-up, so it is refused at runtime
    with INVALID_REQUEST, reported read-only, and nothing changes."""
    plain = create_topic(cfg.admin, unique_topic("bc-flush"))
    key = FLUSH_KEY[0]
    before = cfg.describe_node()[key]
    assert before.is_read_only, "%s should be reported read-only" % key
    for resource in (CLUSTER, cfg.node):
        code, message = cfg.incremental(resource, [(key, "1", SET)])[:2]
        assert code == KafkaError.INVALID_REQUEST, (resource, code_name(code), message)
        assert "Cannot update these configs dynamically" in (message or "") and key in message
    after = cfg.describe_node()[key]
    assert (after.value, source_of(after)) == (before.value, source_of(before))
    assert produce_one(plain_producer(cfg.bootstrap), plain, b"v") is None
    assert watermarks(cfg.bootstrap, plain) == (0, 1)


def test_describe_broker_resources(cfg):
    b = cfg.b
    entries = cfg.describe_node()
    assert len(entries) >= 20, sorted(entries)
    for key in ("log.dirs", "listeners", "node.id", "broker.id", "num.partitions",
                "auto.create.topics.enable"):
        assert key in entries, (key, sorted(entries))
        assert entries[key].is_read_only, key
    assert entries["log.dirs"].value == str(b.data_dir)
    assert source_of(entries["log.dirs"]) == STATIC_BROKER
    assert entries["node.id"].value == cfg.node
    for key, _, _, _ in DYNAMIC_KEYS:
        if key in ("log.retention.ms", "log.retention.minutes"):
            continue  # Kafka lists them with a null value when unset; not required here
        assert key in entries, (key, sorted(entries))
        e = entries[key]
        assert not e.is_read_only, key
        assert source_of(e) in (STATIC_BROKER, DEFAULT), (key, e.source)
    assert entries["message.max.bytes"].value == "1048588"
    assert cfg.cluster_entries() == {}

    cfg.ok_set(cfg.node, ("message.max.bytes", "3000000"))
    cfg.ok_set(CLUSTER, ("message.max.bytes", "2500000"), ("log.segment.bytes", "200000000"))
    entries = cfg.describe_node()
    e = entries["message.max.bytes"]
    assert (e.value, source_of(e), e.is_read_only) == ("3000000", DYNAMIC_BROKER, False)
    e = entries["log.segment.bytes"]
    assert (e.value, source_of(e), e.is_read_only) == ("200000000", DYNAMIC_DEFAULT, False)
    assert entries["log.dirs"].is_read_only and entries["log.dirs"].value == str(b.data_dir)

    # "" lists only the cluster defaults.
    configs = cfg.cluster_entries()
    assert {k: (c["value"], c["source"], c["read_only"]) for k, c in configs.items()} == {
        "message.max.bytes": ("2500000", DYNAMIC_DEFAULT, False),
        "log.segment.bytes": ("200000000", DYNAMIC_DEFAULT, False)}

    # The broker's synonyms: every layer, the one in force first; a key filter works.
    code, _, node = raw_describe(cfg.bootstrap, cfg.node, keys=["message.max.bytes"])
    assert code == 0 and sorted(node) == ["message.max.bytes"], sorted(node)
    syns = node["message.max.bytes"]["synonyms"]
    assert syns and syns[0] == ("message.max.bytes", "3000000", DYNAMIC_BROKER), syns
    assert ("message.max.bytes", "2500000", DYNAMIC_DEFAULT) in syns, syns
    code, _, only = raw_describe(cfg.bootstrap, CLUSTER, keys=["log.segment.bytes"])
    assert code == 0 and sorted(only) == ["log.segment.bytes"], only


# ==========================================================================
# Refusals: nothing changes
# ==========================================================================


def _prime(cfg):
    """Existing dynamic values on both resources, to check that refusals keep them."""
    cfg.ok_set(CLUSTER, ("log.retention.bytes", "777777"))
    cfg.ok_set(cfg.node, ("log.retention.bytes", "888888"))
    return cfg.node_snapshot(), cfg.cluster_entries()


def _all_refusals(cfg, key, value):
    """(label, error_code, message) for key=value sent along with a valid change
    (log.roll.ms), on both resources, incremental and not, applied and validate_only."""
    out = []
    for resource in (cfg.node, CLUSTER):
        for validate_only in (False, True):
            label = "BROKER %r%s" % (resource, " validate_only" if validate_only else "")
            code, message = cfg.incremental(
                resource, [("log.roll.ms", "3600000", SET), (key, value, SET)],
                validate_only=validate_only)
            out.append(("IncrementalAlterConfigs " + label, code, message))
            # AlterConfigs would also drop the primed log.retention.bytes if applied.
            code, message = cfg.alter(resource, {"log.roll.ms": "3600000", key: value},
                                      validate_only=validate_only)
            out.append(("AlterConfigs " + label, code, message))
    return out


def _check_unchanged(cfg, node_before, cluster_before, plain):
    assert cfg.node_snapshot() == node_before
    assert cfg.cluster_entries() == cluster_before
    assert cfg.dynamic(cfg.node) == {"log.retention.bytes": "888888"}
    assert cfg.dynamic(CLUSTER) == {"log.retention.bytes": "777777"}
    assert cfg.topic_value(plain, "retention.bytes") == ("888888", DYNAMIC_BROKER)
    assert cfg.topic_value(plain, "segment.ms")[1] in (STATIC_BROKER, DEFAULT)


def _refusal_failures(cfg, pairs, expected, must_contain=()):
    """Sends each (key, value) through every altering request; lists each
    answer that is not `expected` or whose message lacks the key or any of
    `must_contain`."""
    failures = []
    for key, value in pairs:
        for label, code, message in _all_refusals(cfg, key, value):
            if code != expected:
                failures.append("%s %s=%s: %s %s, expected %s" % (
                    label, key, value, code_name(code), message, code_name(expected)))
            elif any(part not in (message or "") for part in (key,) + tuple(must_contain)):
                failures.append("%s %s=%s: message %r" % (label, key, value, message))
    return failures


def test_static_keys_refused_nothing_changed(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-static"))
    node_before, cluster_before = _prime(cfg)
    failures = _refusal_failures(cfg, STATIC_KEYS, KafkaError.INVALID_REQUEST,
                                 ("Cannot update these configs dynamically",))
    assert not failures, "\n".join(failures)
    _check_unchanged(cfg, node_before, cluster_before, plain)
    # The broker runs on as configured.
    assert cfg.node_snapshot()["num.partitions"][0] == "1"
    auto = unique_topic("bc-static-auto")
    assert produce_one(plain_producer(cfg.bootstrap), auto, b"v") is None


def test_unknown_keys_refused(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-unknown"))
    node_before, cluster_before = _prime(cfg)
    failures = _refusal_failures(cfg, [(k, "1000") for k in UNKNOWN_KEYS],
                                 KafkaError.INVALID_CONFIG)
    assert not failures, "\n".join(failures)
    _check_unchanged(cfg, node_before, cluster_before, plain)
    for key in UNKNOWN_KEYS:
        assert key not in cfg.describe_node(), key

    # A broker id that is not this broker's (raw: librdkafka would wait for broker 7).
    other = str(int(cfg.node) + 7)
    for code, message in (raw_incremental(cfg.bootstrap, other, [("log.roll.ms", "1000", SET)]),
                          raw_alter(cfg.bootstrap, other, {"log.roll.ms": "1000"}),
                          raw_describe(cfg.bootstrap, other)[:2]):
        assert code == KafkaError.INVALID_REQUEST, (code_name(code), message)
    _check_unchanged(cfg, node_before, cluster_before, plain)


def test_bad_values_refused_nothing_changed(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-bad"))
    node_before, cluster_before = _prime(cfg)
    failures = _refusal_failures(cfg, BAD_VALUES, KafkaError.INVALID_CONFIG)
    assert not failures, "\n".join(failures)
    _check_unchanged(cfg, node_before, cluster_before, plain)
    # Still in force as before: a produce is judged by the old limits.
    assert produce_one(plain_producer(cfg.bootstrap), plain, KB10) is None


def test_validate_only_changes_nothing(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-validate"))
    node_before, cluster_before = _prime(cfg)
    topic_before = cfg.topic_snapshot(plain)
    for resource in (cfg.node, CLUSTER):
        got = cfg.incremental(resource, [("log.retention.ms", "1", SET),
                                         ("message.max.bytes", "2000", SET),
                                         ("log.retention.bytes", None, DELETE)],
                              validate_only=True)
        assert got[0] == 0, (resource, got)
        got = cfg.alter(resource, {"message.max.bytes": "2000"}, validate_only=True)
        assert got[0] == 0, (resource, got)
        got = cfg.alter(resource, {}, validate_only=True)
        assert got[0] == 0, (resource, got)
        # validate_only still reports what is wrong.
        code, _ = cfg.incremental(resource, [("log.retention.ms", "abc", SET)],
                                  validate_only=True)
        assert code == KafkaError.INVALID_CONFIG, (resource, code_name(code))
        code, _ = cfg.incremental(resource, [("log.dirs", "/x", SET)], validate_only=True)
        assert code == KafkaError.INVALID_REQUEST, (resource, code_name(code))
    _check_unchanged(cfg, node_before, cluster_before, plain)
    assert cfg.topic_snapshot(plain) == topic_before
    assert produce_one(plain_producer(cfg.bootstrap), plain, KB10) is None


# ==========================================================================
# AlterConfigs (non-incremental) replaces the resource's set
# ==========================================================================


def test_alter_configs_replaces_the_resource_set(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-alter"))

    assert cfg.alter(cfg.node, {"log.retention.ms": "1111111",
                                "log.cleaner.delete.retention.ms": "2222"})[0] == 0
    assert cfg.dynamic(cfg.node) == {"log.retention.ms": "1111111",
                                     "log.cleaner.delete.retention.ms": "2222"}
    assert cfg.alter(CLUSTER, {"log.segment.bytes": "50000000", "compression.type": "gzip"})[0] \
        == 0
    assert cfg.dynamic(CLUSTER) == {"log.segment.bytes": "50000000", "compression.type": "gzip"}
    assert len(cfg.dynamic(cfg.node)) == 2  # the other resource is untouched

    # A second AlterConfigs replaces the first one's values.
    assert cfg.alter(cfg.node, {"log.roll.ms": "3600000"})[0] == 0
    assert cfg.dynamic(cfg.node) == {"log.roll.ms": "3600000"}
    assert cfg.dynamic(CLUSTER) == {"log.segment.bytes": "50000000", "compression.type": "gzip"}
    t = cfg.topic_snapshot(plain)
    assert t["retention.ms"] == (KAFKA_RETENTION_MS, DEFAULT)
    assert t["delete.retention.ms"] == ("86400000", DEFAULT)
    assert t["segment.ms"] == ("3600000", DYNAMIC_BROKER)
    assert t["segment.bytes"] == ("50000000", DYNAMIC_DEFAULT)
    assert t["compression.type"] == ("gzip", DYNAMIC_DEFAULT)

    assert cfg.alter(CLUSTER, {"compression.type": "lz4"})[0] == 0
    assert cfg.dynamic(CLUSTER) == {"compression.type": "lz4"}
    assert cfg.topic_value(plain, "segment.bytes") == ("1073741824", DEFAULT)
    assert cfg.topic_value(plain, "compression.type") == ("lz4", DYNAMIC_DEFAULT)

    # An empty AlterConfigs removes everything set on the resource.
    assert cfg.alter(CLUSTER, {})[0] == 0
    assert cfg.alter(cfg.node, {})[0] == 0
    assert cfg.dynamic(CLUSTER) == {}
    assert cfg.dynamic(cfg.node) == {}
    for key, (_, source) in cfg.topic_snapshot(plain).items():
        assert source in (STATIC_BROKER, DEFAULT), (key, source)


# ==========================================================================
# Restart
# ==========================================================================


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill9"])
def test_dynamic_configs_survive_restart(make_broker, hard):
    b = make_broker({"message.max.bytes": "1000000"})
    cfg = Configs(b)
    plain = create_topic(cfg.admin, unique_topic("bc-restart"))
    own = create_topic(cfg.admin, unique_topic("bc-restart-own"),
                       config={"max.message.bytes": "100000"})
    cfg.ok_set(CLUSTER, ("message.max.bytes", "2000"), ("log.retention.ms", "4444444"))
    cfg.ok_set(cfg.node, ("log.segment.bytes", "50000000"),
               ("log.cleaner.delete.retention.ms", "1234"))
    node_before, cluster_before = cfg.node_snapshot(), cfg.cluster_entries()
    topics_before = {t: cfg.topic_snapshot(t) for t in (plain, own)}
    assert topics_before[plain]["max.message.bytes"] == ("2000", DYNAMIC_DEFAULT)

    b.restart(hard=hard)
    cfg.reconnect()
    assert cfg.cluster_entries() == cluster_before
    assert cfg.node_snapshot() == node_before
    assert cfg.dynamic(cfg.node) == {"log.segment.bytes": "50000000",
                                     "log.cleaner.delete.retention.ms": "1234"}
    for t, snap in topics_before.items():
        assert cfg.topic_snapshot(t) == snap, t
    # In force after the restart, over server.properties' message.max.bytes.
    p = plain_producer(b.bootstrap)
    err = produce_one(p, plain, KB10)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert produce_one(p, own, KB10) is None

    # Deletions persist too: nothing comes back after another restart.
    cfg.ok_delete(CLUSTER, "message.max.bytes")
    cfg.ok_delete(cfg.node, "log.cleaner.delete.retention.ms")
    b.restart(hard=hard)
    cfg.reconnect()
    assert cfg.dynamic(CLUSTER) == {"log.retention.ms": "4444444"}
    assert cfg.dynamic(cfg.node) == {"log.segment.bytes": "50000000"}
    assert cfg.topic_value(plain, "max.message.bytes") == ("1000000", STATIC_BROKER)
    assert produce_one(plain_producer(b.bootstrap), plain, KB10) is None


# ==========================================================================
# Behaviour: message.max.bytes on produce, log.retention.ms on stored records
# ==========================================================================


def test_message_max_bytes_applies_to_produce(cfg):
    plain = create_topic(cfg.admin, unique_topic("bc-maxmsg"))
    own = create_topic(cfg.admin, unique_topic("bc-maxmsg-own"),
                       config={"max.message.bytes": "100000"})
    p = plain_producer(cfg.bootstrap)
    assert produce_one(p, plain, KB10) is None

    cfg.ok_set(CLUSTER, ("message.max.bytes", "2000"))
    assert cfg.topic_value(plain, "max.message.bytes") == ("2000", DYNAMIC_DEFAULT)
    err = produce_one(p, plain, KB10)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert produce_one(p, plain, b"s" * 100) is None
    assert produce_one(p, own, KB10) is None  # the topic's own limit

    # The per-broker value wins over the default, and DELETE brings the default back.
    cfg.ok_set(cfg.node, ("message.max.bytes", "50000"))
    assert produce_one(p, plain, KB10) is None
    cfg.ok_delete(cfg.node, "message.max.bytes")
    err = produce_one(p, plain, KB10)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    # Setting it back lets the record through again; so does removing it.
    cfg.ok_set(CLUSTER, ("message.max.bytes", "1048588"))
    assert produce_one(p, plain, KB10) is None
    cfg.ok_delete(CLUSTER, "message.max.bytes")
    assert cfg.topic_value(plain, "max.message.bytes") == ("1048588", DEFAULT)
    assert produce_one(p, plain, KB10) is None
    # Only the accepted records were stored.
    assert watermarks(cfg.bootstrap, plain) == (0, 5)
    assert watermarks(cfg.bootstrap, own) == (0, 1)


def test_retention_applies_to_topics_without_override(make_broker):
    b = make_broker({"log.retention.check.interval.ms": "500"})
    cfg = Configs(b)
    plain = create_topic(cfg.admin, unique_topic("bc-ret"))
    own = create_topic(cfg.admin, unique_topic("bc-ret-own"), config={"retention.ms": "3600000"})
    for t in (plain, own):
        produce_many(b.bootstrap, t, 20)
    produced_at = time.monotonic()

    # Kafka's default retention (7 days) keeps them over several retention passes.
    time.sleep(max(0.0, produced_at + 1.5 - time.monotonic()))
    assert watermarks(b.bootstrap, plain) == (0, 20)

    cfg.ok_set(CLUSTER, ("log.retention.ms", "1000"))
    assert cfg.topic_value(plain, "retention.ms") == ("1000", DYNAMIC_DEFAULT)
    wait_until("records older than the dynamic log.retention.ms removed",
               lambda: watermarks(b.bootstrap, plain) == (20, 20), timeout=15)
    assert watermarks(b.bootstrap, own) == (0, 20), "the topic's own retention.ms was ignored"

    # Removing the dynamic value: Kafka's default again, new records stay.
    cfg.ok_delete(CLUSTER, "log.retention.ms")
    assert cfg.topic_value(plain, "retention.ms") == (KAFKA_RETENTION_MS, DEFAULT)
    time.sleep(0.6)  # let a pass that began before the change finish
    produce_many(b.bootstrap, plain, 5, prefix=b"new")
    time.sleep(2.0)
    assert watermarks(b.bootstrap, plain) == (20, 25)
    assert watermarks(b.bootstrap, own) == (0, 20)


def test_describe_configs_documentation(cfg):
    """DescribeConfigs v3+ carries each config's documentation when asked for it
    (topic configs, and broker keys that supply topic defaults), and none when not."""
    topic = create_topic(cfg.admin, unique_topic("bc-doc"))
    code, _, configs = raw_describe(cfg.bootstrap, topic, RESOURCE_TOPIC, documentation=True)
    assert code == 0
    missing = [k for k, c in configs.items() if not c["documentation"]]
    assert not missing, missing
    assert "compact" in configs["cleanup.policy"]["documentation"]
    code, _, configs = raw_describe(cfg.bootstrap, topic, RESOURCE_TOPIC)
    assert code == 0 and all(c["documentation"] is None for c in configs.values())
    code, _, configs = raw_describe(cfg.bootstrap, cfg.node, documentation=True,
                                    keys=["log.retention.ms", "log.cleanup.policy"])
    assert code == 0
    assert configs["log.cleanup.policy"]["documentation"] == \
        raw_describe(cfg.bootstrap, topic, RESOURCE_TOPIC, keys=["cleanup.policy"],
                     documentation=True)[2]["cleanup.policy"]["documentation"]
    assert configs["log.retention.ms"]["documentation"]


def test_kafka_python_admin_alters_and_describes_broker_configs(cfg):
    """kafka-python's KafkaAdminClient (its own protocol code) on the BROKER resource."""
    from kafka.admin import ConfigResource as KpResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=cfg.bootstrap, request_timeout_ms=15000)
    try:
        res = KpResource(ConfigResourceType.BROKER, cfg.node, configs={"log.retention.ms": "123456"})
        assert a.alter_configs([res]) == {"broker": {cfg.node: "OK"}}
        got = a.describe_configs([KpResource(ConfigResourceType.BROKER, cfg.node)],
                                 config_filter="all")["broker"][cfg.node]
        e = got["log.retention.ms"]
        assert (e["value"], e["config_source"], e["read_only"]) == \
            ("123456", "DYNAMIC_BROKER_CONFIG", False)
        assert got["log.dirs"]["read_only"] is True
        refused = a.alter_configs(
            [KpResource(ConfigResourceType.BROKER, cfg.node, configs={"log.dirs": "/elsewhere"})],
            raise_on_unknown=False)["broker"][cfg.node]
        assert "InvalidRequest" in str(refused) and "log.dirs" in str(refused), refused
    finally:
        a.close()
    topic = create_topic(cfg.admin, unique_topic("bc-kp"))
    assert cfg.topic_value(topic, "retention.ms") == ("123456", DYNAMIC_BROKER)
