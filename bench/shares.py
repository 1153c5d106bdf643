"""`make bench` shares phase: share-group (KIP-932 queue) throughput on one standalone Runnel.

A topic of BENCH_SHARE_PARTITIONS (4) partitions is filled with BENCH_SHARE_MESSAGES
(400,000) records of BENCH_SHARE_SIZE (100) bytes. BENCH_SHARE_CONSUMERS (4) confluent-kafka
ShareConsumers, each in a process of its own (in threads the GIL would be the bottleneck),
subscribe in one share group (share.auto.offset.reset=earliest); BENCH_SHARE_JOIN_S (2)
seconds later they all start polling at once. Each acknowledges every record ACCEPT in
explicit mode (`share.acknowledgement.mode=explicit`) and calls commit_async after each
poll, until the acknowledgement callbacks have confirmed every record or
BENCH_SHARE_TIMEOUT_S (120) passed. Measured: accepted records per second from the first
record handed out to the last acceptance confirmed (and from the start of polling), the
time to the first record, the records each consumer accepted (how the broker's share-group
assignment spread the work), redeliveries (delivery count > 1) and records accepted more
than once. The broker runs with `group.share.heartbeat.interval.ms` (and its lower bound)
at 500 ms so that the consumers join quickly; the record lock stays at its default (30 s),
so nothing should be redelivered. Prints `RESULT` lines and a short table. Figures only."""

import argparse
import multiprocessing as mp
import os
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compat-tests"))
from runnel_harness import Broker  # noqa: E402
from confluent_kafka import AcknowledgeType, Producer, ShareConsumer  # noqa: E402
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,  # noqa: E402
                                   ConfigResource, NewTopic, ResourceType)

# Per-consumer counters in shared memory (one slot each).
DELIVERED, ACCEPTED, REDELIVERED, FAILED = range(4)
NCOUNTERS = 4


def log(msg):
    print("[shares] %s" % msg, file=sys.stderr, flush=True)


def consumer_main(idx, bootstrap, group, topic, mode, max_poll_records, counters, first_at,
                  last_ack_at, ready, go, stop, results):
    """One share consumer (a process of its own): subscribes, says it is ready, and starts
    polling when every consumer is (`go`). Acceptances are counted when the broker confirms
    them (the acknowledgement-commit callback); at the end the accepted offsets go back to
    the parent as one array of partition << 40 | offset."""
    accepted = array("q")
    base = idx * NCOUNTERS
    explicit = mode == "explicit"

    def on_commit(offsets, exc):
        n = sum(len(offs) for offs in offsets.values())
        if exc is not None:
            counters[base + FAILED] += n
            return
        for tp, offs in offsets.items():
            accepted.extend((tp.partition << 40) | o for o in offs)
        counters[base + ACCEPTED] += n
        last_ack_at[idx] = time.monotonic()

    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "client.id": "bench-share-%d" % idx,
                       "share.acknowledgement.mode": mode,
                       "max.poll.records": max_poll_records})
    c.set_acknowledgement_commit_callback(on_commit)
    c.subscribe([topic])
    ready.set()
    try:
        while not go.wait(0.1):
            if stop.is_set():
                return
        while not stop.is_set():
            msgs = c.poll(0.1)
            if not len(msgs):
                continue
            n = redelivered = 0
            for m in msgs:
                if m.error() is not None:
                    continue
                n += 1
                if (m.delivery_count() or 1) > 1:
                    redelivered += 1
                if explicit:
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
            if n:
                if first_at[idx] == 0.0:
                    first_at[idx] = time.monotonic()
                counters[base + DELIVERED] += n
                counters[base + REDELIVERED] += redelivered
            c.commit_async()
    finally:
        c.close()   # sends what is still pending; its callbacks run in here
        results.put((idx, accepted.tobytes()))


def set_earliest(admin, group):
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=[
        ConfigEntry("share.auto.offset.reset", "earliest",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)


def fill(bootstrap, topic, n, size, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    value = b"x" * size
    for k in range(n):
        while True:
            try:
                p.produce(topic, value, partition=k % partitions)
                break
            except BufferError:
                p.poll(0.05)
        if k % 10000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("records still unsent after 120 s")


def run(bootstrap, admin, topic, args):
    group = "bench-shares-%d" % os.getpid()
    set_earliest(admin, group)
    ctx = mp.get_context("spawn")
    n = args.consumers
    counters = ctx.Array("q", n * NCOUNTERS, lock=False)
    first_at = ctx.Array("d", n, lock=False)
    last_ack_at = ctx.Array("d", n, lock=False)
    go, stop = ctx.Event(), ctx.Event()
    results = ctx.Queue()
    readies = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=consumer_main, daemon=True, args=(
        i, bootstrap, group, topic, args.ack_mode, args.max_poll_records, counters, first_at,
        last_ack_at, readies[i], go, stop, results)) for i in range(n)]

    def total(which):
        return sum(counters[i * NCOUNTERS + which] for i in range(n))

    for pr in procs:
        pr.start()
    for i, r in enumerate(readies):
        if not r.wait(60):
            stop.set()
            raise RuntimeError("consumer %d did not start within 60 s" % i)
    time.sleep(args.join_s)   # subscribed; give the heartbeats time to bring in everyone
    t0 = time.monotonic()
    go.set()
    deadline = t0 + args.timeout
    last_log = t0
    while total(ACCEPTED) < args.messages and time.monotonic() < deadline:
        if not all(pr.is_alive() for pr in procs):
            raise RuntimeError("a consumer process died (exit codes %s)"
                               % [pr.exitcode for pr in procs])
        time.sleep(0.05)
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            log("%.0fs: %d delivered, %d accepted" % (last_log - t0, total(DELIVERED),
                                                     total(ACCEPTED)))
    finished = time.monotonic()
    accepted_in_time = total(ACCEPTED)
    stop.set()
    got = {}
    for _ in range(n):
        try:
            idx, blob = results.get(timeout=60)
        except Exception:  # noqa: BLE001 - queue.Empty: reported below
            break
        a = array("q")
        a.frombytes(blob)
        got[idx] = a
    for pr in procs:
        pr.join(30)
        if pr.is_alive():
            pr.terminate()
    firsts = [first_at[i] for i in range(n) if first_at[i] > 0]
    last_ack = max(last_ack_at[i] for i in range(n))
    if not firsts:
        raise RuntimeError("no consumer received a record within %d s" % args.timeout)
    first = min(firsts)
    complete = accepted_in_time >= args.messages
    end = last_ack if complete and last_ack > 0 else finished
    keys = [k for a in got.values() for k in a]
    unique = len(set(keys))
    return {
        "complete": complete,
        "accepted": accepted_in_time,
        "first_record_s": first - t0,
        "wall_s": end - t0,
        "rps": accepted_in_time / max(end - first, 1e-9),
        "rps_from_start": accepted_in_time / max(end - t0, 1e-9),
        "per_consumer": [counters[i * NCOUNTERS + ACCEPTED] for i in range(n)],
        "delivered": total(DELIVERED),
        "redelivered": total(REDELIVERED),
        "failed": total(FAILED),
        "duplicates": len(keys) - unique,
        "reported": len(got),
    }


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser()
    ap.add_argument("--runnel", required=True)
    ap.add_argument("--messages", type=int, default=int(env("BENCH_SHARE_MESSAGES", 400000)))
    ap.add_argument("--size", type=int, default=int(env("BENCH_SHARE_SIZE", 100)))
    ap.add_argument("--partitions", type=int, default=int(env("BENCH_SHARE_PARTITIONS", 4)))
    ap.add_argument("--consumers", type=int, default=int(env("BENCH_SHARE_CONSUMERS", 4)))
    ap.add_argument("--timeout", type=float, default=float(env("BENCH_SHARE_TIMEOUT_S", 120)))
    ap.add_argument("--max-poll-records", type=int,
                    default=int(env("BENCH_SHARE_MAX_POLL_RECORDS", 500)))
    ap.add_argument("--join-s", type=float, default=float(env("BENCH_SHARE_JOIN_S", 2)),
                    help="seconds between the subscribes and the start of polling")
    ap.add_argument("--ack-mode", choices=("explicit", "implicit"),
                    default=env("BENCH_SHARE_ACK_MODE", "explicit"))
    args = ap.parse_args()
    b = Broker(binary=args.runnel, overrides={
        "group.share.heartbeat.interval.ms": "500",
        "group.share.min.heartbeat.interval.ms": "500",
    })
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        topic = "bench-shares"
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        t = time.monotonic()
        fill(b.bootstrap, topic, args.messages, args.size, args.partitions)
        log("filled %s with %d x %d B records in %.1fs" % (topic, args.messages, args.size,
                                                           time.monotonic() - t))
        r = run(b.bootstrap, admin, topic, args)
    finally:
        rc = b.stop(expect_clean=False)
        if rc:
            log("broker exited with code %s (log: %s)" % (rc, b.log_path))
        else:
            b.cleanup()
    tags = "consumers=%d partitions=%d ack=%s" % (args.consumers, args.partitions, args.ack_mode)
    print("RESULT shares %s shares_throughput_rps=%.0f" % (tags, r["rps"]))
    print("RESULT shares %s shares_throughput_from_start_rps=%.0f" % (
        tags, r["rps_from_start"]))
    print("RESULT shares %s first_record_s=%.3f" % (tags, r["first_record_s"]))
    print("RESULT shares %s wall_s=%.3f" % (tags, r["wall_s"]))
    print("RESULT shares %s accepted=%d of=%d complete=%d" % (
        tags, r["accepted"], args.messages, r["complete"]))
    print("RESULT shares %s redelivered=%d duplicates=%d failed_acks=%d" % (
        tags, r["redelivered"], r["duplicates"], r["failed"]))
    print("Share groups (standalone, %d partitions, %d x %d B records, %d ShareConsumer "
          "processes, %s acknowledgement, max.poll.records=%d):" % (
              args.partitions, args.messages, args.size, args.consumers, args.ack_mode,
              args.max_poll_records))
    print("  %-22s %12s %14s %12s %14s" % ("accepted/s", "from start", "first record",
                                           "wall", "per consumer"))
    print("  %-22s %12s %13.2fs %11.2fs %14s" % (
        "%.0f%s" % (r["rps"], "" if r["complete"] else " (INCOMPLETE)"),
        "%.0f" % r["rps_from_start"], r["first_record_s"], r["wall_s"],
        "/".join(str(x) for x in r["per_consumer"])))
    print("  accepted %d of %d; redelivered %d, accepted twice %d, failed acknowledgements %d%s"
          % (r["accepted"], args.messages, r["redelivered"], r["duplicates"], r["failed"],
             "" if r["reported"] == args.consumers
             else "; only %d consumers reported their offsets" % r["reported"]))


if __name__ == "__main__":
    main()
