"""The model-client seam: one method, ``complete(call) -> Completion``.

Every way of talking to a model (the OpenAI-compatible HTTP client in :mod:`.openai`, a batch
client, a test double) implements :class:`ModelClient`; the dispatcher in :mod:`.resilience`
never knows which one it holds. A client raises only the :class:`~router_stream.errors.ModelError`
family (retryable or fatal) for failed calls, and never puts secrets in a message.
"""

from __future__ import annotations

import json
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
    """A successful answer from a model endpoint.

    ``text`` is the text of the first choice's content ("" when the model answered without
    content, e.g. with ``tool_calls`` only); ``message`` is that choice's assistant message as
    the model returned it. Clients that only produce text (a micro-batch entry) leave
    ``message`` None: :meth:`answer_fields` then builds ``{"role": "assistant", "content": text}``.
    """

    text: str
    provider_model: str
    usage: Usage
    latency_ms: float
    status: int = 200
    #: request fields the candidate's API does not take, left out by its adapter (for the audit)
    dropped_params: list[str] = field(default_factory=list)
    #: set by the batching client: ``{"id", "size", "position", ...}`` of the batch that answered
    batch: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    #: every choice (``{index, message, finish_reason, logprobs?}``) when there was more than one
    choices: list[dict[str, Any]] | None = None
    #: the first choice's ``logprobs`` when asked for
    logprobs: dict[str, Any] | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None

    def answer_fields(self) -> dict[str, Any]:
        """The :class:`~router_stream.schemas.Response` fields of this answer (``output``,
        ``message``, ``finish_reason``, ``choices``, ``usage``, ...), ready for ``Response(**...)``."""
        message = self.message if self.message is not None else {"role": "assistant", "content": self.text}
        has_content = message.get("content") is not None
        return {
            "provider_model": self.provider_model,
            "output": self.text if has_content else None,
            "message": message,
            "finish_reason": self.finish_reason,
            "choices": self.choices,
            "logprobs": self.logprobs,
            "response_id": self.response_id,
            "system_fingerprint": self.system_fingerprint,
            "service_tier": self.service_tier,
            "usage": self.usage,
        }


@runtime_checkable
class ModelClient(Protocol):
    """Anything that can answer a :class:`ChatCall`."""

    async def complete(self, call: ChatCall) -> Completion:
        """Answer ``call`` or raise a ``RetryableModelError`` / ``FatalModelError``."""
        ...

    async def aclose(self) -> None:
        """Release connections; the client is unusable afterwards."""
        ...


#: tokens counted for an image part: OpenAI's 85 for ``detail: low``; otherwise 765, what a
#: 1024×1024 image costs at high detail (85 + 4 tiles × 170); the router never sees the pixels
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS = 765
#: audio input: about 10 tokens per second of speech, a second taken as 16 kB (128 kbit/s)
AUDIO_BYTES_PER_TOKEN = 1600
#: a file part (e.g. a PDF): its decoded size / 16 (compressed pages carry little text per
#: byte); a file referred to only by ``file_id`` counts as one low-detail image
FILE_BYTES_PER_TOKEN = 16
#: framing tokens per message (role, separators)
MESSAGE_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """A rough token count (≈ 4 characters per token), never below 1 for non-empty text."""
    return (len(text) + 3) // 4


def _json_tokens(value: Any) -> int:
    """Structured input (tool definitions, tool calls, a JSON schema) as the JSON the provider
    renders into the prompt: its compact JSON length / 4."""
    try:
        return estimate_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
    except (TypeError, ValueError, RecursionError):
        return 0


def _b64_bytes(data: Any) -> int:
    """The decoded size of base64 ``data`` (a ``data:...;base64,`` URL prefix left out)."""
    if not isinstance(data, str):
        return 0
    if data.startswith("data:"):
        data = data.partition(",")[2]
    return len(data.rstrip("=")) * 3 // 4


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "text":
        return estimate_tokens(str(part.get("text") or ""))
    if kind == "refusal":
        return estimate_tokens(str(part.get("refusal") or ""))
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, dict) else None
        return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        return max(1, -(-_b64_bytes(data) // AUDIO_BYTES_PER_TOKEN))
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if isinstance(data, str):  # a data URL or bare base64
            return max(1, _b64_bytes(data) // FILE_BYTES_PER_TOKEN)
        return IMAGE_TOKENS_LOW
    return _json_tokens(part)  # a part type added after this was written: its JSON


def estimate_prompt_tokens(messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> int:
    """Rough prompt size in tokens, for context-window checks (the door, the dispatcher, cost guesses).

    The rule (documented in docs/requests.md; it errs low rather than refuse what a model takes):

    * each message: ``MESSAGE_TOKENS`` (4) of framing, plus its text (string content, ``text`` and
      ``refusal`` parts) at ``chars / 4``;
    * an ``image_url`` part: 85 tokens with ``detail: low``, else 765 (:data:`IMAGE_TOKENS`);
    * an ``input_audio`` part: its decoded size / 1,600 bytes (≈ 10 tokens per second);
    * a ``file`` part: its decoded ``file_data`` size / 16, or 85 for a ``file_id`` reference;
    * a part of another type, an assistant's ``tool_calls`` (or ``function_call``), and in
      ``params`` the ``tools`` / ``functions`` definitions and a ``json_schema`` response format:
      their compact JSON length / 4, as providers render them into the prompt.
    """
    total = 0
    for m in messages:
        total += MESSAGE_TOKENS
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            total += sum(_part_tokens(p) for p in content)
        elif content is not None:
            total += estimate_tokens(str(content))
        for key in ("tool_calls", "function_call"):
            if m.get(key):
                total += _json_tokens(m[key])
    if params:
        for key in ("tools", "functions"):
            if params.get(key):
                total += _json_tokens(params[key])
        fmt = params.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            total += _json_tokens(fmt.get("json_schema"))
    return total
