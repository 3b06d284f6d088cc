"""Live check of the dashboard and the alerts: a real Prometheus scraping two real gateways.

Run by deploy/check.sh as
  `python prometheus.py REPO BIN_DIR PROMETHEUS_BIN WORK_DIR`.
Starts on loopback, on free ports: a redis-server, two gateway nodes sharing it (A and B;
B with a small --max-connections and send queue), a third node C serving HTTPS
(--tls-cert, a certificate made with openssl; embedded broker), and Prometheus scraping all
three every second with deploy/prometheus/alerts.yaml loaded. Then drives a little real
traffic:
- sse-load: job streams on A with events published over HTTP; user streams on B with
  events published to Redis by the SDK; clients resuming with Last-Event-ID (replays);
- a client that stops reading while 32 KiB events arrive, until B cuts it as a slow consumer;
- B filled to --max-connections, then one stream more (refused: node_limit);
- requests with refused tokens (malformed, bad signature) on both nodes;
- Redis killing the nodes' pub/sub connections four times (broker reconnects);
- on C: HTTPS requests, plain HTTP sent to its HTTPS port, a client that connects and
  leaves (TLS handshakes by result), and a certificate reload by SIGHUP.
And checks, through Prometheus' HTTP API:
- every alerting rule is loaded and evaluates without error, and the ones this traffic
  provokes become pending or firing on real metrics: SseGatewayNearCapacity and
  SseGatewayNodeFull for B, SseGatewayAuthFailureSpike, SseGatewayBrokerReconnects;
- every variable of deploy/grafana/sse-gateway.json returns values, and every panel target
  (read from the JSON, template variables substituted) parses and returns at least one
  series with a number in it over the traffic's time range: no panel is silently empty.
Prints nothing and exits 0 when all hold (with -v as a fifth argument: what it saw);
otherwise one line per failure, exit 1. Everything it starts is stopped by PID at the end, whatever happens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

SECRET = "prometheus-check-secret-not-used-anywhere-0123456789"
OTHER_SECRET = "some-other-secret-that-the-gateway-does-not-know-0123"
SCRAPE_SECONDS = 1
# What Grafana puts for $__rate_interval: max($__interval + scrape, 4 × scrape).
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"
# B's limits: small enough to fill, large enough for the sse-load runs on B.
B_MAX_CONNECTIONS = 24
B_SEND_QUEUE_BYTES = 65536
WAIT_SECONDS = 30
AUTH_FAILURES = 80
BROKER_KILLS = 4
# Alerts this traffic must provoke, with the labels that must match.
EXPECTED_ALERTS = [
    ("SseGatewayNearCapacity", "B"),
    ("SseGatewayNodeFull", "B"),
    ("SseGatewayAuthFailureSpike", None),
    ("SseGatewayBrokerReconnects", "A"),
    ("SseGatewayBrokerReconnects", "B"),
]

failures: list[str] = []
verbose = sys.argv[5:] == ["-v"]


def note(text: str) -> None:
    if verbose:
        print(text, file=sys.stderr)


class CheckFailed(Exception):
    pass


def fail(text: str) -> None:
    failures.append(text)


def wait_until(what: str, condition: Callable[[], object], timeout: float = WAIT_SECONDS) -> object:
    """Polls `condition` until it returns something truthy; raises CheckFailed on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, role: str | None = None, secret: str = SECRET) -> str:
    """An HS256 JWT, as the gateway's `mint-token` makes it."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + 3600}
    if role:
        claims["role"] = role
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


class Processes:
    """What this check started, stopped by PID at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Node:
    """One gateway process and its addresses (from its JSON start-up line)."""

    def __init__(self, name: str, process: subprocess.Popen, log: Path) -> None:
        self.name, self.process, self.log = name, process, log
        self.addr = self.metrics_addr = ""

    def read_addresses(self) -> bool:
        if self.process.poll() is not None:
            raise CheckFailed(f"gateway {self.name} exited: {self.log.read_text()[-2000:]}")
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except json.JSONDecodeError:
                continue
            if fields.get("message") == "listening":
                self.addr, self.metrics_addr = fields["addr"], fields["metrics_addr"]
                return True
        return False

    def metric(self, name: str) -> float:
        """The sum of a metric's samples in this node's own /metrics."""
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def request(self, method: str, path: str, bearer: str | None = None,
                body: dict | None = None) -> tuple[int, bytes]:
        host, port = self.addr.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if bearer is not None:
                headers["Authorization"] = f"Bearer {bearer}"
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def test_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signs for 127.0.0.1 (openssl, P-256): (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=check CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "key.pem", "-out", "csr.pem", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "csr.pem", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


def tls_traffic(c: Node, ca: Path) -> None:
    """HTTPS on C: good handshakes, plain HTTP on the HTTPS port (protocol), a client that
    connects and leaves (closed), then a certificate reload (SIGHUP, the files unchanged)."""
    context = ssl.create_default_context(cafile=str(ca))
    for _ in range(3):
        with urllib.request.urlopen(f"https://{c.addr}/healthz", context=context, timeout=5) as response:
            if response.status != 200:
                raise CheckFailed(f"C: GET /healthz over HTTPS answered {response.status}")
    host, port = c.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
        try:
            plain.recv(100)
        except OSError:
            pass
    socket.create_connection((host, int(port)), timeout=5).close()
    wait_until("C counts 3 good and 2 failed handshakes",
               lambda: c.metric("sse_gateway_tls_handshakes_total") >= 5)
    c.process.send_signal(signal.SIGHUP)
    wait_until("C reloads its certificate on SIGHUP",
               lambda: c.metric("sse_gateway_tls_certificate_reloads_total") >= 1)


def open_stream(addr: str, path: str, bearer: str, receive_buffer: int | None = None) -> tuple[int, socket.socket]:
    """Opens an SSE request on a raw socket; returns the status and the socket (left open)."""
    host, port = addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Before connect, so the advertised window stays small: the client reads nothing
        # more and the node's writes back up into its send queue.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n"
                 f"Authorization: Bearer {bearer}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return (int(match.group(1)) if match else 0), sock


def redis_command(port: int, *args: str) -> bytes:
    """One RESP command to the check's own redis-server; returns the raw reply."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload.encode())
        return sock.recv(65536)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, params: dict | list | None = None) -> dict:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return json.loads(body)
            except json.JSONDecodeError:
                return {"status": "error", "error": f"HTTP {error.code}: {body[:200]!r}"}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def instant(self, query: str) -> list:
        answer = self.get("/api/v1/query", {"query": query})
        if answer.get("status") != "success":
            raise CheckFailed(f"query {query!r}: {answer.get('error')}")
        return answer["data"]["result"]


# ---- the dashboard

def grafana_values(dashboard: dict, window_seconds: int) -> dict[str, str]:
    """What each template variable and built-in stands for in this check's queries."""
    values = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": f"{SCRAPE_SECONDS}s",
        "__interval_ms": str(SCRAPE_SECONDS * 1000),
        "__range": f"{window_seconds}s",
        "__range_s": str(window_seconds),
        "__range_ms": str(window_seconds * 1000),
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") in ("query", "custom", "interval", "constant", "textbox"):
            # "All" selected: Grafana puts the variable's allValue (or a regex of every value).
            values[variable["name"]] = variable.get("allValue") or ".+"
    return values


VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> tuple[str, set[str]]:
    unknown: set[str] = set()

    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            unknown.add(name)
            return match.group(0)
        return values[name]

    return VARIABLE.sub(one, expr), unknown


def panels_of(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def check_variables(prom: Prometheus, dashboard: dict, values: dict[str, str], start: float, end: float) -> None:
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        text, unknown = substitute(query or "", values)
        if unknown:
            fail(f"variable {variable['name']}: unknown variables {sorted(unknown)}")
            continue
        match = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*", text)
        if match:
            params = [("start", str(start)), ("end", str(end))]
            if match.group(1):
                params.append(("match[]", match.group(1).strip()))
            answer = prom.get(f"/api/v1/label/{match.group(2)}/values", params)
            found = answer.get("data") if answer.get("status") == "success" else None
        else:
            answer = prom.get("/api/v1/query", {"query": text, "time": str(end)})
            found = answer.get("data", {}).get("result") if answer.get("status") == "success" else None
        if found is None:
            fail(f"variable {variable['name']}: {text!r}: {answer.get('error')}")
        elif not found:
            fail(f"variable {variable['name']}: {text!r} returned no values")


def check_panels(prom: Prometheus, dashboard: dict, values: dict[str, str], start: float, end: float) -> int:
    queried = 0
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            where = f"panel {panel.get('title')!r} target {target.get('refId')}"
            text, unknown = substitute(expr, values)
            if unknown:
                fail(f"{where}: unknown variables {sorted(unknown)} in {expr!r}")
                continue
            queried += 1
            if target.get("instant") and not target.get("range"):
                answer = prom.get("/api/v1/query", {"query": text, "time": str(end)})
                series = answer.get("data", {}).get("result", [])
                samples = [[s["value"]] for s in series]
            else:
                answer = prom.get("/api/v1/query_range", {
                    "query": text, "start": str(start), "end": str(end), "step": str(SCRAPE_SECONDS)})
                series = answer.get("data", {}).get("result", [])
                samples = [s["values"] for s in series]
            if answer.get("status") != "success":
                fail(f"{where}: {text!r}: {answer.get('errorType')}: {answer.get('error')}")
            elif not series:
                fail(f"{where}: {text!r} returned no series")
            elif not any(not math.isnan(float(v)) for values_ in samples for _, v in values_):
                fail(f"{where}: {text!r} returned only NaN")
            else:
                peak = max(float(v) for values_ in samples for _, v in values_ if not math.isnan(float(v)))
                note(f"{len(series):3} series, max {peak:<10.4g} {where}")
    return queried


# ---- the traffic

def run_load(bin_dir: Path, work: Path, name: str, args: list[str]) -> None:
    log = work / f"load-{name}.log"
    with open(log, "wb") as out:
        code = subprocess.run([str(bin_dir / "sse-load"), "--jwt-secret", SECRET, "--assert-clean",
                               "--max-duration", "30s", "--threads", "1", *args],
                              stdout=out, stderr=subprocess.STDOUT, timeout=45).returncode
    if code != 0:
        raise CheckFailed(f"sse-load {name} failed ({code}): {log.read_text()[-1500:]}")


def wait_idle(node: Node) -> None:
    """Until the node has closed every stream of the previous step (B's limit is small)."""
    wait_until(f"{node.name} to close the previous streams",
               lambda: node.metric("sse_gateway_open_connections") == 0)


def slow_consumer(a: Node, b: Node) -> None:
    """A client on B that stops reading while 32 KiB events arrive, until B cuts it."""
    publisher = token("check-worker", role="publisher")
    status, body = a.request("POST", "/v1/jobs/slow-job/events", publisher,
                             {"owner": "slow-user", "type": "progress", "data": {"progress": 0}})
    if status != 201:
        raise CheckFailed(f"publish to slow-job: {status} {body[:200]!r}")
    status, stuck = open_stream(b.addr, "/v1/jobs/slow-job/events", token("slow-user"), receive_buffer=4096)
    try:
        if status != 200:
            raise CheckFailed(f"the slow client's stream on B: {status}")
        blob = "x" * 32 * 1024
        host, port = a.addr.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            for n in range(400):  # at most ~13 MB; B cuts it after a few hundred KiB
                connection.request("POST", "/v1/jobs/slow-job/events",
                                   body=json.dumps({"type": "log", "data": {"n": n, "blob": blob}}),
                                   headers={"Authorization": f"Bearer {publisher}",
                                            "Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status != 201:
                    raise CheckFailed(f"publish {n} to slow-job: {response.status}")
                if n % 10 == 9 and b.metric("sse_gateway_slow_consumer_disconnects_total") >= 1:
                    return
        finally:
            connection.close()
        wait_until("B to cut the slow client",
                   lambda: b.metric("sse_gateway_slow_consumer_disconnects_total") >= 1, timeout=10)
    finally:
        stuck.close()


def fill_node(b: Node) -> list[socket.socket]:
    """Streams on B up to --max-connections, then one more, which must be refused."""
    held: list[socket.socket] = []
    for n in range(B_MAX_CONNECTIONS * 2):
        status, sock = open_stream(b.addr, "/v1/users/me/events", token(f"cap-user-{n // 16}"))
        if status == 200:
            held.append(sock)
            continue
        sock.close()
        if status != 503:
            raise CheckFailed(f"stream {n} on the full node B answered {status}, expected 503")
        return held
    raise CheckFailed(f"B accepted {len(held)} streams with --max-connections {B_MAX_CONNECTIONS}")


def refused_tokens(nodes: list[Node]) -> None:
    wrong_key = token("intruder", secret=OTHER_SECRET)
    for n in range(AUTH_FAILURES):
        node = nodes[n % len(nodes)]
        bearer = "not-a-token" if n % 2 else wrong_key
        status, _ = node.request("GET", "/v1/jobs/any-job/events", bearer)
        if status != 401:
            raise CheckFailed(f"a refused token got {status}, expected 401")


def broker_reconnects(redis_port: int, nodes: list[Node]) -> None:
    for round_ in range(1, BROKER_KILLS + 1):
        redis_command(redis_port, "CLIENT", "KILL", "TYPE", "pubsub")
        wait_until(f"every node to reconnect to Redis ({round_})",
                   lambda: all(n.metric("sse_gateway_broker_reconnects_total") >= round_ and
                               n.metric("sse_gateway_broker_ready") == 1 for n in nodes))


def alerts_active(prom: Prometheus, nodes: dict[str, Node]) -> list[str]:
    """The expected alerts that are not yet pending or firing."""
    answer = prom.get("/api/v1/alerts")
    active = [a["labels"] for a in answer.get("data", {}).get("alerts", [])]
    missing = []
    for name, node in EXPECTED_ALERTS:
        instance = nodes[node].metrics_addr if node else None
        if not any(labels.get("alertname") == name and (instance is None or labels.get("instance") == instance)
                   for labels in active):
            missing.append(f"{name}" + (f" for {node}" if node else ""))
    return missing


def main() -> int:
    repo, bin_dir, prometheus_bin, work = (Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    shutil.rmtree(work, ignore_errors=True)
    (work / "tsdb").mkdir(parents=True)
    rules_file = repo / "deploy/prometheus/alerts.yaml"
    dashboard = json.loads((repo / "deploy/grafana/sse-gateway.json").read_text())
    rule_names = {r["alert"] for g in yaml.safe_load(rules_file.read_text())["groups"]
                  for r in g["rules"] if "alert" in r}

    began = time.time()
    processes = Processes()
    held: list[socket.socket] = []
    try:
        redis_port = free_port()
        processes.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no"], work / "redis.log")
        wait_until("redis-server", lambda: _redis_up(redis_port))
        common = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--jwt-secret", SECRET,
                  "--redis-url", f"redis://127.0.0.1:{redis_port}", "--log-format", "json",
                  "--drain-timeout", "2s"]
        a = Node("A", processes.start([str(bin_dir / "sse-gateway"), *common], work / "a.log"), work / "a.log")
        b = Node("B", processes.start([str(bin_dir / "sse-gateway"), *common,
                                       "--max-connections", str(B_MAX_CONNECTIONS),
                                       "--send-queue-bytes", str(B_SEND_QUEUE_BYTES)],
                                      work / "b.log"), work / "b.log")
        ca, cert, key = test_certificate(work / "tls")
        c = Node("C", processes.start([str(bin_dir / "sse-gateway"), "--listen", "127.0.0.1:0",
                                       "--metrics-listen", "127.0.0.1:0", "--jwt-secret", SECRET,
                                       "--log-format", "json", "--drain-timeout", "2s",
                                       "--tls-cert", str(cert), "--tls-key", str(key)],
                                      work / "c.log"), work / "c.log")
        wait_until("gateway A's addresses", a.read_addresses)
        wait_until("gateway B's addresses", b.read_addresses)
        wait_until("gateway C's addresses", c.read_addresses)
        nodes = {"A": a, "B": b, "C": c}

        prom_port = free_port()
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS}s",
                       "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(rules_file)],
            "scrape_configs": [{
                "job_name": "sse-gateway",
                # A namespace label as the Prometheus Operator adds, for the dashboard's
                # namespace variable and the rules' `by (namespace, job)`.
                "static_configs": [{"targets": [a.metrics_addr, b.metrics_addr, c.metrics_addr],
                                    "labels": {"namespace": "check"}}],
            }],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        processes.start([prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
                         f"--storage.tsdb.path={work / 'tsdb'}",
                         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                        work / "prometheus.log")
        prom = Prometheus(prom_port)
        wait_until("Prometheus to be ready", prom.ready)
        wait_until("the three nodes scraped", lambda: len(prom.instant('up{job="sse-gateway"} == 1')) == 3)
        start = time.time() - 2
        note(f"{time.time() - began:.1f}s: redis, A, B, C up; Prometheus scraping (its first scrape waits ~5 s)")

        # Streams, deliveries, publishes (HTTP on A, SDK through Redis for B), replays.
        run_load(bin_dir, work, "a-jobs", ["--url", f"http://{a.addr}", "--topics", "4", "--connections", "40",
                                           "--publish", "http", "--events", "200", "--rate", "100",
                                           "--topic-prefix", "pa"])
        run_load(bin_dir, work, "b-users", ["--url", f"http://{b.addr}", "--stream", "user", "--topics", "4",
                                            "--connections", "16", "--publish", "sdk-redis",
                                            "--redis-url", f"redis://127.0.0.1:{redis_port}",
                                            "--events", "200", "--rate", "100", "--topic-prefix", "pb"])
        wait_idle(b)
        run_load(bin_dir, work, "b-resume", ["--url", f"http://{b.addr}", "--topics", "1", "--connections", "10",
                                             "--publish", "http", "--resume-history", "30", "--topic-prefix", "pr"])
        wait_idle(b)
        slow_consumer(a, b)
        refused_tokens([a, b])
        broker_reconnects(redis_port, [a, b])
        tls_traffic(c, ca)
        wait_idle(b)
        held = fill_node(b)
        note(f"{time.time() - began:.1f}s: traffic done; B holds {len(held)} streams")

        # Rules: all loaded, all evaluated without error; the provoked ones pending or firing.
        def rules_evaluated() -> list[dict] | None:
            groups = prom.get("/api/v1/rules").get("data", {}).get("groups", [])
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("health") != "unknown" for r in rules) else None

        rules = wait_until("every rule evaluated once", rules_evaluated)
        loaded = {r["name"] for r in rules if r.get("type") == "alerting"}
        if loaded != rule_names:
            fail(f"Prometheus loaded the alerts {sorted(loaded)}, alerts.yaml has {sorted(rule_names)}")
        for rule in rules:
            if rule.get("health") != "ok" or rule.get("lastError"):
                fail(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
        try:
            wait_until("the provoked alerts", lambda: not alerts_active(prom, nodes))
        except CheckFailed:
            fail(f"not pending or firing on real metrics: {', '.join(alerts_active(prom, nodes))}")
        note("alerts: " + ", ".join(sorted(f"{alert['labels']['alertname']}({alert['state']})"
                                           for alert in prom.get("/api/v1/alerts")["data"]["alerts"])))
        for sock in held:
            sock.close()
        held = []

        # Every panel, over the traffic's time range, after one more scrape of both nodes.
        scraped_after = time.time()
        wait_until("a scrape of the three nodes after the traffic", lambda: sum(
            float(s["value"][1]) > scraped_after
            for s in prom.instant('timestamp(up{job="sse-gateway"})')) == 3)
        end = time.time()
        values = grafana_values(dashboard, int(end - start) + 1)
        check_variables(prom, dashboard, values, start, end)
        if check_panels(prom, dashboard, values, start, end) == 0:
            fail("the dashboard has no panel targets")
        note(f"{time.time() - began:.1f}s: panels queried")
    except CheckFailed as error:
        fail(str(error))
    finally:
        for sock in held:
            sock.close()
        processes.stop_all()
    for line in failures:
        print(line)
    return 1 if failures else 0


def _redis_up(port: int) -> bool:
    try:
        return redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
