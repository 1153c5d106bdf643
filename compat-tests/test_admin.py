"""Topic administration through confluent-kafka's AdminClient (librdkafka)."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (ConfigResource, ConfigSource, NewPartitions, NewTopic,
                                   ResourceType)

from ck_helpers import (admin_client, consumer, create_topic, drain, producer,
                        topic_metadata, wait_for_topic, wait_for_topic_absent)
from runnel_harness import unique_topic

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def admin(broker):
    return admin_client(broker.bootstrap)


def create_error_code(admin, new_topic, validate_only=False):
    fs = admin.create_topics([new_topic], request_timeout=15, validate_only=validate_only)
    with pytest.raises(KafkaException) as ei:
        fs[new_topic.topic].result(timeout=20)
    return ei.value.args[0].code()


def test_create_topic_and_list_shows_partitions(admin, broker):
    name = unique_topic("admin-create")
    fs = admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=1)])
    assert fs[name].result(timeout=20) is None

    t = wait_for_topic(admin, name, 6)
    assert sorted(t.partitions) == list(range(6))
    for p in t.partitions.values():
        assert p.error is None
        assert p.leader == 0
        assert list(p.replicas) == [0]
        assert list(p.isrs) == [0]

    md = admin.list_topics(timeout=10)
    assert list(md.brokers) == [0]
    b = md.brokers[0]
    assert (b.host, b.port) == ("127.0.0.1", broker.port)
    assert md.controller_id == 0


def test_create_topic_with_default_partitions_uses_num_partitions(admin):
    # num_partitions=-1 / replication_factor=-1 mean "broker default" (CreateTopics v4+).
    name = unique_topic("admin-defaults")
    fs = admin.create_topics([NewTopic(name)])
    fs[name].result(timeout=20)
    t = wait_for_topic(admin, name)
    assert len(t.partitions) == 1  # num.partitions=1 in the test broker config


def test_create_existing_topic_fails_with_topic_already_exists(admin):
    name = create_topic(admin, unique_topic("admin-dup"), partitions=2)
    code = create_error_code(admin, NewTopic(name, num_partitions=2, replication_factor=1))
    assert code == KafkaError.TOPIC_ALREADY_EXISTS
    # Original topic untouched.
    assert len(topic_metadata(admin, name).partitions) == 2


def test_replication_factor_3_is_invalid_on_one_node(admin):
    name = unique_topic("admin-rf3")
    code = create_error_code(admin, NewTopic(name, num_partitions=1, replication_factor=3))
    assert code == KafkaError.INVALID_REPLICATION_FACTOR
    assert topic_metadata(admin, name) is None


def test_zero_partitions_is_invalid(admin):
    name = unique_topic("admin-p0")
    code = create_error_code(admin, NewTopic(name, num_partitions=0, replication_factor=1))
    assert code == KafkaError.INVALID_PARTITIONS
    assert topic_metadata(admin, name) is None


@pytest.mark.parametrize("name", ["bad/name", ".", "..", "a" * 250, "has space", "caf\u00e9"],
                         ids=["slash", "dot", "dotdot", "250chars", "space", "non-ascii"])
def test_invalid_topic_names_rejected(admin, name):
    code = create_error_code(admin, NewTopic(name, num_partitions=1, replication_factor=1))
    assert code == KafkaError.TOPIC_EXCEPTION  # INVALID_TOPIC_EXCEPTION (17)
    assert topic_metadata(admin, name) is None


def test_249_char_topic_name_is_valid(admin):
    base = unique_topic("admin-long")
    name = (base + "-" + "x" * 249)[:249]
    create_topic(admin, name, partitions=1)
    assert topic_metadata(admin, name) is not None
    admin.delete_topics([name])[name].result(timeout=20)


def test_validate_only_does_not_create(admin):
    name = unique_topic("admin-validate")
    fs = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)],
                             validate_only=True)
    assert fs[name].result(timeout=20) is None
    time.sleep(0.5)
    assert topic_metadata(admin, name) is None

    # validate_only still reports errors.
    code = create_error_code(admin, NewTopic(name, num_partitions=1, replication_factor=3),
                             validate_only=True)
    assert code == KafkaError.INVALID_REPLICATION_FACTOR


def test_invalid_config_value_rejected(admin):
    name = unique_topic("admin-badcfg")
    code = create_error_code(admin, NewTopic(name, num_partitions=1, replication_factor=1,
                                             config={"cleanup.policy": "bogus"}))
    assert code == KafkaError.INVALID_CONFIG
    assert topic_metadata(admin, name) is None


def test_mission_scenario_compacted_topic_with_configs(admin):
    """The exact create_topics call from the mission's Python scenario."""
    name = unique_topic("admin-compact")
    fs = admin.create_topics([NewTopic(name, num_partitions=5, replication_factor=1, config={
        "cleanup.policy": "compact", "compression.type": "lz4",
        "delete.retention.ms": 100, "file.delete.delay.ms": 100})])
    fs[name].result(timeout=20)
    wait_for_topic(admin, name, 5)
    res = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([res])[res].result(timeout=20)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["compression.type"].value == "lz4"
    assert entries["delete.retention.ms"].value == "100"


def source_of(entry):
    """ConfigEntry.source as an int (the C extension may give an int or the enum)."""
    return getattr(entry.source, "value", entry.source)


def describe_topic_configs(admin, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([res])[res].result(timeout=20)


def test_describe_configs_topic(admin):
    name = create_topic(admin, unique_topic("admin-cfg"), partitions=1,
                        config={"retention.ms": "123456"})
    entries = describe_topic_configs(admin, name)

    assert entries["cleanup.policy"].value == "delete"
    assert source_of(entries["cleanup.policy"]) != ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    rm = entries["retention.ms"]
    assert rm.value == "123456"
    assert source_of(rm) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not rm.is_default


# Standard topic configs every client may ask about, even if they mean little on
# one node (e.g. min.insync.replicas).
STANDARD_TOPIC_CONFIGS = [
    "cleanup.policy", "compression.type", "delete.retention.ms", "file.delete.delay.ms",
    "max.message.bytes", "message.timestamp.type", "min.compaction.lag.ms",
    "min.insync.replicas", "retention.bytes", "retention.ms", "segment.bytes", "segment.ms",
    "unclean.leader.election.enable",
]


def test_describe_configs_reports_standard_topic_configs(admin):
    name = create_topic(admin, unique_topic("admin-stdcfg"), partitions=1)
    entries = describe_topic_configs(admin, name)
    missing = [k for k in STANDARD_TOPIC_CONFIGS if k not in entries]
    assert not missing, "DescribeConfigs lacks standard topic configs: %s" % missing
    assert entries["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert entries["max.message.bytes"].value == "1048588"
    assert entries["min.insync.replicas"].value == "1"


def test_describe_configs_broker(admin):
    res = ConfigResource(ResourceType.BROKER, "0")
    entries = admin.describe_configs([res])[res].result(timeout=20)
    assert len(entries) > 0
    assert "num.partitions" in entries, sorted(entries)[:50]
    assert entries["num.partitions"].value == "1"
    assert entries["auto.create.topics.enable"].value == "true"


def test_create_partitions_6_to_8(admin, broker):
    name = create_topic(admin, unique_topic("admin-grow"), partitions=6)
    fs = admin.create_partitions([NewPartitions(name, 8)])
    assert fs[name].result(timeout=20) is None
    t = wait_for_topic(admin, name, 8)
    assert sorted(t.partitions) == list(range(8))

    # The new partitions are usable.
    p = producer(broker.bootstrap)
    errors = []
    p.produce(name, b"v7", partition=7, on_delivery=lambda e, m: errors.append(e))
    p.flush(15)
    assert errors == [None]


@pytest.mark.parametrize("new_count", [4, 6], ids=["shrink", "same"])
def test_create_partitions_not_increasing_is_invalid(admin, new_count):
    name = create_topic(admin, unique_topic("admin-shrink"), partitions=6)
    fs = admin.create_partitions([NewPartitions(name, new_count)])
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    assert len(topic_metadata(admin, name).partitions) == 6


def test_delete_topic_then_recreate_has_no_old_data(admin, broker):
    name = create_topic(admin, unique_topic("admin-del"), partitions=1)
    p = producer(broker.bootstrap)
    for i in range(50):
        p.produce(name, b"old-%d" % i, partition=0)
    assert p.flush(15) == 0
    del p  # no client with this topic in its metadata may auto-create it again

    fs = admin.delete_topics([name], operation_timeout=15)
    assert fs[name].result(timeout=20) is None
    wait_for_topic_absent(admin, name)

    # Recreate (Kafka may briefly say the topic is still being deleted: retry).
    deadline = time.monotonic() + 15
    while True:
        fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        try:
            fs[name].result(timeout=20)
            break
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise AssertionError("could not recreate deleted topic: %s" % e)
            time.sleep(0.2)
    wait_for_topic(admin, name, 1)

    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(name, 0), timeout=10) == (0, 0)
        c.assign([TopicPartition(name, 0, -2)])  # OFFSET_BEGINNING
        got = drain(c, quiet_for=2.0)
        assert [m.value() for m in got] == []
    finally:
        c.close()


def test_delete_unknown_topic(admin):
    name = unique_topic("admin-nosuch")
    fs = admin.delete_topics([name], operation_timeout=10)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=20)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_topic_id_stable_and_not_reused(admin):
    name = create_topic(admin, unique_topic("admin-tid"), partitions=2)

    def topic_id():
        fs = admin.describe_topics(TopicCollection([name]), request_timeout=15)
        d = fs[name].result(timeout=20)
        assert len(d.partitions) == 2
        return str(d.topic_id)

    first = topic_id()
    assert first and first != "AAAAAAAAAAAAAAAAAAAAAA", "zero/absent topic id: %r" % first
    assert topic_id() == first

    admin.delete_topics([name])[name].result(timeout=20)
    wait_for_topic_absent(admin, name)
    create_topic(admin, name, partitions=2)
    second = topic_id()
    assert second != first, "recreated topic reused the topic id"


def test_describe_cluster(admin, broker):
    desc = admin.describe_cluster(request_timeout=15).result(timeout=20)
    assert desc.cluster_id, "empty cluster id"
    assert desc.controller is not None and desc.controller.id == 0
    assert [n.id for n in desc.nodes] == [0]
    n = desc.nodes[0]
    assert (n.host, n.port) == ("127.0.0.1", broker.port)
    assert admin.describe_cluster().result(timeout=20).cluster_id == desc.cluster_id
