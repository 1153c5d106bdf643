"""SASL/OAUTHBEARER and KIP-368 re-authentication with real clients.

OAUTHBEARER: librdkafka's unsecured JWT (`alg: none`) against Kafka's default
unsecured validator; signed RS256 JWTs (signed here with openssl) against a
`file://` JWKS with expected audience and issuer; expired, unsigned-on-a-JWKS
listener, wrong-audience and wrong-key tokens refused.
Re-authentication: with `connections.max.reauth.ms`, a producer keeps
producing across several session lifetimes on one connection, and a raw
client that does not re-authenticate is disconnected on its next request."""

import base64
import json
import shutil
import subprocess
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
