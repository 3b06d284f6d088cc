"""Batches (`Publisher.batch`, `AsyncPublisher.batch`): the script calls and HTTP requests
of the shared fixtures' batches, byte for byte; the batch script assembled from the
shipped Lua as sse-wire assembles it; then, against a real redis-server and a real gateway,
over both transports and in both flavours: events of several jobs of two users (two hash
tags) reach their streams once and in order, per-event errors, and the HTTP limits."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cases import options_of
from support import Gateway, RedisServer

from sse_publisher import (
    AsyncPublisher,
    InvalidArgument,
    JobFinished,
    OwnerConflict,
    Publisher,
    PublishError,
)
from sse_publisher._http import _BatchPlan
from sse_publisher._options import RedisOptions
from sse_publisher._redis import _Plan, batch_source, script_source
from sse_publisher._wire import Draft, Keys, batch_http_request, make_draft, register_owner_call


def draft_of(event: dict[str, Any]) -> Draft:
    kind = event["kind"]
    options = options_of(event)
    return make_draft(
        kind,
        event[kind],
        event.get("owner") if kind == "job" else None,
        event["type"],
        event.get("data"),
        correlation_id=options.correlation_id,
        traceparent=options.traceparent,
        idempotency_key=options.idempotency_key,
        reopen=options.reopen,
    )


def call_json(call: Any) -> dict[str, Any]:
    return {"script": call.script, "keys": list(call.keys), "args": list(call.args)}


def test_the_batch_script_is_assembled_as_sse_wire_assembles_it(wire: dict[str, Any]) -> None:
    assert hashlib.sha1(batch_source()).hexdigest() == wire["publishBatchSha1"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_fixture_batch_makes_the_fixtures_calls_and_requests(index: int, wire: dict[str, Any]) -> None:
    batch = wire["batches"][index]
    drafts = [draft_of(event) for event in batch["input"]["events"]]
    ts, expect = batch["input"]["ts"], batch["expect"]
    assert Keys().prefix == wire["prefix"]
    one = _Plan(RedisOptions(), "PUBLISH")
    owners = [
        call_json(register_owner_call(one.keys, job, owner, one.retention))
        for job, owner in one.owners_to_register(drafts)
    ]
    assert owners == expect["registerOwners"]
    assert [call_json(call) for _, call in one.batch_calls(drafts, [], ts)] == expect["oneRedis"]
    cluster = _Plan(RedisOptions(), "PUBLISH")
    cluster.by_tag = True
    calls = cluster.batch_calls(drafts, [], ts)
    assert [call_json(call) for _, call in calls] == [group["call"] for group in expect["perHashTag"]]
    plan = _BatchPlan(drafts)
    requests = []
    while (step := plan.next()) is not None:
        request = step[1]
        headers = {k: v for k, v in request.headers.items() if k != "Content-Type"}
        requests.append(
            {"method": request.method, "path": request.path, "headers": headers, "body": json.loads(request.body)}
        )
        # The body's bytes: the gateway's own serializer's field order.
        body = request.body.decode()
        assert body == json.dumps(requests[-1]["body"], separators=(",", ":"), ensure_ascii=False)
    assert requests == expect["http"]
    assert batch_http_request([]).body == b"[]"


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each event of a `text/event-stream` body."""
    event_id = event = data = ""
    for line in lines:
        if line == "":
            if data:
                yield event_id, event, json.loads(data)
            event_id = event = data = ""
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]


class Stream:
    """A user's or job's SSE stream on a gateway, read as a browser would."""

    def __init__(self, gateway: Gateway, user: str, path: str) -> None:
        headers = {"Authorization": f"Bearer {gateway.token(user)}"}
        self._context = httpx.stream("GET", f"{gateway.url}{path}", headers=headers, timeout=10.0)
        response = self._context.__enter__()
        assert response.status_code == 200, path
        self.events = sse_events(response.iter_lines())

    def next(self) -> tuple[str, str, dict[str, Any]]:
        return next(self.events)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def publishers(redis_server: RedisServer, gateway: Gateway) -> list[tuple[str, Callable[[], Any]]]:
    """Each transport in each flavour: a function making the publisher (asyncio's inside
    the event loop that uses it)."""
    token = gateway.publisher_token()

    async def http_async() -> AsyncPublisher:
        return AsyncPublisher.http(gateway.url, token)

    return [
        ("redis", lambda: Publisher.connect(redis_server.url)),
        ("http", lambda: Publisher.http(gateway.url, token)),
        ("redis-async", lambda: AsyncPublisher.connect(redis_server.url)),
        ("http-async", http_async),
    ]


def send(make: Callable[[], Any], build: Callable[[Any, Any], Any]) -> list[str | PublishError]:
    """Builds a batch with `build(publisher, batch)` and sends it, in the publisher's flavour."""
    made = make()
    if isinstance(made, Publisher):
        with made:
            results: list[str | PublishError] = build(made, made.batch()).send()
            return results

    async def run() -> list[str | PublishError]:
        publisher = await made
        try:
            answers: list[str | PublishError] = await build(publisher, publisher.batch()).send()
            return answers
        finally:
            await publisher.close()

    return asyncio.run(run())


def evalsha_calls(redis_server: RedisServer) -> int:
    stats: dict[str, Any] = redis_server.client().raw.info("commandstats")
    calls: int = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    return calls


def test_a_batch_of_two_users_jobs_reaches_their_streams_once_and_in_order(
    redis_server: RedisServer, redis_gateway: Gateway
) -> None:
    for via, make in publishers(redis_server, redis_gateway):
        a1, a2, b1 = f"{via}-a1", f"{via}-a2", f"{via}-b1"
        streams = {user: Stream(redis_gateway, user, "/v1/users/me/events") for user in ("alice", "bob")}
        try:
            for stream in streams.values():
                assert stream.next()[1] == "jobs"

            def build(publisher: Any, batch: Any, a1: str = a1, a2: str = a2, b1: str = b1) -> Any:
                ja1, ja2, jb1 = publisher.job(a1, "alice"), publisher.job(a2, "alice"), publisher.job(b1, "bob")
                return (
                    batch.progress(ja1, 10)
                    .progress(jb1, 50)
                    .event(ja2, "stage", {"stage": "encode"})
                    .notify("alice", "notice", {"text": "half way"})
                    .progress(ja1, 20)
                    .notify("bob", "notice", {"text": "b"})
                    .event(jb1, "complete", {"result": {"url": "x"}})
                    .event(ja1, "complete", {"result": None})
                )

            # Scripts loaded first, so that no NOSCRIPT call counts.
            redis_server.client().raw.script_load(batch_source())
            redis_server.client().raw.script_load(script_source("register_owner"))
            before = evalsha_calls(redis_server)
            results = send(make, build)
            assert all(isinstance(result, str) for result in results), (via, results)
            if via.startswith("redis"):
                calls = evalsha_calls(redis_server) - before
                # Three owner registrations, then one batch call for both users.
                assert calls == 4, (via, calls)
            expected = {
                "alice": [
                    (0, "progress", a1),
                    (2, "stage", a2),
                    (3, "notice", "alice"),
                    (4, "progress", a1),
                    (7, "complete", a1),
                ],
                "bob": [(1, "progress", b1), (5, "notice", "bob"), (6, "complete", b1)],
            }
            with Publisher.connect(redis_server.url) as after:
                for user, events in expected.items():
                    # A sentinel after the batch: the next event after the batch's must be it
                    # (no duplicate, nothing more).
                    sentinel = after.notify(user, "sentinel", {})
                    for index, event_type, subject in events:
                        event_id, event, data = streams[user].next()
                        key = "userId" if event == "notice" else "jobId"
                        assert (event, data[key]) == (event_type, subject), (via, user, event, data)
                        if event_type == "notice":
                            assert event_id == results[index], via
                    assert streams[user].next()[:2] == (sentinel, "sentinel"), (via, user)
        finally:
            for stream in streams.values():
                stream.close()


def test_refused_events_fail_alone_with_typed_errors(redis_server: RedisServer, redis_gateway: Gateway) -> None:
    for via, make in publishers(redis_server, redis_gateway):
        with Publisher.connect(redis_server.url) as setup:
            setup.job(f"{via}-done", "alice").complete()
            setup.job(f"{via}-taken", "alice").stage("a")

        def build(publisher: Any, batch: Any, via: str = via) -> Any:
            ok, done = publisher.job(f"{via}-ok", "bob"), publisher.job(f"{via}-done", "alice")
            key = options_of({"idempotencyKey": f"{via}-k"})
            return (
                batch.event(ok, "stage", {"stage": "1"})
                .event(done, "stage", {"stage": "late"})
                .event(publisher.job(f"{via}-taken", "bob"), "stage", {"stage": "x"})
                .progress(ok, 101)
                .notify("no/slash", "notice", {})
                .event(done, "stage", {"stage": "again"}, options=options_of({"reopen": True}))
                .event(ok, "stage", {"stage": "k"}, options=key)
                .event(ok, "stage", {"stage": "k"}, options=key)
                .event(ok, "stage", {"stage": "2"})
            )

        results = send(make, build)
        assert len(results) == 9, via
        assert isinstance(results[1], JobFinished), (via, results)
        assert isinstance(results[2], OwnerConflict), (via, results)
        assert isinstance(results[3], InvalidArgument) and results[3].code == "invalid_event", (via, results)
        assert isinstance(results[4], InvalidArgument) and results[4].code == "invalid_id", (via, results)
        ids = [results[i] for i in (0, 5, 6, 7, 8)]
        assert all(isinstance(i, str) for i in ids), (via, results)
        assert results[6] == results[7], "a repeated idempotency key: the first id"
        stream = redis_server.client().xrange(f"sse:{{u:bob}}:joblog:{via}-ok")
        assert [json.loads(fields["data"])["stage"] for _, fields in stream] == ["1", "k", "2"], via


def test_http_batches_are_split_at_the_gateways_limit_and_by_traceparent() -> None:
    gateway = Gateway(extra_args=("--max-batch-events", "3", "--max-body-bytes", "131072"))
    try:
        tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with Publisher.http(gateway.url, gateway.publisher_token()) as publisher:
            job = publisher.job("long", "alice")
            batch = publisher.batch()
            for n in range(10):
                traceparent = {4: tp1, 5: tp1, 6: tp2}.get(n)
                batch.progress(job, n * 10, options=options_of({"traceparent": traceparent}))
            batch.event(job, "blob", {"x": "x" * (70 * 1024)})
            results = batch.send()
        assert all(isinstance(result, str) for result in results), results
        stream = Stream(gateway, "alice", "/v1/jobs/long/events?lastEventId=0-0")
        try:
            seen = [stream.next() for _ in range(11)]
        finally:
            stream.close()
        assert [event_id for event_id, _, _ in seen] == results
        assert [data.get("progress") for _, _, data in seen] == [n * 10 for n in range(10)] + [None]
        assert [data.get("traceparent") for _, _, data in seen][3:8] == [None, tp1, tp1, tp2, None]
    finally:
        gateway.close()
