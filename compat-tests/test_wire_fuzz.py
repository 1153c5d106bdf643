"""A short slice of the end-to-end wire fuzzer (wire_fuzz.py) against the real binary.

Records frames from real clients, fuzzes a broker of its own for
RUNNEL_WIRE_FUZZ_SECONDS (default 60) from two worker processes, and requires
no crash, no hang, no failed health check and no panic in the broker log.
`make fuzz` runs the same fuzzer for longer (see wire_fuzz.py)."""

import os

import pytest

import wire_fuzz
from runnel_harness import runnel_bin

SECONDS = float(os.environ.get("RUNNEL_WIRE_FUZZ_SECONDS", "60"))
MIN_INPUTS = int(os.environ.get("RUNNEL_WIRE_FUZZ_MIN_INPUTS", "10000"))

# Recording (a few seconds, at most 90), the fuzzing, the final checks and a clean stop.
pytestmark = pytest.mark.timeout(int(max(180, SECONDS + 120)))


def test_wire_fuzz_short_slice(capsys):
    seed = int(os.environ["RUNNEL_WIRE_FUZZ_SEED"]) if os.environ.get("RUNNEL_WIRE_FUZZ_SEED") \
        else None
    with capsys.disabled():
        print()
        res = wire_fuzz.run(seconds=SECONDS, workers=2, seed=seed, binary=runnel_bin(),
                            record_timeout=90)
        print(wire_fuzz.details_line(res))
        for line, n in (res.get("broker_errors") or {}).items():
            print("broker ERROR x%d: %s" % (n, line))
        print(wire_fuzz.summary_line(res))
    report = "%s\n%s\nfailures:\n  %s\nreproducers: %s\nbroker log: %s" % (
        wire_fuzz.summary_line(res), wire_fuzz.details_line(res),
        "\n  ".join(res["failures"]) or "(none)", res.get("crash_dir"), res.get("broker_log"))
    assert res["crashes"] == 0, report
    assert res["hangs"] == 0, report
    assert res["failed_health_checks"] == 0, report
    assert res["panics"] == 0, report
    assert not res["failures"], report
    assert res["inputs"] > MIN_INPUTS, "only %d inputs tried\n%s" % (res["inputs"], report)
