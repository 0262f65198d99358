"""What the loopback model server answers beyond plain text: tool calls, tool results, parts, n.

Kept apart from :mod:`.model_server` (which owns HTTP, faults and batching) so the answer shapes
of OpenAI's chat completions live in one place, built from the API reference's examples:

* a request with ``tools`` (and ``tool_choice`` not ``none``) whose last message is not a tool
  result is answered with a call of the first tool: ``content: null``, one ``tool_calls``
  entry with JSON ``arguments`` (each string property of the tool's parameters gets the last
  user text, numbers 1, booleans true), ``finish_reason: tool_calls``;
* a request whose last message is a ``tool`` message is answered with text that quotes the tool
  result: ``"[<name>] tool result: <first 80 chars>"``;
* content parts are echoed as their text with ``[<type>]`` for each part that is not text, so a
  test sees which parts arrived;
* ``n > 1`` returns n choices (choice i > 0 has `` #i`` appended to its text).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = ["choices_for", "completion_body", "last_user_text", "part_text", "tool_reply"]

#: the most choices the server returns for ``n`` (OpenAI's limit is 128)
MAX_CHOICES = 8


def part_text(content: Any) -> str:
    """A message content as the server reads it: a string as is; parts as their text, with
    ``[<type>]`` for each non-text part (``[image_url]``, ``[input_audio]``, ``[file]``)."""
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                out.append(str(part.get("text") or ""))
            else:
                out.append(f"[{part.get('type')}]")
        return " ".join(out)
    return str(content or "")


def last_user_text(messages: list[Any], *, or_last: bool = False) -> str:
    """The text of the last user message; without one, "" (or, with ``or_last``, the text of the
    last message, which is what the server answers when a prompt has no user turn)."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return part_text(m.get("content"))
    if or_last and messages and isinstance(messages[-1], dict):
        return part_text(messages[-1].get("content"))
    return ""


def _arguments(parameters: Any, text: str) -> dict[str, Any]:
    props = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(props, dict):
        return {}
    args: dict[str, Any] = {}
    for name, schema in props.items():
        kind: Any = schema.get("type") if isinstance(schema, dict) else None
        args[name] = {"string": text[:40], "integer": 1, "number": 1, "boolean": True}.get(kind)
    return args


def tool_reply(name: str, body: dict[str, Any], messages: list[Any]) -> tuple[dict[str, Any], str] | None:
    """``(assistant message, finish_reason)`` for a tool turn (see the module doc), or None when
    the request is a plain one and the server's text answer applies."""
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        result = part_text(last.get("content"))
        return {"role": "assistant", "content": f"[{name}] tool result: {result[:80]}"}, "stop"
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    function = found if isinstance(found := first.get("function"), dict) else {}
    call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": str(function.get("name") or "tool"),
            "arguments": json.dumps(_arguments(function.get("parameters"), last_user_text(messages))),
        },
    }
    return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}, "tool_calls"


def choices_for(message: dict[str, Any], finish_reason: str, n: Any) -> list[dict[str, Any]]:
    """The ``choices`` array: one, or ``n`` (at most :data:`MAX_CHOICES`) numbered copies."""
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    out = []
    for i in range(min(count, MAX_CHOICES)):
        msg = dict(message)
        if i and isinstance(msg.get("content"), str):
            msg["content"] = f"{msg['content']} #{i}"
        out.append({"index": i, "message": msg, "logprobs": None, "finish_reason": finish_reason})
    return out


def completion_body(
    message: dict[str, Any], finish_reason: str, body: dict[str, Any], messages: list[Any], model: str
) -> dict[str, Any]:
    """A whole ``chat.completion`` object for ``message``, with rough usage (characters / 4)."""
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
    prompt_tokens = max(1, prompt_chars // 4) + 4 * len(messages)
    produced = message.get("content")
    if not isinstance(produced, str):
        produced = json.dumps(message.get("tool_calls"))
    completion_tokens = max(1, len(produced) // 4)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices_for(message, finish_reason, body.get("n")),
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
