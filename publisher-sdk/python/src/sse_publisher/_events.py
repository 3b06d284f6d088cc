"""What each helper publishes, and the retry decision, shared by the synchronous and the
asyncio flavour."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from ._errors import Ambiguous, Internal, InvalidArgument, PublishError, RefusedAttempt, Unavailable
from ._options import LEVELS, EventOptions, RetryPolicy
from ._wire import Draft, Kind, make_draft

log = logging.getLogger("sse_publisher")


def draft(
    kind: Kind, subject: str, owner: str | None, event_type: str, data: object, options: EventOptions | None
) -> Draft:
    if options is None:
        options = EventOptions()
    elif not isinstance(options, EventOptions):
        raise InvalidArgument("invalid_body", f"options must be EventOptions, not {type(options).__name__}")
    return make_draft(
        kind,
        subject,
        owner,
        event_type,
        data,
        correlation_id=options.correlation_id,
        traceparent=options.traceparent,
        idempotency_key=options.idempotency_key,
        reopen=options.reopen,
    )


def progress_data(progress: float, stage: str | None) -> dict[str, object]:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 100:
        raise InvalidArgument("invalid_event", f"progress {progress!r} is not a number from 0 to 100")
    data: dict[str, object] = {"progress": progress}
    if stage is not None:
        data["stage"] = stage
    return data


def log_data(level: str, message: str) -> dict[str, object]:
    if level not in LEVELS:
        raise InvalidArgument("invalid_body", f"log level {level!r} is not one of {', '.join(LEVELS)}")
    return {"level": level, "message": message}


def cancelled_data(reason: str | None) -> dict[str, object]:
    return {} if reason is None else {"message": reason}


def next_delay(policy: RetryPolicy, draft: Draft, attempt: int, failure: Exception) -> float:
    """After failed attempt number `attempt` (1 for the first): the seconds to wait before
    the next, or the exception to raise now (re-raised by the caller)."""
    if isinstance(failure, RefusedAttempt):
        if attempt >= policy.attempts:
            raise Unavailable(attempt, failure.message) from None
        delay = policy.backoff(attempt - 1, failure.retry_after)
    elif isinstance(failure, Ambiguous) and draft.idempotency_key is not None:
        # A repeat with the same key cannot publish twice.
        if attempt >= policy.attempts:
            raise failure
        delay = policy.backoff(attempt - 1)
    else:
        raise failure
    log.debug("publish attempt %d did not certainly publish (%s); retrying in %.3fs", attempt, failure, delay)
    return delay


class JobLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def owner(self) -> str: ...


class TopicLike(Protocol):
    @property
    def name(self) -> str: ...


B = TypeVar("B", bound="BatchEvents")


class BatchEvents:
    """The events of a batch as added: each checked (a `Draft`), or why it cannot be
    sent (an `InvalidArgument`, its result)."""

    def __init__(self) -> None:
        self._entries: list[Draft | InvalidArgument] = []

    def _add(
        self, kind: Kind, subject: str, owner: str | None, event_type: str, data: object, options: EventOptions | None
    ) -> None:
        try:
            self._entries.append(draft(kind, subject, owner, event_type, data, options))
        except InvalidArgument as invalid:
            self._entries.append(invalid)

    def event(
        self: B,
        job: JobLike,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> B:
        """Adds one of a job's events (any type, as `Job.event`)."""
        self._add("job", job.id, job.owner, event_type, data, options)
        return self

    def progress(
        self: B, job: JobLike, progress: float, stage: str | None = None, *, options: EventOptions | None = None
    ) -> B:
        """Adds a job's `progress` (as `Job.progress`)."""
        try:
            data = progress_data(progress, stage)
        except InvalidArgument as invalid:
            self._entries.append(invalid)
            return self
        return self.event(job, "progress", data, options=options)

    def notify(
        self: B,
        user: str,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> B:
        """Adds a notification to a user's stream (as `Publisher.notify`)."""
        self._add("user", user, None, event_type, data, options)
        return self

    def topic_event(
        self: B,
        topic: TopicLike,
        event_type: str,
        data: Mapping[str, object] | None = None,
        *,
        options: EventOptions | None = None,
    ) -> B:
        """Adds an event to a topic (as `Topic.publish`)."""
        self._add("topic", topic.name, None, event_type, data, options)
        return self

    def __len__(self) -> int:
        return len(self._entries)

    def _start(self) -> tuple[list[str | PublishError | None], list[tuple[int, Draft]]]:
        results: list[str | PublishError | None] = []
        pending: list[tuple[int, Draft]] = []
        for index, entry in enumerate(self._entries):
            if isinstance(entry, Draft):
                pending.append((index, entry))
                results.append(None)
            else:
                results.append(entry)
        return results, pending


def settle_batch(
    policy: RetryPolicy,
    attempt: int,
    pending: list[tuple[int, Draft]],
    answers: Sequence[str | Exception],
    results: list[str | PublishError | None],
) -> tuple[list[tuple[int, Draft]], float]:
    """Records the final answers of one attempt at a batch's pending events; returns those
    to send again (certainly not published, or unknown with an idempotency key, while
    attempts remain) and the seconds to wait first."""
    again: list[tuple[int, Draft]] = []
    retry_after: float | None = None
    for (index, event), answer in zip(pending, answers, strict=True):
        if isinstance(answer, str):
            results[index] = answer
            continue
        refused = isinstance(answer, RefusedAttempt)
        retryable = refused or (isinstance(answer, Ambiguous) and event.idempotency_key is not None)
        if retryable and attempt < policy.attempts:
            again.append((index, event))
            if isinstance(answer, RefusedAttempt) and answer.retry_after is not None:
                retry_after = max(retry_after or 0.0, answer.retry_after)
        elif isinstance(answer, RefusedAttempt):
            results[index] = Unavailable(attempt, answer.message)
        elif isinstance(answer, PublishError):
            results[index] = answer
        else:
            results[index] = Internal(f"{type(answer).__name__}: {answer}")
    delay = policy.backoff(attempt - 1, retry_after)
    if again:
        log.debug("%d batch event(s) not certainly published; retrying in %.3fs", len(again), delay)
    return again, delay


def batch_results(results: list[str | PublishError | None]) -> list[str | PublishError]:
    return [Internal("event not published") if result is None else result for result in results]
