"""Reading an OpenAI chat-completion answer into a :class:`~.base.Completion`:
:func:`completion_from_openai` is the one place that reads that shape (the online client, the
Batch API's result lines and the adapters that translate another provider's answer into it all
come through here).

Every string read is made UTF-8-safe (a lone surrogate, legal in JSON, would otherwise make the
response unserializable and a served answer a dead letter); usage is estimated when the provider
sends none. Apart from the HTTP client (:mod:`.openai`) because it is pure parsing, shared.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RetryableModelError
from ..schemas import Usage
from .base import Completion, estimate_prompt_tokens, estimate_tokens

__all__ = ["completion_from_openai"]


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return _well_formed(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        parts = [t for p in content if isinstance(p, dict) and isinstance(t := p.get("text"), str)]
        return _well_formed("".join(parts)) if parts else None
    return None


def _well_formed(text: str) -> str:
    """``text`` with each lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot carry it) replaced
    by U+FFFD: otherwise the response could not be serialized, and a served answer would become a
    dead letter. Escaped surrogate *pairs* are joined into their character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _well_formed_json(value: Any) -> Any:
    """``value`` (parsed JSON) with :func:`_well_formed` applied to every string, keys included."""
    if isinstance(value, str):
        return _well_formed(value)
    if isinstance(value, dict):
        return {_well_formed(str(k)): _well_formed_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_well_formed_json(v) for v in value]
    return value


def _details(raw: Any) -> dict[str, Any] | None:
    return _well_formed_json(raw) if isinstance(raw, dict) and raw else None


def _usage(
    raw: Any, messages: list[dict[str, Any]], text: str, params: dict[str, Any] | None = None
) -> Usage:
    if isinstance(raw, dict):
        try:
            p = int(raw.get("prompt_tokens") or 0)
            c = int(raw.get("completion_tokens") or 0)
            t = int(raw.get("total_tokens") or (p + c))
            return Usage(
                prompt_tokens=p,
                completion_tokens=c,
                total_tokens=t,
                prompt_tokens_details=_details(raw.get("prompt_tokens_details")),
                completion_tokens_details=_details(raw.get("completion_tokens_details")),
            )
        except (TypeError, ValueError, OverflowError):
            pass
    p = estimate_prompt_tokens(messages, params)
    c = estimate_tokens(text)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _answered(message: dict[str, Any]) -> bool:
    """An assistant message says something: content (text, even empty), tool calls, a refusal,
    a (deprecated) function call, or audio. Anything less is a malformed answer."""
    return (
        _content_text(message.get("content")) is not None
        or (isinstance(message.get("tool_calls"), list) and bool(message["tool_calls"]))
        or isinstance(message.get("refusal"), str)
        or isinstance(message.get("function_call"), dict)
        or isinstance(message.get("audio"), dict)
    )


def _str_or_none(value: Any) -> str | None:
    return _well_formed(value) if isinstance(value, str) and value else None


def completion_from_openai(
    data: Any,
    *,
    name: str,
    default_model: str,
    messages: list[dict[str, Any]],
    latency_ms: float,
    status: int = 200,
    params: dict[str, Any] | None = None,
    what: str = "body",
) -> Completion:
    """A parsed OpenAI chat-completion response (``{"id", "model", "choices", "usage", ...}``) as a
    :class:`~.base.Completion`: the first choice's assistant message as returned, its text,
    ``finish_reason``, every choice when there are several, usage with its details (estimated
    from ``messages`` when the provider sends none), and the response id.

    The one place that reads this shape: the online client, the Batch API's result lines and
    adapters that translate another provider's answer into it all come through here. Raises
    ``RetryableModelError(kind="malformed")`` (``what`` names the thing in the message: body,
    line) when there is no object, no choices, or a first message with neither content,
    tool_calls, refusal, function_call nor audio. Every string is made UTF-8-safe.
    """
    if not isinstance(data, dict):
        raise RetryableModelError(
            f"{name}: malformed {what} (not an object)", kind="malformed", status=status
        )
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RetryableModelError(f"{name}: malformed {what} (no choices)", kind="malformed", status=status)
    first = choices[0]
    message = first.get("message")
    if not isinstance(message, dict) or not _answered(message):
        raise RetryableModelError(
            f"{name}: malformed {what} (no message content, tool calls or refusal)",
            kind="malformed",
            status=status,
        )
    try:
        message = _well_formed_json(message)
        all_choices = None
        if len(choices) > 1:
            all_choices = [_well_formed_json(c) for c in choices if isinstance(c, dict)]
        logprobs = _well_formed_json(first["logprobs"]) if isinstance(first.get("logprobs"), dict) else None
    except RecursionError:
        raise RetryableModelError(
            f"{name}: malformed {what} (nested too deeply)", kind="malformed", status=status
        ) from None
    text = _content_text(message.get("content")) or ""
    estimate_text = text if not message.get("tool_calls") else text + json.dumps(message["tool_calls"])
    model = data.get("model")
    return Completion(
        text=text,
        provider_model=_well_formed(model) if isinstance(model, str) and model else default_model,
        usage=_usage(data.get("usage"), messages, estimate_text, params),
        latency_ms=latency_ms,
        status=status,
        message=message,
        finish_reason=_str_or_none(first.get("finish_reason")),
        response_id=_str_or_none(data.get("id")),
        choices=all_choices,
        logprobs=logprobs,
        system_fingerprint=_str_or_none(data.get("system_fingerprint")),
        service_tier=_str_or_none(data.get("service_tier")),
    )
