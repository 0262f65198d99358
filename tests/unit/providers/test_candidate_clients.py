"""Which client each candidate is called through, who owns it and in which order it is closed."""

from __future__ import annotations

from router_stream.config import RouterConfig
from router_stream.providers.batching import BatchingClient
from router_stream.providers.candidate_clients import build_candidate_clients
from router_stream.providers.openai import OpenAIChatClient
from router_stream.providers.ratelimit import RateLimiter


def _config() -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "candidates": {
                "cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c"},
                "strong": {"base_url": "http://127.0.0.1:9/v1", "model": "s", "batch": {"size": 8}},
                "mine": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
            },
            "default": "cheap",
        }
    )


class _Given:
    async def complete(self, call):  # pragma: no cover - never called here
        raise AssertionError

    async def aclose(self) -> None:  # pragma: no cover
        raise AssertionError


def test_given_clients_are_used_but_not_owned_and_batchers_close_first():
    cfg = _config()
    given = _Given()
    limiters = {name: RateLimiter(c.rate_limit) for name, c in cfg.candidates.items()}
    waits: list[tuple[str, float]] = []
    built = build_candidate_clients(cfg, {"mine": given}, limiters, lambda name, s: waits.append((name, s)))

    assert built.clients["mine"] is given and given not in built.owned
    assert isinstance(built.clients["cheap"], OpenAIChatClient)
    batcher = built.clients["strong"]
    assert isinstance(batcher, BatchingClient) and built.books_requests == {"strong"}
    # the batcher is closed before the client it wraps; the caller's client is never closed here
    assert built.owned[0] is batcher and len(built.owned) == 3
    assert {type(c) for c in built.owned[1:]} == {OpenAIChatClient}
    assert waits == []  # the hook is only handed on: nothing waited yet
