"""Cluster membership over etcd: registration, the controller election,
failover after kill -9 / SIGSTOP, controlled shutdown, refusals at start, an
etcd outage, standalone mode and bad store endpoints.

Every test runs its own loopback cluster (cluster_harness.Cluster) with its
own cluster.id, so the module's shared etcd holds one prefix per test. The
brokers run with broker.session.timeout.ms=3000 and heartbeats every 500 ms
unless a test says otherwise. Topic placement is tested in
test_cluster_topics.py.
"""

import signal
import socket
import time

import pytest
from confluent_kafka.admin import AdminClient

import kafka_wire as kw
from cluster_harness import Cluster, etcd_bin, new_cluster_id, wait_until
from ck_helpers import consumer, create_topic, producer
from cluster_helpers import etcd, private_etcd  # noqa: F401 - fixtures
from conftest import BrokerFactory
from runnel_harness import Broker, BrokerError, free_port, unique_topic

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


class ClusterFactory(BrokerFactory):
    """Makes clusters on an etcd and tears them all down after the test.

    A BrokerFactory, so conftest's failure hook attaches every broker's log."""

    def __init__(self, etcd):  # noqa: super().__init__ not wanted: brokers is derived
        self.etcd = etcd
        self.clusters = []

    @property
    def brokers(self):
        return [b for c in self.clusters for b in c.all_brokers()]

    def __call__(self, n, overrides=None, etcd=None, start=True, **kw):
        c = Cluster(n, overrides=overrides, etcd=etcd or self.etcd, **kw)
        self.clusters.append(c)
        if start:
            try:
                c.start()
            except AssertionError as e:
                raise AssertionError("%s\n%s" % (e, c.logs())) from None
        return c

    def teardown(self, expect_clean=False):
        for c in self.clusters:
            c.teardown()


@pytest.fixture
def make_cluster(etcd):
    factory = ClusterFactory(etcd)
    yield factory
    factory.teardown()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def expected_brokers(c, ids, racks=None):
    """{id: (host, port, rack)} as Metadata should list them."""
    return {i: ("127.0.0.1", c.broker(i).port, (racks or {}).get(i)) for i in ids}


def wait_members(c, ids, on=None, timeout=None, exclude_controller=None):
    """c.wait_for_members with the cluster's logs on failure."""
    try:
        return c.wait_for_members(ids, on=on, timeout=timeout or c.session_timeout + 3,
                                  exclude_controller=exclude_controller)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, c.logs())) from None


def log_count(b, text):
    try:
        return b.log_path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


def assert_refused_by_itself(b):
    """The broker exited on its own with a failure (not killed by the harness
    after hanging, not 0)."""
    rc = b.proc.returncode
    assert rc is not None and rc != 0 and rc != -signal.SIGKILL, \
        "refused broker: exit code %r" % rc


def topic_names(b):
    """The topics broker `b` itself has (raw all-topics Metadata v1)."""
    with kw.KafkaConn("127.0.0.1", b.port) as conn:
        md = kw.parse_metadata_v1(conn.request(kw.API_METADATA, 1, kw.metadata_v1_body(None)))
    return {t["name"] for t in md["topics"] or []}


def admin_of(b):
    return AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 10000})


# --------------------------------------------------------------------------
# Membership and the controller
# --------------------------------------------------------------------------


def test_three_brokers_listed_with_racks_and_one_controller(make_cluster):
    racks = {1: "rack-a", 2: "rack-b", 3: "rack-c"}
    c = make_cluster(3, per_broker={i: {"broker.rack": r} for i, r in racks.items()})
    want = expected_brokers(c, [1, 2, 3], racks)

    # Each broker, asked directly (raw Metadata v1 on its own connection).
    views = c.views([1, 2, 3])
    for i, v in views.items():
        assert v["brokers"] == want, "broker %d lists %r" % (i, v)
    controllers = {v["controller_id"] for v in views.values()}
    assert len(controllers) == 1, "brokers disagree on the controller: %r" % views
    (ctl,) = controllers
    assert ctl in (1, 2, 3)

    # etcd holds the same: three registrations, the controller, epoch >= 1.
    assert c.registered_ids() == [1, 2, 3]
    state = c.etcd_state()
    assert '"node_id":%d' % ctl in state["controller"][0].replace(" ", "")
    assert c.controller_epoch() >= 1
    assert state["cluster_id"][0] == c.cluster_id
    # The controller key lives and dies with its broker's lease.
    assert state["controller"][1] == state["brokers/%d" % ctl][1] != 0

    # confluent-kafka, bootstrapped on each broker in turn.
    for i in (1, 2, 3):
        a = admin_of(c.broker(i))
        md = a.list_topics(timeout=10)
        got = {bid: (bm.host, bm.port) for bid, bm in md.brokers.items()}
        assert got == {bid: (h, p) for bid, (h, p, _) in want.items()}, \
            "list_topics via broker %d: %r" % (i, got)
        assert md.controller_id == ctl
        assert md.cluster_id == c.cluster_id

        desc = a.describe_cluster(request_timeout=10).result(timeout=15)
        assert desc.cluster_id == c.cluster_id
        assert desc.controller is not None and desc.controller.id == ctl
        got = {n.id: (n.host, n.port, n.rack) for n in desc.nodes}
        assert got == want, "describe_cluster via broker %d: %r" % (i, got)

    # kafka-python's DescribeCluster view.
    from kafka.admin import KafkaAdminClient
    ka = KafkaAdminClient(bootstrap_servers=c.bootstrap([2]), request_timeout_ms=10000)
    try:
        d = ka.describe_cluster()
    finally:
        ka.close()
    assert d["controller_id"] == ctl
    assert d["cluster_id"] == c.cluster_id
    got = {x["broker_id"]: (x["host"], x["port"], x["rack"]) for x in d["brokers"]}
    assert got == want


def test_kill9_controller_fails_over_and_restart_rejoins(make_cluster):
    c = make_cluster(3)
    ctl = wait_members(c, [1, 2, 3])
    epoch0 = c.controller_epoch()
    survivors = [i for i in (1, 2, 3) if i != ctl]

    t0 = time.monotonic()
    c.broker(ctl).kill9()
    new_ctl = wait_members(c, survivors, on=survivors, timeout=c.session_timeout + 3,
                           exclude_controller=ctl)
    took = time.monotonic() - t0
    for i in survivors:
        assert c.metadata(i)["brokers"] == expected_brokers(c, survivors)
    assert c.registered_ids() == survivors
    assert c.controller_epoch() > epoch0, "a new controller must bump the fencing epoch"
    state = c.etcd_state()
    assert state["controller"][1] == state["brokers/%d" % new_ctl][1]

    # Its old lease expired (it is gone from etcd), so the same node id may
    # register again; the controller does not move back.
    c.broker(ctl).start()
    assert wait_members(c, [1, 2, 3], timeout=5) == new_ctl
    for i in (1, 2, 3):
        assert c.metadata(i)["brokers"] == expected_brokers(c, [1, 2, 3])
    print("failover after kill -9 took %.2fs (session timeout %.1fs)"
          % (took, c.session_timeout))


def test_sigterm_deregisters_at_once(make_cluster):
    # A long session timeout: leaving must not wait for the lease to expire.
    c = make_cluster(3, overrides={"broker.session.timeout.ms": "10000",
                                   "broker.heartbeat.interval.ms": "1000"})
    ctl = wait_members(c, [1, 2, 3])
    epoch0 = c.controller_epoch()
    victim = min(i for i in (1, 2, 3) if i != ctl)
    rest = [i for i in (1, 2, 3) if i != victim]

    t0 = time.monotonic()
    assert c.broker(victim).stop() == 0
    assert wait_members(c, rest, on=rest, timeout=2.0) == ctl
    left = time.monotonic() - t0
    assert c.registered_ids() == rest
    assert c.controller_epoch() == epoch0, "losing a non-controller must not re-elect"

    # The controller itself: the last broker takes over at once too.
    last = [i for i in rest if i != ctl]
    t0 = time.monotonic()
    assert c.broker(ctl).stop() == 0
    assert wait_members(c, last, on=last, timeout=2.0, exclude_controller=ctl) == last[0]
    took_over = time.monotonic() - t0
    assert c.controller_epoch() == epoch0 + 1
    print("controlled shutdown: left after %.2fs, controller replaced after %.2fs"
          % (left, took_over))


def test_sigstop_beyond_session_timeout_then_rejoins(make_cluster):
    c = make_cluster(3)
    ctl = wait_members(c, [1, 2, 3])
    epoch0 = c.controller_epoch()
    others = [i for i in (1, 2, 3) if i != ctl]

    # Freeze the controller: no heartbeats; its lease and role expire.
    t0 = time.monotonic()
    c.pause(ctl)
    new_ctl = wait_members(c, others, on=others, timeout=c.session_timeout + 3,
                           exclude_controller=ctl)
    paused_for = time.monotonic() - t0
    assert c.registered_ids() == others
    assert c.controller_epoch() > epoch0

    # Thawed, it finds its lease gone, registers again and accepts the new
    # controller (it must not keep claiming the role).
    t1 = time.monotonic()
    c.resume(ctl)
    assert wait_members(c, [1, 2, 3], timeout=6) == new_ctl
    back_after = time.monotonic() - t1
    assert c.metadata(ctl)["brokers"] == expected_brokers(c, [1, 2, 3])
    assert log_count(c.broker(ctl), "re-registered in the metadata store") >= 1

    # The new registration is heartbeated: it outlives a session timeout.
    time.sleep(c.session_timeout + 1)
    assert c.registered_ids() == [1, 2, 3]
    assert wait_members(c, [1, 2, 3], timeout=2) == new_ctl
    state = c.etcd_state()
    assert state["controller"][1] == state["brokers/%d" % new_ctl][1]
    print("paused %.2fs until dropped; re-joined %.2fs after SIGCONT" % (paused_for, back_after))


# --------------------------------------------------------------------------
# Refusals at start
# --------------------------------------------------------------------------


def test_duplicate_node_id_refused(make_cluster):
    c = make_cluster(2)
    ctl = wait_members(c, [1, 2])
    before = c.etcd_state()["brokers/2"]

    dup = c.new_broker(2)
    with pytest.raises(BrokerError) as ei:
        dup.start()
    assert "node.id 2 is registered by another live broker" in str(ei.value)
    assert_refused_by_itself(dup)

    # The live broker 2 keeps its registration, and nobody saw a change.
    assert c.etcd_state()["brokers/2"] == before
    assert wait_members(c, [1, 2], timeout=2) == ctl
    for i in (1, 2):
        assert c.metadata(i)["brokers"] == expected_brokers(c, [1, 2])


def test_cluster_id_mismatch_refused(make_cluster):
    c = make_cluster(1)
    # Same prefix (so the same metadata), another cluster.id.
    stranger = c.new_broker(2, {"cluster.id": new_cluster_id(),
                                "metadata.store.prefix": c.prefix})
    with pytest.raises(BrokerError) as ei:
        stranger.start()
    assert "cluster id mismatch" in str(ei.value)
    assert_refused_by_itself(stranger)
    assert c.etcd_state()["cluster_id"][0] == c.cluster_id
    assert c.registered_ids() == [1]
    assert wait_members(c, [1], timeout=2) == 1


def test_data_dir_of_another_cluster_refused(make_cluster):
    """A data directory made for cluster A, started with cluster.id B (the
    id every broker of cluster B has), must refuse to start: README says "a
    data directory of another cluster.id refuses to start"."""
    c = make_cluster(1)
    old = make_cluster(1)                     # cluster A, on the same etcd
    b = old.broker(1)
    assert b.stop() == 0
    b.overrides["cluster.id"] = c.cluster_id  # now configured for cluster B
    b.overrides["node.id"] = "2"
    try:
        b.start()
    except BrokerError as e:
        assert "cluster" in str(e).lower()
        return
    view = c.metadata(1)
    pytest.fail("a broker whose data directory belongs to cluster %s started with "
                "cluster.id=%s: it registered under %r (cluster %s's prefix %s holds %r; "
                "cluster %s lists %r)"
                % (old.cluster_id, c.cluster_id, old.registered_ids(), c.cluster_id, c.prefix,
                   c.registered_ids(), c.cluster_id, sorted(view["brokers"])),
                pytrace=False)


def test_refused_start_exits_with_failure_code_not_a_crash(make_cluster):
    """A broker refused at start (after its storage is open) exits with code
    1, like any other startup error, every time: no abort on the way out."""
    c = make_cluster(1)
    outcomes = []
    # The abort is intermittent (about one start in five here): try often.
    for k in range(15):
        for b in (c.new_broker(1),
                  c.new_broker(2, {"cluster.id": new_cluster_id(),
                                   "metadata.store.prefix": c.prefix})):
            with pytest.raises(BrokerError):
                b.start()
            log = b.log_path.read_text(errors="replace")
            outcomes.append((b.overrides["node.id"], b.proc.returncode,
                             [line for line in log.splitlines()[-3:]
                              if "ERROR" in line or "pthread" in line or "panick" in line]))
    bad = [o for o in outcomes if o[1] != 1]
    assert not bad, "%d of %d refused starts did not exit with code 1 " \
        "(node.id, exit code, last lines):\n%s" % (
            len(bad), len(outcomes), "\n".join(repr(o) for o in bad))
    assert wait_members(c, [1], timeout=2) == 1


# --------------------------------------------------------------------------
# The metadata store going away
# --------------------------------------------------------------------------


def test_etcd_outage_keeps_serving_and_reregisters(make_cluster, private_etcd):
    c = make_cluster(3, etcd=private_etcd)
    ctl = wait_members(c, [1, 2, 3])
    # The topic is shared: its one partition is led by one of the brokers;
    # the clients are bootstrapped on that leader alone.
    topic = unique_topic("outage")
    create_topic(admin_of(c.broker(ctl)), topic, wait_visible=False)
    leader = []

    def visible():
        t = admin_of(c.broker(ctl)).list_topics(timeout=5).topics.get(topic)
        if t is not None and t.error is None and t.partitions[0].leader > 0:
            leader[:] = [t.partitions[0].leader]
            return True
        return False
    wait_until(visible, 15, what="topic %s with a leader" % topic)
    home = c.broker(leader[0])
    admin = admin_of(home)

    def produce(p, start, n):
        failures = []
        for k in range(start, start + n):
            p.produce(topic, value=b"m%d" % k,
                      on_delivery=lambda err, msg: err and failures.append(err))
        left = p.flush(15)
        assert left == 0 and not failures, "undelivered: %d, errors %r" % (left, failures)

    def consume_all(expected):
        cons = consumer(home.bootstrap, **{"group.id": unique_topic("g")})
        from confluent_kafka import TopicPartition
        cons.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 15
        try:
            while len(got) < expected and time.monotonic() < deadline:
                m = cons.poll(0.5)
                if m is not None and m.error() is None:
                    got.append(m.value())
        finally:
            cons.close()
        return got

    p = producer(home.bootstrap)
    produce(p, 0, 10)

    t_down = time.monotonic()
    private_etcd.stop()
    # The brokers notice (their session fails) and go on serving.
    wait_until(lambda: all(log_count(b, "metadata store session lost") > 0
                           for b in c.brokers.values()),
               5, what="every broker to notice the etcd outage")
    t0 = time.monotonic()
    produce(p, 10, 10)
    assert consume_all(20) == [b"m%d" % k for k in range(20)]
    md = admin.list_topics(timeout=5)
    assert topic in md.topics and md.topics[topic].partitions[0].leader == leader[0]
    assert time.monotonic() - t0 < 10, "serving during the outage was slow"
    for i in (1, 2, 3):  # everyone still answers Metadata, listing itself
        assert i in c.metadata(i, timeout=3)["brokers"]
    time.sleep(max(0.0, 5.0 - (time.monotonic() - t_down)))

    reregs = {i: log_count(b, "re-registered in the metadata store")
              for i, b in c.brokers.items()}
    private_etcd.start()  # same data dir: the old keys and leases come back
    t_up = time.monotonic()
    wait_until(lambda: all(log_count(b, "re-registered in the metadata store") > reregs[i]
                           for i, b in c.brokers.items()),
               10, what="every broker to re-register after etcd came back")
    assert c.registered_ids() == [1, 2, 3]
    wait_members(c, [1, 2, 3], timeout=max(1.0, t_up + 10 - time.monotonic()))

    # Past the old leases' lifetime the registrations (and a controller)
    # are still there: they are bound to live, heartbeated leases.
    time.sleep(max(0.0, t_up + c.session_timeout + 2 - time.monotonic()))
    new_ctl = wait_members(c, [1, 2, 3], timeout=5)
    assert c.registered_ids() == [1, 2, 3]
    state = c.etcd_state()
    assert state["controller"][1] == state["brokers/%d" % new_ctl][1]
    if new_ctl != ctl:
        print("note: the controller moved from %d to %d across the etcd outage" % (ctl, new_ctl))

    # Clients still work, and the watches are live again: a broker killed now
    # is dropped by the others.
    produce(p, 20, 5)
    assert consume_all(25)[-5:] == [b"m%d" % k for k in range(20, 25)]
    victim = min(i for i in (1, 2, 3) if i != ctl)
    c.broker(victim).kill9()
    rest = [i for i in (1, 2, 3) if i != victim]
    wait_members(c, rest, on=rest, timeout=c.session_timeout + 3)
    # The topic is shared: every live broker lists it.
    for i in rest:
        assert topic in topic_names(c.broker(i))


# --------------------------------------------------------------------------
# Standalone and bad configuration
# --------------------------------------------------------------------------


def test_standalone_lists_only_itself(make_broker):
    b = make_broker()
    with kw.KafkaConn("127.0.0.1", b.port) as conn:
        md = kw.parse_metadata_v1(conn.request(kw.API_METADATA, 1, kw.metadata_v1_body([])))
    assert [(x["node_id"], x["host"], x["port"]) for x in md["brokers"]] == \
        [(0, "127.0.0.1", b.port)]
    assert md["controller_id"] == 0
    admin = admin_of(b)
    desc = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert [n.id for n in desc.nodes] == [0]
    assert desc.controller.id == 0
    assert "metadata store" not in b.log_path.read_text()


def _refused(make_broker, overrides):
    with pytest.raises(BrokerError) as ei:
        make_broker(overrides)
    b = make_broker.brokers[-1]
    assert_refused_by_itself(b)
    return str(ei.value), b.log_path.read_text(errors="replace")


def test_endpoint_without_scheme_refused(make_broker):
    err, log = _refused(make_broker, {"node.id": "1", "cluster.id": new_cluster_id(),
                                      "metadata.store.endpoints": "127.0.0.1:1"})
    assert make_broker.brokers[-1].proc.returncode == 2   # a configuration error
    assert "metadata.store.endpoints" in log and "127.0.0.1:1" in log and "http://" in log, err


def test_cluster_mode_needs_cluster_id(make_broker):
    err, log = _refused(make_broker, {"node.id": "1",
                                      "metadata.store.endpoints": "http://127.0.0.1:1"})
    assert "cluster.id" in log, err


def test_unreachable_endpoint_refused_with_clear_error(make_broker):
    endpoint = "http://127.0.0.1:%d" % free_port()   # nothing listens there
    t0 = time.monotonic()
    err, log = _refused(make_broker, {"node.id": "1", "cluster.id": new_cluster_id(),
                                      "metadata.store.endpoints": endpoint})
    assert time.monotonic() - t0 < Broker.START_TIMEOUT
    assert not any(b.is_running() for b in make_broker.brokers)
    error_lines = [line for line in log.splitlines() if "ERROR" in line or "error" in line]
    # The error must say what could not be reached: the metadata store at
    # this endpoint (not only a bare transport error).
    assert any(endpoint in line or endpoint.replace("http://", "") in line
               for line in error_lines), \
        "the startup error does not name the unreachable endpoint %s:\n%s" % (
            endpoint, "\n".join(error_lines))


def test_silent_endpoint_refused_after_timeout(make_broker):
    """An endpoint that accepts TCP connections but never answers (a socket
    nobody serves): the broker gives up after its ~5 s request timeout and
    refuses to start instead of hanging."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = "http://127.0.0.1:%d" % silent.getsockname()[1]
        t0 = time.monotonic()
        err, log = _refused(make_broker, {"node.id": "1", "cluster.id": new_cluster_id(),
                                          "metadata.store.endpoints": endpoint})
        took = time.monotonic() - t0
    assert took < 15, "refusing took %.1fs" % took
    assert "error" in log.lower(), err
