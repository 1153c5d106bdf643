"""Replication over secured listeners: followers reach leaders through
`inter.broker.listener.name` with its protocol, as Kafka brokers do.

- SASL_SSL with PLAIN: the only listener; followers authenticate with the
  username/password of the listener's PLAIN JAAS config over TLS (trusting the
  listener's truststore); acks=all produce completes with an ISR of 3.
- SSL with client certificates required and an authorizer: followers present
  the broker keystore; the broker principal is a super user (a replica fetch
  needs CLUSTER_ACTION); clients without ACLs are refused while replication
  works.
- SASL_PLAINTEXT with SCRAM-SHA-512 between brokers: the broker user is created
  through an extra PLAINTEXT listener of one broker; the credential reaches the
  others through the metadata store and replication starts (the ISR fills up).

Certificates are made with openssl in a temporary directory.
"""

import shutil
import subprocess
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from cluster_harness import Cluster, EtcdError, EtcdServer, etcd_bin, wait_until

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="broker" password="broker-secret" '
              'user_broker="broker-secret" user_alice="alice-secret";')
SCRAM_JAAS = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
              'username="broker" password="broker-scram-secret";')


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a broker certificate for 127.0.0.1 (key and chain in one PEM,
    as ssl.keystore.location takes it) whose subject is CN=broker."""
    d = tmp_path_factory.mktemp("interbroker-certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=broker", "-keyout", "broker.key",
            "-out", "broker.csr", cwd=d)
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.crt", cwd=d)
    (d / "broker.pem").write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())
    return d


@pytest.fixture(scope="module")
def etcd():
    server = EtcdServer()
    try:
        server.start()
    except EtcdError as e:
        server.cleanup()
        pytest.fail(str(e), pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture
def clusters(etcd):
    made = []

    def make(listener_overrides, extra=None):
        """A 3-broker cluster whose listeners come from listener_overrides(port)."""
        c = Cluster(3, etcd=etcd, overrides=extra or {})
        for b in c.brokers.values():
            b.overrides.update(listener_overrides(b))
        made.append(c)
        c.start(wait=False)
        return c

    yield make
    for c in made:
        c.teardown()


def wait_isr(admin, topic, n, timeout=20):
    def ok():
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        return md is not None and md.error is None and all(
            len(p.isrs) == n and p.leader >= 0 for p in md.partitions.values())
    wait_until(ok, timeout, interval=0.2, what="every partition of %s with an ISR of %d" % (topic, n))


def produce_all(conf, topic, n=2000):
    errors = []
    p = Producer(dict(conf, **{"acks": "all", "message.timeout.ms": 20000}))
    for i in range(n):
        p.produce(topic, b"%d" % i, partition=i % 3,
                  on_delivery=lambda e, m: e is not None and errors.append(e))
        if i % 500 == 0:
            p.poll(0)
    left = p.flush(30)
    assert left == 0 and errors == [], (left, errors[:3])


def broker_replication_errors(c):
    """Lines where a follower could not reach or authenticate to a leader."""
    out = []
    for b in c.brokers.values():
        out += [line for line in open(b.log_path)
                if "replica fetch failed" in line or "cannot reach the leader" in line]
    return out


def test_sasl_ssl_plain_between_brokers(clusters, certs):
    c = clusters(lambda b: {
        "listeners": "SASL_SSL://127.0.0.1:%d" % b.port,
        "advertised.listeners": "SASL_SSL://127.0.0.1:%d" % b.port,
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
        "ssl.keystore.location": str(certs / "broker.pem"),
        "ssl.truststore.location": str(certs / "ca.pem"),
    })
    conf = {"bootstrap.servers": c.bootstrap(), "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret",
            "ssl.ca.location": str(certs / "ca.pem")}
    admin = AdminClient(conf)
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, interval=0.3,
               what="3 brokers over SASL_SSL")
    admin.create_topics([NewTopic("sec-plain", 3, 3)])["sec-plain"].result(20)
    wait_isr(admin, "sec-plain", 3)
    produce_all(conf, "sec-plain")
    wait_isr(admin, "sec-plain", 3)


def test_mtls_between_brokers_with_an_authorizer(clusters, certs):
    c = clusters(lambda b: {
        "listeners": "SSL://127.0.0.1:%d" % b.port,
        "advertised.listeners": "SSL://127.0.0.1:%d" % b.port,
        "ssl.client.auth": "required",
        "ssl.keystore.location": str(certs / "broker.pem"),
        "ssl.truststore.location": str(certs / "ca.pem"),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:CN=broker",
    })
    # The test's client uses the broker certificate too: a super user.
    conf = {"bootstrap.servers": c.bootstrap(), "security.protocol": "SSL",
            "ssl.ca.location": str(certs / "ca.pem"),
            "ssl.certificate.location": str(certs / "broker.crt"),
            "ssl.key.location": str(certs / "broker.key")}
    admin = AdminClient(conf)
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, interval=0.3,
               what="3 brokers over SSL")
    admin.create_topics([NewTopic("sec-mtls", 3, 3)])["sec-mtls"].result(20)
    wait_isr(admin, "sec-mtls", 3)
    produce_all(conf, "sec-mtls")
    wait_isr(admin, "sec-mtls", 3)
    assert broker_replication_errors(c) == []


def test_scram_between_brokers_after_the_user_is_shared(clusters):
    from runnel_harness import free_port
    admin_ports = {}

    def listeners(b):
        # An extra PLAINTEXT listener per broker for the administrator: the
        # broker user must exist before brokers can authenticate to each other.
        admin_ports[b] = port = free_port()
        both = "SASL_PLAINTEXT://127.0.0.1:%d,ADMIN://127.0.0.1:%d" % (b.port, port)
        return {
            "listeners": both,
            "advertised.listeners": both,
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,ADMIN:PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
        }

    c = clusters(listeners)
    admin_bootstrap = ",".join("127.0.0.1:%d" % p for p in admin_ports.values())
    admin = AdminClient({"bootstrap.servers": admin_bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, interval=0.3,
               what="3 brokers on the admin listener")
    admin.create_topics([NewTopic("sec-scram", 3, 3)])["sec-scram"].result(20)
    scram = {"bootstrap.servers": c.bootstrap(), "security.protocol": "SASL_PLAINTEXT",
             "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "broker",
             "sasl.password": "broker-scram-secret"}
    # Without the broker user, followers cannot authenticate to leaders: a
    # partition cannot complete acks=all.
    led_by_1 = [p.id for p in admin.list_topics("sec-scram", timeout=5).topics["sec-scram"]
                .partitions.values() if p.leader == 1]
    assert led_by_1, "broker 1 leads no partition"
    failed = []
    p = Producer({"bootstrap.servers": admin_bootstrap, "acks": "all",
                  "message.timeout.ms": 3000})
    p.produce("sec-scram", b"early", partition=led_by_1[0],
              on_delivery=lambda e, m: failed.append(e))
    p.flush(10)
    assert failed and failed[0] is not None, "acks=all completed with followers unable to fetch"
    up = UserScramCredentialUpsertion("broker", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                      b"broker-scram-secret")
    for f in admin.alter_user_scram_credentials([up]).values():
        f.result(10)
    # The credential reaches every broker: clients log in on brokers 2 and 3,
    # followers authenticate to every leader, acks=all completes everywhere.
    wait_until(lambda: _logs_in(scram), 10, interval=0.3, what="SCRAM login on every broker")
    produce_all(scram, "sec-scram")


def _logs_in(conf):
    try:
        md = AdminClient(dict(conf, **{"socket.timeout.ms": 3000})).list_topics(timeout=3)
        return len(md.brokers) == 3
    except Exception:  # noqa: BLE001 - not yet
        return False
