"""The Redis transport (redis-py): one owner registration per job (cached), then one
atomic publish script per event, run with `EVALSHA` through redis-py's `Script` objects
(which load the script and repeat the call on `NOSCRIPT`: a `NOSCRIPT` call did nothing).
On one Redis, the asyncio transport sends the script calls started in one turn of the
event loop as one pipeline (`_Pipeliner`).

redis-py's own retries are switched off (`Retry(NoBackoff(), 0)`): it would resend a
command whose connection broke after it was sent, which may publish twice. The publisher
retries instead, knowing what each failure means (`classify`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._errors import (
    Ambiguous,
    Internal,
    InvalidArgument,
    JobFinished,
    OwnerConflict,
    PublishError,
    RefusedAttempt,
    Unauthorized,
    Unavailable,
)
from ._options import RedisOptions
from ._owners import OwnerCache
from ._wire import (
    BATCH_SCRIPT_EVENTS,
    Draft,
    Keys,
    PublishCommand,
    Retention,
    ScriptCall,
    hash_tag,
    now_ms,
    parse_outcome,
    publish_batch_call,
    publish_batch_source,
    publish_call,
    register_owner_call,
    render_event_data,
)

#: The scripts this package runs; `lua/` holds copies of `publisher-sdk/wire/lua/`.
SCRIPT_NAMES = ("register_owner", "publish_job", "publish_user", "publish_topic")
#: What a batch answers for each event: its id, or why it was not published (a
#: `PublishError`, or a `RefusedAttempt` the publisher retries).
BatchAnswer = str | Exception

# Messages redis-py gives to failures before a command is written: connecting, or
# waiting for a pooled connection. Any other connection error or timeout may have come
# after the command was written, so its outcome is unknown. Misreading one of these as
# unknown costs a retry at most (never a duplicate).
_NOT_SENT = (
    "connecting to",
    "Timeout connecting",
    "No connection available",
    "Too many connections",
)


def script_source(name: str) -> bytes:
    """A script's text, as shipped in this package (byte for byte the wire crate's)."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_bytes()


def batch_source() -> bytes:
    """The batch script, assembled from the shipped copies as sse-wire assembles it."""
    names = ("publish_job", "publish_user", "publish_topic", "publish_batch")
    return publish_batch_source({name: script_source(name) for name in names})


def _scripts(client: Any) -> dict[str, Any]:
    scripts = {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
    scripts["publish_batch"] = client.register_script(batch_source())
    return scripts


def classify(error: Exception) -> Exception:
    """What a redis-py exception means for one attempt: `RefusedAttempt` (certainly not
    run: retried), `Ambiguous` (sent, outcome unknown), `Unauthorized`, or `Internal`."""
    text = str(error) or type(error).__name__
    if isinstance(error, redis.exceptions.AuthenticationError):
        return Unauthorized(f"redis refused the credentials: {text}")
    if isinstance(error, redis.exceptions.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return Unauthorized(f"redis refused: {text}")
    # The server did not run the command: loading, failing over, slot moving, read-only
    # replica, or no node of the cluster reachable.
    if isinstance(
        error,
        (
            redis.exceptions.BusyLoadingError,
            redis.exceptions.TryAgainError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.AskError,
            redis.exceptions.SlotNotCoveredError,
            redis.exceptions.MaxConnectionsError,
            redis.exceptions.RedisClusterException,
        ),
    ):
        return RefusedAttempt(f"redis refused: {text}")
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        if any(marker in text for marker in _NOT_SENT):
            return RefusedAttempt(f"redis unreachable: {text}")
        return Ambiguous(f"redis outcome unknown: {text}")
    if isinstance(error, redis.exceptions.RedisError):
        return Internal(f"redis error: {text}")
    if isinstance(error, OSError):
        return Ambiguous(f"redis outcome unknown: {text}")
    return error


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _uses_tls(url: str, options: RedisOptions) -> bool:
    if not isinstance(url, str):
        raise InvalidArgument("invalid_url", f"{url!r} is not a Redis URL")
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise InvalidArgument("invalid_url", f"{url!r} is not a Redis URL (redis://, rediss:// or unix://)")
    tls = scheme == "rediss"
    if not tls and (options.ca_file or options.client_cert or options.client_key):
        raise InvalidArgument("invalid_url", "ca_file, client_cert and client_key apply to rediss:// URLs only")
    return tls


def _connection_kwargs(options: RedisOptions, tls: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.timeout,
    }
    if tls:
        if options.ca_file:
            kwargs["ssl_ca_certs"] = options.ca_file
        if options.client_cert:
            kwargs["ssl_certfile"] = options.client_cert
        if options.client_key:
            kwargs["ssl_keyfile"] = options.client_key
    return kwargs


def _seed(seed: str) -> tuple[str, int, bool]:
    """`host:port`, `redis://host:port` or `rediss://host:port` -> (host, port, tls)."""
    text = seed if "://" in seed else f"redis://{seed}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or port is None:
        raise InvalidArgument("invalid_url", f"{seed!r} is not a cluster node (host:port or redis://host:port)")
    return parts.hostname, port, parts.scheme == "rediss"


def _cluster_kwargs(seeds: Sequence[str], options: RedisOptions) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    if isinstance(seeds, str) or not seeds:
        raise InvalidArgument("invalid_url", "give the cluster's nodes as a list of host:port")
    parsed = [_seed(seed) for seed in seeds]
    tls = {entry[2] for entry in parsed}
    if len(tls) != 1:
        raise InvalidArgument("invalid_url", "the seeds mix redis:// and rediss://")
    uses_tls = tls.pop()
    if not uses_tls and (options.ca_file or options.client_cert or options.client_key):
        raise InvalidArgument("invalid_url", "ca_file, client_cert and client_key apply to rediss:// seeds only")
    kwargs = _connection_kwargs(options, uses_tls)
    if uses_tls:
        kwargs["ssl"] = True
    kwargs["max_connections"] = max(1, options.pool_size)
    return [(host, port) for host, port, _ in parsed], kwargs


class _Plan:
    """What both flavours of the transport share: keys, retention, the publish command,
    the owner cache, and how a reply becomes an id."""

    def __init__(self, options: RedisOptions, command: PublishCommand) -> None:
        self.keys = Keys(options.prefix)
        self.retention: Retention = options.retention
        self.command: PublishCommand = command
        #: One script call per hash tag (Redis Cluster), or one for all (one Redis: a
        #: script may touch keys of any slot there).
        self.by_tag = command == "SPUBLISH"
        self.owners = OwnerCache()

    def needs_registration(self, draft: Draft) -> bool:
        return draft.kind == "job" and not self.owners.is_known(draft.subject, draft.owner or "")

    def registration(self, draft: Draft) -> ScriptCall:
        return register_owner_call(self.keys, draft.subject, draft.owner or "", self.retention)

    def registered(self, draft: Draft, current: object) -> None:
        """`register_owner.lua` answered nil (registered) or the other owner."""
        other = _text(current)
        if other is not None:
            raise OwnerConflict(draft.subject)
        self.owners.put(draft.subject, draft.owner or "")

    def publish(self, draft: Draft) -> ScriptCall:
        ts = now_ms()
        return publish_call(self.keys, draft, render_event_data(draft, ts), ts, self.retention, self.command)

    def owners_to_register(self, drafts: Sequence[Draft]) -> list[tuple[str, str]]:
        """Each job and owner of a batch whose owner this publisher has not confirmed, once,
        in the order of the batch (the first owner named wins, as one publish after the
        other would)."""
        pairs: list[tuple[str, str]] = []
        for draft in drafts:
            pair = (draft.subject, draft.owner or "")
            if draft.kind == "job" and pair not in pairs and not self.owners.is_known(*pair):
                pairs.append(pair)
        return pairs

    def owner_registered(self, job: str, owner: str, current: object) -> Exception | None:
        if _text(current) is not None:
            return OwnerConflict(job)
        self.owners.put(job, owner)
        return None

    def batch_calls(
        self, drafts: Sequence[Draft], skip: Sequence[int], ts: int | None = None
    ) -> list[tuple[list[int], ScriptCall]]:
        """The script calls of a batch: its events (but those in `skip`) grouped by hash tag
        (on one Redis, one group), in the order of each group's first event, each group in
        calls of at most `BATCH_SCRIPT_EVENTS`; with the indexes of the events of each.
        Every event is stamped with the same `ts` (now, unless given)."""
        ts = now_ms() if ts is None else ts
        groups: dict[str, list[tuple[int, ScriptCall]]] = {}
        for index, draft in enumerate(drafts):
            if index in skip:
                continue
            call = publish_call(self.keys, draft, render_event_data(draft, ts), ts, self.retention, self.command)
            tag = hash_tag(call.keys[0]) if self.by_tag else ""
            groups.setdefault(tag, []).append((index, call))
        calls: list[tuple[list[int], ScriptCall]] = []
        for group in groups.values():
            for start in range(0, len(group), BATCH_SCRIPT_EVENTS):
                chunk = group[start : start + BATCH_SCRIPT_EVENTS]
                calls.append(([index for index, _ in chunk], publish_batch_call([call for _, call in chunk])))
        return calls

    def batch_answers(
        self, drafts: Sequence[Draft], indexes: list[int], call: ScriptCall, reply: object
    ) -> list[BatchAnswer]:
        """Each event's answer from a batch call's reply (one event: its own script's)."""
        replies = [reply] if call.script != "publish_batch" else reply
        if not isinstance(replies, (list, tuple)) or len(replies) != len(indexes):
            failure = Internal(f"unexpected batch script reply {reply!r}")
            return [failure for _ in indexes]
        answers: list[BatchAnswer] = []
        for index, one in zip(indexes, replies, strict=True):
            try:
                answers.append(self.event_id(drafts[index], one))
            except PublishError as error:
                answers.append(error)
        return answers

    def event_id(self, draft: Draft, reply: object) -> str:
        if not isinstance(reply, (list, tuple)):
            raise Internal(f"unexpected publish script reply {reply!r}")
        try:
            outcome, event_id = parse_outcome(reply)
        except ValueError as error:
            raise Internal(str(error)) from None
        if outcome == "finished" or event_id is None:
            raise JobFinished(draft.subject)
        return event_id


def _registration_failed(error: Exception) -> Exception:
    # Registering is idempotent (it sets the same owner again), so an unknown outcome is
    # retried like a refusal: no event was published either way.
    failure = classify(error)
    if isinstance(failure, Ambiguous):
        return RefusedAttempt(str(failure))
    return failure


class _Pipeliner:
    """Automatic pipelining for asyncio on one Redis, as ioredis's `enableAutoPipelining`
    does for the TypeScript SDK: the script calls started in one turn of the event loop
    leave in one write, as one pipeline (at most `MAX_COMMANDS` each), so Redis reads,
    runs and answers them in one round of system calls instead of one round each.

    A pipeline runs in a task of its own: a caller cancelled before its pipeline is written
    is left out of it (not published); one cancelled later stops waiting, and the other
    calls of its pipeline are not disturbed. Calls are written in the order they were made.
    A failure of the connection fails every call of the pipeline alike (`classify` tells
    whether they were sent). A call answered `NOSCRIPT` did nothing: the script is loaded
    and that call sent again, in order with the other refused ones.
    """

    #: Calls in one pipeline at most (its callers are answered when it is all read).
    MAX_COMMANDS = 256
    #: Times a call refused with `NOSCRIPT` is loaded and sent again (a script flushed
    #: between the load and the call, again and again, ends in the error).
    NOSCRIPT_ATTEMPTS = 3

    def __init__(self, client: redis.asyncio.Redis, scripts: dict[str, Any]) -> None:
        self._client = client
        self._scripts = scripts
        self._queue: list[tuple[ScriptCall, asyncio.Future[object]]] = []
        # Strong references to the pipelines in flight (the loop keeps only weak ones).
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, call: ScriptCall) -> object:
        """The script's reply, or the redis-py exception of its call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._queue.append((call, future))
        if len(self._queue) == 1:
            # After the callbacks ready now: every task woken in this turn adds its call.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self.MAX_COMMANDS):
            task = asyncio.ensure_future(self._send(queue[start : start + self.MAX_COMMANDS]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[tuple[ScriptCall, asyncio.Future[object]]]) -> None:
        # A caller cancelled before its call was written: it is not published.
        calls = [(call, future) for call, future in calls if not future.done()]
        if not calls:
            return
        for attempt in range(self.NOSCRIPT_ATTEMPTS + 1):
            pipe = self._client.pipeline(transaction=False)
            for call, _ in calls:
                pipe.evalsha(self._scripts[call.script].sha, len(call.keys), *call.keys, *call.args)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except Exception as error:
                _fail(calls, error)
                return
            refused = []
            for (call, future), reply in zip(calls, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError) and attempt < self.NOSCRIPT_ATTEMPTS:
                    refused.append((call, future))
                elif future.done():
                    continue
                elif isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
            if not refused:
                return
            try:
                for name in dict.fromkeys(call.script for call, _ in refused):
                    await self._client.script_load(self._scripts[name].script)
            except Exception as error:
                failure: Exception = error
                if isinstance(classify(error), Ambiguous):
                    # The load's outcome is unknown, the calls' is not: they did nothing.
                    failure = redis.exceptions.TryAgainError(f"loading the script failed: {error}")
                _fail(refused, failure)
                return
            calls = refused

    async def close(self) -> None:
        """Waits for the pipelines in flight (their callers are answered)."""
        if self._queue:
            self._flush()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


def _fail(calls: list[tuple[ScriptCall, asyncio.Future[object]]], error: Exception) -> None:
    """Every call still waited for ends in `error`."""
    for _, future in calls:
        if not future.done():
            future.set_exception(error)


SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


class RedisTransport:
    """Synchronous: a blocking pool of connections (`pool_size`), or a Redis Cluster."""

    def __init__(self, client: SyncClient, options: RedisOptions, command: PublishCommand) -> None:
        self._client = client
        self._plan = _Plan(options, command)
        self._scripts = _scripts(client)

    @classmethod
    def connect(cls, url: str, options: RedisOptions) -> RedisTransport:
        tls = _uses_tls(url, options)
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=max(1, options.pool_size),
                timeout=options.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                **_connection_kwargs(options, tls),
            )
        except ValueError as error:
            raise InvalidArgument("invalid_url", f"redis url: {error}") from None
        client = redis.Redis(connection_pool=pool)
        try:
            client.ping()
        except Exception as error:
            client.close()
            raise _unavailable(error) from None
        return cls(client, options, "PUBLISH")

    @classmethod
    def connect_cluster(cls, seeds: Sequence[str], options: RedisOptions) -> RedisTransport:
        nodes, kwargs = _cluster_kwargs(seeds, options)
        # redis-py leaves the synchronous ClusterNode unannotated.
        startup = [redis.cluster.ClusterNode(host, port) for host, port in nodes]  # type: ignore[no-untyped-call]
        try:
            client = redis.cluster.RedisCluster(startup_nodes=startup, retry=Retry(NoBackoff(), 0), **kwargs)
        except Exception as error:
            raise _unavailable(error) from None
        return cls(client, options, "SPUBLISH")

    def publish(self, draft: Draft) -> str:
        plan = self._plan
        if plan.needs_registration(draft):
            call = plan.registration(draft)
            try:
                current = self._scripts[call.script](keys=call.keys, args=call.args)
            except Exception as error:
                raise _registration_failed(error) from None
            plan.registered(draft, current)
        call = plan.publish(draft)
        try:
            reply = self._scripts[call.script](keys=call.keys, args=call.args)
        except Exception as error:
            raise classify(error) from None
        return plan.event_id(draft, reply)

    def publish_batch(self, drafts: Sequence[Draft]) -> list[BatchAnswer]:
        """Publishes events in one script call per hash tag (one on one Redis), after
        registering the owners not yet confirmed; one answer per event, in order."""
        plan = self._plan
        answers: dict[int, BatchAnswer] = {}
        for job, owner in plan.owners_to_register(drafts):
            call = register_owner_call(plan.keys, job, owner, plan.retention)
            failure: Exception | None
            try:
                failure = plan.owner_registered(job, owner, self._scripts[call.script](keys=call.keys, args=call.args))
            except Exception as error:
                failure = _registration_failed(error)
            if failure is not None:
                answers.update(
                    {
                        i: failure
                        for i, d in enumerate(drafts)
                        if d.kind == "job" and (d.subject, d.owner) == (job, owner)
                    }
                )
        for indexes, call in plan.batch_calls(drafts, list(answers)):
            try:
                reply = self._scripts[call.script](keys=call.keys, args=call.args)
            except Exception as error:
                answers.update({index: classify(error) for index in indexes})
                continue
            answers.update(zip(indexes, plan.batch_answers(drafts, indexes, call, reply), strict=True))
        return [answers[index] for index in range(len(drafts))]

    def close(self) -> None:
        self._client.close()


class AsyncRedisTransport:
    """asyncio: a blocking pool of connections (`pool_size`), or a Redis Cluster. On one
    Redis, concurrent script calls are pipelined (`RedisOptions.auto_pipeline`)."""

    def __init__(self, client: AsyncClient, options: RedisOptions, command: PublishCommand) -> None:
        self._client = client
        self._plan = _Plan(options, command)
        self._scripts = _scripts(client)
        self._pipeliner = (
            _Pipeliner(client, self._scripts)
            if options.auto_pipeline and isinstance(client, redis.asyncio.Redis)
            else None
        )

    async def _run(self, call: ScriptCall) -> object:
        """One script call: through the pipeliner, or on a pooled connection of its own."""
        if self._pipeliner is not None:
            return await self._pipeliner.call(call)
        return await self._scripts[call.script](keys=call.keys, args=call.args)

    @classmethod
    async def connect(cls, url: str, options: RedisOptions) -> AsyncRedisTransport:
        tls = _uses_tls(url, options)
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=max(1, options.pool_size),
                timeout=options.connect_timeout,
                retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
                **_connection_kwargs(options, tls),
            )
        except ValueError as error:
            raise InvalidArgument("invalid_url", f"redis url: {error}") from None
        client = redis.asyncio.Redis(connection_pool=pool)
        transport = cls(client, options, "PUBLISH")
        try:
            await client.ping()
        except Exception as error:
            await transport.close()
            raise _unavailable(error) from None
        return transport

    @classmethod
    async def connect_cluster(cls, seeds: Sequence[str], options: RedisOptions) -> AsyncRedisTransport:
        nodes, kwargs = _cluster_kwargs(seeds, options)
        startup = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in nodes]
        client = redis.asyncio.cluster.RedisCluster(
            startup_nodes=startup, retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **kwargs
        )
        try:
            await client.initialize()
        except Exception as error:
            await client.aclose()
            raise _unavailable(error) from None
        return cls(client, options, "SPUBLISH")

    async def publish(self, draft: Draft) -> str:
        plan = self._plan
        if plan.needs_registration(draft):
            call = plan.registration(draft)
            try:
                current = await self._run(call)
            except Exception as error:
                raise _registration_failed(error) from None
            plan.registered(draft, current)
        call = plan.publish(draft)
        try:
            reply = await self._run(call)
        except Exception as error:
            raise classify(error) from None
        return plan.event_id(draft, reply)

    async def publish_batch(self, drafts: Sequence[Draft]) -> list[BatchAnswer]:
        """Publishes events in one script call per hash tag (one on one Redis), after
        registering the owners not yet confirmed (each job's at once); the calls of
        different hash tags run at once. One answer per event, in order."""
        plan = self._plan
        answers: dict[int, BatchAnswer] = {}

        async def register(job: str, owner: str) -> tuple[str, str, Exception | None]:
            call = register_owner_call(plan.keys, job, owner, plan.retention)
            try:
                current = await self._run(call)
            except Exception as error:
                return job, owner, _registration_failed(error)
            return job, owner, plan.owner_registered(job, owner, current)

        # One job's owners one after the other (the first named wins); jobs at once.
        pairs = plan.owners_to_register(drafts)
        jobs: dict[str, list[str]] = {}
        for job, owner in pairs:
            jobs.setdefault(job, []).append(owner)

        async def register_job(job: str, owners: list[str]) -> list[tuple[str, str, Exception | None]]:
            return [await register(job, owner) for owner in owners]

        for done in await asyncio.gather(*(register_job(job, owners) for job, owners in jobs.items())):
            for job, owner, failure in done:
                if failure is not None:
                    answers.update(
                        {
                            i: failure
                            for i, d in enumerate(drafts)
                            if d.kind == "job" and (d.subject, d.owner) == (job, owner)
                        }
                    )
        calls = plan.batch_calls(drafts, list(answers))
        by_tag: dict[str, list[tuple[list[int], ScriptCall]]] = {}
        for indexes, call in calls:
            by_tag.setdefault(hash_tag(call.keys[0]) if plan.by_tag else "", []).append((indexes, call))

        async def run(group: list[tuple[list[int], ScriptCall]]) -> None:
            for indexes, call in group:
                try:
                    reply = await self._run(call)
                except Exception as error:
                    answers.update({index: classify(error) for index in indexes})
                    continue
                answers.update(zip(indexes, plan.batch_answers(drafts, indexes, call, reply), strict=True))

        await asyncio.gather(*(run(group) for group in by_tag.values()))
        return [answers[index] for index in range(len(drafts))]

    async def close(self) -> None:
        if self._pipeliner is not None:
            await self._pipeliner.close()
        await self._client.aclose()


def _unavailable(error: Exception) -> PublishError:
    """A failed first contact (`connect`): credentials refused, or unreachable."""
    failure = classify(error)
    if isinstance(failure, Unauthorized):
        return failure
    return Unavailable(1, str(failure))
