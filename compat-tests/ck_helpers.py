"""Small helpers around confluent-kafka used by several test modules."""

import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def admin_client(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000}
    conf.update(extra)
    return AdminClient(conf)


def producer(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


def consumer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "compat-assign-only",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "check.crcs": True,
    }
    conf.update(extra)
    return Consumer(conf)


def kafka_error_of(exc):
    """The KafkaError inside a KafkaException raised by a future."""
    assert isinstance(exc, KafkaException), "expected KafkaException, got %r" % (exc,)
    return exc.args[0]


def create_topic(admin, name, partitions=1, config=None, timeout=30, wait_visible=True):
    fs = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=timeout)
    fs[name].result(timeout=timeout)
    if wait_visible:
        wait_for_topic(admin, name, partitions)
    return name


def topic_metadata(admin, name, timeout=10):
    """TopicMetadata for `name` from an all-topics Metadata request (which never
    auto-creates topics), or None when absent."""
    md = admin.list_topics(timeout=timeout)
    return md.topics.get(name)


def wait_for_topic(admin, name, partitions=None, timeout=15):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        t = topic_metadata(admin, name)
        last = t
        if t is not None and t.error is None and (
                partitions is None or len(t.partitions) == partitions):
            if all(p.leader == 0 for p in t.partitions.values()):
                return t
        time.sleep(0.1)
    raise AssertionError("topic %s did not appear with %s partitions (last metadata: %r)"
                         % (name, partitions, last))


def wait_for_topic_absent(admin, name, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if topic_metadata(admin, name) is None:
            return
        time.sleep(0.1)
    raise AssertionError("topic %s still listed %ss after deletion" % (name, timeout))


def wait_high_watermarks(c, topic, partitions, expected_total, timeout=30):
    """Poll watermarks until the high watermarks add up to expected_total.
    Returns {partition: (low, high)}."""
    deadline = time.monotonic() + timeout
    marks = {}
    while True:
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                 for p in range(partitions)}
        total = sum(hi - lo for lo, hi in marks.values())
        if total >= expected_total or time.monotonic() > deadline:
            return marks
        time.sleep(0.2)


def consume_n(c, n, timeout=60, allow_errors=False):
    """Poll until n messages were read or timeout; returns the messages.
    Consumer errors fail the test unless they are partition EOF events."""
    from confluent_kafka import KafkaError

    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for m in c.consume(num_messages=min(1000, n - len(out)), timeout=0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                if allow_errors:
                    continue
                raise AssertionError("consumer error: %s" % m.error())
            out.append(m)
    return out


def drain(c, quiet_for=2.0, timeout=30):
    """Read until nothing arrives for `quiet_for` seconds."""
    from confluent_kafka import KafkaError

    out = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < quiet_for:
        for m in c.consume(num_messages=1000, timeout=0.2):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError("consumer error: %s" % m.error())
            out.append(m)
            last = time.monotonic()
    return out


def watermarks(bootstrap, topic, partition=0):
    """(low, high) watermark of one partition, asked of the broker."""
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def wait_until(what, fn, timeout, interval=0.1):
    """Calls fn() until it returns a truthy value; returns (value, seconds waited)."""
    start = time.monotonic()
    last = None
    while True:
        last = fn()
        if last:
            return last, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("%s: not within %ss (last: %r)" % (what, timeout, last))
        time.sleep(interval)


def assert_healthy(broker):
    """A well-behaved client still works: raw ApiVersions, AdminClient metadata,
    and a produce/consume round trip on a fresh topic."""
    import kafka_wire as kw
    from confluent_kafka import TopicPartition
    from runnel_harness import unique_topic
    assert broker.is_running(), "broker process exited (rc=%s):\n%s" % (
        broker.proc.returncode, broker.log_tail())
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        err, apis = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0))
        assert err == 0 and kw.API_PRODUCE in apis
    admin = admin_client(broker.bootstrap)
    topic = create_topic(admin, unique_topic("healthy"), partitions=1)
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    p.produce(topic, b"still-alive", partition=0)
    assert p.flush(10) == 0
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        assert [m.value() for m in consume_n(c, 1, timeout=15)] == [b"still-alive"]
    finally:
        c.close()
