"""The dispatcher's hook points: :class:`DispatchHooks` (the seam) and :class:`DispatchObserver`.

Metrics, tests and anything else that watches calls implement these five methods; the dispatch
loop (:mod:`.resilience`) only calls them. Kept apart so an observer (such as the worker's
``router_stream.metrics.MetricsObserver``) needs neither the loop nor its dependencies.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DispatchHooks", "DispatchObserver"]


class DispatchObserver:
    """Hook points for metrics; every method is a no-op here. Subclass and override what you need.

    Exceptions raised by an observer are logged and swallowed: metrics never break a call.
    """

    def on_attempt(self, candidate: str, outcome: str, latency_s: float, error_kind: str | None) -> None:
        """One attempt ended: ``outcome`` is ``ok``, ``error`` or ``skipped``."""

    def on_retry(self, candidate: str) -> None:
        """A retryable failure on ``candidate`` will be retried after a backoff."""

    def on_fallback(self, from_: str, to: str) -> None:
        """The chain moves from ``from_`` (failed or skipped) to ``to``."""

    def on_breaker(self, candidate: str, state: str) -> None:
        """``candidate``'s breaker changed to ``closed`` / ``open`` / ``half_open``."""

    def on_rate_limit_wait(self, candidate: str, seconds: float) -> None:
        """A call waited ``seconds`` for ``candidate``'s rate-limit budget."""


class DispatchHooks(Protocol):
    """The hooks :class:`~.resilience.Dispatcher` calls: :class:`DispatchObserver` (the no-op base to
    subclass) or any object with all five, such as the worker's ``router_stream.metrics.MetricsObserver``."""

    def on_attempt(self, candidate: str, outcome: str, latency_s: float, error_kind: str | None) -> None: ...

    def on_retry(self, candidate: str) -> None: ...

    def on_fallback(self, from_: str, to: str) -> None: ...

    def on_breaker(self, candidate: str, state: str) -> None: ...

    def on_rate_limit_wait(self, candidate: str, seconds: float) -> None: ...
