"""Publish job progress, user notifications and topic events to the SSE gateway.

```python
from sse_publisher import Publisher

publisher = Publisher.connect("redis://127.0.0.1:6379")   # or Publisher.http(url, token)
job = publisher.job("render-7", "alice")                   # job id, owner
job.progress(45, "Encoding")                               # -> event id
job.log("info", "frame 100/200")
job.complete({"outputPath": "out.mp4"})
publisher.notify("alice", "notice", {"text": "hi"})
publisher.topic("news").publish("announcement", {"title": "Maintenance at 18:00"})
results = publisher.batch().progress(job, 50).notify("alice", "notice", {"text": "half"}).send()
```

`batch()` publishes several events in one go (one `POST /v1/events:batch`, or one Redis
script call per hash tag) and returns one result per event, in order: its id or the
`PublishError` it met.

`AsyncPublisher` is the same API for asyncio. Transports: Redis (one atomic script per
event, straight into the gateways' Redis; `connect_cluster` for Redis Cluster), or HTTP to
a gateway's publish endpoints. The wire contract is the one of docs/protocol.md, held to
the shared fixtures the Rust SDK and the gateway are tested against.

Retries: an attempt is retried with exponential backoff only when it certainly did not
publish (no connection, Redis loading or failing over, HTTP `503`). An attempt whose
outcome is unknown (the connection broke after the request was sent) raises `Ambiguous`,
unless the event has an idempotency key: then it is retried, since a repeat cannot
publish twice.
"""

from ._async import AsyncBatch, AsyncJob, AsyncPublisher, AsyncTopic
from ._errors import (
    Ambiguous,
    Internal,
    InvalidArgument,
    JobFinished,
    OwnerConflict,
    PublishError,
    Rejected,
    Unauthorized,
    Unavailable,
)
from ._options import EventOptions, Level, RedisOptions, RetryPolicy
from ._sync import Batch, Job, Publisher, Topic
from ._wire import Retention

__version__ = "0.1.0"

__all__ = [
    "Ambiguous",
    "AsyncBatch",
    "AsyncJob",
    "AsyncPublisher",
    "AsyncTopic",
    "Batch",
    "EventOptions",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobFinished",
    "Level",
    "OwnerConflict",
    "PublishError",
    "Publisher",
    "RedisOptions",
    "Rejected",
    "Retention",
    "RetryPolicy",
    "Topic",
    "Unauthorized",
    "Unavailable",
]
