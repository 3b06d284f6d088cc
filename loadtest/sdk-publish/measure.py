"""Redis's cost per event of the publisher SDKs' Redis transport, concurrent publishes and
batches: a fresh redis-server per run (pinned to CPU 0, the driver to CPU 1), and for the
measured publishes Redis's CPU time (/proc/<pid>/stat), and its reads and writes (INFO
stats `total_reads_processed`, `total_writes_processed`) and script calls (INFO
commandstats), per event. Run it under the shared bench lock:

    flock /work/notes/bench.lock python3 loadtest/sdk-publish/measure.py [events]

Needs redis-server, the built TypeScript package (publisher-sdk/typescript/check.sh build)
and the Python package's venv (publisher-sdk/python/check.sh setup).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = REPO / "publisher-sdk" / "python" / ".venv" / "bin" / "python"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True).stdout


def counters(port: int, pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    info = cli(port, "INFO", "stats") + cli(port, "INFO", "commandstats")
    stat = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    evalsha = stat.get("cmdstat_evalsha", "calls=0").split(",")[0].split("=")[1]
    return {
        "cpu_s": (int(fields[11]) + int(fields[12])) / TICKS,
        "reads": int(stat["total_reads_processed"]),
        "writes": int(stat["total_writes_processed"]),
        "evalsha": int(evalsha),
    }


def run(name: str, driver: list[str]) -> dict[str, object]:
    port = free_port()
    data = tempfile.mkdtemp(prefix="sse-sdk-bench-")
    redis = subprocess.Popen(
        ["taskset", "-c", "0", "redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", data],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                if cli(port, "PING").strip() == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}"
        child = subprocess.Popen(
            ["taskset", "-c", "1", *driver_with(driver, url)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        before = counters(port, redis.pid)
        child.stdin.write("go\n")
        child.stdin.close()
        result = json.loads(child.stdout.readline())
        after = counters(port, redis.pid)
        child.wait(timeout=60)
        events = result["events"]
        return {
            "run": name,
            "events": events,
            "events_per_s": round(events / result["seconds"]),
            "redis_cpu_us_per_event": round((after["cpu_s"] - before["cpu_s"]) * 1e6 / events, 1),
            "reads_per_event": round((after["reads"] - before["reads"]) / events, 3),
            "writes_per_event": round((after["writes"] - before["writes"]) / events, 3),
            "script_calls_per_event": round((after["evalsha"] - before["evalsha"]) / events, 3),
        }
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(data, ignore_errors=True)


def driver_with(driver: list[str], url: str) -> list[str]:
    """The driver's command with the Redis URL as its first argument."""
    return [driver[0], driver[1], url, *driver[2:]]


def main() -> None:
    events = sys.argv[1] if len(sys.argv) > 1 else "20000"
    node = ["node", str(HERE / "driver.mjs")]
    python = [str(PYTHON), str(HERE / "driver.py")]
    runs = [
        ("ts concurrent x100, auto-pipelining off", [*node, events, "100", "1", "off"]),
        ("ts concurrent x100, auto-pipelining on", [*node, events, "100", "1", "on"]),
        ("ts batches of 10, x10", [*node, events, "10", "10", "on"]),
        ("py asyncio concurrent x100, auto-pipelining off (pool of 100)", [*python, events, "100", "1", "off"]),
        ("py asyncio concurrent x100, auto-pipelining on", [*python, events, "100", "1", "on"]),
        ("py asyncio batches of 10, x10", [*python, events, "10", "10", "on"]),
    ]
    for name, driver in runs:
        print(json.dumps(run(name, driver)), flush=True)


if __name__ == "__main__":
    main()
