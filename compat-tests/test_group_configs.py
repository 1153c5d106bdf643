"""Group configs (Kafka 4's GROUP config resource, type 32 on the wire), an empty
cleanup.policy (Kafka 4.x, KIP-1161) and ListConfigResources (API 74).

- DescribeConfigs / AlterConfigs / IncrementalAlterConfigs on ConfigResource(GROUP, id)
  through confluent-kafka (librdkafka sends its ResourceType.GROUP as config resource
  type 32): the seven keys (consumer.session.timeout.ms, consumer.heartbeat.interval.ms,
  share.session.timeout.ms, share.heartbeat.interval.ms, share.record.lock.duration.ms,
  share.auto.offset.reset, share.isolation.level) are always listed, GROUP_CONFIG (8)
  for a group's own override and DEFAULT_CONFIG (5) otherwise; a group need not exist
  to have configs (and setting them does not create it).
- Values are bounded by the broker's group.* settings (Kafka's defaults: sessions
  45000..60000, heartbeats 5000..15000, record locks 15000..60000), a session timeout
  must exceed its heartbeat interval; an unknown key or a bad value is INVALID_CONFIG
  and nothing changes; the broker's group.* settings move the defaults and bounds.
- Overrides persist across a restart (SIGTERM and kill -9), DELETE removes one,
  AlterConfigs replaces the whole set; an empty group id is INVALID_REQUEST (raw
  requests: librdkafka refuses an empty resource name); with an authorizer the
  GROUP resource needs DESCRIBE_CONFIGS / ALTER_CONFIGS on the group.
- Cluster mode (3 brokers, etcd): a change through any broker is what every broker
  describes within moments, also a broker that was down while it changed.
- cleanup.policy may become empty (SUBTRACT of its last value, or SET ""): described
  as "" (topic override), and then neither time retention nor compaction removes
  anything (controls show both would have), while DeleteRecords still works.
- ListConfigResources v0/v1 over raw requests (kafka_wire.list_config_resources).

Brokers private to a test get fast background passes (200 ms).
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                   AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   ResourcePatternType, ResourceType)

import cluster_helpers
import kafka_wire as kw
from ck_helpers import admin_client, create_topic, producer, wait_until
from cluster_harness import etcd_bin
from runnel_harness import unique_topic
from test_broker_configs import raw_alter, raw_describe, raw_incremental
from test_topic_configs import (admin_offsets, delete_records, describe, error_of, incremental,
                                produce_all, read_partition, source_of)

pytestmark = pytest.mark.timeout(90)

# The cluster fixtures (module-scoped etcd, per-test cluster factory), re-exported so
# pytest finds them here.
etcd = cluster_helpers.etcd
cluster = cluster_helpers.cluster

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8
RESOURCE_CLIENT_METRICS = 16
RESOURCE_GROUP = 32

GROUP_CONFIG = ConfigSource.GROUP_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value
DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
# librdkafka's enum is the wire's ConfigSource; the raw requests below rely on it.
assert (GROUP_CONFIG, DEFAULT, DYNAMIC_TOPIC) == (8, 5, 1)

SET = AlterConfigOpType.SET
DELETE = AlterConfigOpType.DELETE
APPEND = AlterConfigOpType.APPEND
SUBTRACT = AlterConfigOpType.SUBTRACT

INVALID_CONFIG = 40
INVALID_REQUEST = 42

# Kafka 4's group configs and their defaults (no group.* keys in the broker's file).
GROUP_DEFAULTS = {
    "consumer.session.timeout.ms": "45000",
    "consumer.heartbeat.interval.ms": "5000",
    "share.session.timeout.ms": "45000",
    "share.heartbeat.interval.ms": "5000",
    "share.record.lock.duration.ms": "30000",
    "share.auto.offset.reset": "latest",
    "share.isolation.level": "read_uncommitted",
}
# DescribeConfigs v3+ config types: STRING 2, INT 3.
GROUP_TYPES = {k: (2 if k in ("share.auto.offset.reset", "share.isolation.level") else 3)
               for k in GROUP_DEFAULTS}

FAST = {"log.retention.check.interval.ms": "200", "log.cleaner.backoff.ms": "200"}
PROPAGATION = 5.0     # seconds a change may take to reach every broker of a cluster


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


@pytest.fixture
def admin(broker):
    return admin_client(broker.bootstrap)


def gres(group, **kw_):
    return ConfigResource(ResourceType.GROUP, group, **kw_)


def describe_group(admin, group):
    res = gres(group)
    return admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)


def group_snapshot(admin, group):
    """{key: (value, source)} of everything DescribeConfigs reports for a group."""
    return {k: (e.value, source_of(e)) for k, e in describe_group(admin, group).items()}


def group_overrides(admin, group):
    """{key: value} set on the group itself."""
    return {k: e.value for k, e in describe_group(admin, group).items()
            if source_of(e) == GROUP_CONFIG}


def incr_group(admin, group, ops, validate_only=False):
    """IncrementalAlterConfigs on a GROUP resource. ops: [(key, value, AlterConfigOpType)]."""
    res = gres(group, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
    return admin.incremental_alter_configs([res], request_timeout=15,
                                           validate_only=validate_only)[res].result(timeout=20)


def alter_group(admin, group, configs, validate_only=False):
    """AlterConfigs (replaces the group's whole set of overrides)."""
    res = gres(group, set_config=configs)
    with pytest.warns(DeprecationWarning):
        fs = admin.alter_configs([res], request_timeout=15, validate_only=validate_only)
    return fs[res].result(timeout=20)


def expected_snapshot(overrides, defaults=GROUP_DEFAULTS):
    return {k: ((overrides[k], GROUP_CONFIG) if k in overrides else (v, DEFAULT))
            for k, v in defaults.items()}


def raw_group(bootstrap, group):
    """{key: (value, source)} of a group through a raw DescribeConfigs v4 sent to exactly
    `bootstrap` (cluster tests address each broker)."""
    code, message, configs = raw_describe(bootstrap, group, resource_type=RESOURCE_GROUP)
    assert code == 0, "DescribeConfigs GROUP %r: %s %s" % (group, code, message)
    return {k: (c["value"], c["source"]) for k, c in configs.items()}


def listed(bootstrap, types=(), version=1):
    """ListConfigResources: (error_code, sorted [(name, type)])."""
    _throttle, err, resources = kw.list_config_resources(bootstrap, version, types)
    assert len(resources) == len(set(resources)), "listed twice: %r" % resources
    return err, sorted(resources)


def not_internal(resources):
    return [(n, t) for n, t in resources if not (t == RESOURCE_TOPIC and n.startswith("__"))]


def group_ids(admin):
    res = admin.list_consumer_groups(request_timeout=15).result(timeout=20)
    return {g.group_id for g in res.valid}


# ==========================================================================
# DescribeConfigs / IncrementalAlterConfigs / AlterConfigs through confluent-kafka
# ==========================================================================


def test_group_configs_described_with_defaults(admin, broker):
    group = unique_topic("gcfg-none")
    entries = describe_group(admin, group)
    assert sorted(entries) == sorted(GROUP_DEFAULTS)
    for k, e in entries.items():
        assert (e.value, source_of(e)) == (GROUP_DEFAULTS[k], DEFAULT), (k, e.value, e.source)
        assert e.is_default and not e.is_read_only and not e.is_sensitive, k

    # The same on the wire: resource type 32 echoed, config types, documentation.
    code, message, configs = raw_describe(broker.bootstrap, group, resource_type=RESOURCE_GROUP,
                                          documentation=True)
    assert code == 0, (code, message)
    assert {k: (c["value"], c["source"], c["type"]) for k, c in configs.items()} == {
        k: (v, DEFAULT, GROUP_TYPES[k]) for k, v in GROUP_DEFAULTS.items()}
    for k, c in configs.items():
        assert not c["read_only"] and not c["sensitive"], (k, c)
        assert c["documentation"], "no documentation for %s" % k
    # Only the keys asked for.
    code, _, configs = raw_describe(broker.bootstrap, group, resource_type=RESOURCE_GROUP,
                                    keys=["share.isolation.level", "consumer.session.timeout.ms"])
    assert code == 0
    assert {k: c["value"] for k, c in configs.items()} == {
        "share.isolation.level": "read_uncommitted", "consumer.session.timeout.ms": "45000"}
    # Describing a group's configs does not create the group.
    assert group not in group_ids(admin)


def test_incremental_alter_group_configs(admin, broker):
    group, other = unique_topic("gcfg-incr"), unique_topic("gcfg-other")
    changes = {"consumer.session.timeout.ms": "50000", "consumer.heartbeat.interval.ms": "6000",
               "share.auto.offset.reset": "earliest", "share.isolation.level": "read_committed",
               "share.record.lock.duration.ms": "15000"}
    assert incr_group(admin, group, [(k, v, SET) for k, v in changes.items()]) is None
    assert group_snapshot(admin, group) == expected_snapshot(changes)
    assert raw_group(broker.bootstrap, group) == expected_snapshot(changes)
    entry = describe_group(admin, group)["consumer.session.timeout.ms"]
    assert not entry.is_default and not entry.is_read_only
    # Another group is not affected; the group was not created by having configs.
    assert group_snapshot(admin, other) == expected_snapshot({})
    assert group not in group_ids(admin)

    # SET over an override, DELETE one (back to the default), DELETE of an unset key.
    incr_group(admin, group, [("consumer.session.timeout.ms", "55000", SET),
                              ("share.isolation.level", None, DELETE),
                              ("share.session.timeout.ms", None, DELETE)])
    changes.update({"consumer.session.timeout.ms": "55000"})
    del changes["share.isolation.level"]
    assert group_snapshot(admin, group) == expected_snapshot(changes)

    # validate_only: accepted, nothing changed; and errors are still reported.
    before = group_snapshot(admin, group)
    incr_group(admin, group, [("share.heartbeat.interval.ms", "7000", SET),
                              ("share.auto.offset.reset", None, DELETE)], validate_only=True)
    assert group_snapshot(admin, group) == before
    err = error_of(incr_group, admin, group, [("consumer.session.timeout.ms", "1", SET)],
                   validate_only=True)
    assert err.code() == KafkaError.INVALID_CONFIG, err

    # APPEND / SUBTRACT: no group config is a list.
    for op in (APPEND, SUBTRACT):
        err = error_of(incr_group, admin, group, [("share.auto.offset.reset", "latest", op)])
        assert err.code() == KafkaError.INVALID_CONFIG, err
    assert group_snapshot(admin, group) == before

    # Deleting every override leaves the defaults.
    incr_group(admin, group, [(k, None, DELETE) for k in GROUP_DEFAULTS])
    assert group_snapshot(admin, group) == expected_snapshot({})


def test_alter_configs_replaces_group_overrides(admin):
    group = unique_topic("gcfg-alter")
    incr_group(admin, group, [("share.record.lock.duration.ms", "20000", SET),
                              ("share.isolation.level", "read_committed", SET)])
    alter_group(admin, group, {"consumer.heartbeat.interval.ms": "8000",
                               "share.auto.offset.reset": "by_duration:PT1H"})
    # What the request left out went back to the default.
    assert group_overrides(admin, group) == {"consumer.heartbeat.interval.ms": "8000",
                                             "share.auto.offset.reset": "by_duration:PT1H"}
    assert group_snapshot(admin, group) == expected_snapshot(
        {"consumer.heartbeat.interval.ms": "8000", "share.auto.offset.reset": "by_duration:PT1H"})

    before = group_snapshot(admin, group)
    alter_group(admin, group, {"share.session.timeout.ms": "50000"}, validate_only=True)
    assert group_snapshot(admin, group) == before
    err = error_of(alter_group, admin, group, {"share.session.timeout.ms": "5"})
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert group_snapshot(admin, group) == before

    # An empty AlterConfigs removes every override.
    alter_group(admin, group, {})
    assert group_overrides(admin, group) == {}
    assert group_snapshot(admin, group) == expected_snapshot({})


VALID = [
    ("consumer.session.timeout.ms", "45000"), ("consumer.session.timeout.ms", "60000"),
    ("consumer.heartbeat.interval.ms", "5000"), ("consumer.heartbeat.interval.ms", "15000"),
    ("share.session.timeout.ms", "45000"), ("share.session.timeout.ms", "60000"),
    ("share.heartbeat.interval.ms", "5000"), ("share.heartbeat.interval.ms", "15000"),
    ("share.record.lock.duration.ms", "15000"), ("share.record.lock.duration.ms", "60000"),
    ("share.auto.offset.reset", "earliest"), ("share.auto.offset.reset", "latest"),
    ("share.auto.offset.reset", "by_duration:PT1H"),
    ("share.auto.offset.reset", "by_duration:P1DT2H30M"),
    ("share.auto.offset.reset", "by_duration:PT0.5S"),
    ("share.auto.offset.reset", "by_duration:P7D"),
    ("share.isolation.level", "read_committed"), ("share.isolation.level", "read_uncommitted"),
]


def test_bounds_and_values_accepted(admin):
    for key, value in VALID:
        group = unique_topic("gcfg-ok")
        try:
            incr_group(admin, group, [(key, value, SET)])
        except KafkaException as e:
            raise AssertionError("SET %s=%s refused: %s" % (key, value, e.args[0])) from None
        assert group_snapshot(admin, group) == expected_snapshot({key: value}), (key, value)


INVALID = [
    ("no.such.group.config", "1"),
    ("session.timeout.ms", "50000"),            # a consumer property, not a group config
    ("retention.ms", "1000"),                   # a topic config
    ("consumer.session.timeout.ms", "44999"),
    ("consumer.session.timeout.ms", "60001"),
    ("consumer.session.timeout.ms", "abc"),
    ("consumer.session.timeout.ms", "-1"),
    ("consumer.session.timeout.ms", "99999999999"),
    ("consumer.heartbeat.interval.ms", "4999"),
    ("consumer.heartbeat.interval.ms", "15001"),
    ("share.session.timeout.ms", "30000"),
    ("share.session.timeout.ms", "60001"),
    ("share.heartbeat.interval.ms", "4999"),
    ("share.heartbeat.interval.ms", "15001"),
    ("share.record.lock.duration.ms", "14999"),
    ("share.record.lock.duration.ms", "60001"),
    ("share.record.lock.duration.ms", "1.5"),
    ("share.auto.offset.reset", "none"),
    ("share.auto.offset.reset", "sometimes"),
    ("share.auto.offset.reset", "LATEST"),
    ("share.auto.offset.reset", ""),
    ("share.auto.offset.reset", "by_duration:1h"),
    ("share.auto.offset.reset", "by_duration:"),
    ("share.auto.offset.reset", "by_duration:PT"),
    ("share.auto.offset.reset", "by_duration:-PT1H"),
    ("share.auto.offset.reset", "by_duration:PT-1H"),
    ("share.isolation.level", "read_everything"),
]
INVALID_IDS = ["unknown", "consumer-property", "topic-config", "session-below-min",
               "session-above-max", "session-nan", "session-negative", "session-overflow",
               "heartbeat-below-min", "heartbeat-above-max", "share-session-below-min",
               "share-session-above-max", "share-heartbeat-below-min",
               "share-heartbeat-above-max", "lock-below-min", "lock-above-max", "lock-decimal",
               "reset-none", "reset-bogus", "reset-uppercase", "reset-empty",
               "reset-duration-not-iso", "reset-duration-empty",
               "reset-duration-PT", "reset-duration-negative", "reset-duration-negative-part",
               "isolation-bogus"]


@pytest.mark.parametrize("key,value", INVALID, ids=INVALID_IDS)
def test_invalid_group_configs_refused(admin, key, value):
    group = unique_topic("gcfg-bad")
    incr_group(admin, group, [("share.record.lock.duration.ms", "20000", SET)])
    before = group_snapshot(admin, group)
    # A valid change of another key, sent in the same request.
    valid = ("share.isolation.level", "read_committed") if key.startswith("consumer.") else \
        ("consumer.heartbeat.interval.ms", "6000")
    for validate_only in (False, True):
        # Refused also when a valid change comes in the same request: all or nothing.
        err = error_of(incr_group, admin, group, [(valid[0], valid[1], SET), (key, value, SET)],
                       validate_only=validate_only)
        assert err.code() == KafkaError.INVALID_CONFIG, err
        assert key in err.str(), "message should name %s: %s" % (key, err.str())
        err = error_of(alter_group, admin, group, {valid[0]: valid[1], key: value},
                       validate_only=validate_only)
        assert err.code() == KafkaError.INVALID_CONFIG, err
    assert group_snapshot(admin, group) == before
    # A group without overrides stays without.
    fresh = unique_topic("gcfg-bad-fresh")
    err = error_of(incr_group, admin, fresh, [(key, value, SET)])
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert group_snapshot(admin, fresh) == expected_snapshot({})


def test_session_timeout_must_exceed_heartbeat_interval(make_broker):
    # Bounds widened so that a session timeout can reach a heartbeat interval.
    b = make_broker({"group.consumer.min.session.timeout.ms": "6000",
                     "group.consumer.max.heartbeat.interval.ms": "20000",
                     "group.share.min.session.timeout.ms": "6000",
                     "group.share.max.heartbeat.interval.ms": "20000"})
    admin = admin_client(b.bootstrap)
    for kind in ("consumer", "share"):
        session, heartbeat = kind + ".session.timeout.ms", kind + ".heartbeat.interval.ms"
        group = unique_topic("gcfg-sess-" + kind)
        for s, h in (("10000", "10000"), ("10000", "12000")):
            err = error_of(incr_group, admin, group, [(session, s, SET), (heartbeat, h, SET)])
            assert err.code() == KafkaError.INVALID_CONFIG, (kind, s, h, err)
        assert group_overrides(admin, group) == {}
        incr_group(admin, group, [(session, "12000", SET), (heartbeat, "10000", SET)])
        assert group_overrides(admin, group) == {session: "12000", heartbeat: "10000"}
        # Checked against the group's other (existing) override too.
        for op in ([(heartbeat, "12000", SET)], [(session, "8000", SET)],
                   [(session, "9000", SET), (heartbeat, "9500", SET)]):
            err = error_of(incr_group, admin, group, op)
            assert err.code() == KafkaError.INVALID_CONFIG, (kind, op, err)
        err = error_of(alter_group, admin, group, {session: "7000", heartbeat: "7000"})
        assert err.code() == KafkaError.INVALID_CONFIG, (kind, err)
        assert group_overrides(admin, group) == {session: "12000", heartbeat: "10000"}
        # ... and against the defaults (session 45000, heartbeat 5000).
        fresh = unique_topic("gcfg-sess-fresh")
        incr_group(admin, fresh, [(session, "7000", SET)])
        incr_group(admin, fresh, [(heartbeat, "6999", SET)])
        err = error_of(incr_group, admin, fresh, [(heartbeat, "7000", SET)])
        assert err.code() == KafkaError.INVALID_CONFIG, (kind, err)
        # Deleting the session override falls back to 45000: fine with heartbeat 6999.
        incr_group(admin, fresh, [(session, None, DELETE)])
        assert group_overrides(admin, fresh) == {heartbeat: "6999"}


def test_broker_group_settings_are_defaults_and_bounds(make_broker):
    b = make_broker({
        "group.consumer.session.timeout.ms": "50000",
        "group.consumer.heartbeat.interval.ms": "7000",
        "group.consumer.min.session.timeout.ms": "40000",
        "group.consumer.max.session.timeout.ms": "55000",
        "group.share.session.timeout.ms": "46000",
        "group.share.heartbeat.interval.ms": "6000",
        "group.share.record.lock.duration.ms": "20000",
        "group.share.min.record.lock.duration.ms": "10000",
        "group.share.max.record.lock.duration.ms": "25000",
    })
    admin = admin_client(b.bootstrap)
    defaults = dict(GROUP_DEFAULTS, **{
        "consumer.session.timeout.ms": "50000", "consumer.heartbeat.interval.ms": "7000",
        "share.session.timeout.ms": "46000", "share.heartbeat.interval.ms": "6000",
        "share.record.lock.duration.ms": "20000"})
    group = unique_topic("gcfg-brokerdef")
    assert group_snapshot(admin, group) == expected_snapshot({}, defaults)

    for key, value in (("consumer.session.timeout.ms", "40000"),
                       ("consumer.session.timeout.ms", "55000"),
                       ("share.record.lock.duration.ms", "10000"),
                       ("share.record.lock.duration.ms", "25000")):
        incr_group(admin, group, [(key, value, SET)])
        assert group_snapshot(admin, group)[key] == (value, GROUP_CONFIG)
    for key, value in (("consumer.session.timeout.ms", "39999"),
                       ("consumer.session.timeout.ms", "55001"),
                       ("consumer.session.timeout.ms", "60000"),   # Kafka's default max
                       ("share.record.lock.duration.ms", "9999"),
                       ("share.record.lock.duration.ms", "25001"),
                       ("share.record.lock.duration.ms", "30000")):
        err = error_of(incr_group, admin, group, [(key, value, SET)])
        assert err.code() == KafkaError.INVALID_CONFIG, (key, value, err)
    assert group_overrides(admin, group) == {"consumer.session.timeout.ms": "55000",
                                             "share.record.lock.duration.ms": "25000"}
    # DELETE falls back to the broker's default, not Kafka's.
    incr_group(admin, group, [("consumer.session.timeout.ms", None, DELETE)])
    assert group_snapshot(admin, group)["consumer.session.timeout.ms"] == ("50000", DEFAULT)
    # The broker takes the group.* keys as known settings.
    log = b.log_path.read_text(errors="replace")
    assert "unknown config key group." not in log, [
        ln for ln in log.splitlines() if "unknown config key group." in ln][:3]


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "kill9"])
def test_group_configs_survive_restart(make_broker, hard):
    b = make_broker()
    admin = admin_client(b.bootstrap)
    g1, g2, g3 = (unique_topic("gcfg-rs%d" % i) for i in (1, 2, 3))
    incr_group(admin, g1, [("consumer.session.timeout.ms", "50000", SET),
                           ("share.auto.offset.reset", "by_duration:P1D", SET),
                           ("share.isolation.level", "read_committed", SET)])
    incr_group(admin, g1, [("share.isolation.level", None, DELETE)])
    alter_group(admin, g2, {"share.record.lock.duration.ms": "45000"})
    incr_group(admin, g3, [("share.heartbeat.interval.ms", "9000", SET)])
    incr_group(admin, g3, [("share.heartbeat.interval.ms", None, DELETE)])
    snaps = {g: group_snapshot(admin, g) for g in (g1, g2, g3)}
    assert snaps[g1] == expected_snapshot({"consumer.session.timeout.ms": "50000",
                                           "share.auto.offset.reset": "by_duration:P1D"})
    assert snaps[g3] == expected_snapshot({})

    b.restart(hard=hard)
    admin = admin_client(b.bootstrap)
    for g in (g1, g2, g3):
        assert group_snapshot(admin, g) == snaps[g], g
    assert listed(b.bootstrap, [RESOURCE_GROUP]) == (0, sorted([(g1, RESOURCE_GROUP),
                                                                (g2, RESOURCE_GROUP)]))
    # Still changeable after the restart.
    incr_group(admin, g1, [("consumer.session.timeout.ms", None, DELETE)])
    assert group_overrides(admin, g1) == {"share.auto.offset.reset": "by_duration:P1D"}


def test_empty_group_id_is_invalid_request(broker):
    # librdkafka will not send an empty resource name: raw requests, as Kafka's Java
    # AdminClient would send them.
    code, message, _ = raw_describe(broker.bootstrap, "", resource_type=RESOURCE_GROUP)
    assert code == INVALID_REQUEST, (code, message)
    code, message = raw_incremental(broker.bootstrap, "", [
        ("consumer.session.timeout.ms", "50000", SET)], resource_type=RESOURCE_GROUP)
    assert code == INVALID_REQUEST, (code, message)
    code, message = raw_alter(broker.bootstrap, "", {"consumer.session.timeout.ms": "50000"},
                              resource_type=RESOURCE_GROUP)
    assert code == INVALID_REQUEST, (code, message)
    # Nothing was stored under "".
    err, groups = listed(broker.bootstrap, [RESOURCE_GROUP])
    assert err == 0 and ("", RESOURCE_GROUP) not in groups, groups
    # The same raw requests work for a named group.
    group = unique_topic("gcfg-raw")
    assert raw_incremental(broker.bootstrap, group, [
        ("consumer.session.timeout.ms", "50000", SET)], resource_type=RESOURCE_GROUP)[0] == 0
    assert raw_group(broker.bootstrap, group)["consumer.session.timeout.ms"] == (
        "50000", GROUP_CONFIG)


def test_group_configs_need_describe_and_alter_configs_acls(make_broker):
    b = make_broker({"authorizer.class.name":
                     "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                     "allow.everyone.if.no.acl.found": "true"})
    admin = admin_client(b.bootstrap)
    free, ro, rw, denied = (unique_topic("gcfg-acl-" + s) for s in ("free", "ro", "rw", "deny"))
    anon = "User:ANONYMOUS"

    def binding(group, op, perm=AclPermissionType.ALLOW):
        return AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, anon, "*",
                          op, perm)

    fs = admin.create_acls([binding(ro, AclOperation.DESCRIBE_CONFIGS),
                            binding(rw, AclOperation.ALTER_CONFIGS),
                            binding(denied, AclOperation.DESCRIBE_CONFIGS,
                                    AclPermissionType.DENY)], request_timeout=15)
    for f in fs.values():
        assert f.result(timeout=20) is None
    op = [("share.isolation.level", "read_committed", SET)]

    # No ACL names the group: everyone may (allow.everyone.if.no.acl.found).
    incr_group(admin, free, op)
    assert group_overrides(admin, free) == {"share.isolation.level": "read_committed"}
    # DESCRIBE_CONFIGS only: described, not altered (either API).
    assert group_snapshot(admin, ro) == expected_snapshot({})
    err = error_of(incr_group, admin, ro, op)
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    err = error_of(alter_group, admin, ro, {"share.isolation.level": "read_committed"})
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    assert group_snapshot(admin, ro) == expected_snapshot({})
    # ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    incr_group(admin, rw, op)
    assert group_overrides(admin, rw) == {"share.isolation.level": "read_committed"}
    # DENY DESCRIBE_CONFIGS (and no ALLOW): neither.
    err = error_of(describe_group, admin, denied)
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    err = error_of(incr_group, admin, denied, op)
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    assert raw_describe(b.bootstrap, denied, resource_type=RESOURCE_GROUP)[0] == \
        KafkaError.GROUP_AUTHORIZATION_FAILED


# ==========================================================================
# ListConfigResources (74)
# ==========================================================================


def test_list_config_resources(make_broker):
    b = make_broker()
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(kw.API_API_VERSIONS, 3, kw.api_versions_v3_body(), flexible=True)
        err, apis, _ = kw.parse_api_versions_v3(r)
    assert err == 0
    assert apis.get(kw.API_LIST_CONFIG_RESOURCES) == (0, 1), apis.get(74)

    admin = admin_client(b.bootstrap)
    t1 = create_topic(admin, unique_topic("lcr-a"), partitions=3)
    t2 = create_topic(admin, unique_topic("lcr-b"), partitions=1)
    group = unique_topic("lcr-g")
    incr_group(admin, group, [("share.auto.offset.reset", "earliest", SET)])
    topics = [(t1, RESOURCE_TOPIC), (t2, RESOURCE_TOPIC)]
    brokers = [("0", RESOURCE_BROKER), ("0", RESOURCE_BROKER_LOGGER)]
    groups = [(group, RESOURCE_GROUP)]

    # v1, no types: every type (each resource once, partitions not repeated).
    err, got = listed(b.bootstrap, [])
    assert err == 0
    assert not_internal(got) == sorted(topics + brokers + groups), got
    assert kw.list_config_resources(b.bootstrap, 1, [])[0] == 0   # throttle_time_ms
    # One type, or some.
    err, got = listed(b.bootstrap, [RESOURCE_TOPIC])
    assert err == 0 and not_internal(got) == sorted(topics), got
    assert all(t == RESOURCE_TOPIC for _, t in got), got
    assert listed(b.bootstrap, [RESOURCE_GROUP]) == (0, groups)
    assert listed(b.bootstrap, [RESOURCE_BROKER, RESOURCE_BROKER_LOGGER]) == (0, brokers)
    assert listed(b.bootstrap, [RESOURCE_CLIENT_METRICS]) == (0, [])
    # A type v1 does not know: UNSUPPORTED_VERSION (as Kafka), nothing listed.
    for types in ([1], [RESOURCE_TOPIC, 1], [3]):
        err, got = listed(b.bootstrap, types)
        assert err == 35 and got == [], (types, err, got)
    # v0 (ListClientMetricsResources): the client-metrics resources, of which there are none.
    assert listed(b.bootstrap, version=0) == (0, [])

    # A group whose overrides are all deleted (and that does not exist) is no longer listed;
    # a deleted topic neither.
    incr_group(admin, group, [("share.auto.offset.reset", None, DELETE)])
    admin.delete_topics([t2], request_timeout=15)[t2].result(timeout=20)
    wait_until("deleted topic no longer listed",
               lambda: not_internal(listed(b.bootstrap, [RESOURCE_TOPIC])[1]) == [topics[0]],
               timeout=15, interval=0.2)
    assert listed(b.bootstrap, [RESOURCE_GROUP]) == (0, [])


# ==========================================================================
# Cluster: one broker's change is every broker's
# ==========================================================================


def converge(c, nodes, probe, expected, what, timeout=PROPAGATION):
    """Waits until probe(broker) == expected on each of `nodes`; {node: seconds}."""
    t0 = time.monotonic()
    seen, last = {}, {}
    while True:
        for n in nodes:
            if n in seen:
                continue
            try:
                last[n] = probe(c.broker(n))
            except Exception as e:  # noqa: BLE001 - reported below
                last[n] = e
            if last[n] == expected:
                seen[n] = round(time.monotonic() - t0, 3)
        if len(seen) == len(nodes):
            print("%s: %r" % (what, seen))
            return seen
        if time.monotonic() - t0 > timeout:
            raise AssertionError("%s: not on every broker within %ss (reached: %r)\n"
                                 "expected %r\nlast answers: %r\n%s"
                                 % (what, timeout, seen, expected,
                                    {n: last.get(n) for n in nodes if n not in seen},
                                    c.logs(30)))
        time.sleep(0.05)


@pytest.mark.skipif(not etcd_bin(), reason="etcd is not installed (Debian: etcd-server); "
                                           "cluster tests skipped")
@pytest.mark.timeout(240)
def test_cluster_group_configs_through_every_broker(cluster):
    c = cluster(3)
    nodes = c.node_ids()
    g, g2 = unique_topic("gcfg-cl"), unique_topic("gcfg-cl2")

    def probe(group):
        return lambda b: raw_group(b.bootstrap, group)

    def ok(result):
        assert result[0] == 0, result
        return result

    # Set through broker 1, right after that another group through broker 2: both stay.
    want = {"consumer.session.timeout.ms": "50000", "share.isolation.level": "read_committed"}
    ok(raw_incremental(c.broker(1).bootstrap, g, [(k, v, SET) for k, v in want.items()],
                       resource_type=RESOURCE_GROUP))
    ok(raw_incremental(c.broker(2).bootstrap, g2, [("share.record.lock.duration.ms", "20000",
                                                    SET)], resource_type=RESOURCE_GROUP))
    converge(c, nodes, probe(g), expected_snapshot(want), "set through broker 1")
    converge(c, nodes, probe(g2), expected_snapshot({"share.record.lock.duration.ms": "20000"}),
             "other group set through broker 2")

    # A refused change through broker 2 changes nothing anywhere.
    code, _ = raw_incremental(c.broker(2).bootstrap, g, [
        ("share.isolation.level", None, DELETE), ("consumer.session.timeout.ms", "70000", SET)],
        resource_type=RESOURCE_GROUP)
    assert code == INVALID_CONFIG
    time.sleep(0.5)
    converge(c, nodes, probe(g), expected_snapshot(want), "after a refused change", timeout=1)

    # DELETE through broker 2, AlterConfigs through broker 3.
    ok(raw_incremental(c.broker(2).bootstrap, g, [("share.isolation.level", None, DELETE)],
                       resource_type=RESOURCE_GROUP))
    del want["share.isolation.level"]
    converge(c, nodes, probe(g), expected_snapshot(want), "DELETE through broker 2")
    want = {"share.auto.offset.reset": "by_duration:PT30M", "share.heartbeat.interval.ms": "6000"}
    ok(raw_alter(c.broker(3).bootstrap, g, want, resource_type=RESOURCE_GROUP))
    converge(c, nodes, probe(g), expected_snapshot(want), "AlterConfigs through broker 3")

    # Every broker lists both groups and the three brokers.
    both = sorted([(g, RESOURCE_GROUP), (g2, RESOURCE_GROUP)])
    converge(c, nodes, lambda b: listed(b.bootstrap, [RESOURCE_GROUP]), (0, both),
             "ListConfigResources GROUP")
    converge(c, nodes, lambda b: listed(b.bootstrap, [RESOURCE_BROKER]),
             (0, [(str(n), RESOURCE_BROKER) for n in nodes]), "ListConfigResources BROKER")

    # Broker 3 is down while g changes and g2 loses its overrides: it catches up.
    c.broker(3).stop()
    want = {"consumer.heartbeat.interval.ms": "9000"}
    ok(raw_alter(c.broker(1).bootstrap, g, want, resource_type=RESOURCE_GROUP))
    ok(raw_incremental(c.broker(2).bootstrap, g2, [("share.record.lock.duration.ms", None,
                                                    DELETE)], resource_type=RESOURCE_GROUP))
    converge(c, [1, 2], probe(g), expected_snapshot(want), "changed while broker 3 is down")
    c.broker(3).start()
    converge(c, nodes, probe(g), expected_snapshot(want), "broker 3 back: g")
    converge(c, nodes, probe(g2), expected_snapshot({}), "broker 3 back: g2")
    converge(c, nodes, lambda b: listed(b.bootstrap, [RESOURCE_GROUP]),
             (0, [(g, RESOURCE_GROUP)]), "broker 3 back: ListConfigResources GROUP")


# ==========================================================================
# An empty cleanup.policy (Kafka 4.x, KIP-1161)
# ==========================================================================


def cleanup_policy(admin, topic):
    e = describe(admin, topic)["cleanup.policy"]
    return e.value, source_of(e)


def test_cleanup_policy_may_be_empty(make_broker):
    b = make_broker()
    admin = admin_client(b.bootstrap)
    name = create_topic(admin, unique_topic("empty-pol"), config={"cleanup.policy": "delete"})

    # SUBTRACT of the last value: an empty list, still the topic's own override.
    incremental(admin, name, [("cleanup.policy", "delete", SUBTRACT)])
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)
    code, message, configs = raw_describe(b.bootstrap, name, resource_type=RESOURCE_TOPIC,
                                          keys=["cleanup.policy"])
    assert code == 0, (code, message)
    assert (configs["cleanup.policy"]["value"], configs["cleanup.policy"]["source"]) == (
        "", DYNAMIC_TOPIC), configs   # "", not null
    # SUBTRACT from the empty list: still empty.
    incremental(admin, name, [("cleanup.policy", "delete", SUBTRACT)])
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)

    # Other values are still checked.
    for ops in ([("cleanup.policy", "delete,bogus", SET)], [("cleanup.policy", "bogus", SET)],
                [("cleanup.policy", "bogus", APPEND)]):
        err = error_of(incremental, admin, name, ops)
        assert err.code() == KafkaError.INVALID_CONFIG, (ops, err)
        assert "cleanup.policy" in err.str(), err.str()
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)

    # Not a compacted topic: keyless records are accepted.
    produce_all(b.bootstrap, name, [(None, b"no key")])

    # APPEND builds up from empty; SUBTRACT takes it back; DELETE restores the default.
    incremental(admin, name, [("cleanup.policy", "compact", APPEND)])
    assert cleanup_policy(admin, name) == ("compact", DYNAMIC_TOPIC)
    incremental(admin, name, [("cleanup.policy", "compact", SUBTRACT)])
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)
    incremental(admin, name, [("cleanup.policy", None, DELETE)])
    assert cleanup_policy(admin, name)[0] == "delete"
    assert cleanup_policy(admin, name)[1] != DYNAMIC_TOPIC

    # SET "" directly (also validate_only first), on a compacted topic.
    compacted = create_topic(admin, unique_topic("empty-pol-set"),
                             config={"cleanup.policy": "compact"})
    incremental(admin, compacted, [("cleanup.policy", "", SET)], validate_only=True)
    assert cleanup_policy(admin, compacted) == ("compact", DYNAMIC_TOPIC)
    incremental(admin, compacted, [("cleanup.policy", "", SET)])
    assert cleanup_policy(admin, compacted) == ("", DYNAMIC_TOPIC)
    produce_all(b.bootstrap, compacted, [(None, b"no key either")])

    # At creation.
    created = create_topic(admin, unique_topic("empty-pol-create"),
                           config={"cleanup.policy": ""})
    assert cleanup_policy(admin, created) == ("", DYNAMIC_TOPIC)

    # Kept across a restart.
    b.restart()
    admin = admin_client(b.bootstrap)
    for t in (compacted, created):
        assert cleanup_policy(admin, t) == ("", DYNAMIC_TOPIC), t


def test_empty_cleanup_policy_stops_time_retention(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    config = {"cleanup.policy": "delete", "retention.ms": "100"}
    control = create_topic(admin, unique_topic("empty-ret-ctl"), config=config)
    name = create_topic(admin, unique_topic("empty-ret"), config=config)
    incremental(admin, name, [("cleanup.policy", "delete", SUBTRACT)])
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)

    values = [b"kept-%d" % i for i in range(10)]
    produce_all(b.bootstrap, name, [(None, v) for v in values])
    produce_all(b.bootstrap, control, [(None, b"gone-%d" % i) for i in range(10)])
    produced_at = time.monotonic()

    # Control: with cleanup.policy=delete the records go (log start moves to the end).
    wait_until("retention removes the control topic's records",
               lambda: admin_offsets(admin, control) == (10, 10), timeout=20, interval=0.2)
    # The emptied policy: still everything after many more check intervals (200 ms).
    time.sleep(max(0.0, produced_at + 3.0 - time.monotonic()))
    assert admin_offsets(admin, name) == (0, 10)
    msgs, eof, _ = read_partition(b.bootstrap, name)
    assert eof and [(m.offset(), m.value()) for m in msgs] == list(enumerate(values))

    # Also after a restart.
    b.restart()
    admin = admin_client(b.bootstrap)
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)
    time.sleep(1.5)
    assert admin_offsets(admin, name) == (0, 10)

    # DeleteRecords still moves the log start.
    assert delete_records(admin, name, 4).low_watermark == 4
    assert admin_offsets(admin, name) == (4, 10)
    msgs, _, _ = read_partition(b.bootstrap, name)
    assert [m.value() for m in msgs] == values[4:]

    # Policy delete again: the (long expired) records go.
    incremental(admin, name, [("cleanup.policy", "delete", APPEND)])
    assert cleanup_policy(admin, name) == ("delete", DYNAMIC_TOPIC)
    wait_until("retention resumes with cleanup.policy=delete",
               lambda: admin_offsets(admin, name) == (10, 10), timeout=20, interval=0.2)


def test_empty_cleanup_policy_stops_compaction(make_broker):
    b = make_broker(FAST)
    admin = admin_client(b.bootstrap)
    config = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
              "delete.retention.ms": "100"}
    control = create_topic(admin, unique_topic("empty-cmp-ctl"), config=config)
    name = create_topic(admin, unique_topic("empty-cmp"), config=config)
    incremental(admin, name, [("cleanup.policy", "", SET)])
    assert cleanup_policy(admin, name) == ("", DYNAMIC_TOPIC)

    records = [(b"k%d" % (i % 3), b"v%d" % i) for i in range(30)] + [(b"k0", None)]
    produce_all(b.bootstrap, name, records)
    produce_all(b.bootstrap, control, records)
    produced_at = time.monotonic()

    def kv(msgs):
        return [(m.offset(), m.key(), m.value()) for m in msgs]

    # Control: compaction keeps the latest value of each key (k0's tombstone goes too).
    wait_until("control topic compacted",
               lambda: kv(read_partition(b.bootstrap, control, quiet=0.5)[0])
               == [(28, b"k1", b"v28"), (29, b"k2", b"v29")], timeout=30, interval=0.3)
    # The emptied policy: every record, after many more cleaner passes (200 ms backoff).
    time.sleep(max(0.0, produced_at + 3.0 - time.monotonic()))
    msgs, eof, _ = read_partition(b.bootstrap, name)
    assert eof and kv(msgs) == [(i, k, v) for i, (k, v) in enumerate(records)], \
        "records removed from a topic with an empty cleanup.policy: %r" % kv(msgs)[:5]
    assert admin_offsets(admin, name) == (0, len(records))
    # Not compacted: keyless records are accepted (a compacted topic refuses them).
    produce_all(b.bootstrap, name, [(None, b"keyless")])
    p = producer(b.bootstrap, **{"linger.ms": 0})
    res = []
    p.produce(control, b"keyless", partition=0, on_delivery=lambda e, m: res.append(e))
    p.flush(15)
    assert res and res[0] is not None and res[0].code() == KafkaError.INVALID_RECORD, res
