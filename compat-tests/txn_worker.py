"""A consume-transform-produce loop with transactions, as stream
processors run one (read_committed input, transactional output, offsets sent
with the transaction), hardened the way such applications are: retriable
errors retried, abortable ones aborted, fatal ones answered with a new
producer, and the input rewound to the committed offsets after any failure.
Used by test_cluster_transactions.py and chaos.py.
"""

import sys
import threading
import time
import traceback

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from cluster_harness import wait_until

# librdkafka 2.16 re-bootstraps when every broker it knows is unreachable for
# a moment and decommissions their handles; a cached group coordinator can
# stay pointed at a decommissioned handle, after which
# send_offsets_to_transaction never sends its TxnOffsetCommit and ignores its
# timeout (seen against a restarted standalone broker). The brokers keep
# their node ids and addresses here: no re-bootstrap for the transform loop.
NO_REBOOTSTRAP = "none"


class TransformWorker:
    """A consume-transform-produce loop in a thread: a read_committed
    consumer in `group` reads `src`, each consume() batch (up to 100
    records) becomes one transaction writing b"out-" + value to the same
    partition of `dst` with the consumed offsets (send_offsets_to_transaction),
    at about `rate` records/s (paced inside the transaction). Errors: retriable ones are retried; abortable
    ones abort the transaction; fatal ones (fenced, ...) or a failed abort
    replace the producer (same transactional.id); after either the consumer
    rewinds to the group's committed offsets. It stops once the committed
    offsets reach `ends` ({partition: end offset}). It does not start a
    transaction while committed progress is at or above `gate`."""

    def __init__(self, bootstrap, src, dst, group, tid, ends, rate=200, gate=None,
                 deadline_s=200):
        self.bootstrap, self.src, self.dst = bootstrap, src, dst
        self.group, self.tid, self.ends = group, tid, dict(ends)
        self.rate = rate
        self.gate = gate if gate is not None else sum(ends.values())
        self.deadline_s = deadline_s
        self.lock = threading.Lock()
        self.committed = {}       # partition -> committed offset (as this worker knows it)
        self.events = []          # (t, what, error name or text)
        self.counts = {"txns": 0, "records": 0, "aborts": 0, "new_producers": 0,
                       "rewinds": 0, "new_consumers": 0}
        self.crashed = []
        self.finished = threading.Event()
        self._stop = threading.Event()
        self.p = None
        self.c = None
        self.thread = threading.Thread(target=self._run, name="transform-" + tid, daemon=True)

    def start(self):
        self.thread.start()
        return self

    # -- views --

    def progress(self):
        """Records whose offsets are committed (as far as this worker knows)."""
        with self.lock:
            return sum(self.committed.values())

    def done(self):
        with self.lock:
            return all(self.committed.get(p) == e for p, e in self.ends.items())

    def _note(self, what, err):
        name = err.name() if hasattr(err, "name") else str(err)
        with self.lock:
            self.events.append((time.monotonic(), what, name))

    def _count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    # -- clients --

    def _new_producer(self, deadline):
        while not self._stop.is_set():
            p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": self.tid,
                          "linger.ms": 5, "transaction.timeout.ms": 15000,
                          "socket.timeout.ms": 10000,
                          "metadata.recovery.strategy": NO_REBOOTSTRAP})
            try:
                p.init_transactions(20)
                self._count("new_producers")
                return p
            except KafkaException as e:
                self._note("init_transactions", e.args[0])
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return None

    def _new_consumer(self):
        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
            "socket.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 2000,
            "metadata.recovery.strategy": NO_REBOOTSTRAP,
        })
        c.subscribe([self.src])
        self._count("new_consumers")
        return c

    # librdkafka 2.16 can leave a transactional call blocked past its own
    # timeout when the coordinator it had cached died (seen with
    # send_offsets_to_transaction under load). An application cannot wait
    # forever: a call that has not returned by then counts as fatal, and the
    # producer is replaced (its successor fences it and ends what it left).
    CALL_WATCHDOG_S = 45

    def _watched(self, what, fn):
        box = {}

        def run():
            try:
                box["ok"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["err"] = e
        t = threading.Thread(target=run, name="txn-call-" + what, daemon=True)
        t.start()
        t.join(self.CALL_WATCHDOG_S)
        if t.is_alive():
            self._note(what + " (stuck in the client)", "watchdog")
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                            "%s did not return in %d s" % (
                                                what, self.CALL_WATCHDOG_S),
                                            fatal=True))
        if "err" in box:
            raise box["err"]
        return box.get("ok")

    def _retrying(self, what, fn, deadline):
        """fn(), again after retriable errors (as librdkafka's transactional
        API allows) until `deadline`."""
        while True:
            try:
                return self._watched(what, fn)
            except KafkaException as e:
                err = e.args[0]
                if (err.fatal() or err.txn_requires_abort() or not err.retriable()
                        or time.monotonic() > deadline or self._stop.is_set()):
                    raise
                self._note(what + " (retried)", err)
                time.sleep(0.2)

    # -- the loop --

    def _transaction(self, msgs):
        deadline = time.monotonic() + 40
        self.p.begin_transaction()
        ends = {}
        for m in msgs:
            self.p.produce(self.dst, key=m.key(), value=b"out-" + m.value(),
                           partition=m.partition())
            ends[m.partition()] = m.offset() + 1
        # The pacing happens inside the transaction, so a kill usually lands
        # while one is open.
        if self.rate:
            time.sleep(len(msgs) / float(self.rate))
        offsets = [TopicPartition(self.src, q, o) for q, o in sorted(ends.items())]
        meta = self.c.consumer_group_metadata()
        self._retrying("send_offsets_to_transaction",
                       lambda: self.p.send_offsets_to_transaction(offsets, meta, 20), deadline)
        self._retrying("commit_transaction", lambda: self.p.commit_transaction(20), deadline)
        with self.lock:
            self.committed.update(ends)
            self.counts["txns"] += 1
            self.counts["records"] += len(msgs)

    def _recover(self, e):
        err = e.args[0]
        self._note("transaction", err)
        replaced = True
        if err.txn_requires_abort() and not err.fatal():
            try:
                self._retrying("abort_transaction", lambda: self.p.abort_transaction(20),
                               time.monotonic() + 40)
                self._count("aborts")
                replaced = False
            except KafkaException as e2:
                self._note("abort_transaction", e2.args[0])
        if replaced:
            # Its InitProducerId fences the old producer and completes or
            # aborts whatever that one left open.
            self.p = self._new_producer(time.monotonic() + 90)
        self._rewind()

    def _sync_committed(self):
        """The group's committed offsets of the assigned partitions (stable:
        a read_committed consumer asks with require_stable)."""
        assigned = self.c.assignment()
        if not assigned:
            return None
        got = self.c.committed(assigned, timeout=10)
        with self.lock:
            for tp in got:
                if tp.error is None and tp.offset >= 0:
                    self.committed[tp.partition] = tp.offset
        return got

    def _rewind(self):
        """Back to the committed offsets: what the failed transaction read is
        read again."""
        for _ in range(20):
            if self._stop.is_set():
                return
            try:
                got = self._sync_committed()
                if got is None:
                    return      # being (re)assigned: it starts at the committed offsets
                for tp in got:
                    self.c.seek(TopicPartition(tp.topic, tp.partition,
                                               tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
                self._count("rewinds")
                return
            except KafkaException as e:
                self._note("rewind", e.args[0])
                time.sleep(0.5)
        # Could not seek: a new member starts from the committed offsets.
        self.c.close()
        self.c = self._new_consumer()

    def _run(self):
        deadline = time.monotonic() + self.deadline_s
        last_sync = time.monotonic()
        try:
            self.p = self._new_producer(time.monotonic() + 60)
            self.c = self._new_consumer()
            while not self._stop.is_set() and not self.done():
                if time.monotonic() > deadline:
                    raise AssertionError("transform loop still running after %d s" % self.deadline_s)
                if self.progress() >= self.gate:
                    time.sleep(0.1)
                    continue
                msgs = []
                for m in self.c.consume(100, 0.5):
                    if m.error() is None:
                        msgs.append(m)
                    elif m.error().fatal():
                        raise KafkaException(m.error())
                    else:
                        self._note("consume", m.error())
                if not msgs:
                    if time.monotonic() - last_sync > 2:
                        # A commit that failed on the client may have succeeded.
                        last_sync = time.monotonic()
                        try:
                            self._sync_committed()
                        except KafkaException as e:
                            self._note("committed", e.args[0])
                    continue
                try:
                    self._transaction(msgs)
                except KafkaException as e:
                    self._recover(e)
        except Exception:  # noqa: BLE001 - reported by stop() / the test
            self.crashed.append(traceback.format_exc())
        finally:
            self.finished.set()
            if self.c is not None:
                try:
                    self.c.close()
                except Exception as e:  # noqa: BLE001
                    self._note("close", e)

    def stop(self):
        self._stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "the transform loop did not stop"
        assert not self.crashed, "the transform loop failed:\n%s" % self.crashed[0]

    def where(self):
        """Where the loop's thread is now (the innermost frames)."""
        frame = sys._current_frames().get(self.thread.ident)
        return "".join(traceback.format_stack(frame)[-4:]) if frame else "(not running)"

    def summary(self):
        with self.lock:
            names = {}
            for _t, what, name in self.events:
                names[(what, name)] = names.get((what, name), 0) + 1
            return dict(self.counts), names


def wait_worker(c, w, cond, timeout, what):
    """Waits until cond() holds (or the loop fails); on a timeout, says
    what the loop did and where it is."""
    try:
        wait_until(lambda: w.crashed or cond(), timeout, interval=0.1, what=what)
    except AssertionError as e:
        counts, errors = w.summary()
        raise AssertionError("%s\ntransform loop: %r, errors %r, committed %r; now at:\n%s\n%s"
                             % (e, counts, errors, w.committed, w.where(), c.logs(25))) from None
    assert not w.crashed, "the transform loop failed:\n%s\n%s" % (w.crashed[0], c.logs(25))
