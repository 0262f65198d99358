"""The one seam every routing strategy implements.

A strategy looks at a request and either decides (returns a :class:`Decision`) or abstains
(returns ``None``); the pipeline asks strategies in order and the first decision wins. A
strategy that abstains may say why with :meth:`RoutingContext.explain`, so the audit shows it.
``decide`` is a coroutine because some strategies (an LLM judge, an external scorer) do I/O;
pure strategies simply never await.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..providers.stats import StatsView
from ..schemas import Request

if TYPE_CHECKING:  # the cascade strategy module imports this one
    from .cascade import CascadePlan


@dataclass(frozen=True, slots=True)
class Decision:
    """A strategy's choice. ``detail`` lands in the audit (e.g. a split arm, a score)."""

    candidate: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    cacheable: bool = True
    #: an execution plan for the worker instead of one call (e.g. a cascade's
    #: :class:`~router_stream.routing.cascade.CascadePlan`); passed through as ``Routed.plan``
    plan: CascadePlan | None = None


class StrategyState(Protocol):
    """The partition's key-value state as a strategy sees it (in a worker: the batch's
    ``StateView``, whose reads see the batch's own writes and whose writes commit with the batch's
    transaction). ``put(key, None)`` deletes."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes | None) -> None: ...


@dataclass(slots=True)
class RoutingContext:
    """What a strategy may know besides the request.

    ``key`` is the cache-scope key (Kafka key, or the request id when there is none);
    ``candidates`` the configured candidate names. ``explain`` records why a strategy abstained.
    """

    key: str
    candidates: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    now_ms: int = 0
    #: live candidate stats (a :class:`~router_stream.providers.stats.StatsView`: latency EWMA,
    #: calls in flight, breaker states), or None outside a worker (tests, offline tools)
    stats: StatsView | None = None
    #: the partition's state (get/put of bytes: the batch's ``StateView``, written in the batch's
    #: transaction), for strategies that keep state (the learned router's recalibration); None
    #: outside a worker (``router-stream explain``, tests)
    state: StrategyState | None = None
    _note: str | None = None
    _uncacheable: str | None = None

    def explain(self, reason: str) -> None:
        self._note = reason

    def forbid_cache(self, reason: str) -> None:
        """Whoever decides this request, the decision must not become sticky: e.g. a judge that
        failed transiently gets another chance with the key's next request instead of the next
        strategy's answer being cached for ``ttl_s``."""
        self._uncacheable = reason

    @property
    def cache_forbidden(self) -> bool:
        """True once a strategy called :meth:`forbid_cache` for this request."""
        return self._uncacheable is not None

    def take_note(self) -> str | None:
        note, self._note = self._note, None
        return note


@runtime_checkable
class Strategy(Protocol):
    """One routing strategy. ``name`` identifies it in the audit and metrics."""

    name: str

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None: ...


def stable_fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) from the given strings (same input, same arm)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
