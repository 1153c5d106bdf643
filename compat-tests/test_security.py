"""TLS and SASL with real clients: SASL_SSL with SCRAM-SHA-512 and -256,
SASL_PLAINTEXT with PLAIN (users from the listener's JAAS config), SSL with
client certificates (mTLS), SCRAM users managed with the AdminClient, and the
refusals: wrong password, unknown user or mechanism, requests before
authentication, plain bytes on a TLS port, a client without a certificate.
Certificates are made with openssl in a temporary directory."""

import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

import kafka_wire as kw
from runnel_harness import free_port, unique_topic

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" '
              'user_admin="admin-secret" user_alice="alice-secret";')


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subj in (("server", "/CN=localhost"), ("client", "/C=US/O=Runnel/OU=Eng/CN=client-app")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
                "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
        openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "%s.crt" % name,
                cwd=d)
        (d / ("%s.pem" % name)).write_text(
            (d / ("%s.key" % name)).read_text() + (d / ("%s.crt" % name)).read_text())
    # A client certificate from another CA: not trusted by the broker.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rogue",
            "-keyout", "rogue.key", "-out", "rogue.crt", cwd=d)
    return d


@pytest.fixture(scope="module")
def secure(certs, tmp_path_factory):
    from runnel_harness import Broker
    ports = {"PLAINTEXT": free_port(), "SASL_SSL": free_port(), "SASL_PLAINTEXT": free_port(),
             "SSL": free_port()}
    listeners = ",".join("%s://127.0.0.1:%d" % (n, p) for n, p in ports.items())
    b = Broker(port=ports["PLAINTEXT"], overrides={
        "listeners": listeners,
        "advertised.listeners": listeners,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs / "ca.pem"),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
    })
    b.start()
    b.ports = ports
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for mech, user, pw in ((ScramMechanism.SCRAM_SHA_512, "scram512", "s3cret-512"),
                           (ScramMechanism.SCRAM_SHA_256, "scram256", "s3cret-256")):
        fs = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, ScramCredentialInfo(mech, 8192), pw.encode())])
        for f in fs.values():
            f.result(timeout=15)
    yield b
    b.stop(expect_clean=False)
    b.cleanup()


def sasl_ssl_conf(b, certs, user, password, mech="SCRAM-SHA-512"):
    return {"bootstrap.servers": "127.0.0.1:%d" % b.ports["SASL_SSL"],
            "security.protocol": "SASL_SSL", "sasl.mechanism": mech,
            "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(certs / "ca.pem")}


def round_trip(conf, topic, n=20):
    """Produces n records and consumes them back with the same settings."""
    p = Producer(dict(conf, **{"linger.ms": 5, "acks": "all"}))
    errors = []
    for i in range(n):
        p.produce(topic, b"v%d" % i, key=b"k%d" % i,
                  on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors, errors
    c = Consumer(dict(conf, **{"group.id": unique_topic("g"), "auto.offset.reset": "earliest"}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        end = time.time() + 30
        while len(got) < n and time.time() < end:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        assert got == [b"v%d" % i for i in range(n)]
    finally:
        c.close()


def make_topic(b):
    t = unique_topic("sec")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])
    fs[t].result(timeout=15)
    return t


@pytest.mark.parametrize("mech,user,pw", [("SCRAM-SHA-512", "scram512", "s3cret-512"),
                                          ("SCRAM-SHA-256", "scram256", "s3cret-256")])
def test_sasl_ssl_scram_produce_consume(secure, certs, mech, user, pw):
    round_trip(sasl_ssl_conf(secure, certs, user, pw, mech), make_topic(secure))


def test_sasl_plaintext_plain_produce_consume(secure):
    conf = {"bootstrap.servers": "127.0.0.1:%d" % secure.ports["SASL_PLAINTEXT"],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "alice", "sasl.password": "alice-secret"}
    round_trip(conf, make_topic(secure))


def test_ssl_with_client_certificate(secure, certs):
    conf = {"bootstrap.servers": "127.0.0.1:%d" % secure.ports["SSL"],
            "security.protocol": "SSL", "ssl.ca.location": str(certs / "ca.pem"),
            "ssl.certificate.location": str(certs / "client.crt"),
            "ssl.key.location": str(certs / "client.key")}
    round_trip(conf, make_topic(secure))


def test_kafka_python_over_sasl_ssl_and_plain(secure, certs):
    from kafka import KafkaConsumer, KafkaProducer
    topic = make_topic(secure)
    common = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
              "sasl_plain_username": "scram512", "sasl_plain_password": "s3cret-512",
              "ssl_cafile": str(certs / "ca.pem"), "ssl_check_hostname": False}
    p = KafkaProducer(bootstrap_servers="127.0.0.1:%d" % secure.ports["SASL_SSL"], **common)
    for i in range(10):
        p.send(topic, b"kp%d" % i, partition=0)
    p.flush(30)
    p.close()
    c = KafkaConsumer(bootstrap_servers="127.0.0.1:%d" % secure.ports["SASL_PLAINTEXT"],
                      security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                      sasl_plain_username="alice", sasl_plain_password="alice-secret",
                      auto_offset_reset="earliest", consumer_timeout_ms=10000)
    c.assign([__import__("kafka").TopicPartition(topic, 0)])
    got = [m.value for _, m in zip(range(10), c)]
    c.close()
    assert got == [b"kp%d" % i for i in range(10)]


def login_error(conf):
    """The error a client gets when it cannot log in (None if it can)."""
    errors = []
    a = AdminClient(dict(conf, **{"error_cb": lambda e: errors.append(e)}))
    try:
        a.list_topics(timeout=5)
        return None
    except Exception:
        pass
    return errors[0] if errors else "no metadata"


def test_wrong_password_unknown_user_and_mechanism_are_refused(secure, certs):
    assert login_error(sasl_ssl_conf(secure, certs, "scram512", "wrong")) is not None
    assert login_error(sasl_ssl_conf(secure, certs, "nobody", "x")) is not None
    # PLAIN is not enabled on the SASL_SSL listener.
    assert login_error(sasl_ssl_conf(secure, certs, "alice", "alice-secret", "PLAIN")) is not None
    assert login_error({"bootstrap.servers": "127.0.0.1:%d" % secure.ports["SASL_PLAINTEXT"],
                        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                        "sasl.username": "alice", "sasl.password": "nope"}) is not None
    log = open(secure.log_path).read()
    assert "SASL authentication failed" in log
    for secret in ("s3cret-512", "alice-secret", "nope", "wrong"):
        # Passwords never reach the log (the JAAS config is not logged either).
        assert secret not in log.replace(PLAIN_JAAS, "")
    # An authenticated client keeps working meanwhile.
    round_trip(sasl_ssl_conf(secure, certs, "scram512", "s3cret-512"), make_topic(secure), n=3)


def test_raw_wire_refusals(secure, certs):
    # Produce before authenticating on a SASL port: connection closed.
    with kw.KafkaConn.to("127.0.0.1:%d" % secure.ports["SASL_PLAINTEXT"]) as conn:
        conn.send_raw(kw.build_request(kw.API_METADATA, 1, 1, kw.metadata_v1_body()))
        assert conn.wait_closed(5)
    # ApiVersions is allowed before authentication.
    with kw.KafkaConn.to("127.0.0.1:%d" % secure.ports["SASL_PLAINTEXT"]) as conn:
        err, _ = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0))
        assert err == 0
    # Plain Kafka bytes on a TLS port: closed.
    with kw.KafkaConn.to("127.0.0.1:%d" % secure.ports["SASL_SSL"]) as conn:
        conn.send_raw(kw.build_request(kw.API_API_VERSIONS, 0, 1))
        assert conn.wait_closed(12)
    def refused_on_mtls_port(ctx):
        """The handshake fails, or the broker answers nothing and closes."""
        with socket.create_connection(("127.0.0.1", secure.ports["SSL"]), timeout=10) as s:
            try:
                with ctx.wrap_socket(s) as t:
                    t.sendall(kw.build_request(kw.API_API_VERSIONS, 0, 1))
                    assert t.recv(4) == b""
            except socket.timeout:
                # Silence is not a refusal: a served client would hang here.
                raise AssertionError("the broker neither refused nor answered")
            except (ssl.SSLError, ConnectionError, OSError):
                pass

    # TLS without a client certificate on the mTLS port: refused.
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.check_hostname = False
    refused_on_mtls_port(ctx)
    # A client certificate from an untrusted CA: refused.
    ctx.load_cert_chain(str(certs / "rogue.crt"), str(certs / "rogue.key"))
    refused_on_mtls_port(ctx)
    assert secure.is_running()
    round_trip(sasl_ssl_conf(secure, certs, "scram512", "s3cret-512"), make_topic(secure), n=3)


def raw_frame(conn, payload):
    """SaslHandshake v0 framing: a SASL token as a bare size-prefixed frame."""
    conn.send_raw(struct.pack(">i", len(payload)) + payload)
    return conn.recv_frame(10)


def test_sasl_handshake_v0_raw_tokens(secure):
    """SaslHandshake v0 (old clients): the SASL tokens follow as raw frames,
    not SaslAuthenticate requests; PLAIN logs in, then Kafka requests work;
    a wrong password closes the connection (v0 has no error answer)."""
    port = secure.ports["SASL_PLAINTEXT"]
    with kw.KafkaConn.to("127.0.0.1:%d" % port) as conn:
        r = conn.request(17, 0, kw.string("PLAIN"))
        assert r.i16() == 0
        assert raw_frame(conn, b"\0alice\0alice-secret") == b""
        r = conn.request(kw.API_METADATA, 1, kw.metadata_v1_body())
        assert r.i32() == 1  # one broker
    with kw.KafkaConn.to("127.0.0.1:%d" % port) as conn:
        r = conn.request(17, 0, kw.string("PLAIN"))
        assert r.i16() == 0
        token = b"\0alice\0wrong-pass"
        conn.send_raw(struct.pack(">i", len(token)) + token)
        assert conn.wait_closed(5)
    # A short token (fewer bytes than a request header) is a token, not a
    # malformed frame.
    with kw.KafkaConn.to("127.0.0.1:%d" % port) as conn:
        r = conn.request(17, 0, kw.string("PLAIN"))
        assert r.i16() == 0
        conn.send_raw(struct.pack(">i", 4) + b"\0a\0b")
        assert conn.wait_closed(5)
    assert "SASL authentication failed (SaslHandshake v0)" in secure.log_tail(200)


def test_sasl_bytes_on_a_plaintext_port(secure):
    """A SASL exchange on a PLAINTEXT listener: SaslHandshake is answered
    ILLEGAL_SASL_STATE (there is nothing to authenticate) and the connection
    stays usable; SASL bytes in place of a request close only that connection."""
    port = secure.ports["PLAINTEXT"]
    with kw.KafkaConn.to("127.0.0.1:%d" % port) as conn:
        r = conn.request(17, 1, kw.string("PLAIN"))
        assert r.i16() == 34  # ILLEGAL_SASL_STATE
        r = conn.request(kw.API_METADATA, 1, kw.metadata_v1_body())
        assert r.i32() == 1
    with kw.KafkaConn.to("127.0.0.1:%d" % port) as conn:
        token = b"\0alice\0alice-secret"
        conn.send_raw(struct.pack(">i", len(token)) + token)
        assert conn.wait_closed(5)
    assert secure.is_running()


def test_scram_credentials_admin_round_trip(secure, certs):
    admin = AdminClient({"bootstrap.servers": secure.bootstrap})
    fs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw")])
    fs["carol"].result(timeout=15)
    desc = admin.describe_user_scram_credentials(["carol"])
    info = desc["carol"].result(timeout=15)
    assert [(i.mechanism, i.iterations) for i in info.scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_512, 4096)]
    assert login_error(sasl_ssl_conf(secure, certs, "carol", "carol-pw")) is None
    # Too few iterations: UNACCEPTABLE_CREDENTIAL.
    fs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100), b"pw")])
    with pytest.raises(Exception) as e:
        fs["dave"].result(timeout=15)
    assert "UNACCEPTABLE_CREDENTIAL" in str(e.value) or "teration" in str(e.value)
    # Deleting the credential stops new logins at once.
    fs = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)])
    fs["carol"].result(timeout=15)
    assert login_error(sasl_ssl_conf(secure, certs, "carol", "carol-pw")) is not None
    desc = admin.describe_user_scram_credentials(["carol"])
    with pytest.raises(Exception):
        desc["carol"].result(timeout=15)


def test_bad_security_configs_refuse_to_start(certs, make_broker, tmp_path):
    from runnel_harness import Broker, BrokerError
    cases = [
        {"listeners": "SSL://127.0.0.1:%d" % free_port(), "ssl.keystore.type": "JKS",
         "ssl.keystore.location": str(certs / "server.pem")},
        {"listeners": "SASL_PLAINTEXT://127.0.0.1:%d" % free_port()},
        {"listeners": "SASL_PLAINTEXT://127.0.0.1:%d" % free_port(),
         "sasl.enabled.mechanisms": "PLAIN"},
    ]
    for ov in cases:
        ov = dict(ov, **{"advertised.listeners": ov["listeners"]})
        b = Broker(overrides=ov)
        with pytest.raises(BrokerError):
            b.start()
        b.cleanup()


def test_broker_configs_report_every_listener(secure):
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = AdminClient({"bootstrap.servers": secure.bootstrap})
    res = ConfigResource(ResourceType.BROKER, "0")
    entries = admin.describe_configs([res])[res].result(timeout=15)
    for key in ("listeners", "advertised.listeners"):
        names = sorted(e.split("://")[0] for e in entries[key].value.split(","))
        assert names == sorted(secure.ports), (key, entries[key].value)
    # Secrets are not among the reported broker configs.
    assert not any("jaas" in k or "ssl.keystore.key" in k for k in entries)
