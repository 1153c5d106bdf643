"""Fault soak for the replicated cluster (`make chaos`; `make test` runs a 5-cycle slice).

Three brokers and etcd on loopback, a replication factor 3 topic with min.insync.replicas=2, and
idempotent acks=all producers writing numbered records all along. Each cycle picks a random live
broker and a random fault — kill -9 then restart, SIGSTOP past the session timeout then SIGCONT,
or a short SIGSTOP the session survives — holds it for a moment, ends it, and waits until the broker
is registered again. Only one broker is faulty at a time, so every acknowledged record is on at
least one live in-sync replica throughout.

At the end every record acknowledged to a producer must be read back exactly once, each
producer's records in the order it sent them, per partition: 0 lost, 0 duplicated, 0 reordered.
A consumer group reads the topic along the way and commits synchronously; its committed offsets
live in the replicated `__consumer_offsets` topic, so no acknowledged commit may be lost: at the
end each partition's committed offset is at least the highest one a commit acknowledged.

    python compat-tests/chaos.py --cycles 100 [--seed N]
"""

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_harness import Cluster, wait_until  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

PARTITIONS = 3
PRODUCERS = 2


def log(msg):
    print("[chaos %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Load:
    """Idempotent acks=all producers; what each got acknowledged, per partition."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.acked = {p: [] for p in range(PARTITIONS)}
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self.run, args=(bootstrap, i), daemon=True)
                        for i in range(PRODUCERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, bootstrap, pid):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 2, "message.timeout.ms": 300000,
                      "topic.metadata.refresh.interval.ms": 1000, "retry.backoff.ms": 50,
                      "retry.backoff.max.ms": 500})

        def cb(err, msg):
            with self.lock:
                if err is not None:
                    self.errors.append(str(err))
                else:
                    self.acked[msg.partition()].append(msg.value())

        seq = 0
        while not self.stop.is_set():
            try:
                p.produce(self.topic, value=b"%d-%d" % (pid, seq), partition=seq % PARTITIONS,
                          on_delivery=cb)
                seq += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if seq % 50 == 0:
                time.sleep(0.005)
        remaining = p.flush(300)
        if remaining:
            with self.lock:
                self.errors.append("%d records never delivered" % remaining)
        with self.lock:
            self.sent += seq

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(330)


class Group:
    """A consumer in a group that commits synchronously every few hundred records; the highest
    offset each commit acknowledged, per partition."""

    def __init__(self, bootstrap, topic, group):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.acked = {}
        self.failed_commits = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def run(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "session.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 1000})
        c.subscribe([self.topic])
        since = 0
        while not self.stop.is_set():
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            since += 1
            if since < 300:
                continue
            since = 0
            try:
                done = c.commit(asynchronous=False)
            except Exception:  # noqa: BLE001 - a failed commit is allowed, a lost one is not
                self.failed_commits += 1
                continue
            for tp in done or []:
                if tp.error is None and tp.offset >= 0:
                    self.acked[tp.partition] = max(self.acked.get(tp.partition, -1), tp.offset)
        c.close()

    def finish(self):
        self.stop.set()
        self.thread.join(60)

    def lost_commits(self):
        """Partitions whose committed offset is now below an acknowledged commit."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "enable.auto.commit": False})
        now = c.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=30)
        c.close()
        have = {tp.partition: tp.offset for tp in now}
        return {p: (o, have.get(p)) for p, o in self.acked.items() if have.get(p, -1) < o}


def read_all(bootstrap, topic, expected):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    n, idle_since = 0, None
    deadline = time.time() + 120
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            if n >= expected:
                idle_since = idle_since or time.time()
                if time.time() - idle_since > 3:
                    break
            continue
        idle_since = None
        got[m.partition()].append(m.value())
        n += 1
    c.close()
    return got


def check(acked, got):
    """(lost, duplicated, reordered) over every partition."""
    lost = dup = reordered = 0
    for p in range(PARTITIONS):
        read = got[p]
        seen = set(read)
        dup += len(read) - len(seen)
        lost += sum(1 for v in acked[p] if v not in seen)
        last = {}
        for v in read:
            pid, s = v.split(b"-")
            s = int(s)
            if pid in last and s <= last[pid]:
                reordered += 1
            last[pid] = s
    return lost, dup, reordered


def fault_cycle(c, rng, cycle):
    live = c.live_ids()
    victim = rng.choice(live)
    kind = rng.choice(["kill", "pause-long", "pause-short"])
    hold = rng.uniform(0.5, 2.0)
    log("cycle %d: %s broker %d" % (cycle, kind, victim))
    if kind == "kill":
        c.broker(victim).kill9()
        time.sleep(hold)
        c.broker(victim).start()
    elif kind == "pause-long":
        c.pause(victim)
        time.sleep(c.session_timeout + hold)
        c.resume(victim)
    else:
        c.pause(victim)
        time.sleep(min(hold, c.session_timeout / 3))
        c.resume(victim)
    c.wait_for_members(c.node_ids(), timeout=60)
    time.sleep(rng.uniform(0.5, 1.5))


def wait_in_sync(bootstrap, topic, timeout=90):
    a = AdminClient({"bootstrap.servers": bootstrap})

    def ok():
        md = a.list_topics(topic, timeout=5).topics.get(topic)
        return md is not None and all(
            p.leader >= 0 and len(p.isrs) == 3 for p in md.partitions.values())

    wait_until(ok, timeout, interval=0.5, what="every partition back to an ISR of 3")


def run(cycles, seed=None, cluster=None):
    """Runs the soak; returns a dict of counts. Uses `cluster` (started) if given."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    own = cluster is None
    c = cluster or Cluster(3, overrides={"replica.lag.time.max.ms": "3000",
                                         "min.insync.replicas": "2"})
    try:
        if own:
            c.start()
        topic = "chaos-%d" % seed
        bootstrap = c.bootstrap()
        a = AdminClient({"bootstrap.servers": bootstrap})
        for f in a.create_topics([NewTopic(topic, PARTITIONS, 3,
                                           config={"min.insync.replicas": "2"})]).values():
            f.result(30)
        wait_in_sync(bootstrap, topic)
        log("seed %d, %d cycles, topic %s" % (seed, cycles, topic))
        load = Load(bootstrap, topic)
        load.start()
        group = Group(bootstrap, topic, "chaos-group-%d" % seed)
        group.start()
        time.sleep(1)
        for i in range(1, cycles + 1):
            fault_cycle(c, rng, i)
        time.sleep(2)
        load.finish()
        group.finish()
        wait_in_sync(bootstrap, topic)
        acked = sum(len(v) for v in load.acked.values())
        got = read_all(bootstrap, topic, acked)
        lost, dup, reordered = check(load.acked, got)
        lost_commits = group.lost_commits()
        result = {"seed": seed, "cycles": cycles, "sent": load.sent, "acked": acked,
                  "read": sum(len(v) for v in got.values()), "lost": lost, "duplicated": dup,
                  "reordered": reordered, "delivery_errors": len(load.errors),
                  "commits_acked": len(group.acked), "lost_commits": lost_commits,
                  "failed_commits": group.failed_commits,
                  "first_errors": load.errors[:3]}
        log("result: %s" % result)
        return result
    finally:
        if own:
            c.teardown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=int(os.environ.get("CHAOS_CYCLES", 100)))
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    r = run(args.cycles, args.seed)
    bad = (r["lost"] or r["duplicated"] or r["reordered"] or r["acked"] == 0
           or r["lost_commits"])
    print("chaos: %d cycles, %d acknowledged, %d lost, %d duplicated, %d reordered, "
          "%d lost committed offsets (seed %d)" % (
              r["cycles"], r["acked"], r["lost"], r["duplicated"], r["reordered"],
              len(r["lost_commits"]), r["seed"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
