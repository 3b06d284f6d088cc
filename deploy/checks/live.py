"""Live check: the probes and metrics the manifests rely on, asked of the real binary.

Run by deploy/check.sh as `python live.py REPO GATEWAY_BIN`. Starts the gateway on
ephemeral loopback ports (embedded broker), then checks:
- GET /healthz on the main listener: 200 {"status":"ok","node":"<16 hex digits>"}; GET /readyz: 200;
- GET /metrics on the metrics listener: Prometheus text with sse_gateway_open_connections;
- every sse_gateway_* metric named in deploy/, k8s/ and docs/operations.md exists
  (in that output, or registered in gateway/src/metrics.rs for labelled families that
  have no sample yet);
- SIGTERM: the process exits 0 within its --drain-timeout.
Prints nothing and exits 0 when all hold; otherwise one line per failure, exit 1.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DRAIN_SECONDS = 3
STARTUP_SECONDS = 15
SECRET = "live-check-secret-not-used-anywhere-0123456789"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def named_metrics(repo: Path) -> dict[str, str]:
    names = {}
    files = [p for top in ("deploy", "k8s") for p in (repo / top).rglob("*") if p.is_file()]
    files.append(repo / "docs" / "operations.md")
    for path in files:
        if not path.is_file() or "checks" in path.relative_to(repo).parts:
            continue
        for name in re.findall(r"\bsse_gateway_[a-z0-9_]+", path.read_text(errors="replace")):
            names.setdefault(re.sub(r"_(bucket|sum|count)$", "", name), str(path.relative_to(repo)))
    return names


def main() -> int:
    repo, binary = Path(sys.argv[1]), sys.argv[2]
    failures: list[str] = []
    process = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--log-format", "json", "--drain-timeout", f"{DRAIN_SECONDS}s", "--jwt-secret", SECRET],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"PATH": "/usr/bin:/bin"},
    )
    try:
        addr = metrics_addr = None
        deadline = time.monotonic() + STARTUP_SECONDS
        assert process.stdout is not None
        while time.monotonic() < deadline and addr is None:
            line = process.stdout.readline()
            if not line:
                break
            try:
                fields = json.loads(line).get("fields", {})
            except json.JSONDecodeError:
                continue
            if fields.get("message") == "listening":
                addr, metrics_addr = fields.get("addr"), fields.get("metrics_addr")
        if not addr or not metrics_addr:
            print("the gateway did not log its listening addresses")
            return 1

        status, body = get(f"http://{addr}/healthz")
        health = json.loads(body or "null")
        if status != 200 or not isinstance(health, dict) or health.get("status") != "ok" \
                or not re.fullmatch(r"[0-9a-f]{16}", str(health.get("node"))):
            failures.append(f"GET /healthz answered {status} {body!r}")
        status, body = get(f"http://{addr}/readyz")
        if status != 200:
            failures.append(f"GET /readyz answered {status} {body!r}")
        status, exposition = get(f"http://{metrics_addr}/metrics")
        if status != 200 or "sse_gateway_open_connections" not in exposition:
            failures.append(f"GET /metrics on the metrics listener answered {status} "
                            "without sse_gateway_open_connections")
        exported = set(re.findall(r"^# TYPE (sse_gateway_[a-z0-9_]+) ", exposition, re.M))
        source = (repo / "gateway/src/metrics.rs").read_text()
        registered = {f"sse_gateway_{n}" for n in re.findall(r'new\(\s*"([a-z0-9_]+)"', source)}
        for name, where in sorted(named_metrics(repo).items()):
            if name not in exported | registered:
                failures.append(f"{where}: metric {name} is not exported by the gateway")

        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=DRAIN_SECONDS + 2)
            if code != 0:
                failures.append(f"after SIGTERM the gateway exited with {code}")
        except subprocess.TimeoutExpired:
            failures.append(f"the gateway did not exit within --drain-timeout {DRAIN_SECONDS}s of SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
