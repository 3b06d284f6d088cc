"""The wire contract, as the `sse-wire` crate defines it: identifiers, the event envelope
rendered byte for byte as serde_json renders it, Redis keys, job state changes, the
scripts' keys and arguments, the HTTP publish request, and the scripts' replies.

Pure: no I/O. Both transports and both flavours (sync, asyncio) build on it, and the
shared wire fixtures (`publisher-sdk/wire/fixtures/wire-cases.json`) test it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ._errors import InvalidArgument

#: Default prefix of every Redis key and channel (the gateways' `--redis-prefix`).
DEFAULT_PREFIX = "sse:"
#: Longest job, user or topic id, correlation id or idempotency key.
MAX_ID_LEN = 128
#: Longest event type.
MAX_TYPE_LEN = 64
#: Types a gateway makes itself, and EventSource's own `error`.
RESERVED_TYPES = frozenset({"status", "jobs", "resync", "error"})
#: Types that end a job.
TERMINAL_TYPES = frozenset({"complete", "failed", "cancelled"})
#: Names the envelope uses; a field of the same name is dropped (the envelope wins).
ENVELOPE_KEYS = frozenset({"jobId", "userId", "topic", "type", "ts", "correlationId", "traceparent"})

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_TYPE_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz")
_TYPE_REST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_LOWER_HEX = frozenset("0123456789abcdef")
# serde_json holds integers as i64 or u64.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def is_valid_id(value: str) -> bool:
    """A job, user or topic id: 1-128 characters of `[A-Za-z0-9._:-]`."""
    return 0 < len(value) <= MAX_ID_LEN and all(c in _ID_CHARS for c in value)


def is_publishable_type(value: str) -> bool:
    """An event type a publisher may use: `[a-z][a-z0-9_.-]{0,63}`, not reserved."""
    return (
        0 < len(value) <= MAX_TYPE_LEN
        and value[0] in _TYPE_FIRST
        and all(c in _TYPE_REST for c in value[1:])
        and value not in RESERVED_TYPES
    )


def is_valid_correlation_id(value: str) -> bool:
    """1-128 printable ASCII characters (space included)."""
    return 0 < len(value) <= MAX_ID_LEN and all(" " <= c <= "~" for c in value)


def is_valid_idempotency_key(value: str) -> bool:
    """1-128 visible ASCII characters (no space, no control byte)."""
    return 0 < len(value) <= MAX_ID_LEN and all("!" <= c <= "~" for c in value)


def is_valid_traceparent(value: str) -> bool:
    """W3C trace context: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, neither id all zeros."""
    parts = value.split("-")
    if len(parts) != 4:
        return False
    version, trace, parent, flags = parts

    def hex_of(part: str, length: int) -> bool:
        return len(part) == length and all(c in _LOWER_HEX for c in part)

    return (
        version == "00"
        and hex_of(trace, 32)
        and hex_of(parent, 16)
        and hex_of(flags, 2)
        and trace.strip("0") != ""
        and parent.strip("0") != ""
    )


def is_event_id(value: str) -> bool:
    """`<ms>-<seq>`: two decimal numbers of at most 20 digits (a Redis Stream id)."""
    ms, dash, seq = value.partition("-")
    return dash == "-" and all(
        0 < len(part) <= 20 and part.isascii() and part.isdigit() and int(part) < 2**64 for part in (ms, seq)
    )


def now_ms() -> int:
    """Milliseconds since the Unix epoch, by the system clock."""
    return time.time_ns() // 1_000_000


# --- JSON, as serde_json (with preserve_order) writes it ---------------------------------


def dumps(value: object) -> str:
    """Compact JSON text of `value`, byte for byte as serde_json writes the same value:
    objects in insertion order, no spaces, non-ASCII characters as they are, floats in
    their shortest form (`12.5`, `1e16`, `1e-7`). Refuses what serde_json's `Value`
    cannot hold (NaN, infinities, integers beyond 64 bits, keys that are not strings,
    other types) with `InvalidArgument` (code `invalid_body`)."""
    out: list[str] = []
    try:
        _write(value, out)
    except RecursionError:
        raise InvalidArgument("invalid_body", "event data is nested too deeply") from None
    return "".join(out)


def _write(value: object, out: list[str]) -> None:
    # bool before int: True is an int in Python.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        _check_text(value)
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidArgument(
                "invalid_body", f"integer {value} does not fit in 64 bits (JSON numbers here are i64/u64/f64)"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument("invalid_body", f"object keys must be strings, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            _check_text(key)
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise InvalidArgument(
            "invalid_body", f"{type(value).__name__} is not JSON (use dict, list, str, int, float, bool, None)"
        )


def _check_text(text: str) -> None:
    # A lone surrogate has no UTF-8 form: Redis and HTTP carry UTF-8 bytes.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("invalid_body", "a string holds a lone surrogate (not valid Unicode)") from None


def format_float(value: float) -> str:
    """A finite float as serde_json writes it.

    Python's `repr` finds the same shortest digits; only the layout differs: serde_json
    writes decimals down to 1e-5 (`0.000015`, where repr switches to `1.5e-05` below
    1e-4), and negative exponents without padding (`1e-7`, repr `1e-07`). Positive
    exponents agree (`1e+16`). The fixtures' floats and a comparison with serde_json
    over random floats (tests/test_wire.py) hold this."""
    if not math.isfinite(value):
        raise InvalidArgument("invalid_body", f"{value} is not a JSON number")
    text = float.__repr__(value)
    if "e" not in text:
        return text
    mantissa, _, exponent_text = text.partition("e")
    exponent = int(exponent_text)
    if exponent == -5:
        # 1.5e-05 -> 0.000015
        sign = "-" if mantissa.startswith("-") else ""
        digits = mantissa.lstrip("-").replace(".", "")
        return f"{sign}0.0000{digits}"
    return f"{mantissa}e{'+' if exponent > 0 else ''}{exponent}"


# --- Keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Redis key and channel names (docs/protocol.md, "Redis data model")."""

    prefix: str = DEFAULT_PREFIX

    def user_channel(self, user: str) -> str:
        return f"{self.prefix}{{u:{user}}}"

    def user_log(self, user: str) -> str:
        return f"{self.user_channel(user)}:log"

    def user_jobs(self, user: str) -> str:
        return f"{self.user_channel(user)}:jobs"

    def job(self, user: str, job: str) -> str:
        """The job's state hash, and the job's channel."""
        return f"{self.user_channel(user)}:job:{job}"

    def job_log(self, user: str, job: str) -> str:
        return f"{self.user_channel(user)}:joblog:{job}"

    def user_idempotency(self, user: str, key: str) -> str:
        return f"{self.user_channel(user)}:idem:{key}"

    def topic_channel(self, topic: str) -> str:
        return f"{self.prefix}{{t:{topic}}}"

    def topic_log(self, topic: str) -> str:
        return f"{self.topic_channel(topic)}:log"

    def topic_idempotency(self, topic: str, key: str) -> str:
        return f"{self.topic_channel(topic)}:idem:{key}"

    def owner(self, job: str) -> str:
        return f"{self.prefix}owner:{job}"


@dataclass(frozen=True)
class Retention:
    """Stream lengths and TTLs written with each event; the gateways' defaults."""

    #: `MAXLEN ~` of a job's stream (`--job-stream-maxlen`).
    job_stream_maxlen: int = 1000
    #: `MAXLEN ~` of a user's stream (`--user-stream-maxlen`).
    user_stream_maxlen: int = 10_000
    #: `MAXLEN ~` of a topic's stream (`--topic-stream-maxlen`).
    topic_stream_maxlen: int = 1000
    #: How long a finished job's keys live after its terminal event (`--retention`).
    retention_ms: int = 24 * 3600 * 1000
    #: How long a user's keys, a running job's and a topic's stream live after the last
    #: event (`--user-retention`).
    user_retention_ms: int = 7 * 24 * 3600 * 1000
    #: How long an idempotency key is remembered (`--idempotency-window`).
    idempotency_window_ms: int = 10 * 60 * 1000


# --- Events -------------------------------------------------------------------------------

Kind = Literal["job", "user", "topic"]


@dataclass(frozen=True)
class Draft:
    """One event, validated, ready for a transport."""

    kind: Kind
    #: The job, user or topic id.
    subject: str
    #: The job's owner (job events only).
    owner: str | None
    event_type: str
    fields: dict[str, object]
    correlation_id: str | None = None
    traceparent: str | None = None
    idempotency_key: str | None = None
    reopen: bool = False
    #: The state fields a job event sets, as name / JSON text pairs.
    patch: tuple[tuple[str, str], ...] = field(default=())


def make_draft(
    kind: Kind,
    subject: str,
    owner: str | None,
    event_type: str,
    data: object,
    *,
    correlation_id: str | None = None,
    traceparent: str | None = None,
    idempotency_key: str | None = None,
    reopen: bool = False,
) -> Draft:
    """Checks an event against the contract, in the order every publisher checks (ids,
    type, data, reopen, correlation id, traceparent, idempotency key, fields), and renders
    nothing yet. Raises `InvalidArgument` with the code the gateway would answer."""
    for what, value in ((kind, subject), ("owner", owner)):
        if value is None:
            continue
        if not isinstance(value, str) or not is_valid_id(value):
            raise InvalidArgument("invalid_id", f"{what} id {value!r} is not 1-128 characters of [A-Za-z0-9._:-]")
    if not isinstance(event_type, str) or not is_publishable_type(event_type):
        raise InvalidArgument(
            "invalid_type",
            f"event type {event_type!r} must match [a-z][a-z0-9_.-]{{0,63}} and not be status, jobs, resync or error",
        )
    if data is None:
        fields: dict[str, object] = {}
    elif isinstance(data, Mapping):
        fields = dict(data)
    else:
        raise InvalidArgument(
            "invalid_body", f"event data must be a mapping (a JSON object), not {type(data).__name__}"
        )
    if reopen and kind != "job":
        raise InvalidArgument("invalid_body", "reopen applies to job events only")
    if correlation_id is not None and not (isinstance(correlation_id, str) and is_valid_correlation_id(correlation_id)):
        raise InvalidArgument("invalid_body", "correlation id must be 1-128 printable ASCII characters")
    if traceparent is not None and not (isinstance(traceparent, str) and is_valid_traceparent(traceparent)):
        raise InvalidArgument(
            "invalid_traceparent",
            f"traceparent {traceparent!r} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)",
        )
    if idempotency_key is not None and not (
        isinstance(idempotency_key, str) and is_valid_idempotency_key(idempotency_key)
    ):
        raise InvalidArgument("invalid_idempotency_key", "idempotency key must be 1-128 visible ASCII characters")
    patch: tuple[tuple[str, str], ...] = ()
    if kind == "job":
        patch = state_patch(event_type, fields)
    # Every value must render; find out now, before anything is sent.
    dumps(fields)
    return Draft(
        kind=kind,
        subject=subject,
        owner=owner,
        event_type=event_type,
        fields=fields,
        correlation_id=correlation_id,
        traceparent=traceparent,
        idempotency_key=idempotency_key,
        reopen=reopen,
        patch=patch,
    )


def state_patch(event_type: str, fields: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """How a job event changes its job's state (docs/protocol.md, "Job state"), as the
    state hash's name / JSON text pairs, in the order sse-wire writes them: status,
    progress, stage, message, result, error. Raises `InvalidArgument` (`invalid_event`)
    when `progress` does not fit."""
    status: str | None = None
    progress: str | None = None
    stage: str | None = None
    message: str | None = None
    result: str | None = None
    error: str | None = None
    if "progress" in fields:
        value = fields["progress"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 100):
            raise InvalidArgument("invalid_event", '"progress" must be a number from 0 to 100')
        progress = dumps(value)
    elif event_type == "progress":
        raise InvalidArgument("invalid_event", 'a progress event needs a numeric "progress" field from 0 to 100')
    if isinstance(fields.get("stage"), str):
        stage = dumps(fields["stage"])
    if event_type != "log" and isinstance(fields.get("message"), str):
        message = dumps(fields["message"])
    if event_type == "progress":
        status = '"active"'
    elif event_type == "complete":
        status = '"completed"'
        progress = "100"
        result = dumps(fields.get("result"))
    elif event_type == "failed":
        status = '"failed"'
        error = dumps(fields["error"] if "error" in fields else fields.get("message"))
    elif event_type == "cancelled":
        status = '"cancelled"'
    pairs = (
        ("status", status),
        ("progress", progress),
        ("stage", stage),
        ("message", message),
        ("result", result),
        ("error", error),
    )
    return tuple((name, text) for name, text in pairs if text is not None)


def render_event_data(draft: Draft, ts: int) -> str:
    """The `data:` JSON of an event: the envelope (`jobId`, `userId` or `topic`; `type`;
    `ts`; `correlationId` and `traceparent` when given), then the fields in their order,
    minus those whose names the envelope uses. One line."""
    subject_key = {"job": "jobId", "user": "userId", "topic": "topic"}[draft.kind]
    envelope: dict[str, object] = {subject_key: draft.subject, "type": draft.event_type, "ts": ts}
    if draft.correlation_id is not None:
        envelope["correlationId"] = draft.correlation_id
    if draft.traceparent is not None:
        envelope["traceparent"] = draft.traceparent
    for key, value in draft.fields.items():
        if key not in ENVELOPE_KEYS:
            envelope[key] = value
    return dumps(envelope)


def render_event_frame(event_id: str, event_type: str, data_json: str) -> str:
    """The SSE frame a browser receives for a published event (the scripts build the same
    bytes): `id: <id>\\nevent: <type>\\ndata: <json>\\n\\n`."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {data_json}\n\n"


# --- Script calls -------------------------------------------------------------------------

PublishCommand = Literal["PUBLISH", "SPUBLISH"]


@dataclass(frozen=True)
class ScriptCall:
    """Keys and arguments of one script call."""

    script: str
    keys: tuple[str, ...]
    args: tuple[str, ...]


def _flag(value: bool) -> str:
    return "1" if value else "0"


def register_owner_call(keys: Keys, job: str, owner: str, retention: Retention) -> ScriptCall:
    """`register_owner.lua`: the owner key lives as long as the longest of the job's keys."""
    ttl = max(retention.user_retention_ms, retention.retention_ms)
    return ScriptCall("register_owner", (keys.owner(job),), (owner, str(ttl)))


def publish_call(
    keys: Keys,
    draft: Draft,
    data_json: str,
    ts: int,
    retention: Retention,
    command: PublishCommand,
) -> ScriptCall:
    """The publish script's call for an event (`publish_job.lua`, `publish_user.lua` or
    `publish_topic.lua`), keys and arguments exactly as sse-wire builds them."""
    key = draft.idempotency_key
    if draft.kind == "job":
        job, owner = draft.subject, draft.owner or ""
        script_keys = [keys.job(owner, job), keys.job_log(owner, job), keys.user_log(owner), keys.user_jobs(owner)]
        if key is not None:
            script_keys.append(keys.user_idempotency(owner, key))
        args = [
            job,
            owner,
            draft.event_type,
            data_json,
            str(ts),
            str(retention.job_stream_maxlen),
            str(retention.user_stream_maxlen),
            _flag(draft.event_type in TERMINAL_TYPES),
            str(retention.retention_ms),
            str(retention.user_retention_ms),
            keys.job(owner, job),
            keys.user_channel(owner),
            command,
            _flag(draft.reopen),
            str(retention.idempotency_window_ms),
        ]
        for name, text in draft.patch:
            args += [name, text]
        return ScriptCall("publish_job", tuple(script_keys), tuple(args))
    if draft.kind == "user":
        user = draft.subject
        script_keys = [keys.user_log(user)]
        if key is not None:
            script_keys.append(keys.user_idempotency(user, key))
        maxlen, channel, script = retention.user_stream_maxlen, keys.user_channel(user), "publish_user"
    else:
        topic = draft.subject
        script_keys = [keys.topic_log(topic)]
        if key is not None:
            script_keys.append(keys.topic_idempotency(topic, key))
        maxlen, channel, script = retention.topic_stream_maxlen, keys.topic_channel(topic), "publish_topic"
    args = [
        draft.event_type,
        data_json,
        str(maxlen),
        str(retention.user_retention_ms),
        channel,
        command,
        str(retention.idempotency_window_ms),
    ]
    return ScriptCall(script, tuple(script_keys), tuple(args))


Outcome = Literal["published", "duplicate", "finished"]


def parse_outcome(reply: Sequence[object]) -> tuple[Outcome, str | None]:
    """Reads a publish script's reply: `("published", id)`, `("duplicate", first id)` or
    `("finished", None)`. Raises `ValueError` for anything else."""
    texts = [item.decode() if isinstance(item, bytes) else item for item in reply]
    if texts and texts[0] == "finished":
        return "finished", None
    if len(texts) >= 2 and texts[0] in ("published", "duplicate"):
        event_id = texts[1]
        if isinstance(event_id, str) and is_event_id(event_id):
            return ("published" if texts[0] == "published" else "duplicate"), event_id
    raise ValueError(f"unexpected publish script reply {texts!r}")


# --- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """A publish through a gateway's HTTP API (without the `Authorization` header)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def http_request(draft: Draft) -> HttpRequest:
    """`POST /v1/{jobs,users,topics}/<id>/events` with the JSON body the gateway reads
    (`owner`, `type`, `data`, `correlationId`, `reopen`, in sse-wire's order) and the
    `Idempotency-Key` and `traceparent` headers. Ids are valid, so need no escaping."""
    segment = {"job": "jobs", "user": "users", "topic": "topics"}[draft.kind]
    body: dict[str, object] = {}
    if draft.kind == "job":
        body["owner"] = draft.owner
    body["type"] = draft.event_type
    body["data"] = draft.fields
    if draft.correlation_id is not None:
        body["correlationId"] = draft.correlation_id
    if draft.reopen:
        body["reopen"] = True
    headers = {"Content-Type": "application/json"}
    if draft.idempotency_key is not None:
        headers["Idempotency-Key"] = draft.idempotency_key
    if draft.traceparent is not None:
        headers["traceparent"] = draft.traceparent
    return HttpRequest("POST", f"/v1/{segment}/{draft.subject}/events", headers, dumps(body).encode())


# --- Batches ------------------------------------------------------------------------------

#: The publish scripts a batch runs, as `publish_batch.lua` names them.
BATCH_KINDS: dict[str, str] = {"job": "publish_job", "user": "publish_user", "topic": "publish_topic"}
#: Most events in one call of the batch script (sse-wire's `BATCH_SCRIPT_EVENTS`): a
#: script blocks Redis while it runs, so a larger group goes as several calls.
BATCH_SCRIPT_EVENTS = 100
#: Most events in one `POST /v1/events:batch` (the gateway's default `--max-batch-events`).
MAX_EVENTS_PER_REQUEST = 100
#: Most bytes of body in one `POST /v1/events:batch` (the gateway's default
#: `--max-body-bytes`); an event larger by itself goes alone. A gateway refuses a body over
#: its limit before reading it, and a client still sending may then see the connection
#: reset instead of the `413`, leaving every event of the request unknown.
MAX_BYTES_PER_REQUEST = 64 * 1024


def publish_batch_source(sources: Mapping[str, bytes]) -> bytes:
    """The batch script, assembled from the single scripts' texts (`publish_job`,
    `publish_user`, `publish_topic`, `publish_batch`) exactly as sse-wire's
    `scripts::PUBLISH_BATCH` is: each publish script wrapped as a local function of
    `(KEYS, ARGV)`, then the driver. Its SHA1 is the fixtures' `publishBatchSha1`."""
    out = b""
    for kind in ("job", "user", "topic"):
        out += b"local function publish_" + kind.encode() + b"(KEYS, ARGV)\n" + sources[BATCH_KINDS[kind]] + b"\nend\n"
    return out + sources["publish_batch"]


def publish_batch_call(calls: Sequence[ScriptCall]) -> ScriptCall:
    """One call of the batch script running these single calls in order (sse-wire's
    `publish_batch_call`): every call's keys; the number of events, then per event its
    kind, its number of keys and of arguments, and its arguments. A single call stays
    itself (the batch script's wrapping costs Redis more for one event)."""
    if len(calls) == 1:
        return calls[0]
    keys: list[str] = []
    args: list[str] = [str(len(calls))]
    kinds = {script: kind for kind, script in BATCH_KINDS.items()}
    for call in calls:
        keys += call.keys
        args += [kinds[call.script], str(len(call.keys)), str(len(call.args)), *call.args]
    return ScriptCall("publish_batch", tuple(keys), tuple(args))


def hash_tag(key: str) -> str:
    """The hash tag of a key (`{u:alice}` of `sse:{u:alice}:log`), or the whole key when
    it has none: keys with the same tag share a Redis Cluster slot."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start : end + 1]
    return key


def batch_element(draft: Draft) -> dict[str, object]:
    """A `POST /v1/events:batch` element: the target, the single publish's body and the
    idempotency key, in the gateway's field order."""
    element: dict[str, object] = {draft.kind: draft.subject}
    if draft.kind == "job":
        element["owner"] = draft.owner
    element["type"] = draft.event_type
    element["data"] = draft.fields
    if draft.correlation_id is not None:
        element["correlationId"] = draft.correlation_id
    if draft.reopen:
        element["reopen"] = True
    if draft.idempotency_key is not None:
        element["idempotencyKey"] = draft.idempotency_key
    return element


def batch_requests(drafts: Sequence[Draft]) -> list[list[int]]:
    """The indexes of `drafts`, as the `POST /v1/events:batch` requests that carry them, in
    order: runs of events with the same traceparent (the request's header; an element has
    no field for it), each at most `MAX_EVENTS_PER_REQUEST` events and
    `MAX_BYTES_PER_REQUEST` bytes of body."""
    requests: list[list[int]] = []
    size = 0
    for index, draft in enumerate(drafts):
        length = len(dumps(batch_element(draft)).encode()) + 1
        current = requests[-1] if requests else None
        if (
            current is not None
            and len(current) < MAX_EVENTS_PER_REQUEST
            and size + length < MAX_BYTES_PER_REQUEST
            and drafts[current[0]].traceparent == draft.traceparent
        ):
            current.append(index)
            size += length
        else:
            requests.append([index])
            size = length + 1
    return requests


def batch_http_request(drafts: Sequence[Draft]) -> HttpRequest:
    """One `POST /v1/events:batch` of events that share a traceparent (or have none)."""
    headers = {"Content-Type": "application/json"}
    if drafts and drafts[0].traceparent is not None:
        headers["traceparent"] = drafts[0].traceparent
    body = dumps([batch_element(draft) for draft in drafts]).encode()
    return HttpRequest("POST", "/v1/events:batch", headers, body)
