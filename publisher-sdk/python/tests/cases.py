"""Publishing a fixture case's input as a worker would, in either flavour, and reading a
scenario step's outcome."""

from __future__ import annotations

from typing import Any

from sse_publisher import AsyncPublisher, EventOptions, JobFinished, OwnerConflict, Publisher


def options_of(case_input: dict[str, Any]) -> EventOptions:
    return EventOptions(
        correlation_id=case_input.get("correlationId"),
        traceparent=case_input.get("traceparent"),
        idempotency_key=case_input.get("idempotencyKey"),
        reopen=case_input.get("reopen", False),
    )


def publish(publisher: Publisher, case_input: dict[str, Any]) -> str:
    options, data, kind = options_of(case_input), case_input.get("data"), case_input["kind"]
    if kind == "job":
        return publisher.job(case_input["job"], case_input["owner"]).event(case_input["type"], data, options=options)
    if kind == "user":
        return publisher.notify(case_input["user"], case_input["type"], data, options=options)
    return publisher.topic(case_input["topic"]).publish(case_input["type"], data, options=options)


async def publish_async(publisher: AsyncPublisher, case_input: dict[str, Any]) -> str:
    options, data, kind = options_of(case_input), case_input.get("data"), case_input["kind"]
    if kind == "job":
        job = publisher.job(case_input["job"], case_input["owner"])
        return await job.event(case_input["type"], data, options=options)
    if kind == "user":
        return await publisher.notify(case_input["user"], case_input["type"], data, options=options)
    return await publisher.topic(case_input["topic"]).publish(case_input["type"], data, options=options)


def outcome(expect: dict[str, Any], result: str | Exception) -> str:
    """A step's outcome as the fixtures name it. The SDK returns the first id for a
    repeated idempotency key, as for a new event; the fixture's `sameIdAsStep` tells them
    apart, and the test compares the ids."""
    if isinstance(result, OwnerConflict):
        return "owner_conflict"
    if isinstance(result, JobFinished):
        return "job_finished"
    if isinstance(result, Exception):
        raise result
    return "duplicate" if "sameIdAsStep" in expect else "published"


def with_ts(text: str, fixture_ts: int, ts: int) -> str:
    """A fixture's text with the publish time the SDK really used in place of its own."""
    return text.replace(f'"ts":{fixture_ts}', f'"ts":{ts}', 1)
