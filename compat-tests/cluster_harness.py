"""Loopback clusters for tests: one etcd (the metadata store) and n Runnel
brokers on 127.0.0.1, each with its own port, data dir and log file.

    etcd = EtcdServer().start()
    c = Cluster(3, etcd=etcd).start()      # node ids 1..3
    c.bootstrap()                          # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    c.broker(2).kill9(); c.pause(3); c.resume(3)
    c.members(1)                           # what broker 1 says (raw Metadata v1)
    c.teardown(); etcd.cleanup()

    c = Cluster(3, etcd=etcd, proxied=True).start()   # inter-broker links via LinkProxy
    c.cut(1)                               # followers of broker 1's partitions cut off
    c.cut(1, mode="blackhole"); c.heal(1)  # ... or hung; then forwarding again

Environment: RUNNEL_BIN (see runnel_harness), ETCD_BIN / ETCDCTL_BIN (default:
`etcd` / `etcdctl` on PATH), RUNNEL_KEEP_TMP=1 keeps data dirs and logs.
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import kafka_wire as kw
from runnel_harness import Broker, BrokerError, free_port


def etcd_bin():
    return os.environ.get("ETCD_BIN") or shutil.which("etcd")


def etcdctl_bin():
    return os.environ.get("ETCDCTL_BIN") or shutil.which("etcdctl")


def new_cluster_id():
    """A 22-character url-safe base64 id (Kafka's cluster id format), unique
    per call, so each test gets its own metadata prefix in a shared etcd."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def wait_until(cond, timeout, interval=0.1, what=None):
    """Polls cond() until it returns something truthy (returned) or timeout
    seconds pass (AssertionError naming `what` and cond's last value).
    Exceptions raised by cond count as a falsy value (and are reported)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s; last: %r"
                                 % (timeout, what or getattr(cond, "__name__", "condition"),
                                    last))
        time.sleep(interval)


class EtcdError(Exception):
    pass


class EtcdServer:
    """One single-member etcd on free loopback client and peer ports, its data
    in a temporary dir (kept across stop/start, so a restart keeps the keys
    and leases), its output in `log_path`."""

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    def __init__(self, workdir=None, client_port=None, peer_port=None, name="runnel-test"):
        self.binary = etcd_bin()
        if not self.binary:
            raise EtcdError("etcd is not installed (Debian: etcd-server)")
        self._own_tmp = None
        if workdir is None:
            self._own_tmp = tempfile.mkdtemp(prefix="runnel-etcd-")
            workdir = self._own_tmp
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.proc = None
        self.starts = 0
        self.paused = False

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.client_port

    def command(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "%s=%s" % (self.name, peer),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "runnel-test-%d" % self.client_port,
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=40):
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no etcd log)"
        return "\n".join(text.splitlines()[-lines:])

    def _tcp_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5):
                return True
        except OSError:
            return False

    def healthy(self):
        """`etcdctl endpoint health` succeeds (a TCP connect when etcdctl is missing)."""
        if not self._tcp_up():
            return False
        if not etcdctl_bin():
            return True
        try:
            return self.etcdctl("endpoint", "health", timeout=5, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self):
        if self.is_running():
            raise EtcdError("etcd already running")
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s =====\n" % (self.starts, " ".join(self.command())))
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(self.workdir))
        self.paused = False
        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise EtcdError("etcd exited with code %s during startup; log tail:\n%s"
                                % (rc, self.log_tail()))
            if self.healthy():
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise EtcdError("etcd not healthy on %s within %ss; log tail:\n%s"
                                % (self.endpoint, self.START_TIMEOUT, self.log_tail()))
            time.sleep(0.1)

    def stop(self):
        """SIGTERM (SIGKILL after STOP_TIMEOUT); the exit code."""
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.paused = False

    def pause(self):
        if not self.is_running():
            raise EtcdError("etcd is not running")
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self):
        self.stop()
        return self.start()

    def etcdctl(self, *args, timeout=10, check=True):
        """Runs etcdctl (v3 API) against this server; the CompletedProcess."""
        ctl = etcdctl_bin()
        if not ctl:
            raise EtcdError("etcdctl is not installed (Debian: etcd-client)")
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run([ctl, "--endpoints", self.endpoint, "--dial-timeout", "3s",
                               "--command-timeout", "%ds" % max(1, int(timeout) - 1)]
                              + list(args),
                              env=env, capture_output=True, text=True, timeout=timeout,
                              check=check)

    def get_prefix(self, prefix):
        """{key: (value, lease id)} of every key under `prefix` (strings; lease 0 = none)."""
        out = self.etcdctl("get", "--prefix", prefix, "-w", "json").stdout
        doc = json.loads(out) if out.strip() else {}
        result = {}
        for kv in doc.get("kvs") or []:
            key = base64.b64decode(kv["key"]).decode(errors="replace")
            value = base64.b64decode(kv.get("value", "")).decode(errors="replace")
            result[key] = (value, int(kv.get("lease", 0)))
        return result

    def cleanup(self):
        self.kill()
        if self._own_tmp and not os.environ.get("RUNNEL_KEEP_TMP"):
            shutil.rmtree(self._own_tmp, ignore_errors=True)

    def __repr__(self):
        return "<EtcdServer %s pid=%s dir=%s>" % (
            self.endpoint, self.proc.pid if self.proc else None, self.workdir)


class LinkProxy:
    """A TCP proxy on 127.0.0.1 in front of one broker's inter-broker
    listener, driven by the test. Proxied clusters (Cluster(proxied=True))
    advertise it as the broker's INTERNAL endpoint, so every follower
    fetching from that broker goes through it (clients do not: they get the
    endpoints of the PLAINTEXT listener they came in on).

    Modes (set_mode, or Cluster.cut / heal):
    - "forward": bytes go both ways.
    - "drop": every open connection is aborted, new ones are accepted and
      aborted at once (the peer sees a reset / EOF, i.e. fails fast).
    - "blackhole": connections are accepted but nothing is forwarded either
      way (at most one read chunk per direction is held; the rest waits in
      the kernel's buffers): a partition that looks like a hang. New
      connections are held before the upstream connection is made. Back to
      "forward", held connections go on (their upstream connection is made
      then) and held bytes are delivered late, as after a real partition
      heals; connections their peer gave up on in the meantime just close.

    One asyncio loop in a daemon thread; at most `max_conns` connections at
    once (more are aborted); stop() closes every socket. Counters in
    `stats()`: accepted, aborted_on_accept (drop mode or over the bound),
    aborted (open connections aborted by drop), upstream_failures, held
    (waits in progress: a connection not yet forwarded, or a direction
    holding a chunk), active (connections open), bytes_up (to the broker),
    bytes_down (from it).
    """

    MODES = ("forward", "drop", "blackhole")
    CHUNK = 64 * 1024
    CONNECT_TIMEOUT = 5.0

    def __init__(self, target_port, target_host="127.0.0.1", max_conns=64, name=None):
        self.target = (target_host, int(target_port))
        self.max_conns = max_conns
        self.name = name or "proxy->%d" % target_port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))   # bound now: the port can be advertised
        self._sock.listen(64)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self.mode = "forward"
        self._counts = dict.fromkeys(("accepted", "aborted_on_accept", "aborted",
                                      "upstream_failures", "bytes_up", "bytes_down"), 0)
        self._links = set()
        self._held = 0
        self._loop = None
        self._thread = None
        self._server = None
        self._open = None          # asyncio.Event, set while forwarding

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def is_running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.is_running():
            return self
        if self._sock is None:
            raise RuntimeError("%s was stopped" % self.name)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed = []
        self._thread = threading.Thread(target=self._run, args=(ready, failed),
                                        name="LinkProxy %s" % self.name, daemon=True)
        self._thread.start()
        if not ready.wait(10) or failed:
            raise RuntimeError("%s did not start: %r" % (self.name, failed))
        return self

    def _run(self, ready, failed):
        asyncio.set_event_loop(self._loop)
        try:
            self._open = asyncio.Event()
            if self.mode == "forward":
                self._open.set()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, sock=self._sock))
        except Exception as e:  # noqa: BLE001 - reported by start()
            failed.append(repr(e))
            ready.set()
            return
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _call(self, fn, timeout=10):
        """Runs fn() in the proxy's loop and returns its result."""
        async def wrapper():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    # -- modes --------------------------------------------------------------

    def set_mode(self, mode):
        """Switches mode; returns once it applies (with "drop", once every
        open connection is aborted)."""
        if mode not in self.MODES:
            raise ValueError("mode must be one of %r, not %r" % (self.MODES, mode))
        if not self.is_running():
            self.mode = mode
            return

        def apply():
            self.mode = mode
            if mode == "forward":
                self._open.set()
                return
            self._open.clear()
            if mode == "drop":
                for link in list(self._links):
                    self._counts["aborted"] += 1
                    link.abort()
        self._call(apply)

    def stats(self):
        """A snapshot of the counters (see the class doc)."""
        def snap():
            d = dict(self._counts)
            d.update(mode=self.mode, active=len(self._links), held=self._held)
            return d
        if not self.is_running():
            d = dict(self._counts)
            d.update(mode=self.mode, active=0, held=0)
            return d
        return self._call(snap)

    # -- connections --------------------------------------------------------

    class _Link:
        def __init__(self, writer):
            self.down = writer       # towards the connecting broker
            self.up = None           # towards the proxied broker
            self.task = asyncio.current_task()

        def _end_task(self):
            t = self.task
            if t is not None and t is not asyncio.current_task() and not t.done():
                t.cancel()

        def abort(self):
            """Both sockets closed at once, unsent bytes dropped."""
            for w in (self.down, self.up):
                if w is not None:
                    w.transport.abort()
            self._end_task()

        def close(self):
            """Both sockets closed after what was written to them is sent."""
            for w in (self.down, self.up):
                if w is not None and not w.transport.is_closing():
                    w.close()
            self._end_task()

    async def _handle(self, reader, writer):
        self._counts["accepted"] += 1
        if self.mode == "drop" or len(self._links) >= self.max_conns:
            self._counts["aborted_on_accept"] += 1
            writer.transport.abort()
            return
        link = self._Link(writer)
        self._links.add(link)
        try:
            if not self._open.is_set():
                self._held += 1
                try:
                    await self._open.wait()
                finally:
                    self._held -= 1
            try:
                up_reader, link.up = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                self._counts["upstream_failures"] += 1
                return
            await asyncio.gather(self._pump(reader, link.up, link, "bytes_up"),
                                 self._pump(up_reader, writer, link, "bytes_down"))
        except asyncio.CancelledError:
            pass
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(self, src, dst, link, counter):
        try:
            while True:
                data = await src.read(self.CHUNK)
                if not data:
                    break
                if not self._open.is_set():
                    self._held += 1
                    try:
                        await self._open.wait()
                    finally:
                        self._held -= 1
                dst.write(data)
                await dst.drain()
                self._counts[counter] += len(data)
        except (OSError, ConnectionError):
            pass
        finally:
            # Kafka connections do not half-close: one end done, both done
            # (also ends the other direction, even while it is held).
            link.close()

    def stop(self):
        """Closes the listening socket and every connection; ends the thread."""
        if self.is_running():
            def shutdown():
                self._server.close()
                for link in list(self._links):
                    link.abort()
            try:
                self._call(shutdown)
                # let the cancelled handlers finish, then stop the loop
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), self._loop).result(5)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self):
        return "<LinkProxy %s -> %s:%d mode=%s>" % (self.address, self.target[0],
                                                     self.target[1], self.mode)


class Cluster:
    """n Runnel brokers (node ids 1..n) sharing one etcd and one cluster.id.

    `overrides` apply to every broker; `per_broker` is {node_id: {key: value}}
    on top (e.g. racks). Session timeout 3000 ms and heartbeat 500 ms unless
    overridden. Without `etcd`, the cluster starts (and stops) its own.

    With `proxied`, each broker has two listeners: PLAINTEXT on `port` (for
    clients, as without it) and INTERNAL on a port of its own, which is
    `inter.broker.listener.name` and is advertised as the address of the
    broker's LinkProxy (`proxy(id)`), so every fetch from that broker's
    partitions goes through the proxy: `cut(id, mode)` / `heal(id)`."""

    def __init__(self, n, overrides=None, etcd=None, cluster_id=None, per_broker=None,
                 proxied=False):
        self.proxied = proxied
        self._own_etcd = etcd is None
        self.etcd = etcd if etcd is not None else EtcdServer()
        self.cluster_id = cluster_id or new_cluster_id()
        self.overrides = {
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
        }
        self.overrides.update({k: str(v) for k, v in (overrides or {}).items()})
        self.per_broker = {int(k): dict(v) for k, v in (per_broker or {}).items()}
        self.tmp = tempfile.mkdtemp(prefix="runnel-cluster-")
        self.brokers = {}      # node id -> Broker
        self.extra = []        # brokers made by new_broker() outside 1..n
        self.paused = set()
        for node_id in range(1, n + 1):
            self.brokers[node_id] = self._make(node_id, self.per_broker.get(node_id, {}))

    @property
    def prefix(self):
        return self.overrides.get("metadata.store.prefix", "/runnel/%s" % self.cluster_id)

    @property
    def session_timeout(self):
        """broker.session.timeout.ms in seconds."""
        return int(self.overrides["broker.session.timeout.ms"]) / 1000.0

    def broker_overrides(self, node_id, port, extra=None, internal_port=None, proxy_port=None):
        """The broker's --override settings; with `internal_port`, a second
        listener INTERNAL on it for replication, advertised as
        127.0.0.1:`proxy_port` (its LinkProxy)."""
        ov = {
            "node.id": str(node_id),
            "cluster.id": self.cluster_id,
            "metadata.store.endpoints": self.etcd.endpoint,
            "listeners": "PLAINTEXT://127.0.0.1:%d" % port,
            "advertised.listeners": "PLAINTEXT://127.0.0.1:%d" % port,
        }
        if internal_port is not None:
            ov.update({
                "listeners": "PLAINTEXT://127.0.0.1:%d,INTERNAL://127.0.0.1:%d"
                             % (port, internal_port),
                "advertised.listeners": "PLAINTEXT://127.0.0.1:%d,INTERNAL://127.0.0.1:%d"
                                        % (port, proxy_port or internal_port),
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
                "inter.broker.listener.name": "INTERNAL",
            })
        ov.update(self.overrides)
        ov.update({k: str(v) for k, v in (extra or {}).items()})
        return ov

    def _make(self, node_id, extra, name=None):
        port = free_port()
        workdir = Path(self.tmp) / (name or "broker-%d" % node_id)
        workdir.mkdir(parents=True, exist_ok=True)
        if not self.proxied:
            return Broker(workdir=workdir, port=port,
                          overrides=self.broker_overrides(node_id, port, extra))
        internal = free_port()
        while internal == port:
            internal = free_port()
        proxy = LinkProxy(internal, name="node %d INTERNAL" % node_id)
        b = Broker(workdir=workdir, port=port,
                   overrides=self.broker_overrides(node_id, port, extra, internal_port=internal,
                                                   proxy_port=proxy.port))
        b.internal_port = internal
        b.link_proxy = proxy
        return b

    def new_broker(self, node_id, overrides=None, name=None):
        """A broker of this cluster (same etcd, cluster.id and defaults) that
        is not one of 1..n and is not started; stopped at teardown."""
        b = self._make(node_id, overrides or {},
                       name=name or "extra-%d-%d" % (node_id, len(self.extra)))
        self.extra.append(b)
        if getattr(b, "link_proxy", None) is not None:
            b.link_proxy.start()
        return b

    # -- lifecycle --------------------------------------------------------

    def start(self, wait=True, timeout=15):
        """Starts etcd (if the cluster owns it) and every broker; with `wait`,
        until every broker lists all of them."""
        if self._own_etcd and not self.etcd.is_running():
            self.etcd.start()
        for b in self.all_brokers():
            if getattr(b, "link_proxy", None) is not None:
                b.link_proxy.start()
        for b in self.brokers.values():
            if not b.is_running():
                b.start()
        if wait:
            self.wait_for_members(self.node_ids(), timeout=timeout)
        return self

    def node_ids(self):
        return sorted(self.brokers)

    def running_ids(self):
        return sorted(i for i, b in self.brokers.items() if b.is_running())

    def live_ids(self):
        """Running and not paused."""
        return [i for i in self.running_ids() if i not in self.paused]

    def broker(self, node_id):
        return self.brokers[node_id]

    def bootstrap(self, node_ids=None):
        ids = node_ids if node_ids is not None else self.node_ids()
        return ",".join(self.brokers[i].bootstrap for i in ids)

    def pause(self, node_id):
        b = self.brokers[node_id]
        if not b.is_running():
            raise BrokerError("broker %d is not running" % node_id)
        os.kill(b.proc.pid, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id):
        b = self.brokers[node_id]
        if b.is_running():
            os.kill(b.proc.pid, signal.SIGCONT)
        self.paused.discard(node_id)

    # -- inter-broker links (proxied clusters) --------------------------------

    def proxy(self, node_id):
        """The LinkProxy in front of broker `node_id`'s inter-broker listener."""
        if not self.proxied:
            raise BrokerError("not a proxied cluster (Cluster(..., proxied=True))")
        return self.brokers[node_id].link_proxy

    def cut(self, node_id, mode="drop"):
        """Cuts broker `node_id` off from every broker fetching from it (its
        followers): mode "drop" (connections reset, fail fast) or
        "blackhole" (accepted, nothing forwarded: a hang). Its own fetches
        from other leaders and every client connection are untouched."""
        if mode not in ("drop", "blackhole"):
            raise ValueError("mode must be 'drop' or 'blackhole', not %r" % (mode,))
        self.proxy(node_id).set_mode(mode)

    def heal(self, node_id=None):
        """Forwarding again for broker `node_id` (default: every broker)."""
        ids = [node_id] if node_id is not None else self.node_ids()
        for i in ids:
            self.proxy(i).set_mode("forward")

    def teardown(self):
        """Stops every broker (resuming paused ones first; SIGKILL if SIGTERM
        does not work), their link proxies and the cluster's own etcd;
        removes the temp dirs."""
        for node_id in list(self.paused):
            try:
                self.resume(node_id)
            except OSError:
                pass
        for b in list(self.brokers.values()) + self.extra:
            try:
                if b.is_running():
                    b.stop(expect_clean=False)
            except Exception:  # noqa: BLE001 - teardown must go on
                b.kill9()
            finally:
                b.cleanup()
        for b in list(self.brokers.values()) + self.extra:
            proxy = getattr(b, "link_proxy", None)
            if proxy is not None:
                try:
                    proxy.stop()
                except Exception:  # noqa: BLE001 - teardown must go on
                    pass
        if self._own_etcd:
            self.etcd.cleanup()
        if not os.environ.get("RUNNEL_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def all_brokers(self):
        return list(self.brokers.values()) + self.extra

    # -- what the brokers say ----------------------------------------------

    def metadata(self, node_id, timeout=5.0):
        """Metadata v1 (no topics) sent to exactly this broker over a raw
        connection: {"brokers": {id: (host, port, rack)}, "controller_id": id}."""
        b = self.brokers[node_id] if isinstance(node_id, int) else node_id
        with kw.KafkaConn("127.0.0.1", b.port, timeout=timeout) as conn:
            r = conn.request(kw.API_METADATA, 1, kw.metadata_v1_body([]))
            md = kw.parse_metadata_v1(r)
        return {
            "brokers": {x["node_id"]: (x["host"], x["port"], x["rack"])
                        for x in md["brokers"] or []},
            "controller_id": md["controller_id"],
        }

    def members(self, node_id, timeout=5.0):
        """The sorted node ids broker `node_id` lists."""
        return sorted(self.metadata(node_id, timeout)["brokers"])

    def views(self, node_ids=None):
        """{node id: metadata(node id)} for the given (default: live) brokers."""
        ids = node_ids if node_ids is not None else self.live_ids()
        return {i: self.metadata(i) for i in ids}

    def agreed(self, expected_ids, on=None, exclude_controller=None):
        """The common controller id when every broker in `on` (default: the
        live ones) lists exactly `expected_ids` and the same elected
        controller (one of them, and not `exclude_controller`); else None."""
        views = self.views(on)
        expected = sorted(expected_ids)
        controllers = {v["controller_id"] for v in views.values()}
        if any(sorted(v["brokers"]) != expected for v in views.values()):
            return None
        if len(controllers) != 1:
            return None
        (ctl,) = controllers
        if ctl not in expected or ctl == exclude_controller:
            return None
        return ctl

    def wait_for_members(self, expected_ids, on=None, timeout=15, exclude_controller=None):
        """Waits until agreed(...) holds; the controller id."""
        def cond():
            return self.agreed(expected_ids, on, exclude_controller) or None
        last = {}

        def probe():
            try:
                last["views"] = self.views(on)
            except Exception as e:  # noqa: BLE001
                last["views"] = e
            return cond()
        try:
            return wait_until(probe, timeout,
                              what="brokers %s to list %s and agree on a controller"
                              % (on if on is not None else self.live_ids(), sorted(expected_ids)))
        except AssertionError as e:
            raise AssertionError("%s\nlast views: %r" % (e, last.get("views"))) from None

    def controller(self, node_id=None):
        """The controller id as seen by `node_id` (default: the first live broker)."""
        return self.metadata(node_id if node_id is not None else self.live_ids()[0])[
            "controller_id"]

    def etcd_state(self):
        """{key relative to the prefix: (value, lease)} straight from etcd."""
        pre = self.prefix + "/"
        return {k[len(pre):]: v for k, v in self.etcd.get_prefix(pre).items()}

    def registered_ids(self):
        return sorted(int(k.split("/", 1)[1]) for k in self.etcd_state()
                      if k.startswith("brokers/"))

    def controller_epoch(self):
        v = self.etcd_state().get("controller_epoch")
        return int(v[0]) if v else None

    def logs(self, lines=40):
        parts = []
        for b in self.all_brokers():
            state = "running" if b.is_running() else "NOT running (rc=%s)" % (
                b.proc.returncode if b.proc else None)
            proxy = getattr(b, "link_proxy", None)
            if proxy is not None:
                state += ", inter-broker via %r" % proxy
            parts.append("--- %s node.id=%s [%s] %s ---\n%s" % (
                b.bootstrap, b.overrides.get("node.id"), state, b.log_path, b.log_tail(lines)))
        parts.append("--- etcd %s [%s] ---\n%s" % (
            self.etcd.endpoint, "running" if self.etcd.is_running() else "stopped",
            self.etcd.log_tail(15)))
        return "\n".join(parts)
