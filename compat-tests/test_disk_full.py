"""Disk full: on a small, size-limited file system (tmpfs with size=), appends
are refused with KAFKA_STORAGE_ERROR once free space falls below the broker's
reserve (runnel.log.dir.min.free.bytes), while fetches and metadata keep being
served; once space is freed, writes succeed again and nothing acknowledged is
lost.  Needs root (or passwordless sudo) to mount the tmpfs; skipped otherwise."""

import os
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import kafka_wire as kw
from ck_helpers import admin_client, create_topic
from runnel_harness import Broker, unique_topic

pytestmark = pytest.mark.timeout(240)

FS_MB = 800
# Free space left once the filler file is written: the broker's default
# reserve (256 MiB) plus ~60 MiB to fill with records.
LEFT_MB = 320
KAFKA_STORAGE_ERROR = 56


def _sudo():
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


@pytest.fixture
def small_fs():
    mnt = tempfile.mkdtemp(prefix="runnel-diskfull-")
    r = subprocess.run(_sudo() + ["mount", "-t", "tmpfs", "-o", "size=%dm" % FS_MB, "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
    try:
        yield mnt
    finally:
        subprocess.run(_sudo() + ["umount", "-l", mnt], capture_output=True)
        os.rmdir(mnt)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def raw_produce(broker, topic, value, acks=1):
    """One Produce v3 with acks=1; returns (error_code, base_offset)."""
    now = int(time.time() * 1000)
    batch = kw.encode_record_batch([(None, value, (), now)], base_timestamp=now)
    with kw.KafkaConn.to(broker.bootstrap) as conn:
        r = conn.request(kw.API_PRODUCE, 3, kw.produce_v3_body(topic, 0, batch, acks=acks))
        topics, _ = kw.parse_produce_v3(r)
    p = topics[0]["partitions"][0]
    return p["error_code"], p["base_offset"]


def test_disk_full_refuses_appends_serves_reads_and_recovers(small_fs):
    workdir = os.path.join(small_fs, "broker")
    b = Broker(workdir=workdir)
    b.start()
    filler = os.path.join(small_fs, "filler")
    try:
        topic = create_topic(admin_client(b.bootstrap), unique_topic("diskfull"), partitions=1)
        with open(filler, "wb") as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(max(0, free_bytes(small_fs) // (1 << 20) - LEFT_MB)):
                f.write(chunk)

        acked = []
        failed = {}

        def on_delivery(err, msg):
            if err is None:
                acked.append(msg.offset())
            else:
                failed[err.name()] = failed.get(err.name(), 0) + 1

        # No retries: each refused batch reports the broker's error itself.
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5,
                      "retries": 0, "enable.idempotence": False,
                      "message.timeout.ms": 20000})
        value = os.urandom(10_000)
        deadline = time.time() + 90
        sent = 0
        while time.time() < deadline and not failed and sent < 20_000:
            for _ in range(200):
                p.produce(topic, value, partition=0, on_delivery=on_delivery)
                sent += 1
            p.flush(20)
        assert failed, "the file system never filled (%d sent, %d MB free)" % (
            sent, free_bytes(small_fs) >> 20)
        assert set(failed) == {"KAFKA_STORAGE_ERROR"}, failed
        assert acked, "nothing was acknowledged before the disk filled"

        # Raw produce: the partition's error code is KAFKA_STORAGE_ERROR.
        code, _ = raw_produce(b, topic, b"refused")
        assert code == KAFKA_STORAGE_ERROR
        assert b.is_running(), b.log_tail()
        assert "appends refused" in open(b.log_path).read()

        # Reads and metadata still served while full.
        md = admin_client(b.bootstrap).list_topics(timeout=10)
        assert topic in md.topics
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique_topic("g"),
                      "enable.auto.commit": False, "fetch.max.bytes": 4 << 20})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            got = []
            end = time.time() + 60
            while time.time() < end and len(got) < len(acked):
                for m in c.consume(500, 2):
                    if m.error() is None:
                        got.append(m.offset())
            assert sorted(got)[:len(acked)] == sorted(acked), "acknowledged records missing"
        finally:
            c.close()

        # Space freed: writes come back by themselves.
        os.remove(filler)
        code = None
        end = time.time() + 30
        while time.time() < end:
            code, offset = raw_produce(b, topic, b"after-recovery")
            if code == 0:
                break
            time.sleep(0.5)
        assert code == 0, "writes did not resume after space was freed:\n" + b.log_tail(30)
        assert b.is_running()

        # Nothing acknowledged was lost, before or after.
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique_topic("g"),
                      "enable.auto.commit": False})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            seen = set()
            end = time.time() + 60
            while time.time() < end and offset not in seen:
                for m in c.consume(500, 2):
                    if m.error() is None:
                        seen.add(m.offset())
            assert set(acked) <= seen and offset in seen
        finally:
            c.close()
    finally:
        if os.path.exists(filler):
            os.remove(filler)
        b.stop(expect_clean=False)
        b.cleanup()
