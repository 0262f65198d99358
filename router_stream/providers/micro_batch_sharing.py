"""How calls share one prompt micro-batch: which calls may join one, which may join the same
one, and each member's part of the batched call's params and usage.

Pure functions over request messages, params and :class:`~..schemas.Usage`; the micro-batching
client (:mod:`.batching`) decides with them and the dispatcher's tests ask
:func:`unbatchable_reason` directly. ("Batch" here is the prompt micro-batch of
``candidates.<name>.batch``, not a Kafka fetch batch or a Batch API job.)

A call may join when all its messages are user messages of text (:func:`record_text`) and its
params are JSON whose answer one entry of a batched text can carry (:func:`unbatchable_reason`:
``n > 1`` needs one entry per answer, ``tools`` / ``functions`` answer with ``tool_calls`` no entry
can hold, a ``response_format`` other than text clashes with the batch format, ``logprobs``
belong to the whole batch, audio output and ``prediction`` are not text). Calls join the same
batch only with equal params (:func:`params_key`).
"""

from __future__ import annotations

import json
from typing import Any

from ..schemas import Usage

__all__ = ["add_usage", "params_key", "record_text", "scaled_params", "split_usage", "unbatchable_reason"]


def record_text(messages: list[dict[str, Any]]) -> str | None:
    """The record's content (every message's text, joined by blank lines) when every message is a
    user message of text; else None (the call cannot join a batch)."""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            return None
        content = m.get("content")
        if isinstance(content, list):
            given = [p.get("text") for p in content if isinstance(p, dict)]
            texts = [t for t in given if isinstance(t, str)]
            if not texts or len(texts) != len(given):
                return None  # images or other parts cannot ride in a text prompt
            content = "".join(texts)
        if not isinstance(content, str):
            return None
        parts.append(content)
    return "\n\n".join(parts) if parts else None


def unbatchable_reason(params: dict[str, Any]) -> str | None:
    """Why a call with ``params`` must go alone (see the module doc), or None when it may share."""
    n = params.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return "n > 1"
    for name in ("tools", "functions", "prediction", "audio"):
        if params.get(name):
            return name
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        return "response_format"
    if params.get("logprobs"):
        return "logprobs"
    modalities = params.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return "modalities"
    return None


def params_key(params: dict[str, Any]) -> str | None:
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def scaled_params(params: dict[str, Any], n: int) -> dict[str, Any]:
    """Token caps are per record: the batched call may use ``n`` times as many."""
    out = dict(params)
    for key in ("max_tokens", "max_completion_tokens"):
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = value * n
    return out


def _split(total: int, n: int) -> list[int]:
    base, extra = divmod(max(0, total), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def split_usage(usage: Usage, n: int) -> list[Usage]:
    prompts, completions = _split(usage.prompt_tokens, n), _split(usage.completion_tokens, n)
    return [
        Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c) for p, c in zip(prompts, completions)
    ]


def add_usage(a: Usage, b: Usage) -> Usage:
    """``a`` (a record's own call, details kept) plus ``b`` (its share of the failed batch)."""
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
        prompt_tokens_details=a.prompt_tokens_details,
        completion_tokens_details=a.completion_tokens_details,
    )
