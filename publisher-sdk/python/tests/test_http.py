"""The HTTP transport against the real gateway binary (`target/debug/sse-gateway`), on the
embedded broker and on a real redis-server: the fixture cases land with the fixture's bytes,
the scenarios have their outcomes, and each kind of answer is the documented exception."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from cases import outcome, publish, publish_async, with_ts
from support import CuttingProxy, Gateway, RedisServer, free_port

from sse_publisher import (
    Ambiguous,
    AsyncPublisher,
    EventOptions,
    JobFinished,
    OwnerConflict,
    Publisher,
    Rejected,
    RetryPolicy,
    Unauthorized,
    Unavailable,
)

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05)


def test_every_fixture_case_lands_through_the_gateway(
    redis_server: RedisServer, redis_gateway: Gateway, wire: dict[str, Any]
) -> None:
    client = redis_server.client()
    with Publisher.http(redis_gateway.url, redis_gateway.publisher_token()) as publisher:
        for case in wire["cases"]:
            if "error" in case["expect"]:
                continue
            name, case_input, expect = case["name"], case["input"], case["expect"]
            event_id = publish(publisher, case_input)
            keys = expect["publish"]["keys"]
            stream = keys[1] if case_input["kind"] == "job" else keys[0]
            entries = client.xrange(stream, event_id, event_id)
            assert len(entries) == 1, f"{name}: no entry {event_id} in {stream}"
            data = entries[0][1]["data"]
            assert data == with_ts(expect["dataJson"], case_input["ts"], json.loads(data)["ts"]), name
            if "idempotencyKey" in case_input:
                record = keys[4] if case_input["kind"] == "job" else keys[1]
                assert client.get(record) == event_id, f"{name}: the idempotency record"


def run_scenarios(publisher: Publisher, gateway: Gateway, wire: dict[str, Any]) -> None:
    for scenario in wire["scenarios"]:
        ids: list[str | None] = []
        for n, step in enumerate(scenario["steps"]):
            where = f"{scenario['name']}, step {n}"
            try:
                result: str | Exception = publish(publisher, step["input"])
            except Exception as error:
                result = error
            assert outcome(step["expect"], result) == step["expect"]["outcome"], where
            event_id = result if isinstance(result, str) else None
            if "sameIdAsStep" in step["expect"]:
                assert event_id == ids[step["expect"]["sameIdAsStep"]], f"{where}: the first id"
            if "state" in step["expect"]:
                state = gateway.job_state(step["input"]["job"], step["input"]["owner"])
                for key, value in step["expect"]["state"].items():
                    assert state[key] == value, f"{where}: {key} in {state}"
            ids.append(event_id)


def test_every_fixture_scenario_on_the_embedded_broker(gateway: Gateway, wire: dict[str, Any]) -> None:
    with Publisher.http(gateway.url, gateway.publisher_token()) as publisher:
        run_scenarios(publisher, gateway, wire)


def test_every_fixture_scenario_on_redis(redis_gateway: Gateway, wire: dict[str, Any]) -> None:
    with Publisher.http(redis_gateway.url, redis_gateway.publisher_token()) as publisher:
        run_scenarios(publisher, redis_gateway, wire)


async def test_asyncio_cases_and_scenarios_on_the_embedded_broker(gateway: Gateway, wire: dict[str, Any]) -> None:
    async with AsyncPublisher.http(gateway.url, gateway.publisher_token()) as publisher:
        for case in wire["cases"]:
            if "error" not in case["expect"]:
                assert await publish_async(publisher, case["input"]), case["name"]
        state = gateway.job_state("build-9", "carol")
        assert (state["status"], state["stage"], state["result"]) == ("queued", "Rebuild", None), "reopened"
        for scenario in wire["scenarios"]:
            ids: list[str | None] = []
            for n, step in enumerate(scenario["steps"]):
                try:
                    result: str | Exception = await publish_async(publisher, step["input"])
                except Exception as error:
                    result = error
                assert outcome(step["expect"], result) == step["expect"]["outcome"], f"{scenario['name']} {n}"
                event_id = result if isinstance(result, str) else None
                if "sameIdAsStep" in step["expect"]:
                    assert event_id == ids[step["expect"]["sameIdAsStep"]]
                ids.append(event_id)


def test_answers_become_typed_errors(gateway: Gateway) -> None:
    with Publisher.http(gateway.url, gateway.publisher_token(), retry=FAST_RETRY) as publisher:
        job = publisher.job("j1", "u1")
        job.stage("a")
        with pytest.raises(OwnerConflict):
            publisher.job("j1", "u2").stage("b")
        job.complete({"ok": True})
        with pytest.raises(JobFinished) as finished:
            job.stage("late")
        assert finished.value.job == "j1"
        with pytest.raises(Rejected) as rejected:
            publisher.notify("u1", "notice", {"text": "x" * 70_000})
        assert (rejected.value.status, rejected.value.code) == (413, "payload_too_large")
        assert not rejected.value.transient
    wrong_secret = gateway.token("worker", "publisher", secret="another-secret-of-32-bytes-or-more!")
    with Publisher.http(gateway.url, wrong_secret) as publisher, pytest.raises(Unauthorized):
        publisher.notify("u1", "notice")
    with Publisher.http(gateway.url, gateway.token("worker")) as publisher, pytest.raises(Unauthorized):
        publisher.notify("u1", "notice")  # a token without role publisher: 403


def test_an_unreachable_gateway_is_retried_then_unavailable() -> None:
    with Publisher.http(f"http://127.0.0.1:{free_port()}", "token", retry=FAST_RETRY) as publisher:
        with pytest.raises(Unavailable) as unavailable:
            publisher.notify("u1", "notice")
        assert unavailable.value.attempts == 3


def test_a_503_is_retried_and_the_publish_lands_when_the_broker_is_back(
    redis_server: RedisServer, redis_gateway: Gateway
) -> None:
    with Publisher.http(redis_gateway.url, redis_gateway.publisher_token(), retry=FAST_RETRY) as publisher:
        publisher.notify("u1", "notice", {"n": 1})
        redis_server.stop()
        with pytest.raises(Unavailable) as unavailable:
            publisher.notify("u1", "notice", {"n": 2})
        assert unavailable.value.attempts == 3
        assert "broker_unavailable" in str(unavailable.value)
    patient = RetryPolicy(attempts=400, initial_backoff=0.02, max_backoff=0.05)
    with Publisher.http(redis_gateway.url, redis_gateway.publisher_token(), retry=patient) as publisher:
        published: list[str] = []
        worker = threading.Thread(target=lambda: published.append(publisher.notify("u1", "notice", {"n": 3})))
        worker.start()
        redis_server.start()
        worker.join(timeout=20)
        assert len(published) == 1, "published once the gateway reached Redis again"
    entries = redis_server.client().xrange("sse:{u:u1}:log")
    assert [entry_id for entry_id, _ in entries] == published


def test_a_lost_answer_is_ambiguous_without_a_key_and_retried_with_one(
    redis_server: RedisServer, redis_gateway: Gateway
) -> None:
    port = int(redis_gateway.addr.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, trigger=b"cut-here", cuts=1)
    client = redis_server.client()
    try:
        url = f"http://127.0.0.1:{proxy.port}"
        with Publisher.http(url, redis_gateway.publisher_token(), retry=FAST_RETRY) as publisher:
            job = publisher.job("j1", "u1")
            with pytest.raises(Ambiguous):
                job.stage("cut-here")
            assert proxy.cut == 1
            assert len(client.xrange("sse:{u:u1}:joblog:j1")) == 1, "published once, not retried"
            proxy.cuts_left = 1
            event_id = job.stage("cut-here", options=EventOptions(idempotency_key="stage-2"))
            assert proxy.cut == 2
            entries = client.xrange("sse:{u:u1}:joblog:j1")
            assert len(entries) == 2, "the retry was answered 200 with the first publish's id"
            assert entries[-1][0] == event_id
    finally:
        proxy.close()
