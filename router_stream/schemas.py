"""The records router-stream reads and writes, as pydantic models (JSON on the wire).

Plain data, no behaviour and no imports from the rest of the package, so every role (routing,
providers, processing, cli) can depend on this module. Every record carries ``schema_version``;
a reader rejects versions newer than it speaks (see :data:`SCHEMA_VERSION`).

Version history (what each version added; a reader of version N reads every older record):

1. the first records: a request with ``messages`` of string content or ``prompt``, ``params``;
   a response with the answer text in ``output``.
2. a request may be a whole OpenAI chat-completions body (content parts, tool calls, tool
   messages, every request field at top level, see :data:`CHAT_COMPLETION_FIELDS`); a response
   carries the assistant ``message`` as the model returned it, ``finish_reason``,
   ``response_id``, usage details and, for ``n > 1``, every choice; the audit names the fields
   that did not reach the model (``ignored_fields``) and why (``notes``). Requests of version 1
   are still read (every version-1 request is a valid version-2 request).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2

#: every top-level field of OpenAI's chat-completions request body (``POST /v1/chat/completions``,
#: API reference as of 2025): a request record may carry any of them beside the router's own
#: fields. ``model``, ``messages``, ``stream`` and ``stream_options`` are read by the router and
#: never passed on (:data:`NOT_SENT`); the rest go to the model as given.
CHAT_COMPLETION_FIELDS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

#: chat-completions fields the router never sends to a model: it sets ``model`` (the chosen
#: candidate's) and ``messages`` itself, and answers whole (a Kafka record is one answer), so
#: ``stream`` and ``stream_options`` (which OpenAI refuses without ``stream``) are dropped
NOT_SENT = frozenset({"model", "messages", "stream", "stream_options"})

#: the router's own request fields (everything else at top level is a chat-completions field or unknown)
ROUTER_FIELDS = frozenset(
    {"schema_version", "request_id", "messages", "prompt", "fields", "params", "tags", "deadline_ms"}
)


def now_ms() -> int:
    return int(time.time() * 1000)


class Message(BaseModel):
    """One chat message, as in OpenAI's chat-completions API.

    The router reads ``role`` and ``content``; every other key (``name``, ``tool_calls``,
    ``tool_call_id``, ``refusal``, ``audio``, ...) is kept as given and sent to the model.
    ``content`` is a string, a list of content parts (each an object with a ``type``: ``text``,
    ``image_url``, ``input_audio``, ``file``, ``refusal`` or a type added later), or null: only an
    assistant message may leave it null or out (e.g. when it carries ``tool_calls``).
    """

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _parts(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, list):
            for i, part in enumerate(v):
                kind = part.get("type")
                if not isinstance(kind, str) or not kind:
                    raise ValueError(
                        f"content part {i} needs a 'type' string (text, image_url, input_audio, file, ...)"
                    )
                if kind == "text" and not isinstance(part.get("text"), str):
                    raise ValueError(f"content part {i} is a text part without a 'text' string")
        return v

    @model_validator(mode="after")
    def _content_needed(self) -> Message:
        if self.content is None and self.role != "assistant":
            raise ValueError(
                f"a {self.role!r} message needs 'content' (a string or a list of content parts); "
                "only an assistant message may leave it null"
            )
        return self


def content_text(content: Any) -> str | None:
    """The text of a message ``content``: the string itself, or its ``text`` parts joined by
    newlines (images, audio and files have no text); None when there is no text at all."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts) if texts else None
    return None


class Request(BaseModel):
    """An inference request produced by users to the requests topic.

    ``request_id`` is the idempotency id: a repeat of the same id is never sent to a model twice.
    Either ``messages`` or ``prompt`` must be given; ``prompt`` is shorthand for one user message.

    Beside the router's fields (:data:`ROUTER_FIELDS`) a request may carry any field of the
    OpenAI chat-completions body at top level (:data:`CHAT_COMPLETION_FIELDS`), so an
    application's body plus a ``request_id`` is a request. ``params`` stays as the older spelling
    of the same fields; a field given both ways is sent with its top-level value (the body is
    what the application meant; ``params.<name>`` is then named in the audit's
    ``ignored_fields``). Unknown top-level fields are kept on the record (so a round trip through
    the state store loses nothing) but never sent to a model (see :meth:`unknown_fields`).
    """

    model_config = ConfigDict(extra="allow")

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
    def _needs_input(self) -> Request:
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than this worker speaks ({SCHEMA_VERSION})"
            )
        if not self.messages and not self.prompt:
            raise ValueError("a request needs 'messages' or 'prompt'")
        return self

    def chat_messages(self) -> list[dict[str, Any]]:
        """The messages to send to a chat-completions endpoint, each as it was given."""
        if self.messages:
            return [m.model_dump(exclude_unset=True) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def top_level(self, name: str) -> Any:
        """A chat-completions field given at top level (e.g. ``model``, ``stream``), or None."""
        return (self.model_extra or {}).get(name)

    def call_params(self) -> dict[str, Any]:
        """What goes to the model beside ``messages``: ``params``, overlaid by the top-level
        chat-completions fields (top level wins), without :data:`NOT_SENT`."""
        out = {k: v for k, v in self.params.items() if k not in NOT_SENT}
        out.update(
            (name, value)
            for name, value in (self.model_extra or {}).items()
            if name in CHAT_COMPLETION_FIELDS and name not in NOT_SENT
        )
        return out

    def unknown_fields(self) -> list[str]:
        """Top-level fields that are neither the router's nor chat-completions fields: readers
        ignore what they do not know (they reach no model; the audit names them)."""
        return [name for name in (self.model_extra or {}) if name not in CHAT_COMPLETION_FIELDS]

    def text(self) -> str:
        """All user-visible text of the request (string contents and ``text`` parts), for
        routing features; images, audio, files and tool calls are not text."""
        if self.prompt is not None and not self.messages:
            return self.prompt
        texts = (content_text(m.content) for m in self.messages or [])
        return "\n".join(t for t in texts if t is not None)


class Usage(BaseModel):
    """Token counts of one answer; the details are the provider's, as reported (e.g.
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class Response(BaseModel):
    """The answer to one request, produced to the responses topic.

    ``message`` is the assistant message as the model returned it (``content``, ``tool_calls``,
    ``refusal``, ``annotations``, ``audio``, ...): a consumer appends it to its ``messages`` to
    produce the next turn. ``output`` is its text for convenience, null when the model answered
    without content (e.g. only ``tool_calls``). ``choices`` holds every choice
    (``{index, message, finish_reason, logprobs?}``) when the model returned more than one (``n > 1``).
    """

    schema_version: int = SCHEMA_VERSION
    request_id: str
    candidate: str | None = None
    provider_model: str | None = None
    output: str | None = None
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    choices: list[dict[str, Any]] | None = None
    logprobs: dict[str, Any] | None = None
    #: the provider's id of the answer (``chatcmpl-...``); micro-batched records share their batch's
    response_id: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
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
    #: request fields this candidate's API does not take, left out by its adapter (docs/providers.md)
    dropped_params: list[str] | None = None


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
    #: per budget: {budget, scope, window, spent_usd, estimate_usd, state: ok|soft|downgraded|rejected|skipped,
    #: charged_usd, ...} (docs/budgets.md)
    budgets: list[dict[str, Any]] | None = None
    #: a cascade's steps, in order: {candidate, served_by, accepted, reason, cost_usd, served, ...}
    cascade: list[dict[str, Any]] | None = None
    #: request fields that reached neither the model nor the router's choice (unknown top-level
    #: fields, ``params.<name>`` shadowed by a top-level field, ``model``, ``stream``, ...)
    ignored_fields: list[str] | None = None
    #: what the worker did with the request beyond routing it, in words (e.g. ``stream`` answered whole)
    notes: list[str] | None = None
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
