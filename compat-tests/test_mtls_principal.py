"""mTLS client certificates turned into principals by
`listener.name.ssl.ssl.principal.mapping.rules` (Kafka's SslPrincipalMapper
semantics), with real clients (confluent-kafka, kcat) over SSL.

The subject DN is taken in RFC 2253 order (most specific first, e.g.
`CN=client-app,OU=Eng,O=Runnel,C=US`); the first rule that matches wins,
`RULE:pattern/replacement/[L|U]` rewrites it (optionally lower/upper-casing),
`DEFAULT` keeps the whole DN, and a DN no rule matches is refused (the
connection is closed).

A module-scoped broker has an SSL listener (client auth required) and a
PLAINTEXT listener whose User:ANONYMOUS is a super user (the admin path for
creating topics and ACLs), StandardAuthorizer, and the rules

    RULE:^CN=([^,]+),OU=Eng,O=Runnel,C=US$/$1/L     -> User:client-app
    RULE:^CN=([^,]+),OU=Ops,.*$/ops-$1/U            -> User:OPS-OPS-BOT
    DEFAULT                                         -> User:CN=stranger,O=Elsewhere

Certificates (one test CA; server, client-app, ops-bot, stranger; an expired
client-app certificate from the same CA; a client-app certificate from another
CA; a self-signed "rogue") are made with openssl in a temporary directory.
kafka-python is used over SSL as well; the expired, foreign and rogue
certificates are refused without disturbing the valid clients. Further tests
start their own brokers: one without DEFAULT (unmatched DN refused) and one
with an invalid rule (refuses to start)."""

import shutil
import socket
import ssl
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

import kafka_wire as kw
from runnel_harness import Broker, BrokerError, free_port, unique_topic

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]

E = KafkaError
KCAT = shutil.which("kcat") or shutil.which("kafkacat")

RULES = ("RULE:^CN=([^,]+),OU=Eng,O=Runnel,C=US$/$1/L,"
         "RULE:^CN=([^,]+),OU=Ops,.*$/ops-$1/U,"
         "DEFAULT")
CLIENT_APP = "User:client-app"
CLIENT_APP_DN = "User:CN=client-app,OU=Eng,O=Runnel,C=US"
OPS_BOT = "User:OPS-OPS-BOT"
STRANGER = "User:CN=stranger,O=Elsewhere"

CLIENTS = {
    "client": "/C=US/O=Runnel/OU=Eng/CN=client-app",
    "ops": "/C=US/O=Runnel/OU=Ops/CN=ops-bot",
    "stranger": "/O=Elsewhere/CN=stranger",
}


# ------------------------------------------------------------------ certificates


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


# A minimal `openssl ca` setup: `openssl x509 -req` (OpenSSL 3.0) cannot put
# notBefore/notAfter in the past, `openssl ca -startdate/-enddate` can.
CA_CNF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ any ]
countryName = optional
organizationName = optional
organizationalUnitName = optional
commonName = supplied
[ client_ext ]
subjectAltName = IP:127.0.0.1,DNS:localhost
"""


def make_expired_client_cert(d):
    """expired.crt/.key: client-app's subject, signed by the test CA, valid from
    two days ago until one day ago. Same DN as client.crt, so a broker that
    accepted it would map it to User:client-app and honour that principal's ACLs."""
    (d / "ca-db").mkdir()
    (d / "ca-db" / "index.txt").write_text("")
    (d / "ca-db" / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(CA_CNF)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", CLIENTS["client"],
            "-keyout", "expired.key", "-out", "expired.csr", cwd=d)
    now = datetime.now(timezone.utc)
    utc_time = "%y%m%d%H%M%SZ"  # ASN.1 UTCTime, as RFC 5280 wants before 2050
    openssl("ca", "-batch", "-config", "ca.cnf", "-in", "expired.csr", "-out", "expired.crt",
            "-startdate", (now - timedelta(days=2)).strftime(utc_time),
            "-enddate", (now - timedelta(days=1)).strftime(utc_time),
            "-extensions", "client_ext", "-notext", "-preserveDN", cwd=d)

    def x509(*args):
        return subprocess.run(["openssl", "x509", "-in", "expired.crt", "-noout", *args], cwd=d,
                              check=True, capture_output=True, text=True).stdout.strip()

    not_after = x509("-enddate")
    assert not_after.startswith("notAfter="), not_after
    assert ssl.cert_time_to_seconds(not_after[len("notAfter="):]) < time.time() - 3600, not_after
    assert x509("-subject", "-nameopt", "RFC2253") == "subject=" + CLIENT_APP_DN[5:]
    # Trusted chain, and expiry is its only defect.
    r = subprocess.run(["openssl", "verify", "-CAfile", "ca.pem", "expired.crt"], cwd=d,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "certificate has expired" in r.stdout + r.stderr, r
    r = subprocess.run(["openssl", "verify", "-CAfile", "ca.pem", "-no_check_time",
                        "expired.crt"], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtls-certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subj in (("server", "/CN=localhost"), *CLIENTS.items()):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
                "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
        openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "%s.crt" % name,
                cwd=d)
        (d / ("%s.pem" % name)).write_text(
            (d / ("%s.key" % name)).read_text() + (d / ("%s.crt" % name)).read_text())
    # A self-signed client certificate: not trusted by the broker.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rogue",
            "-keyout", "rogue.key", "-out", "rogue.crt", cwd=d)
    # A leaf from another CA, with client-app's subject (the self-signed rogue is
    # itself a CA certificate, so a verifier may refuse it for that alone).
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=Rogue CA", "-keyout", "rogue-ca.key", "-out", "rogue-ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", CLIENTS["client"],
            "-keyout", "foreign.key", "-out", "foreign.csr", cwd=d)
    openssl("x509", "-req", "-in", "foreign.csr", "-CA", "rogue-ca.pem", "-CAkey", "rogue-ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "foreign.crt", cwd=d)
    make_expired_client_cert(d)
    # The subjects really are what the rules expect (RFC 2253, most specific first).
    for name, dn in (("client", CLIENT_APP_DN[5:]), ("ops", "CN=ops-bot,OU=Ops,O=Runnel,C=US"),
                     ("stranger", STRANGER[5:]), ("foreign", CLIENT_APP_DN[5:])):
        out = subprocess.run(["openssl", "x509", "-in", "%s.crt" % name, "-noout", "-subject",
                              "-nameopt", "RFC2253"], cwd=d, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == "subject=" + dn, out
    return d


# ------------------------------------------------------------------ brokers


def mtls_broker(certs, rules, authorizer=True):
    """A broker (not started) with SSL (client auth required) and PLAINTEXT listeners."""
    ssl_port, plain_port = free_port(), free_port()
    listeners = "SSL://127.0.0.1:%d,PLAINTEXT://127.0.0.1:%d" % (ssl_port, plain_port)
    ov = {
        "listeners": listeners,
        "advertised.listeners": listeners,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs / "ca.pem"),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.ssl.ssl.principal.mapping.rules": rules,
    }
    if authorizer:
        ov["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        ov["super.users"] = "User:ANONYMOUS"
    b = Broker(port=plain_port, overrides=ov)
    b.ssl_port = ssl_port
    b.ssl_bootstrap = "127.0.0.1:%d" % ssl_port
    return b


@pytest.fixture(scope="module")
def mb(certs):
    b = mtls_broker(certs, RULES)
    try:
        b.start()
        yield b
        b.stop(expect_clean=True)
    finally:
        b.cleanup()


@pytest.fixture
def strict_broker(certs):
    """Function-scoped: only the client-app rule (no DEFAULT), no authorizer."""
    b = mtls_broker(certs, "RULE:^CN=([^,]+),OU=Eng,O=Runnel,C=US$/$1/", authorizer=False)
    try:
        b.start()
        yield b
        b.stop(expect_clean=False)
    finally:
        b.cleanup()


# ------------------------------------------------------------------ helpers


def ssl_conf(b, certs, who):
    return {"bootstrap.servers": b.ssl_bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(certs / "ca.pem"),
            "ssl.certificate.location": str(certs / ("%s.crt" % who)),
            "ssl.key.location": str(certs / ("%s.key" % who)),
            "socket.timeout.ms": 10000}


def admin_of(b):
    # The PLAINTEXT listener: User:ANONYMOUS, a super user.
    return AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 10000})


def make_topic(b, prefix):
    t = unique_topic(prefix)
    a = admin_of(b)
    a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])[t].result(timeout=20)
    deadline = time.monotonic() + 15
    while t not in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "topic %s not visible" % t
        time.sleep(0.1)
    return t


def acl(principal, restype, name, op):
    return AclBinding(restype, name, ResourcePatternType.LITERAL, principal, "*", op,
                      AclPermissionType.ALLOW)


def grant(b, *bindings):
    a = admin_of(b)  # keep a reference: futures fail with _DESTROY if it is collected
    fs = a.create_acls(list(bindings), request_timeout=15)
    for bnd, f in fs.items():
        assert f.result(timeout=20) is None, bnd


def values(n, tag="v"):
    return [("%s%d" % (tag, i)).encode() for i in range(n)]


def produce(conf, topic, n=3, timeout_ms=15000, tag="v"):
    """Produces n records; returns (delivered values, KafkaErrors)."""
    delivered, errors = [], []
    p = Producer(dict(conf, **{"linger.ms": 5, "acks": "all", "message.timeout.ms": timeout_ms}))

    def on_delivery(err, msg):
        (errors.append(err) if err else delivered.append(msg.value()))

    for v in values(n, tag):
        try:
            p.produce(topic, v, on_delivery=on_delivery)
        except KafkaException as e:
            errors.append(e.args[0])
        p.poll(0)
    left = p.flush(timeout_ms / 1000.0 + 10)
    assert left == 0, "%d records still queued after flush (errors %s)" % (left, errors)
    return delivered, errors


def consume(conf, topic, n, group, timeout=30):
    """Subscribes with `group`, reads up to n values, stops at the first error."""
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


def codes(errors):
    return {e.code() for e in errors}


# ------------------------------------------------------------------ tests


def test_client_app_maps_to_lowercased_cn(mb, certs):
    b = mb
    t, u, v = make_topic(b, "mtls-t"), make_topic(b, "mtls-u"), make_topic(b, "mtls-v")
    group = unique_topic("mtls-g")
    grant(b, acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.READ),
          acl(CLIENT_APP, ResourceType.GROUP, group, AclOperation.READ),
          # An ACL for the unmapped DN must not apply to this client.
          acl(CLIENT_APP_DN, ResourceType.TOPIC, v, AclOperation.WRITE))
    conf = ssl_conf(b, certs, "client")
    delivered, errors = produce(conf, t, 5)
    assert errors == [] and delivered == values(5), errors
    got, errors = consume(conf, t, 5, group)
    assert errors == [] and got == values(5), (got, errors)
    # No ACL on U: refused.
    delivered, errors = produce(conf, u, 2, timeout_ms=8000)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    # The ACL for the full DN does not grant anything: the mapped name is the principal.
    delivered, errors = produce(conf, v, 2, timeout_ms=8000)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors
    assert b.is_running()


def test_ops_bot_maps_with_prefix_and_uppercase(mb, certs):
    b = mb
    t, other = make_topic(b, "mtls-ops"), make_topic(b, "mtls-ops-no")
    # Grants to near-miss spellings of the principal must not apply.
    grant(b, acl(OPS_BOT, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl("User:ops-ops-bot", ResourceType.TOPIC, other, AclOperation.WRITE),
          acl("User:OPS-BOT", ResourceType.TOPIC, other, AclOperation.WRITE))
    conf = ssl_conf(b, certs, "ops")
    delivered, errors = produce(conf, t, 4)
    assert errors == [] and delivered == values(4), errors
    delivered, errors = produce(conf, other, 1, timeout_ms=8000)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors


def test_stranger_falls_through_to_default_full_dn(mb, certs):
    b = mb
    t, other = make_topic(b, "mtls-str"), make_topic(b, "mtls-str-no")
    grant(b, acl(STRANGER, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl("User:stranger", ResourceType.TOPIC, other, AclOperation.WRITE))
    conf = ssl_conf(b, certs, "stranger")
    delivered, errors = produce(conf, t, 3)
    assert errors == [] and delivered == values(3), errors
    delivered, errors = produce(conf, other, 1, timeout_ms=8000)
    assert delivered == [] and codes(errors) == {E.TOPIC_AUTHORIZATION_FAILED}, errors


@pytest.mark.skipif(KCAT is None, reason="kcat not installed")
def test_kcat_over_ssl_with_client_certificate(mb, certs):
    b = mb
    t = make_topic(b, "mtls-kcat")
    grant(b, acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.READ))
    common = ["-b", b.ssl_bootstrap, "-X", "security.protocol=SSL",
              "-X", "ssl.ca.location=%s" % (certs / "ca.pem"),
              "-X", "ssl.certificate.location=%s" % (certs / "client.crt"),
              "-X", "ssl.key.location=%s" % (certs / "client.key")]
    sent = ["kcat-%d" % i for i in range(5)]
    r = subprocess.run([KCAT, *common, "-P", "-t", t], input="\n".join(sent).encode() + b"\n",
                       capture_output=True, timeout=60)
    assert r.returncode == 0, "kcat -P failed (%d): %s" % (r.returncode, r.stderr.decode())
    r = subprocess.run([KCAT, *common, "-C", "-o", "beginning", "-e", "-t", t],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, "kcat -C failed (%d): %s" % (r.returncode, r.stderr.decode())
    assert r.stdout.decode().splitlines() == sent, (r.stdout, r.stderr)


def test_unmatched_dn_is_refused_without_default(strict_broker, certs):
    b = strict_broker
    t = unique_topic("mtls-strict")
    a = admin_of(b)
    a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])[t].result(timeout=20)
    good = ssl_conf(b, certs, "client")
    delivered, errors = produce(good, t, 3, tag="a")
    assert errors == [] and delivered == values(3, "a"), errors
    # The stranger's DN matches no rule: the connection is closed, nothing is delivered.
    delivered, errors = produce(ssl_conf(b, certs, "stranger"), t, 2, timeout_ms=8000, tag="s")
    assert delivered == [], delivered
    assert errors, "no delivery report errors for the refused client"
    log = b.log_path.read_text(errors="replace")
    assert "no ssl.principal.mapping.rules rule applies" in log, b.log_tail()
    assert "CN=stranger,O=Elsewhere" in log, b.log_tail()
    # The mapped client keeps working.
    assert b.is_running()
    delivered, errors = produce(good, t, 3, tag="b")
    assert errors == [] and delivered == values(3, "b"), errors
    c = Consumer(dict(good, **{"group.id": unique_topic("g"), "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}))
    try:
        c.subscribe([t])
        got, deadline = [], time.monotonic() + 30
        while len(got) < 6 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
    finally:
        c.close()
    assert got == values(3, "a") + values(3, "b")


@pytest.mark.parametrize("rules", ["RULE:^CN=(.*$/x/", "RULE:^CN=(.*)$/$1", "NOPE"])
def test_invalid_rules_refuse_to_start(certs, rules):
    b = mtls_broker(certs, rules)
    try:
        with pytest.raises(BrokerError) as ei:
            b.start()
        # The harness's "===== start" line lists every override key: only the
        # broker's own lines count.
        own = "\n".join(l for l in str(ei.value).splitlines() if "===== start" not in l)
        assert "ssl.principal.mapping.rules" in own and "broker stopped with an error" in own, own
        assert not b.is_running()
    finally:
        b.cleanup()


# ------------------------------------------------------------------ kafka-python over SSL


def kp_ssl(b, certs, who):
    return {"bootstrap_servers": b.ssl_bootstrap, "security_protocol": "SSL",
            "ssl_cafile": str(certs / "ca.pem"),
            "ssl_certfile": str(certs / ("%s.crt" % who)),
            "ssl_keyfile": str(certs / ("%s.key" % who)),
            # server.crt has IP:127.0.0.1 among its SANs, so hostnames can be checked.
            "ssl_check_hostname": True,
            "request_timeout_ms": 15000}


def test_kafka_python_over_ssl_with_client_certificate(mb, certs):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    from kafka.errors import TopicAuthorizationFailedError
    b = mb
    t, u = make_topic(b, "mtls-kp"), make_topic(b, "mtls-kp-no")
    group = unique_topic("mtls-kp-g")
    grant(b, acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.READ),
          acl(CLIENT_APP, ResourceType.GROUP, group, AclOperation.READ))
    conf = kp_ssl(b, certs, "client")

    p = KafkaProducer(acks="all", max_block_ms=20000, **conf)
    try:
        metas = [p.send(t, v, partition=0).get(timeout=30) for v in values(5, "kp")]
        assert [(m.topic, m.partition, m.offset) for m in metas] == [(t, 0, i) for i in range(5)]
        # No ACL for User:client-app on U.
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(u, b"nope", partition=0).get(timeout=30)
    finally:
        p.close(timeout=10)

    # Without a group: assign + seek_to_beginning.
    c = KafkaConsumer(group_id=None, enable_auto_commit=False, consumer_timeout_ms=15000, **conf)
    try:
        tp = KTP(t, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = [(m.offset, m.value) for _, m in zip(range(5), c)]
    finally:
        c.close()
    assert got == list(enumerate(values(5, "kp"))), got

    # With a group the principal may READ: subscribe, consume, commit.
    c = KafkaConsumer(t, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=20000, **conf)
    try:
        got = [m.value for _, m in zip(range(5), c)]
        assert got == values(5, "kp"), got
        c.commit()
        assert c.committed(KTP(t, 0)) == 5
    finally:
        c.close()
    assert b.is_running()


# ------------------------------------------------------------------ refused certificates


def raw_tls_outcome(b, ctx):
    """Connects to the SSL listener with `ctx` and sends ApiVersions v0.
    Returns ("answered", first bytes) or ("refused", how); a connection the
    broker neither answers nor closes is a failure."""
    with socket.create_connection(("127.0.0.1", b.ssl_port), timeout=10) as s:
        try:
            t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        except ssl.SSLError as e:
            return "refused", "handshake: %s" % e
        with t:
            try:
                t.sendall(kw.build_request(kw.API_API_VERSIONS, 0, 1))
                data = t.recv(4)
            except socket.timeout:
                raise AssertionError("the broker neither answered nor closed the connection")
            except (ssl.SSLError, ConnectionError) as e:
                return "refused", "first read: %r" % e
            return ("answered", data) if data else ("refused", "closed on first read")


def tls_ctx(certs, who):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(certs / ("%s.crt" % who)), str(certs / ("%s.key" % who)))
    return ctx


# expired: client-app's DN, signed by the test CA, notAfter in the past.
# foreign: client-app's DN, signed by another CA ("Rogue CA").
# rogue: self-signed /CN=rogue (a CA certificate itself). test_security.py checks
# only a raw handshake with it, on a broker without principal mapping or authorizer.
REFUSED = {"expired": "expired", "foreign": "issuer", "rogue": None}


@pytest.mark.parametrize("who", sorted(REFUSED))
def test_untrusted_client_certificate_is_refused(mb, certs, who):
    b = mb
    t = make_topic(b, "mtls-%s" % who)
    group = unique_topic("mtls-%s-g" % who)
    # Were the certificate accepted, its principal could write: client-app for the
    # expired and foreign ones (same DN), User:CN=rogue (DEFAULT) for the rogue one.
    grant(b, acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.WRITE),
          acl(CLIENT_APP, ResourceType.TOPIC, t, AclOperation.READ),
          acl(CLIENT_APP, ResourceType.GROUP, group, AclOperation.READ),
          acl("User:CN=rogue", ResourceType.TOPIC, t, AclOperation.WRITE))

    # Raw TLS: the valid certificate gets an answer, the refused one does not.
    kind, data = raw_tls_outcome(b, tls_ctx(certs, "client"))
    assert kind == "answered" and len(data) == 4, (kind, data)
    log_before = len(b.log_path.read_text(errors="replace"))
    kind, how = raw_tls_outcome(b, tls_ctx(certs, who))
    assert kind == "refused", "the broker answered a client with the %s certificate: %r" % (
        who, how)
    # The broker says why (the certificate's verification, not a missing certificate).
    deadline = time.monotonic() + 5
    while True:
        new = [ln for ln in b.log_path.read_text(errors="replace")[log_before:].splitlines()
               if "TLS handshake failed" in ln]
        if new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert new, "no 'TLS handshake failed' in the broker log:\n" + b.log_tail()
    assert "no certificates" not in new[0], new
    if REFUSED[who]:
        assert REFUSED[who] in new[0].lower(), new

    # confluent-kafka: nothing is delivered, and not for lack of an ACL. (For the
    # foreign and rogue certificates librdkafka itself declines to send them: "No
    # matching issuer found in server trusted certificate authorities", so the broker
    # sees no certificate; the raw handshake above is what shows the broker's check.)
    client_errors = []
    conf = dict(ssl_conf(b, certs, who), error_cb=client_errors.append)
    delivered, errors = produce(conf, t, 3, timeout_ms=8000, tag=who)
    assert delivered == [], (delivered, client_errors[:3])
    assert errors, "no delivery report errors for the refused client"
    assert E.TOPIC_AUTHORIZATION_FAILED not in codes(errors), (errors, client_errors[:3])

    # The broker keeps serving the valid client-app certificate.
    assert b.is_running(), b.log_tail()
    good = ssl_conf(b, certs, "client")
    delivered, errors = produce(good, t, 3, tag="ok")
    assert errors == [] and delivered == values(3, "ok"), errors
    got, errors = consume(good, t, 3, group)
    assert errors == [] and got == values(3, "ok"), (got, errors)
