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

A consume-transform-produce loop with transactions (txn_worker.TransformWorker: read_committed
input, transactional output, offsets sent with each transaction) works through its own input
all along, about one transaction a second, so faults land on open transactions, on the
transaction coordinator and on the group coordinator. At the end its output must hold every
input record exactly once, in order (0 duplicated, 0 missing transactional outputs), and the
group's committed offsets must be the input's ends.

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
from txn_worker import TransformWorker  # noqa: E402

PARTITIONS = 3
PRODUCERS = 2
# Records per second the transactional loop works through, and its input per fault cycle.
TXN_RATE = 100
TXN_PER_CYCLE = 400


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


class Transform:
    """The transactional loop of the soak: `n` input records over PARTITIONS partitions,
    transformed at about TXN_RATE records/s (one transaction of up to 100 a second)."""

    def __init__(self, bootstrap, seed, n):
        self.bootstrap, self.n = bootstrap, n
        self.src, self.dst = "chaos-txn-in-%d" % seed, "chaos-txn-out-%d" % seed
        self.group, self.tid = "chaos-txn-group-%d" % seed, "chaos-txn-%d" % seed
        self.worker = None

    def start(self):
        a = AdminClient({"bootstrap.servers": self.bootstrap})
        for f in a.create_topics([NewTopic(t, PARTITIONS, 3, config={"min.insync.replicas": "2"})
                                  for t in (self.src, self.dst)]).values():
            f.result(30)
        wait_in_sync(self.bootstrap, self.src)
        wait_in_sync(self.bootstrap, self.dst)
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                      "enable.idempotence": True, "linger.ms": 5})
        for i in range(self.n):
            p.produce(self.src, b"%d" % i, partition=i % PARTITIONS)
            if i % 1000 == 0:
                p.poll(0)
        if p.flush(60):
            raise RuntimeError("could not write the transactional loop's input")
        ends = {q: len(range(q, self.n, PARTITIONS)) for q in range(PARTITIONS)}
        self.worker = TransformWorker(self.bootstrap, self.src, self.dst, self.group, self.tid,
                                      ends, rate=TXN_RATE, deadline_s=24 * 3600).start()

    def finish(self, timeout):
        """Waits for the loop to commit everything (it has `timeout` seconds more); the
        findings: {"txn_records", "txn_duplicated", "txn_missing", "txn_reordered",
        "txn_offsets_ok", "txn_worker"}."""
        w = self.worker
        try:
            wait_until(lambda: w.crashed or w.done(), timeout, interval=0.5,
                       what="the transactional loop to commit its whole input")
        finally:
            w.stop()
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "chaos-txn-check",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "isolation.level": "read_committed"})
        c.assign([TopicPartition(self.dst, q, 0) for q in range(PARTITIONS)])
        got = {q: [] for q in range(PARTITIONS)}
        n, last, deadline = 0, time.time(), time.time() + 120
        while time.time() < deadline and not (n >= self.n and time.time() - last > 3):
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    got[m.partition()].append(m.value())
                    n, last = n + 1, time.time()
        c.close()
        values = [v for q in got.values() for v in q]
        want = {b"out-%d" % i for i in range(self.n)}
        reordered = sum(1 for q in range(PARTITIONS)
                        if [v for v in got[q] if v in want]
                        != [b"out-%d" % i for i in range(q, self.n, PARTITIONS)])
        g = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        committed = g.committed([TopicPartition(self.src, q) for q in range(PARTITIONS)],
                                timeout=30)
        g.close()
        offsets_ok = {tp.partition: tp.offset for tp in committed} == w.ends
        counts, _errors = w.summary()
        return {"txn_records": len(values), "txn_duplicated": len(values) - len(set(values)),
                "txn_missing": len(want - set(values)), "txn_reordered": reordered,
                "txn_offsets_ok": offsets_ok, "txn_worker": counts}


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
        transform = Transform(bootstrap, seed, TXN_PER_CYCLE * cycles)
        transform.start()
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
        left = transform.n - transform.worker.progress()
        txn = transform.finish(timeout=120 + left / float(TXN_RATE))
        result = {"seed": seed, "cycles": cycles, "sent": load.sent, "acked": acked,
                  "read": sum(len(v) for v in got.values()), "lost": lost, "duplicated": dup,
                  "reordered": reordered, "delivery_errors": len(load.errors),
                  "commits_acked": len(group.acked), "lost_commits": lost_commits,
                  "failed_commits": group.failed_commits,
                  "first_errors": load.errors[:3]}
        result.update(txn)
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
           or r["lost_commits"] or r["txn_duplicated"] or r["txn_missing"]
           or r["txn_reordered"] or not r["txn_offsets_ok"])
    print("chaos: %d cycles, %d acknowledged, %d lost, %d duplicated, %d reordered, "
          "%d lost committed offsets; transactional loop: %d outputs, %d duplicated, "
          "%d missing, %d partitions out of order, committed offsets %s (seed %d)" % (
              r["cycles"], r["acked"], r["lost"], r["duplicated"], r["reordered"],
              len(r["lost_commits"]), r["txn_records"], r["txn_duplicated"],
              r["txn_missing"], r["txn_reordered"],
              "at the input's ends" if r["txn_offsets_ok"] else "WRONG", r["seed"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
