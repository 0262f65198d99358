"""Test doubles shared by the handler tests (no broker, no model)."""

from __future__ import annotations

from types import SimpleNamespace

from router_stream.providers.base import Completion
from router_stream.schemas import Usage


class InstantDispatcher:
    """Answers every call from ``chosen`` at once with ``ok``; records the candidates called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, request, chosen, deadline_at):
        self.calls.append(chosen)
        completion = Completion(
            text="ok",
            usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            provider_model=chosen,
            latency_ms=1.0,
        )
        return SimpleNamespace(
            completion=completion,
            error=None,
            error_kind=None,
            attempts=[],
            served_by=chosen,
            cost_usd=0.0,
            batch=None,
            cascade=None,
        )
