"""Real processes for the tests: redis-server (alone, with TLS, or as a Redis Cluster), the
gateway binary, and a TCP proxy that can lose an answer on purpose. Each is started on a
free loopback port, waited for by condition (never a fixed sleep), and stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent.parent
FIXTURES = REPO / "publisher-sdk" / "wire" / "fixtures" / "wire-cases.json"
WIRE_LUA = REPO / "publisher-sdk" / "wire" / "lua"
#: The gateway binary: `cargo build -p sse-gateway` (check.sh builds it).
GATEWAY_BIN = Path(os.environ.get("SSE_GATEWAY_BIN", REPO / "target" / "debug" / "sse-gateway"))
JWT_SECRET = "python-sdk-tests-secret-0123456789abcdef"
#: For assertion clients: fail at once (redis-py retries connection errors by default).
NO_RETRY = Retry(NoBackoff(), 0)
#: How long a started process may take to be ready.
START_TIMEOUT = 15.0


def fixtures() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURES.read_text(encoding="utf-8"))
    return document


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "a condition") -> None:
    """Polls `condition` every 10 ms until it holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    """A loopback port that was free a moment ago, below the kernel's ephemeral range
    when it can be (so no outgoing connection takes it while a server restarts on it),
    with port + 10000 free too (a cluster node's bus port)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = low - 10_000
    for _ in range(1000):
        port = random.randrange(12_000, top) if top > 13_000 else 0
        if port and _bindable(port) and _bindable(port + 10_000):
            return port
        if not port:
            break
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port_: int = sock.getsockname()[1]
        return port_


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, sig)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=wait)


Entry = tuple[str, dict[str, str]]


class Inspector:
    """Typed reads and writes on a Redis, for assertions (replies decoded as text)."""

    def __init__(self, client: redis.Redis) -> None:
        self.raw = client

    def command(self, *args: object) -> Any:
        return self.raw.execute_command(*args)  # type: ignore[no-untyped-call]

    def xrange(self, key: str, start: str = "-", end: str = "+") -> list[Entry]:
        return [(str(i), dict(f)) for i, f in self.command("XRANGE", key, start, end)]

    def last_id(self, key: str) -> str:
        return str(self.command("XREVRANGE", key, "+", "-", "COUNT", 1)[0][0])

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.command("HGETALL", key))

    def hget(self, key: str, field: str) -> str | None:
        value = self.command("HGET", key, field)
        return None if value is None else str(value)

    def get(self, key: str) -> str | None:
        value = self.command("GET", key)
        return None if value is None else str(value)

    def pttl(self, key: str) -> int:
        return int(self.command("PTTL", key))

    def exists(self, *keys: str) -> int:
        return int(self.command("EXISTS", *keys))

    def zrange(self, key: str) -> list[str]:
        return [str(member) for member in self.command("ZRANGE", key, 0, -1)]

    def keys(self, pattern: str) -> list[str]:
        return [str(key) for key in self.command("KEYS", pattern)]

    def pubsub(self) -> redis.client.PubSub:
        return self.raw.pubsub()


def next_message(pubsub: redis.client.PubSub, sharded: bool = False, timeout: float = 5.0) -> dict[str, Any]:
    """The next message on a subscription (`SSUBSCRIBE` when `sharded`), within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sharded:
            message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
        else:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return dict(message)
    raise AssertionError(f"no message within {timeout}s")


class RedisServer:
    """A `redis-server` child process on a free loopback port, no persistence."""

    def __init__(self, extra: list[str] | None = None, port: int | None = None, tls: TlsFiles | None = None) -> None:
        self.port = port or free_port()
        self.extra = list(extra or [])
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="sse-py-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.server_cert),
                "--tls-key-file",
                str(self.tls.server_key),
                "--tls-ca-cert-file",
                str(self.tls.ca_cert),
                "--tls-auth-clients",
                "optional",
            ]
        self.process = subprocess.Popen(
            args + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        try:
            wait_until(self._answers, START_TIMEOUT, f"redis-server on port {self.port}")
        except BaseException:
            self.close()  # never leave a server behind
            raise

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server on port {self.port} exited with {self.process.returncode}")
        try:
            return bool(self.client().raw.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers, asking for a password
        except redis.RedisError:
            return False

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    def client(self) -> Inspector:
        """A client for assertions (strings decoded)."""
        if self.tls is None:
            return Inspector(
                redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5, retry=NO_RETRY)
            )
        return Inspector(
            redis.Redis(
                host="127.0.0.1",
                port=self.port,
                decode_responses=True,
                socket_timeout=5,
                ssl=True,
                ssl_ca_certs=str(self.tls.ca_cert),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        )

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Masters (no replicas) of real redis-server processes, made a cluster by
    `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                self.nodes.append(
                    RedisServer(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "2000",
                        ]
                    )
                )
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *self.seeds, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert created.returncode == 0, created.stdout.decode(errors="replace")
            wait_until(self._healthy, 20, "the cluster to serve every slot")
        except BaseException:
            self.close()
            raise

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def _healthy(self) -> bool:
        for node in self.nodes:
            info = str(node.client().command("CLUSTER", "INFO"))
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        return True

    def node_of(self, key: str) -> RedisServer:
        """The master that serves `key`'s slot."""
        slot = int(self.nodes[0].client().command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in self.nodes[0].client().command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"no master serves slot {slot}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class TlsFiles:
    """A CA, and a server and a client certificate signed by it (openssl), in a temporary
    directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sse-py-tls-"))
        self.ca_cert, self.ca_key = self.dir / "ca.crt", self.dir / "ca.key"
        self.server_cert, self.server_key = self.dir / "server.crt", self.dir / "server.key"
        self.client_cert, self.client_key = self.dir / "client.crt", self.dir / "client.key"
        self._openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sse test CA",
            "-keyout",
            self.ca_key,
            "-out",
            self.ca_cert,
        )
        extensions = self.dir / "san.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for cert, key, name in (
            (self.server_cert, self.server_key, "127.0.0.1"),
            (self.client_cert, self.client_key, "worker"),
        ):
            request = self.dir / f"{name}.csr"
            self._openssl(
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", request
            )
            self._openssl(
                "x509",
                "-req",
                "-in",
                request,
                "-CA",
                self.ca_cert,
                "-CAkey",
                self.ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                extensions,
                "-out",
                cert,
            )

    def _openssl(self, *args: object) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """The `sse-gateway` binary on a free loopback port (embedded broker, or Redis)."""

    def __init__(self, redis_url: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        if not GATEWAY_BIN.exists():
            raise AssertionError(f"{GATEWAY_BIN} is missing: cargo build -p sse-gateway (check.sh does)")
        self.dir = Path(tempfile.mkdtemp(prefix="sse-py-gateway-"))
        self.log = self.dir / "gateway.log"
        args = [
            str(GATEWAY_BIN),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            JWT_SECRET,
            "--log-format",
            "json",
            "--drain-timeout",
            "1s",
        ]
        if redis_url is not None:
            args += ["--redis-url", redis_url]
        args += extra_args
        with self.log.open("wb") as out:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.addr = ""
        try:
            wait_until(self._listening, START_TIMEOUT, "the gateway's `listening` line")
        except BaseException:
            self.close()
            raise
        self.url = f"http://{self.addr}"

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the gateway exited: {self.log.read_text(errors='replace')[-2000:]}")
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "listening":
                self.addr = fields["addr"]
                return True
        return False

    def token(self, sub: str, role: str | None = None, secret: str = JWT_SECRET) -> str:
        args = [str(GATEWAY_BIN), "mint-token", "--jwt-secret", secret, "--sub", sub]
        if role:
            args += ["--role", role]
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout.strip()

    def publisher_token(self) -> str:
        return self.token("worker", "publisher")

    def job_state(self, job: str, owner: str) -> dict[str, Any]:
        import httpx

        response = httpx.get(f"{self.url}/v1/jobs/{job}", headers={"Authorization": f"Bearer {self.token(owner)}"})
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    def close(self) -> None:
        _stop(self.process, signal.SIGTERM)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class _Pair:
    """One proxied connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        #: Set once a triggering request went upstream: its answer is to be lost.
        self.cutting = False


class CuttingProxy:
    """A TCP proxy on a free loopback port in front of `upstream_port`. Bytes pass through
    both ways, except: the first `cuts` times a client sends bytes containing `trigger`,
    they are forwarded, and when the upstream's answer arrives (so the request was carried
    out) the proxy closes both connections instead of passing it on. So a publish happens
    and its answer is lost: its outcome is unknown to the client."""

    def __init__(self, upstream_port: int, trigger: bytes, cuts: int = 1) -> None:
        self.upstream_port = upstream_port
        self.trigger = trigger
        self.cuts_left = cuts
        #: Answers lost so far.
        self.cut = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._requests, args=(pair,), daemon=True).start()
            threading.Thread(target=self._answers, args=(pair,), daemon=True).start()

    def _requests(self, pair: _Pair) -> None:
        for data in _chunks(pair.client):
            with self._lock:
                cut = self.cuts_left > 0 and self.trigger in data
                if cut:
                    self.cuts_left -= 1
                    pair.cutting = True
            try:
                pair.upstream.sendall(data)
            except OSError:
                break
            if cut:
                return
        _close(pair.client, pair.upstream)

    def _answers(self, pair: _Pair) -> None:
        for data in _chunks(pair.upstream):
            if pair.cutting:
                with self._lock:
                    self.cut += 1
                break
            try:
                pair.client.sendall(data)
            except OSError:
                break
        _close(pair.client, pair.upstream)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            _close(pair.client, pair.upstream)


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
