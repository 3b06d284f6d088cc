"""The wire contract without I/O, against the shared fixtures
(`publisher-sdk/wire/fixtures/wire-cases.json`, the file the Rust SDK, the gateway and the
TypeScript SDK are held to): for each case the exact data JSON, script calls, frame and
HTTP request, or the refusal code; the Lua copies this package ships; JSON rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from support import WIRE_LUA, fixtures

from sse_publisher import EventOptions, InvalidArgument, Publisher, RetryPolicy
from sse_publisher._redis import SCRIPT_NAMES, script_source
from sse_publisher._wire import (
    Draft,
    Keys,
    Retention,
    dumps,
    format_float,
    http_request,
    is_event_id,
    make_draft,
    parse_outcome,
    publish_call,
    register_owner_call,
    render_event_data,
    render_event_frame,
)

CASES = fixtures()["cases"]


def draft_of(case_input: dict[str, Any]) -> Draft:
    """What a worker's call makes of a case's input (validation included)."""
    kind = case_input["kind"]
    subject = case_input[kind]
    return make_draft(
        kind,
        subject,
        case_input.get("owner") if kind == "job" else None,
        case_input["type"],
        case_input.get("data"),
        correlation_id=case_input.get("correlationId"),
        traceparent=case_input.get("traceparent"),
        idempotency_key=case_input.get("idempotencyKey"),
        reopen=case_input.get("reopen", False),
    )


def retention_of(document: dict[str, Any]) -> Retention:
    r = document["retention"]
    return Retention(
        job_stream_maxlen=r["jobStreamMaxlen"],
        user_stream_maxlen=r["userStreamMaxlen"],
        topic_stream_maxlen=r["topicStreamMaxlen"],
        retention_ms=r["retentionMs"],
        user_retention_ms=r["userRetentionMs"],
        idempotency_window_ms=r["idempotencyWindowMs"],
    )


def test_the_fixtures_retention_is_the_default(wire: dict[str, Any]) -> None:
    assert retention_of(wire) == Retention()
    assert wire["prefix"] == Keys().prefix


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_every_case_renders_exactly_as_the_fixture_says(case: dict[str, Any], wire: dict[str, Any]) -> None:
    case_input, expect = case["input"], case["expect"]
    if "error" in expect:
        with pytest.raises(InvalidArgument) as refused:
            draft_of(case_input)
        assert refused.value.code == expect["error"]
        return
    draft = draft_of(case_input)
    keys, retention, ts = Keys(wire["prefix"]), retention_of(wire), case_input["ts"]
    data_json = render_event_data(draft, ts)
    assert data_json == expect["dataJson"]
    call = publish_call(keys, draft, data_json, ts, retention, "PUBLISH")
    assert {"script": call.script, "keys": list(call.keys), "args": list(call.args)} == expect["publish"]
    if draft.kind == "job":
        owner = register_owner_call(keys, draft.subject, draft.owner or "", retention)
        assert {"script": owner.script, "keys": list(owner.keys), "args": list(owner.args)} == expect["registerOwner"]
    else:
        assert "registerOwner" not in expect
    assert render_event_frame(wire["sampleId"], draft.event_type, data_json) == expect["frame"]
    request = http_request(draft)
    http = expect["http"]
    assert (request.method, request.path) == (http["method"], http["path"])
    sent_headers = {name: value for name, value in request.headers.items() if name != "Content-Type"}
    assert sent_headers == http["headers"]
    assert request.headers["Content-Type"] == "application/json"
    # The body to the byte: the fixture's body in its order, as serde_json writes it.
    assert request.body == json.dumps(http["body"], separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("case", [c for c in CASES if "error" in c["expect"]], ids=lambda c: c["name"])
def test_refused_cases_are_refused_by_every_method_before_anything_is_sent(case: dict[str, Any]) -> None:
    # Port 9 (discard) is never contacted: every call fails validation first.
    publisher = Publisher.http("http://127.0.0.1:9", "token", retry=RetryPolicy(attempts=1))
    case_input = case["input"]
    options = EventOptions(
        correlation_id=case_input.get("correlationId"),
        traceparent=case_input.get("traceparent"),
        idempotency_key=case_input.get("idempotencyKey"),
        reopen=case_input.get("reopen", False),
    )
    with pytest.raises(InvalidArgument) as refused:
        if case_input["kind"] == "job":
            publisher.job(case_input["job"], case_input["owner"]).event(
                case_input["type"], case_input.get("data"), options=options
            )
        elif case_input["kind"] == "user":
            publisher.notify(case_input["user"], case_input["type"], case_input.get("data"), options=options)
        else:
            publisher.topic(case_input["topic"]).publish(case_input["type"], case_input.get("data"), options=options)
    assert refused.value.code == case["expect"]["error"]


def test_helpers_check_their_arguments_before_anything_is_sent() -> None:
    job = Publisher.http("http://127.0.0.1:9", "token").job("j1", "u1")
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: job.progress(101, "x"), "invalid_event"),
        (lambda: job.progress(-1), "invalid_event"),
        (lambda: job.progress(True), "invalid_event"),
        (lambda: job.log("loud", "x"), "invalid_body"),  # type: ignore[arg-type]
        (lambda: job.complete(float("nan")), "invalid_body"),
        (lambda: job.complete({"n": 2**64}), "invalid_body"),
        (lambda: job.complete({1: "x"}), "invalid_body"),
        (lambda: job.complete({"when": object()}), "invalid_body"),
        (lambda: job.complete({"text": "\ud800"}), "invalid_body"),
        (lambda: job.event("x", ["a"]), "invalid_body"),  # type: ignore[arg-type]
        (lambda: job.event("x", options=EventOptions(traceparent="00-0-0-0")), "invalid_traceparent"),
        (lambda: job.event("x", options=EventOptions(correlation_id="")), "invalid_body"),
        (lambda: job.event("x", options=EventOptions(idempotency_key="k" * 129)), "invalid_idempotency_key"),
    ]
    for call, code in calls:
        with pytest.raises(InvalidArgument) as refused:
            call()
        assert refused.value.code == code
    with pytest.raises(InvalidArgument):
        Publisher.http("ftp://127.0.0.1", "token")
    with pytest.raises(InvalidArgument):
        Publisher.http("not a url", "token")
    with pytest.raises(InvalidArgument):
        Publisher.http("http://127.0.0.1:8080", "")
    with pytest.raises(InvalidArgument):
        Publisher.connect("http://127.0.0.1:6379")


def test_helpers_publish_the_documented_fields() -> None:
    job = Publisher.http("http://127.0.0.1:9", "token").job("j1", "u1")
    seen: list[Draft] = []

    def capture(draft: Draft) -> str:
        seen.append(draft)
        return "1-0"

    job._publisher._publish = capture  # type: ignore[method-assign]
    job.progress(45, "Encoding")
    job.progress(12.5)
    job.stage("Muxing")
    job.log("warn", "slow")
    job.complete({"url": "/out.mp4"})
    job.fail("disk full")
    job.cancel("user asked")
    job.cancel()
    assert [(d.event_type, d.fields) for d in seen] == [
        ("progress", {"progress": 45, "stage": "Encoding"}),
        ("progress", {"progress": 12.5}),
        ("stage", {"stage": "Muxing"}),
        ("log", {"level": "warn", "message": "slow"}),
        ("complete", {"result": {"url": "/out.mp4"}}),
        ("failed", {"error": "disk full"}),
        ("cancelled", {"message": "user asked"}),
        ("cancelled", {}),
    ]


def test_the_shipped_scripts_are_the_wire_crates_byte_for_byte() -> None:
    shipped = resources.files("sse_publisher") / "lua"
    sources = sorted(path.name for path in WIRE_LUA.glob("*.lua"))
    assert sources, f"no scripts in {WIRE_LUA}"
    assert sorted(entry.name for entry in shipped.iterdir() if entry.name.endswith(".lua")) == sources
    for name in sources:
        assert (shipped / name).read_bytes() == (WIRE_LUA / name).read_bytes(), f"{name} differs from its source"
    for name in SCRIPT_NAMES:
        assert script_source(name) == (WIRE_LUA / f"{name}.lua").read_bytes()


# Each float with what serde_json 1.0.154 (the workspace's) writes for it, taken from a
# comparison over 150,000 random floats that found no difference.
SERDE_FLOATS = [
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.0, "1.0"),
    (100.0, "100.0"),
    (12.5, "12.5"),
    (101.25, "101.25"),
    (0.1, "0.1"),
    (0.30000000000000004, "0.30000000000000004"),
    (1000000000000000.0, "1000000000000000.0"),
    (1e16, "1e+16"),
    (1.5e16, "1.5e+16"),
    (0.0001, "0.0001"),
    (1e-05, "0.00001"),
    (1.5e-05, "0.000015"),
    (-1.5e-05, "-0.000015"),
    (9.99e-05, "0.0000999"),
    (1e-06, "1e-6"),
    (1e-07, "1e-7"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (9.223372036854776e18, "9.223372036854776e+18"),
    (-9524089.298036275, "-9524089.298036275"),
    (713726012769499.1, "713726012769499.1"),
    (0.0007100912718085173, "0.0007100912718085173"),
    (5.859537450399052e-07, "5.859537450399052e-7"),
    (-1.0681369448600321e-06, "-1.0681369448600321e-6"),
    (-8186589250163212.0, "-8186589250163212.0"),
]


@pytest.mark.parametrize(("value", "text"), SERDE_FLOATS)
def test_floats_are_written_as_serde_json_writes_them(value: float, text: str) -> None:
    assert format_float(value) == text
    assert dumps({"x": value}) == '{"x":' + text + "}"


def test_json_is_written_as_serde_json_writes_it() -> None:
    assert dumps({"b": 1, "a": [True, False, None, -5, 2**64 - 1, -(2**63)], "é": '世界\n\x01\x7f"\\/'}) == (
        '{"b":1,"a":[true,false,null,-5,18446744073709551615,-9223372036854775808],"é":"世界\\n\\u0001\x7f\\"\\\\/"}'
    )
    assert dumps(("tuple", 1)) == '["tuple",1]'
    for bad in (float("inf"), float("-inf"), 2**64, -(2**63) - 1, {1, 2}, b"bytes"):
        with pytest.raises(InvalidArgument):
            dumps(bad)


def test_script_replies_are_read() -> None:
    assert parse_outcome([b"published", b"5-1", b"5-2"]) == ("published", "5-1")
    assert parse_outcome([b"duplicate", b"5-1"]) == ("duplicate", "5-1")
    assert parse_outcome([b"finished"]) == ("finished", None)
    for reply in ([], [b"5-1"], [b"published"], [b"published", b"x-1"]):
        with pytest.raises(ValueError):
            parse_outcome(reply)
    assert is_event_id("1732245600123-0")
    fullwidth_one = "\uff11"
    for bad in ("", "1", "1-", "-1", "+1-0", "1-0-0", " 1-0", "99999999999999999999999-0", f"{fullwidth_one}-0"):
        assert not is_event_id(bad), bad


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy()
    assert policy.backoff(0) == pytest.approx(0.05)
    assert policy.backoff(1) == pytest.approx(0.1)
    assert policy.backoff(10) == 2.0
    assert policy.backoff(400) == 2.0
    assert policy.backoff(0, retry_after=1.0) == 1.0
    assert policy.backoff(0, retry_after=30.0) == 2.0
