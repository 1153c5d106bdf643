"""Consume-transform-produce worker for test_transactions.py (run as a
subprocess so the test can SIGKILL it at random points).

    txn_transform.py BOOTSTRAP SRC DST GROUP TRANSACTIONAL_ID MODE

Reads SRC with a read_committed consumer in GROUP, writes b"out-" + value
to DST (same key, same partition) in a transaction per poll, and commits the
consumed offsets in the same transaction (send_offsets_to_transaction).
MODE "forever" runs until killed; "drain" exits 0 once every assigned
partition of SRC is consumed to its end. Any error ends the process with a
non-zero code: the test restarts it, and exactly-once must still hold."""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def caught_up(c, src, partitions):
    assigned = c.assignment()
    if len(assigned) != partitions:
        return False
    # The position is only known once a message was consumed; before that
    # the group's committed offset is where consumption resumes.
    committed = {tp.partition: tp.offset for tp in c.committed(assigned, timeout=10)}
    for tp in c.position(assigned):
        at = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
        _lo, hi = c.get_watermark_offsets(TopicPartition(src, tp.partition), timeout=5,
                                          cached=False)
        if at < hi:
            return False
    return True


def main():
    bootstrap, src, dst, group, txn_id, mode, partitions = sys.argv[1:8]
    partitions = int(partitions)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 2})
    p.init_transactions(30)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 200,
    })
    c.subscribe([src])
    print("started", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msgs = [m for m in c.consume(num_messages=10, timeout=0.3) if not m.error()]
        if not msgs:
            if mode == "drain" and caught_up(c, src, partitions):
                print("done", flush=True)
                p.flush(10)
                c.close()
                return 0
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, key=m.key(), value=b"out-" + m.value(), partition=m.partition())
        # Some work inside the transaction, so a kill often lands mid-transaction.
        time.sleep(0.02)
        ends = {}
        for m in msgs:
            ends[m.partition()] = m.offset() + 1
        offsets = [TopicPartition(src, part, off) for part, off in sorted(ends.items())]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        print("committed %d" % len(msgs), flush=True)
    print("timed out", flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
