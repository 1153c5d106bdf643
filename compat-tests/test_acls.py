"""ACLs and authorization (Kafka's StandardAuthorizer semantics) with real clients.

One broker for the module with a SASL_PLAINTEXT listener (PLAIN users admin, alice,
bob, carol from the JAAS config; SCRAM-SHA-512 users made by the tests) and a
PLAINTEXT listener whose clients are User:ANONYMOUS. super.users=User:admin and
allow.everyone.if.no.acl.found is left at its default (false), so nobody but the
super user may do anything without an ACL.

Covered: CreateAcls/DescribeAcls/DeleteAcls and their filters (LITERAL, PREFIXED,
MATCH, ANY, the '*' wildcard), ACLs surviving a restart, refusals for non-super
users, produce/consume/group/transactional-id/idempotent/auto-create/create/delete/
configs checks, DENY over ALLOW, host matching, Metadata and ListGroups hiding what
a principal cannot describe, and authorized operations in DescribeTopics,
DescribeCluster and DescribeGroups. Every test uses its own topics and groups;
tests that grant to a wildcard principal or on the cluster take the grant back."""

import time
import uuid

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource, NewTopic, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from ck_helpers import create_topic, topic_metadata, wait_for_topic, wait_for_topic_absent
from runnel_harness import Broker, free_port, unique_topic

pytestmark = [pytest.mark.timeout(240)]

E = KafkaError
Op = AclOperation
TOPIC, GROUP, CLUSTER, TXN_ID = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER,
                                 ResourceType.TRANSACTIONAL_ID)
LITERAL, PREFIXED, MATCH, ANY_PATTERN = (ResourcePatternType.LITERAL,
                                         ResourcePatternType.PREFIXED,
                                         ResourcePatternType.MATCH, ResourcePatternType.ANY)
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
ALICE, BOB, CAROL = "User:alice", "User:bob", "User:carol"

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret",
             "carol": "carol-secret"}
PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" ' +
              " ".join('user_%s="%s"' % kv for kv in PASSWORDS.items()) + ";")


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def acl_broker():
    sasl_port, plain_port = free_port(), free_port()
    listeners = "SASL_PLAINTEXT://127.0.0.1:%d,PLAINTEXT://127.0.0.1:%d" % (sasl_port, plain_port)
    b = Broker(port=plain_port, overrides={
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
    })
    b.sasl_bootstrap = "127.0.0.1:%d" % sasl_port
    b.start()
    try:
        yield b
        b.stop(expect_clean=True)
    finally:
        b.cleanup()


def sasl_conf(b, user, password=None, mechanism="PLAIN"):
    return {"bootstrap.servers": b.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password if password is not None else PASSWORDS[user]}


def admin_of(b, user="admin", conf=None):
    return AdminClient(dict(conf or sasl_conf(b, user), **{"socket.timeout.ms": 10000}))


def acl(principal, restype, name, op, perm=ALLOW, pattern=LITERAL, host="*"):
    return AclBinding(restype, name, pattern, principal, host, op, perm)


def acl_filter(restype=ResourceType.ANY, name=None, pattern=ANY_PATTERN, principal=None,
               host=None, op=Op.ANY, perm=AclPermissionType.ANY):
    return AclBindingFilter(restype, name, pattern, principal, host, op, perm)


def grant(b, *bindings):
    a = admin_of(b)  # futures fail with _DESTROY if the client is collected first
    fs = a.create_acls(list(bindings), request_timeout=15)
    for bnd, f in fs.items():
        assert f.result(timeout=20) is None, bnd


def revoke(b, *bindings):
    """Deletes exactly these bindings (each as a fully specified filter)."""
    filters = [acl_filter(x.restype, x.name, x.resource_pattern_type, x.principal, x.host,
                          x.operation, x.permission_type) for x in bindings]
    a = admin_of(b)
    fs = a.delete_acls(filters, request_timeout=15)
    for f in fs.values():
        f.result(timeout=20)


def describe_acls(admin, flt):
    return set(admin.describe_acls(flt, request_timeout=15).result(timeout=20))


def refusal(future, timeout=30):
    """The KafkaError a future fails with; the test fails if it succeeds."""
    with pytest.raises(KafkaException) as ei:
        future.result(timeout=timeout)
    return ei.value.args[0]


def codes(errors):
    return {e.code() for e in errors}


def make_topic(b, prefix="acl", name=None):
    return create_topic(admin_of(b), name or unique_topic(prefix))


def scram_user(b, prefix):
    """A new SCRAM-SHA-512 user; returns (principal, client conf)."""
    user = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    pw = "pw-" + user
    a = admin_of(b)
    fs = a.alter_user_scram_credentials([UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), pw.encode())])
    for f in fs.values():
        f.result(timeout=20)
    return "User:" + user, sasl_conf(b, user, pw, "SCRAM-SHA-512")


def produce(conf, topic, n=3, extra=None, timeout=30):
    """Produces n records b"v0".. ; returns (delivered values, KafkaErrors from delivery
    reports and from produce() itself)."""
    delivered, errors = [], []
    cfg = dict(conf, **{"linger.ms": 5, "message.timeout.ms": 15000})
    cfg.update(extra or {})
    p = Producer(cfg)
    on_delivery = lambda err, msg: errors.append(err) if err else delivered.append(msg.value())  # noqa: E731
    for i in range(n):
        try:
            p.produce(topic, b"v%d" % i, on_delivery=on_delivery)
        except KafkaException as e:
            errors.append(e.args[0])
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, "%d records still queued %ss after produce (errors %s)" % (
        left, timeout, errors)
    return delivered, errors


def consume(conf, topic, n, group, timeout=30):
    """Subscribes with `group` and reads up to n values; stops at the first error.
    Commits what it read. Returns (values, errors)."""
    c = Consumer(dict(conf, **{"group.id": group, "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}))
    got, errors, deadline = [], [], time.monotonic() + timeout
    try:
        c.subscribe([topic])
        while len(got) < n and not errors and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() and m.error().code() != E._PARTITION_EOF:
                errors.append(m.error())
            elif m is not None and not m.error():
                got.append(m.value())
        if got and not errors:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return got, errors


def read_back(b, topic, n, timeout=20):
    """The first n values of partition 0, read by the super user (read_committed)."""
    c = Consumer(dict(sasl_conf(b, "admin"), **{
        "group.id": unique_topic("acl-reader"), "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append(m.value())
        return out
    finally:
        c.close()


def values(n):
    return [b"v%d" % i for i in range(n)]


# ------------------------------------------------------------------ tests


def test_create_describe_delete_acls_and_persistence(acl_broker):
    b = acl_broker
    uid = uuid.uuid4().hex[:10]
    who = "User:rt-%s" % uid
    prefix = "acl-rt-%s" % uid
    topic = prefix + "-x"
    literal = acl(who, TOPIC, topic, Op.READ)
    wildcard = acl(who, TOPIC, "*", Op.DESCRIBE)
    prefixed = acl(who, TOPIC, prefix, Op.WRITE, DENY, PREFIXED, host="10.1.2.3")
    matching = {literal, wildcard, prefixed}
    others = {acl(who, TOPIC, prefix + "-y", Op.WRITE, pattern=PREFIXED),  # not a prefix of topic
              acl(who, TOPIC, topic + "-other", Op.READ),
              acl(who, GROUP, topic, Op.READ)}
    a = admin_of(b)
    fs = a.create_acls(list(matching | others), request_timeout=15)
    assert set(fs) == matching | others
    for f in fs.values():
        assert f.result(timeout=20) is None

    def described(**kw):
        return describe_acls(a, acl_filter(principal=who, **kw))

    assert described() == matching | others
    # MATCH: the literal name, the '*' wildcard and every prefix of the name.
    assert described(restype=TOPIC, name=topic, pattern=MATCH) == matching
    assert described(restype=TOPIC, name=topic, pattern=LITERAL) == {literal}
    assert described(restype=TOPIC, name="*", pattern=LITERAL) == {wildcard}
    assert described(restype=TOPIC, name=prefix, pattern=PREFIXED) == {prefixed}
    assert described(restype=TOPIC, name=topic, pattern=ANY_PATTERN) == {literal}
    assert described(restype=GROUP) == {acl(who, GROUP, topic, Op.READ)}
    assert described(perm=DENY) == {prefixed}
    assert described(host="10.1.2.3") == {prefixed}
    assert described(restype=TOPIC, op=Op.WRITE) == {
        prefixed, acl(who, TOPIC, prefix + "-y", Op.WRITE, pattern=PREFIXED)}
    assert describe_acls(a, acl_filter(principal="User:nobody-" + uid)) == set()

    # Delete by a MATCH filter: the response lists what was deleted.
    fs = a.delete_acls([acl_filter(restype=TOPIC, name=topic, pattern=MATCH, principal=who)],
                       request_timeout=15)
    [deleted] = [f.result(timeout=20) for f in fs.values()]
    assert set(deleted) == matching
    assert described(restype=TOPIC, name=topic, pattern=MATCH) == set()
    assert described() == others
    fs = a.delete_acls([acl_filter(restype=TOPIC, name=topic, pattern=MATCH, principal=who)],
                       request_timeout=15)
    assert [f.result(timeout=20) for f in fs.values()] == [[]]

    # ACLs (and their effect) survive a restart; deleted ones stay deleted.
    persisted = make_topic(b, "acl-persist")
    grant(b, acl(CAROL, TOPIC, persisted, Op.DESCRIBE))
    b.restart()
    a = admin_of(b)
    assert described() == others
    assert persisted in admin_of(b, "carol").list_topics(timeout=15).topics
    revoke(b, *others)
    assert described() == set()


def test_non_super_user_cannot_manage_acls(acl_broker):
    b = acl_broker
    aa = admin_of(b, "alice")
    topic = unique_topic("acl-self")
    bnd = acl(ALICE, TOPIC, topic, Op.ALL)
    err = refusal(aa.create_acls([bnd], request_timeout=15)[bnd])
    assert err.code() == E.CLUSTER_AUTHORIZATION_FAILED, err
    flt = acl_filter(principal=ALICE)
    err = refusal(aa.delete_acls([flt], request_timeout=15)[flt])
    assert err.code() == E.CLUSTER_AUTHORIZATION_FAILED, err
    assert describe_acls(admin_of(b), acl_filter(restype=TOPIC, name=topic)) == set()
    # DescribeAcls: librdkafka drops the response's top-level error code (an
    # empty list comes back), so the refusal is checked with kafka-python.
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KResourceType
    from kafka.errors import ClusterAuthorizationFailedError
    grant(b, acl(BOB, TOPIC, topic, Op.READ))  # something alice must not see
    assert describe_acls(aa, acl_filter()) == set()
    kp = KafkaAdminClient(bootstrap_servers=b.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username="alice",
                          sasl_plain_password="alice-secret")
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            kp.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                                       ResourcePatternFilter(KResourceType.ANY, None,
                                                             ACLResourcePatternType.ANY)))
    finally:
        kp.close()
    revoke(b, acl(BOB, TOPIC, topic, Op.READ))


def test_prefixed_write_grant(acl_broker):
    b = acl_broker
    prefix = unique_topic("acl-pfx")
    mine = make_topic(b, name=prefix + "-a")
    other = make_topic(b, "acl-other")
    grant(b, acl(ALICE, TOPIC, prefix, Op.WRITE, pattern=PREFIXED))
    delivered, errors = produce(sasl_conf(b, "alice"), mine, 5)
    assert errors == [] and delivered == values(5)
    assert read_back(b, mine, 5) == values(5)
    delivered, errors = produce(sasl_conf(b, "alice"), other, 2)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    assert read_back(b, other, 1, timeout=3) == []


def test_kafka_python_authorized_and_refused(acl_broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.errors import TopicAuthorizationFailedError
    b = acl_broker
    mine, other = make_topic(b, "acl-kp"), make_topic(b, "acl-kpx")
    grant(b, acl(ALICE, TOPIC, mine, Op.WRITE), acl(ALICE, TOPIC, mine, Op.READ))
    common = dict(bootstrap_servers=b.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                  sasl_mechanism="PLAIN", sasl_plain_username="alice",
                  sasl_plain_password="alice-secret")
    p = KafkaProducer(max_block_ms=15000, **common)
    try:
        for f in [p.send(mine, b"kp%d" % i, partition=0) for i in range(5)]:
            f.get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(other, b"nope", partition=0).get(timeout=30)
    finally:
        p.close(timeout=10)
    c = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=10000,
                      enable_auto_commit=False, **common)
    try:
        c.assign([KTP(mine, 0)])
        got = [m.value for _, m in zip(range(5), c)]
    finally:
        c.close()
    assert got == [b"kp%d" % i for i in range(5)]
    assert read_back(b, other, 1, timeout=3) == []


def test_consumer_needs_group_read(acl_broker):
    b = acl_broker
    topic, group = make_topic(b, "acl-grp"), unique_topic("acl-g")
    assert produce(sasl_conf(b, "admin"), topic, 5) == (values(5), [])
    grant(b, acl(BOB, TOPIC, topic, Op.READ))
    got, errors = consume(sasl_conf(b, "bob"), topic, 5, group, timeout=20)
    assert got == [] and E.GROUP_AUTHORIZATION_FAILED in codes(errors), errors
    grant(b, acl(BOB, GROUP, group, Op.READ))
    got, errors = consume(sasl_conf(b, "bob"), topic, 5, group)
    assert errors == [] and got == values(5)
    # bob's commit went through, and he may fetch the group's offsets.
    c = Consumer(dict(sasl_conf(b, "bob"), **{"group.id": group}))
    try:
        assert [tp.offset for tp in c.committed([TopicPartition(topic, 0)], timeout=15)] == [5]
    finally:
        c.close()


def test_deny_beats_allow(acl_broker):
    b = acl_broker
    x, y = make_topic(b, "acl-deny"), make_topic(b, "acl-denyhost")
    grant(b, acl(ALICE, TOPIC, x, Op.ALL), acl(ALICE, TOPIC, x, Op.WRITE, DENY),
          acl(ALICE, TOPIC, y, Op.ALL), acl(ALICE, TOPIC, y, Op.WRITE, DENY, host="10.9.8.7"))
    delivered, errors = produce(sasl_conf(b, "alice"), x, 2)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    md = admin_of(b, "alice").list_topics(timeout=15)
    assert x in md.topics and md.topics[x].error is None
    # A DENY for another host does not apply to a client on 127.0.0.1.
    assert produce(sasl_conf(b, "alice"), y, 2) == (values(2), [])


def test_super_user_needs_no_acls(acl_broker):
    b = acl_broker
    a = admin_of(b)
    topic, group = unique_topic("acl-super"), unique_topic("acl-sg")
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                    request_timeout=15)[topic].result(timeout=20)
    wait_for_topic(a, topic, 2)
    conf = sasl_conf(b, "admin")
    delivered, errors = produce(conf, topic, 6)
    assert errors == [] and sorted(delivered) == values(6)
    got, errors = consume(conf, topic, 6, group)
    assert errors == [] and sorted(got) == values(6)
    assert a.delete_topics([topic], request_timeout=15)[topic].result(timeout=20) is None
    wait_for_topic_absent(a, topic)


def test_metadata_hides_undescribable_topics(acl_broker):
    b = acl_broker
    t1, t2 = make_topic(b, "acl-md1"), make_topic(b, "acl-md2")
    grant(b, acl(CAROL, TOPIC, t1, Op.DESCRIBE))
    ca = admin_of(b, "carol")
    md = ca.list_topics(timeout=15)
    assert t1 in md.topics and md.topics[t1].error is None
    assert t2 not in md.topics
    md = ca.list_topics(topic=t2, timeout=15)
    assert md.topics[t2].error is not None, md.topics[t2]
    assert md.topics[t2].error.code() == E.TOPIC_AUTHORIZATION_FAILED, md.topics[t2].error
    # A topic that does not exist looks the same, and is not auto-created.
    ghost = unique_topic("acl-ghost")
    md = ca.list_topics(topic=ghost, timeout=15)
    assert md.topics[ghost].error is not None, md.topics[ghost]
    assert md.topics[ghost].error.code() == E.TOPIC_AUTHORIZATION_FAILED, md.topics[ghost].error
    assert topic_metadata(admin_of(b), ghost) is None


def test_describe_is_not_read(acl_broker):
    """ListOffsets needs DESCRIBE on the topic, Fetch needs READ."""
    b = acl_broker
    topic, group = make_topic(b, "acl-fetch"), unique_topic("acl-fg")
    assert produce(sasl_conf(b, "admin"), topic, 3) == (values(3), [])
    grant(b, acl(CAROL, TOPIC, topic, Op.DESCRIBE), acl(CAROL, GROUP, group, Op.DESCRIBE))
    c = Consumer(dict(sasl_conf(b, "carol"), **{"group.id": group, "enable.auto.commit": False}))
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15,
                                       cached=False) == (0, 3)
        c.assign([TopicPartition(topic, 0, 0)])
        got, errors, deadline = [], [], time.monotonic() + 15
        while not errors and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                (errors if m.error() else got).append(m.error() or m.value())
        assert got == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    finally:
        c.close()


def test_invalid_acls_are_refused(acl_broker):
    b = acl_broker
    a = admin_of(b)
    topic = unique_topic("acl-bad")
    bad = [acl(ALICE, CLUSTER, "not-the-cluster", Op.ALTER),  # CLUSTER is 'kafka-cluster'
           acl("alice", TOPIC, topic, Op.READ),                # principal without a type
           acl(ALICE, TOPIC, "", Op.READ)]                     # empty resource name
    fs = a.create_acls(bad, request_timeout=15)
    for bnd in bad:
        err = refusal(fs[bnd])
        assert err.code() == E.INVALID_REQUEST, (bnd, err)
    assert describe_acls(a, acl_filter(principal=ALICE, restype=CLUSTER)) == set()
    assert describe_acls(a, acl_filter(restype=TOPIC, name=topic)) == set()


def test_transactional_id_authorization(acl_broker):
    b = acl_broker
    topic, txid = make_topic(b, "acl-txn"), unique_topic("tx")
    grant(b, acl(ALICE, TOPIC, topic, Op.WRITE))
    conf = dict(sasl_conf(b, "alice"), **{"transactional.id": txid,
                                          "transaction.timeout.ms": 30000})
    p = Producer(conf)
    with pytest.raises(KafkaException) as ei:
        p.init_transactions(30)
    err = ei.value.args[0]
    assert err.code() == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, err
    del p
    grant(b, acl(ALICE, TXN_ID, txid, Op.WRITE), acl(ALICE, TXN_ID, txid, Op.DESCRIBE))
    p = Producer(conf)
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, b"v%d" % i)
    p.commit_transaction(30)
    assert read_back(b, topic, 3) == values(3)


def test_idempotent_producer_with_topic_write_only(acl_broker):
    b = acl_broker
    topic = make_topic(b, "acl-idem")
    writer, wconf = scram_user(b, "idem")
    grant(b, acl(writer, TOPIC, topic, Op.WRITE))
    # WRITE on a topic is enough for a producer id (no IDEMPOTENT_WRITE on the cluster).
    assert produce(wconf, topic, 5, {"enable.idempotence": True}) == (values(5), [])
    assert read_back(b, topic, 5) == values(5)
    # A principal without WRITE on any topic is refused a producer id.
    reader, rconf = scram_user(b, "idem-ro")
    grant(b, acl(reader, TOPIC, topic, Op.READ))
    # librdkafka raises the fatal InitProducerId error from poll().
    p = Producer(dict(rconf, **{"enable.idempotence": True, "message.timeout.ms": 10000}))
    p.produce(topic, b"nope")
    deadline = time.monotonic() + 20
    with pytest.raises(KafkaException) as ei:
        while time.monotonic() < deadline:
            p.poll(0.2)
    err = ei.value.args[0]
    assert err.code() == E.CLUSTER_AUTHORIZATION_FAILED and err.fatal(), err
    p.purge()
    assert read_back(b, topic, 6, timeout=3) == values(5)


def test_auto_create_needs_create(acl_broker):
    b = acl_broker
    a = admin_of(b)
    denied, allowed = unique_topic("acl-auto-no"), unique_topic("acl-auto-yes")
    grant(b, acl(ALICE, TOPIC, denied, Op.DESCRIBE), acl(ALICE, TOPIC, denied, Op.WRITE),
          acl(ALICE, TOPIC, allowed, Op.DESCRIBE), acl(ALICE, TOPIC, allowed, Op.WRITE),
          acl(ALICE, TOPIC, allowed, Op.CREATE))
    # Kafka answers Metadata for a topic it would auto-create, but the principal
    # may not create, with TOPIC_AUTHORIZATION_FAILED.
    delivered, errors = produce(sasl_conf(b, "alice"), denied, 1,
                                {"message.timeout.ms": 8000}, timeout=20)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    assert topic_metadata(a, denied) is None
    assert produce(sasl_conf(b, "alice"), allowed, 2) == (values(2), [])
    wait_for_topic(a, allowed)
    assert topic_metadata(a, denied) is None


def test_create_and_delete_topics_need_acls(acl_broker):
    b = acl_broker
    a = admin_of(b)
    who, conf = scram_user(b, "dave")
    da = admin_of(b, conf=conf)
    topic = unique_topic("acl-ct")

    def create():
        return da.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                request_timeout=15)[topic]

    err = refusal(create())
    assert err.code() == E.TOPIC_AUTHORIZATION_FAILED, err
    assert topic_metadata(a, topic) is None
    cluster_create = acl(who, CLUSTER, "kafka-cluster", Op.CREATE)
    grant(b, cluster_create)
    try:
        assert create().result(timeout=20) is None
        wait_for_topic(a, topic)
        err = refusal(da.delete_topics([topic], request_timeout=15)[topic])
        assert err.code() == E.TOPIC_AUTHORIZATION_FAILED, err
        assert topic_metadata(a, topic) is not None
        grant(b, acl(who, TOPIC, topic, Op.DELETE))
        assert da.delete_topics([topic], request_timeout=15)[topic].result(timeout=20) is None
        wait_for_topic_absent(a, topic)
    finally:
        revoke(b, cluster_create)


def test_configs_need_describe_and_alter_configs(acl_broker):
    b = acl_broker
    topic = make_topic(b, "acl-cfg")
    grant(b, acl(ALICE, TOPIC, topic, Op.DESCRIBE))
    aa = admin_of(b, "alice")
    res = ConfigResource(ResourceType.TOPIC, topic)

    def alter():
        r = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
        return aa.incremental_alter_configs([r], request_timeout=15)[r]

    err = refusal(aa.describe_configs([res], request_timeout=15)[res])
    assert err.code() == E.TOPIC_AUTHORIZATION_FAILED, err
    err = refusal(alter())
    assert err.code() == E.TOPIC_AUTHORIZATION_FAILED, err
    broker_res = ConfigResource(ResourceType.BROKER, "0")
    err = refusal(aa.describe_configs([broker_res], request_timeout=15)[broker_res])
    assert err.code() == E.CLUSTER_AUTHORIZATION_FAILED, err
    # ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    grant(b, acl(ALICE, TOPIC, topic, Op.ALTER_CONFIGS))
    assert alter().result(timeout=20) is None
    configs = aa.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    assert configs["retention.ms"].value == "3600000"


def test_anonymous_plaintext_client(acl_broker):
    b = acl_broker
    topic = make_topic(b, "acl-anon")
    conf = {"bootstrap.servers": b.bootstrap}
    delivered, errors = produce(conf, topic, 2)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    everyone = acl("User:*", TOPIC, topic, Op.WRITE)
    grant(b, everyone)
    try:
        assert produce(conf, topic, 2) == (values(2), [])
        assert read_back(b, topic, 2) == values(2)
    finally:
        revoke(b, everyone)


def test_groups_hidden_and_refused(acl_broker):
    b = acl_broker
    topic = make_topic(b, "acl-lg")
    assert produce(sasl_conf(b, "admin"), topic, 1) == (values(1), [])
    g1, g2 = unique_topic("acl-g1"), unique_topic("acl-g2")
    for g in (g1, g2):
        assert consume(sasl_conf(b, "admin"), topic, 1, g) == (values(1), [])
    grant(b, acl(ALICE, GROUP, g1, Op.DESCRIBE))
    aa = admin_of(b, "alice")
    fs = aa.describe_consumer_groups([g1, g2], request_timeout=15,
                                     include_authorized_operations=True)
    d1 = fs[g1].result(timeout=20)
    assert d1.group_id == g1
    assert set(d1.authorized_operations or []) == {Op.DESCRIBE}
    err = refusal(fs[g2])
    assert err.code() == E.GROUP_AUTHORIZATION_FAILED, err
    listed = aa.list_consumer_groups(request_timeout=15).result(timeout=20)
    ids = {g.group_id for g in listed.valid}
    assert g1 in ids and g2 not in ids, ids
    a = admin_of(b)
    everything = a.list_consumer_groups(request_timeout=15).result(timeout=20)
    assert {g1, g2} <= {g.group_id for g in everything.valid}


def test_authorized_operations(acl_broker):
    b = acl_broker
    t, hidden = make_topic(b, "acl-ops"), make_topic(b, "acl-ops-hidden")
    grant(b, acl(ALICE, TOPIC, t, Op.READ))
    aa = admin_of(b, "alice")
    fs = aa.describe_topics(TopicCollection([t, hidden]), request_timeout=15,
                            include_authorized_operations=True)
    d = fs[t].result(timeout=20)
    assert set(d.authorized_operations or []) == {Op.READ, Op.DESCRIBE}
    err = refusal(fs[hidden])
    assert err.code() == E.TOPIC_AUTHORIZATION_FAILED, err
    a = admin_of(b)
    d = a.describe_topics(TopicCollection([t]), request_timeout=15,
                          include_authorized_operations=True)[t].result(timeout=20)
    assert set(d.authorized_operations or []) == {
        Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE, Op.DESCRIBE_CONFIGS,
        Op.ALTER_CONFIGS}
    cluster = a.describe_cluster(request_timeout=15,
                                 include_authorized_operations=True).result(timeout=20)
    assert {Op.ALTER, Op.DESCRIBE, Op.CREATE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS,
            Op.ALTER_CONFIGS, Op.IDEMPOTENT_WRITE} <= set(cluster.authorized_operations or [])
    cluster = aa.describe_cluster(request_timeout=15,
                                  include_authorized_operations=True).result(timeout=20)
    assert not cluster.authorized_operations, cluster.authorized_operations
