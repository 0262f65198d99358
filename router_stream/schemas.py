"""The records router-stream reads and writes, as pydantic models (JSON on the wire).

Plain data, no behaviour and no imports from the rest of the package, so every role (routing,
providers, processing, cli) can depend on this module. Every record carries ``schema_version``;
a reader rejects versions newer than it speaks (see :data:`SCHEMA_VERSION`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1


def now_ms() -> int:
    return int(time.time() * 1000)


class Message(BaseModel):
    """One chat message, as in OpenAI's chat-completions API."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class Request(BaseModel):
    """An inference request produced by users to the requests topic.

    ``request_id`` is the idempotency id: a repeat of the same id is never sent to a model twice.
    Either ``messages`` or ``prompt`` must be given; ``prompt`` is shorthand for one user message.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=256)
    messages: list[Message] | None = None
    prompt: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    deadline_ms: int | None = Field(default=None, ge=1, description="total time budget for this request")

    @field_validator("request_id")
    @classmethod
    def _strip_id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("request_id must not be blank")
        return v

    @model_validator(mode="after")
    def _needs_input(self) -> "Request":
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than this worker speaks ({SCHEMA_VERSION})"
            )
        if not self.messages and not self.prompt:
            raise ValueError("a request needs 'messages' or 'prompt'")
        return self

    def chat_messages(self) -> list[dict[str, Any]]:
        """The messages to send to a chat-completions endpoint."""
        if self.messages:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def text(self) -> str:
        """All user-visible text of the request, for routing features and token estimates."""
        if self.prompt is not None and not self.messages:
            return self.prompt
        return "\n".join(m.content for m in self.messages or [])


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Response(BaseModel):
    """The answer to one request, produced to the responses topic."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    candidate: str | None = None
    provider_model: str | None = None
    output: str | None = None
    usage: Usage | None = None
    latency_ms: float | None = None
    error: str | None = None
    error_kind: str | None = None
    duplicate: bool = False
    batch: dict[str, Any] | None = None
    produced_at: int = Field(default_factory=now_ms)


class Verdict(BaseModel):
    """What one strategy said: ``chose`` a candidate, ``abstained``, or made a ``miss``."""

    strategy: str
    outcome: Literal["chose", "abstained", "miss", "error"]
    candidate: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Attempt(BaseModel):
    """One call to a model endpoint."""

    candidate: str
    outcome: Literal["ok", "error", "skipped"]
    latency_ms: float = 0.0
    status: int | None = None
    error_kind: str | None = None
    error: str | None = None
    retry: int = 0


class Audit(BaseModel):
    """Why a request went where it went, produced to the audit topic with its response."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    key: str | None = None
    chosen: str | None = None
    served_by: str | None = None
    decided_by: str
    verdicts: list[Verdict] = Field(default_factory=list)
    cache_hit: bool = False
    #: the sticky decision that applied (``cache_hit``): ``{strategy, candidate, decided_at, age_ms,
    #: ttl_s, ran_before}``; ``ran_before`` names the strategies asked first (they all abstained)
    sticky: dict[str, Any] | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    estimated_cost_usd: float = 0.0
    error: str | None = None
    duplicate: bool = False
    batch: dict[str, Any] | None = None
    #: a cascade's steps, in order: {candidate, served_by, accepted, reason, cost_usd, served, ...}
    cascade: list[dict[str, Any]] | None = None
    #: an operator's control record (``decided_by: "control"``): {action, strategy, applied, result,
    #: evicted | kept}; no response goes with it (router_stream/processing/control.py)
    control: dict[str, Any] | None = None
    worker_id: str = ""
    source: dict[str, Any] = Field(default_factory=dict)
    received_at: int = 0
    finished_at: int = Field(default_factory=now_ms)
    headers: dict[str, str] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """A consumed record that could not become a request, with where it came from and why."""

    schema_version: int = SCHEMA_VERSION
    reason: str
    message: str
    error_class: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str | None = None
    #: the original value's size and SHA-256 (to find it in the input topic when the copy is cut)
    value_bytes: int | None = None
    value_sha256: str | None = None
    #: the copies in ``key_b64``/``value_b64`` are the first bytes only (see ``DEAD_LETTER_COPY_BYTES``)
    key_truncated: bool = False
    value_truncated: bool = False
    request_id: str | None = None
    worker_id: str = ""
    produced_at: int = Field(default_factory=now_ms)


class CachedDecision(BaseModel):
    """A sticky routing decision stored per cache-scope key (the decision table's value)."""

    candidate: str
    decided_by: str
    decided_at: int
    count: int = 0
    #: the deciding strategy's ``cache.ttl_s``; None (and entries written before it existed): ``cache.ttl_s``
    ttl_s: float | None = None
