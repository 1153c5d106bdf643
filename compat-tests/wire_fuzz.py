#!/usr/bin/env python3
"""End-to-end wire fuzzer for the real Runnel binary.

1. Starts a broker of its own (runnel_harness.Broker: own port, own data dir,
   a metrics listener to count what the broker decoded).
2. Records a corpus: real clients (confluent-kafka AdminClient, plain /
   idempotent / transactional producers, group consumers; kafka-python's
   admin, producers and consumer) talk to the broker through a small recording
   TCP proxy.  The broker advertises the proxy's address while recording, so
   every connection goes through it.  Each client->broker frame is kept
   (<workdir>/corpus/frames.bin).  Hand-built seeds are added: every
   advertised (api key, version) with a borrowed body, kafka_wire's requests,
   APIs no client sent, record batch oddities (a gzip bomb, garbage under each
   codec, a huge record count), and compat-tests/fuzz_corpus/*.bin.
3. Stops the broker (it must exit 0) and restarts it with its own advertised
   address, then fuzzes it from several worker processes: frames are mutated
   (bit flips, byte sets, boundary integers over length fields, truncation,
   splices, header swaps, wrong versions / api keys, repeated chunks, bogus
   tagged fields, record batch fields with the CRC fixed up so the record
   decoder is reached, lying size prefixes) and pipelined, many per
   connection, without waiting for answers; whatever comes back is read and
   dropped; when the broker closes a connection the worker opens another.
4. Every ~2 s the main process checks the broker: process alive ("crash"), a
   raw ApiVersions on a fresh connection answered within 5 s ("hang"), no
   panic in its log ("panic": tokio catches a panicking request task, so the
   process lives on); every ~30 s a well-behaved confluent-kafka producer
   produces a record and a consumer reads it back ("failed health check").
   It samples VmRSS (over --max-rss-mb, default 2048, fails a health check)
   and reports VmHWM.  After the run the same checks once
   more, and a graceful stop must exit 0 within 20 s.

An input is "tried" when all of its bytes were sent.  The summary line reads

    wire-fuzz: inputs=... seconds=... rate=.../s crashes=0 hangs=0
        failed_health_checks=0 panics=0 peak_rss_mb=...   (one line)

and the exit status is non-zero if anything failed.  The details line adds
broker_requests_decoded: requests the broker itself counted as reaching a body
decoder (its kafka_network_requests_total), a check on the inputs figure.

On a failure the workers dump their last frames (a ring of --ring frames
each) to <workdir>/crash/worker<i>.frames (+ .txt, readable).
`--replay FILE [--minimize]` sends such a dump to a fresh broker connection
by connection, stops at the first connection after which the broker is dead,
stuck or over 1 GiB, and with --minimize reduces that to the fewest
connections and frames that still fail.

Usage:
    python compat-tests/wire_fuzz.py --seconds 300 [--inputs 1000000] [--workers 2]
        [--seed N] [--corpus DIR] [--reuse-corpus] [--binary PATH] [--keep]
        [--exclude-api 19,37]          # triage only: look past a known bug
    python compat-tests/wire_fuzz.py --replay WORKDIR/crash/worker0.frames --minimize

Importable: run(seconds=..., ...) returns the summary as a dict
(test_wire_fuzz.py runs a short slice).
"""

import argparse
import collections
import gzip
import json
import mmap
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import kafka_wire as kw  # noqa: E402
from runnel_harness import Broker, BrokerError, free_port  # noqa: E402

# ----------------------------------------------------------------------------
# Protocol facts the mutator uses
# ----------------------------------------------------------------------------

# First flexible (tagged fields, request header v2) version per API key.
FLEX_FIRST = {
    0: 9, 1: 12, 2: 6, 3: 9, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4, 14: 4, 15: 5,
    16: 3, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4, 24: 3, 25: 3, 26: 3, 27: 1,
    28: 3, 29: 2, 30: 2, 31: 2, 32: 4, 33: 2, 34: 2, 35: 2, 36: 2, 37: 2, 42: 2,
    43: 2, 44: 1, 45: 0, 46: 0, 48: 1, 49: 1, 50: 0, 51: 0, 60: 0, 61: 0, 65: 0,
    66: 0, 75: 0, 68: 0, 69: 0, 74: 0, 76: 0, 77: 0, 78: 0, 79: 0, 84: 0, 85: 0, 86: 0,
    90: 0, 91: 0, 92: 0,
}

API_PRODUCE = 0

INT16S = (0, 1, -1, 2, 0x7FFF, -0x8000, 0x7FFE, 0xFF, 0x100, -2)
INT32S = (0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0x7FFFFFFE, 0xFFFF, 0x10000, 0x7FFF,
          0x8000, 1000000, 0x40000000, 100 * 1024 * 1024)
INT64S = (0, 1, -1, 0x7FFFFFFFFFFFFFFF, -0x8000000000000000, 1 << 32, 0xFFFFFFFF,
          -(1 << 32))
VARINTS = (b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80\x01", b"\xff\xff\x03",
           b"\xff\xff\xff\xff\x07", b"\xff\xff\xff\xff\x0f",
           b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
           b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",   # over-long
           b"\xff" * 12, b"\x81", b"\xfe\xff\xff\xff\x0f")
BYTES_OF_INTEREST = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xFE, 0x20, 0x40, 0x03)

# Extra seeds kept in the repository (same format as a saved corpus: u32 size +
# payload per frame), e.g. reproducers of fixed bugs.
SEED_DIR = HERE / "fuzz_corpus"

MAX_MUTATED = 256 * 1024        # a mutated payload never grows past this
CRC_FIX_LIMIT = 8 * 1024        # pure-Python CRC-32C: only small batches are re-signed

# ----------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------


def save_corpus(path, frames):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for fr in frames:
            f.write(struct.pack(">I", len(fr)))
            f.write(fr)


def load_corpus(path):
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        out.append(data[pos:pos + n])
        pos += n
    return out


def corpus_stats(frames):
    by = collections.Counter()
    for fr in frames:
        if len(fr) >= 4:
            k, v = struct.unpack_from(">hh", fr, 0)
            by["%d/%d" % (k, v)] += 1
    return dict(sorted(by.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("/"))))


def _printable(b):
    return all(32 <= c < 127 for c in b)


class Seed:
    """A corpus frame (payload without its size prefix) plus what the mutator
    guessed about its layout."""

    __slots__ = ("payload", "key", "ver", "body_start", "flexible", "len_fields", "batches")

    def __init__(self, payload):
        self.payload = bytes(payload)
        p = self.payload
        self.key, self.ver = struct.unpack_from(">hh", p, 0) if len(p) >= 4 else (-1, -1)
        self.flexible = self.ver >= FLEX_FIRST.get(self.key, 1 << 20)
        start = 10
        if len(p) >= 10:
            (clen,) = struct.unpack_from(">h", p, 8)
            start = 10 + max(clen, 0)
        if self.flexible:
            start += 1
        self.body_start = min(start, len(p))
        self.len_fields = self._find_len_fields()
        self.batches = self._find_batches() if self.key == API_PRODUCE else []

    def _find_len_fields(self):
        """Offsets that look like a length or count: (offset, width) with width
        2 (STRING), 4 (ARRAY / BYTES) or 0 (an unsigned varint, compact)."""
        p, out = self.payload, []
        n = len(p)
        for i in range(8, max(8, n - 1)):
            if i + 2 <= n:
                (l16,) = struct.unpack_from(">h", p, i)
                if 1 <= l16 <= 249 and i + 2 + l16 <= n and _printable(p[i + 2:i + 2 + l16]):
                    out.append((i, 2))
            if i + 4 <= n:
                (l32,) = struct.unpack_from(">i", p, i)
                if 1 <= l32 <= 100000 and i + 4 + l32 <= n and p[i] == 0 and p[i + 1] == 0:
                    out.append((i, 4))
            c = p[i]
            if self.flexible and 2 <= c <= 120 and i + c <= n and _printable(p[i + 1:i + c]):
                out.append((i, 0))
            if len(out) > 400:
                break
        return out

    def _find_batches(self):
        """Magic-2 record batches inside a Produce request whose CRC checks out:
        [(offset, batch_length)]."""
        p, out = self.payload, []
        n = len(p)
        i = self.body_start
        while i + 61 <= n:
            if p[i + 16] == 2:
                (blen,) = struct.unpack_from(">i", p, i + 8)
                if 49 <= blen and i + 12 + blen <= n:
                    (crc,) = struct.unpack_from(">I", p, i + 17)
                    if blen <= 65536 and kw.crc32c(p[i + 21:i + 12 + blen]) == crc:
                        out.append((i, blen))
                        i += 12 + blen
                        continue
            i += 1
        return out


def build_seeds(frames, max_per_kind=60, rng=None):
    """Dedupe, cap frames per (key, version), wrap in Seed objects."""
    rng = rng or random.Random(0)
    seen, kinds = set(), collections.defaultdict(list)
    for fr in frames:
        if len(fr) < 8 or fr in seen:
            continue
        seen.add(fr)
        k, v = struct.unpack_from(">hh", fr, 0)
        kinds[(k, v)].append(fr)
    seeds = []
    for kind in sorted(kinds):
        lst = kinds[kind]
        if len(lst) > max_per_kind:
            lst = rng.sample(lst, max_per_kind)
        seeds.extend(Seed(fr) for fr in lst)
    return seeds


# ----------------------------------------------------------------------------
# Mutator
# ----------------------------------------------------------------------------


class Mutator:
    def __init__(self, seeds, rng):
        self.seeds = seeds
        self.rng = rng
        by_kind = collections.defaultdict(list)
        for s in seeds:
            by_kind[(s.key, s.ver)].append(s)
        self.kinds = list(by_kind.values())
        self.produce = [s for s in seeds if s.batches]
        self.flexible = [s for s in seeds if s.flexible]
        ops = [
            (14, self.op_bitflip), (6, self.op_byte), (16, self.op_len_field),
            (8, self.op_int_anywhere), (6, self.op_truncate), (5, self.op_splice),
            (5, self.op_header_swap), (6, self.op_version), (2, self.op_api_key),
            (4, self.op_repeat), (4, self.op_delete), (3, self.op_insert),
            (2, self.op_client_id), (4, self.op_tagged), (2, self.op_garbage_body),
        ]
        self.ops = [f for w, f in ops for _ in range(w)]

    # -- choosing
    def pick(self):
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(self.rng.choice(self.kinds))
        if r < 0.60 and self.produce:
            return self.rng.choice(self.produce)
        return self.rng.choice(self.seeds)

    def pos(self, p, s):
        """An offset, mostly inside the body."""
        n = len(p)
        if n == 0:
            return 0
        if self.rng.random() < 0.85 and s.body_start < n:
            return self.rng.randrange(s.body_start, n)
        return self.rng.randrange(n)

    def mutate(self):
        """-> (payload bytes, ops tuple)"""
        rng = self.rng
        s = self.pick()
        p = bytearray(s.payload)
        if rng.random() < 0.03:
            return bytes(p), ("none",)
        ops = []
        if s.batches and rng.random() < 0.35:
            ops.append(self.op_batch(p, s))
        else:
            n = 1 + (rng.random() < 0.35) + (rng.random() < 0.12)
            for _ in range(n):
                ops.append(rng.choice(self.ops)(p, s))
        if len(p) > MAX_MUTATED:
            del p[MAX_MUTATED:]
        return bytes(p), tuple(ops)

    # -- integer writers
    def int_bytes(self, width):
        rng = self.rng
        if width == 1:
            return bytes([rng.choice(BYTES_OF_INTEREST)])
        if width == 2:
            return struct.pack(">H", rng.choice(INT16S) & 0xFFFF)
        if width == 4:
            v = rng.choice(INT32S) if rng.random() < 0.8 else rng.getrandbits(32)
            return struct.pack(">I", v & 0xFFFFFFFF)
        if width == 8:
            return struct.pack(">Q", rng.choice(INT64S) & 0xFFFFFFFFFFFFFFFF)
        return rng.choice(VARINTS)

    # -- operators (each mutates p in place and returns a short description)
    def op_bitflip(self, p, s):
        if not p:
            return "bitflip-empty"
        k = self.rng.choice((1, 1, 1, 2, 3, 8))
        for _ in range(k):
            i = self.pos(p, s)
            if i < len(p):
                p[i] ^= 1 << self.rng.randrange(8)
        return "bitflip%d" % k

    def op_byte(self, p, s):
        if not p:
            return "byte-empty"
        i = self.pos(p, s)
        if i < len(p):
            p[i] = self.rng.choice(BYTES_OF_INTEREST) if self.rng.random() < 0.7 \
                else self.rng.randrange(256)
        return "byte@%d" % i

    def op_len_field(self, p, s):
        """A boundary integer over something that looks like a length or count."""
        if not s.len_fields:
            return self.op_int_anywhere(p, s)
        off, width = self.rng.choice(s.len_fields)
        if off >= len(p):
            return "len-gone"
        if width == 0:
            b = self.int_bytes(0)
            p[off:off + 1] = b
            return "lenvar@%d=%s" % (off, b.hex())
        if self.rng.random() < 0.25:
            # just off by a little: lengths that overrun or underrun by a few bytes
            fmt = ">h" if width == 2 else ">i"
            (v,) = struct.unpack_from(fmt, p, off) if off + width <= len(p) else (0,)
            v += self.rng.choice((-2, -1, 1, 2, 7, 1000))
            mask = 0xFFFF if width == 2 else 0xFFFFFFFF
            b = struct.pack(">H" if width == 2 else ">I", v & mask)
        else:
            b = self.int_bytes(width)
        p[off:off + width] = b
        return "len%d@%d=%s" % (width, off, b.hex())

    def op_int_anywhere(self, p, s):
        width = self.rng.choice((1, 2, 4, 4, 8, 0))
        b = self.int_bytes(width)
        i = self.pos(p, s)
        if self.rng.random() < 0.25:
            p[i:i] = b
            return "ins-int@%d=%s" % (i, b.hex())
        p[i:i + max(1, width)] = b
        return "int@%d=%s" % (i, b.hex())

    def op_truncate(self, p, s):
        n = len(p)
        if n <= 1:
            return "trunc-none"
        if self.rng.random() < 0.15:
            cut = self.rng.randrange(0, min(n, 12))
        else:
            cut = self.rng.randrange(min(8, n - 1), n)
        del p[cut:]
        return "trunc@%d" % cut

    def op_splice(self, p, s):
        o = self.rng.choice(self.seeds).payload
        a = self.rng.randrange(len(p) + 1)
        b = self.rng.randrange(len(o) + 1)
        p[a:] = o[b:]
        return "splice@%d+%d" % (a, b)

    def op_header_swap(self, p, s):
        """This header with another frame's body (or the reverse)."""
        o = self.rng.choice(self.seeds)
        if self.rng.random() < 0.5:
            p[s.body_start:] = o.payload[o.body_start:]
            return "body-of-%d/%d" % (o.key, o.ver)
        p[:s.body_start] = o.payload[:o.body_start]
        return "header-of-%d/%d" % (o.key, o.ver)

    def op_version(self, p, s):
        if len(p) < 4:
            return "ver-short"
        r = self.rng.random()
        if r < 0.6:
            v = s.ver + self.rng.choice((-2, -1, 1, 2))
        elif r < 0.9:
            v = self.rng.randrange(0, 18)
        else:
            v = self.rng.choice((-1, 0x7FFF, -0x8000, 100))
        p[2:4] = struct.pack(">H", v & 0xFFFF)
        return "ver=%d" % v

    def op_api_key(self, p, s):
        if len(p) < 2:
            return "key-short"
        k = self.rng.randrange(0, 80) if self.rng.random() < 0.8 else \
            self.rng.choice((-1, 0x7FFF, -0x8000, 1000))
        p[0:2] = struct.pack(">H", k & 0xFFFF)
        return "key=%d" % k

    def op_repeat(self, p, s):
        n = len(p)
        if n == 0:
            return "rep-empty"
        i = self.pos(p, s)
        j = min(n, i + self.rng.randrange(1, 65))
        chunk = bytes(p[i:j]) or b"\x00"
        times = self.rng.choice((2, 3, 4, 16, 100, 1000))
        times = max(1, min(times, (MAX_MUTATED - n) // len(chunk)))
        p[j:j] = chunk * times
        return "repeat[%d:%d]x%d" % (i, j, times)

    def op_delete(self, p, s):
        if len(p) <= 8:
            return "del-none"
        i = self.pos(p, s)
        j = min(len(p), i + self.rng.randrange(1, 33))
        del p[i:j]
        return "del[%d:%d]" % (i, j)

    def op_insert(self, p, s):
        i = self.pos(p, s)
        b = self.rng.randbytes(self.rng.randrange(1, 33))
        p[i:i] = b
        return "insert@%d+%d" % (i, len(b))

    def op_client_id(self, p, s):
        if len(p) < 10:
            return "cid-short"
        v = self.rng.choice((-1, 0, 0x7FFF, -2, -0x8000, len(p), len(p) - 9, 1))
        p[8:10] = struct.pack(">H", v & 0xFFFF)
        return "client-id-len=%d" % v

    def op_tagged(self, p, s):
        """Bogus tagged fields: at the end of the body (top level) or anywhere."""
        rng = self.rng
        count = rng.choice((b"\x01", b"\x02", b"\x7f", b"\xff\xff\xff\xff\x0f"))
        tag = rng.choice((b"\x00", b"\x01", b"\x7f", b"\xff\xff\xff\xff\x0f"))
        size = rng.choice((b"\x00", b"\x01", b"\x10", b"\xff\xff\xff\xff\x0f"))
        data = rng.randbytes(rng.randrange(0, 20))
        blob = count + tag + size + data
        if rng.random() < 0.6 and p:
            p[-1:] = blob
            return "tagged-end"
        i = self.pos(p, s)
        p[i:i + 1] = blob
        return "tagged@%d" % i

    def op_garbage_body(self, p, s):
        p[s.body_start:] = self.rng.randbytes(self.rng.randrange(0, 200))
        return "garbage-body"

    def op_batch(self, p, s):
        """Mutate a record batch field or its records, then (usually) fix the CRC
        so the broker goes past the checksum into decompression / record parsing."""
        rng = self.rng
        off, blen = rng.choice(s.batches)
        end = off + 12 + blen
        r = rng.random()
        if r < 0.18:
            v = rng.choice((0, 1, -1, 2, 0x7FFFFFFF, -0x80000000, 1000, 0x10000))
            struct.pack_into(">I", p, off + 57, v & 0xFFFFFFFF)
            what = "count=%d" % v
        elif r < 0.32:
            # codec bits (gzip 1, snappy 2, lz4 3, zstd 4, 5-7 invalid), txn/control bits
            a = rng.choice((0, 1, 2, 3, 4, 5, 7, 0x10, 0x20, 0x30, 0x08, 0xFFFF,
                            rng.randrange(65536)))
            struct.pack_into(">H", p, off + 21, a)
            what = "attrs=%#x" % a
        elif r < 0.40:
            v = rng.choice((0, -1, 1, 0x7FFFFFFF, -0x80000000, 1000, 0xFFFF))
            struct.pack_into(">I", p, off + 23, v & 0xFFFFFFFF)   # lastOffsetDelta
            what = "last-delta=%d" % v
        elif r < 0.48:
            v = rng.choice(INT64S)
            field = rng.choice((25, 33, 0))   # firstTimestamp, maxTimestamp, baseOffset
            struct.pack_into(">Q", p, off + field, v & 0xFFFFFFFFFFFFFFFF)
            what = "i64@%d=%d" % (field, v)
        elif r < 0.54:
            # producer id / epoch / base sequence
            field, fmt, vals = rng.choice(((41, ">Q", INT64S), (49, ">H", INT16S),
                                           (51, ">I", INT32S)))
            mask = {">Q": 0xFFFFFFFFFFFFFFFF, ">H": 0xFFFF, ">I": 0xFFFFFFFF}[fmt]
            v = rng.choice(vals)
            struct.pack_into(fmt, p, off + field, v & mask)
            what = "pid-field@%d=%d" % (field, v)
        elif r < 0.58:
            p[off + 16] = rng.choice((0, 1, 3, 0xFF))
            what = "magic=%d" % p[off + 16]
        elif r < 0.64:
            v = rng.choice((0, -1, 1, 48, 49, blen - 1, blen + 1, 0x7FFFFFFF))
            struct.pack_into(">I", p, off + 8, v & 0xFFFFFFFF)
            what = "batch-len=%d" % v
        else:
            # inside the records (or the compressed stream)
            rs = off + 61
            if rs >= end:
                return "batch-empty"
            k = rng.random()
            i = rng.randrange(rs, end)
            if k < 0.4:
                p[i] ^= 1 << rng.randrange(8)
                what = "rec-bitflip@%d" % (i - off)
            elif k < 0.75:
                b = rng.choice(VARINTS)
                p[i:i + 1] = b
                end += len(b) - 1
                what = "rec-varint@%d=%s" % (i - off, b.hex())
            elif k < 0.9:
                j = rng.randrange(i, end + 1)
                del p[i:j]
                end -= j - i
                what = "rec-del[%d:%d]" % (i - off, j - off)
            else:
                b = rng.randbytes(rng.randrange(1, 16))
                p[i:i] = b
                end += len(b)
                what = "rec-ins@%d+%d" % (i - off, len(b))
            # keep the batch length consistent with what is now there
            struct.pack_into(">I", p, off + 8, (end - off - 12) & 0xFFFFFFFF)
        if rng.random() < 0.85 and end - (off + 21) <= CRC_FIX_LIMIT and end <= len(p):
            (cur_len,) = struct.unpack_from(">i", p, off + 8)
            crc_end = off + 12 + cur_len if 9 <= cur_len and off + 12 + cur_len <= len(p) else end
            struct.pack_into(">I", p, off + 17, kw.crc32c(bytes(p[off + 21:crc_end])))
            what += "+crc"
        return "batch:" + what


def lying_prefix(rng, n):
    """A size prefix that does not match the n payload bytes that follow."""
    choice = rng.randrange(12)
    if choice == 0:
        return n + 1
    if choice == 1:
        return n + rng.randrange(2, 5000)
    if choice == 2:
        return max(0, n - 1)
    if choice == 3:
        return rng.randrange(0, max(1, n))
    if choice == 4:
        return rng.choice((0, 1, 4, 7, 8))
    if choice == 5:
        return -1
    if choice == 6:
        return rng.choice((-0x80000000, -8, -n))
    if choice == 7:
        return 0x7FFFFFFF
    if choice == 8:
        return 100 * 1024 * 1024            # the default socket.request.max.bytes
    if choice == 9:
        return 100 * 1024 * 1024 + 1        # one over it
    if choice == 10:
        return rng.choice((1 << 20, 50 << 20, 0x10000))
    return rng.getrandbits(32) - (1 << 31)


# ----------------------------------------------------------------------------
# Worker: mutate and send, many frames per connection
# ----------------------------------------------------------------------------

# Shared stats file (mmap): a control word, then NSTAT int64 per worker.
CTRL_RUN, CTRL_STOP, CTRL_DUMP = 0, 1, 2
STATS = ("inputs", "bytes", "conns", "closed_by_broker", "refused", "send_stalls",
         "rx_bytes", "bursts", "lying", "alive")
NSTAT = len(STATS)


def _stats_off(idx, field):
    return 8 + (idx * NSTAT + STATS.index(field)) * 8


class SharedStats:
    def __init__(self, path, workers, create=False):
        size = 8 + workers * NSTAT * 8
        if create:
            with open(path, "wb") as f:
                f.write(b"\x00" * size)
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), size)
        self.workers = workers

    def control(self):
        return struct.unpack_from("<q", self.m, 0)[0]

    def set_control(self, v):
        struct.pack_into("<q", self.m, 0, v)

    def get(self, idx, field):
        return struct.unpack_from("<q", self.m, _stats_off(idx, field))[0]

    def put(self, idx, values):
        struct.pack_into("<%dq" % NSTAT, self.m, 8 + idx * NSTAT * 8, *values)

    def total(self, field):
        return sum(self.get(i, field) for i in range(self.workers))

    def close(self):
        try:
            self.m.close()
            self.f.close()
        except (OSError, ValueError):
            pass


def _rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def worker_main(idx, port, corpus_path, stats_path, workers, seed, seconds, quota, ring_size,
                dump_dir, exclude_apis=()):
    """One fuzzing process.  Runs until the control word says stop, the time is
    up, or `quota` inputs were sent."""
    rng = random.Random(seed * 1000003 + idx)
    seeds = build_seeds(load_corpus(corpus_path), rng=random.Random(seed))
    # triage only (--exclude-api): no frame goes out under these api keys
    excluded = {struct.pack(">h", k) for k in exclude_apis}
    mut = Mutator(seeds, rng)
    stats = SharedStats(stats_path, workers)
    st = [0] * NSTAT
    I_IN, I_BYTES, I_CONNS, I_CLOSED, I_REF, I_STALL, I_RX, I_BURSTS, I_LYING, I_ALIVE = \
        range(NSTAT)
    st[I_ALIVE] = 1
    ring = collections.deque(maxlen=ring_size)
    deadline = time.monotonic() + seconds
    addr = ("127.0.0.1", port)
    sock = None
    lport = 0
    conn_frames = 0
    conn_started = 0.0
    conn_seq = 0
    refused_streak = 0

    def drop(rst):
        nonlocal sock
        if sock is not None:
            if rst:
                _rst_close(sock)
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass
        sock = None

    try:
        while True:
            ctrl = stats.control()
            if ctrl != CTRL_RUN:
                break
            now = time.monotonic()
            if now >= deadline or (quota and st[I_IN] >= quota):
                break
            if sock is None:
                try:
                    sock = socket.create_connection(addr, timeout=2.0)
                except OSError:
                    st[I_REF] += 1
                    refused_streak += 1
                    stats.put(idx, st)
                    time.sleep(min(0.5, 0.01 * refused_streak))
                    continue
                refused_streak = 0
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                lport = sock.getsockname()[1]
                conn_seq += 1
                conn_frames = 0
                conn_started = now
                st[I_CONNS] += 1
            # one burst: k frames, or fewer if a lying prefix ends it
            r = rng.random()
            k = 1 if r < 0.2 else (rng.randrange(2, 9) if r < 0.7 else rng.randrange(9, 33))
            if quota:
                k = max(1, min(k, quota - st[I_IN]))
            parts, terminal = [], False
            for _ in range(k):
                payload, ops = mut.mutate()
                while excluded and payload[:2] in excluded:
                    payload, ops = mut.mutate()
                n = len(payload)
                if rng.random() < 0.07:
                    size = lying_prefix(rng, n)
                    terminal = True
                    ops = ops + ("prefix=%d/len=%d" % (size, n),)
                else:
                    size = n
                wire = struct.pack(">i", size) + payload
                parts.append(wire)
                ring.append((conn_seq, lport, wire, ops))
                if terminal:
                    break
            data = b"".join(parts)
            try:
                sock.settimeout(2.0)
                sock.sendall(data)
            except socket.timeout:
                # the broker stopped reading (a full pipeline): drop the connection
                st[I_STALL] += 1
                drop(rst=True)
                stats.put(idx, st)
                continue
            except OSError:
                st[I_CLOSED] += 1
                drop(rst=True)
                stats.put(idx, st)
                continue
            st[I_IN] += len(parts)
            st[I_BYTES] += len(data)
            st[I_BURSTS] += 1
            conn_frames += len(parts)
            if terminal:
                st[I_LYING] += 1
                drop(rst=rng.random() < 0.5)
                stats.put(idx, st)
                continue
            # read and drop whatever came back; notice a close
            closed = False
            wait = 0.002
            sock.setblocking(False)
            try:
                while True:
                    rd, _, _ = select.select((sock,), (), (), wait)
                    if not rd:
                        break
                    try:
                        chunk = sock.recv(1 << 18)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        closed = True
                        break
                    if not chunk:
                        closed = True
                        break
                    st[I_RX] += len(chunk)
                    wait = 0.0005
            finally:
                if sock is not None and not closed:
                    sock.setblocking(True)
            if closed:
                st[I_CLOSED] += 1
                drop(rst=False)
            elif conn_frames >= 400 or time.monotonic() - conn_started > 2.0:
                drop(rst=rng.random() < 0.5)
            stats.put(idx, st)
    finally:
        if sock is not None:
            _rst_close(sock)
        st[I_ALIVE] = 0
        stats.put(idx, st)
        if stats.control() == CTRL_DUMP and dump_dir:
            dump_ring(Path(dump_dir), idx, ring)
        stats.close()


def dump_ring(dump_dir, idx, ring):
    """worker<i>.frames: per frame u32 conn_seq, u32 local port, u32 length, wire
    bytes (size prefix included, as sent); worker<i>.txt: the same, readable."""
    dump_dir.mkdir(parents=True, exist_ok=True)
    with open(dump_dir / ("worker%d.frames" % idx), "wb") as fb, \
            open(dump_dir / ("worker%d.txt" % idx), "w") as ft:
        for seq, lport, wire, ops in ring:
            fb.write(struct.pack(">III", seq, lport, len(wire)))
            fb.write(wire)
            ft.write("conn=%d port=%d len=%d ops=%s\n  %s\n"
                     % (seq, lport, len(wire), ",".join(ops), wire[:4096].hex()))


def load_dump(path):
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        seq, lport, n = struct.unpack_from(">III", data, pos)
        pos += 12
        out.append((seq, lport, data[pos:pos + n]))
        pos += n
    return out


# ----------------------------------------------------------------------------
# Recording proxy and clients
# ----------------------------------------------------------------------------


class RecordingProxy:
    """127.0.0.1 TCP proxy to the broker that keeps every client->broker frame."""

    MAX_FRAME = 64 * 1024 * 1024

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.target = None
        self.frames = []
        self.lock = threading.Lock()
        self.socks = []
        self.closed = False
        self.threads = []

    def start(self, target_port):
        self.target = ("127.0.0.1", target_port)
        t = threading.Thread(target=self._accept_loop, name="rec-proxy", daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, b):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.socks += [c, b]
            for fn, a1, a2 in ((self._c2b, c, b), (self._b2c, b, c)):
                t = threading.Thread(target=fn, args=(a1, a2), daemon=True)
                t.start()

    def _c2b(self, c, b):
        buf = bytearray()
        recording = True
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                b.sendall(data)
                if not recording:
                    continue
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack_from(">i", buf, 0)
                    if n < 0 or n > self.MAX_FRAME:
                        recording = False
                        break
                    if len(buf) < 4 + n:
                        break
                    fr = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    with self.lock:
                        self.frames.append(fr)
        except OSError:
            pass
        finally:
            for s, how in ((b, socket.SHUT_WR),):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def _b2c(self, b, c):
        try:
            while True:
                data = b.recv(65536)
                if not data:
                    break
                c.sendall(data)
        except OSError:
            pass
        finally:
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def _step(log, name, fn):
    t0 = time.monotonic()
    try:
        fn()
        log("  record %-34s ok (%.1fs)" % (name, time.monotonic() - t0))
    except Exception as e:  # recording is best effort: any frames are useful
        log("  record %-34s failed: %s: %s" % (name, type(e).__name__, str(e)[:200]))


def drive_clients(bootstrap, tag, log):
    """Real clients doing ordinary things through `bootstrap` (the proxy)."""
    from confluent_kafka import Consumer, Producer, TopicPartition, TopicCollection
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, NewPartitions, NewTopic,
                                       ResourceType)

    t_multi = "fuzz-multi-%s" % tag
    t_compact = "fuzz-compact-%s" % tag
    t_del = "fuzz-del-%s" % tag
    group = "fuzz-group-%s" % tag
    txn_group = "fuzz-txn-group-%s" % tag
    base = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000,
            "client.id": "fuzz-rec-%s" % tag}
    admin = AdminClient(dict(base))

    def create():
        fs = admin.create_topics([
            NewTopic(t_multi, num_partitions=3, replication_factor=1),
            NewTopic(t_compact, num_partitions=1, replication_factor=1,
                     config={"cleanup.policy": "compact", "retention.ms": "3600000"}),
            NewTopic(t_del, num_partitions=2, replication_factor=1)], request_timeout=15)
        for f in fs.values():
            f.result(timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=5)
            if all(t in md.topics for t in (t_multi, t_compact, t_del)):
                return
            time.sleep(0.1)

    def describe():
        admin.list_topics(timeout=10)
        admin.list_topics(topic=t_multi, timeout=10)
        for f in admin.describe_topics(TopicCollection([t_multi, t_compact])).values():
            f.result(timeout=10)
        admin.describe_cluster().result(timeout=10)
        fs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t_multi),
                                     ConfigResource(ResourceType.BROKER, "0")])
        for f in fs.values():
            f.result(timeout=10)

    def alter():
        res = ConfigResource(ResourceType.TOPIC, t_compact, incremental_configs=[
            ConfigEntry("retention.ms", "7200000",
                        incremental_operation=AlterConfigOpType.SET)])
        for f in admin.incremental_alter_configs([res]).values():
            f.result(timeout=10)
        for f in admin.create_partitions([NewPartitions(t_compact, 2)]).values():
            f.result(timeout=10)

    def produce_plain():
        for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
            p = Producer(dict(base, **{"linger.ms": 5, "compression.type": codec,
                                       "enable.idempotence": False, "acks": "all"}))
            for i in range(12):
                p.produce(t_multi, value=(b"v-%s-%d " % (codec.encode(), i)) * 8,
                          key=b"k%d" % (i % 4), partition=i % 3,
                          headers=[("h", b"x"), ("n", None)])
            p.flush(15)
        p = Producer(dict(base, **{"linger.ms": 0, "acks": 0}))
        for i in range(5):
            p.produce(t_compact, value=b"acks0-%d" % i, key=b"c%d" % i)
        p.flush(10)
        p = Producer(dict(base, **{"linger.ms": 0, "acks": 1}))
        p.produce(t_compact, value=None, key=b"tombstone")
        p.produce(t_del, value=b"to-be-deleted")
        p.flush(10)

    def produce_idempotent():
        p = Producer(dict(base, **{"linger.ms": 5, "enable.idempotence": True,
                                   "compression.type": "lz4"}))
        for i in range(30):
            p.produce(t_multi, value=b"idem-%d" % i, key=b"i%d" % (i % 5))
        p.flush(15)

    def transactional():
        txn_id = "fuzz-txn-%s" % tag
        p = Producer(dict(base, **{"transactional.id": txn_id, "linger.ms": 5,
                                   "transaction.timeout.ms": 60000}))
        c = Consumer(dict(base, **{"group.id": txn_group, "enable.auto.commit": False}))
        try:
            p.init_transactions(20)
            p.begin_transaction()
            for i in range(5):
                p.produce(t_multi, value=b"txn-commit-%d" % i, partition=i % 3)
            p.send_offsets_to_transaction([TopicPartition(t_multi, 0, 3)],
                                          c.consumer_group_metadata(), 20)
            p.commit_transaction(20)
            p.begin_transaction()
            p.produce(t_multi, value=b"txn-abort", partition=1)
            p.flush(10)
            p.abort_transaction(20)
        finally:
            c.close()

    def consume_group():
        for iso in ("read_committed", "read_uncommitted"):
            c = Consumer(dict(base, **{
                "group.id": group + "-" + iso, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "isolation.level": iso,
                "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                "fetch.wait.max.ms": 100, "check.crcs": True}))
            try:
                c.subscribe([t_multi, t_compact])
                got, deadline = 0, time.monotonic() + 15
                while got < 20 and time.monotonic() < deadline:
                    for m in c.consume(num_messages=100, timeout=0.5):
                        if not m.error():
                            got += 1
                if got:
                    c.commit(asynchronous=False)
                c.committed([TopicPartition(t_multi, 0)], timeout=10)
                c.get_watermark_offsets(TopicPartition(t_multi, 0), timeout=5, cached=False)
                c.offsets_for_times([TopicPartition(t_multi, 0, int(time.time() * 1000) - 60000)],
                                    timeout=5)
            finally:
                c.close()

    def groups_admin():
        from confluent_kafka import ConsumerGroupTopicPartitions
        g = group + "-read_committed"
        admin.list_consumer_groups().result(timeout=10)
        for f in admin.describe_consumer_groups([g]).values():
            f.result(timeout=10)
        for f in admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)]).values():
            f.result(timeout=10)
        for f in admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
                g, [TopicPartition(t_multi, 0, 1)])]).values():
            f.result(timeout=10)
        for f in admin.delete_consumer_groups([group + "-read_uncommitted"],
                                              request_timeout=10).values():
            f.result(timeout=10)

    def records_admin():
        from confluent_kafka import ElectionType
        from confluent_kafka.admin import OffsetSpec
        for f in admin.list_offsets({TopicPartition(t_multi, 0): OffsetSpec.latest(),
                                     TopicPartition(t_multi, 1): OffsetSpec.earliest()},
                                    request_timeout=10).values():
            f.result(timeout=10)
        for f in admin.delete_records([TopicPartition(t_multi, 2, 1)],
                                      request_timeout=10).values():
            f.result(timeout=10)
        admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(t_multi, 0)]).result(
            timeout=10)

    def delete():
        for f in admin.delete_topics([t_del], operation_timeout=10).values():
            f.result(timeout=15)

    for name, fn in (("ck admin create_topics", create), ("ck admin describe", describe),
                     ("ck admin alter/partitions", alter),
                     ("ck producers (5 codecs, acks 0/1)", produce_plain),
                     ("ck idempotent producer", produce_idempotent),
                     ("ck transactional producer", transactional),
                     ("ck group consumers", consume_group),
                     ("ck admin groups", groups_admin),
                     ("ck admin records/offsets/leaders", records_admin),
                     ("ck admin delete_topics", delete)):
        _step(log, name, fn)

    drive_kafka_python(bootstrap, tag, t_multi, log)


def drive_kafka_python(bootstrap, tag, t_multi, log):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    topic = "fuzz-kp-%s" % tag
    state = {}

    def admin_ops():
        a = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fuzz-kp-admin",
                             request_timeout_ms=10000)
        state["admin"] = a
        a.create_topics([NewTopic(topic, 2, 1)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and topic not in a.list_topics():
            time.sleep(0.2)
        a.describe_topics([topic])
        a.describe_cluster()
        a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])

    def admin_more():
        a = state.get("admin")
        if a is None:
            raise RuntimeError("no admin client")
        for name, call in (("list_groups", lambda: a.list_groups()),
                           ("describe_log_dirs", lambda: a.describe_log_dirs()),
                           ("list_transactions", lambda: a.list_transactions()),
                           ("list_partition_reassignments",
                            lambda: a.list_partition_reassignments())):
            try:
                call()
            except Exception as e:
                log("    kafka-python %s: %s" % (name, str(e)[:120]))

    def producer():
        p = KafkaProducer(bootstrap_servers=bootstrap, client_id="fuzz-kp-producer",
                          compression_type="gzip", acks="all", linger_ms=5,
                          request_timeout_ms=10000, max_block_ms=10000)
        try:
            for i in range(10):
                p.send(topic, value=b"kp-%d" % i, key=b"kk%d" % (i % 3),
                       headers=[("kh", b"kv")])
            p.flush(timeout=15)
        finally:
            p.close(timeout=5)

    def txn_producer():
        p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="fuzz-kp-txn-%s" % tag,
                          request_timeout_ms=10000, max_block_ms=10000)
        try:
            p.init_transactions()
            p.begin_transaction()
            p.send(topic, b"kp-txn")
            p.commit_transaction()
        finally:
            p.close(timeout=5)

    def consumer():
        c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="fuzz-kp-group-%s" % tag,
                          client_id="fuzz-kp-consumer", auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=4000,
                          request_timeout_ms=15000, session_timeout_ms=10000,
                          heartbeat_interval_ms=1000)
        try:
            got = 0
            deadline = time.monotonic() + 12
            while got < 11 and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=500).values():
                    got += len(recs)
            c.commit()
            c.end_offsets([TopicPartition(topic, 0)])
        finally:
            c.close()

    def admin_after():
        from kafka.admin import OffsetSpec
        a = state.get("admin")
        if a is None:
            raise RuntimeError("no admin client")
        tp = TopicPartition(topic, 0)
        for name, call in (
                ("describe_topic_partitions", lambda: a.describe_topic_partitions([topic])),
                ("describe_producers", lambda: a.describe_producers([tp])),
                ("describe_transactions",
                 lambda: a.describe_transactions(["fuzz-kp-txn-%s" % tag])),
                ("describe_groups", lambda: a.describe_groups(["fuzz-kp-group-%s" % tag])),
                ("list_partition_offsets",
                 lambda: a.list_partition_offsets({tp: OffsetSpec.LATEST})),
                ("alter_configs", lambda: a.alter_configs([ConfigResource(
                    ConfigResourceType.TOPIC, topic, configs={"retention.ms": "3600000"})])),
                ("delete_records", lambda: a.delete_records({tp: 1})),
                ("delete_group_offsets",
                 lambda: a.delete_group_offsets("fuzz-kp-group-%s" % tag, [tp])),
                ("delete_groups", lambda: a.delete_groups(["fuzz-kp-group-%s" % tag])),
                ("elect_leaders", lambda: a.elect_leaders(0, [tp]))):
            try:
                call()
            except Exception as e:
                log("    kafka-python %s: %s" % (name, str(e)[:120]))

    def delete():
        a = state.get("admin")
        if a is None:
            raise RuntimeError("no admin client")
        a.delete_topics([topic])
        a.close()

    for name, fn in (("kafka-python admin", admin_ops), ("kafka-python admin (more)", admin_more),
                     ("kafka-python producer", producer),
                     ("kafka-python transactional producer", txn_producer),
                     ("kafka-python group consumer", consumer),
                     ("kafka-python admin (after clients)", admin_after),
                     ("kafka-python delete_topics", delete)):
        _step(log, name, fn)


def record_corpus(broker, proxy, log, timeout=120.0):
    """Drive real clients through the proxy (in a thread, bounded by `timeout`)."""
    tag = "%x" % random.getrandbits(32)
    done = threading.Event()

    def run():
        try:
            drive_clients("127.0.0.1:%d" % proxy.port, tag, log)
        except Exception:
            log("recording aborted:\n" + traceback.format_exc())
        finally:
            done.set()

    t = threading.Thread(target=run, name="recorder", daemon=True)
    t.start()
    if not done.wait(timeout):
        log("recording still running after %.0fs; using the %d frames so far"
            % (timeout, len(proxy.frames)))
    with proxy.lock:
        return list(proxy.frames)


# ----------------------------------------------------------------------------
# Hand-built seeds
# ----------------------------------------------------------------------------


def api_versions(port, timeout=5.0):
    """Raw ApiVersions v0 on a fresh connection -> {key: (min, max)}."""
    with kw.KafkaConn("127.0.0.1", port, timeout=timeout) as conn:
        err, apis = kw.parse_api_versions_v0(conn.request(kw.API_API_VERSIONS, 0,
                                                          timeout=timeout))
        if err != 0:
            raise RuntimeError("ApiVersions error %d" % err)
        return apis


def extra_seeds(recorded, apis, topic):
    """Seeds no client sends: every advertised (key, version) with a body borrowed
    from a recorded frame of the same key, kafka_wire's requests, batch oddities."""
    out = []
    bodies = collections.defaultdict(list)
    for fr in recorded:
        s = Seed(fr)
        bodies[s.key].append((s.ver, s.payload[s.body_start:]))
    corr = 9000
    for key, (lo, hi) in sorted(apis.items()):
        for ver in range(lo, hi + 1):
            corr += 1
            flex = ver >= FLEX_FIRST.get(key, 1 << 20)
            cand = bodies.get(key)
            if cand:
                body = min(cand, key=lambda vb: (abs(vb[0] - ver), len(vb[1])))[1]
            else:
                body = b"\x00" if flex else b""
            out.append(kw.request_header(key, ver, corr, "fuzz-seed", flexible=flex) + body)
            if not cand:
                out.append(kw.request_header(key, ver, corr, None, flexible=flex)
                           + b"\x00" * 16)
    ts = int(time.time() * 1000)
    batch = kw.encode_record_batch([(b"k", b"v" * 50, [("h", b"1")], ts),
                                    (None, None, [], ts + 1)], base_timestamp=ts)
    hdr = lambda key, ver, c: kw.request_header(key, ver, c, "fuzz-seed")  # noqa: E731
    out += [
        hdr(kw.API_API_VERSIONS, 0, 1),
        kw.request_header(kw.API_API_VERSIONS, 3, 2, "fuzz-seed", flexible=True)
        + kw.api_versions_v3_body(),
        hdr(kw.API_METADATA, 1, 3) + kw.metadata_v1_body([topic]),
        hdr(kw.API_METADATA, 1, 4) + kw.metadata_v1_body(None),
        hdr(kw.API_LIST_OFFSETS, 1, 5) + kw.list_offsets_v1_body(topic, 0, -1),
        hdr(kw.API_FETCH, 4, 6) + kw.fetch_v4_body(topic, 0, 0, max_wait_ms=10),
        hdr(kw.API_PRODUCE, 3, 7) + kw.produce_v3_body(topic, 0, batch),
        hdr(11, 5, 8) + kw.join_group_v5_body("fuzz-raw-group", protocols=(
            ("range", kw.consumer_subscription_v0([topic])),)),
        hdr(14, 3, 9) + kw.sync_group_v3_body("fuzz-raw-group", 1, "m", [
            ("m", kw.consumer_assignment_v0({topic: [0]}))]),
        hdr(12, 3, 10) + kw.heartbeat_v3_body("fuzz-raw-group", 1, "m"),
        hdr(13, 1, 11) + kw.leave_group_v1_body("fuzz-raw-group", "m"),
        hdr(8, 2, 12) + kw.offset_commit_v2_body("fuzz-raw-group", -1, "",
                                                  {topic: [(0, 1, "md")]}),
    ]
    # APIs the recorded clients do not send: OffsetForLeaderEpoch v3,
    # DescribeClientQuotas v0, AlterClientQuotas v0 (validate_only), AlterConfigs v1.
    out += [
        hdr(33, 1, 44) + kw.array([kw.i8(2) + kw.string(topic) + kw.array([
            kw.string("retention.ms") + kw.nullable_string("86400000"),
            kw.string("cleanup.policy") + kw.nullable_string("delete")])]) + kw.i8(0),
        hdr(23, 3, 40) + kw.i32(-1) + kw.array([kw.string(topic) + kw.array([
            kw.i32(0) + kw.i32(-1) + kw.i32(0), kw.i32(1) + kw.i32(0) + kw.i32(0)])]),
        hdr(48, 0, 41) + kw.array([kw.string("client-id") + kw.i8(0)
                                   + kw.nullable_string("fuzz-quota")]) + kw.i8(0),
        hdr(48, 0, 42) + kw.array([kw.string("client-id") + kw.i8(1)
                                   + kw.nullable_string(None)]) + kw.i8(1),
        hdr(49, 0, 43) + kw.array([
            kw.array([kw.string("client-id") + kw.nullable_string("fuzz-quota")])
            + kw.array([kw.string("producer_byte_rate") + struct.pack(">d", 1e6) + kw.i8(0),
                        kw.string("consumer_byte_rate") + struct.pack(">d", 0.0) + kw.i8(1)])])
        + kw.i8(1),
    ]
    # Share groups (KIP-932) as librdkafka's ShareConsumer sends them: a join,
    # a ShareFetch opening a session, an acknowledgement, and a share-state
    # write with an absurd window (between brokers; refused standalone).
    fx = lambda key, ver, c: kw.request_header(key, ver, c, "fuzz-seed",  # noqa: E731
                                               flexible=True)
    t0 = kw.EMPTY_TAGGED_FIELDS
    carr = kw.compact_array_of
    tid = b"\x11" * 16
    out += [
        fx(76, 1, 50) + kw.compact_string("fuzz-share") + kw.compact_string("fuzz-member")
        + kw.i32(0) + kw.compact_string(None) + carr([kw.compact_string(topic)]) + t0,
        fx(78, 1, 51) + kw.compact_string("fuzz-share") + kw.compact_string("fuzz-member")
        + kw.i32(0) + kw.i32(10) + kw.i32(1) + kw.i32(1 << 20) + kw.i32(500) + kw.i32(500)
        + carr([tid + carr([kw.i32(0) + carr([]) + t0]) + t0]) + carr([]) + t0,
        fx(79, 1, 52) + kw.compact_string("fuzz-share") + kw.compact_string("fuzz-member")
        + kw.i32(1) + carr([tid + carr([kw.i32(0) + carr([
            kw.i64(0) + kw.i64(9) + carr([kw.i8(1)]) + t0]) + t0]) + t0]) + t0,
        fx(85, 0, 53) + kw.compact_string("fuzz-share") + carr([tid + carr([
            kw.i32(0) + kw.i32(0) + kw.i32(-1) + kw.i64(0) + carr([
                kw.i64(0) + kw.i64(2**63 - 1) + kw.i8(2) + kw.i16(1) + t0]) + t0]) + t0]) + t0,
    ]
    # Found by this fuzzer (kept as regression seeds): counts of partitions
    # near 2^31 in CreateTopics and CreatePartitions.
    out += [
        hdr(19, 4, 30) + kw.array([kw.string("fuzz-huge") + kw.i32(0x7FFFFFFF) + kw.i16(1)
                                   + kw.array([]) + kw.array([])]) + kw.i32(30000) + kw.i8(0),
        hdr(37, 1, 31) + kw.array([kw.string(topic) + kw.i32(0x7FFFFFFF) + kw.i32(-1)])
        + kw.i32(30000) + kw.i8(0),
    ]
    # Record batch oddities, all with a valid CRC: a gzip bomb (40 MiB of zeros,
    # past the broker's 32 MiB decompression floor),
    # garbage "compressed" with each codec id, a huge record count.
    bomb = gzip.compress(b"\x00" * (40 << 20), compresslevel=9)
    for attrs, records, count in ((1, bomb, 1), (1, gzip.compress(b"\xff" * 4096), 5),
                                  (2, b"\x82SNAPPY\x00" + b"\x00" * 40, 1),
                                  (3, b"\x04\x22\x4d\x18" + b"\x00" * 40, 1),
                                  (4, b"\x28\xb5\x2f\xfd" + b"\x00" * 40, 1),
                                  (0, b"\x00" * 40, 0x7FFFFFFF)):
        out.append(hdr(kw.API_PRODUCE, 3, 20 + attrs)
                   + kw.produce_v3_body(topic, 0, raw_batch(records, count, attrs, ts)))
    return out


def raw_batch(records, count, attributes, ts):
    """A magic-2 batch whose records section is `records` as given, CRC fixed."""
    after_crc = (kw.i16(attributes) + kw.i32(max(count, 1) - 1) + kw.i64(ts) + kw.i64(ts)
                 + kw.i64(-1) + kw.i16(-1) + kw.i32(-1) + kw.i32(count) + records)
    crc = kw.crc32c(after_crc)
    body = kw.i32(0) + kw.i8(2) + kw.u32(crc) + after_crc
    return kw.i64(0) + kw.i32(len(body)) + body


# ----------------------------------------------------------------------------
# Health checks
# ----------------------------------------------------------------------------


def read_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class HealthChecker:
    def __init__(self, broker, topic, log):
        self.broker = broker
        self.topic = topic
        self.log = log
        self.n = 0

    def api_versions_ok(self, timeout=5.0):
        """-> None if fine, else ("hang" | "fail", message)."""
        t0 = time.monotonic()
        try:
            apis = api_versions(self.broker.port, timeout)
            if kw.API_PRODUCE not in apis:
                return ("fail", "ApiVersions lists no Produce")
        except socket.timeout:
            return ("hang", "ApiVersions not answered within %.0fs" % timeout)
        except Exception as e:
            if time.monotonic() - t0 >= timeout:
                return ("hang", "ApiVersions: %s after %.1fs" % (e, time.monotonic() - t0))
            return ("fail", "ApiVersions: %s: %s" % (type(e).__name__, e))
        return None

    def round_trip(self, timeout=30.0):
        """A well-behaved producer produces and a consumer reads it back."""
        from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

        self.n += 1
        value = b"health-%d-%d" % (self.n, time.time_ns())
        bs = self.broker.bootstrap
        result = {}
        p = Producer({"bootstrap.servers": bs, "linger.ms": 0, "acks": "all",
                      "message.timeout.ms": int(timeout * 1000 * 0.6),
                      "socket.timeout.ms": 10000})

        def cb(err, msg):
            result["err"] = err
            result["offset"] = msg.offset() if err is None else None

        p.produce(self.topic, value=value, partition=0, on_delivery=cb)
        left = p.flush(timeout * 0.6)
        if left or result.get("err") is not None or result.get("offset") is None:
            return "produce failed: left=%d err=%s" % (left, result.get("err"))
        c = Consumer({"bootstrap.servers": bs, "group.id": "fuzz-health",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "check.crcs": True, "socket.timeout.ms": 10000})
        try:
            c.assign([TopicPartition(self.topic, 0, result["offset"])])
            deadline = time.monotonic() + timeout * 0.4
            while time.monotonic() < deadline:
                for m in c.consume(num_messages=10, timeout=0.5):
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        return "consume error: %s" % m.error()
                    if m.value() == value:
                        return None
            return "record produced at offset %d not consumed within %.0fs" % (
                result["offset"], timeout * 0.4)
        finally:
            c.close()


def create_health_topic(bootstrap, name):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    # Topic-level values, so that fuzzed dynamic broker defaults (which any
    # client may legitimately alter) do not change what the check relies on.
    cfg = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete",
           "max.message.bytes": "1048588", "message.timestamp.type": "CreateTime"}
    fs = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=cfg)],
                         request_timeout=15)
    fs[name].result(timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        t = a.list_topics(timeout=5).topics.get(name)
        if t is not None and t.error is None and t.partitions:
            return
        time.sleep(0.1)
    raise RuntimeError("health topic %s not visible" % name)


PANIC_PATTERNS = (b"panicked at", b"request task failed", b"memory allocation of",
                  b"stack overflow", b"thread 'main'")


class LogWatcher:
    """Reads the broker log incrementally for panics (a panicking request task
    does not kill the process: tokio catches it and the connection is closed)."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.hits = []
        self.errors = collections.Counter()
        self.tail = b""

    def skip_to_end(self):
        try:
            self.offset = self.path.stat().st_size
        except OSError:
            self.offset = 0

    def scan(self, limit=64 << 20):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(limit)
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        text = self.tail + data
        cut = text.rfind(b"\n")
        self.tail = text[cut + 1:] if cut >= 0 else text
        text = text[:cut + 1] if cut >= 0 else b""
        new = []
        for pat in PANIC_PATTERNS:
            start = 0
            while True:
                i = text.find(pat, start)
                if i < 0:
                    break
                ls = text.rfind(b"\n", 0, i) + 1
                le = text.find(b"\n", i)
                new.append(text[ls:le if le >= 0 else len(text)].decode("utf-8", "replace"))
                start = i + len(pat)
        self.hits += new
        # Other ERROR lines are not failures by themselves; they are reported.
        start = 0
        while True:
            i = text.find(b" ERROR ", start)
            if i < 0:
                break
            le = text.find(b"\n", i)
            line = text[i + 7:le if le >= 0 else len(text)].decode("utf-8", "replace")
            key = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:*", line)[:300]
            self.errors[key] += 1
            start = i + 7
        return new


def scrape_metrics(port):
    """Sums of a few broker counters from /metrics (None if unavailable)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except Exception:
        return None
    out = {"requests": 0, "closed": {}}
    for line in text.splitlines():
        if line.startswith("kafka_network_requests_total"):
            out["requests"] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("runnel_connections_closed_total"):
            m = re.search(r'reason="([^"]*)"', line) or re.search(r'="([^"]*)"', line)
            out["closed"][m.group(1) if m else "?"] = int(float(line.rsplit(" ", 1)[1]))
    return out


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------


def _start_with_retry(broker, log, attempts=5):
    for i in range(attempts):
        try:
            return broker.start()
        except (BrokerError, OSError) as e:
            # the binary may be being replaced by a rebuild
            if i == attempts - 1:
                raise
            log("broker start failed (%s); retrying" % str(e).splitlines()[0])
            if broker.proc is not None and broker.proc.poll() is None:
                broker.kill9()
            broker.proc = None
            time.sleep(3)


def run(seconds=60.0, inputs=0, workers=2, seed=None, corpus=None, reuse_corpus=False,
        binary=None, workdir=None, keep=False, ring=20000, check_interval=2.0,
        round_trip_interval=30.0, record_timeout=120.0, log_level=None, exclude_apis=(),
        max_rss_mb=2048, verbose=True, out=None):
    """Record, fuzz, check; returns the summary dict (see summary_line)."""
    def log(msg):
        if verbose:
            print("[wire-fuzz %s] %s" % (time.strftime("%H:%M:%S"), msg),
                  file=out or sys.stdout, flush=True)

    seed = int(seed if seed is not None else time.time_ns() % (1 << 31))
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="runnel-wire-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    crash_dir = workdir / "crash"
    corpus_dir = Path(corpus) if corpus else workdir / "corpus"
    corpus_file = corpus_dir / "frames.bin"
    res = {"inputs": 0, "seconds": 0.0, "rate": 0.0, "crashes": 0, "hangs": 0,
           "failed_health_checks": 0, "panics": 0, "peak_rss_mb": 0.0, "seed": seed,
           "workdir": str(workdir), "corpus_frames": 0, "failures": [], "crash_dir": None,
           "broker_requests": None, "broker_log": None,
           "excluded_apis": sorted(exclude_apis)}
    proxy = RecordingProxy()
    metrics_port = free_port()
    overrides = {"metrics.listener": "http://127.0.0.1:%d" % metrics_port,
                 "group.initial.rebalance.delay.ms": "0"}
    broker = Broker(workdir=workdir / "broker", overrides=overrides, binary=binary)
    res["broker_log"] = str(broker.log_path)
    saved_env = os.environ.get("RUST_LOG")
    # Every malformed frame is a WARN line; at thousands a second that is the
    # bottleneck and fills the disk.  Panics and errors still show at "error".
    os.environ["RUST_LOG"] = log_level or os.environ.get("RUNNEL_FUZZ_LOG", "error")
    procs = []
    stats = None
    failure = None

    def fail(kind, msg):
        nonlocal failure
        res[kind] += 1
        res["failures"].append("%s: %s" % (kind, msg))
        log("FAILURE %s: %s" % (kind, msg))
        if failure is None:
            failure = kind

    log("seed=%d workdir=%s binary=%s" % (seed, workdir, broker.binary))
    try:
        # ---- corpus
        if reuse_corpus and corpus_file.exists():
            recorded = load_corpus(corpus_file)
            log("loaded %d frames from %s" % (len(recorded), corpus_file))
            _start_with_retry(broker, log)
        else:
            broker.overrides["advertised.listeners"] = "PLAINTEXT://127.0.0.1:%d" % proxy.port
            proxy.start(broker.port)
            _start_with_retry(broker, log)
            log("recording real clients through proxy 127.0.0.1:%d -> broker %s"
                % (proxy.port, broker.bootstrap))
            t0 = time.monotonic()
            recorded = record_corpus(broker, proxy, log, record_timeout)
            proxy.close()
            log("recorded %d frames in %.1fs" % (len(recorded), time.monotonic() - t0))
            if not recorded:
                raise RuntimeError("no frames recorded; broker log:\n" + broker.log_tail())
            # Restart advertising its own address (health-check clients connect directly).
            del broker.overrides["advertised.listeners"]
            rc = broker.stop(expect_clean=False)
            if rc != 0:
                # A graceful stop must exit 0; a signal here is a crash (the data
                # dir is kept and fuzzing goes on against the restarted broker).
                fail("crashes", "broker exited with %s on SIGTERM after recording; log tail:\n%s"
                     % (rc, broker.log_tail(20)))
            _start_with_retry(broker, log)
        apis = api_versions(broker.port)
        topic = None
        for fr in recorded:
            m = re.search(rb"fuzz-multi-[0-9a-f]+", fr)
            if m:
                topic = m.group(0).decode()
                break
        frames = recorded + extra_seeds(recorded, apis, topic or "fuzz-raw")
        for f in sorted(SEED_DIR.glob("*.bin")):
            extra = load_corpus(f)
            frames += extra
            log("seed file %s: %d frames" % (f.relative_to(HERE), len(extra)))
        if exclude_apis:
            # Triage only: keep a known bug's API out of the seeds (and the workers
            # send nothing under those keys) to look for other bugs.
            frames = [fr for fr in frames if struct.unpack_from(">h", fr, 0)[0] not in exclude_apis]
            log("excluding api keys %s from the seeds" % sorted(exclude_apis))
        if not (reuse_corpus and corpus_file.exists()):
            save_corpus(corpus_file, recorded)
            (corpus_dir / "stats.json").write_text(json.dumps(corpus_stats(recorded), indent=1))
        seeds_file = workdir / "seeds.bin"
        save_corpus(seeds_file, frames)
        res["corpus_frames"] = len(frames)
        kinds = corpus_stats(frames)
        log("corpus: %d frames (%d recorded), %d (api key, version) pairs; saved to %s"
            % (len(frames), len(recorded), len(kinds), corpus_file))

        health_topic = "fuzz-health-%x" % random.getrandbits(32)
        create_health_topic(broker.bootstrap, health_topic)
        checker = HealthChecker(broker, health_topic, log)
        err = checker.round_trip()
        if err:
            raise RuntimeError("health check fails before fuzzing: %s" % err)
        watcher = LogWatcher(broker.log_path)
        watcher.scan()
        if watcher.hits:
            raise RuntimeError("broker log has panics before fuzzing: %s" % watcher.hits[:3])
        pid = broker.proc.pid

        # ---- fuzz
        stats_path = workdir / "stats.bin"
        stats = SharedStats(stats_path, workers, create=True)
        quota = (inputs + workers - 1) // workers if inputs else 0
        wlogs = []
        for i in range(workers):
            wl = open(workdir / ("worker%d.log" % i), "wb")
            wlogs.append(wl)
            args = [sys.executable, str(Path(__file__).resolve()), "--worker", str(i),
                    "--port", str(broker.port), "--seeds-file", str(seeds_file),
                    "--stats-file", str(stats_path), "--workers", str(workers),
                    "--seed", str(seed), "--seconds", str(seconds), "--quota", str(quota),
                    "--ring", str(ring), "--dump-dir", str(crash_dir),
                    "--exclude-api", ",".join(str(k) for k in exclude_apis)]
            procs.append(subprocess.Popen(args, stdout=wl, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
        log("fuzzing %s with %d workers for up to %.0fs%s"
            % (broker.bootstrap, workers, seconds,
               " or %d inputs" % inputs if inputs else ""))
        t_start = time.monotonic()
        next_rt = t_start + min(round_trip_interval, max(5.0, seconds / 2))
        next_report = t_start + 10
        peak_rss = read_status_kb(pid, "VmRSS") or 0
        failure = None   # failures while fuzzing end the run (one before it is already counted)

        while True:
            time.sleep(check_interval)
            now = time.monotonic()
            done_workers = [p.poll() is not None for p in procs]
            total = stats.total("inputs")
            rss = read_status_kb(pid, "VmRSS")
            if rss:
                peak_rss = max(peak_rss, rss)
            if broker.proc.poll() is not None:
                fail("crashes", "broker process exited with %s" % broker.proc.returncode)
            else:
                if rss and max_rss_mb and rss / 1024 > max_rss_mb:
                    fail("failed_health_checks", "broker RSS %.0f MB is over --max-rss-mb %d"
                         % (rss / 1024, max_rss_mb))
                bad = checker.api_versions_ok()
                if bad:
                    kind, msg = bad
                    fail("hangs" if kind == "hang" else "failed_health_checks", msg)
                for line in watcher.scan():
                    fail("panics", line)
                if failure is None and now >= next_rt:
                    err = checker.round_trip()
                    if err:
                        if broker.proc.poll() is not None:
                            fail("crashes", "broker exited (%s) during the round trip"
                                 % broker.proc.returncode)
                        else:
                            fail("failed_health_checks", "round trip: " + err)
                    next_rt = time.monotonic() + round_trip_interval
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0):
                    res["failures"].append("worker %d exited with %s (see %s)"
                                           % (i, p.returncode, workdir / ("worker%d.log" % i)))
                    failure = failure or "worker"
            if now >= next_report:
                el = now - t_start
                log("%d inputs in %.0fs (%.0f/s), %d connections, rss=%.1f MB"
                    % (total, el, total / max(el, 1e-9), stats.total("conns"),
                       (rss or 0) / 1024))
                next_report = now + 10
            if failure or all(done_workers):
                break
            if now - t_start > seconds + 30:
                res["failures"].append("workers did not stop in time")
                break
        stats.set_control(CTRL_DUMP if failure and failure != "worker" else CTRL_STOP)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for wl in wlogs:
            wl.close()
        elapsed = time.monotonic() - t_start
        res["inputs"] = stats.total("inputs")
        res["seconds"] = round(elapsed, 1)
        res["rate"] = round(res["inputs"] / max(elapsed, 1e-9))
        for f in ("conns", "closed_by_broker", "bytes", "lying", "send_stalls", "rx_bytes",
                  "refused"):
            res[f] = stats.total(f)

        # ---- after: the broker must still be healthy and stop cleanly
        if failure is None:
            if broker.proc.poll() is not None:
                fail("crashes", "broker process exited with %s" % broker.proc.returncode)
            else:
                if rss and max_rss_mb and rss / 1024 > max_rss_mb:
                    fail("failed_health_checks", "broker RSS %.0f MB is over --max-rss-mb %d"
                         % (rss / 1024, max_rss_mb))
                bad = checker.api_versions_ok()
                if bad:
                    fail("hangs" if bad[0] == "hang" else "failed_health_checks", bad[1])
                else:
                    err = checker.round_trip()
                    if err:
                        fail("failed_health_checks", "final round trip: " + err)
        m = scrape_metrics(metrics_port) if broker.is_running() else None
        if m:
            res["broker_requests"] = m["requests"]
            res["broker_closed"] = m["closed"]
        res["broker_errors"] = dict(watcher.errors.most_common(20))
        hwm = read_status_kb(pid, "VmHWM")
        res["peak_rss_mb"] = round(max(peak_rss, hwm or 0) / 1024, 1)
        for line in watcher.scan():
            fail("panics", line)
        if failure and failure != "worker":
            res["crash_dir"] = str(crash_dir)
            crash_dir.mkdir(parents=True, exist_ok=True)
            (crash_dir / "broker-log-tail.txt").write_text(broker.log_tail(300))
            (crash_dir / "failures.txt").write_text("\n".join(res["failures"]) + "\n")
            suspects_for_panics(crash_dir, watcher.hits)
            log("failure: last frames of each worker and the broker log tail are in %s"
                % crash_dir)
            log("broker log tail:\n" + broker.log_tail(40))
        if broker.is_running() and failure:
            broker.kill9()      # already failed: its graceful stop proves nothing more
        elif broker.is_running():
            try:
                broker.stop(expect_clean=True)
            except BrokerError as e:
                fail("failed_health_checks", "graceful stop after fuzzing: %s"
                     % str(e).splitlines()[0])
        res["ok"] = not res["failures"] and res["inputs"] > 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if stats is not None:
            stats.close()
        proxy.close()
        if broker.is_running():
            broker.kill9()
        if saved_env is None:
            os.environ.pop("RUST_LOG", None)
        else:
            os.environ["RUST_LOG"] = saved_env
        if own_workdir and not keep and res.get("ok") and not os.environ.get("RUNNEL_KEEP_TMP"):
            shutil.rmtree(workdir, ignore_errors=True)
            res["workdir"] = None
    return res


def suspects_for_panics(crash_dir, hits):
    """Frames whose local port appears as peer=127.0.0.1:<port> in a panic line."""
    ports = set()
    for h in hits:
        for m in re.finditer(r"127\.0\.0\.1:(\d+)", h):
            ports.add(int(m.group(1)))
    if not ports:
        return
    with open(crash_dir / "suspects.txt", "w") as out:
        for f in sorted(crash_dir.glob("worker*.frames")):
            for seq, lport, wire in load_dump(f):
                if lport in ports:
                    out.write("%s conn=%d port=%d len=%d\n  %s\n"
                              % (f.name, seq, lport, len(wire), wire[:4096].hex()))


def summary_line(res):
    return ("wire-fuzz: inputs=%d seconds=%.0f rate=%d/s crashes=%d hangs=%d "
            "failed_health_checks=%d panics=%d peak_rss_mb=%.1f"
            % (res["inputs"], res["seconds"], res["rate"], res["crashes"], res["hangs"],
               res["failed_health_checks"], res["panics"], res["peak_rss_mb"]))


def details_line(res):
    parts = ["seed=%d" % res["seed"], "corpus_frames=%d" % res["corpus_frames"]]
    if res.get("excluded_apis"):
        parts.append("EXCLUDED_APIS=%s" % ",".join(map(str, res["excluded_apis"])))
    for f in ("conns", "closed_by_broker", "lying", "send_stalls", "refused"):
        if f in res:
            parts.append("%s=%d" % (f, res[f]))
    if "bytes" in res:
        parts.append("sent_mb=%.1f" % (res["bytes"] / 1e6))
    if res.get("broker_requests") is not None:
        parts.append("broker_requests_decoded=%d" % res["broker_requests"])
    if res.get("broker_closed"):
        parts.append("broker_closed=%s" % ",".join(
            "%s:%d" % kv for kv in sorted(res["broker_closed"].items())))
    return "wire-fuzz details: " + " ".join(parts)


# ----------------------------------------------------------------------------
# Replay a dump
# ----------------------------------------------------------------------------


def _send_conn(port, wires, wait):
    """One connection: send the frames as one write, read until closed or quiet."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return
    try:
        s.sendall(b"".join(wires))
        s.settimeout(wait)
        while s.recv(1 << 16):
            pass
    except OSError:
        pass
    finally:
        _rst_close(s)


def _broker_state(broker, rss_limit_mb):
    """None if fine, else "crash" / "hang" / "memory (N MB)"."""
    if broker.proc.poll() is not None:
        return "crash (exit %s)" % broker.proc.returncode
    rss = (read_status_kb(broker.proc.pid, "VmHWM") or 0) / 1024
    try:
        api_versions(broker.port, 5.0)
    except Exception:
        return "crash (exit %s)" % broker.proc.returncode if broker.proc.poll() is not None \
            else "hang"
    if rss > rss_limit_mb:
        return "memory (peak %.0f MB)" % rss
    return None


def _trial(binary, conns, rss_limit_mb, wait=0.05, settle=2.0):
    """Fresh broker; send these connections; settle; -> failure kind or None."""
    broker = Broker(binary=binary)
    _start_with_retry(broker, lambda m: None)
    try:
        for wires in conns:
            _send_conn(broker.port, wires, wait)
            if broker.proc.poll() is not None:
                break
        time.sleep(settle)
        return _broker_state(broker, rss_limit_mb)
    finally:
        if broker.is_running():
            broker.kill9()
        broker.cleanup()


def _ddmin(items, fails, log):
    """Delta debugging (Zeller): a smaller list of items that still fails."""
    n = 2
    while len(items) >= 2:
        chunk = max(1, len(items) // n)
        reduced = False
        for i in range(0, len(items), chunk):
            cand = items[:i] + items[i + chunk:]
            if cand and fails(cand):
                log("  minimize: %d -> %d" % (len(items), len(cand)))
                items, n, reduced = cand, max(n - 1, 2), True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(items), n * 2)
    return items


def replay(dump_path, binary=None, rss_limit_mb=1024, minimize=False, log=print):
    """Send a worker dump's connections to a fresh broker, in order, checking
    after each that the broker is alive, answers ApiVersions and stays under
    rss_limit_mb.  With minimize, reduce the failing prefix to the fewest
    connections (and then frames) that still fail.  Returns the failing list
    of connections (each a list of wire frames) or None."""
    entries = load_dump(dump_path)
    by_conn = collections.OrderedDict()
    for seq, _lport, wire in entries:
        by_conn.setdefault(seq, []).append(wire)
    conns = list(by_conn.values())
    broker = Broker(binary=binary)
    _start_with_retry(broker, log)
    bad_at, kind = None, None
    try:
        for i, wires in enumerate(conns):
            _send_conn(broker.port, wires, 0.05)
            time.sleep(0.02)
            kind = _broker_state(broker, rss_limit_mb)
            if kind:
                bad_at = i
                log("%s after connection #%d of %d (%d frames)" % (kind.upper(), i, len(conns),
                                                                     len(wires)))
                log("broker log tail:\n" + broker.log_tail(30))
                break
    finally:
        if broker.is_running():
            broker.kill9()
        broker.cleanup()
    if bad_at is None:
        log("replayed %d connections (%d frames): broker alive, answering, under %d MB"
            % (len(conns), len(entries), rss_limit_mb))
        return None
    culprit = conns[:bad_at + 1]
    if minimize:
        fails = lambda cs: _trial(binary, cs, rss_limit_mb) is not None  # noqa: E731
        if not fails(culprit):
            log("the failure does not reproduce on a fresh broker with a 2 s settle; "
                "reporting the whole prefix")
        else:
            culprit = _ddmin(culprit, fails, log)
            # then the frames, each keeping its connection
            items = [(ci, w) for ci, wires in enumerate(culprit) for w in wires]

            def regroup(its):
                conns_ = collections.OrderedDict()
                for ci, w in its:
                    conns_.setdefault(ci, []).append(w)
                return list(conns_.values())

            if len(items) > 1:
                culprit = regroup(_ddmin(items, lambda its: fails(regroup(its)), log))
    log("failing input: %d connection(s)" % len(culprit))
    for i, wires in enumerate(culprit):
        log(" connection %d:" % i)
        for w in wires:
            log("  " + w.hex())
    return culprit


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="fuzzing time (default 60)")
    ap.add_argument("--inputs", type=int, default=0,
                    help="stop after this many inputs (0: no limit)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--corpus", default=None, help="corpus directory (default <workdir>/corpus)")
    ap.add_argument("--reuse-corpus", action="store_true",
                    help="load --corpus/frames.bin instead of recording clients")
    ap.add_argument("--binary", default=None, help="broker binary (default $RUNNEL_BIN or "
                    "target/release/runnel)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir after a clean run")
    ap.add_argument("--ring", type=int, default=20000, help="frames each worker keeps for a dump")
    ap.add_argument("--max-rss-mb", type=int, default=2048,
                    help="broker RSS above this fails a health check (0: no limit)")
    ap.add_argument("--log-level", default=None, help="broker RUST_LOG (default "
                    "$RUNNEL_FUZZ_LOG or error)")
    ap.add_argument("--exclude-api", default="", help="triage: comma-separated api keys "
                    "to leave out of the seeds (to look past a known bug)")
    ap.add_argument("--replay", default=None, help="replay a worker<i>.frames dump")
    ap.add_argument("--minimize", action="store_true", help="with --replay: reduce the "
                    "failing input (delta debugging over connections, then frames)")
    # internal: worker processes
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seeds-file", help=argparse.SUPPRESS)
    ap.add_argument("--stats-file", help=argparse.SUPPRESS)
    ap.add_argument("--quota", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--dump-dir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        worker_main(a.worker, a.port, a.seeds_file, a.stats_file, a.workers, a.seed,
                    a.seconds, a.quota, a.ring, a.dump_dir,
                    tuple(int(k) for k in a.exclude_api.split(",") if k.strip()))
        return 0
    if a.replay:
        return 1 if replay(a.replay, binary=a.binary, minimize=a.minimize) else 0
    res = run(seconds=a.seconds, inputs=a.inputs, workers=a.workers, seed=a.seed,
              corpus=a.corpus, reuse_corpus=a.reuse_corpus, binary=a.binary,
              workdir=a.workdir, keep=a.keep, ring=a.ring, log_level=a.log_level,
              max_rss_mb=a.max_rss_mb,
              exclude_apis=tuple(int(k) for k in a.exclude_api.split(",") if k.strip()))
    print(details_line(res))
    for line, n in (res.get("broker_errors") or {}).items():
        print("wire-fuzz broker ERROR x%d: %s" % (n, line))
    for f in res["failures"]:
        print("wire-fuzz failure: " + f)
    if res.get("crash_dir"):
        print("wire-fuzz: reproducers in %s (replay with --replay %s/worker0.frames)"
              % (res["crash_dir"], res["crash_dir"]))
    print(summary_line(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
