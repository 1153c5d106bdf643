"""`make bench` cluster phase: what replication costs, measured in one sitting.

On this machine (all brokers share its cores):
  - produce throughput with acks=all on 6 partitions: one standalone Runnel, and three Runnel
    brokers with etcd and a replication factor 3 topic (every byte written three times). Both
    setups run side by side and take BENCH_REPEAT turns (after one uncounted warm-up turn), one
    standalone run then one RF 3 run, each after the machine has gone quiet; the fraction is
    the median over the turns of RF 3's figure over the standalone one of the same turn, so
    slow drifts of this shared machine's speed cancel out;
  - produce acknowledgement latency (p50/p99) at a fixed rate with acks=all, on both;
  - failover: an idempotent acks=all producer writes steadily to a replication factor 3
    partition; its leader is killed with SIGKILL; the time from the kill to the first
    acknowledgement of a message produced after it. Repeated, the killed broker restarted in
    between; the median is reported beside the session timeout;
  - consumer groups on the cluster (offsets in the replicated __consumer_offsets): time from a new
    consumer's subscribe to its first message, and the latency of synchronous offset commits
    (p50/p99 over BENCH_COMMITS commits).
Load comes from bench/'s runnel-bench (librdkafka); topics with a replication factor are created
with confluent-kafka's AdminClient. Prints `RESULT` lines and a short table. Figures only."""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compat-tests"))
from cluster_harness import Cluster, etcd_bin  # noqa: E402
from procstat import cpu_seconds  # noqa: E402
from runnel_harness import Broker  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def log(msg):
    print("[cluster] %s" % msg, file=sys.stderr, flush=True)


def tool(args, *cmd, timeout=600):
    out = subprocess.run([args.tool, *cmd], capture_output=True, text=True, timeout=timeout)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    if not line:
        log("runnel-bench %s printed no RESULT: %s" % (cmd[0], out.stderr[-500:]))
        return {}
    return dict(kv.split("=", 1) for kv in line[-1].split()[1:] if "=" in kv)


def create(bootstrap, name, partitions, rf):
    a = AdminClient({"bootstrap.servers": bootstrap})
    for f in a.create_topics([NewTopic(name, partitions, rf)]).values():
        f.result(30)
    # Every leader elected and known to the clients.
    deadline = time.time() + 30
    while time.time() < deadline:
        md = a.list_topics(name, timeout=5).topics.get(name)
        if md and len(md.partitions) == partitions and all(
                p.leader >= 0 and len(p.isrs) == rf for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RuntimeError("topic %s not ready" % name)


def quiesce(pids, limit=10.0):
    """Waits (at most `limit` s) until the processes use under 5% of a core: a flush left
    over from the previous run would otherwise be charged to the next one."""
    deadline = time.time() + limit
    while time.time() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.025:
            return


def produce_run(args, bootstrap, rf, name, pids, everyone):
    """One timed produce run: (MB/s, msgs/s, broker CPU s, client CPU s), or None. The CPU
    the idle setup used meanwhile is logged: it is taken from the measured one."""
    idle = [p for p in everyone if p not in pids]
    create(bootstrap, name, 6, rf)
    quiesce(everyone)
    broker0, client0, idle0 = cpu_seconds(pids), os.times(), cpu_seconds(idle)
    res = tool(args, "produce", "--brokers", bootstrap, "--topic", name, "--messages",
               str(args.messages), "--size", str(args.size), "--acks", "all", "--linger-ms", "5",
               "--timeout-secs", "300")
    client1 = os.times()
    broker_cpu = cpu_seconds(pids) - broker0
    idle_cpu = cpu_seconds(idle) - idle0
    client_cpu = (client1.children_user - client0.children_user
                  + client1.children_system - client0.children_system)
    # The next runs need neither its data nor its disk space (a run writes up to 3 GB).
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics([name]).values():
        f.result(30)
    if not res.get("msgs_per_s"):
        return None
    run = (float(res["mb_per_s"]), float(res["msgs_per_s"]), broker_cpu, client_cpu)
    log("%s: %.1f MB/s (%s msg/s), failed=%s, broker CPU %.2f s, client CPU %.2f s, idle "
        "setup CPU %.2f s" % (name, run[0], res["msgs_per_s"], res.get("failed"), broker_cpu,
                              client_cpu, idle_cpu))
    return run


def throughput(args, single, cluster):
    """Standalone and RF 3 runs taken in turns, both setups up the whole time (the idle one is
    quiet: no load, nothing to replicate), so a drift in this shared machine's speed hits both
    alike. Returns the medians (MB/s, msgs/s, broker CPU s, client CPU s) of each setup and
    (median of the per-turn fractions RF 3 / standalone, turns it was taken over)."""
    single_pids = [single.proc.pid]
    cluster_pids = [cluster.broker(i).proc.pid for i in cluster.node_ids()]
    everyone = single_pids + cluster_pids + [cluster.etcd.proc.pid]
    alone, rep, fractions = [], [], []
    # Turn 0 warms both setups up (fresh WAL files, allocator, page cache) and is not counted.
    for r in range(args.repeat + 1):
        a = produce_run(args, single.bootstrap, 1, "bench-standalone-%d" % r, single_pids, everyone)
        b = produce_run(args, cluster.bootstrap(), 3, "bench-rf3-%d" % r, cluster_pids, everyone)
        if r == 0:
            log("turn 0 (warm-up, not counted)")
            continue
        if a:
            alone.append(a)
        if b:
            rep.append(b)
        if a and b:
            fractions.append(b[0] / a[0])
            log("turn %d: RF 3 at %.0f%% of standalone" % (r, 100 * fractions[-1]))

    def medians(runs):
        return tuple(statistics.median(x[i] for x in runs) for i in range(4)) if runs else None
    frac = (statistics.median(fractions), len(fractions)) if fractions else None
    return medians(alone), medians(rep), frac


def latency(args, bootstrap, rf, label):
    name = "bench-lat-%s" % label
    create(bootstrap, name, 6, rf)
    return tool(args, "latency", "--brokers", bootstrap, "--topic", name, "--rate",
                str(args.rate), "--seconds", str(args.seconds), "--size", "100", "--acks", "all",
                "--linger-ms", "1")


def failover(cluster, rounds):
    """Seconds from SIGKILL of the leader to the first ack of a message sent after it."""
    name = "bench-failover"
    bootstrap = cluster.bootstrap()
    create(bootstrap, name, 1, 3)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    out = []
    for r in range(rounds):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 1, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
                      "retry.backoff.max.ms": 200, "topic.metadata.refresh.interval.ms": 500})
        state = {"kill": None, "first": None, "errors": 0}
        lock = threading.Lock()

        def cb(err, msg, sent=None):
            if err is not None:
                state["errors"] += 1
                return
            with lock:
                if state["kill"] is not None and sent >= state["kill"] and state["first"] is None:
                    state["first"] = time.time()

        stop = threading.Event()

        def run():
            while not stop.is_set():
                now = time.time()
                p.produce(name, b"x" * 100, on_delivery=lambda e, m, s=now: cb(e, m, s))
                p.poll(0.002)
            p.flush(60)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(2)
        leader = admin.list_topics(name, timeout=5).topics[name].partitions[0].leader
        with lock:
            state["kill"] = time.time()
        cluster.broker(leader).kill9()
        deadline = state["kill"] + 60
        while state["first"] is None and time.time() < deadline:
            time.sleep(0.02)
        stop.set()
        t.join()
        if state["first"] is not None:
            out.append(state["first"] - state["kill"])
            log("failover round %d: killed broker %d, first ack after %.2f s, delivery errors %d" % (
                r + 1, leader, out[-1], state["errors"]))
        cluster.broker(leader).start()
        cluster.wait_for_members(cluster.node_ids(), timeout=30)
        # Back in the ISR before the next round.
        deadline = time.time() + 60
        while time.time() < deadline:
            md = admin.list_topics(name, timeout=5).topics[name].partitions[0]
            if len(md.isrs) == 3:
                break
            time.sleep(0.2)
    return out


def groups(cluster, commits):
    """(seconds to the first message of a new group member, commit p50 ms, commit p99 ms)."""
    name = "bench-groups"
    bootstrap = cluster.bootstrap()
    create(bootstrap, name, 6, 3)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(20000):
        p.produce(name, b"x" * 100, partition=i % 6)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)
    firsts = []
    for r in range(3):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-group-%d-%d" % (r, time.time()),
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        t0 = time.time()
        c.subscribe([name])
        while time.time() - t0 < 60:
            m = c.poll(0.05)
            if m is not None and not m.error():
                firsts.append(time.time() - t0)
                break
        if r < 2:
            c.close()
    lat = []
    for _ in range(commits):
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        t = time.perf_counter()
        c.commit(message=m, asynchronous=False)
        lat.append((time.perf_counter() - t) * 1000)
    c.close()
    lat.sort()
    if not lat or not firsts:
        return None
    return (statistics.median(firsts), lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--messages", type=int, default=int(os.environ.get("BENCH_CLUSTER_MESSAGES", 1000000)))
    ap.add_argument("--size", type=int, default=int(os.environ.get("BENCH_CLUSTER_SIZE", 1024)))
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 3)))
    ap.add_argument("--rate", type=int, default=int(os.environ.get("BENCH_LATENCY_RATE", 10000)))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_LATENCY_SECONDS", 10)))
    ap.add_argument("--failovers", type=int, default=int(os.environ.get("BENCH_FAILOVERS", 3)))
    args = ap.parse_args()
    os.environ["RUNNEL_BIN"] = args.runnel
    if not etcd_bin():
        log("etcd is not installed (Debian: etcd-server): cluster phase skipped")
        print("RESULT kind=cluster skipped=no-etcd")
        return 0

    single = Broker()
    cluster = Cluster(3)
    try:
        single.start()
        cluster.start()
        alone, rep, frac = throughput(args, single, cluster)
        alone_lat = latency(args, single.bootstrap, 1, "standalone")
        single.stop(expect_clean=False)
        rep_lat = latency(args, cluster.bootstrap(), 3, "rf3")
        grp = groups(cluster, int(os.environ.get("BENCH_COMMITS", 1000)))
        fo = failover(cluster, args.failovers)
    finally:
        cluster.teardown()
        single.stop(expect_clean=False)
        single.cleanup()

    if alone:
        print("RESULT kind=cluster-produce target=standalone mb_per_s=%.1f msgs_per_s=%.0f "
              "broker_cpu_s=%.2f client_cpu_s=%.2f" % alone)
    if rep:
        print("RESULT kind=cluster-produce target=rf3 mb_per_s=%.1f msgs_per_s=%.0f "
              "broker_cpu_s=%.2f client_cpu_s=%.2f" % rep)
    if frac is not None:
        print("RESULT kind=cluster-fraction turns=%d rf3_of_standalone=%.3f" % (frac[1], frac[0]))
    for label, lat in (("standalone", alone_lat), ("rf3", rep_lat)):
        print("RESULT kind=cluster-latency target=%s rate=%d ack_p50_ms=%s ack_p99_ms=%s achieved_rate=%s" % (
            label, args.rate, lat.get("ack_p50_ms"), lat.get("ack_p99_ms"), lat.get("achieved_rate")))
    session = cluster.session_timeout
    if grp:
        print("RESULT kind=cluster-groups first_message_s=%.2f commit_p50_ms=%.2f commit_p99_ms=%.2f" % grp)
    if fo:
        print("RESULT kind=cluster-failover rounds=%d median_s=%.2f max_s=%.2f session_timeout_s=%.1f" % (
            len(fo), statistics.median(fo), max(fo), session))
    print("")
    print("Cluster (3 brokers + etcd on this machine, RF 3, acks=all, 6 partitions, %d B records)" % args.size)
    if frac is not None:
        print("  produce: standalone %.1f MB/s, RF 3 cluster %.1f MB/s (medians); RF 3 at %.0f%% of"
              " standalone, median of %d turns (target >= 45%%)" % (alone[0], rep[0], 100 * frac[0], frac[1]))
        print("  CPU per run (medians): standalone broker %.2f s + client %.2f s; RF 3 brokers %.2f s"
              " + client %.2f s" % (alone[2], alone[3], rep[2], rep[3]))
    print("  ack latency at %d msg/s: p99 standalone %s ms, RF 3 cluster %s ms (target <= 15 ms)" % (
        args.rate, alone_lat.get("ack_p99_ms"), rep_lat.get("ack_p99_ms")))
    if grp:
        print("  consumer group: first message %.2f s after subscribe (target < 4 s); synchronous "
              "commit p50 %.2f ms, p99 %.2f ms (target <= 20 ms)" % grp)
    if fo:
        print("  failover (kill -9 of the leader to first ack): median %.2f s, max %.2f s "
              "(target <= session timeout %.1f s + 2 s)" % (statistics.median(fo), max(fo), session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
