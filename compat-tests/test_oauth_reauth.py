"""SASL/OAUTHBEARER and KIP-368 re-authentication with real clients.

OAUTHBEARER: librdkafka's unsecured JWT (`alg: none`) against Kafka's default
unsecured validator; signed RS256 JWTs (signed here with openssl) against a
`file://` JWKS with expected audience and issuer; expired, unsigned-on-a-JWKS
listener, wrong-audience and wrong-key tokens refused.
JWKS over HTTPS (system trust from SSL_CERT_FILE): keys fetched at start, and
fetched again when a token names a key the broker does not know (rotation).
Re-authentication: with `connections.max.reauth.ms`, a producer keeps
producing across several session lifetimes on one connection, and a raw
client that does not re-authenticate is disconnected on its next request."""

import base64
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw
from runnel_harness import Broker, free_port, unique_topic

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" user_alice="alice-secret";')
OAUTH_JAAS = 'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;'


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa(tmp_path_factory):
    """An RSA key pair, a second (untrusted) key, and the JWKS of the first."""
    d = tmp_path_factory.mktemp("jwks")
    for name in ("good", "rogue"):
        subprocess.run(["openssl", "genrsa", "-out", str(d / ("%s.key" % name)), "2048"],
                       check=True, capture_output=True)
    text = subprocess.run(["openssl", "rsa", "-in", str(d / "good.key"), "-noout", "-modulus"],
                          check=True, capture_output=True, text=True).stdout
    modulus = bytes.fromhex(text.strip().split("=", 1)[1])
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                      "n": b64url(modulus), "e": b64url(b"\x01\x00\x01")}]}
    (d / "jwks.json").write_text(json.dumps(jwks))
    return d


def sign(keyfile, claims, kid="k1"):
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = ("%s.%s" % (header, payload)).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(keyfile)],
                         input=signing_input, check=True, capture_output=True).stdout
    return "%s.%s.%s" % (header, payload, b64url(sig))


@pytest.fixture(scope="module")
def brokers(rsa):
    ports = {"UNSECURED": free_port(), "SIGNED": free_port(), "REAUTH": free_port(),
             "PLAINTEXT": free_port()}
    listeners = ",".join("%s://127.0.0.1:%d" % (n, p) for n, p in ports.items())
    b = Broker(port=ports["PLAINTEXT"], overrides={
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map":
            "UNSECURED:SASL_PLAINTEXT,SIGNED:SASL_PLAINTEXT,REAUTH:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "listener.name.unsecured.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.unsecured.oauthbearer.sasl.jaas.config": OAUTH_JAAS,
        "listener.name.signed.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.signed.oauthbearer.sasl.jaas.config": OAUTH_JAAS,
        "listener.name.signed.sasl.oauthbearer.jwks.endpoint.url": "file://%s" % (rsa / "jwks.json"),
        "listener.name.signed.sasl.oauthbearer.expected.audience": "runnel",
        "listener.name.signed.sasl.oauthbearer.expected.issuer": "https://idp.test",
        "listener.name.reauth.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.reauth.plain.sasl.jaas.config": PLAIN_JAAS,
        "listener.name.reauth.connections.max.reauth.ms": "1500",
    })
    b.start()
    b.ports = ports
    yield b
    b.stop(expect_clean=False)
    b.cleanup()


def make_topic(b):
    t = unique_topic("oauth")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])[t].result(timeout=15)
    return t


def produce(conf, topic, n=10, timeout=20):
    """Produces n records; returns the delivery errors (empty on success)."""
    errors, done = [], []
    p = Producer(dict(conf, **{"message.timeout.ms": int(timeout * 1000) - 2000}))
    for i in range(n):
        p.produce(topic, b"v%d" % i, on_delivery=lambda e, m: (errors if e else done).append(e))
    p.flush(timeout)
    return errors, len(done)


def test_unsecured_jwt_from_librdkafka(brokers):
    conf = {"bootstrap.servers": "127.0.0.1:%d" % brokers.ports["UNSECURED"],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=alice"}
    errors, ok = produce(conf, make_topic(brokers))
    assert not errors and ok == 10
    assert "principal=User:alice" in brokers.log_tail(400)


def oauth_conf(brokers, token, expiry):
    return {"bootstrap.servers": "127.0.0.1:%d" % brokers.ports["SIGNED"],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": lambda _cfg: (token, expiry)}


def test_signed_jwt_against_jwks(brokers, rsa):
    now = int(time.time())
    token = sign(rsa / "good.key", {"sub": "svc-orders", "aud": "runnel",
                                     "iss": "https://idp.test", "iat": now, "exp": now + 600})
    errors, ok = produce(oauth_conf(brokers, token, now + 600), make_topic(brokers))
    assert not errors and ok == 10
    assert "principal=User:svc-orders" in brokers.log_tail(400)


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "wrong_issuer", "rogue_key",
                                  "unsigned"])
def test_bad_tokens_refused(brokers, rsa, case):
    now = int(time.time())
    claims = {"sub": "mallory", "aud": "runnel", "iss": "https://idp.test",
              "iat": now, "exp": now + 600}
    key = rsa / "good.key"
    if case == "expired":
        claims.update(iat=now - 7200, exp=now - 3600)
    elif case == "wrong_audience":
        claims["aud"] = "someone-else"
    elif case == "wrong_issuer":
        claims["iss"] = "https://evil.test"
    elif case == "rogue_key":
        key = rsa / "rogue.key"
    if case == "unsigned":
        token = "%s.%s." % (b64url(b'{"alg":"none"}'), b64url(json.dumps(claims).encode()))
    else:
        token = sign(key, claims)
    # Authentication failures are reported through the producer's errors
    # (or it times out without delivering): nothing may be delivered.
    errors, ok = produce(oauth_conf(brokers, token, now + 600), make_topic(brokers), n=1,
                         timeout=8)
    assert ok == 0
    deadline = time.time() + 10
    while time.time() < deadline and "invalid OAuth bearer token" not in brokers.log_tail(400):
        time.sleep(0.2)
    assert "invalid OAuth bearer token" in brokers.log_tail(400)
    assert "mallory" not in [line for line in brokers.log_tail(400).splitlines()
                             if "authentication succeeded" in line]


def test_producer_reauthenticates_across_session_lifetimes(brokers):
    conf = {"bootstrap.servers": "127.0.0.1:%d" % brokers.ports["REAUTH"],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "alice", "sasl.password": "alice-secret", "linger.ms": 5}
    topic = make_topic(brokers)
    p = Producer(conf)
    errors, ok = [], [0]

    def cb(e, m):
        if e:
            errors.append(e)
        else:
            ok[0] += 1
    end = time.time() + 6  # four session lifetimes of 1.5 s
    while time.time() < end:
        p.produce(topic, b"x", on_delivery=cb)
        p.poll(0.05)
    assert p.flush(20) == 0
    assert not errors and ok[0] > 50


def sasl_plain_v1(conn, user, password):
    r = conn.request(17, 1, kw.string("PLAIN"))
    assert r.i16() == 0
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = conn.request(36, 1, kw.nullable_bytes(token))
    code = r.i16()
    r.string()
    r._take(r.i32())  # auth bytes
    return code, r.i64()


def test_expired_session_is_closed_on_next_request(brokers):
    with kw.KafkaConn.to("127.0.0.1:%d" % brokers.ports["REAUTH"]) as c:
        code, lifetime = sasl_plain_v1(c, "alice", "alice-secret")
        assert code == 0 and 0 < lifetime <= 1500
        c.request(3, 1, kw.array([]))  # Metadata within the lifetime is served
        time.sleep(lifetime / 1000 + 0.5)
        with pytest.raises(kw.ConnectionClosed):
            c.request(3, 1, kw.array([]))


def jwk_of(keyfile, kid):
    text = subprocess.run(["openssl", "rsa", "-in", str(keyfile), "-noout", "-modulus"],
                          check=True, capture_output=True, text=True).stdout
    modulus = bytes.fromhex(text.strip().split("=", 1)[1])
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64url(modulus), "e": b64url(b"\x01\x00\x01")}


@pytest.fixture
def https_jwks(rsa):
    """An HTTPS JWKS endpoint (certificate from a test CA) whose key set the
    test can change."""
    d = rsa
    def run(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    if not (d / "web.pem").exists():
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Web CA",
            "-keyout", "webca.key", "-out", "webca.pem")
        (d / "web.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "web.key", "-out", "web.csr")
        run("x509", "-req", "-in", "web.csr", "-CA", "webca.pem", "-CAkey", "webca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "web.ext", "-out", "web.crt")
        (d / "web.pem").write_text((d / "web.key").read_text() + (d / "web.crt").read_text())
    state = {"jwks": {"keys": [jwk_of(d / "good.key", "k1")]}, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["hits"] += 1
            body = json.dumps(state["jwks"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(d / "web.pem"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state["url"] = "https://127.0.0.1:%d/jwks.json" % srv.server_address[1]
    state["ca"] = str(d / "webca.pem")
    yield state
    srv.shutdown()


def test_signed_jwt_against_https_jwks_with_rotation(https_jwks, rsa):
    port, admin_port = free_port(), free_port()
    listeners = "SIGNED:%s,PLAINTEXT:%s" % ("SASL_PLAINTEXT", "PLAINTEXT")
    b = Broker(port=admin_port, overrides={
        "listeners": "SIGNED://127.0.0.1:%d,PLAINTEXT://127.0.0.1:%d" % (port, admin_port),
        "advertised.listeners": "SIGNED://127.0.0.1:%d,PLAINTEXT://127.0.0.1:%d" % (port, admin_port),
        "listener.security.protocol.map": listeners,
        "listener.name.signed.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.signed.oauthbearer.sasl.jaas.config": OAUTH_JAAS,
        "listener.name.signed.sasl.oauthbearer.jwks.endpoint.url": https_jwks["url"],
    })
    b.extra_env = {"SSL_CERT_FILE": https_jwks["ca"]}
    b.start()
    b.ports = {"SIGNED": port}
    try:
        assert https_jwks["hits"] >= 1  # fetched before serving
        now = int(time.time())
        claims = {"sub": "svc-https", "iat": now, "exp": now + 600}
        errors, ok = produce(oauth_conf(b, sign(rsa / "good.key", claims), now + 600),
                             make_topic(b))
        assert not errors and ok == 10
        # Rotation: the endpoint now publishes k2 (another key); a token signed
        # with k2 is refused until the broker has fetched again, which a token
        # naming an unknown kid triggers.
        https_jwks["jwks"] = {"keys": [jwk_of(rsa / "rogue.key", "k2")]}
        token2 = sign(rsa / "rogue.key", dict(claims, sub="svc-rotated"), kid="k2")
        topic = make_topic(b)
        deadline = time.time() + 20
        delivered = 0
        while time.time() < deadline and delivered == 0:
            _, delivered = produce(oauth_conf(b, token2, now + 600), topic, n=1, timeout=4)
        assert delivered == 1, b.log_tail(50)
        assert "principal=User:svc-rotated" in b.log_tail(400)
    finally:
        b.stop(expect_clean=False)
        b.cleanup()
