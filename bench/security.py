"""`make bench` security phase: what TLS and SASL cost on Runnel, measured in one sitting.

Starts one Runnel with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL (SCRAM-SHA-512, TLS 1.3) listeners
(certificates made with openssl in the work directory), then:
  - produce throughput, PLAINTEXT and SASL_SSL runs alternating (confluent-kafka, 4 KB records,
    acks=1, linger.ms=5), the median of each, the SASL_SSL fraction of PLAINTEXT, and the broker's
    CPU seconds per GB for each (from /proc);
  - SCRAM-SHA-512 logins per second: new connection, SaslHandshake, the two SaslAuthenticate
    round trips, close; several client threads; over SASL_PLAINTEXT and over SASL_SSL (with the
    TLS handshake). The client caches its salted password (PBKDF2 is the client's cost, not the
    broker's), so the figure is the broker's.
Prints `RESULT` lines and a short table. Figures only: nothing is asserted."""

import argparse
import base64
import hashlib
import hmac
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compat-tests"))
import kafka_wire as kw  # noqa: E402
from procstat import cpu_seconds  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo,  # noqa: E402
                                   ScramMechanism, UserScramCredentialUpsertion)

USER, PASSWORD, ITERATIONS = "bench", "bench-secret", 4096


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d):
    def run(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Bench CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    with open(os.path.join(d, "server.pem"), "w") as out:
        for name in ("server.key", "server.crt"):
            with open(os.path.join(d, name)) as f:
                out.write(f.read())


def start_broker(binary, work):
    ports = {n: free_port() for n in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")}
    listeners = ",".join("%s://127.0.0.1:%d" % (n, p) for n, p in ports.items())
    conf = {
        "listeners": listeners, "advertised.listeners": listeners,
        "log.dirs": os.path.join(work, "security-data"),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "ssl.keystore.type": "PEM", "ssl.keystore.location": os.path.join(work, "server.pem"),
        "ssl.enabled.protocols": "TLSv1.3",
    }
    path = os.path.join(work, "security.properties")
    with open(path, "w") as f:
        f.writelines("%s=%s\n" % kv for kv in conf.items())
    log = open(os.path.join(work, "runnel-security.log"), "w")
    proc = subprocess.Popen([binary, "--config", path], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ports["PLAINTEXT"]), timeout=1).close()
            return proc, ports
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("runnel did not come up; see %s" % log.name)


def produce_run(conf, topic, messages, size, pid):
    p = Producer(dict(conf, **{"linger.ms": 5, "acks": 1, "queue.buffering.max.kbytes": 262144}))
    payload = os.urandom(size)
    errors = []
    t0, c0 = time.time(), cpu_seconds([pid])
    for _ in range(messages):
        while True:
            try:
                p.produce(topic, payload, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    secs, cpu = time.time() - t0, cpu_seconds([pid]) - c0
    gb = messages * size / 1e9
    return {"mb_s": messages * size / 1e6 / secs, "cpu_s_per_gb": cpu / gb, "errors": len(errors)}


def scram_login(port, tls_ctx, salted):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = tls_ctx.wrap_socket(raw, server_hostname="localhost") if tls_ctx else raw
    conn = kw.KafkaConn.__new__(kw.KafkaConn)
    conn.sock, conn.timeout, conn._next_corr = sock, 10.0, 1
    try:
        r = conn.request(17, 1, kw.string("SCRAM-SHA-512"))
        assert r.i16() == 0
        nonce = base64.b64encode(os.urandom(18)).decode()
        bare = "n=%s,r=%s" % (USER, nonce)
        r = conn.request(36, 1, kw.nullable_bytes(("n,," + bare).encode()))
        assert r.i16() == 0, "client-first refused"
        r.string()
        server_first = r._take(r.i32()).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salt = base64.b64decode(attrs["s"])
        key = (salt, int(attrs["i"]))
        if key not in salted:
            salted[key] = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, key[1])
        sp = salted[key]
        client_key = hmac.new(sp, b"Client Key", hashlib.sha512).digest()
        stored = hashlib.sha512(client_key).digest()
        without_proof = "c=biws,r=%s" % attrs["r"]
        auth_msg = ",".join((bare, server_first, without_proof)).encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha512).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        r = conn.request(36, 1, kw.nullable_bytes(("%s,p=%s" % (without_proof, proof)).encode()))
        assert r.i16() == 0, "client-final refused"
    finally:
        sock.close()


def logins_per_second(port, tls_ctx, seconds, threads):
    counts, failures = [0] * threads, [0] * threads
    end = time.time() + seconds

    def worker(i):
        salted = {}
        while time.time() < end:
            try:
                scram_login(port, tls_ctx, salted)
                counts[i] += 1
            except Exception:  # noqa: BLE001 - counted, the figure says how many
                failures[i] += 1
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.time() - t0), sum(failures)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--login-seconds", type=float, default=5)
    ap.add_argument("--login-threads", type=int, default=4)
    a = ap.parse_args()
    if shutil.which("openssl") is None:
        print("NOTE security phase skipped: openssl not installed")
        return 0
    make_certs(a.work)
    proc, ports = start_broker(a.runnel, a.work)
    try:
        plain = {"bootstrap.servers": "127.0.0.1:%d" % ports["PLAINTEXT"]}
        admin = AdminClient(plain)
        for f in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS),
                PASSWORD.encode())]).values():
            f.result(timeout=15)
        secure = {"bootstrap.servers": "127.0.0.1:%d" % ports["SASL_SSL"],
                  "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                  "sasl.username": USER, "sasl.password": PASSWORD,
                  "ssl.ca.location": os.path.join(a.work, "ca.pem")}
        topics = ["sec-%s-r%d" % (n, r) for r in range(a.repeat) for n in ("plain", "sasl-ssl")]
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
            f.result(timeout=15)
        runs = {"plain": [], "sasl-ssl": []}
        for r in range(a.repeat):
            for name, conf in (("plain", plain), ("sasl-ssl", secure)):
                res = produce_run(conf, "sec-%s-r%d" % (name, r), a.messages, a.size, proc.pid)
                runs[name].append(res)
                admin.delete_topics(["sec-%s-r%d" % (name, r)])
                print("RESULT kind=security scenario=produce-%s run=%d mb_s=%.1f cpu_s_per_gb=%.2f errors=%d"
                      % (name, r + 1, res["mb_s"], res["cpu_s_per_gb"], res["errors"]), flush=True)
        ctx = ssl.create_default_context(cafile=os.path.join(a.work, "ca.pem"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        logins = {}
        for name, port, tls in (("sasl-plaintext", ports["SASL_PLAINTEXT"], None),
                                ("sasl-ssl", ports["SASL_SSL"], ctx)):
            rate, failed = logins_per_second(port, tls, a.login_seconds, a.login_threads)
            logins[name] = rate
            print("RESULT kind=security scenario=scram-logins-%s logins_per_s=%.0f failures=%d"
                  % (name, rate, failed), flush=True)
        med = {n: statistics.median(x["mb_s"] for x in v) for n, v in runs.items()}
        cpu = {n: statistics.median(x["cpu_s_per_gb"] for x in v) for n, v in runs.items()}
        print()
        print("Security (one Runnel, same sitting; %d x %d-byte records, acks=1, median of %d):"
              % (a.messages, a.size, a.repeat))
        print("  produce PLAINTEXT            %8.1f MB/s   broker %.2f CPU s/GB" % (med["plain"], cpu["plain"]))
        print("  produce SASL_SSL (SCRAM-512, TLS 1.3) %6.1f MB/s   broker %.2f CPU s/GB   = %.0f%% of PLAINTEXT (target >= 70%%)"
              % (med["sasl-ssl"], cpu["sasl-ssl"], 100 * med["sasl-ssl"] / med["plain"]))
        print("  SCRAM-SHA-512 logins/s: %.0f over SASL_PLAINTEXT, %.0f over SASL_SSL incl. TLS handshake (target >= 300/s)"
              % (logins["sasl-plaintext"], logins["sasl-ssl"]))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
