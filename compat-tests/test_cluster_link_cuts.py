"""Cut links between brokers (cluster mode, skipped without etcd).

The cluster is proxied (cluster_harness.Cluster(proxied=True)): each broker
has a PLAINTEXT listener for clients and an INTERNAL one that is
`inter.broker.listener.name`, advertised as the address of a LinkProxy the
harness controls. Followers fetch from a leader at the address it advertises
for INTERNAL, so `cut(leader)` cuts that leader off from every broker fetching
from it, and nothing else: its own fetches from other leaders, etcd and every
client connection go on.

- drop (connections reset, new ones too), min.insync.replicas=1: the
  followers stop replicating (their logs stop growing), the leader shrinks the
  ISR to itself after about replica.lag.time.max.ms (3 s) as every broker's
  Metadata shows, and idempotent acks=all producers go on after a stall of at
  most about that long; healed, the followers catch up (same log sizes) and
  rejoin the ISR; every acknowledged message is read from the leader exactly
  once, at its offset, in per-producer order.
- drop with min.insync.replicas=2: an acks=all produce in flight when the link
  is cut is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND (20) when the ISR
  shrinks (it was appended, as in Kafka); afterwards acks=all is refused with
  NOT_ENOUGH_REPLICAS (19) before appending while acks=1 works; healed, the
  ISR fills and acks=all works again; the log holds exactly what was
  appended.
- blackhole (connections accepted, nothing forwarded): the same shrink and
  bounded acks=all stall; the followers' fetches time out (no connection is
  refused or reset); healed, the held connections go on and the ISR recovers.
  Healed before the fetch timeout (10.5 s), the hung fetches are answered
  late and nothing fails: the ISR fills over the same connections.
- clients are unaffected: with broker 1's link cut, Metadata through every
  broker names only PLAINTEXT endpoints, acks=all produce and fetch of the
  partitions led by brokers 2 and 3 go on without a stall (also bootstrapped
  through broker 1 alone), their ISRs stay full (broker 1 still fetches from
  them), and only partition 0 (led by 1) loses its followers.

Measured times are printed (pytest -s shows them).
"""

import time

import pytest
from confluent_kafka import Producer

from cluster_harness import etcd_bin, wait_until
from cluster_helpers import (Load, assert_exactly_once, create, full_isr, parts, partition_sizes,
                             raw_produce, read_partitions, wait_parts)
from cluster_helpers import cluster, etcd  # noqa: F401 - fixtures
from runnel_harness import unique_topic

if not etcd_bin():
    pytest.skip("etcd is not installed (Debian: etcd-server); cluster tests skipped",
                allow_module_level=True)

pytestmark = [pytest.mark.timeout(240)]

LAG = 3.0                 # replica.lag.time.max.ms, seconds
SLACK = 2.0               # seconds on top of what the protocol needs, for a loaded 2-core box
# The leader checks for laggards every LAG/2: a follower that last caught up
# at the cut leaves the ISR between LAG and 1.5 * LAG later (+ the etcd write).
SHRINK_BOUND = 1.5 * LAG + SLACK
# A follower's fetch times out replica.fetch.wait.max.ms (500) + 10 s after it was sent.
FETCH_TIMEOUT = 10.5
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def proxied_cluster(cluster):
    return cluster(3, overrides={"replica.lag.time.max.ms": str(int(LAG * 1000))},
                   proxied=True)


def one_partition(c, prefix, config=None):
    """A topic of one partition with 3 replicas; (topic, leader, followers)."""
    topic = unique_topic(prefix)
    ps = create(c, topic, 1, 3, config=config)
    leader = ps[0]["leader"]
    return topic, leader, sorted(i for i in ps[0]["replicas"] if i != leader), ps[0]


def wait_fetching_through_proxy(c, leader, followers):
    """The followers' fetch connections go through the leader's proxy and
    carry data (so cutting it really cuts replication)."""
    proxy = c.proxy(leader)
    wait_until(lambda: proxy.stats()["active"] >= len(followers)
               and proxy.stats()["bytes_down"] > 0, 10,
               what="broker %d's followers %r fetching through its proxy (%r)"
               % (leader, followers, proxy.stats()))
    return proxy.stats()


def sizes(c, topic, partition=0):
    """{node: bytes of its replica of topic-partition} (DescribeLogDirs, per broker)."""
    return {i: partition_sizes(c.broker(i), topic, [partition]).get(partition)
            for i in c.node_ids()}


def fetch_failures(b):
    """The broker's log lines about failed replica fetches / connections."""
    try:
        text = b.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines()
            if "replica fetch failed" in line or "cannot reach the leader" in line]


def max_latency(load, partitions, t):
    """The longest produce-to-ack time of messages produced to `partitions` after `t`."""
    with load.lock:
        lat = [a - tp for p in partitions for _o, _v, tp, a in load.acked.get(p, []) if tp > t]
    return max(lat) if lat else None


def shrink_to_leader(c, topic, leader, followers, t_cut, what):
    """Waits until the leader's Metadata has the ISR down to the leader
    alone, then until the followers' Metadata says so too; seconds from the
    cut to the leader's view."""
    shrunk = wait_parts(c, topic, leader, lambda ps: ps[0]["isr"] == [leader],
                        SHRINK_BOUND + 5, "the ISR of %s down to the leader %d (%s)"
                        % (topic, leader, what))
    took = time.monotonic() - t_cut
    assert shrunk[0]["leader"] == leader, shrunk
    for f in followers:
        wait_parts(c, topic, f, lambda ps: ps[0]["isr"] == [leader], 5,
                   "broker %d's Metadata showing the shrunk ISR" % f)
    return shrunk[0], took


def assert_followers_frozen(c, topic, leader, followers, load, seconds=2.0):
    """Over `seconds` of acks=all traffic the leader's log grows and the
    followers' do not."""
    n0, s0 = load.count(0), sizes(c, topic)
    time.sleep(seconds)
    n1, s1 = load.count(0), sizes(c, topic)
    assert n1 > n0, "no acks=all acknowledgements in %.1fs after the shrink" % seconds
    assert s1[leader] > s0[leader], (s0, s1)
    for f in followers:
        assert s1[f] == s0[f], "follower %d's log grew while its leader's link was cut: " \
            "%r -> %r" % (f, s0, s1)
    return s1


def wait_same_sizes(c, topic, timeout=10):
    return wait_until(lambda: (lambda s: s if len(set(s.values())) == 1 and None not in
                               s.values() else None)(sizes(c, topic)),
                      timeout, interval=0.2, what="every replica of %s with the same log "
                      "size (last %r)" % (topic, sizes(c, topic)))


# --------------------------------------------------------------------------
# a. drop, min.insync.replicas=1
# --------------------------------------------------------------------------


def test_drop_leader_link_shrinks_isr_acks_all_goes_on_then_rejoins(cluster):
    c = proxied_cluster(cluster)
    topic, leader, followers, p0 = one_partition(c, "cut-drop",
                                                 config={"min.insync.replicas": "1"})
    load = Load(c.bootstrap(), topic, [0], producers=2, rate=150).start()
    wait_until(lambda: load.count(0) > 200, 15, what="steady load")
    assert load.max_latency_after(time.monotonic() - 1) < 1.0
    wait_fetching_through_proxy(c, leader, followers)
    failed_before = {f: len(fetch_failures(c.broker(f))) for f in followers}

    t_cut = time.monotonic()
    c.cut(leader, "drop")
    cut_stats = c.proxy(leader).stats()
    assert cut_stats["aborted"] >= len(followers), cut_stats

    shrunk, took = shrink_to_leader(c, topic, leader, followers, t_cut, "drop")
    t_shrunk = time.monotonic()
    assert shrunk["epoch"] == p0["epoch"], "the leader changed: %r -> %r" % (p0, shrunk)
    assert took <= SHRINK_BOUND, "ISR shrank %.2fs after the cut (bound %.1fs)" % (
        took, SHRINK_BOUND)
    assert took >= LAG * 0.5, "ISR shrank %.2fs after the cut: before replica.lag.time." \
        "max.ms (%.1fs)?" % (took, LAG)
    wait_until(lambda: load.first_ack_after(0, t_shrunk + 0.5), 5, interval=0.05,
               what="acks=all acknowledgements after the ISR shrank")
    frozen = assert_followers_frozen(c, topic, leader, followers, load)

    stall = load.max_latency_after(t_cut)
    assert stall <= SHRINK_BOUND + 1, "acks=all stalled %.2fs (replica.lag.time.max.ms " \
        "%.1fs)" % (stall, LAG)
    assert stall >= LAG * 0.5, "acks=all did not wait for the cut followers (%.2fs): " \
        "acknowledged before every ISR member had the batch?" % stall
    settled = max_latency(load, [0], t_shrunk + 0.5)
    assert settled < 1.5, "acks=all latency after the shrink %.2fs" % settled
    # The followers kept trying (refused by the proxy) and said so.
    during = c.proxy(leader).stats()
    assert during["aborted_on_accept"] > 0, during
    assert during["bytes_up"] == cut_stats["bytes_up"], (cut_stats, during)
    for f in followers:
        assert len(fetch_failures(c.broker(f))) > failed_before[f], \
            "broker %d logged no failed fetch from %d" % (f, leader)

    t_heal = time.monotonic()
    c.heal(leader)
    wait_parts(c, topic, leader, full_isr(3), 15, "the followers back in the ISR")
    rejoined = time.monotonic() - t_heal
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    summary = assert_exactly_once(load, read_partitions(c.bootstrap([leader]), topic, [0]))
    same = wait_same_sizes(c, topic)
    print("drop of broker %d's link (followers %r): ISR [%d] after %.2fs; longest acks=all "
          "wait %.2fs, then %.2fs; follower sizes frozen at %r; full ISR %.2fs after heal; "
          "sizes %r; proxy %r; %r"
          % (leader, followers, leader, took, stall, settled, frozen, rejoined, same,
             c.proxy(leader).stats(), summary))


# --------------------------------------------------------------------------
# b. drop, min.insync.replicas=2
# --------------------------------------------------------------------------


def test_drop_leader_link_min_isr_2_refuses_acks_all_until_healed(cluster):
    c = proxied_cluster(cluster)
    topic, leader, followers, _p0 = one_partition(c, "cut-minisr",
                                                  config={"min.insync.replicas": "2"})
    lb = c.broker(leader)
    for k in range(3):
        r = raw_produce(lb, topic, b"ok-%d" % k, acks=-1)
        assert r["error_code"] == 0 and r["base_offset"] == k, r
    wait_fetching_through_proxy(c, leader, followers)

    t_cut = time.monotonic()
    c.cut(leader, "drop")
    # In flight across the cut: appended, then waiting for followers that
    # cannot fetch; answered when the ISR shrinks below min.insync.replicas.
    r = raw_produce(lb, topic, b"in-flight", acks=-1, timeout_ms=30000)
    waited = time.monotonic() - t_cut
    assert r["error_code"] == NOT_ENOUGH_REPLICAS_AFTER_APPEND, \
        "acks=all produce in flight when the ISR shrank below min.insync.replicas: %r " \
        "after %.2fs\n%s" % (r, waited, c.logs(15))
    assert LAG * 0.5 <= waited <= SHRINK_BOUND + 1, waited
    shrink_to_leader(c, topic, leader, followers, t_cut, "min.insync.replicas=2")

    # acks=all: NOT_ENOUGH_REPLICAS (19) before appending, every time.
    for k in range(2):
        r = raw_produce(lb, topic, b"refused-%d" % k, acks=-1)
        assert r["error_code"] == NOT_ENOUGH_REPLICAS, r
    # acks=1 appends, right after the in-flight message (nothing refused was appended).
    r = raw_produce(lb, topic, b"acks1", acks=1)
    assert r["error_code"] == 0 and r["base_offset"] == 4, r
    # Still refused a while later (the followers stay cut off).
    time.sleep(LAG)
    r = raw_produce(lb, topic, b"refused-late", acks=-1)
    assert r["error_code"] == NOT_ENOUGH_REPLICAS, r
    assert parts(c, topic, leader)[0]["isr"] == [leader]

    t_heal = time.monotonic()
    c.heal(leader)
    wait_parts(c, topic, leader, full_isr(3), 15, "the followers back in the ISR")
    rejoined = time.monotonic() - t_heal
    r = raw_produce(lb, topic, b"ok-again", acks=-1)
    assert r["error_code"] == 0 and r["base_offset"] == 5, r

    got = read_partitions(c.bootstrap([leader]), topic, [0])[0]
    assert got == list(enumerate([b"ok-0", b"ok-1", b"ok-2", b"in-flight", b"acks1",
                                  b"ok-again"])), got
    same = wait_same_sizes(c, topic)
    print("min.insync.replicas=2, broker %d's link dropped: in-flight acks=all answered %d "
          "after %.2fs; full ISR %.2fs after heal; sizes %r"
          % (leader, NOT_ENOUGH_REPLICAS_AFTER_APPEND, waited, rejoined, same))


# --------------------------------------------------------------------------
# c. blackhole
# --------------------------------------------------------------------------


def test_blackhole_leader_link_fetches_time_out_isr_shrinks_and_recovers(cluster):
    c = proxied_cluster(cluster)
    topic, leader, followers, p0 = one_partition(c, "cut-hole",
                                                 config={"min.insync.replicas": "1"})
    load = Load(c.bootstrap(), topic, [0], producers=2, rate=150).start()
    wait_until(lambda: load.count(0) > 200, 15, what="steady load")
    wait_fetching_through_proxy(c, leader, followers)
    failed_before = {f: len(fetch_failures(c.broker(f))) for f in followers}

    t_cut = time.monotonic()
    c.cut(leader, "blackhole")
    cut_stats = c.proxy(leader).stats()

    shrunk, took = shrink_to_leader(c, topic, leader, followers, t_cut, "blackhole")
    t_shrunk = time.monotonic()
    assert shrunk["epoch"] == p0["epoch"], (p0, shrunk)
    assert LAG * 0.5 <= took <= SHRINK_BOUND, "ISR shrank %.2fs after the cut" % took
    wait_until(lambda: load.first_ack_after(0, t_shrunk + 0.5), 5, interval=0.05,
               what="acks=all acknowledgements after the ISR shrank")
    frozen = assert_followers_frozen(c, topic, leader, followers, load)
    stall = load.max_latency_after(t_cut)
    assert LAG * 0.5 <= stall <= SHRINK_BOUND + 1, "acks=all stalled %.2fs" % stall

    # The followers' fetches hang until they time out; nothing is refused or reset.
    def timed_out():
        new = {f: fetch_failures(c.broker(f))[failed_before[f]:] for f in followers}
        return new if all(new.values()) else None
    new = wait_until(timed_out, FETCH_TIMEOUT + SLACK + 2, interval=0.2,
                     what="the followers' fetches from broker %d timing out" % leader)
    timed_out_after = time.monotonic() - t_cut
    for f, lines in new.items():
        assert all("timed out" in line for line in lines), \
            "broker %d: fetch failures other than timeouts in blackhole mode: %r" % (f, lines)
    # The followers reconnected and hang again, held by the proxy.
    hole = wait_until(lambda: (lambda st: st if st["held"] >= len(followers) else None)(
        c.proxy(leader).stats()), 3, what="the followers' new connections held")
    assert hole["aborted"] == hole["aborted_on_accept"] == 0, hole
    assert hole["bytes_up"] == cut_stats["bytes_up"], (cut_stats, hole)
    assert hole["bytes_down"] == cut_stats["bytes_down"], (cut_stats, hole)
    assert timed_out_after >= FETCH_TIMEOUT - 1.5, \
        "fetches failed %.2fs after the cut: not a timeout" % timed_out_after

    t_heal = time.monotonic()
    c.heal(leader)
    wait_parts(c, topic, leader, full_isr(3), FETCH_TIMEOUT + SLACK + 5,
               "the followers back in the ISR")
    rejoined = time.monotonic() - t_heal
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    summary = assert_exactly_once(load, read_partitions(c.bootstrap([leader]), topic, [0]))
    same = wait_same_sizes(c, topic)
    print("blackhole of broker %d's link: ISR [%d] after %.2fs; longest acks=all wait %.2fs; "
          "follower sizes frozen at %r; fetches timed out by %.2fs (%r); full ISR %.2fs after "
          "heal; sizes %r; proxy %r; %r"
          % (leader, leader, took, stall, frozen, timed_out_after,
             {f: v[0][-120:] for f, v in new.items()}, rejoined, same,
             c.proxy(leader).stats(), summary))


def test_blackhole_healed_before_fetch_timeout_hung_fetches_complete(cluster):
    """Healed before the followers give up: the held fetches are delivered
    late and answered; replication goes on over the same connections."""
    c = proxied_cluster(cluster)
    topic, leader, followers, _p0 = one_partition(c, "cut-short",
                                                  config={"min.insync.replicas": "1"})
    load = Load(c.bootstrap(), topic, [0], producers=2, rate=150).start()
    wait_until(lambda: load.count(0) > 200, 15, what="steady load")
    wait_fetching_through_proxy(c, leader, followers)
    failed_before = {f: len(fetch_failures(c.broker(f))) for f in followers}

    t_cut = time.monotonic()
    c.cut(leader, "blackhole")
    _shrunk, took = shrink_to_leader(c, topic, leader, followers, t_cut, "short blackhole")
    frozen = sizes(c, topic)
    held = c.proxy(leader).stats()
    assert held["held"] >= len(followers), held
    before_heal = time.monotonic() - t_cut
    assert before_heal < FETCH_TIMEOUT - 2, "too late to heal before the fetch timeout"

    t_heal = time.monotonic()
    c.heal(leader)
    wait_parts(c, topic, leader, full_isr(3), 5, "the followers back in the ISR")
    rejoined = time.monotonic() - t_heal
    healed = c.proxy(leader).stats()
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    # Nothing failed on the followers' side; the same connections went on.
    for f in followers:
        assert fetch_failures(c.broker(f))[failed_before[f]:] == [], \
            "broker %d: %r" % (f, fetch_failures(c.broker(f))[failed_before[f]:])
    after = c.proxy(leader).stats()
    assert after["accepted"] == held["accepted"], (held, after)
    assert after["bytes_down"] > healed["bytes_down"] >= held["bytes_down"], (held, healed, after)
    summary = assert_exactly_once(load, read_partitions(c.bootstrap([leader]), topic, [0]))
    same = wait_same_sizes(c, topic)
    print("blackhole of broker %d's link for %.2fs: ISR [%d] after %.2fs; sizes then %r; "
          "full ISR %.2fs after heal, no fetch failed; sizes %r; proxy %r; %r"
          % (leader, before_heal, leader, took, frozen, rejoined, same, after, summary))


# --------------------------------------------------------------------------
# d. clients are unaffected
# --------------------------------------------------------------------------


def test_cut_link_leaves_clients_and_other_leaders_alone(cluster):
    c = proxied_cluster(cluster)
    topic = unique_topic("cut-clients")
    layout = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    ps = create(c, topic, 3, 3, assignment=layout, config={"min.insync.replicas": "1"})
    assert [ps[p]["leader"] for p in range(3)] == [1, 2, 3], ps

    # Clients only ever see the PLAINTEXT endpoints, whichever broker they ask.
    plaintext = {i: c.broker(i).port for i in c.node_ids()}
    proxies = {c.proxy(i).port for i in c.node_ids()}
    internal = {c.broker(i).internal_port for i in c.node_ids()}
    for i in c.node_ids():
        seen = {bid: port for bid, (_h, port, _r) in c.metadata(i)["brokers"].items()}
        assert seen == plaintext, (i, seen, plaintext)
        assert not set(seen.values()) & (proxies | internal), seen

    load = Load(c.bootstrap(), topic, [0, 1, 2], producers=2, rate=150).start()
    wait_until(lambda: all(load.count(p) > 100 for p in range(3)), 15, what="steady load")
    wait_fetching_through_proxy(c, 1, [2, 3])

    t_cut = time.monotonic()
    c.cut(1, "drop")
    shrink_to_leader_p0 = wait_parts(
        c, topic, 2, lambda ps: ps[0]["isr"] == [1], SHRINK_BOUND + 5,
        "the ISR of partition 0 (led by the cut broker 1) down to [1]")
    took = time.monotonic() - t_cut
    t_shrunk = time.monotonic()
    assert [sorted(shrink_to_leader_p0[p]["isr"]) for p in (1, 2)] == [[1, 2, 3]] * 2, \
        shrink_to_leader_p0

    # During the cut: a producer and a consumer bootstrapped through broker 1
    # alone use partitions 1 and 2 (led by 2 and 3) as usual.
    p = Producer({"bootstrap.servers": c.bootstrap([1]), "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 10000})
    errors, acked = [], {}

    def cb(e, m):
        if e is not None:
            errors.append(e)
        else:
            acked[m.value()] = (m.partition(), m.offset())
    t_direct = time.monotonic()
    for k in range(200):
        p.produce(topic, b"direct-%d" % k, partition=1 + k % 2, on_delivery=cb)
    assert p.flush(10) == 0 and not errors, errors
    direct = time.monotonic() - t_direct
    assert len(acked) == 200 and {q for q, _o in acked.values()} == {1, 2}, acked
    assert direct < 3.0, "200 acks=all messages to partitions 1-2 took %.2fs" % direct
    count_before_read = {q: load.count(q) for q in (1, 2)}
    got = read_partitions(c.bootstrap([1]), topic, [1, 2], timeout=15)
    read = {v: (q, o) for q, recs in got.items() for o, v in recs}
    assert all(read.get(v) == at for v, at in acked.items()), "messages acked during the cut " \
        "not read back through broker 1: %r" % [v for v in acked if v not in read][:5]
    for q in (1, 2):
        assert len(got[q]) >= count_before_read[q], (q, len(got[q]), count_before_read)
    # Partition 0 too, after the shrink.
    wait_until(lambda: load.first_ack_after(0, t_shrunk + 0.5), 5, interval=0.05,
               what="acks=all acknowledgements on partition 0 after the shrink")
    # No stall at all on the partitions the cut broker does not lead.
    others = max_latency(load, [1, 2], t_cut)
    assert others < 1.5, "acks=all on partitions led by 2 and 3 took up to %.2fs during " \
        "broker 1's cut" % others
    now = parts(c, topic, 3)
    assert [sorted(now[q]["isr"]) for q in (1, 2)] == [[1, 2, 3]] * 2, now
    assert now[0]["isr"] == [1], now
    cut_for = time.monotonic() - t_cut

    c.heal(1)
    t_heal = time.monotonic()
    wait_parts(c, topic, 1, full_isr(3), 15, "every ISR full again")
    rejoined = time.monotonic() - t_heal
    time.sleep(1)
    load.stop()
    assert not load.errors, "delivery errors: %d, e.g. %r" % (len(load.errors), load.errors[:5])
    assert not load.unflushed, load.unflushed
    got = read_partitions(c.bootstrap(), topic, [0, 1, 2])
    direct_read = {v: (q, o) for q, recs in got.items() for o, v in recs
                   if v.startswith(b"direct-")}
    assert direct_read == acked
    summary = assert_exactly_once(load, {q: [(o, v) for o, v in recs
                                             if not v.startswith(b"direct-")]
                                         for q, recs in got.items()})
    print("broker 1's link cut for %.2fs: partition 0's ISR [1] after %.2fs; partitions 1-2 "
          "longest acks=all %.2fs; 200 direct acks=all in %.3fs; full ISR %.2fs after heal; %r"
          % (cut_for, took, others, direct, rejoined, summary))
