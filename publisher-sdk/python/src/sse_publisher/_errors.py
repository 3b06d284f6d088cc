"""Why a publish failed: one exception class per outcome a worker handles differently,
the same classes as the Rust SDK's `Error`."""

from __future__ import annotations


class PublishError(Exception):
    """Base class of every error this package raises."""

    #: Whether trying again later may succeed.
    transient: bool = False


class InvalidArgument(PublishError, ValueError):
    """An argument breaks the wire contract (bad id, type, data, option); nothing was sent.

    `code` is the gateway's error code for the same mistake (`invalid_id`, `invalid_type`,
    `invalid_body`, `invalid_event`, `invalid_idempotency_key`), or `invalid_traceparent`
    and `invalid_url`, which the gateway has no code for."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OwnerConflict(PublishError):
    """The job is registered to another owner; nothing was published."""

    def __init__(self, job: str) -> None:
        super().__init__(f"job {job} belongs to another owner")
        self.job = job


class JobFinished(PublishError):
    """The job has ended (a terminal event was published); only a publish with
    `reopen=True` may follow. Nothing was published."""

    def __init__(self, job: str) -> None:
        super().__init__(f"job {job} has finished; publish with reopen to start it again")
        self.job = job


class Unauthorized(PublishError):
    """The credentials were refused (HTTP `401`/`403`, or Redis authentication)."""


class Rejected(PublishError):
    """The gateway refused the event (another `4xx`): its code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"rejected ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class Unavailable(PublishError):
    """The broker or gateway could not be reached, or answered `503`, on every attempt;
    nothing was published."""

    transient = True

    def __init__(self, attempts: int, message: str) -> None:
        super().__init__(f"unavailable after {attempts} attempt(s): {message}")
        self.attempts = attempts


class Ambiguous(PublishError):
    """The request may or may not have been published (the connection broke after it was
    sent). With an idempotency key such attempts are retried, since a repeat cannot
    publish twice; without one this is raised."""

    transient = True


class Internal(PublishError):
    """The broker or gateway failed on its side (a Redis error reply, a script error, HTTP
    `500 internal`): not retried."""


class RefusedAttempt(Exception):
    """One attempt certainly did not publish and may succeed later (no connection, a
    server that is loading or failing over, HTTP `503`): the publisher retries it, then
    raises `Unavailable`. Never escapes the package."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The server's `Retry-After`, in seconds, when it gave one.
        self.retry_after = retry_after
