"""The Batch API's data, with no HTTP: JSONL request files, job status and result lines as values.

:mod:`.batch_api` (the HTTP client) moves bytes; this module says what they mean. It builds the
JSONL input file from ``(custom_id, ChatCall)`` items, reads a job object (``GET
/v1/batches/{id}``) into a :class:`BatchStatus`, and turns each line of a job's output / error
file into a :class:`~.base.Completion` or a :class:`~router_stream.errors.ModelError`, gathered in
:class:`BatchResults`. Provider text never reaches an error message: only the candidate name,
job id, custom_id, status codes and error codes that look like codes.

Per-record outcomes (never raised, returned as values):

====================  ===========================================================  =========
kind                  cause                                                        retryable
====================  ===========================================================  =========
(a Completion)        the line answered 2xx with a message
``malformed``         2xx line without choices / an answer, or neither response    yes
                      nor error
status kinds          the line's ``response.status_code`` mapped like an HTTP      per status
                      answer (``throttled``, ``server_error``, ``client_error``…)
``batch_expired``     the job's window ran out before this line                    yes
``batch_cancelled``   the job was cancelled before this line                       yes
``throttled``         line error code ``rate_limit_exceeded`` / token limits       yes
``server_error``      line error code ``server_error`` / ``timeout``               yes
``line_error``        any other line error code                                    no
``missing``           the job completed but said nothing about this custom_id      yes
``batch_failed``      the whole job failed (validation); retryable only for        per code
                      token/rate-limit codes
====================  ===========================================================  =========
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FatalModelError, ModelError, RetryableModelError
from .base import ChatCall, Completion
from .openai import openai_body
from .openai_answer import completion_from_openai

__all__ = [
    "ACTIVE_STATES",
    "BATCH_STATES",
    "TERMINAL_STATES",
    "BatchCounts",
    "BatchResults",
    "BatchStatus",
    "add_result_lines",
    "input_file",
    "input_messages",
    "missing_error",
    "parse_status",
    "status_error",
]

#: states of a job that will still change
ACTIVE_STATES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
#: states of a job that will not change any more; results can be read
TERMINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_STATES = ACTIVE_STATES | TERMINAL_STATES

#: line / job error codes we understand: code -> (kind, retryable)
_ERROR_CODES: dict[str, tuple[str, bool]] = {
    "batch_expired": ("batch_expired", True),
    "batch_cancelled": ("batch_cancelled", True),
    "rate_limit_exceeded": ("throttled", True),
    "token_limit_exceeded": ("throttled", True),
    "request_limit_exceeded": ("throttled", True),
    "server_error": ("server_error", True),
    "timeout": ("timeout", True),
}
_TIMESTAMP_KEYS = ("completed_at", "failed_at", "expired_at", "cancelled_at")
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class BatchCounts:
    """``request_counts`` of a job, as the provider reports them."""

    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BatchStatus:
    """One look at a batch job (``GET /v1/batches/{id}``)."""

    id: str
    state: str  #: one of :data:`BATCH_STATES`
    output_file_id: str | None = None
    error_file_id: str | None = None
    input_file_id: str | None = None
    counts: BatchCounts = field(default_factory=BatchCounts)
    created_at: float | None = None
    expires_at: float | None = None
    #: when the job reached its terminal state (completed/failed/expired/cancelled_at)
    finished_at: float | None = None
    #: machine-readable codes of job-level errors (e.g. why validation failed); no messages
    error_codes: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True in a terminal state: results can be read and will not change."""
        return self.state in TERMINAL_STATES


class BatchResults(dict[str, "Completion | ModelError"]):
    """``{custom_id: Completion | ModelError}`` for every custom_id, plus what was left out.

    ``skipped`` counts lines that were not JSON objects with a string ``custom_id`` (garbage);
    ``unexpected`` lines named a custom_id not in ``expected``; ``duplicates`` lines named a
    custom_id already answered (the first success wins, then the first error).
    """

    def __init__(self, status: BatchStatus) -> None:
        super().__init__()
        self.status = status
        self.skipped = 0
        self.unexpected = 0
        self.duplicates = 0

    @property
    def completions(self) -> dict[str, Completion]:
        return {k: v for k, v in self.items() if isinstance(v, Completion)}

    @property
    def errors(self) -> dict[str, ModelError]:
        return {k: v for k, v in self.items() if isinstance(v, ModelError)}


# ---- the input file ------------------------------------------------------------------------
def input_file(items: list[tuple[str, ChatCall]], model: str, endpoint: str) -> bytes:
    """The JSONL input file for ``items``: one ``{custom_id, method, url, body}`` line each.

    Raises ``ValueError`` for a custom_id that is not a non-empty string or is repeated.
    """
    seen: set[str] = set()
    lines: list[bytes] = []
    for custom_id, call in items:
        if not isinstance(custom_id, str) or not custom_id:
            raise ValueError(f"custom_id must be a non-empty string, got {custom_id!r}")
        if custom_id in seen:
            raise ValueError(f"duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        body = openai_body(call, model)
        line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        lines.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode())
    return b"\n".join(lines) + b"\n"


def input_messages(content: bytes) -> dict[str, list[dict[str, Any]]]:
    """``{custom_id: messages}`` read back from an input file (unreadable lines are passed over)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in content.splitlines():
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str) and line["custom_id"]:
            body = line.get("body")
            messages = body.get("messages") if isinstance(body, dict) else None
            out.setdefault(line["custom_id"], messages if isinstance(messages, list) else [])
    return out


# ---- job status ----------------------------------------------------------------------------
def parse_status(data: dict[str, Any], job_id: str, name: str) -> BatchStatus:
    """A job object as a :class:`BatchStatus`; ``RetryableModelError`` (``malformed``) when its
    state is missing or unknown. ``name`` (the candidate) prefixes the error message."""
    state = data.get("status")
    if state not in BATCH_STATES:
        raise RetryableModelError(f"{name}: batch job {job_id}: malformed status", kind="malformed")
    counts_raw = data.get("request_counts")
    counts = BatchCounts()
    if isinstance(counts_raw, dict):
        counts = BatchCounts(
            total=_int(counts_raw.get("total")),
            completed=_int(counts_raw.get("completed")),
            failed=_int(counts_raw.get("failed")),
        )
    codes: list[str] = []
    errors = data.get("errors")
    if isinstance(errors, dict) and isinstance(errors.get("data"), list):
        for e in errors["data"]:
            code = e.get("code") if isinstance(e, dict) else None
            if isinstance(code, str) and _SAFE_CODE.match(code):
                codes.append(code)
    finished = next((data[k] for k in _TIMESTAMP_KEYS if _num(data.get(k)) is not None), None)
    metadata = data.get("metadata")
    return BatchStatus(
        id=str(data.get("id") or job_id),
        state=state,
        output_file_id=_str_or_none(data.get("output_file_id")),
        error_file_id=_str_or_none(data.get("error_file_id")),
        input_file_id=_str_or_none(data.get("input_file_id")),
        counts=counts,
        created_at=_num(data.get("created_at")),
        expires_at=_num(data.get("expires_at")),
        finished_at=_num(finished),
        error_codes=tuple(codes),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )


# ---- result lines --------------------------------------------------------------------------
def add_result_lines(
    out: BatchResults,
    content: bytes,
    wanted: set[str],
    messages_by_id: dict[str, list[dict[str, Any]]],
    *,
    name: str,
    model: str,
    latency_ms: float,
) -> None:
    """Add the outcome of each line of one output / error file to ``out``; garbage, unexpected
    and duplicate lines are counted there (the first success wins, then the first error)."""
    st = out.status
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            line = None
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            out.skipped += 1
            continue
        if custom_id not in wanted:
            out.unexpected += 1
            continue
        prefix = f"{name}: batch job {st.id}, {custom_id}"
        outcome = _line_outcome(prefix, model, line, messages_by_id.get(custom_id, []), latency_ms)
        previous = out.get(custom_id)
        if previous is None:
            out[custom_id] = outcome
        else:
            out.duplicates += 1
            if isinstance(previous, ModelError) and isinstance(outcome, Completion):
                out[custom_id] = outcome


def _line_outcome(
    prefix: str, model: str, line: dict[str, Any], messages: list[dict[str, Any]], latency_ms: float
) -> Completion | ModelError:
    error = line.get("error")
    response = line.get("response")
    if isinstance(error, dict) and not isinstance(response, dict):
        code = error.get("code")
        kind, retryable = (
            _ERROR_CODES.get(code, ("line_error", False)) if isinstance(code, str) else ("line_error", False)
        )
        shown = code if isinstance(code, str) and _SAFE_CODE.match(code) else "unknown"
        cls = RetryableModelError if retryable else FatalModelError
        return cls(f"{prefix}: line error ({shown})", kind=kind)
    if not isinstance(response, dict):
        return RetryableModelError(f"{prefix}: malformed line (no response)", kind="malformed")
    status = response.get("status_code")
    if not isinstance(status, int):
        status = 200 if error is None else 500
    if not 200 <= status < 300:
        return status_error(f"{prefix}: HTTP {status} for the line", status, None)
    try:
        return completion_from_openai(
            response.get("body"),
            name=prefix,
            default_model=model,
            messages=messages,
            latency_ms=latency_ms,
            status=status,
            what="line",
        )
    except RetryableModelError as exc:
        return exc


def missing_error(st: BatchStatus, custom_id: str, name: str) -> ModelError:
    """The error for a custom_id no line answered, by how the job ended."""
    prefix = f"{name}: batch job {st.id}, {custom_id}"
    if st.state == "expired":
        return RetryableModelError(f"{prefix}: not answered before the job expired", kind="batch_expired")
    if st.state == "cancelled":
        return RetryableModelError(
            f"{prefix}: not answered before the job was cancelled", kind="batch_cancelled"
        )
    if st.state == "failed":
        retryable = any(_ERROR_CODES.get(c, ("", False))[0] == "throttled" for c in st.error_codes)
        shown = ", ".join(st.error_codes[:3]) or "no code"
        cls = RetryableModelError if retryable else FatalModelError
        return cls(f"{prefix}: the job failed ({shown})", kind="batch_failed")
    return RetryableModelError(f"{prefix}: no result line for this record", kind="missing")


def status_error(msg: str, status: int, retry_after: float | None) -> ModelError:
    """An HTTP status (of a files/batches call, or of one result line) as the error tree: the same
    mapping as the online client."""
    if status == 429:
        return RetryableModelError(msg, kind="throttled", status=status, retry_after=retry_after)
    if status >= 500:
        return RetryableModelError(msg, kind="server_error", status=status, retry_after=retry_after)
    if status in (408, 409):
        return RetryableModelError(msg, kind="http_error", status=status, retry_after=retry_after)
    if status in (401, 403):
        return FatalModelError(msg, kind="auth", status=status)
    return FatalModelError(msg, kind="client_error", status=status)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
