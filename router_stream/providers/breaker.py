"""A circuit breaker per candidate: stop calling an endpoint that keeps failing.

``closed``    calls pass; failures are remembered for ``window_s``. ``failure_threshold`` failures
              inside the window open the breaker.
``open``      calls are refused (the dispatcher skips to the next candidate) for ``cooldown_s``.
``half_open`` after the cooldown exactly one probe call is let through; its success closes the
              breaker, its failure opens it for another cooldown. Other calls are refused while
              the probe is in flight.

Single-threaded (one asyncio loop): no locks.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from ..config_candidates import BreakerConfig

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        cfg: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at = 0.0
        self._probe_in_flight = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={len(self._failures)})"

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its cooldown is half open)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.cfg.cooldown_s:
            self._probe_in_flight = False
            self._set(HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call go to this candidate now? In half-open state, admits a single probe."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def release(self) -> None:
        """An admitted call ended without an outcome (cancelled, skipped): free the probe slot."""
        self._probe_in_flight = False

    def record_success(self) -> None:
        state = self.state
        if state == HALF_OPEN:
            self._probe_in_flight = False
            self._failures.clear()
            self._set(CLOSED)

    def record_failure(self) -> None:
        state = self.state
        now = self._clock()
        if state == HALF_OPEN:
            self._probe_in_flight = False
            self._open(now)
            return
        if state == OPEN:
            return
        self._failures.append(now)
        cutoff = now - self.cfg.window_s
        while self._failures and self._failures[0] < cutoff:
            self._failures.popleft()
        if len(self._failures) >= self.cfg.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._set(OPEN)
