"""The dispatcher: one request, a chain of candidates, retries, breakers, limits and a deadline.

:meth:`Dispatcher.call` walks the fallback chain ``[chosen] + candidates[chosen].fallbacks +
config.fallbacks`` (duplicates dropped, order kept). For each candidate, in this order:

1. **deadline**: no attempt starts at or after ``deadline_at`` (``time.monotonic()`` based); the
   chain stops with ``error_kind="deadline_exceeded"``.
2. **context window**: skipped when the prompt estimate (:func:`~.base.estimate_prompt_tokens`) exceeds its
   ``context_window`` (``error_kind="context_window"``).
3. **circuit breaker** (:mod:`.breaker`): skipped while open (``breaker_open``); after the
   cooldown a single half-open probe goes through.
4. **rate limit** (:mod:`.ratelimit`): waits up to ``rate_limit.max_wait_ms`` (and never past the
   deadline) for request / token budget, else skipped (``rate_limited``). A micro-batching
   candidate books tokens here per record and requests per batched HTTP call in its
   :class:`~.batching.BatchingClient`, which fails the call as ``rate_limited`` when the wait
   would be too long.
5. **call** with a timeout of ``min(request_timeout_ms, time left)``; on a
   ``RetryableModelError`` it retries up to ``max_retries`` times with exponential backoff and
   "equal jitter", waiting at least the endpoint's ``Retry-After``; it gives up on the
   candidate early when the next wait would cross the deadline or ``Retry-After`` is longer than
   ``max_retry_after_s``. A ``FatalModelError`` is not retried; the chain moves on (another
   candidate may accept the request).

Every attempt, skipped ones included, is recorded as an :class:`~router_stream.schemas.Attempt`.
Breakers and limiters live as long as the dispatcher (one per candidate, shared by all calls).
So do the live call stats (latency EWMA, calls in flight; :mod:`.stats`), read via ``Dispatcher.stats``.

This module is the loop only. What a call comes to (:class:`~.call_result.CallResult`), the hooks
it reports to (:mod:`.dispatch_hooks`) and the retry wait (:mod:`.backoff`) live apart; the first
two are re-exported here, where callers have always imported them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ..config import CandidateConfig, RouterConfig
from ..errors import FatalModelError, ModelError, RetryableModelError, RoutingMiss
from ..schemas import Attempt, Request
from .backoff import backoff_s
from .base import ChatCall, Completion, ModelClient, estimate_prompt_tokens
from .breaker import CircuitBreaker
from .call_result import CallResult
from .candidate_clients import build_candidate_clients
from .dispatch_hooks import DispatchHooks, DispatchObserver
from .pricing import cost_usd
from .ratelimit import RateLimiter
from .stats import CandidateStats, StatsView

log = logging.getLogger(__name__)

#: error kinds that say nothing about the endpoint's health: the breaker ignores them
NO_VERDICT = frozenset({"queue_timeout", "deadline_exceeded", "rate_limited", "unsupported_input"})

__all__ = ["Dispatcher"]


class _Skip(Exception):
    """A candidate was passed over without (another) call; the attempt is already recorded."""


class _CallState:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.summary: dict[str, str] = {}
        self.tries: dict[str, int] = {}
        self.last_kind: str | None = None
        self.batch: dict[str, Any] | None = None


class Dispatcher:
    """Calls model candidates for requests, resiliently (see the module docstring).

    ``clients`` maps candidate names to :class:`~.base.ModelClient`; candidates without one get
    an :class:`~.openai.OpenAIChatClient`, which the dispatcher owns and closes in
    :meth:`aclose` (clients passed in belong to the caller; :mod:`.candidate_clients`).
    """

    def __init__(
        self,
        config: RouterConfig,
        clients: dict[str, ModelClient] | None = None,
        *,
        observer: DispatchHooks | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        max_retry_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
        stats_alpha: float = 0.2,
    ) -> None:
        self.config = config
        self.observer: DispatchHooks = observer or DispatchObserver()
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._limiters = {
            name: RateLimiter(cand.rate_limit, clock=clock) for name, cand in config.candidates.items()
        }
        built = build_candidate_clients(
            config,
            clients,
            self._limiters,
            lambda name, wait_s: self._notify("on_rate_limit_wait", name, wait_s),
        )
        self._clients = built.clients
        self._owned = built.owned  # closed in this order by aclose()
        self._books_requests = built.books_requests  # their clients book their own HTTP calls
        self._breakers = {
            name: CircuitBreaker(cand.breaker, clock=clock, on_change=self._breaker_hook(name))
            for name, cand in config.candidates.items()
        }
        self._stats = CandidateStats(config.candidates, alpha=stats_alpha, clock=clock)
        self._stats_view = StatsView(self._stats, self.breaker_states)

    # ---- public ----------------------------------------------------------------------------
    def chain_for(self, chosen: str) -> list[str]:
        """``[chosen] + candidates[chosen].fallbacks + config.fallbacks``, without repeats."""
        if chosen not in self.config.candidates:
            raise RoutingMiss(
                f"{chosen!r} is not a candidate (known: {', '.join(sorted(self.config.candidates))})"
            )
        chain: list[str] = []
        for name in [chosen, *self.config.candidates[chosen].fallbacks, *self.config.fallbacks]:
            if name not in chain:
                chain.append(name)
        return chain

    @property
    def stats(self) -> StatsView:
        """Live per-candidate latency EWMA and calls in flight (read-only; see :mod:`.stats`)."""
        return self._stats_view

    def breaker_states(self) -> dict[str, str]:
        """``{candidate: "closed" | "open" | "half_open"}``."""
        return {name: b.state for name, b in self._breakers.items()}

    async def call(self, request: Request, chosen: str, deadline_at: float) -> CallResult:
        """Answer ``request`` starting with ``chosen``; never raises for model failures."""
        chain = self.chain_for(chosen)
        messages = request.chat_messages()
        params = request.call_params()
        prompt_tokens = estimate_prompt_tokens(messages, params)
        st = _CallState()
        previous: str | None = None
        for name in chain:
            if previous is not None:
                self._notify("on_fallback", previous, name)
            previous = name
            if self._clock() >= deadline_at:
                self._skip(st, name, "deadline_exceeded", "deadline passed before this candidate", 0)
                break
            completion = await self._run_candidate(name, messages, params, prompt_tokens, deadline_at, st)
            if completion is not None:
                cand = self.config.candidates[name]
                return CallResult(
                    completion=completion,
                    served_by=name,
                    attempts=st.attempts,
                    cost_usd=cost_usd(
                        cand, completion.usage.prompt_tokens, completion.usage.completion_tokens
                    ),
                    batch=completion.batch,
                )
        parts = [f"{name}: {text}" for name, text in st.summary.items()]
        return CallResult(
            completion=None,
            served_by=None,
            attempts=st.attempts,
            error="all candidates failed: " + "; ".join(parts) if parts else "no candidate was tried",
            error_kind=st.last_kind or "error",
            batch=st.batch,
        )

    async def aclose(self) -> None:
        """Close the clients this dispatcher created."""
        owned, self._owned = self._owned, []
        for client in owned:
            try:
                await client.aclose()
            except Exception:  # closing must not fail shutdown
                log.warning("closing a model client failed", exc_info=True)

    # ---- internals -------------------------------------------------------------------------
    def _breaker_hook(self, name: str) -> Callable[[str], None]:
        def hook(state: str) -> None:
            if state == "open":
                log.warning("circuit breaker for candidate %s opened", name)
            else:
                log.info("circuit breaker for candidate %s is %s", name, state)
            self._notify("on_breaker", name, state)

        return hook

    def _notify(self, method: str, *args: Any) -> None:
        try:
            getattr(self.observer, method)(*args)
        except Exception:
            log.warning("observer %s failed", method, exc_info=True)

    def _skip(self, st: _CallState, name: str, kind: str, why: str, retry: int) -> None:
        st.attempts.append(
            Attempt(candidate=name, outcome="skipped", error_kind=kind, error=why, retry=retry)
        )
        st.summary[name] = (
            f"skipped ({why})" if retry == 0 else f"{st.summary.get(name, '')}, then skipped ({why})"
        )
        st.last_kind = kind
        self._notify("on_attempt", name, "skipped", 0.0, kind)

    async def _run_candidate(
        self,
        name: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        prompt_tokens: int,
        deadline_at: float,
        st: _CallState,
    ) -> Completion | None:
        cand = self.config.candidates[name]
        if cand.context_window is not None and prompt_tokens > cand.context_window:
            self._skip(
                st,
                name,
                "context_window",
                f"~{prompt_tokens} prompt tokens exceed context window {cand.context_window}",
                0,
            )
            return None
        # A plain loop, not tenacity: the first attempt is the common case and must cost nothing
        # (tenacity's machinery was ~8% of the worker's CPU per record).
        retry = 0
        while True:
            try:
                return await self._attempt(
                    name, cand, messages, params, prompt_tokens, deadline_at, retry, st
                )
            except _Skip:
                return None
            except RetryableModelError as exc:
                if retry >= cand.max_retries:
                    return None
                if exc.retry_after is not None and exc.retry_after > self.max_retry_after_s:
                    return None  # the endpoint asks for longer than we wait: next candidate
                delay = backoff_s(
                    retry + 1, self.backoff_initial_s, self.backoff_max_s, self._rng, exc.retry_after
                )
                if self._clock() + delay >= deadline_at:
                    return None  # the retry could not finish in time
                self._notify("on_retry", name)
                await self._sleep(delay)
                retry += 1
            except ModelError:
                return None

    async def _attempt(
        self,
        name: str,
        cand: CandidateConfig,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        prompt_tokens: int,
        deadline_at: float,
        retry: int,
        st: _CallState,
    ) -> Completion:
        remaining = deadline_at - self._clock()
        if remaining <= 0:
            self._skip(st, name, "deadline_exceeded", "deadline passed", retry)
            raise _Skip()
        breaker = self._breakers[name]
        if not breaker.allow():
            self._skip(st, name, "breaker_open", "circuit breaker open", retry)
            raise _Skip()
        probe = breaker.state == "half_open"  # this call is the single half-open probe

        def release() -> None:
            if probe:
                breaker.release()

        limiter = self._limiters[name]
        booked = 0
        try:
            if limiter.enabled:
                booked = prompt_tokens + _max_tokens(params)
                max_wait = min(cand.rate_limit.max_wait_ms / 1000.0, remaining)
                wait = limiter.reserve(booked, max_wait, requests=0 if name in self._books_requests else 1)
                if wait is None:
                    release()
                    self._skip(st, name, "rate_limited", "rate limit budget exhausted", retry)
                    raise _Skip()
                if wait > 0:
                    self._notify("on_rate_limit_wait", name, wait)
                    await self._sleep(wait)
                    remaining = deadline_at - self._clock()
                    if remaining <= 0:
                        release()
                        self._skip(st, name, "deadline_exceeded", "deadline passed", retry)
                        raise _Skip()
            timeout_s = min(cand.request_timeout_ms / 1000.0, remaining)
            client = self._clients[name]
            started = self._clock()
            self._stats.call_started(name)
            try:
                completion = await client.complete(
                    ChatCall(messages=messages, params=params, timeout_s=timeout_s, deadline_at=deadline_at)
                )
            except ModelError as exc:
                if exc.kind == "timeout" and self._clock() >= deadline_at - 0.005:
                    # the request's deadline, not request_timeout_ms, ended the call (directly, or
                    # after a wait for a connection slot): the endpoint was not given its due
                    exc = FatalModelError(
                        f"{name}: no answer before the request's deadline", kind="deadline_exceeded"
                    )
                if exc.kind in NO_VERDICT:
                    release()  # no verdict on the endpoint: not a probe result either way
                self._failed(st, name, exc, self._clock() - started, retry)
                raise exc from None
            except Exception as exc:  # a client bug: not worth a retry, but must not kill the call
                log.error("model client for candidate %s raised %s", name, type(exc).__name__, exc_info=True)
                err = FatalModelError(f"{name}: client error ({type(exc).__name__})", kind="internal")
                self._failed(st, name, err, self._clock() - started, retry)
                raise err from None
            finally:
                self._stats.call_ended(name)
        except asyncio.CancelledError:
            release()
            raise
        latency_s = self._clock() - started
        self._stats.record_latency(name, latency_s)
        breaker.record_success()
        if booked and completion.usage.total_tokens:
            limiter.adjust_tokens(completion.usage.total_tokens - booked)
        st.attempts.append(
            Attempt(
                candidate=name,
                outcome="ok",
                latency_ms=latency_s * 1000.0,
                status=completion.status,
                retry=retry,
                dropped_params=completion.dropped_params or None,
            )
        )
        self._notify("on_attempt", name, "ok", latency_s, None)
        return completion

    def _failed(self, st: _CallState, name: str, exc: ModelError, latency_s: float, retry: int) -> None:
        breaker = self._breakers[name]
        if exc.kind in NO_VERDICT:
            pass  # a local slot wait or the request's deadline ended it: no verdict on the endpoint
        elif exc.retryable or exc.kind in ("auth", "internal"):
            breaker.record_failure()
        else:  # the endpoint answered; the request was at fault
            breaker.record_success()
        st.attempts.append(
            Attempt(
                candidate=name,
                outcome="error",
                latency_ms=latency_s * 1000.0,
                status=exc.status,
                error_kind=exc.kind,
                error=str(exc),
                retry=retry,
            )
        )
        st.tries[name] = st.tries.get(name, 0) + 1
        n = st.tries[name]
        st.summary[name] = str(exc).removeprefix(f"{name}: ") + (f" (after {n} attempts)" if n > 1 else "")
        st.last_kind = exc.kind
        st.batch = getattr(exc, "batch", None) or st.batch
        self._notify("on_attempt", name, "error", latency_s, exc.kind)


def _max_tokens(params: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = params.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 0
