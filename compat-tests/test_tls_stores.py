"""TLS key and trust stores as Kafka configures them, with real clients
(confluent-kafka) and Python's `ssl` module:

- `ssl.keystore.type=PKCS12` (`ssl.keystore.location` + `ssl.keystore.password`)
  and a PKCS12 truststore (`ssl.truststore.type=PKCS12`, made with
  `keytool -importcert`) on an SSL listener with `ssl.client.auth=required`: a
  client with a certificate produces and consumes, one without is refused. A
  key-less store from `openssl pkcs12 -export -nokeys` (no Java "trusted"
  attribute; Java reads it as empty) is trusted too.
- A PEM keystore whose key is an encrypted PKCS#8 key ("BEGIN ENCRYPTED
  PRIVATE KEY"), opened with `ssl.key.password`; without it, or with a wrong
  one, the broker refuses to start naming ssl.key.password; a wrong PKCS12
  password refuses to start naming ssl.keystore.password.
- `ssl.keystore.type=JKS` refuses to start, naming ssl.keystore.type and
  pointing at keytool; a JKS store converted with the suggested keytool command
  works.
- Dynamic keystore update (Kafka's certificate renewal without a restart):
  IncrementalAlterConfigs on BROKER "0" with
  `listener.name.ssl.ssl.keystore.location` makes connections accepted
  afterwards present the new certificate while open connections keep working;
  a bad path or a wrong password is refused with INVALID_CONFIG and the
  certificate in use stays; the cluster-default resource "" is refused with
  INVALID_REQUEST for these keys; the update survives a restart. A PKCS12
  keystore set at runtime works the same way, and its password (a dynamic
  config) does not reach the broker's log.

Certificates (a test CA; server A "/O=First/CN=localhost", server B
"/O=Second/CN=localhost", both with subjectAltName IP:127.0.0.1,DNS:localhost;
a client certificate) are made with openssl in a module-scoped temporary
directory (keytool, when a JDK is installed, for the Java-made stores). Which
server certificate a listener serves is read from its subject's O attribute
with Python's `ssl` (verified against the test CA).

librdkafka cannot address the cluster-default BROKER resource "" (confluent-kafka
refuses an empty ConfigResource name), so that request is sent as a raw
IncrementalAlterConfigs v1."""

import shutil
import socket
import ssl
import struct
import subprocess
import time
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

import kafka_wire as kw
from runnel_harness import Broker, BrokerError, free_port, unique_topic

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]

P12_PASSWORD = "changeit"
KEY_PASSWORD = "keypw"
B_P12_PASSWORD = "b-store-s3cret-4711"   # distinctive: searched for in the broker log
KEYTOOL = shutil.which("keytool")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool (a JDK) not installed")
SERVERS = {"serverA": "/O=First/CN=localhost", "serverB": "/O=Second/CN=localhost"}


# ------------------------------------------------------------------ certificates


def keytool(*args, cwd):
    r = subprocess.run([KEYTOOL, *args], cwd=cwd, capture_output=True, timeout=120)
    assert r.returncode == 0, "keytool %s failed: %s" % (" ".join(args), r.stdout + r.stderr)


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert r.returncode == 0, "openssl %s failed: %s" % (" ".join(args), r.stderr.decode())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls-stores")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subj in (*SERVERS.items(), ("client", "/O=Runnel/CN=client-app")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
                "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
        openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "%s.crt" % name,
                cwd=d)
        # PEM keystore: key and chain in one file.
        (d / ("%s.pem" % name)).write_text(
            (d / ("%s.key" % name)).read_text() + (d / ("%s.crt" % name)).read_text())
    # PKCS12 keystores (key + certificate + CA) and a key-less PKCS12 truststore.
    openssl("pkcs12", "-export", "-inkey", "serverA.key", "-in", "serverA.crt",
            "-certfile", "ca.pem", "-passout", "pass:" + P12_PASSWORD, "-out", "server.p12", cwd=d)
    openssl("pkcs12", "-export", "-inkey", "serverB.key", "-in", "serverB.crt",
            "-certfile", "ca.pem", "-passout", "pass:" + B_P12_PASSWORD, "-out", "serverB.p12",
            cwd=d)
    openssl("pkcs12", "-export", "-nokeys", "-in", "ca.pem", "-passout", "pass:" + P12_PASSWORD,
            "-out", "trust.p12", cwd=d)
    if KEYTOOL:
        # Kafka's usual truststore: the CA as a trusted certificate entry (keytool
        # marks it with the Oracle trusted-key-usage bag attribute).
        keytool("-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem",
                "-keystore", "trust-keytool.p12", "-storetype", "PKCS12",
                "-storepass", P12_PASSWORD, cwd=d)
    # Encrypted PKCS#8 key, and a PEM keystore with it.
    openssl("pkcs8", "-topk8", "-in", "serverA.key", "-v2", "aes-256-cbc",
            "-passout", "pass:" + KEY_PASSWORD, "-out", "enc.key", cwd=d)
    enc = (d / "enc.key").read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in enc, enc[:80]
    (d / "serverA-enc.pem").write_text(enc + (d / "serverA.crt").read_text())
    return d


# ------------------------------------------------------------------ brokers


def tls_broker(overrides):
    """A broker (not started) with a PLAINTEXT listener (the harness's port, for
    admin requests) and an SSL listener named SSL; `overrides` add the TLS keys."""
    ssl_port, plain_port = free_port(), free_port()
    listeners = "PLAINTEXT://127.0.0.1:%d,SSL://127.0.0.1:%d" % (plain_port, ssl_port)
    ov = {"listeners": listeners, "advertised.listeners": listeners}
    ov.update(overrides)
    b = Broker(port=plain_port, overrides=ov)
    b.ssl_port = ssl_port
    b.ssl_bootstrap = "127.0.0.1:%d" % ssl_port
    return b


@contextmanager
def running(b):
    try:
        b.start()
        yield b
        b.stop(expect_clean=True)
    finally:
        b.cleanup()


def broker_output(text):
    """`text` without the harness's "===== start #n: <command line> =====" lines
    (the command line holds every --override key and value)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("===== start"))


def refuses_to_start(overrides):
    """Starts a broker that must exit during start-up; returns what the broker
    itself wrote (the BrokerError's log tail without the harness's command line)."""
    b = tls_broker(overrides)
    try:
        with pytest.raises(BrokerError) as ei:
            b.start()
        assert not b.is_running()
        out = broker_output(str(ei.value))
        assert "ERROR" in out, out
        return out
    finally:
        b.cleanup()


# ------------------------------------------------------------------ clients


def ssl_conf(b, certs, client_cert=False):
    conf = {"bootstrap.servers": b.ssl_bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(certs / "ca.pem"), "socket.timeout.ms": 10000}
    if client_cert:
        conf["ssl.certificate.location"] = str(certs / "client.crt")
        conf["ssl.key.location"] = str(certs / "client.key")
    return conf


def admin_of(b):
    return AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 10000})


def make_topic(b):
    t = unique_topic("tls")
    a = admin_of(b)
    a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])[t].result(timeout=20)
    deadline = time.monotonic() + 15
    while t not in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "topic %s not visible" % t
        time.sleep(0.1)
    return t


def produce(p, topic, vals, timeout=30):
    """Produces vals with producer p; asserts every one was delivered."""
    errors, delivered = [], []

    def on_delivery(err, msg):
        (errors.append(err) if err else delivered.append(msg.value()))

    for v in vals:
        p.produce(topic, v, partition=0, on_delivery=on_delivery)
    left = p.flush(timeout)
    assert left == 0 and not errors, "left %d, errors %s" % (left, errors)
    assert delivered == list(vals), delivered


def consume_all(conf, topic, n, timeout=30):
    """Reads partition 0 of topic from offset 0 until n values or the deadline."""
    c = Consumer(dict(conf, **{"group.id": unique_topic("g"), "enable.auto.commit": False}))
    got, errors = [], []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(m.error())
            else:
                got.append(m.value())
    finally:
        c.close()
    return got, errors


def round_trip(conf, topic, n=10, tag="v"):
    vals = [("%s%d" % (tag, i)).encode() for i in range(n)]
    p = Producer(dict(conf, **{"linger.ms": 5, "acks": "all", "message.timeout.ms": 20000}))
    produce(p, topic, vals)
    got, errors = consume_all(conf, topic, n)
    assert errors == [] and got == vals, (got, errors)


def tls_context(certs, client_cert=False):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    return ctx


def subject_of(peercert):
    return {k: v for rdn in peercert["subject"] for (k, v) in rdn}


def served_subject(port, certs, client_cert=False):
    """The subject (as {attribute: value}) of the certificate a new TLS connection
    to 127.0.0.1:port is served, verified against the test CA and for 127.0.0.1."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with tls_context(certs, client_cert).wrap_socket(s, server_hostname="127.0.0.1") as t:
            return subject_of(t.getpeercert())


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def api_versions_over(sock, correlation_id):
    """ApiVersions v0 on an open (TLS) socket; returns its error code."""
    sock.sendall(kw.build_request(kw.API_API_VERSIONS, 0, correlation_id))
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    body = recv_exact(sock, size)
    (cid, err) = struct.unpack(">ih", body[:6])
    assert cid == correlation_id, (cid, correlation_id)
    return err


def refused(port, ctx):
    """True when a TLS client with `ctx` gets no Kafka answer: the handshake fails
    or the broker closes the connection without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                t.sendall(kw.build_request(kw.API_API_VERSIONS, 0, 1))
                return t.recv(4) == b""
        except (ssl.SSLError, ConnectionError, OSError):
            return True


# ------------------------------------------------------------------ dynamic configs


SSL_LOCATION = "listener.name.ssl.ssl.keystore.location"
# Kafka checks that a keystore set at runtime keeps the subject DN and SANs of the
# one in use; KIP-978 (Kafka 3.7) lets a listener allow a DN change. A and B differ
# in O=, so the brokers of the dynamic tests allow it, as a Kafka broker would need.
ALLOW_DN_CHANGES = {"listener.name.ssl.ssl.allow.dn.changes": "true"}


def incremental(b, resource, ops, validate_only=False):
    """IncrementalAlterConfigs on BROKER `resource` through the AdminClient.
    ops: [(key, value, AlterConfigOpType)]. Returns (0, None) or the code and
    text of the KafkaError the future failed with."""
    a = admin_of(b)   # keep a reference while waiting on the futures
    res = ConfigResource(ResourceType.BROKER, resource, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
    fs = a.incremental_alter_configs([res], request_timeout=15, validate_only=validate_only)
    try:
        fs[res].result(timeout=20)
        return 0, None
    except KafkaException as e:
        return e.args[0].code(), e.args[0].str()


def incremental_set(b, resource, pairs, validate_only=False):
    return incremental(b, resource, [(k, v, AlterConfigOpType.SET) for k, v in pairs],
                       validate_only)


def raw_incremental_set(b, name, pairs):
    """IncrementalAlterConfigs v1 (flexible) SET on BROKER resource `name` over the
    PLAINTEXT listener; returns (error_code, error_message)."""
    tags = kw.EMPTY_TAGGED_FIELDS

    def compact_array(items):
        return kw.uvarint(len(items) + 1) + b"".join(items)

    entries = [kw.compact_string(k) + kw.i8(0) + kw.compact_string(v) + tags for k, v in pairs]
    body = (compact_array([kw.i8(4) + kw.compact_string(name) + compact_array(entries) + tags])
            + kw.i8(0) + tags)
    with kw.KafkaConn.to(b.bootstrap) as conn:
        r = conn.request(44, 1, body, flexible=True)
    r.skip_tagged_fields()
    r.i32()  # throttle

    def result(rr):
        out = (rr.i16(), rr.compact_string(), rr.i8(), rr.compact_string())
        rr.skip_tagged_fields()
        return out

    results = r.compact_array(result) or []
    assert len(results) == 1 and results[0][2:] == (4, name), results
    return results[0][:2]


# ------------------------------------------------------------------ tests


def pkcs12_mtls(certs, truststore):
    return {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs / "server.p12"),
        "ssl.keystore.password": P12_PASSWORD,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(certs / truststore),
        "ssl.truststore.password": P12_PASSWORD,
        "listener.name.ssl.ssl.client.auth": "required",
    }


@needs_keytool
def test_pkcs12_keystore_and_truststore_with_client_auth(certs):
    b = tls_broker(pkcs12_mtls(certs, "trust-keytool.p12"))
    with running(b):
        # The PKCS12 keystore's certificate is the one served.
        assert served_subject(b.ssl_port, certs, client_cert=True) == \
            {"organizationName": "First", "commonName": "localhost"}
        round_trip(ssl_conf(b, certs, client_cert=True), make_topic(b), n=10)
        # Client authentication is required: no certificate, no service.
        assert refused(b.ssl_port, tls_context(certs)), "a client without a certificate was served"
        assert b.is_running()


def test_pkcs12_truststore_made_by_openssl(certs):
    """`openssl pkcs12 -export -nokeys -in ca.pem` writes the CA as a certificate
    bag without Java's "trusted" attribute (OpenSSL before 3.2 cannot add it).
    Java's PKCS12 KeyStore (so Kafka) reads such a store as empty; Runnel
    trusts every certificate in a truststore, so the store works."""
    b = tls_broker(pkcs12_mtls(certs, "trust.p12"))
    with running(b):
        round_trip(ssl_conf(b, certs, client_cert=True), make_topic(b), n=3)
        assert refused(b.ssl_port, tls_context(certs)), "a client without a certificate was served"


@needs_keytool
def test_keystore_converted_with_the_keytool_hint(certs, tmp_path):
    """The JKS refusal suggests `keytool -importkeystore ... -deststoretype PKCS12`:
    a JKS keystore converted that way serves its certificate."""
    keytool("-importkeystore", "-noprompt", "-srckeystore", str(certs / "server.p12"),
            "-srcstoretype", "PKCS12", "-srcstorepass", P12_PASSWORD,
            "-destkeystore", "server.jks", "-deststoretype", "JKS",
            "-deststorepass", P12_PASSWORD, cwd=tmp_path)
    keytool("-importkeystore", "-noprompt", "-srckeystore", "server.jks",
            "-srcstorepass", P12_PASSWORD, "-destkeystore", "converted.p12",
            "-deststoretype", "PKCS12", "-deststorepass", P12_PASSWORD, cwd=tmp_path)
    b = tls_broker({"ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(tmp_path / "converted.p12"),
                    "ssl.keystore.password": P12_PASSWORD})
    with running(b):
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        round_trip(ssl_conf(b, certs), make_topic(b), n=3)


def test_encrypted_pem_key_with_key_password(certs):
    b = tls_broker({
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs / "serverA-enc.pem"),
        "ssl.key.password": KEY_PASSWORD,
    })
    with running(b):
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        round_trip(ssl_conf(b, certs), make_topic(b), n=10)


@pytest.mark.parametrize("password", [None, "not-the-key-password"])
def test_encrypted_pem_key_without_right_password_refuses_to_start(certs, password):
    ov = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "serverA-enc.pem")}
    if password is not None:
        ov["ssl.key.password"] = password
    err = refuses_to_start(ov)
    assert "ssl.key.password" in err, err


def test_wrong_pkcs12_password_refuses_to_start(certs):
    err = refuses_to_start({
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs / "server.p12"),
        "ssl.keystore.password": "not-changeit",
    })
    assert "ssl.keystore.password" in err, err


def test_jks_keystore_type_refuses_to_start_with_keytool_hint(certs):
    err = refuses_to_start({
        "ssl.keystore.type": "JKS",
        "ssl.keystore.location": str(certs / "serverA.pem"),
    })
    assert "ssl.keystore.type" in err, err
    assert "keytool" in err, err


def test_dynamic_keystore_update(certs):
    """Keystore A (PEM) renewed to B with IncrementalAlterConfigs on BROKER "0":
    new connections see B, open ones keep working; a bad path is refused and
    changes nothing; "" is refused; B survives a restart; DELETE reverts to A."""
    b = tls_broker(dict(ALLOW_DN_CHANGES, **{
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "serverA.pem")}))
    with running(b):
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        topic = make_topic(b)
        conf = ssl_conf(b, certs)

        # Connections established before the update: a producer and a raw TLS socket.
        old_errors = []
        old_p = Producer(dict(conf, **{"linger.ms": 5, "acks": "all",
                                       "message.timeout.ms": 20000,
                                       "error_cb": lambda e: old_errors.append(e)}))
        produce(old_p, topic, [b"before-0", b"before-1"])
        raw = tls_context(certs).wrap_socket(
            socket.create_connection(("127.0.0.1", b.ssl_port), timeout=10),
            server_hostname="127.0.0.1")
        try:
            assert subject_of(raw.getpeercert())["organizationName"] == "First"
            assert api_versions_over(raw, 1) == 0

            # Renew: keystore B for the SSL listener, on this broker's resource.
            code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(certs / "serverB.pem"))])
            assert code == 0, (code, msg, b.log_tail())
            assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"

            # The connections opened before keep working (and keep their certificate).
            assert api_versions_over(raw, 2) == 0
            assert subject_of(raw.getpeercert())["organizationName"] == "First"
        finally:
            raw.close()
        produce(old_p, topic, [b"after-0", b"after-1"])
        assert old_errors == [], old_errors
        # A new client over SSL produces and reads everything back.
        round_trip(conf, make_topic(b), n=5, tag="new")
        got, errors = consume_all(conf, topic, 4)
        assert errors == [] and got == [b"before-0", b"before-1", b"after-0", b"after-1"], \
            (got, errors)

        # A keystore that cannot be read: INVALID_CONFIG, B stays in use.
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(certs / "no-such-keystore.pem"))])
        assert code == KafkaError.INVALID_CONFIG, (code, msg)
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
        # validate_only: checked, not applied.
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(certs / "no-such-keystore.pem"))],
                                    validate_only=True)
        assert code == KafkaError.INVALID_CONFIG, (code, msg)
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(certs / "serverA.pem"))],
                                    validate_only=True)
        assert code == 0, (code, msg)
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"

        # The cluster-default resource cannot hold TLS store keys.
        code, msg = raw_incremental_set(b, "", [(SSL_LOCATION, str(certs / "serverA.pem"))])
        assert code == KafkaError.INVALID_REQUEST, (code, msg)
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"

        # The update is persisted: after a restart the broker serves B.
        b.restart()
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
        round_trip(conf, make_topic(b), n=3, tag="restarted")

        # Deleting the dynamic value goes back to server.properties' keystore (A).
        code, msg = incremental(b, "0", [(SSL_LOCATION, None, AlterConfigOpType.DELETE)])
        assert code == 0, (code, msg, b.log_tail())
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"


def test_dynamic_update_rereads_a_keystore_renewed_in_place(certs, tmp_path):
    """Kafka's in-place renewal: the keystore file is overwritten, and the same
    location is set again with AlterConfigs; new connections get the new file's
    certificate."""
    live = tmp_path / "live.pem"
    shutil.copy(certs / "serverA.pem", live)
    b = tls_broker(dict(ALLOW_DN_CHANGES, **{"ssl.keystore.type": "PEM",
                                             "ssl.keystore.location": str(live)}))
    with running(b):
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(live))])
        assert code == 0, (code, msg, b.log_tail())
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        shutil.copy(certs / "serverB.pem", live)
        # Nothing reloads by itself before the request...
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(live))])
        assert code == 0, (code, msg, b.log_tail())
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
        round_trip(ssl_conf(b, certs), make_topic(b), n=3)


def test_dynamic_pkcs12_keystore_wrong_then_right_password(certs):
    """Switching the SSL listener to a PKCS12 keystore at runtime: a wrong
    ssl.keystore.password is refused (INVALID_CONFIG, nothing changes), the right
    one takes effect and survives a restart, and the password never appears in
    the broker's own log output."""
    b = tls_broker(dict(ALLOW_DN_CHANGES, **{
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs / "serverA.pem")}))
    pkcs12_b = [("listener.name.ssl.ssl.keystore.type", "PKCS12"),
                (SSL_LOCATION, str(certs / "serverB.p12"))]
    with running(b):
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        code, msg = incremental_set(
            b, "0", pkcs12_b + [("listener.name.ssl.ssl.keystore.password", "wrong-pw")])
        assert code == KafkaError.INVALID_CONFIG, (code, msg)
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"

        code, msg = incremental_set(
            b, "0", pkcs12_b + [("listener.name.ssl.ssl.keystore.password", B_P12_PASSWORD)])
        assert code == 0, (code, msg, b.log_tail())
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
        round_trip(ssl_conf(b, certs), make_topic(b), n=3)

        b.restart()
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
        # The harness writes its command line into the log: skip those lines.
        log = broker_output(b.log_path.read_text(errors="replace")).splitlines()
        leaks = [line for line in log if B_P12_PASSWORD in line]
        assert leaks == [], "the keystore password is in the broker log:\n" + "\n".join(leaks)


def test_dynamic_update_keeps_the_certificate_identity(certs):
    """KIP-978: without ssl.allow.dn.changes, a renewed keystore must keep the
    subject (A has O=First, B has O=Second): the update is refused with
    INVALID_CONFIG naming the setting, and A stays in use."""
    b = tls_broker({"ssl.keystore.type": "PEM",
                    "ssl.keystore.location": str(certs / "serverA.pem")})
    with running(b):
        code, msg = incremental_set(b, "0", [(SSL_LOCATION, str(certs / "serverB.pem"))])
        assert code == 40, (code, msg)  # INVALID_CONFIG
        assert "ssl.allow.dn.changes" in (msg or ""), msg
        assert served_subject(b.ssl_port, certs)["organizationName"] == "First"
        # Allowed in the same change, it goes through.
        code, msg = incremental_set(b, "0", [("listener.name.ssl.ssl.allow.dn.changes", "true"),
                                             (SSL_LOCATION, str(certs / "serverB.pem"))])
        assert code == 0, (code, msg)
        assert served_subject(b.ssl_port, certs)["organizationName"] == "Second"
