"""Classification at the door: a consumed record becomes a :class:`Request` or a poison reason.

:func:`classify` never raises: every input, however hostile, yields exactly one of the two.
Reason codes are stable (documented in the README) so dead letters can be counted and alerted on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from ..schemas import SCHEMA_VERSION, Request

# reason code -> the human sentence that goes with it
REASONS: dict[str, str] = {
    "tombstone": "the record has no value (null / tombstone); there is nothing to answer",
    "oversized": "the record is larger than kafka.max_record_bytes",
    "not_utf8": "the value is not valid UTF-8",
    "not_json": "the value is not JSON",
    "wrong_shape": "the value is JSON but not an object",
    "missing_request_id": "the request has no usable request_id (required, non-empty string)",
    "unsupported_schema_version": f"schema_version is newer than this worker speaks ({SCHEMA_VERSION})",
    "invalid_request": "the request does not match the request schema",
    "context_window": "the prompt is larger than every candidate's context window",
}


@dataclass(frozen=True, slots=True)
class Poison:
    """Why a record cannot be served; ``request_id`` when one could still be read."""

    reason: str
    message: str
    request_id: str | None = None


def classify(value: bytes | None, max_bytes: int = 1_000_000) -> Request | Poison:
    """Turn raw record bytes into a request, or say why not. Never raises."""
    try:
        return _classify(value, max_bytes)
    except Exception as exc:  # defence in depth: the door must not crash the worker
        return Poison("invalid_request", f"unexpected {type(exc).__name__} while reading the record")


def _classify(value: bytes | None, max_bytes: int) -> Request | Poison:
    if value is None:
        return Poison("tombstone", REASONS["tombstone"])
    if len(value) > max_bytes:
        return Poison("oversized", f"record of {len(value)} bytes exceeds the limit of {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Poison("not_utf8", f"{REASONS['not_utf8']} (byte {exc.start})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Poison("not_json", f"{REASONS['not_json']}: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return Poison("wrong_shape", f"{REASONS['wrong_shape']} (got {type(data).__name__})")
    rid = data.get("request_id")
    if not isinstance(rid, str) or not rid.strip() or len(rid) > 256:
        return Poison("missing_request_id", REASONS["missing_request_id"])
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return Poison("unsupported_schema_version",
                      f"schema_version {version} is newer than this worker speaks ({SCHEMA_VERSION})", rid)
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = first["msg"].removeprefix("Value error, ")
        return Poison("invalid_request", f"{where}: {msg}"[:300], rid)
