"""The model client each candidate is called through, as the dispatcher needs them.

A candidate gets the client passed in for it (tests, embedding applications) or an
:class:`~.openai.OpenAIChatClient` the dispatcher owns; a micro-batching candidate
(``batch.size`` > 1) gets a :class:`~.batching.BatchingClient` around whichever it has. Kept
apart from the dispatcher's loop (:mod:`.resilience`): which clients exist, who closes them and
which book their own rate-limit requests is wiring, decided once at start-up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import RouterConfig
from .base import ModelClient
from .batching import BatchingClient
from .openai import OpenAIChatClient
from .ratelimit import RateLimiter

__all__ = ["CandidateClients", "build_candidate_clients"]


@dataclass
class CandidateClients:
    """``clients`` by candidate name; ``owned`` the ones to close, in closing order (a batcher
    before the client it wraps); ``books_requests`` the candidates whose client books its own
    HTTP calls against the rate limit (the dispatcher then books tokens only)."""

    clients: dict[str, ModelClient]
    owned: list[ModelClient] = field(default_factory=list)
    books_requests: set[str] = field(default_factory=set)


def build_candidate_clients(
    config: RouterConfig,
    given: dict[str, ModelClient] | None,
    limiters: dict[str, RateLimiter],
    on_rate_limit_wait: Callable[[str, float], None],
) -> CandidateClients:
    """Every candidate's client (see the module doc); ``on_rate_limit_wait(name, seconds)`` is
    what a batcher reports when it waits for its rate limit."""
    out = CandidateClients(dict(given or {}))
    for name, cand in config.candidates.items():
        if name not in out.clients:
            client = OpenAIChatClient(name, cand)
            out.clients[name] = client
            out.owned.append(client)
        if cand.batch.size > 1:  # micro-batching wraps whichever client the candidate has
            batcher = BatchingClient(
                name,
                cand,
                out.clients[name],
                limiter=limiters[name],
                on_rate_limit_wait=functools.partial(on_rate_limit_wait, name),
            )
            out.clients[name] = batcher
            out.owned.insert(0, batcher)  # closed before the client it wraps
            out.books_requests.add(name)
    return out
