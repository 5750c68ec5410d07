"""Abuse limits of audin-core: token-issuance rates (token buckets) and WebSockets per token.

Both are in-memory and per core process; a restart forgets them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

from softphone.protocol import ErrorCode, ProtocolError

DEFAULT_TOKEN_RATE: Final = 10.0
"""Token requests per second, per API key (and per client address on ``/sandbox/token``)."""
DEFAULT_TOKEN_BURST: Final = 20
"""Token requests allowed at once after a quiet period."""
DEFAULT_CONNECTIONS_PER_TOKEN: Final = 4
"""Open WebSockets authenticated by one session token (presence, a media leg, and a
reconnection overlapping each)."""
AUTH_FAILURE_RATE: Final = 1.0
"""Refused ``X-API-Key`` values per second per client address (each costs a scrypt)."""
AUTH_FAILURE_BURST: Final = 10
MAX_TRACKED_KEYS: Final = 10_000


class RateLimited(ProtocolError):
    """``RATE_LIMITED`` (HTTP 429) with the seconds after which a retry can succeed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each allowed event takes one."""

    rate: float
    burst: float
    level: float
    updated: float

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.burst, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0: now). Takes nothing."""
        self._refill(now)
        # The epsilon absorbs float rounding of the refill (0.1 s at 10/s is one token).
        return 0.0 if self.level >= 1.0 - 1e-9 else (1.0 - self.level) / self.rate

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds to wait (taking nothing)."""
        wait = self.wait(now)
        if wait == 0.0:
            self.level = max(0.0, self.level - 1.0)
        return wait

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.level >= self.burst - 1e-9


class RateLimiter:
    """One :class:`TokenBucket` per key (API key id, client address...), created full.

    Memory is bounded: beyond ``max_keys`` buckets, the ones that refilled completely (idle
    keys, which a fresh bucket would equal) are dropped; if none has, the oldest are."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def _bucket(self, key: Hashable, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            bucket = TokenBucket(self.rate, float(self.burst), float(self.burst), now)
            self._buckets[key] = bucket
        return bucket

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        excess = len(self._buckets) - self._max_keys + 1
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]

    def take(self, key: Hashable) -> float:
        """Count one event of ``key``: 0 if allowed, else the seconds to wait."""
        now = self._clock()
        return self._bucket(key, now).take(now)

    def wait(self, key: Hashable) -> float:
        """Seconds before an event of ``key`` would be allowed (0: now), counting nothing."""
        now = self._clock()
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(now)

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionLimiter:
    """Counts open connections per key (a session token's ``jti``), at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def __len__(self) -> int:
        return sum(self._open.values())
