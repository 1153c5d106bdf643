"""`make bench` groups phase: how fast consumer groups form and rebalance, with the KIP-848
consumer protocol (`group.protocol=consumer`) beside the classic one, on one standalone Runnel.

For each protocol, BENCH_GROUP_REPEAT times with a fresh group:
  - four consumers subscribe at once to an 8-partition topic that already holds records: the
    time from the subscribes to the first message (first member) and until every member has
    received one (all members);
  - a fifth consumer then subscribes: the time from its subscribe to its first message (the
    rebalance as a member sees it), and until the group is back to Stable with five members.
The consumer protocol runs with the broker's `group.consumer.heartbeat.interval.ms` (and its
lower bound) at BENCH_GROUP_HEARTBEAT_MS: the broker tells members about a new assignment on
their next heartbeat, so that interval bounds how fast a rebalance can finish. The classic
protocol runs with librdkafka's defaults and the broker's group.initial.rebalance.delay.ms=0.
Prints `RESULT` lines and a short table. Figures only."""

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compat-tests"))
from runnel_harness import Broker  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

PARTITIONS = 8


def log(msg):
    print("[groups] %s" % msg, file=sys.stderr, flush=True)


class Member:
    """One consumer in a thread; records when its first message arrived."""

    def __init__(self, bootstrap, group, topic, protocol):
        conf = {"bootstrap.servers": bootstrap, "group.id": group,
                "auto.offset.reset": "earliest", "enable.auto.commit": False,
                "group.protocol": protocol}
        if protocol == "classic":
            conf["partition.assignment.strategy"] = "cooperative-sticky"
        self.conf, self.topic = conf, topic
        self.first = None
        self.started = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.started = time.monotonic()
        self.thread.start()
        return self

    def run(self):
        c = Consumer(self.conf)
        c.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                m = c.poll(0.05)
                if m is not None and not m.error() and self.first is None:
                    self.first = time.monotonic()
        finally:
            c.close()

    def finish(self):
        self.stop.set()
        self.thread.join(30)


def wait(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def stable_with(admin, group, n):
    try:
        g = admin.describe_consumer_groups([group])[group].result(5)
        return g.state.name == "STABLE" and len(g.members) == n and all(
            m.assignment.topic_partitions for m in g.members)
    except Exception:  # noqa: BLE001 - not yet
        return False


def one_round(bootstrap, admin, topic, protocol, i):
    group = "bench-%s-%d-%d" % (protocol, os.getpid(), i)
    t0 = time.monotonic()
    members = [Member(bootstrap, group, topic, protocol).start() for _ in range(4)]
    try:
        if not wait(lambda: all(m.first for m in members), 60):
            raise RuntimeError("%s: four members never all received a message" % protocol)
        first = min(m.first for m in members) - t0
        everyone = max(m.first for m in members) - t0
        wait(lambda: stable_with(admin, group, 4), 30)
        fifth = Member(bootstrap, group, topic, protocol)
        members.append(fifth)
        t1 = time.monotonic()
        fifth.start()
        if not wait(lambda: fifth.first is not None, 60):
            raise RuntimeError("%s: the fifth member never received a message" % protocol)
        joined = fifth.first - t1
        wait(lambda: stable_with(admin, group, 5), 60)
        settled = time.monotonic() - t1
        return first, everyone, joined, settled
    finally:
        for m in members:
            m.finish()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_GROUP_REPEAT", 3)))
    ap.add_argument("--heartbeat-ms", type=int,
                    default=int(os.environ.get("BENCH_GROUP_HEARTBEAT_MS", 250)))
    args = ap.parse_args()
    hb = str(args.heartbeat_ms)
    b = Broker(binary=args.runnel, overrides={
        "group.consumer.heartbeat.interval.ms": hb,
        "group.consumer.min.heartbeat.interval.ms": hb,
        "group.initial.rebalance.delay.ms": "0",
    })
    b.start()
    rows = {}
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        topic = "bench-groups"
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
        for k in range(20000):
            p.produce(topic, b"x" * 100, partition=k % PARTITIONS)
            if k % 5000 == 0:
                p.poll(0)
        p.flush(30)
        for protocol in ("consumer", "classic"):
            runs = []
            for i in range(args.repeat):
                runs.append(one_round(b.bootstrap, admin, topic, protocol, i))
                log("%s run %d: first %.2fs, all %.2fs, fifth member's first message %.2fs, "
                    "stable %.2fs" % ((protocol, i + 1) + runs[-1]))
            med = [statistics.median(x) for x in zip(*runs)]
            rows[protocol] = med
            for name, v in zip(("first_message_s", "all_members_s", "fifth_member_s",
                                "fifth_stable_s"), med):
                print("RESULT groups protocol=%s %s=%.3f" % (protocol, name, v))
    finally:
        b.stop()
    print("Consumer groups (standalone, %d partitions, median of %d; consumer protocol with "
          "heartbeat interval %s ms):" % (PARTITIONS, args.repeat, hb))
    print("  %-9s %14s %12s %22s %18s" % ("protocol", "first message", "all members",
                                          "5th member's first msg", "5th: group Stable"))
    for protocol, (a, e, j, s) in rows.items():
        print("  %-9s %13.2fs %11.2fs %21.2fs %17.2fs" % (protocol, a, e, j, s))
    print("  targets (consumer protocol): first message <= 1 s, rebalance when a fifth joins <= 1 s")


if __name__ == "__main__":
    main()
