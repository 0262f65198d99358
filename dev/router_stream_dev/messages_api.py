"""Anthropic's Messages API as the loopback server speaks it: request checks and answers.

:func:`validate_messages_request` checks a request the way the API documents it (only its
top-level fields; ``max_tokens`` required; user/assistant turns; each ``tool_result`` answering a
``tool_use`` of the previous assistant turn and coming first in its turn; image and document
sources; tools with an object ``input_schema``; ``tool_choice`` naming a tool that exists).
:func:`to_chat_request` turns a checked request into a chat-completions body for the server
behind, and :func:`to_messages_answer` turns that server's answer into a Messages API answer
(content blocks, ``stop_reason``, ``usage``), calling a tool when tools are offered and the last
turn answers none. Written from the API reference independently of the router's adapter
(:mod:`router_stream.providers.anthropic`), so tests of one against the other can fail.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

__all__ = ["ERROR_TYPES", "to_chat_request", "to_messages_answer", "validate_messages_request"]

#: top-level fields of a Messages API request (anything else: 400, as the API answers)
MESSAGES_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: the API's error type per HTTP status (5xx otherwise: api_error; 4xx otherwise: invalid_request_error)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# ---- Anthropic request checks ------------------------------------------------------------------
def validate_messages_request(body: Any) -> str | None:
    """The first problem of a Messages API request body, in the API's words, or None."""
    if not isinstance(body, dict):
        return "body: Input should be an object"
    for key in body:
        if key not in MESSAGES_FIELDS:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer >= 1)"
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 1):
            return f"{key}: Input should be between 0 and 1"
    system = body.get("system")
    if (
        system is not None
        and not isinstance(system, str)
        and not (
            isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system)
        )
    ):
        return "system: Input should be a string or a list of text blocks"
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a list of strings"
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and set(metadata) <= {"user_id"}):
        return "metadata: only user_id is permitted"
    return _validate_tools(body) or _validate_messages(body.get("messages"))


def _validate_tools(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _TOOL_NAME.fullmatch(str(tool.get("name", ""))):
                return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.input_schema: Input should be a JSON schema of type object"
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return "tool_choice.name: names no tool of the request"
    return None


def _validate_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: Input should be a non-empty list"
    previous_tool_uses: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        if isinstance(content, str):
            if not content and i < len(messages) - 1:
                return f"messages.{i}: all messages must have non-empty content"
            previous_tool_uses = set()
            continue
        if not isinstance(content, list) or not content:
            return f"messages.{i}.content: Input should be a string or a non-empty list of blocks"
        tool_uses: set[str] = set()
        seen_other = False
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            problem = _validate_block(block, m["role"], where)
            if problem:
                return problem
            if block["type"] == "tool_result":
                if seen_other:
                    return f"{where}: tool_result blocks must come first in the user turn"
                if block["tool_use_id"] not in previous_tool_uses:
                    return (
                        f"{where}: unexpected tool_use_id found in tool_result blocks; each tool_result "
                        "must answer a tool_use of the previous assistant turn"
                    )
            else:
                seen_other = True
            if block["type"] == "tool_use":
                tool_uses.add(block["id"])
        previous_tool_uses = tool_uses
    return None


def _validate_block(block: Any, role: str, where: str) -> str | None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return (
            None
            if isinstance(block.get("text"), str) and block["text"]
            else f"{where}.text: text content blocks must be non-empty"
        )
    if kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict):
            return f"{where}.source: Field required"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return None
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            allowed = IMAGE_TYPES if kind == "image" else {"application/pdf"}
            return (
                None if source.get("media_type") in allowed else f"{where}.source.media_type: not supported"
            )
        if kind == "document" and source.get("type") == "text" and isinstance(source.get("data"), str):
            return None
        return f"{where}.source: Input should be a base64 or url source"
    if kind == "tool_use":
        if role != "assistant":
            return f"{where}: tool_use blocks belong to assistant turns"
        ok = (
            isinstance(block.get("id"), str)
            and isinstance(block.get("name"), str)
            and isinstance(block.get("input"), dict)
        )
        return None if ok else f"{where}: tool_use needs id, name and an object input"
    if kind == "tool_result":
        if role != "user":
            return f"{where}: tool_result blocks belong to user turns"
        content = block.get("content")
        ok = isinstance(block.get("tool_use_id"), str) and (
            content is None or isinstance(content, (str, list))
        )
        return None if ok else f"{where}: tool_result needs tool_use_id and string or block content"
    return f"{where}.type: Input tag {kind!r} is not a content block type"


# ---- Anthropic <-> the server's own chat completions -----------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict):
            parts.append(block.get("text") if block.get("type") == "text" else f"[{block.get('type')}]")
    return " ".join(p for p in parts if p)


def to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """A checked Messages API request as a chat-completions body for the server behind (text only)."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"])})
    for m in body["messages"]:
        blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        if m["role"] == "assistant":
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": _text_of([b for b in blocks if b.get("type") == "text"]),
            }
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        for b in blocks:
            if b.get("type") == "tool_result":
                messages.append(
                    {"role": "tool", "tool_call_id": b["tool_use_id"], "content": _text_of(b.get("content"))}
                )
        rest = [b for b in blocks if b.get("type") != "tool_result"]
        if rest:
            messages.append({"role": "user", "content": _text_of(rest)})
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    if body.get("tools"):
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t["input_schema"],
                },
            }
            for t in body["tools"]
        ]
    return chat


def _sample(schema: Any) -> Any:
    """A value that fits a JSON schema well enough for a scripted tool call."""
    if not isinstance(schema, dict):
        return "sample"
    if schema.get("enum"):
        return schema["enum"][0]
    kind: Any = schema.get("type")  # any JSON value; the lookup below answers "sample" for the unknown
    if kind == "object":
        props = schema.get("properties") or {}
        keys = schema.get("required") or list(props)
        return {k: _sample(props.get(k)) for k in keys}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "sample")


def _wants_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call: with tools offered, tool_choice not none, and no tool_result in the last turn."""
    tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
    last = body["messages"][-1]
    answered = isinstance(last["content"], list) and any(
        b.get("type") == "tool_result" for b in last["content"]
    )
    if not tools or choice["type"] == "none" or answered:
        return None
    if choice["type"] == "tool":
        return next(t for t in tools if t["name"] == choice["name"])
    return tools[0]


def to_messages_answer(body: dict[str, Any], chat: dict[str, Any]) -> dict[str, Any] | None:
    """The server's chat completion as a Messages API answer; None if it is not a valid one."""
    try:
        message = chat["choices"][0]["message"]
        text = message["content"]
        usage = chat.get("usage") or {}
    except (KeyError, IndexError, TypeError):
        return None
    if text is not None and not isinstance(text, str):
        return None
    text = text or ""
    stop_reason, stop_sequence = "end_turn", None
    cut = min(((text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text), default=None)
    if cut is not None:
        text, stop_reason, stop_sequence = text[: cut[0]], "stop_sequence", cut[1]
    if len(text) > body["max_tokens"] * 4:  # the server's rough 4 characters per token
        text, stop_reason = text[: body["max_tokens"] * 4], "max_tokens"
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in message.get("tool_calls") or []:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_" + str(call.get("id", "")).removeprefix("call_"),
                "name": call["function"]["name"],
                "input": json.loads(call["function"]["arguments"] or "{}"),
            }
        )
    tool = _wants_tool(body) if stop_reason == "end_turn" and not message.get("tool_calls") else None
    if tool is not None:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_" + uuid.uuid4().hex[:24],
                "name": tool["name"],
                "input": _sample(tool["input_schema"]),
            }
        )
    if any(b["type"] == "tool_use" for b in content) and stop_reason == "end_turn":
        stop_reason = "tool_use"
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 1),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": max(1, len(text) // 4),
        },
    }
