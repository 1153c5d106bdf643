"""Cluster-wide settings in cluster mode (3 brokers + etcd): SCRAM
credentials, ACLs, client quotas and the cluster-default dynamic broker
configs are shared through etcd (under `<prefix>/settings/`). A change made
through any one broker must be applied by every broker within moments, and a
broker that was down while things changed must catch up when it rejoins
(deletions included).

- SCRAM (AlterUserScramCredentials 51 / DescribeUserScramCredentials 50): a
  SCRAM-SHA-256 user created through broker 1 is described by brokers 2 and 3
  and logs in on each broker's SASL_PLAINTEXT listener (a raw SCRAM exchange
  to exactly that broker, server signature checked), and a confluent-kafka
  Producer logged in as that user writes to a partition led by broker 3;
  deleted through broker 2, broker 1 (and the others) refuse the login and
  describe the user as RESOURCE_NOT_FOUND.
- ACLs (CreateAcls 30 / DescribeAcls 29 / DeleteAcls 31 v1): ALLOW ALL plus
  DENY WRITE for User:ANONYMOUS on a topic, created through broker 1, turn
  produce (raw, to each partition's leader: brokers 1, 2 and 3) into
  TOPIC_AUTHORIZATION_FAILED everywhere, also for a confluent-kafka producer
  through broker 3, while the topic stays describable; broker 2 lists exactly
  those ACLs; the DENY deleted through broker 3 restores produce everywhere.
- Client quotas (AlterClientQuotas 49 / DescribeClientQuotas 48 v0): set through
  broker 1 (a client-id and the default client-id), listed alike by every
  broker; one key removed through broker 2 is gone everywhere, the rest too.
- Cluster-default dynamic broker configs (BROKER resource ""): set through
  broker 2 with IncrementalAlterConfigs v1, every broker's DescribeConfigs of
  its own BROKER "<node id>" reports the values with source
  DYNAMIC_DEFAULT_BROKER_CONFIG (3 on the wire), a topic's effective
  retention.ms follows on every broker; replaced through broker 3 with
  AlterConfigs v2; deleted through broker 1, every broker is back to what it
  said before.
- A broker down while settings change (SIGTERM): through broker 1, an ACL and
  a SCRAM user are created, another ACL and another user deleted, a quota
  removed and a cluster config set; from the moment broker 3 accepts
  connections again it describes exactly the current ACLs, users, quotas and
  cluster configs (never the set it stopped with), and the logins follow.
- Back-to-back changes through different brokers (the second sent right after
  the first was acknowledged): cluster-default configs and client quotas with
  different keys through brokers 1 and 2 both stay; an ACL and a SCRAM user
  created through broker 1 are deleted through broker 2 (as in Kafka, where
  both requests go through the controller's metadata log).

The admin requests are sent raw (kafka_wire) to exactly the broker named:
confluent-kafka's AdminClient picks the broker itself (any, or the
controller), and cannot address the cluster-default BROKER resource at all.

Every test runs its own 3-broker cluster on the module's etcd, with a
PLAINTEXT listener (first: the inter-broker one) and a SASL_PLAINTEXT listener
(SCRAM-SHA-256) per broker, StandardAuthorizer and
allow.everyone.if.no.acl.found=true (so the anonymous PLAINTEXT admin may act
while no ACL names the cluster). Propagation times are printed (pytest -s).
"""

import base64
import hashlib
import hmac
import logging
import os
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigSource

import kafka_wire as kw
from cluster_harness import Cluster, etcd_bin, wait_until
from cluster_helpers import create, metadata_v7
from cluster_helpers import etcd  # noqa: F401 - fixture
from conftest import BrokerFactory
from runnel_harness import free_port, unique_topic
from test_broker_configs import raw_alter, raw_describe, raw_incremental
from test_client_quotas import alter as alter_quotas
from test_client_quotas import describe as describe_quotas

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(120)]

PROPAGATION = 5.0     # seconds a change may take to reach every broker

TOPIC_AUTHORIZATION_FAILED = 29
SASL_AUTHENTICATION_FAILED = 58
RESOURCE_NOT_FOUND = 91

DYNAMIC_DEFAULT = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
assert DYNAMIC_DEFAULT == 3  # the wire's DYNAMIC_DEFAULT_BROKER_CONFIG
SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE

API_SASL_HANDSHAKE = 17
API_DESCRIBE_ACLS = 29
API_CREATE_ACLS = 30
API_DELETE_ACLS = 31
API_SASL_AUTHENTICATE = 36
API_DESCRIBE_USER_SCRAM = 50
API_ALTER_USER_SCRAM = 51

# ACL enums (as on the wire)
RT_ANY, RT_TOPIC, RT_GROUP = 1, 2, 3
PT_ANY, PT_LITERAL = 1, 3
OP_ANY, OP_ALL, OP_READ, OP_WRITE, OP_DESCRIBE = 1, 2, 3, 4, 8
PERM_ANY, PERM_DENY, PERM_ALLOW = 1, 2, 3
ANONYMOUS = "User:ANONYMOUS"

SCRAM_SHA_256 = 1   # AlterUserScramCredentials mechanism id
MECH = "SCRAM-SHA-256"
ITERATIONS = 4096

# librdkafka's log lines (refused logins retried every few ms) go here, not to stderr.
QUIET = logging.getLogger("test_cluster_settings.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False

OVERRIDES = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
    "listener.name.sasl_plaintext.sasl.enabled.mechanisms": MECH,
}


# --------------------------------------------------------------------------
# Clusters with a SASL listener per broker
# --------------------------------------------------------------------------


class _Clusters(BrokerFactory):
    """Starts 3-broker clusters whose brokers each listen on PLAINTEXT (the
    harness's port, first, so the inter-broker listener) and on
    SASL_PLAINTEXT (`broker.sasl_port`); tears them down after the test. A
    BrokerFactory, so a failing test gets every broker's log tail."""

    def __init__(self, etcd_server):  # noqa: brokers is derived
        self.etcd = etcd_server
        self.clusters = []

    @property
    def brokers(self):
        return [b for c in self.clusters for b in c.all_brokers()]

    def __call__(self, n=3):
        c = Cluster(n, overrides=OVERRIDES, etcd=self.etcd)
        self.clusters.append(c)
        for node_id, b in c.brokers.items():
            b.node_id = node_id
            b.sasl_port = free_port()
            listeners = "PLAINTEXT://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d" % (
                b.port, b.sasl_port)
            b.overrides["listeners"] = listeners
            b.overrides["advertised.listeners"] = listeners
        try:
            c.start()
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, c.logs())) from None
        return c

    def teardown(self, expect_clean=False):
        for c in self.clusters:
            c.teardown()


@pytest.fixture
def clusters(etcd):  # noqa: F811 - the imported fixture
    f = _Clusters(etcd)
    yield f
    f.teardown()


def outcome(result):
    """0 for a success (whatever message came with it: Runnel sends "" where
    Kafka sends null), else the (error code, message) pair."""
    code, msg = result
    return 0 if code == 0 else (code, msg)


def settings_in_etcd(c, kind):
    """{item: value} under settings/<kind>/ in etcd."""
    pre = "settings/%s/" % kind
    return {k[len(pre):]: v for k, (v, _lease) in c.etcd_state().items() if k.startswith(pre)}


def converge(c, nodes, probe, expected, what, timeout=PROPAGATION):
    """Waits until probe(broker) == expected on each of `nodes` (polled
    together); {node: seconds until it did}. On timeout, the last answers and
    the log tails."""
    t0 = time.monotonic()
    seen, last = {}, {}

    def cond():
        for n in nodes:
            if n in seen:
                continue
            try:
                last[n] = probe(c.broker(n))
            except Exception as e:  # noqa: BLE001 - reported below
                last[n] = e
            if last[n] == expected:
                seen[n] = round(time.monotonic() - t0, 3)
        return len(seen) == len(nodes)
    try:
        wait_until(cond, timeout, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s\nexpected: %r\nlast answers: %r\n%s" % (
            e, expected, {n: last.get(n) for n in nodes if n not in seen}, c.logs(30))) from None
    return seen


# --------------------------------------------------------------------------
# Raw SCRAM: credentials and logins
# --------------------------------------------------------------------------


def _compact_bytes(b):
    return kw.uvarint(len(b) + 1) + b


def _compact_array(items):
    return kw.uvarint(len(items) + 1) + b"".join(items)


def salted_password(password, salt, iterations=ITERATIONS):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def alter_scram(b, upsert=(), delete=()):
    """AlterUserScramCredentials v0 to broker `b`: upsert [(user, password)],
    delete [user] (SCRAM-SHA-256). Returns {user: 0 or (error code, message)}."""
    dels = [kw.compact_string(u) + kw.i8(SCRAM_SHA_256) + kw.EMPTY_TAGGED_FIELDS
            for u in delete]
    ups = []
    for user, password in upsert:
        salt = os.urandom(16)
        ups.append(kw.compact_string(user) + kw.i8(SCRAM_SHA_256) + kw.i32(ITERATIONS)
                   + _compact_bytes(salt) + _compact_bytes(salted_password(password, salt))
                   + kw.EMPTY_TAGGED_FIELDS)
    body = _compact_array(dels) + _compact_array(ups) + kw.EMPTY_TAGGED_FIELDS
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_ALTER_USER_SCRAM, 0, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle

    def result(x):
        out = (x.compact_string(), x.i16(), x.compact_string())
        x.skip_tagged_fields()
        return out
    results = r.compact_array(result) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in AlterUserScramCredentials response"
    return {u: outcome((code, msg)) for u, code, msg in results}


def describe_scram(b, users=None):
    """DescribeUserScramCredentials v0 to broker `b` (users None: every user).
    Returns (top error, {user: error code or sorted [(mechanism, iterations)]})."""
    if users is None:
        users_field = kw.uvarint(0)
    else:
        users_field = _compact_array([kw.compact_string(u) + kw.EMPTY_TAGGED_FIELDS
                                      for u in users])
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_DESCRIBE_USER_SCRAM, 0, users_field + kw.EMPTY_TAGGED_FIELDS,
                         flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle
    top = r.i16()
    r.compact_string()

    def info(x):
        out = (x.i8(), x.i32())
        x.skip_tagged_fields()
        return out

    def result(x):
        user, code, _msg = x.compact_string(), x.i16(), x.compact_string()
        infos = x.compact_array(info) or []
        x.skip_tagged_fields()
        return user, (code if code else sorted(infos))
    results = r.compact_array(result) or []
    r.skip_tagged_fields()
    assert r.remaining() == 0, "trailing bytes in DescribeUserScramCredentials response"
    return top, dict(results)


def all_users(b):
    top, users = describe_scram(b)
    assert top == 0, top
    return users


def _sasl_authenticate(conn, token):
    r = conn.request(API_SASL_AUTHENTICATE, 1, kw.nullable_bytes(token))
    code, msg = r.i16(), r.string()
    n = r.i32()
    data = r._take(n) if n > 0 else b""
    r.i64()  # session lifetime
    return code, msg, data


def scram_login(port, user, password):
    """A SCRAM-SHA-256 login (SaslHandshake v1 + SaslAuthenticate v1) on the
    SASL_PLAINTEXT listener at `port`, then a Metadata request in the
    session. "ok" (the server's signature checked), or why it was refused."""
    with kw.KafkaConn("127.0.0.1", port, timeout=5) as conn:
        r = conn.request(API_SASL_HANDSHAKE, 1, kw.string(MECH))
        code = r.i16()
        mechs = r.array(lambda x: x.string())
        assert code == 0 and MECH in mechs, (code, mechs)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = "n=%s,r=%s" % (user, nonce)
        try:
            code, msg, server_first = _sasl_authenticate(conn, ("n,," + first_bare).encode())
        except kw.ConnectionClosed:
            return "closed after client-first"
        if code:
            return "refused at client-first: %d %s" % (code, msg)
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(nonce), server_first
        salted = salted_password(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        auth_message = ",".join([first_bare, server_first, without_proof]).encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = without_proof + ",p=" + base64.b64encode(proof).decode()
        try:
            code, msg, server_final = _sasl_authenticate(conn, final.encode())
        except kw.ConnectionClosed:
            return "closed after client-final"
        if code:
            return "refused at client-final: %d %s" % (code, msg)
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = "v=" + base64.b64encode(
            hmac.new(server_key, auth_message, "sha256").digest()).decode()
        assert server_final.decode() == expected, (server_final, expected)
        md = kw.parse_metadata_v1(conn.request(kw.API_METADATA, 1, kw.metadata_v1_body([])))
        assert sorted(x["node_id"] for x in md["brokers"]) == [1, 2, 3], md
        return "ok"


def login_refused(port, user, password):
    """True when a SCRAM login at `port` is refused (SASL_AUTHENTICATION_FAILED
    or the connection closed)."""
    outcome = scram_login(port, user, password)
    return outcome if outcome != "ok" else False


def sasl_conf(b, user, password):
    return {"bootstrap.servers": "127.0.0.1:%d" % b.sasl_port,
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": MECH,
            "sasl.username": user, "sasl.password": password}


def client_login_error(b, user, password):
    """The error a confluent-kafka client bootstrapped to broker `b`'s SASL
    listener gets when it cannot log in (None if it can)."""
    errors = []
    a = AdminClient(dict(sasl_conf(b, user, password),
                         **{"error_cb": lambda e: errors.append(e), "logger": QUIET}))
    try:
        a.list_topics(timeout=3)
        return None
    except Exception:  # noqa: BLE001 - any failure to get metadata
        pass
    return errors[0] if errors else "no metadata"


# --------------------------------------------------------------------------
# Raw ACL requests (v1)
# --------------------------------------------------------------------------


def acl(name, op, perm, principal=ANONYMOUS, rt=RT_TOPIC, pattern=PT_LITERAL, host="*"):
    """A binding as on the wire: (resource type, name, pattern, principal, host, op, perm)."""
    return (rt, name, pattern, principal, host, op, perm)


def _filter(rt=RT_ANY, name=None, pattern=PT_ANY, principal=None, host=None, op=OP_ANY,
            perm=PERM_ANY):
    return (kw.i8(rt) + kw.nullable_string(name) + kw.i8(pattern)
            + kw.nullable_string(principal) + kw.nullable_string(host) + kw.i8(op) + kw.i8(perm))


def exact_filter(binding):
    rt, name, pattern, principal, host, op, perm = binding
    return dict(rt=rt, name=name, pattern=pattern, principal=principal, host=host, op=op,
                perm=perm)


def create_acls(b, bindings):
    """CreateAcls v1 to broker `b`; per binding 0 or (error code, message)."""
    body = kw.array([kw.i8(rt) + kw.string(name) + kw.i8(pattern) + kw.string(principal)
                     + kw.string(host) + kw.i8(op) + kw.i8(perm)
                     for rt, name, pattern, principal, host, op, perm in bindings])
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_CREATE_ACLS, 1, body)
    r.i32()  # throttle
    results = r.array(lambda x: (x.i16(), x.string())) or []
    assert r.remaining() == 0, "trailing bytes in CreateAcls response"
    return [outcome(x) for x in results]


def describe_acls(b, **flt):
    """DescribeAcls v1 to broker `b` with a filter (default: everything);
    the set of bindings (an error answer fails)."""
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_DESCRIBE_ACLS, 1, _filter(**flt))
    r.i32()  # throttle
    code, msg = r.i16(), r.string()
    assert code == 0, "DescribeAcls error %d: %s" % (code, msg)
    out = set()
    for rt, name, pattern, entries in r.array(lambda x: (
            x.i8(), x.string(), x.i8(),
            x.array(lambda y: (y.string(), y.string(), y.i8(), y.i8())) or [])) or []:
        for principal, host, op, perm in entries:
            out.add((rt, name, pattern, principal, host, op, perm))
    assert r.remaining() == 0, "trailing bytes in DescribeAcls response"
    return out


def delete_acls(b, filters):
    """DeleteAcls v1 to broker `b`; per filter (error code, set of deleted bindings)."""
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(API_DELETE_ACLS, 1, kw.array([_filter(**f) for f in filters]))
    r.i32()  # throttle

    def matching(x):
        code, _msg = x.i16(), x.string()
        binding = (x.i8(), x.string(), x.i8(), x.string(), x.string(), x.i8(), x.i8())
        return code, binding

    def result(x):
        code, _msg = x.i16(), x.string()
        found = x.array(matching) or []
        assert all(c == 0 for c, _ in found), found
        return code, {bnd for _c, bnd in found}
    results = r.array(result) or []
    assert r.remaining() == 0, "trailing bytes in DeleteAcls response"
    return results


def produce_code(b, topic, partition, value=b"v"):
    """A raw Produce v3 (acks=1) of one record to broker `b`: the error code."""
    now = int(time.time() * 1000)
    batch = kw.encode_record_batch([(None, value, (), now)], now)
    with kw.KafkaConn.to(b.bootstrap, timeout=10) as conn:
        return kw.produce_v3(conn, topic, partition, batch, acks=1)["error_code"]


def ck_produce(conf, topic, partitions):
    """One record to each partition with confluent-kafka, a producer of its
    own per partition (librdkafka takes a whole topic out of service after a
    TOPIC_AUTHORIZATION_FAILED on one partition, failing its other records
    with odd errors): {partition: error name or None}."""
    out = {}
    for part in partitions:
        p = Producer(dict(conf, **{"linger.ms": 5, "message.timeout.ms": 10000,
                                   "logger": QUIET}))
        p.produce(topic, b"ck-%d" % part, partition=part,
                  on_delivery=lambda e, m, part=part: out.__setitem__(
                      part, e.name() if e is not None else None))
        assert p.flush(20) == 0, "record to partition %d still queued 20 s after produce" % part
    return out


# --------------------------------------------------------------------------
# Cluster-default broker configs
# --------------------------------------------------------------------------

CFG_KEYS = ["log.retention.ms", "message.max.bytes"]


def node_configs(b, node):
    """DescribeConfigs v4 of BROKER "<node>" sent to that broker: {key: (value, source)}."""
    code, msg, configs = raw_describe(b.bootstrap, str(node), keys=CFG_KEYS, synonyms=False)
    assert code == 0, (code, msg)
    return {k: (c["value"], c["source"]) for k, c in configs.items()}


def cluster_defaults(b):
    """The BROKER "" resource as broker `b` describes it: {key: value} (each
    with source DYNAMIC_DEFAULT_BROKER_CONFIG)."""
    code, msg, configs = raw_describe(b.bootstrap, "", synonyms=False)
    assert code == 0, (code, msg)
    assert all(c["source"] == DYNAMIC_DEFAULT for c in configs.values()), configs
    return {k: c["value"] for k, c in configs.items()}


def topic_retention(b, topic):
    code, msg, configs = raw_describe(b.bootstrap, topic, resource_type=2,
                                      keys=["retention.ms"], synonyms=False)
    assert code == 0, (code, msg)
    c = configs["retention.ms"]
    return c["value"], c["source"]


# --------------------------------------------------------------------------
# 1. SCRAM credentials
# --------------------------------------------------------------------------


def test_scram_user_created_and_deleted_through_different_brokers(clusters):
    c = clusters()
    b1, b2, b3 = (c.broker(i) for i in (1, 2, 3))
    user, pw = "u-%s" % uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    topic = unique_topic("scram")
    create(c, topic, 1, 1, ids=[3], assignment=[[3]])   # led by broker 3
    for b in (b1, b2, b3):
        assert all_users(b) == {}, b
        assert login_refused(b.sasl_port, user, pw)

    t0 = time.monotonic()
    assert alter_scram(b1, upsert=[(user, pw)]) == {user: 0}
    described = converge(c, (1, 2, 3), lambda b: describe_scram(b, [user]),
                         (0, {user: [(SCRAM_SHA_256, ITERATIONS)]}),
                         "user %s described by every broker" % user)
    logins = converge(c, (1, 2, 3), lambda b: scram_login(b.sasl_port, user, pw), "ok",
                      "user %s logging in on every broker" % user)
    assert list(settings_in_etcd(c, "scram")) == ["%s/%s" % (MECH, user)]
    # A real client logged in as the user, on broker 3 (the partition's leader).
    assert ck_produce(sasl_conf(b3, user, pw), topic, [0]) == {0: None}
    # Every user (null and empty lists alike) on broker 3: just this one.
    assert all_users(b3) == describe_scram(b3, [])[1] == {
        user: [(SCRAM_SHA_256, ITERATIONS)]}
    assert login_refused(b3.sasl_port, user, pw + "-wrong")

    t1 = time.monotonic()
    assert alter_scram(b2, delete=[user]) == {user: 0}
    gone = converge(c, (1, 2, 3), lambda b: describe_scram(b, [user]),
                    (0, {user: RESOURCE_NOT_FOUND}), "user %s gone on every broker" % user)
    refused = converge(c, (1, 2, 3), lambda b: bool(login_refused(b.sasl_port, user, pw)),
                       True, "every broker refusing %s" % user)
    refusal = scram_login(b1.sasl_port, user, pw)
    assert refusal.startswith("refused at client-") and \
        (": %d " % SASL_AUTHENTICATION_FAILED) in refusal, refusal
    assert client_login_error(b1, user, pw) is not None
    assert settings_in_etcd(c, "scram") == {}
    assert all_users(b1) == {}
    print("created through broker 1 at +0: described %r, logins %r (s); deleted through "
          "broker 2: gone %r, refused %r (created->deleted %.2fs)"
          % (described, logins, gone, refused, t1 - t0))


# --------------------------------------------------------------------------
# 2. ACLs
# --------------------------------------------------------------------------


def test_acl_created_on_one_broker_enforced_on_all(clusters):
    c = clusters()
    topic = unique_topic("acl")
    ps = create(c, topic, 3, 3, assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    leaders = {p: s["leader"] for p, s in ps.items()}
    assert leaders == {0: 1, 1: 2, 2: 3}, ps
    for p, n in leaders.items():
        assert produce_code(c.broker(n), topic, p) == 0

    allow = acl(topic, OP_ALL, PERM_ALLOW)
    deny = acl(topic, OP_WRITE, PERM_DENY)
    t0 = time.monotonic()
    assert create_acls(c.broker(1), [allow, deny]) == [0, 0]
    led = {n: p for p, n in leaders.items()}   # broker -> the partition it leads
    refused = converge(c, (1, 2, 3), lambda b: produce_code(b, topic, led[b.node_id]),
                       TOPIC_AUTHORIZATION_FAILED, "produce refused by every leader")
    # A real client through broker 3: the partition it leads refuses the
    # write; the topic is still describable (ALLOW ALL), others refuse too.
    ck = ck_produce({"bootstrap.servers": c.broker(3).bootstrap}, topic, [0, 1, 2])
    assert ck == {p: "TOPIC_AUTHORIZATION_FAILED" for p in (0, 1, 2)}, ck
    md = AdminClient({"bootstrap.servers": c.broker(3).bootstrap, "logger": QUIET}).list_topics(
        topic, timeout=10)
    assert md.topics[topic].error is None and len(md.topics[topic].partitions) == 3, md.topics
    for n in (1, 2, 3):
        t = metadata_v7(c.broker(n), [topic])["topics"][topic]
        assert t["error"] == 0 and sorted(t["partitions"]) == [0, 1, 2], (n, t)
    listed = converge(c, (1, 2, 3), lambda b: describe_acls(b), {allow, deny},
                      "both ACLs listed by every broker")
    assert describe_acls(c.broker(2), rt=RT_TOPIC, name=topic, pattern=PT_LITERAL,
                         principal=ANONYMOUS) == {allow, deny}
    assert describe_acls(c.broker(2), perm=PERM_DENY) == {deny}
    assert len(settings_in_etcd(c, "acls")) == 2

    t1 = time.monotonic()
    assert delete_acls(c.broker(3), [exact_filter(deny)]) == [(0, {deny})]
    restored = converge(c, (1, 2, 3), lambda b: produce_code(b, topic, led[b.node_id]), 0,
                        "produce allowed again by every leader")
    converge(c, (1, 2, 3), lambda b: describe_acls(b), {allow}, "only the ALLOW left")
    assert ck_produce({"bootstrap.servers": c.broker(1).bootstrap}, topic, [0, 1, 2]) == {
        0: None, 1: None, 2: None}
    assert len(settings_in_etcd(c, "acls")) == 1
    # The rest goes through broker 2.
    assert delete_acls(c.broker(2), [dict(principal=ANONYMOUS)]) == [(0, {allow})]
    converge(c, (1, 2, 3), lambda b: describe_acls(b), set(), "no ACLs left")
    assert settings_in_etcd(c, "acls") == {}
    print("ACLs created through broker 1: produce refused after %r, listed after %r; DENY "
          "deleted through broker 3 (%.2fs later): produce allowed after %r"
          % (refused, listed, t1 - t0, restored))


# --------------------------------------------------------------------------
# 3. Client quotas
# --------------------------------------------------------------------------


def all_quotas(b):
    """Every client-id quota broker `b` describes: {client-id or None: {key: value}}."""
    code, entries = describe_quotas(b, [("client-id", 2, None)])
    assert code == 0, code
    out = {}
    for entity, values in entries:
        assert len(entity) == 1 and entity[0][0] == "client-id", entity
        out[entity[0][1]] = values
    return out


def test_client_quotas_shared(clusters):
    c = clusters()
    cid = "app-%s" % uuid.uuid4().hex[:8]
    for n in (1, 2, 3):
        assert all_quotas(c.broker(n)) == {}
    assert alter_quotas(c.broker(1), [
        ([("client-id", cid)], [("producer_byte_rate", 1048576.0, False),
                                ("consumer_byte_rate", 2097152.0, False)]),
        ([("client-id", None)], [("producer_byte_rate", 524288.0, False)]),
    ]) == [(0, None), (0, None)]
    both = {cid: {"producer_byte_rate": 1048576.0, "consumer_byte_rate": 2097152.0},
            None: {"producer_byte_rate": 524288.0}}
    seen = converge(c, (1, 2, 3), all_quotas, both, "both quotas on every broker")
    for n in (2, 3):
        code, found = describe_quotas(c.broker(n), [("client-id", 0, cid)])
        assert (code, found) == (0, [((("client-id", cid),), both[cid])]), (n, found)
        code, found = describe_quotas(c.broker(n), [("client-id", 1, None)], strict=True)
        assert (code, found) == (0, [((("client-id", None),), both[None])]), (n, found)
    assert len(settings_in_etcd(c, "quotas")) == 2

    # One key of one entity removed through broker 2.
    assert alter_quotas(c.broker(2), [([("client-id", cid)],
                                       [("producer_byte_rate", 0.0, True)])]) == [(0, None)]
    one_less = {cid: {"consumer_byte_rate": 2097152.0}, None: both[None]}
    removed = converge(c, (1, 2, 3), all_quotas, one_less,
                       "producer_byte_rate of %s removed everywhere" % cid)
    # The rest, through broker 2 as well.
    assert alter_quotas(c.broker(2), [
        ([("client-id", cid)], [("consumer_byte_rate", 0.0, True)]),
        ([("client-id", None)], [("producer_byte_rate", 0.0, True)]),
    ]) == [(0, None), (0, None)]
    none = converge(c, (1, 2, 3), all_quotas, {}, "no quotas left anywhere")
    assert settings_in_etcd(c, "quotas") == {}
    print("quotas set through broker 1 seen after %r; one removed through broker 2 gone after "
          "%r; all gone after %r" % (seen, removed, none))


# --------------------------------------------------------------------------
# 4. Cluster-default dynamic broker configs
# --------------------------------------------------------------------------


def test_cluster_default_broker_configs_shared(clusters):
    c = clusters()
    topic = unique_topic("defaults")
    create(c, topic, 1, 3, ids=[1])
    before = {n: node_configs(c.broker(n), n) for n in (1, 2, 3)}
    for n, cfg in before.items():
        assert set(cfg) == set(CFG_KEYS), (n, cfg)
        assert all(src != DYNAMIC_DEFAULT for _v, src in cfg.values()), (n, cfg)
        assert cluster_defaults(c.broker(n)) == {}, n
    # Same static configs everywhere: one expectation for every broker.
    assert before[1] == before[2] == before[3], before
    topic_before = {n: topic_retention(c.broker(n), topic) for n in (1, 2, 3)}

    # Set through broker 2 (IncrementalAlterConfigs v1 on BROKER "").
    assert outcome(raw_incremental(c.broker(2).bootstrap, "", [
        ("log.retention.ms", "123456789", SET), ("message.max.bytes", "2000000", SET)])) == 0
    want = {"log.retention.ms": ("123456789", DYNAMIC_DEFAULT),
            "message.max.bytes": ("2000000", DYNAMIC_DEFAULT)}
    seen = converge(c, (1, 2, 3), lambda b: node_configs(b, b.node_id), want,
                    "every broker describing the cluster defaults on its own BROKER resource")
    for n in (1, 2, 3):
        assert cluster_defaults(c.broker(n)) == {"log.retention.ms": "123456789",
                                                 "message.max.bytes": "2000000"}, n
        # In effect: the topic (no override) follows on every broker.
        assert topic_retention(c.broker(n), topic) == ("123456789", DYNAMIC_DEFAULT), n
    assert list(settings_in_etcd(c, "configs")) == ["default"]

    # Replaced through broker 3 (AlterConfigs v2: the whole set).
    assert outcome(raw_alter(c.broker(3).bootstrap, "", {"log.retention.ms": "7200000"})) == 0
    want = dict(before[1], **{"log.retention.ms": ("7200000", DYNAMIC_DEFAULT)})
    replaced = converge(c, (1, 2, 3), lambda b: node_configs(b, b.node_id), want,
                        "the replaced cluster defaults (message.max.bytes dropped) on every "
                        "broker")
    for n in (1, 2, 3):
        assert cluster_defaults(c.broker(n)) == {"log.retention.ms": "7200000"}, n

    # Deleted through broker 1: every broker says what it said before.
    assert outcome(raw_incremental(c.broker(1).bootstrap, "",
                                   [("log.retention.ms", None, DELETE)])) == 0
    back = converge(c, (1, 2, 3), lambda b: node_configs(b, b.node_id), before[1],
                    "every broker back to its configs before")
    for n in (1, 2, 3):
        assert cluster_defaults(c.broker(n)) == {}, n
        assert topic_retention(c.broker(n), topic) == topic_before[n], n
    print("cluster defaults set through broker 2 seen after %r, replaced through broker 3 "
          "after %r, deleted through broker 1 after %r" % (seen, replaced, back))


# --------------------------------------------------------------------------
# 5. A broker down while settings change
# --------------------------------------------------------------------------


def test_broker_down_while_settings_change_catches_up(clusters):
    c = clusters()
    b1, b3 = c.broker(1), c.broker(3)
    uid = uuid.uuid4().hex[:8]
    old_user, new_user = ("old-%s" % uid, "pw-old"), ("new-%s" % uid, "pw-new")
    kept = acl("down-kept-" + uid, OP_READ, PERM_ALLOW, principal="User:" + old_user[0])
    doomed = acl("down-doomed-" + uid, OP_WRITE, PERM_DENY)
    added = acl("down-added-" + uid, OP_DESCRIBE, PERM_ALLOW, principal="User:" + new_user[0],
                rt=RT_GROUP)
    cid = "down-app-" + uid

    def state(b):
        return {"acls": describe_acls(b), "users": all_users(b), "quotas": all_quotas(b),
                "configs": cluster_defaults(b)}

    # Before: broker 3 holds what is about to change.
    assert create_acls(b1, [kept, doomed]) == [0, 0]
    assert alter_scram(b1, upsert=[old_user]) == {old_user[0]: 0}
    assert alter_quotas(b1, [([("client-id", cid)], [("producer_byte_rate", 1000.0, False)])]) \
        == [(0, None)]
    assert outcome(raw_incremental(b1.bootstrap, "", [("log.retention.ms", "86400000", SET)])) == 0
    initial = {"acls": {kept, doomed}, "users": {old_user[0]: [(SCRAM_SHA_256, ITERATIONS)]},
               "quotas": {cid: {"producer_byte_rate": 1000.0}},
               "configs": {"log.retention.ms": "86400000"}}
    converge(c, (1, 2, 3), state, initial, "the initial settings on every broker")
    assert scram_login(b3.sasl_port, *old_user) == "ok"

    # Broker 3 down; meanwhile, through broker 1: an ACL created and another
    # deleted, a user created and another deleted, the quota removed, the
    # cluster default changed.
    assert b3.stop() == 0
    c.wait_for_members([1, 2], on=[1, 2], timeout=10)
    assert create_acls(b1, [added]) == [0]
    assert delete_acls(b1, [exact_filter(doomed)]) == [(0, {doomed})]
    assert alter_scram(b1, upsert=[new_user], delete=[old_user[0]]) == {
        new_user[0]: 0, old_user[0]: 0}
    assert alter_quotas(b1, [([("client-id", cid)], [("producer_byte_rate", 0.0, True)])]) == \
        [(0, None)]
    assert outcome(raw_incremental(b1.bootstrap, "", [("log.retention.ms", "3600000", SET)])) == 0
    current = {"acls": {kept, added}, "users": {new_user[0]: [(SCRAM_SHA_256, ITERATIONS)]},
               "quotas": {}, "configs": {"log.retention.ms": "3600000"}}
    converge(c, (1, 2), state, current, "the changed settings on brokers 1 and 2")
    assert sorted(settings_in_etcd(c, "scram")) == ["%s/%s" % (MECH, new_user[0])]
    assert len(settings_in_etcd(c, "acls")) == 2 and settings_in_etcd(c, "quotas") == {}

    # Back: broker 3's own copy (it still holds the old set on disk) is
    # replaced with etcd's.
    t_start = time.monotonic()
    b3.start()
    accepting = time.monotonic() - t_start
    # From the moment it accepts connections it answers with the current
    # settings, never with the set it held when it stopped (with which the
    # deleted user could still log in, the deleted DENY still apply).
    answers = []
    while time.monotonic() < t_start + accepting + 1.5:
        t = round(time.monotonic() - t_start, 3)
        try:
            answers.append((t, state(b3)))
        except (OSError, kw.ConnectionClosed, AssertionError) as e:
            answers.append((t, repr(e)))
    not_current = [(t, a) for t, a in answers if a != current]
    assert not not_current, "broker 3 answered %d of %d times after starting with other " \
        "settings than etcd's %r, e.g. %r" % (len(not_current), len(answers), current,
                                              not_current[:3])
    c.wait_for_members([1, 2, 3], timeout=15)
    rejoined = time.monotonic() - t_start
    caught_up = converge(c, (3,), state, current, "broker 3 holding exactly the current settings")
    assert node_configs(b3, 3)["log.retention.ms"] == ("3600000", DYNAMIC_DEFAULT)
    assert describe_scram(b3, [old_user[0]]) == (0, {old_user[0]: RESOURCE_NOT_FOUND})
    assert scram_login(b3.sasl_port, *new_user) == "ok"
    assert login_refused(b3.sasl_port, *old_user)
    # And it stays so (no late re-application of its old local state).
    time.sleep(1.5)
    assert state(b3) == current
    print("broker 3 accepting %.2fs after start, listed by all %.2fs after start; %d answers "
          "from it in its first 1.5 s, all current; current %r s after rejoining"
          % (accepting, rejoined, len(answers), caught_up))


# --------------------------------------------------------------------------
# 6. Back-to-back changes through different brokers
# --------------------------------------------------------------------------


def test_back_to_back_changes_through_different_brokers(clusters):
    """A change through broker 2 sent right after one through broker 1 was
    acknowledged (no waiting for propagation, as a script or an AdminClient
    that picks any broker does). In Kafka both go through the controller's
    metadata log, so the second request sees the first: nothing acknowledged
    is lost and a deletion finds what was just created. Checked after the
    propagation time, on every broker and in etcd."""
    c = clusters()
    b1, b2 = c.broker(1), c.broker(2)
    uid = uuid.uuid4().hex[:8]
    problems = []

    # Cluster-default configs: two different keys, both acknowledged.
    assert outcome(raw_incremental(b1.bootstrap, "", [("log.retention.ms", "3600000", SET)])) == 0
    assert outcome(raw_incremental(b2.bootstrap, "", [("message.max.bytes", "2000000", SET)])) == 0
    want = {"log.retention.ms": "3600000", "message.max.bytes": "2000000"}
    # Client quotas: two keys of one entity, both acknowledged.
    cid = "b2b-" + uid
    assert alter_quotas(b1, [([("client-id", cid)], [("producer_byte_rate", 1000.0, False)])]) \
        == [(0, None)]
    assert alter_quotas(b2, [([("client-id", cid)], [("consumer_byte_rate", 2000.0, False)])]) \
        == [(0, None)]
    want_quotas = {cid: {"producer_byte_rate": 1000.0, "consumer_byte_rate": 2000.0}}
    # An ACL created through broker 1, deleted through broker 2.
    a = acl("b2b-" + uid, OP_READ, PERM_ALLOW)
    assert create_acls(b1, [a]) == [0]
    deleted = delete_acls(b2, [exact_filter(a)])
    if deleted != [(0, {a})]:
        problems.append("DeleteAcls through broker 2 right after CreateAcls through broker 1 "
                        "answered %r (nothing deleted)" % deleted)
    # A SCRAM user created through broker 1, deleted through broker 2.
    user = "b2b-" + uid
    assert alter_scram(b1, upsert=[(user, "pw")]) == {user: 0}
    dropped = alter_scram(b2, delete=[user])
    if dropped != {user: 0}:
        problems.append("deleting user %s through broker 2 right after creating it through "
                        "broker 1 answered %r" % (user, dropped))

    time.sleep(PROPAGATION / 2)
    for n in (1, 2, 3):
        b = c.broker(n)
        if cluster_defaults(b) != want:
            problems.append("broker %d cluster defaults %r, acknowledged %r"
                            % (n, cluster_defaults(b), want))
        if all_quotas(b) != want_quotas:
            problems.append("broker %d quotas %r, acknowledged %r" % (n, all_quotas(b),
                                                                       want_quotas))
        if a in describe_acls(b):
            problems.append("broker %d still lists the ACL" % n)
        if scram_login(b.sasl_port, user, "pw") == "ok":
            problems.append("user %s still logs in on broker %d" % (user, n))
    assert not problems, "\n".join(problems + ["etcd settings: %r" % {
        k: settings_in_etcd(c, k) for k in ("configs", "quotas", "acls", "scram")}])
