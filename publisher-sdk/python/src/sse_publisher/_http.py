"""The HTTP transport (httpx): `POST /v1/{jobs,users,topics}/<id>/events` on a gateway,
with a publisher token. What a gateway on the embedded broker offers, and what a worker
uses when it should not reach Redis itself.

An answer is read by `interpret`: `201` (published) and `200` (a repeated idempotency
key: the first event's id) give the id; `503` is retried; a connection that broke after
the request was sent leaves the outcome unknown (`Ambiguous`); other `4xx` and `500` are
final.
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from ._errors import (
    Ambiguous,
    Internal,
    InvalidArgument,
    JobFinished,
    OwnerConflict,
    RefusedAttempt,
    Rejected,
    Unauthorized,
)
from ._wire import Draft, HttpRequest, batch_http_request, batch_requests, http_request, is_event_id

#: What a batch answers for each event: its id, or why it was not published.
BatchAnswer = str | Exception
#: Largest answer read from a gateway to a batch (one result per event).
MAX_BATCH_RESPONSE_BYTES = 4 * 1024 * 1024

#: Largest answer read from a gateway.
MAX_RESPONSE_BYTES = 64 * 1024

#: What `verify` accepts: verify with the system's roots (True), a CA bundle's path, or
#: not at all (False).
Verify = bool | str


def check_base_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]`, without a trailing slash."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidArgument("invalid_url", f"{url!r} is not a gateway URL like http://127.0.0.1:8080")
    return url.rstrip("/")


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the gateway sends seconds; a date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def interpret(draft: Draft, status: int, retry_after: str | None, body: bytes) -> str:
    """The id a gateway's answer gives, or the exception it means."""
    try:
        answer = json.loads(body) if body else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {}

    def text(key: str) -> str:
        value = answer.get(key)
        return value if isinstance(value, str) else ""

    if status in (200, 201):
        event_id = text("id")
        if is_event_id(event_id):
            return event_id
        raise Ambiguous(f"the gateway answered {status} without an event id: {body[:200]!r}")
    if status == 409:
        if text("error") == "job_finished":
            raise JobFinished(draft.subject)
        raise OwnerConflict(draft.subject)
    if status in (401, 403):
        raise Unauthorized(f"{status} {text('error')}: {text('message')}")
    if status == 503:
        raise RefusedAttempt(f"503 {text('error')}: {text('message')}", _retry_after(retry_after))
    if 400 <= status < 500:
        raise Rejected(status, text("error"), text("message"))
    if status == 500 and text("error") == "internal":
        raise Internal(f"the gateway failed: {text('message')}")
    # A proxy's 502/504, or anything else: the event may or may not have been published.
    raise Ambiguous(f"the gateway answered {status}")


class _TooLarge(Exception):
    """`413`: too many events or too large a body for this gateway; nothing published."""


def batch_interpret(drafts: Sequence[Draft], status: int, retry_after: str | None, body: bytes) -> list[BatchAnswer]:
    """Each event's answer from a gateway's answer to a `POST /v1/events:batch`: `200` has
    one result per event, each read as its single publish's answer would be; any other
    status is every event's fate. Raises `_TooLarge` for a `413`."""
    if status == 200:
        try:
            results = json.loads(body).get("results")
        except (ValueError, AttributeError):
            results = None
        if not isinstance(results, list) or len(results) != len(drafts):
            unknown = Ambiguous(f"the gateway answered 200 without a result per event: {body[:200]!r}")
            return [unknown for _ in drafts]
        answers: list[BatchAnswer] = []
        for draft, result in zip(drafts, results, strict=True):
            result = result if isinstance(result, dict) else {}
            status_of = result.get("status")
            try:
                answers.append(
                    interpret(draft, status_of if isinstance(status_of, int) else 0, None, json.dumps(result).encode())
                )
            except Exception as error:
                answers.append(error)
        return answers
    if status == 413:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = ""
        raise _TooLarge(str(message))
    try:
        interpret(drafts[0], status, retry_after, body)
        failure: Exception = Ambiguous(f"the gateway answered {status} to a batch")
    except Exception as error:
        failure = error
    return [failure for _ in drafts]


class _BatchPlan:
    """The requests of a batch, in order: `batch_requests`' runs, and the halves of a
    request the gateway found too large (down to single events); after a request that
    failed as a whole, the rest is not sent (a later event must not overtake an earlier
    one of its job) and counts as certainly unpublished."""

    def __init__(self, drafts: Sequence[Draft]) -> None:
        self.drafts = drafts
        self.pending: deque[list[int]] = deque(batch_requests(drafts))
        self.answers: dict[int, BatchAnswer] = {}

    def next(self) -> tuple[list[int], HttpRequest] | None:
        if not self.pending:
            return None
        indexes = self.pending.popleft()
        return indexes, batch_http_request([self.drafts[i] for i in indexes])

    def answered(self, indexes: list[int], status: int, retry_after: str | None, body: bytes) -> None:
        try:
            answers = batch_interpret([self.drafts[i] for i in indexes], status, retry_after, body)
        except _TooLarge as too_large:
            if len(indexes) > 1:
                middle = len(indexes) // 2
                self.pending.extendleft([indexes[middle:], indexes[:middle]])
            else:
                self.answers[indexes[0]] = Rejected(413, "payload_too_large", str(too_large))
            return
        self.answers.update(zip(indexes, answers, strict=True))
        if status != 200 and isinstance(answers[0], Exception):
            self.failed(answers[0])

    def broke(self, indexes: list[int], failure: Exception) -> None:
        """The request of `indexes` failed as a whole (no answer): they get the failure,
        and the rest is not sent."""
        self.answers.update({index: failure for index in indexes})
        self.failed(failure)

    def failed(self, failure: Exception) -> None:
        if isinstance(failure, (Ambiguous, RefusedAttempt)):
            failure = RefusedAttempt(f"not sent: an earlier request of the batch failed ({failure})")
        while self.pending:
            self.answers.update({index: failure for index in self.pending.popleft()})

    def result(self) -> list[BatchAnswer]:
        return [self.answers[index] for index in range(len(self.drafts))]


def _classify(error: httpx.HTTPError) -> Exception:
    # Not connected, or no connection free: the request never left.
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return RefusedAttempt(f"gateway unreachable: {error or type(error).__name__}")
    return Ambiguous(f"gateway outcome unknown: {error or type(error).__name__}")


def _ssl(verify: Verify) -> bool | ssl.SSLContext:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


class _Base:
    def __init__(self, url: str, token: str) -> None:
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise InvalidArgument("invalid_token", "the token must be a non-empty string on one line")
        self._base = check_base_url(url)
        self._authorization = f"Bearer {token}"

    def _request(self, draft: Draft) -> tuple[str, dict[str, str], bytes]:
        request = http_request(draft)
        headers = dict(request.headers)
        headers["Authorization"] = self._authorization
        return self._base + request.path, headers, request.body


class HttpTransport(_Base):
    """Synchronous, over one `httpx.Client` (a pool of keep-alive connections)."""

    def __init__(self, url: str, token: str, timeout: float, verify: Verify) -> None:
        super().__init__(url, token)
        self._client = httpx.Client(timeout=timeout, verify=_ssl(verify), follow_redirects=False)

    def publish(self, draft: Draft) -> str:
        url, headers, body = self._request(draft)
        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                answer = bytearray()
                for chunk in response.iter_bytes():
                    answer += chunk
                    if len(answer) > MAX_RESPONSE_BYTES:
                        break
        except httpx.HTTPError as error:
            raise _classify(error) from None
        return interpret(draft, response.status_code, response.headers.get("retry-after"), bytes(answer))

    def publish_batch(self, drafts: Sequence[Draft]) -> list[BatchAnswer]:
        """`POST /v1/events:batch`, as many as `_BatchPlan` says, one after the other."""
        plan = _BatchPlan(drafts)
        while (step := plan.next()) is not None:
            indexes, request = step
            headers = {**request.headers, "Authorization": self._authorization}
            try:
                with self._client.stream(
                    "POST", self._base + request.path, content=request.body, headers=headers
                ) as response:
                    answer = bytearray()
                    for chunk in response.iter_bytes():
                        answer += chunk
                        if len(answer) > MAX_BATCH_RESPONSE_BYTES:
                            break
            except httpx.HTTPError as error:
                plan.broke(indexes, _classify(error))
                continue
            plan.answered(indexes, response.status_code, response.headers.get("retry-after"), bytes(answer))
        return plan.result()

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport(_Base):
    """asyncio, over one `httpx.AsyncClient`."""

    def __init__(self, url: str, token: str, timeout: float, verify: Verify) -> None:
        super().__init__(url, token)
        self._client = httpx.AsyncClient(timeout=timeout, verify=_ssl(verify), follow_redirects=False)

    async def publish(self, draft: Draft) -> str:
        url, headers, body = self._request(draft)
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as response:
                answer = bytearray()
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) > MAX_RESPONSE_BYTES:
                        break
        except httpx.HTTPError as error:
            raise _classify(error) from None
        return interpret(draft, response.status_code, response.headers.get("retry-after"), bytes(answer))

    async def publish_batch(self, drafts: Sequence[Draft]) -> list[BatchAnswer]:
        """`POST /v1/events:batch`, as many as `_BatchPlan` says, one after the other."""
        plan = _BatchPlan(drafts)
        while (step := plan.next()) is not None:
            indexes, request = step
            headers = {**request.headers, "Authorization": self._authorization}
            try:
                async with self._client.stream(
                    "POST", self._base + request.path, content=request.body, headers=headers
                ) as response:
                    answer = bytearray()
                    async for chunk in response.aiter_bytes():
                        answer += chunk
                        if len(answer) > MAX_BATCH_RESPONSE_BYTES:
                            break
            except httpx.HTTPError as error:
                plan.broke(indexes, _classify(error))
                continue
            plan.answered(indexes, response.status_code, response.headers.get("retry-after"), bytes(answer))
        return plan.result()

    async def close(self) -> None:
        await self._client.aclose()
