"""An OpenAI chat-completions body translated into an Anthropic Messages API request.

Kept apart from :mod:`.anthropic` (the adapter: address, headers, errors, answers) because the
request side is the larger half and is pure data: :func:`to_messages_request` takes a dict and
returns a dict, so each rule is tested on its own.

=============================================  ====================================================
OpenAI                                         Anthropic Messages API
=============================================  ====================================================
``system`` / ``developer`` messages            top-level ``system`` (joined by a blank line, in
                                               order; their place in the conversation is lost)
``user`` content: string / ``text`` parts      ``text`` blocks
``image_url`` part, ``data:`` URL              ``image`` block, ``source.type: base64``
``image_url`` part, ``http(s)`` URL            ``image`` block, ``source.type: url``
``file`` part with PDF / plain-text file_data  ``document`` block (``filename`` → ``title``)
assistant ``content`` / ``refusal`` parts      ``text`` blocks
assistant ``tool_calls``                       ``tool_use`` blocks (``arguments`` parsed to ``input``)
``tool`` messages                              ``tool_result`` blocks in a user turn; consecutive
                                               results (and a user message after them) merge
                                               into one user turn, results first
``tools`` (function tools)                     ``tools`` with ``input_schema`` = ``parameters``
``tool_choice`` auto / none / required / fn    ``{type: auto}`` / ``none`` / ``any`` / ``tool``
``parallel_tool_calls: false``                 ``tool_choice.disable_parallel_tool_use: true``
``max_completion_tokens`` / ``max_tokens``     ``max_tokens`` (required: else the candidate's
                                               ``default_max_tokens``)
``temperature``                                ``temperature``, clamped to Anthropic's 0–1
``top_p``                                      ``top_p``
``stop`` (string or list)                      ``stop_sequences``
``user``                                       ``metadata.user_id``
=============================================  ====================================================

Consecutive turns of one role merge into one turn (Anthropic alternates user and assistant).
Every other request field (``n``, ``seed``, ``logprobs``, ``response_format``,
``presence_penalty``, ``metadata``, ...) is left out and named in ``dropped``; so are the parts of
a translated field Anthropic has no place for (``messages[].name``, ``image_url.detail``,
``tools[].function.strict``). What cannot be expressed at all (an ``input_audio`` part, a
``file_id``, a non-function tool) raises :class:`Unsupported` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeGuard

from ..errors import FatalModelError

#: request fields the translation reads; every other field is dropped and named
TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
    }
)
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,]*)*);base64,(.*)", re.DOTALL)


class Unsupported(FatalModelError, ValueError):
    """The request asks for something the Messages API cannot take; the message names the field."""


def to_messages_request(body: dict[str, Any], default_max_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """``(messages_request, dropped)`` for an OpenAI chat-completions ``body`` (see the module doc).

    ``dropped`` lists, sorted, the names of what was left out. Raises :class:`Unsupported`.
    """
    dropped: set[str] = {k for k in body if k not in TRANSLATED}
    system, turns = _conversation(body.get("messages") or [], dropped)
    out: dict[str, Any] = {"model": body.get("model"), "max_tokens": _max_tokens(body, default_max_tokens)}
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = turns
    temperature = body.get("temperature")
    if _is_number(temperature):
        out["temperature"] = min(1.0, max(0.0, float(temperature)))
    if _is_number(body.get("top_p")):
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    stops = [s for s in stop if isinstance(s, str) and s] if isinstance(stop, list) else []
    if stops:
        out["stop_sequences"] = stops
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise Unsupported("tools (not a list)")
        out["tools"] = [_tool(t, i, dropped) for i, t in enumerate(tools)]
        choice = _tool_choice(body.get("tool_choice"), dropped)
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice is not None:
            out["tool_choice"] = choice
    else:
        dropped.update(k for k in ("tool_choice", "parallel_tool_calls") if k in body)
    return out, sorted(dropped)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def _conversation(messages: Any, dropped: set[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(system texts, turns)``: system messages lifted out, the rest as alternating turns."""
    if not isinstance(messages, list):
        raise Unsupported("messages (not a list)")
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise Unsupported(f"{where} (not an object)")
        if "name" in m:
            dropped.add("messages[].name")
        role = m.get("role")
        if role in ("system", "developer"):
            text = "".join(
                b["text"] for b in _blocks(m.get("content"), f"{where}.content", dropped, text_only=True)
            )
            if text:
                system.append(text)
        elif role == "user":
            add("user", _blocks(m.get("content"), f"{where}.content", dropped))
        elif role == "assistant":
            blocks = _blocks(m.get("content"), f"{where}.content", dropped)
            calls = m.get("tool_calls") or []
            blocks += [_tool_use(tc, f"{where}.tool_calls[{j}]") for j, tc in enumerate(calls)]
            if m.get("function_call") is not None:
                dropped.add("messages[].function_call")
            add("assistant", blocks)
        elif role == "tool":
            add("user", [_tool_result(m, where, dropped)])
        else:
            raise Unsupported(f"{where}.role {str(role)[:40]!r} (use system, user, assistant or tool)")
    return system, turns


def _blocks(content: Any, where: str, dropped: set[str], text_only: bool = False) -> list[dict[str, Any]]:
    """Content (a string or a list of parts) as Anthropic content blocks; empty text is left out
    (the API refuses empty text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise Unsupported(f"{where} (neither a string nor a list of parts)")
    out: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            if part[kind]:
                out.append({"type": "text", "text": part[kind]})
        elif kind == "image_url" and not text_only:
            out.append(_image(part.get("image_url"), f"{where}[{k}]", dropped))
        elif kind == "file" and not text_only:
            out.append(_document(part.get("file"), f"{where}[{k}]"))
        else:
            raise Unsupported(f"{where}[{k}] of type {str(kind)[:40]!r}")
    return out


def _image(image: Any, where: str, dropped: set[str]) -> dict[str, Any]:
    if isinstance(image, str):
        image = {"url": image}
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        raise Unsupported(f"{where}.image_url.url (missing)")
    if "detail" in image:
        dropped.add("image_url.detail")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = _data_url(url, f"{where}.image_url.url")
    if media_type not in IMAGE_TYPES:
        raise Unsupported(
            f"{where}.image_url.url of media type {media_type[:60]!r} "
            f"(images: {', '.join(sorted(IMAGE_TYPES))})"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document(file: Any, where: str) -> dict[str, Any]:
    if not isinstance(file, dict) or not isinstance(file.get("file_data"), str):
        raise Unsupported(f"{where}.file without file_data (a file_id means nothing to Anthropic)")
    media_type, data = _data_url(file["file_data"], f"{where}.file.file_data")
    if media_type == "application/pdf":
        block: dict[str, Any] = {
            "type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    elif media_type == "text/plain":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unsupported(f"{where}.file.file_data (text/plain that is not base64 UTF-8)") from None
        block = {"type": "document", "source": {"type": "text", "media_type": media_type, "data": text}}
    else:
        raise Unsupported(
            f"{where}.file of media type {media_type[:60]!r} (documents: application/pdf, text/plain)"
        )
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _data_url(url: str, where: str) -> tuple[str, str]:
    """``(media_type, base64 data)`` of a ``data:<type>;base64,<data>`` URL."""
    found = _DATA_URL.fullmatch(url)
    if not found:
        raise Unsupported(f"{where} (neither an http(s) URL nor a base64 data: URL)")
    return found.group(1).lower(), found.group(3)


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
        raise Unsupported(f"{where} (needs id and function.name)")
    raw = fn.get("arguments")
    try:
        if isinstance(raw, str):  # OpenAI sends a JSON string; "" for a call without arguments
            args = json.loads(raw) if raw.strip() else {}
        else:
            args = raw if raw is not None else {}
    except ValueError:
        raise Unsupported(f"{where}.function.arguments (not JSON)") from None
    if not isinstance(args, dict):
        raise Unsupported(f"{where}.function.arguments (not a JSON object)")
    return {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": args}


def _tool_result(m: dict[str, Any], where: str, dropped: set[str]) -> dict[str, Any]:
    if not isinstance(m.get("tool_call_id"), str):
        raise Unsupported(f"{where}.tool_call_id (missing)")
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m["tool_call_id"]}
    if isinstance(content, str):
        block["content"] = content
    else:
        block["content"] = _blocks(content, f"{where}.content", dropped)
    return block


def _tool(tool: Any, i: int, dropped: set[str]) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    fn = tool.get("function") if kind == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise Unsupported(f"tools[{i}] of type {str(kind)[:40]!r} (only function tools with a name)")
    params = fn.get("parameters")
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": params if isinstance(params, dict) else {"type": "object", "properties": {}},
    }
    if isinstance(fn.get("description"), str) and fn["description"]:
        out["description"] = fn["description"]
    if "strict" in fn:
        dropped.add("tools[].function.strict")
    return out


def _tool_choice(choice: Any, dropped: set[str]) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    dropped.add("tool_choice")  # e.g. allowed_tools: no Anthropic equivalent; the default (auto) applies
    return None
