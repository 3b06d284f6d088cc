"""Cluster check: `deploy/cluster.sh` (`make cluster`) on its default ports, for real.

Run by deploy/check.sh as `python cluster.py REPO BIN_DIR`, inside a private network
namespace (`netns.py`), so the default ports (nginx 8080, Redis 6390, nodes 8081.., metrics
9091..) are free and nothing else on the machine is touched. Checks that:
- with one of its ports taken (a node's, then the load balancer's, as when `make run` is
  going) `up` exits non-zero at once with a line naming that port, and starts nothing;
- with its ports free `up 2` reports the cluster up; `status` lists its four processes;
  nginx on 8080 answers with the node id of one of the nodes, each node with its own;
- a node that dies is reported `gone`;
- `down` stops exactly the processes of its pid file (a process of ours that is not in it
  keeps running), and nothing listens on the cluster's ports afterwards.
Prints nothing and exits 0 when all hold; otherwise one line per failure, exit 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

UP_SECONDS = 60
PORTS = [8080, 6390, 8081, 8082, 9091, 9092]

failures: list[str] = []


def fail(text: str) -> None:
    failures.append(text)


def cluster(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "deploy/cluster.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=UP_SECONDS, stdin=subprocess.DEVNULL)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.loads(response.read())


def pids(run: Path) -> dict[str, int]:
    path = run / "pids"
    if not path.exists():
        return {}
    return {name: int(pid) for name, pid in (line.split() for line in path.read_text().splitlines())}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def refused_with_port_taken(repo: Path, env: dict[str, str], run: Path, port: int, owner: str) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        started = time.monotonic()
        result = cluster(repo, env, "up", "2")
        took = time.monotonic() - started
        if result.returncode == 0:
            fail(f"up with :{port} taken exited 0: {result.stdout}")
        if f"127.0.0.1:{port} (for {owner})" not in result.stderr:
            fail(f"up with :{port} taken did not name it: {result.stderr!r}")
        if took > 5:
            fail(f"up with :{port} taken took {took:.1f}s to refuse")
        if (run / "pids").exists():
            fail(f"up with :{port} taken left a pid file (it started something)")
        for other in PORTS:
            if other != port and listening(other):
                fail(f"up with :{port} taken left something listening on :{other}")
    finally:
        blocker.close()


def main() -> int:
    repo, bin_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    netns.enter()
    with tempfile.TemporaryDirectory(prefix="sse-cluster-") as work:
        run = Path(work) / "cluster"
        env = dict(os.environ, BIN_DIR=str(bin_dir), CLUSTER_DIR=str(run),
                   PATH=f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin")
        refused_with_port_taken(repo, env, run, 8082, "node2")
        refused_with_port_taken(repo, env, run, 8080, "nginx")

        # Something of ours that `down` must leave alone.
        bystander = subprocess.Popen(["sleep", "300"])
        try:
            result = cluster(repo, env, "up", "2")
            if result.returncode != 0 or "Cluster up" not in result.stdout:
                fail(f"up 2 failed ({result.returncode}): {result.stdout}{result.stderr}")
                for log in sorted(run.glob("*.log")):
                    fail(f"{log.name}: {log.read_text(errors='replace')[-500:]}")
                cluster(repo, env, "down")
                return report()
            started = pids(run)
            if sorted(started) != ["nginx", "node1", "node2", "redis"]:
                fail(f"the pid file lists {sorted(started)}")
            status = cluster(repo, env, "status").stdout
            if status.count(" running") != 4:
                fail(f"status after up: {status!r}")
            nodes = {healthz(8081).get("node"), healthz(8082).get("node")}
            if len(nodes) != 2 or not all(re.fullmatch(r"[0-9a-f]{16}", str(n)) for n in nodes):
                fail(f"the nodes' ids: {nodes}")
            if healthz(8080).get("node") not in nodes:
                fail("nginx on :8080 does not answer with one of the cluster's nodes")

            os.kill(started["node2"], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while alive(started["node2"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            status = cluster(repo, env, "status").stdout
            if f"node2 {started['node2']} gone" not in status:
                fail(f"status after node2 was killed: {status!r}")

            result = cluster(repo, env, "down")
            if result.returncode != 0 or "cluster down" not in result.stdout:
                fail(f"down failed ({result.returncode}): {result.stdout}{result.stderr}")
            for name, pid in started.items():
                if alive(pid):
                    fail(f"{name} ({pid}) still runs after down")
            if bystander.poll() is not None:
                fail("down stopped a process it had not started")
            for port in PORTS:
                if listening(port):
                    fail(f"something still listens on :{port} after down")
            if (run / "pids").exists():
                fail("down left its pid file")
        finally:
            bystander.kill()
            bystander.wait()
            for name, pid in pids(run).items():
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    return report()


def report() -> int:
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
