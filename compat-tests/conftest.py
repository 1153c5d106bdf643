"""Fixtures that run the real Runnel binary.

- `broker`: one broker shared by the whole session (most tests).
- `make_broker` / `fresh_broker`: a factory for brokers private to one test
  (kill -9, restart, special config).  Stopped and removed at teardown.
- `isolated_broker`: one broker per test module, for modules that may damage
  the broker (bad input) and should not take the shared one down with them.

Environment: RUNNEL_BIN (default <repo>/target/release/runnel), RUST_LOG
(default info), RUNNEL_KEEP_TMP=1 keeps data dirs and logs.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runnel_harness import Broker, BrokerError, unique_topic  # noqa: E402,F401


class BrokerFactory:
    def __init__(self):
        self.brokers = []

    def __call__(self, overrides=None, **kw):
        """make_broker({"log.retention.ms": "1000"}) or make_broker(num_partitions=3):
        keyword names use '_' for '.'."""
        ov = dict(overrides or {})
        for k, v in kw.items():
            ov[k.replace("_", ".")] = v
        b = Broker(overrides=ov)
        self.brokers.append(b)
        b.start()
        return b

    def teardown(self, expect_clean=True):
        errors = []
        for b in self.brokers:
            try:
                if b.is_running():
                    b.stop(expect_clean=expect_clean)
            except BrokerError as e:
                errors.append(str(e))
            finally:
                b.cleanup()
        if errors:
            raise BrokerError("\n\n".join(errors))


def _started(factory):
    try:
        return factory()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def broker():
    factory = BrokerFactory()
    b = _started(factory)
    yield b
    # Graceful shutdown of the shared broker must exit with code 0.
    factory.teardown(expect_clean=True)


@pytest.fixture(scope="module")
def isolated_broker():
    factory = BrokerFactory()
    b = _started(factory)
    yield b
    factory.teardown(expect_clean=True)


@pytest.fixture
def healthy_broker(isolated_broker):
    """The module's own broker, which must still serve a well-behaved client
    after each test (for modules that throw bad input at it)."""
    from ck_helpers import assert_healthy
    assert isolated_broker.is_running(), "isolated broker died earlier:\n" + \
        isolated_broker.log_tail()
    yield isolated_broker
    assert_healthy(isolated_broker)


@pytest.fixture
def make_broker():
    factory = BrokerFactory()
    yield factory
    factory.teardown(expect_clean=False)


# Alias used by the brief: a function-scoped factory.
fresh_broker = make_broker


@pytest.fixture
def bootstrap(broker):
    return broker.bootstrap


def _brokers_of(item):
    found = []
    for v in getattr(item, "funcargs", {}).values():
        if isinstance(v, Broker):
            found.append(v)
        elif isinstance(v, BrokerFactory):
            found.extend(v.brokers)
    seen, out = set(), []
    for b in found:
        if id(b) not in seen:
            seen.add(id(b))
            out.append(b)
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for b in _brokers_of(item):
            state = "running" if b.is_running() else "NOT running (rc=%s)" % (
                b.proc.returncode if b.proc else None)
            rep.sections.append((
                "runnel broker %s [%s] log tail (%s)" % (b.bootstrap, state, b.log_path),
                b.log_tail(80)))
