"""The model-client seam: one method, ``complete(call) -> Completion``.

Every way of talking to a model (the OpenAI-compatible HTTP client in :mod:`.openai`, a batch
client, a test double) implements :class:`ModelClient`; the dispatcher in :mod:`.resilience`
never knows which one it holds. A client raises only the :class:`~router_stream.errors.ModelError`
family (retryable or fatal) for failed calls, and never puts secrets in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..schemas import Usage


@dataclass
class ChatCall:
    """One chat-completions call: the messages, extra request params, and the time allowed."""

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    #: the request's deadline (``time.monotonic()``), if any: clients that queue for a
    #: connection may wait until then and still give the call its own full timeout
    deadline_at: float | None = None


@dataclass
class Completion:
    """A successful answer from a model endpoint."""

    text: str
    provider_model: str
    usage: Usage
    latency_ms: float
    status: int = 200
    #: request fields the candidate's API does not take, left out by its adapter (for the audit)
    dropped_params: list[str] = field(default_factory=list)
    #: set by the batching client: ``{"id", "size", "position", ...}`` of the batch that answered
    batch: dict[str, Any] | None = None


@runtime_checkable
class ModelClient(Protocol):
    """Anything that can answer a :class:`ChatCall`."""

    async def complete(self, call: ChatCall) -> Completion:
        """Answer ``call`` or raise a ``RetryableModelError`` / ``FatalModelError``."""
        ...

    async def aclose(self) -> None:
        """Release connections; the client is unusable afterwards."""
        ...


def estimate_tokens(text: str) -> int:
    """A rough token count (≈ 4 characters per token), never below 1 for non-empty text."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Rough prompt size: ``chars / 4`` per message content plus ~4 tokens of framing each."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += estimate_tokens(str(content or "")) + 4
    return total
