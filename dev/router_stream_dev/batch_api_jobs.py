"""The Batch API emulator's jobs: settings, the job and file records, the fast clock, and the
lines a finished job writes (plain data and pure functions; the HTTP side is
:mod:`.batch_api_server`).

The clock (:meth:`Job.due`): a job is ``validating`` for the first 10 % of ``complete_s``,
``in_progress`` to 90 %, ``finalizing`` to 100 %, then takes its outcome; a forced outcome or a
cancel wins. :func:`result_lines` answers a finished job's lines the way its settings ask
(answered, dropped, failed by ``line_errors``, or not processed after an expiry or a cancel).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .admin import merged

__all__ = [
    "ENDPOINTS",
    "TERMINAL",
    "WINDOW_S",
    "BatchAPISettings",
    "Job",
    "StoredFile",
    "output_bytes",
    "parse_input",
    "result_lines",
]

TERMINAL = ("completed", "failed", "expired", "cancelled")
OUTCOMES = ("completed", "failed", "expired")
ENDPOINTS = ("/v1/chat/completions", "/chat/completions")
WINDOW_S = {"24h": 86_400}


@dataclass
class BatchAPISettings:
    """How new batch jobs behave; see the module doc."""

    complete_s: float = 1.0
    outcome: str = "completed"
    fail_code: str = "invalid_request"
    drop_custom_ids: list[str] = field(default_factory=list)
    line_errors: dict[str, int | str] = field(default_factory=dict)
    garbage_lines: int = 0
    partial_fraction: float = 0.5

    def validate(self) -> BatchAPISettings:
        if self.complete_s < 0:
            raise ValueError(f"complete_s {self.complete_s!r} is negative")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not {'|'.join(OUTCOMES)}")
        if not 0.0 <= self.partial_fraction <= 1.0:
            raise ValueError(f"partial_fraction {self.partial_fraction!r} is not in [0, 1]")
        for cid, err in self.line_errors.items():
            if isinstance(err, bool) or not isinstance(err, (int, str)):
                raise ValueError(f"line_errors[{cid!r}]: expected an HTTP status or an error code")
            if isinstance(err, int) and not 100 <= err <= 599:
                raise ValueError(f"line_errors[{cid!r}]: {err} is not an HTTP status")
        if self.garbage_lines < 0:
            raise ValueError("garbage_lines is negative")
        return self

    def updated(self, changes: dict[str, Any]) -> BatchAPISettings:
        data = merged(self, changes, "batch_api")
        data["drop_custom_ids"] = [str(x) for x in data["drop_custom_ids"]]
        data["line_errors"] = {str(k): v for k, v in dict(data["line_errors"]).items()}
        return BatchAPISettings(**data).validate()


@dataclass
class StoredFile:
    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass
class Job:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str]
    settings: BatchAPISettings
    lines: list[dict[str, Any]]
    validation_errors: list[dict[str, Any]]
    created_mono: float
    created_at: int
    state: str = "validating"
    forced: tuple[str, str | None] | None = None  # (state, error code)
    cancel_mono: float | None = None
    cancel_progress: float = 0.0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    stamps: dict[str, int | None] = field(default_factory=dict)

    def progress(self, now: float) -> float:
        """Share of lines answered by ``now`` on the fast clock (0 while validating, 1 when due)."""
        c = self.settings.complete_s
        if c <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.created_mono - 0.1 * c) / (0.8 * c)))

    def due(self, now: float) -> tuple[str, str | None] | None:
        """Move a running job along the clock; ``(state, error code)`` when it should finish now."""
        c = self.settings.complete_s
        if self.forced is not None:
            return self.forced
        if self.cancel_mono is not None:
            return ("cancelled", None) if now - self.cancel_mono >= min(0.05, 0.1 * c) else None
        t = now - self.created_mono
        if t < 0.1 * c:
            self.state = "validating"
            return None
        if self.validation_errors:
            return "failed", None
        self.stamps.setdefault("in_progress_at", int(time.time()))
        if t < 0.9 * c:
            self.state = "in_progress"
            self.counts["completed"] = int(len(self.lines) * self.progress(now))
            return None
        self.stamps.setdefault("finalizing_at", int(time.time()))
        if t < c:
            self.state = "finalizing"
            return None
        return self.settings.outcome, None

    def obj(self) -> dict[str, Any]:
        """The batch object, as ``GET /v1/batches/{id}`` answers it."""
        window_s = WINDOW_S.get(self.completion_window, 86_400)
        stamps = {
            k: self.stamps.get(k)
            for k in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        }
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.state,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + window_s,
            **stamps,
            "request_counts": dict(self.counts),
            "metadata": dict(self.metadata),
        }


def result_lines(
    job: Job, state: str, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """``(output lines, error lines, dropped count)`` of a job finishing ``completed``, ``expired``
    or ``cancelled``; ``answer(body)`` is the chat completion of one line's body."""
    s = job.settings
    n = len(job.lines)
    if state == "completed":
        answered = n
    elif state == "expired":
        answered = int(n * s.partial_fraction)
    else:  # cancelled
        answered = int(n * job.cancel_progress)
    drop = set(s.drop_custom_ids)
    outputs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    dropped = 0
    for pos, line in enumerate(job.lines):
        cid = line["custom_id"]
        if pos >= answered:
            missed = "batch_expired" if state == "expired" else "batch_cancelled"
            errors.append(_line(cid, None, {"code": missed, "message": f"not processed: the batch {state}"}))
        elif cid in drop:
            dropped += 1
        elif cid in s.line_errors:
            err = s.line_errors[cid]
            if isinstance(err, int):
                body = {
                    "error": {
                        "message": f"fault {err} on purpose",
                        "type": "invalid_request_error" if err < 500 else "server_error",
                        "code": None,
                    }
                }
                errors.append(_line(cid, {"status_code": err, "request_id": _req_id(), "body": body}, None))
            else:
                errors.append(_line(cid, None, {"code": err, "message": "line failed on purpose"}))
        else:
            outputs.append(
                _line(cid, {"status_code": 200, "request_id": _req_id(), "body": answer(line["body"])}, None)
            )
    return outputs, errors, dropped


def output_bytes(outputs: list[dict[str, Any]], garbage_lines: int) -> bytes:
    """The output file: one JSON line per output, with ``garbage_lines`` unparseable lines mixed in."""
    rows = [json.dumps(o) for o in outputs]
    for i in range(garbage_lines):
        rows.insert(min(len(rows), 1 + i), "{not json at all" if i % 2 == 0 else '"just a string"')
    return ("\n".join(rows) + "\n").encode()


def parse_input(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The valid lines of an input file and OpenAI-style validation errors for the rest."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def bad(code: str, message: str, lineno: int) -> None:
        errors.append({"code": code, "message": message, "param": None, "line": lineno})

    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            bad("invalid_json_line", "this line is not valid JSON", lineno)
            continue
        if not isinstance(line, dict):
            bad("invalid_json_line", "this line is not a JSON object", lineno)
            continue
        cid = line.get("custom_id")
        body = line.get("body")
        if not isinstance(cid, str) or not cid:
            bad("missing_required_parameter", "custom_id is missing", lineno)
        elif cid in seen:
            bad("duplicate_custom_id", "custom_id is not unique", lineno)
        elif line.get("method") != "POST":
            bad("invalid_request", "method must be POST", lineno)
        elif line.get("url") != endpoint:
            bad("mismatched_endpoint", "url does not match the batch endpoint", lineno)
        elif not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            bad("missing_required_parameter", "body.messages must be a non-empty list", lineno)
        else:
            seen.add(cid)
            lines.append(line)
    if not lines and not errors:
        bad("empty_file", "the input file has no requests", 0)
    return lines, errors


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _req_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"
