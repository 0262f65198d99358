"""Per-candidate rate limits: token buckets for requests and tokens per minute.

A bucket holds up to one minute of budget and refills continuously. :meth:`RateLimiter.reserve`
either books the budget now and says how long to wait before using it (levels may go negative:
a booking in the future, so concurrent callers queue fairly without locks), or books nothing and
returns ``None`` when the wait would exceed what the caller allows (the dispatcher then falls
back). After a call, :meth:`RateLimiter.adjust_tokens` books the difference between the real
token usage and the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config_candidates import RateLimitConfig


class TokenBucket:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._last) * self.rate)
        self._last = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        self._refill()
        deficit = amount - self._level
        return deficit / self.rate if deficit > 0 else 0.0

    def take(self, amount: float) -> None:
        self._refill()
        self._level -= amount

    @property
    def level(self) -> float:
        self._refill()
        return self._level


class RateLimiter:
    def __init__(self, cfg: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.requests = TokenBucket(cfg.requests_per_minute, clock) if cfg.requests_per_minute else None
        self.tokens = TokenBucket(cfg.tokens_per_minute, clock) if cfg.tokens_per_minute else None

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def reserve(self, tokens: int, max_wait_s: float, requests: int = 1) -> float | None:
        """Book ``requests`` calls (0 or 1) and ``tokens``; the seconds to wait first, or ``None``
        if that would be longer than ``max_wait_s`` (then nothing is booked).

        A micro-batching candidate books its tokens per record (``requests=0``) and its requests
        per batched call, since the provider counts HTTP calls.
        """
        wait = 0.0
        if self.requests is not None and requests:
            wait = max(wait, self.requests.wait_for(requests))
        if self.tokens is not None and tokens:
            wait = max(wait, self.tokens.wait_for(tokens))
        if wait > max_wait_s:
            return None
        if self.requests is not None and requests:
            self.requests.take(requests)
        if self.tokens is not None and tokens:
            self.tokens.take(tokens)
        return wait

    def adjust_tokens(self, delta: int) -> None:
        """Book ``delta`` more tokens (negative gives back) once the real usage is known."""
        if self.tokens is not None and delta:
            self.tokens.take(delta)
