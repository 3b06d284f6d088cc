"""Options of events, retries and the Redis transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ._wire import DEFAULT_PREFIX, Retention

#: Severity of a `log` event.
Level = Literal["debug", "info", "warn", "error"]
LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class EventOptions:
    """Per-event options."""

    #: Carried in the event (`correlationId`) and logged by gateways, to trace an event
    #: from worker to browser. 1-128 printable ASCII characters.
    correlation_id: str | None = None
    #: W3C trace context carried in the event, so the gateways continue the publisher's
    #: trace. An invalid one is refused (`InvalidArgument`).
    traceparent: str | None = None
    #: A repeat of a publish with the same key (per user or topic) within the idempotency
    #: window publishes nothing and returns the first event's id, so an attempt whose
    #: outcome is unknown is retried safely. 1-128 visible ASCII characters.
    idempotency_key: str | None = None
    #: Publish to a finished job, reopening it (back to `queued`, result and error
    #: cleared). Without it a finished job refuses every event (`JobFinished`).
    reopen: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """How a publisher retries attempts that certainly did not publish (and, with an
    idempotency key, attempts whose outcome is unknown)."""

    #: Attempts in all, the first included (at least 1).
    attempts: int = 5
    #: Seconds before the second attempt; doubled before each next one.
    initial_backoff: float = 0.05
    #: Longest wait between attempts, in seconds; a gateway's `Retry-After` is honoured
    #: up to this.
    max_backoff: float = 2.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 for the first): the
        larger of the exponential backoff and the server's `Retry-After`, at most
        `max_backoff`."""
        delay = self.initial_backoff * 2.0 ** min(attempt, 16)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, min(delay, self.max_backoff))


@dataclass(frozen=True)
class RedisOptions:
    """Options of the Redis transport."""

    #: Key and channel prefix; must match the gateways' `--redis-prefix`.
    prefix: str = DEFAULT_PREFIX
    #: Stream lengths and TTLs written with each event; match the gateways' flags.
    retention: Retention = field(default_factory=Retention)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Connections in the pool (the most publishes in flight at once; with
    #: `auto_pipeline`, the most pipelines).
    pool_size: int = 16
    #: `AsyncPublisher` on one Redis: the publishes started in one turn of the event loop
    #: leave in one write, as one pipeline, and Redis answers them in one round of system
    #: calls. No effect on `Publisher` (threads) or on a Redis Cluster.
    auto_pipeline: bool = True
    #: Seconds to wait for a connection (to connect, or for a free one in the pool).
    connect_timeout: float = 2.0
    #: Seconds to wait for an answer; then the outcome is unknown (`Ambiguous`).
    timeout: float = 5.0
    #: `rediss://` only: a CA bundle (PEM) to verify the server with, instead of the
    #: system's roots.
    ca_file: str | None = None
    #: `rediss://` only: a client certificate and its key (PEM), for Redis servers that
    #: ask for one (`tls-auth-clients`).
    client_cert: str | None = None
    client_key: str | None = None
