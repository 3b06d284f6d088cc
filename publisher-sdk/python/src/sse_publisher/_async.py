"""The asyncio flavour: `AsyncPublisher`, `AsyncJob`, `AsyncTopic`. One publisher per event
loop, shared by every task of it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType

from . import _events
from ._errors import PublishError, RefusedAttempt
from ._http import AsyncHttpTransport, Verify
from ._options import EventOptions, Level, RedisOptions, RetryPolicy
from ._redis import AsyncRedisTransport
from ._wire import Draft

Transport = AsyncRedisTransport | AsyncHttpTransport


class AsyncPublisher:
    """`Publisher` for asyncio: the same methods, awaited (`connect` and
    `connect_cluster` too; `http` contacts nothing, so it is a plain call)."""

    def __init__(self, transport: Transport, retry: RetryPolicy) -> None:
        """Use `connect`, `connect_cluster` or `http`."""
        self._transport = transport
        self._retry = retry

    @classmethod
    async def connect(cls, url: str, options: RedisOptions | None = None) -> AsyncPublisher:
        """Connects to Redis (`redis://[user:password@]host:port[/db]`, `rediss://…` for
        TLS, `unix://path`) and checks the connection with `PING`; raises `Unavailable`
        when Redis cannot be reached."""
        options = options or RedisOptions()
        return cls(await AsyncRedisTransport.connect(url, options), options.retry)

    @classmethod
    async def connect_cluster(cls, seeds: Sequence[str], options: RedisOptions | None = None) -> AsyncPublisher:
        """Connects to a Redis Cluster through any of its nodes (`host:port`,
        `redis://host:port` or `rediss://host:port` each); publishes go to each user's
        shard, live events with `SPUBLISH`."""
        options = options or RedisOptions()
        return cls(await AsyncRedisTransport.connect_cluster(seeds, options), options.retry)

    @classmethod
    def http(
        cls,
        url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        verify: Verify = True,
    ) -> AsyncPublisher:
        """Publishes through a gateway's HTTP API (`http://host:port`), with a token whose
        role is `publisher`. Nothing is contacted until the first publish."""
        return cls(AsyncHttpTransport(url, token, timeout, verify), retry or RetryPolicy())

    def job(self, job_id: str, owner: str) -> AsyncJob:
        """A handle on one job owned by `owner` (registered by the job's first event)."""
        return AsyncJob(self, job_id, owner)

    def topic(self, name: str) -> AsyncTopic:
        """A handle on one topic (a broadcast feed)."""
        return AsyncTopic(self, name)

    def batch(self) -> AsyncBatch:
        """An empty batch: add events, then `await send()` publishes them in one go."""
        return AsyncBatch(self)

    async def notify(
        self,
        user: str,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Sends a notification to a user's stream; returns its id there."""
        return await self._publish(_events.draft("user", user, None, event_type, data, options))

    async def close(self) -> None:
        """Closes the connections."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _publish(self, draft: Draft) -> str:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._transport.publish(draft)
            except (RefusedAttempt, PublishError) as failure:
                delay = _events.next_delay(self._retry, draft, attempt, failure)
            await asyncio.sleep(delay)


class AsyncBatch(_events.BatchEvents):
    """`Batch` for asyncio: the same methods; `send()` is awaited."""

    def __init__(self, publisher: AsyncPublisher) -> None:
        super().__init__()
        self._publisher = publisher

    async def send(self) -> list[str | PublishError]:
        """Publishes the events: one result per event, in order (see `Batch.send`)."""
        results, pending = self._start()
        attempt = 0
        while pending:
            attempt += 1
            answers = await self._publisher._transport.publish_batch([event for _, event in pending])
            pending, delay = _events.settle_batch(self._publisher._retry, attempt, pending, answers, results)
            if pending:
                await asyncio.sleep(delay)
        return _events.batch_results(results)


class AsyncJob:
    """One job's events, all sent with its owner. Cheap: make one per job."""

    def __init__(self, publisher: AsyncPublisher, job_id: str, owner: str) -> None:
        self._publisher = publisher
        self._id = job_id
        self._owner = owner

    @property
    def id(self) -> str:
        return self._id

    @property
    def owner(self) -> str:
        return self._owner

    async def progress(self, progress: float, stage: str | None = None, *, options: EventOptions | None = None) -> str:
        """`progress` (0-100), at a stage when given; sets the job `active`."""
        return await self.event("progress", _events.progress_data(progress, stage), options=options)

    async def stage(self, stage: str, *, options: EventOptions | None = None) -> str:
        """`stage`: the job entered a stage."""
        return await self.event("stage", {"stage": stage}, options=options)

    async def log(self, level: Level, message: str, *, options: EventOptions | None = None) -> str:
        """`log`: one log line (`debug`, `info`, `warn` or `error`)."""
        return await self.event("log", _events.log_data(level, message), options=options)

    async def complete(self, result: object = None, *, options: EventOptions | None = None) -> str:
        """`complete` with a result (any JSON); the job's streams end after it."""
        return await self.event("complete", {"result": result}, options=options)

    async def fail(self, error: object, *, options: EventOptions | None = None) -> str:
        """`failed` with an error (a message or any JSON); the job's streams end after it."""
        return await self.event("failed", {"error": error}, options=options)

    async def cancel(self, reason: str | None = None, *, options: EventOptions | None = None) -> str:
        """`cancelled`, with an optional reason; the job's streams end after it."""
        return await self.event("cancelled", _events.cancelled_data(reason), options=options)

    async def event(
        self,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Any event type, with a mapping of fields (a JSON object)."""
        return await self._publisher._publish(_events.draft("job", self._id, self._owner, event_type, data, options))

    def __repr__(self) -> str:
        return f"AsyncJob(id={self._id!r}, owner={self._owner!r})"


class AsyncTopic:
    """One topic's events (a broadcast feed: every watcher of the topic gets them)."""

    def __init__(self, publisher: AsyncPublisher, name: str) -> None:
        self._publisher = publisher
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def publish(
        self,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> str:
        """Publishes an event; returns its id in the topic's stream."""
        return await self._publisher._publish(_events.draft("topic", self._name, None, event_type, data, options))

    def __repr__(self) -> str:
        return f"AsyncTopic(name={self._name!r})"
