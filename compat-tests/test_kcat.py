"""kcat (librdkafka's command-line client)."""

import json
import shutil
import subprocess

import pytest

from ck_helpers import admin_client, create_topic
from runnel_harness import unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")

pytestmark = [
    pytest.mark.skipif(KCAT is None, reason="kcat not installed (apt-get install kcat)"),
    pytest.mark.timeout(60),
]


def kcat(*args, input=None, timeout=30):
    r = subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout)
    assert r.returncode == 0, "kcat %s failed (%d): %s" % (
        " ".join(args), r.returncode, r.stderr.decode(errors="replace"))
    return r


def test_kcat_metadata_lists_topic(broker):
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("kcat-list"), partitions=3)
    r = kcat("-b", broker.bootstrap, "-L", "-J")
    md = json.loads(r.stdout)
    assert [b["id"] for b in md["brokers"]] == [0]
    assert md["brokers"][0]["name"] == broker.bootstrap
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    parts = topics[topic]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2]
    assert all(p["leader"] == 0 for p in parts)

    text = kcat("-b", broker.bootstrap, "-L", "-t", topic).stdout.decode()
    assert 'topic "%s" with 3 partitions' % topic in text


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_kcat_produce_then_consume(broker, codec):
    topic = create_topic(admin_client(broker.bootstrap), unique_topic("kcat-pc"), partitions=1)
    lines = ["line %d %s" % (i, "y" * (i % 30)) for i in range(500)]
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-p", "0", "-z", codec,
         input=("\n".join(lines) + "\n").encode())
    r = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
             "-f", "%o %s\n")
    out = r.stdout.decode().splitlines()
    assert out == ["%d %s" % (i, line) for i, line in enumerate(lines)]


def test_kcat_keys_and_auto_create(broker):
    # Producing to a topic that does not exist relies on auto.create.topics.enable.
    topic = unique_topic("kcat-auto")
    data = "".join("k%d:v%d\n" % (i, i) for i in range(100)).encode()
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K", ":", input=data)
    r = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
             "-f", "%k=%s\n")
    assert r.stdout.decode().splitlines() == ["k%d=v%d" % (i, i) for i in range(100)]
