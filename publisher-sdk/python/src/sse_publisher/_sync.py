"""The synchronous flavour: `Publisher`, `Job`, `Topic`. Thread-safe: one publisher is
meant to be shared by every thread of a worker process."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType

from . import _events
from ._errors import PublishError, RefusedAttempt
from ._http import HttpTransport, Verify
from ._options import EventOptions, Level, RedisOptions, RetryPolicy
from ._redis import RedisTransport
from ._wire import Draft

Transport = RedisTransport | HttpTransport


class Publisher:
    """Publishes job events, user notifications and topic events, through Redis
    (`Publisher.connect`, `Publisher.connect_cluster`) or a gateway's HTTP API
    (`Publisher.http`). Every publish returns the event's id (`<ms>-<seq>`) or raises a
    `PublishError`."""

    def __init__(self, transport: Transport, retry: RetryPolicy) -> None:
        """Use `connect`, `connect_cluster` or `http`."""
        self._transport = transport
        self._retry = retry

    @classmethod
    def connect(cls, url: str, options: RedisOptions | None = None) -> Publisher:
        """Connects to Redis (`redis://[user:password@]host:port[/db]`, `rediss://…` for
        TLS, `unix://path`) and checks the connection with `PING`; raises `Unavailable`
        when Redis cannot be reached."""
        options = options or RedisOptions()
        return cls(RedisTransport.connect(url, options), options.retry)

    @classmethod
    def connect_cluster(cls, seeds: Sequence[str], options: RedisOptions | None = None) -> Publisher:
        """Connects to a Redis Cluster through any of its nodes (`host:port`,
        `redis://host:port` or `rediss://host:port` each); publishes go to each user's
        shard, live events with `SPUBLISH`."""
        options = options or RedisOptions()
        return cls(RedisTransport.connect_cluster(seeds, options), options.retry)

    @classmethod
    def http(
        cls,
        url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        verify: Verify = True,
    ) -> Publisher:
        """Publishes through a gateway's HTTP API (`http://host:port`), with a token whose
        role is `publisher`. Nothing is contacted until the first publish."""
        return cls(HttpTransport(url, token, timeout, verify), retry or RetryPolicy())

    def job(self, job_id: str, owner: str) -> Job:
        """A handle on one job owned by `owner` (registered by the job's first event)."""
        return Job(self, job_id, owner)

    def topic(self, name: str) -> Topic:
        """A handle on one topic (a broadcast feed)."""
        return Topic(self, name)

    def batch(self) -> Batch:
        """An empty batch: add events, then `send()` publishes them in one go."""
        return Batch(self)

    def notify(
        self,
        user: str,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Sends a notification to a user's stream; returns its id there."""
        return self._publish(_events.draft("user", user, None, event_type, data, options))

    def close(self) -> None:
        """Closes the connections."""
        self._transport.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _publish(self, draft: Draft) -> str:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._transport.publish(draft)
            except (RefusedAttempt, PublishError) as failure:
                delay = _events.next_delay(self._retry, draft, attempt, failure)
            time.sleep(delay)


class Batch(_events.BatchEvents):
    """Events of any jobs, users and topics, published in one go by `send()`: over HTTP
    one `POST /v1/events:batch` (split at 100 events or 64 KiB, by traceparent, and in
    halves when the gateway answers `413`), over Redis one script call per hash tag (one
    on one Redis). `event`, `progress`, `notify` and `topic_event` return the batch, so
    calls chain."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__()
        self._publisher = publisher

    def send(self) -> list[str | PublishError]:
        """Publishes the events: one result per event, in the order they were added —
        its id (for a repeated idempotency key, the first event's), or the `PublishError`
        it met (invalid arguments, checked before anything is sent; `OwnerConflict`;
        `JobFinished`; `Unavailable` after the retries; …). A refused event does not stop
        the others; the events of one job, user or topic keep their order."""
        results, pending = self._start()
        attempt = 0
        while pending:
            attempt += 1
            answers = self._publisher._transport.publish_batch([event for _, event in pending])
            pending, delay = _events.settle_batch(self._publisher._retry, attempt, pending, answers, results)
            if pending:
                time.sleep(delay)
        return _events.batch_results(results)


class Job:
    """One job's events, all sent with its owner. Cheap: make one per job."""

    def __init__(self, publisher: Publisher, job_id: str, owner: str) -> None:
        self._publisher = publisher
        self._id = job_id
        self._owner = owner

    @property
    def id(self) -> str:
        return self._id

    @property
    def owner(self) -> str:
        return self._owner

    def progress(self, progress: float, stage: str | None = None, *, options: EventOptions | None = None) -> str:
        """`progress` (0-100), at a stage when given; sets the job `active`."""
        return self.event("progress", _events.progress_data(progress, stage), options=options)

    def stage(self, stage: str, *, options: EventOptions | None = None) -> str:
        """`stage`: the job entered a stage."""
        return self.event("stage", {"stage": stage}, options=options)

    def log(self, level: Level, message: str, *, options: EventOptions | None = None) -> str:
        """`log`: one log line (`debug`, `info`, `warn` or `error`)."""
        return self.event("log", _events.log_data(level, message), options=options)

    def complete(self, result: object = None, *, options: EventOptions | None = None) -> str:
        """`complete` with a result (any JSON); the job's streams end after it."""
        return self.event("complete", {"result": result}, options=options)

    def fail(self, error: object, *, options: EventOptions | None = None) -> str:
        """`failed` with an error (a message or any JSON); the job's streams end after it."""
        return self.event("failed", {"error": error}, options=options)

    def cancel(self, reason: str | None = None, *, options: EventOptions | None = None) -> str:
        """`cancelled`, with an optional reason; the job's streams end after it."""
        return self.event("cancelled", _events.cancelled_data(reason), options=options)

    def event(
        self,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Any event type, with a mapping of fields (a JSON object)."""
        return self._publisher._publish(_events.draft("job", self._id, self._owner, event_type, data, options))

    def __repr__(self) -> str:
        return f"Job(id={self._id!r}, owner={self._owner!r})"


class Topic:
    """One topic's events (a broadcast feed: every watcher of the topic gets them)."""

    def __init__(self, publisher: Publisher, name: str) -> None:
        self._publisher = publisher
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def publish(
        self,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Publishes an event; returns its id in the topic's stream."""
        return self._publisher._publish(_events.draft("topic", self._name, None, event_type, data, options))

    def __repr__(self) -> str:
        return f"Topic(name={self._name!r})"
