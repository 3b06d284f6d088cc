"""The Celery example end to end: a real Celery worker (examples/celery_worker.py, Redis as
its broker) runs tasks enqueued here; a browser-like client following the owner's stream
on a real gateway (same Redis) sees each task's events arrive, in order, to the terminal
one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from celery import Celery
from support import PACKAGE, Gateway, RedisServer, wait_until

EXAMPLES = PACKAGE / "examples"


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, str]]:
    """(id, event, data) of each event of a `text/event-stream` body."""
    event_id = event = data = ""
    for line in lines:
        if line == "":
            if data:
                yield event_id, event, data
            event_id = event = data = ""
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]


def test_a_celery_task_reports_its_progress_to_a_browser(
    redis_server: RedisServer, redis_gateway: Gateway, tmp_path: Path
) -> None:
    broker = f"{redis_server.url}/1"
    env = {**os.environ, "CELERY_BROKER_URL": broker, "SSE_REDIS_URL": f"{redis_server.url}/0"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_worker",
                "worker",
                "--pool=solo",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
                "--hostname=example@localhost",
            ],
            cwd=EXAMPLES,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: b" ready." in log.read_bytes() or worker.poll() is not None, 60, "the Celery worker")
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        headers = {"Authorization": f"Bearer {redis_gateway.token('alice')}"}
        seen: dict[str, list[tuple[str, dict[str, object]]]] = {"celery-1": [], "celery-2": []}
        timeout = httpx.Timeout(30.0)
        with httpx.stream("GET", f"{redis_gateway.url}/v1/users/me/events", headers=headers, timeout=timeout) as stream:
            assert stream.status_code == 200
            events = sse_events(stream.iter_lines())
            assert next(events)[1] == "jobs", "a fresh user stream opens with its snapshot"
            # Enqueued only now: the stream is open, so every event reaches it.
            client = Celery(broker=broker)
            client.send_task("celery_worker.render", args=["celery-1", "alice", 5])
            client.send_task("celery_worker.render", args=["celery-2", "alice", 0])
            deadline = time.monotonic() + 30
            for event_id, event, data in events:
                fields = json.loads(data)
                assert event_id, "every event has an id"
                if fields.get("jobId") in seen:
                    seen[str(fields["jobId"])].append((event, fields))
                if [e for e, _ in seen["celery-1"]][-1:] == ["complete"] and seen["celery-2"]:
                    break
                assert time.monotonic() < deadline, f"events so far: {seen}"
        assert [event for event, _ in seen["celery-1"]] == ["stage"] + ["progress"] * 5 + ["log", "complete"]
        progress = [fields["progress"] for event, fields in seen["celery-1"] if event == "progress"]
        assert progress == [20.0, 40.0, 60.0, 80.0, 100.0]
        assert seen["celery-1"][-1][1]["result"] == {"frames": 5, "output": "/renders/celery-1.mp4"}
        assert seen["celery-2"] == [("failed", {**seen["celery-2"][0][1], "error": "nothing to render: 0 frames"})]
        state = redis_gateway.job_state("celery-1", "alice")
        assert (state["status"], state["progress"]) == ("completed", 100)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=5)
