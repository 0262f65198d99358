"""``api: anthropic``: Anthropic's Messages API, translated natively to and from OpenAI's shape.

Request: ``POST {base_url}/v1/messages`` (``base_url`` is ``https://api.anthropic.com``; one
ending in ``/v1`` is taken as is) with ``x-api-key`` (from ``api_key_env``) and
``anthropic-version`` (``api_version``, default ``2023-06-01``). The body is translated by
:mod:`.anthropic_request`; the fields it has no place for are named in ``dropped``.

Answer → OpenAI ``chat.completion`` (:func:`to_openai_response`): ``text`` blocks joined into
``message.content``; ``tool_use`` blocks → ``message.tool_calls`` (``input`` as a JSON string in
``arguments``); other blocks (thinking, server tools) are left out. ``stop_reason`` →
``finish_reason``: ``end_turn``, ``stop_sequence``, ``pause_turn`` → ``stop``; ``max_tokens``,
``model_context_window_exceeded`` → ``length``; ``tool_use`` → ``tool_calls``; ``refusal`` →
``content_filter``; anything else → ``stop``.

Usage: Anthropic's ``input_tokens`` excludes cached input, OpenAI's ``prompt_tokens`` includes it,
so ``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` and
``prompt_tokens_details.cached_tokens = cache_read_input_tokens``.

Errors (:func:`anthropic_status_error`; messages carry the status, never the body):

- 429 ``rate_limit_error``: ``throttled``, retryable, ``Retry-After`` honoured; but a 429 whose
  error code is ``enforced_spend_limit_reached`` is ``quota``, fatal (retries fail until the cap resets)
- 529 ``overloaded_error``: ``overloaded``, retryable, ``Retry-After`` honoured
- other 5xx (``api_error``, ...): ``server_error``, retryable, ``Retry-After`` honoured
- 408 / 409: ``http_error``, retryable
- 401 / 403 / 402 (authentication, permission, billing): ``auth``, fatal
- other 4xx (``invalid_request_error``, ``not_found_error``, 413 ``request_too_large``): ``client_error``, fatal
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError, RetryableModelError
from .anthropic_request import Unsupported, to_messages_request
from .dialect import (
    HTTPDialect,
    WireRequest,
    error_code,
    malformed,
    openai_status_error,
    parse_retry_after,
    unsupported,
)

ANTHROPIC_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def anthropic_status_error(name: str, resp: httpx.Response) -> ModelError:
    """The error for a non-2xx Messages API answer (table in the module doc): Anthropic's own
    cases first, then OpenAI's mapping, which the rest shares."""
    status = resp.status_code
    msg = f"{name}: HTTP {status} from model endpoint"
    if status == 429 and error_code(resp)[1] == "enforced_spend_limit_reached":
        return FatalModelError(
            f"{msg} (spend limit reached)", kind="quota", status=status
        )  # until the cap resets
    if status == 529:
        return RetryableModelError(
            f"{msg} (overloaded)",
            kind="overloaded",
            status=status,
            retry_after=parse_retry_after(resp.headers),
        )
    if status == 402:  # billing: no retry helps
        return FatalModelError(msg, kind="auth", status=status)
    return openai_status_error(name, resp)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def to_openai_response(name: str, data: Any) -> dict[str, Any]:
    """A Messages API answer as an OpenAI ``chat.completion`` dict (see the module doc)."""
    if not isinstance(data, dict):
        raise malformed(name, "not an object")
    content = data.get("content")
    if data.get("type") == "error" or not isinstance(content, list):
        raise malformed(name, "no content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    stop = data.get("stop_reason")
    answer: dict[str, Any] = {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(stop, "stop") if isinstance(stop, str) else None,
            }
        ],
    }
    usage = data.get("usage")
    if isinstance(usage, dict):
        cached = _count(usage.get("cache_read_input_tokens"))
        prompt = _count(usage.get("input_tokens")) + cached + _count(usage.get("cache_creation_input_tokens"))
        completion = _count(usage.get("output_tokens"))
        answer["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    return answer


class AnthropicDialect(HTTPDialect):
    """See the module doc."""

    api = "anthropic"

    def __init__(self, name: str, cfg: CandidateConfig) -> None:
        super().__init__(name, cfg, "/v1/messages")
        if self.base.endswith("/v1"):  # base_url given like an OpenAI one: .../v1
            self.endpoint = self.base + "/messages"
        self.version = cfg.api_version or ANTHROPIC_VERSION

    def auth_headers(self) -> list[tuple[str, str]]:
        key = self.cfg.api_key()
        return ([("x-api-key", key)] if key else []) + [("anthropic-version", self.version)]

    def request(self, body: dict[str, Any]) -> WireRequest:
        try:
            translated, dropped = to_messages_request(body, self.cfg.default_max_tokens)
        except Unsupported as exc:
            raise unsupported(self.name, self.api, str(exc)) from None
        return WireRequest(self.url(), self.headers(), translated, tuple(dropped))

    def status_error(self, resp: httpx.Response) -> ModelError:
        return anthropic_status_error(self.name, resp)

    def openai_response(self, data: Any) -> dict[str, Any]:
        return to_openai_response(self.name, data)
