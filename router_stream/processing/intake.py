"""Classification at the door: a consumed record becomes a :class:`Request` or a poison reason.

:func:`classify` never raises: every input, however hostile, yields exactly one of the two.
Reason codes are stable (documented in docs/dead-letters.md) so dead letters can be counted
and alerted on. Checks run in this order, the first that fails names the reason:

1. ``tombstone``      the value is null
2. ``oversized``      the value is longer than ``max_bytes`` (``kafka.max_record_bytes``)
3. ``not_utf8``       the bytes are not UTF-8
4. ``not_json``       the text is not strict JSON (RFC 8259: no ``NaN`` / ``Infinity``, not
                      nested deeper than the parser allows, integers of at most 4300 digits)
5. ``wrong_shape``    the JSON is not an object
6. ``not_utf8``       a ``\\uD800``-style escape decodes to a lone surrogate, which no UTF-8
                      record (response, audit, dead letter) could ever carry
7. ``unsupported_schema_version``  ``schema_version`` is an integer this worker does not know
                      (newer than :data:`~router_stream.schemas.SCHEMA_VERSION`, or below 1)
8. ``missing_request_id``  no non-blank string ``request_id`` of at most 256 characters without
                          control characters
9. ``invalid_request``     the object does not match the request schema
10. ``context_window``     the prompt estimate exceeds every candidate's context window

A :class:`Poison` carries the ``request_id`` whenever one could be read safely (from step 7 on),
so a dead letter can be matched to its request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..providers.base import estimate_prompt_tokens
from ..schemas import SCHEMA_VERSION, Request

MAX_REQUEST_ID_CHARS = 256
# a deadline must stay a finite float once divided into seconds (the handler does that)
MAX_DEADLINE_MS = 2**53
_INT: TypeAdapter[int] = TypeAdapter(int)

# reason code -> the human sentence that goes with it
REASONS: dict[str, str] = {
    "tombstone": "the record has no value (null / tombstone); there is nothing to answer",
    "oversized": "the record is larger than kafka.max_record_bytes",
    "not_utf8": "the value is not valid UTF-8",
    "not_json": "the value is not JSON",
    "wrong_shape": "the value is JSON but not an object",
    "missing_request_id": "the request has no usable request_id (required, non-empty string)",
    "unsupported_schema_version": f"schema_version is not one this worker speaks (it speaks 1..{SCHEMA_VERSION})",
    "invalid_request": "the request does not match the request schema",
    "context_window": "the prompt is larger than every candidate's context window",
    "internal_error": "the worker failed unexpectedly on this record (a bug; the record may be fine)",
}


@dataclass(frozen=True, slots=True)
class Poison:
    """Why a record cannot be served; ``request_id`` when one could still be read."""

    reason: str
    message: str
    request_id: str | None = None


def context_limit(context_windows: Iterable[int | None]) -> int | None:
    """The largest prompt (estimated tokens) any candidate takes; None when one has no limit."""
    limit = 0
    for window in context_windows:
        if window is None:
            return None
        limit = max(limit, window)
    return limit or None


def classify(
    value: bytes | None, max_bytes: int = 1_000_000, max_prompt_tokens: int | None = None
) -> Request | Poison:
    """Turn raw record bytes into a request, or say why not. Never raises.

    ``max_prompt_tokens`` is :func:`context_limit` of the configured candidates: a prompt whose
    estimate exceeds it could never be served, so it is poison (``context_window``).
    """
    try:
        return _classify(value, max_bytes, max_prompt_tokens)
    except Exception as exc:  # defence in depth: the door must not crash the worker
        return Poison("internal_error", f"unexpected {type(exc).__name__} while reading the record")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: strict JSON (no ``NaN`` / ``Infinity``); made once: ``json.loads(text, parse_constant=...)``
#: builds a new decoder on every call, ~10% of the intake's CPU per record
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    """``json.loads(text, parse_constant=_reject_constant)``, with the one decoder."""
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def _version_of(data: dict[str, Any]) -> int | None:
    """schema_version as the integer the request model reads (same lax rules), None if not one."""
    if "schema_version" not in data:
        return SCHEMA_VERSION
    try:
        return _INT.validate_python(data["schema_version"])
    except ValidationError:
        return None  # not an integer at all: the schema check says so (invalid_request)


def _read_id(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(request_id, None) when usable, else (None, why not)."""
    rid = data.get("request_id")
    if "request_id" not in data or rid is None:
        return None, "request_id is missing"
    if not isinstance(rid, str):
        return None, f"request_id must be a string (got {type(rid).__name__})"
    if not rid.strip():
        return None, "request_id is empty"
    if len(rid) > MAX_REQUEST_ID_CHARS:
        return None, f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters ({len(rid)})"
    bad = next((i for i, c in enumerate(rid) if c < " " or "\x7f" <= c <= "\x9f"), None)
    if bad is not None:  # ids go into state-store keys, logs and headers: NUL or a newline there is trouble
        return None, f"request_id has a control character (U+{ord(rid[bad]):04X} at position {bad})"
    return rid, None


def _classify(value: bytes | None, max_bytes: int, max_prompt_tokens: int | None) -> Request | Poison:
    if value is None:
        return Poison("tombstone", REASONS["tombstone"])
    if not isinstance(value, bytes):
        value = bytes(value)
    if len(value) > max_bytes:
        return Poison("oversized", f"record of {len(value)} bytes exceeds the limit of {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Poison("not_utf8", f"{REASONS['not_utf8']} (byte {exc.start})")
    try:
        data = _loads(text)
    except RecursionError:
        return Poison("not_json", f"{REASONS['not_json']}: nested too deeply")
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers over the digit limit
        return Poison("not_json", f"{REASONS['not_json']}: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return Poison("wrong_shape", f"{REASONS['wrong_shape']} (got {_json_type(data)})")
    if "\\u" in text:  # only an escape can smuggle a lone surrogate into valid UTF-8 text
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return Poison(
                "not_utf8",
                "the value escapes a lone UTF-16 surrogate (e.g. \\ud800), which is not a Unicode character",
            )
        except RecursionError:
            return Poison("not_json", f"{REASONS['not_json']}: nested too deeply")

    rid, why_no_id = _read_id(data)
    version = _version_of(data)
    if version is not None and not 1 <= version <= SCHEMA_VERSION:
        shown = str(version) if len(str(version)) <= 20 else f"{str(version)[:20]}…"
        return Poison(
            "unsupported_schema_version",
            f"schema_version {shown} is not one this worker speaks (1..{SCHEMA_VERSION})",
            rid,
        )
    if rid is None:
        return Poison("missing_request_id", f"{REASONS['missing_request_id']}: {why_no_id}")
    deadline = data.get("deadline_ms")
    if isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and deadline > MAX_DEADLINE_MS:
        return Poison("invalid_request", f"deadline_ms: must be at most {MAX_DEADLINE_MS}", rid)
    try:
        request = Request.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = first["msg"].removeprefix("Value error, ")
        return Poison("invalid_request", f"{where}: {msg}"[:300], rid)
    if max_prompt_tokens is not None:
        tokens = estimate_prompt_tokens(request.chat_messages(), request.call_params())
        if tokens > max_prompt_tokens:
            return Poison(
                "context_window",
                f"the prompt is ~{tokens} tokens; the largest context window "
                f"of any candidate is {max_prompt_tokens}",
                rid,
            )
    return request


def _json_type(data: Any) -> str:
    if isinstance(data, list):
        return "array"
    if isinstance(data, str):
        return "string"
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, (int, float)):
        return "number"
    return "null" if data is None else type(data).__name__
