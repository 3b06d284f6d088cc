"""Job owners this publisher registered or confirmed, so that a job's later events skip
the registration script (as `sse_wire::store::OwnerCache` does)."""

from __future__ import annotations

import threading
import time

#: Owners remembered before the memory is reset.
OWNER_CACHE_LIMIT = 100_000
#: Seconds a remembered owner is trusted: an owner never changes while the job's keys
#: live, but a job id may be reused after they expired.
OWNER_CACHE_TTL = 300.0


class OwnerCache:
    """job -> (owner, when), bounded by `OWNER_CACHE_LIMIT` (cleared when full), each
    entry trusted for `OWNER_CACHE_TTL` seconds. Thread-safe; no lock is held across I/O."""

    def __init__(self, limit: int = OWNER_CACHE_LIMIT, ttl: float = OWNER_CACHE_TTL) -> None:
        self._limit = limit
        self._ttl = ttl
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def is_known(self, job: str, owner: str) -> bool:
        with self._lock:
            entry = self._entries.get(job)
        return entry is not None and entry[0] == owner and time.monotonic() - entry[1] < self._ttl

    def put(self, job: str, owner: str) -> None:
        with self._lock:
            if len(self._entries) >= self._limit and job not in self._entries:
                self._entries.clear()
            self._entries[job] = (owner, time.monotonic())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
