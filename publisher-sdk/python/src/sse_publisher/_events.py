"""What each helper publishes, and the retry decision, shared by the synchronous and the
asyncio flavour."""

from __future__ import annotations

import logging

from ._errors import Ambiguous, InvalidArgument, RefusedAttempt, Unavailable
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
