"""Observability (MISSION.md section 1 scenario 5, section 4): the metrics listener.

- Prometheus (Debian's `prometheus` package, installed by `make test`) scrapes a
  broker under a small produce/consume load with config/prometheus.yml, and
  every PromQL expression of grafana/dashboards/runnel.json returns data; the
  consumer-lag queries return exactly the messages a stopped group left unread.
- Counter values are right: messages-in rises by exactly N, bytes-in by >= N x S.
- /metrics renders in under 50 ms with 1,000 partitions and 100 groups.
- Bad input on the metrics port: 404 for unknown paths, 405 for other methods,
  and Kafka requests get no Kafka answer there.
"""

import http.client
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import (ConsumerGroupTopicPartitions, KafkaError, ShareConsumer,
                             TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

from ck_helpers import admin_client, consume_n, consumer, create_topic, producer
from kafka_wire import api_versions_v3_body, build_request
from runnel_harness import free_port, unique_topic

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "runnel.json"
PROMETHEUS_CONFIG = REPO / "config" / "prometheus.yml"
DEFAULT_METRICS_TARGET = "127.0.0.1:9404"

# Dashboard variables that are not template variables of the dashboard itself.
INTERVAL_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m",
                 "__range_s": "60", "__range_ms": "60000", "__interval_ms": "60000"}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def metrics_broker(make_broker, **extra):
    """A broker serving /metrics on a free port; `.metrics_port` is set."""
    port = free_port()
    overrides = {"metrics.listener": "http://127.0.0.1:%d" % port,
                 "group.initial.rebalance.delay.ms": "0"}
    overrides.update(extra)
    b = make_broker(overrides)
    b.metrics_port = port
    deadline = time.monotonic() + 15
    while True:
        try:
            status, body = http_get(port, "/healthz")
            if status == 200:
                assert body.strip() == b"ok", body
                return b
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("metrics listener on %d not ready; broker log:\n%s"
                                 % (port, b.log_tail()))
        time.sleep(0.05)


def http_get(port, path, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, "unparseable metrics line: %r" % line
        name, labels, value = m.groups()
        lbl = frozenset(_LABEL.findall(labels or ""))
        key = (name, lbl)
        assert key not in out, "duplicate series in /metrics: %r" % line
        out[key] = float(value)
    return out


def scrape(broker):
    status, body = http_get(broker.metrics_port, "/metrics")
    assert status == 200, (status, body[:200])
    return parse_metrics(body.decode())


def value(samples, name, **labels):
    """The value of one series (0 when absent: counters start at 0)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series_of(samples, name):
    return {lbl: v for (n, lbl), v in samples.items() if n == name}


def produce_all(p, topic, values, partition=None, key=None):
    """Produce and flush; returns the delivery errors (empty on success)."""
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for i, v in enumerate(values):
        kw = {"on_delivery": cb}
        if partition is not None:
            kw["partition"] = partition(i) if callable(partition) else partition
        if key is not None:
            kw["key"] = key(i)
        p.produce(topic, v, **kw)
        p.poll(0)
    left = p.flush(30)
    assert left == 0, "%d messages still queued after flush" % left
    return errors


def dashboard_targets():
    """[(panel title, expr)] for every target of every panel (rows included)."""
    d = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(d.get("panels", []))
    return d, found


def substitute(expr, template_vars):
    """Replace Grafana variables with concrete values: intervals -> 1m, template
    variables -> the `.*` regex (what "All" means for them)."""
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in INTERVAL_VARS:
            return INTERVAL_VARS[name]
        if name in template_vars:
            return ".*"
        raise AssertionError("unknown dashboard variable $%s in %r" % (name, expr))

    out = re.sub(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)',
                 repl, expr)
    assert "$" not in out, out
    return out


class Prometheus:
    """A Prometheus server on 127.0.0.1, with its own storage directory."""

    def __init__(self, binary, config_text, workdir):
        self.dir = Path(workdir)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config_text)
        self.port = free_port()
        self.log_path = self.dir / "prometheus.log"
        self.cmd = [binary, "--config.file=%s" % self.config,
                    "--storage.tsdb.path=%s" % (self.dir / "tsdb"),
                    "--web.listen-address=127.0.0.1:%d" % self.port,
                    "--log.level=warn"]
        self.proc = None

    def start(self, timeout=30):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited with %s:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            try:
                status, _ = http_get(self.port, "/-/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("prometheus not ready in %ss:\n%s"
                                     % (timeout, self.log_tail()))
            time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def api(self, path, **params):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}

    def query(self, expr):
        return self.api("/api/v1/query", query=expr)

    def wait_for_scrapes(self, n, timeout=20):
        """Wait until the only target is up and n distinct successful scrapes were seen."""
        seen = set()
        last = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.api("/api/v1/targets")
            active = last.get("data", {}).get("activeTargets", [])
            if len(active) == 1 and active[0].get("health") == "up":
                seen.add(active[0].get("lastScrape"))
                if len(seen) >= n:
                    return active[0]
            time.sleep(0.2)
        raise AssertionError("prometheus did not scrape the broker %d times in %ss; targets: %s"
                             % (n, timeout, json.dumps(last)[:2000]))


def prometheus_config_for(metrics_port):
    """config/prometheus.yml, pointed at this broker and scraping every second."""
    text = PROMETHEUS_CONFIG.read_text()
    assert DEFAULT_METRICS_TARGET in text, \
        "config/prometheus.yml should scrape %s" % DEFAULT_METRICS_TARGET
    text = text.replace(DEFAULT_METRICS_TARGET, "127.0.0.1:%d" % metrics_port)
    text, n = re.subn(r'(?m)^(\s*scrape_interval:\s*)\S+', r'\g<1>1s', text)
    assert n >= 1, "no scrape_interval in config/prometheus.yml"
    text = re.sub(r'(?m)^(\s*scrape_timeout:\s*)\S+', r'\g<1>1s', text)
    text = re.sub(r'(?m)^(\s*evaluation_interval:\s*)\S+', r'\g<1>1s', text)
    return text


class BackgroundLoad:
    """A producer (about 200 messages/s) and a live consumer group that commits,
    so rates, latencies and a Stable group are there while Prometheus scrapes."""

    def __init__(self, bootstrap, topic, group):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.stop_event = threading.Event()
        self.consumed = 0
        self.errors = []
        self.first_message = threading.Event()
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._consume, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def _produce(self):
        try:
            p = producer(self.bootstrap)
            i = 0
            while not self.stop_event.is_set() and i < 20000:
                for _ in range(10):
                    p.produce(self.topic, b"x" * 100, key=b"%d" % i)
                    i += 1
                p.poll(0)
                time.sleep(0.05)
            p.flush(10)
        except Exception as e:  # reported by stop()
            self.errors.append(e)

    def _consume(self):
        try:
            c = consumer(self.bootstrap, **{"group.id": self.group, "enable.auto.commit": True,
                                            "auto.commit.interval.ms": 500})
            c.subscribe([self.topic])
            deadline = time.monotonic() + 120
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                for m in c.consume(num_messages=500, timeout=0.2):
                    if m.error() is None:
                        self.consumed += 1
                        self.first_message.set()
            c.close()
        except Exception as e:
            self.errors.append(e)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------

def test_dashboard_and_provisioning_files_are_consistent():
    d, targets = dashboard_targets()
    assert d.get("schemaVersion", 0) >= 36
    assert d.get("uid") and d.get("title")
    names = [v["name"] for v in d["templating"]["list"]]
    assert "DS_PROMETHEUS" in names
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (p["title"], g)
            if p["type"] != "row":
                uid = p.get("datasource", {}).get("uid")
                assert uid in ("${DS_PROMETHEUS}", "$DS_PROMETHEUS", "prometheus"), (p["title"], uid)
                assert p.get("targets"), "panel %r has no query" % p["title"]
            walk(p.get("panels", []))

    walk(d["panels"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(targets) >= 20
    # Every metric family the issue asks the dashboard to show is used somewhere.
    exprs = "\n".join(e for _, e in targets)
    for needed in ["kafka_server_brokertopicmetrics_bytesin_total",
                   "kafka_server_brokertopicmetrics_bytesout_total",
                   "kafka_server_brokertopicmetrics_messagesin_total",
                   "kafka_network_request_duration_seconds_bucket",
                   "kafka_network_request_errors_total", "kafka_consumergroup_lag",
                   "kafka_sharegroup_lag",
                   "kafka_log_log_size", "runnel_storage_disk_free_bytes",
                   "kafka_server_socket_server_connections", "runnel_rocksdb_memtable_bytes",
                   "runnel_rocksdb_pending_compaction_bytes", "process_resident_memory_bytes"]:
        assert needed in exprs, "the dashboard does not use %s" % needed
    ds = (REPO / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "type: prometheus" in ds and "uid: prometheus" in ds
    prov = (REPO / "grafana/provisioning/dashboards/runnel.yml").read_text()
    assert "type: file" in prov and "path:" in prov


def test_prometheus_runs_every_dashboard_query(make_broker, tmp_path):
    prom_bin = shutil.which("prometheus")
    if prom_bin is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`; `make test` "
                    "installs it)")
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "promtool rejects config/prometheus.yml:\n%s%s" % (
            r.stdout, r.stderr)

    b = metrics_broker(make_broker, **{"log.cleaner.backoff.ms": "200"})
    admin = admin_client(b.bootstrap)
    lag_topic, live_topic, small_topic, compacted_topic = (
        unique_topic("lag"), unique_topic("live"), unique_topic("small"), unique_topic("compacted"))
    create_topic(admin, lag_topic, partitions=3)
    create_topic(admin, live_topic, partitions=2)
    create_topic(admin, small_topic, partitions=1, config={"max.message.bytes": "1024"})
    # A compacted topic with superseded values, so the log cleaner panel has data.
    create_topic(admin, compacted_topic, partitions=1, config={
        "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})

    # A group that stops mid-way: 300 messages, 120 consumed and committed.
    total, consumed_n = 300, 120
    p = producer(b.bootstrap)
    assert produce_all(p, lag_topic, [b"m%05d" % i + b"." * 60 for i in range(total)],
                       partition=lambda i: i % 3) == []
    assert produce_all(p, compacted_topic, [b"v%d" % i for i in range(200)],
                       key=lambda i: b"k%d" % (i % 5)) == []
    # One rejected produce, so produce failures and error codes have data.
    errors = produce_all(p, small_topic, [b"z" * 4000])
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE], errors

    stopped_group = "stopped-" + lag_topic
    c = consumer(b.bootstrap, **{"group.id": stopped_group})
    c.subscribe([lag_topic])
    msgs = consume_n(c, consumed_n, timeout=30)
    assert len(msgs) == consumed_n
    next_offset = {pt: 0 for pt in range(3)}
    for m in msgs:
        next_offset[m.partition()] = max(next_offset[m.partition()], m.offset() + 1)
    assert sum(next_offset.values()) == consumed_n
    c.commit(offsets=[TopicPartition(lag_topic, pt, o) for pt, o in next_offset.items()],
             asynchronous=False)
    c.close()
    expected_lag = total - consumed_n

    # A share group holding records it has not acknowledged, so the share
    # group panels (lag, records under lock) have data.
    share_group = "share-" + lag_topic
    res = ConfigResource(ResourceType.GROUP, share_group, incremental_configs=[ConfigEntry(
        "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    sc = ShareConsumer({"bootstrap.servers": b.bootstrap, "group.id": share_group,
                        "share.acknowledgement.mode": "explicit"})
    sc.subscribe([lag_topic])
    deadline = time.time() + 30
    held = []
    while not held and time.time() < deadline:
        held = [m for m in sc.poll(1.0) if m.error() is None]
    assert held, "the share consumer got nothing"

    load = BackgroundLoad(b.bootstrap, live_topic, "live-" + live_topic)
    load.start()
    prom = None
    try:
        assert load.first_message.wait(30), "background consumer got nothing"
        prom = Prometheus(prom_bin, prometheus_config_for(b.metrics_port), tmp_path)
        prom.start()
        # Three successful scrapes: two samples for every rate(), with margin.
        prom.wait_for_scrapes(3)

        d, targets = dashboard_targets()
        template_vars = {v["name"] for v in d["templating"]["list"]}
        failures = []
        results = {}
        for title, raw in targets:
            expr = substitute(raw, template_vars)
            r = prom.query(expr)
            if r.get("status") != "success":
                failures.append("%s: %s -> error %s" % (title, expr, r.get("error")))
            elif not r["data"]["result"]:
                failures.append("%s: %s -> no series" % (title, expr))
            results[raw] = r
        # Template variable queries: label_values(selector, label) must list values.
        for v in d["templating"]["list"]:
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r'\s*label_values\((.*),\s*([A-Za-z_]+)\)\s*', q)
            assert m, "variable %s: unexpected query %r" % (v["name"], q)
            sel = substitute(m.group(1), template_vars)
            r = prom.api("/api/v1/label/%s/values" % m.group(2), **{"match[]": sel})
            if r.get("status") != "success" or not r.get("data"):
                failures.append("variable %s: %s -> %s" % (v["name"], q, r))
        assert not failures, "dashboard queries without data (%d of %d):\n%s" % (
            len(failures), len(targets), "\n".join(failures))

        # The lag queries show exactly what the stopped group left unread.
        by_group = [e for _, e in targets if "kafka_consumergroup_lag" in e
                    and re.search(r'by \(consumergroup\)', e)]
        per_partition = [e for _, e in targets if "kafka_consumergroup_lag" in e
                         and re.search(r'by \(consumergroup, topic, partition\)', e)]
        assert by_group and per_partition, "no lag-by-group / lag-per-partition query"
        for e in by_group:
            got = {s["metric"].get("consumergroup"): float(s["value"][1])
                   for s in results[e]["data"]["result"]}
            assert got.get(stopped_group) == expected_lag, (e, got, expected_lag)
        hw = {pt: len([i for i in range(total) if i % 3 == pt]) for pt in range(3)}
        for e in per_partition:
            got = {int(s["metric"]["partition"]): float(s["value"][1])
                   for s in results[e]["data"]["result"]
                   if s["metric"].get("consumergroup") == stopped_group}
            assert got == {pt: hw[pt] - next_offset[pt] for pt in range(3)}, (e, got)

        # Counters agree through Prometheus too.
        r = prom.query('sum(kafka_server_brokertopicmetrics_messagesin_total{topic="%s"})'
                       % lag_topic)
        assert float(r["data"]["result"][0]["value"][1]) == total
        # The live load shows as a positive rate and a finite Produce p99.
        r = prom.query('sum(rate(kafka_server_brokertopicmetrics_messagesin_total{topic="%s"}[1m]))'
                       % live_topic)
        assert float(r["data"]["result"][0]["value"][1]) > 0
        r = prom.query('histogram_quantile(0.99, sum by (le) (rate('
                       'kafka_network_request_duration_seconds_bucket{api="Produce"}[1m])))')
        assert math.isfinite(float(r["data"]["result"][0]["value"][1])), r
    finally:
        sc.close()
        if prom is not None:
            prom.stop()
        load.stop()


def test_messages_in_and_bytes_in_are_exact(make_broker):
    b = metrics_broker(make_broker)
    admin = admin_client(b.bootstrap)
    topic = unique_topic("count")
    create_topic(admin, topic, partitions=2)
    n, size = 500, 200
    before = scrape(b)
    p = producer(b.bootstrap)
    payloads = [os.urandom(size) for _ in range(n)]
    assert produce_all(p, topic, payloads) == []
    after = scrape(b)

    mi = "kafka_server_brokertopicmetrics_messagesin_total"
    bi = "kafka_server_brokertopicmetrics_bytesin_total"
    assert value(after, mi, topic=topic) - value(before, mi, topic=topic) == n
    assert value(after, bi, topic=topic) - value(before, bi, topic=topic) >= n * size
    prod = "kafka_server_brokertopicmetrics_totalproducerequests_total"
    assert value(after, prod, topic=topic) > value(before, prod, topic=topic)
    assert value(after, "kafka_server_brokertopicmetrics_failedproducerequests_total",
                 topic=topic) == 0
    # Partition gauges: high watermarks add up to n, sizes to at least n x S.
    hws = {dict(l)["partition"]: v for l, v in
           series_of(after, "kafka_topic_partition_current_offset").items()
           if dict(l)["topic"] == topic}
    assert sorted(hws) == ["0", "1"] and sum(hws.values()) == n, hws
    sizes = [v for l, v in series_of(after, "kafka_log_log_size").items()
             if dict(l)["topic"] == topic]
    assert sum(sizes) >= n * size
    assert value(after, "kafka_topic_partitions", topic=topic) == 2

    # Bytes out: reading everything once sends at least n x S bytes.
    c = consumer(b.bootstrap)
    c.assign([TopicPartition(topic, pt, 0) for pt in range(2)])
    got = consume_n(c, n, timeout=30)
    c.close()
    assert len(got) == n
    end = scrape(b)
    bo = "kafka_server_brokertopicmetrics_bytesout_total"
    assert value(end, bo, topic=topic) - value(before, bo, topic=topic) >= n * size
    fetches = "kafka_server_brokertopicmetrics_totalfetchrequests_total"
    assert value(end, fetches, topic=topic) > value(before, fetches, topic=topic)
    assert value(end, mi, topic=topic) == value(after, mi, topic=topic)

    # A rejected produce: counted as failed, as error 10, and not as messages in.
    small = unique_topic("small")
    create_topic(admin, small, partitions=1, config={"max.message.bytes": "1024"})
    before = scrape(b)
    errors = produce_all(p, small, [b"z" * 4000])
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE], errors
    after = scrape(b)
    fp = "kafka_server_brokertopicmetrics_failedproducerequests_total"
    assert value(after, fp, topic=small) - value(before, fp, topic=small) >= 1
    assert value(after, mi, topic=small) == 0
    assert value(after, bi, topic=small) == 0
    err = "kafka_network_request_errors_total"
    assert (value(after, err, api="Produce", error="10")
            - value(before, err, api="Produce", error="10")) >= 1


def test_metrics_render_fast_with_1000_partitions_and_100_groups(make_broker):
    b = metrics_broker(make_broker)
    admin = admin_client(b.bootstrap)
    prefix = unique_topic("many")
    topics = ["%s-%03d" % (prefix, i) for i in range(100)]
    fs = admin.create_topics([NewTopic(t, num_partitions=10, replication_factor=1)
                              for t in topics], request_timeout=60)
    for f in fs.values():
        f.result(timeout=60)
    # Some data in a few partitions, so offsets and sizes are not all zero.
    p = producer(b.bootstrap)
    assert produce_all(p, topics[0], [b"v" * 100] * 200, partition=lambda i: i % 10) == []
    # 100 groups, each with committed offsets on the 10 partitions of one topic.
    groups = ["%s-g%03d" % (prefix, i) for i in range(100)]
    futures = []
    for g, t in zip(groups, topics):
        req = ConsumerGroupTopicPartitions(g, [TopicPartition(t, pt, 0) for pt in range(10)])
        futures.extend(admin.alter_consumer_group_offsets([req], request_timeout=30).values())
    for f in futures:
        f.result(timeout=30)

    samples = scrape(b)
    ours = [l for l in series_of(samples, "kafka_log_log_size") if dict(l)["topic"] in topics]
    assert len(ours) == 1000
    lag = [l for l in series_of(samples, "kafka_consumergroup_lag")
           if dict(l)["consumergroup"] in groups]
    assert len(lag) == 1000
    assert value(samples, "kafka_consumergroup_lag", consumergroup=groups[0], topic=topics[0],
                 partition="0") == 20

    # Time full responses (request sent -> last byte read) on one keep-alive
    # connection: 3 warm-up requests, then the median of 10.
    conn = http.client.HTTPConnection("127.0.0.1", b.metrics_port, timeout=10)
    times, first_byte, size = [], [], 0
    try:
        for i in range(13):
            t0 = time.perf_counter()
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            t1 = time.perf_counter()
            body = r.read()
            t2 = time.perf_counter()
            assert r.status == 200
            size = len(body)
            if i >= 3:
                first_byte.append(t1 - t0)
                times.append(t2 - t0)
    finally:
        conn.close()
    median = statistics.median(times)
    print("\n/metrics with 1000 partitions, 100 groups: %d bytes; median %.1f ms "
          "(time to first byte %.1f ms), min %.1f ms, max %.1f ms"
          % (size, median * 1e3, statistics.median(first_byte) * 1e3,
             min(times) * 1e3, max(times) * 1e3))
    assert median < 0.050, "rendering /metrics took %.1f ms (median of 10): %s" % (
        median * 1e3, ["%.1f" % (t * 1e3) for t in times])


def _read_until_closed(sock, timeout=5.0):
    """Bytes received until the peer closes (or the timeout passes)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _assert_not_kafka(data, closed, what):
    """Either a closed connection without reply, or an HTTP 4xx answer."""
    if data:
        assert data.startswith(b"HTTP/1."), "%s got a non-HTTP reply: %r" % (what, data[:64])
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500, "%s got HTTP %d" % (what, status)
    else:
        assert closed, "%s: connection neither answered nor closed" % what


def test_metrics_listener_bad_input(make_broker):
    b = metrics_broker(make_broker)
    port = b.metrics_port

    status, body = http_get(port, "/metrics")
    assert status == 200 and b"kafka_server_socket_server_connections" in body
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    r.read()
    assert r.getheader("Content-Type", "").startswith("text/plain"), r.getheaders()
    c.close()

    for path in ["/", "/metric", "/metrics/", "/metricsx", "/metrics/extra", "/healthz/x",
                 "/api/v1/query", "/../metrics", "/%2e%2e/etc/passwd", "/" + "a" * 5000]:
        status, _ = http_get(port, path)
        assert status == 404, (path, status)
    for method in ["POST", "PUT", "DELETE", "PATCH"]:
        status, _ = http_get(port, "/metrics", method=method)
        assert status in (404, 405), (method, status)

    # Kafka requests on the metrics port: no Kafka response.
    for name, frame in [("ApiVersions v0", build_request(18, 0, 7)),
                        ("ApiVersions v3", build_request(18, 3, 7, api_versions_v3_body(),
                                                         flexible=True)),
                        ("Metadata v1", build_request(3, 1, 7, b"\xff\xff\xff\xff"))]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(frame)
            data, closed = _read_until_closed(s)
            _assert_not_kafka(data, closed, name)

    # A valid HTTP request, then Kafka bytes on the same keep-alive connection.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        s.sendall(build_request(18, 0, 9))
        data, closed = _read_until_closed(s)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        rest = data.split(b"ok\n", 1)[1] if b"ok\n" in data else b""
        _assert_not_kafka(rest, closed, "Kafka bytes after an HTTP request")

    # Garbage and an oversized header: refused without taking the listener down.
    for name, junk in [("garbage", os.urandom(4096)),
                       ("huge header", b"GET /metrics HTTP/1.1\r\nX-A: " + b"a" * (1 << 20)
                        + b"\r\n\r\n")]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(junk)
            except (ConnectionResetError, BrokenPipeError):
                continue
            data, closed = _read_until_closed(s)
            _assert_not_kafka(data, closed, name)

    # Both listeners still serve.
    status, _ = http_get(port, "/metrics")
    assert status == 200
    md = admin_client(b.bootstrap).list_topics(timeout=10)
    assert md.brokers
    assert b.is_running()
