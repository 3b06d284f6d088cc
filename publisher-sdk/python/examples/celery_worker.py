"""A Celery worker whose task reports its progress to the SSE gateway through the SDK.

Browsers following `/v1/jobs/<job id>/events` (or their user stream) see the task move:
a `stage`, a `progress` per step, a `log` line, then `complete` or `failed`.

Run it (Redis as Celery's broker; events straight into the gateways' Redis):

    pip install './publisher-sdk/python[examples]'
    CELERY_BROKER_URL=redis://127.0.0.1:6379/1 SSE_REDIS_URL=redis://127.0.0.1:6379/0 \\
        celery -A celery_worker worker --pool=solo --loglevel=INFO      # in examples/

or, with no access to Redis, through a gateway's HTTP API:

    SSE_GATEWAY_URL=http://127.0.0.1:8080 SSE_TOKEN=<publisher token> celery -A celery_worker worker

and enqueue from any Python process: `render.delay("render-7", "alice", 20)`.

One `Publisher` per worker process, made on first use (after Celery has forked), shared
by every task that process runs. The terminal event carries an idempotency key made from
the Celery task id: if the task is retried after a lost answer, the event is not
published twice.
"""

from __future__ import annotations

import os
import threading
import time

from celery import Celery, Task

from sse_publisher import EventOptions, Publisher, Unavailable

app = Celery("sse_example", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    """This process's publisher: Redis when `SSE_REDIS_URL` is set, else the gateway at
    `SSE_GATEWAY_URL` with the publisher token `SSE_TOKEN`."""
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            redis_url = os.environ.get("SSE_REDIS_URL")
            if redis_url:
                _publisher = Publisher.connect(redis_url)
            else:
                _publisher = Publisher.http(os.environ["SSE_GATEWAY_URL"], os.environ["SSE_TOKEN"])
        return _publisher


# A publish that could not reach the broker after the SDK's own retries (Unavailable)
# published nothing: running the task again later is safe. (An Ambiguous one is not
# retried here: its event may have landed, and a terminal one would make the job refuse
# the rerun's first events.)
@app.task(bind=True, autoretry_for=(Unavailable,), retry_backoff=True, max_retries=3)
def render(self: Task, job_id: str, owner: str, frames: int) -> str:
    """Renders `frames` frames (here: a short pause each), reporting as it goes; returns
    the id of the job's terminal event."""
    job = publisher().job(job_id, owner)
    once = EventOptions(idempotency_key=f"{self.request.id}:end")
    try:
        if frames < 1:
            raise ValueError(f"nothing to render: {frames} frames")
        job.stage("Rendering")
        for frame in range(1, frames + 1):
            time.sleep(0.01)  # the work
            job.progress(round(100 * frame / frames, 1), "Rendering")
        job.log("info", f"{frames} frames rendered")
        return job.complete({"frames": frames, "output": f"/renders/{job_id}.mp4"}, options=once)
    except ValueError as error:
        return job.fail(str(error), options=once)
