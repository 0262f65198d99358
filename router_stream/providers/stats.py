"""Live per-candidate call statistics, kept by the dispatcher for load- and latency-aware routing.

For every candidate the :class:`~.resilience.Dispatcher` records, around each model call it makes
(retries and fallback calls included, skipped candidates not):

* ``in_flight``: calls started and not yet ended (success, failure or cancellation) right now.
  A call waiting inside its client for a connection slot (``max_connections``) or for its
  micro-batch counts as in flight: that is the load the dispatcher has put on the candidate.
* ``ewma_latency_s``: an exponentially weighted moving average of the latency of *successful*
  calls, ``ewma = alpha * sample + (1 - alpha) * ewma`` (the first sample starts it; ``alpha``
  defaults to 0.2, higher follows changes faster). Failures are left out: a fast error says
  nothing about how fast an answer is (the circuit breaker deals with failing candidates).
  ``None`` until the first success.
* ``samples``: how many successes fed the average; ``updated_at``: the clock reading (the
  dispatcher's clock, ``time.monotonic()`` by default) of the last change, ``None`` before any.

The numbers live in one process, for as long as its dispatcher: every worker has its own view,
and a restart starts from nothing. Single-threaded (one asyncio loop): no locks.

Strategies get a read-only :class:`StatsView` (``Dispatcher.stats``, passed to them as
``RoutingContext.stats``) which also answers ``breaker_states()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["CandidateSnapshot", "CandidateStats", "StatsView"]


@dataclass(frozen=True, slots=True)
class CandidateSnapshot:
    """One candidate's numbers at one moment (see the module docstring)."""

    name: str
    ewma_latency_s: float | None = None
    in_flight: int = 0
    samples: int = 0
    updated_at: float | None = None


class _Entry:
    __slots__ = ("ewma", "in_flight", "samples", "updated_at")

    def __init__(self) -> None:
        self.ewma: float | None = None
        self.in_flight = 0
        self.samples = 0
        self.updated_at: float | None = None


class CandidateStats:
    """The mutable per-candidate numbers; the dispatcher owns one and feeds it.

    Names need not be known in advance (an unknown name starts at zero), so a snapshot of a
    candidate that was never called is ``CandidateSnapshot(name)``.
    """

    def __init__(
        self, names: Iterable[str] = (), *, alpha: float = 0.2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"alpha must be in (0, 1] (got {alpha!r})")
        self.alpha = alpha
        self._clock = clock
        self._entries: dict[str, _Entry] = {name: _Entry() for name in names}

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        return entry

    # ---- updates (the dispatcher) ----------------------------------------------------------
    def call_started(self, name: str) -> None:
        entry = self._entry(name)
        entry.in_flight += 1
        entry.updated_at = self._clock()

    def call_ended(self, name: str) -> None:
        """A started call ended, however; pair every :meth:`call_started` with one (``finally``)."""
        entry = self._entry(name)
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.updated_at = self._clock()

    def record_latency(self, name: str, latency_s: float) -> None:
        """A successful call took ``latency_s`` seconds (negative or non-finite values are ignored)."""
        if not math.isfinite(latency_s) or latency_s < 0:
            return
        entry = self._entry(name)
        entry.ewma = (
            latency_s if entry.ewma is None else self.alpha * latency_s + (1 - self.alpha) * entry.ewma
        )
        entry.samples += 1
        entry.updated_at = self._clock()

    # ---- reads -----------------------------------------------------------------------------
    def snapshot(self, name: str) -> CandidateSnapshot:
        entry = self._entries.get(name)
        if entry is None:
            return CandidateSnapshot(name)
        return CandidateSnapshot(name, entry.ewma, entry.in_flight, entry.samples, entry.updated_at)

    def snapshots(self) -> dict[str, CandidateSnapshot]:
        return {name: self.snapshot(name) for name in self._entries}

    def in_flight(self, name: str) -> int:
        entry = self._entries.get(name)
        return entry.in_flight if entry is not None else 0

    def ewma_latency_s(self, name: str) -> float | None:
        entry = self._entries.get(name)
        return entry.ewma if entry is not None else None


class StatsView:
    """Read-only access to a :class:`CandidateStats`, plus the dispatcher's breaker states."""

    __slots__ = ("_breakers", "_stats")

    def __init__(
        self, stats: CandidateStats, breaker_states: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self._stats = stats
        self._breakers = breaker_states

    def snapshot(self, name: str) -> CandidateSnapshot:
        return self._stats.snapshot(name)

    def snapshots(self) -> dict[str, CandidateSnapshot]:
        return self._stats.snapshots()

    def in_flight(self, name: str) -> int:
        return self._stats.in_flight(name)

    def ewma_latency_s(self, name: str) -> float | None:
        return self._stats.ewma_latency_s(name)

    @property
    def alpha(self) -> float:
        return self._stats.alpha

    def breaker_states(self) -> dict[str, str]:
        """``{candidate: "closed" | "open" | "half_open"}``; empty when no breakers are known."""
        return self._breakers() if self._breakers is not None else {}
