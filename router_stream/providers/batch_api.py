"""An OpenAI-style Batch API client: ``/v1/files`` + ``/v1/batches`` (24 h window, about half price).

Only for candidates configured with ``mode: batch`` (settings under ``batch_api``, see
:class:`~router_stream.config.BatchAPIConfig` and ``docs/batch-api.md``). It is *not* a
:class:`~router_stream.providers.base.ModelClient`: a batch job answers hours later, so the caller
(the exactly-once processor) parks records, keeps ``job id`` and ``custom_id → record`` in a
table, polls :meth:`BatchAPIClient.status`, and on a terminal state produces
:meth:`BatchAPIClient.results` once. The client keeps no state between calls, so a restarted
worker resumes with only a job id (and, ideally, the custom_ids it submitted).

Lifecycle::

    job_id = await client.submit([(custom_id, ChatCall(...)), ...])   # upload JSONL + create job
    st = await client.status(job_id)            # validating → in_progress → finalizing → completed
    if st.done:                                  # completed | failed | expired | cancelled
        answers = await client.results(st, expected=custom_ids)   # {custom_id: Completion | ModelError}

Like :class:`~router_stream.providers.openai.OpenAIChatClient` it holds ONE shared
``httpx.AsyncClient`` on ``httpx_aiohttp.AiohttpTransport`` and sends ``Authorization: Bearer
<key>`` read from the candidate's env var on every call. HTTP failures of the files/batches calls
raise the usual error tree (``timeout``, ``connection``, ``throttled``, ``server_error``,
``http_error``, ``malformed``, ``auth``, ``client_error``); messages are built from the candidate
name, the operation, status codes and exception class names only, never from headers or bodies.

Per-record outcomes in :meth:`~BatchAPIClient.results` (never raised, returned as values):

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

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError, RetryableModelError
from ..schemas import Usage
from .base import ChatCall, Completion
from .openai import (
    completion_from_openai,
    openai_body,
    parse_retry_after,
    shared_http_client,
    transport_error,
)
from .pricing import cost_usd

__all__ = [
    "ACTIVE_STATES",
    "BATCH_STATES",
    "TERMINAL_STATES",
    "BatchAPIClient",
    "BatchCounts",
    "BatchResults",
    "BatchStatus",
]

log = logging.getLogger(__name__)

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
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")


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


class BatchAPIClient:
    """Batch API client for one candidate (``mode: batch``); see the module doc."""

    def __init__(self, candidate_name: str, cfg: CandidateConfig) -> None:
        self.name = candidate_name
        self.cfg = cfg
        self.settings = cfg.batch_api
        self.base_url = cfg.base_url
        timeout_ms = self.settings.request_timeout_ms or cfg.request_timeout_ms
        self._timeout_s = timeout_ms / 1000.0
        self._http = shared_http_client(cfg, self._timeout_s)
        #: lines skipped as garbage over the client's life (also per call in BatchResults.skipped)
        self.skipped_lines_total = 0

    def __repr__(self) -> str:
        return f"BatchAPIClient(name={self.name!r}, url={self.base_url!r}, model={self.cfg.model!r})"

    # ---- public API ------------------------------------------------------------------------
    async def submit(
        self, items: list[tuple[str, ChatCall]], *, metadata: dict[str, str] | None = None
    ) -> str:
        """Upload ``items`` as one JSONL file and create a batch job; return the job id.

        ``custom_id`` values must be unique non-empty strings; at most ``batch_api.max_records``
        items. ``metadata`` (string → string) is stored on the job by the provider. Raises
        ``ValueError`` for bad input and the model-error tree for failed HTTP calls; a failure
        after the upload leaves an unused file behind (harmless) and no job.
        """
        if not items:
            raise ValueError("submit needs at least one item")
        if len(items) > self.settings.max_records:
            raise ValueError(f"{len(items)} items exceed batch_api.max_records={self.settings.max_records}")
        seen: set[str] = set()
        lines: list[bytes] = []
        for custom_id, call in items:
            if not isinstance(custom_id, str) or not custom_id:
                raise ValueError(f"custom_id must be a non-empty string, got {custom_id!r}")
            if custom_id in seen:
                raise ValueError(f"duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            body = openai_body(call, self.cfg.model)
            line = {"custom_id": custom_id, "method": "POST", "url": self.settings.endpoint, "body": body}
            lines.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode())
        payload = b"\n".join(lines) + b"\n"

        resp = await self._request(
            "POST",
            "/files",
            "upload",
            files={"file": ("router-stream-batch.jsonl", payload, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = self._json_field(resp, "id", "upload")
        job: dict[str, Any] = {
            "input_file_id": file_id,
            "endpoint": self.settings.endpoint,
            "completion_window": self.settings.completion_window,
        }
        if metadata:
            job["metadata"] = {str(k): str(v) for k, v in metadata.items()}
        resp = await self._request("POST", "/batches", "create batch", json=job)
        job_id = self._json_field(resp, "id", "create batch")
        log.info("%s: batch job %s submitted (%d records, file %s)", self.name, job_id, len(items), file_id)
        return job_id

    async def status(self, job_id: str) -> BatchStatus:
        """The job's current state, file ids and counts."""
        resp = await self._request("GET", f"/batches/{_path_id(job_id)}", "batch status")
        return self._parse_status(self._json(resp, "batch status"), job_id)

    async def cancel(self, job_id: str) -> BatchStatus:
        """Ask the provider to cancel the job (it passes through ``cancelling``)."""
        resp = await self._request("POST", f"/batches/{_path_id(job_id)}/cancel", "cancel batch")
        return self._parse_status(self._json(resp, "cancel batch"), job_id)

    async def results(self, job: str | BatchStatus, *, expected: Iterable[str] | None = None) -> BatchResults:
        """``{custom_id: Completion | ModelError}`` of a job in a terminal state.

        ``expected`` are the custom_ids submitted (from the caller's table); every one gets an
        entry, answered or not. Without it the input file is downloaded to learn them (one more
        download; pass ``expected`` when you have it). Raises ``RetryableModelError`` kind
        ``batch_pending`` if the job is not finished yet, and the model-error tree for failed
        downloads (nothing is half-returned: retry the call).
        """
        st = job if isinstance(job, BatchStatus) else await self.status(job)
        if not st.done:
            raise RetryableModelError(
                f"{self.name}: batch job {st.id} is {st.state}, not finished", kind="batch_pending"
            )
        messages_by_id: dict[str, list[dict[str, Any]]] = {}
        if expected is None:
            if not st.input_file_id:
                raise FatalModelError(
                    f"{self.name}: batch job {st.id} names no input file; pass expected=", kind="malformed"
                )
            messages_by_id = await self._input_messages(st.input_file_id)
            wanted = list(messages_by_id)
        else:
            wanted = list(dict.fromkeys(expected))
        wanted_set = set(wanted)
        out = BatchResults(st)

        latency_ms = 0.0
        if st.created_at is not None and st.finished_at is not None:
            latency_ms = max(0.0, (st.finished_at - st.created_at) * 1000.0)

        for file_id in (st.output_file_id, st.error_file_id):
            if not file_id:
                continue
            content = await self._download(file_id)
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
                if custom_id not in wanted_set:
                    out.unexpected += 1
                    continue
                outcome = self._line_outcome(
                    st, custom_id, line, messages_by_id.get(custom_id, []), latency_ms
                )
                previous = out.get(custom_id)
                if previous is None:
                    out[custom_id] = outcome
                else:
                    out.duplicates += 1
                    if isinstance(previous, ModelError) and isinstance(outcome, Completion):
                        out[custom_id] = outcome

        if out.skipped:
            self.skipped_lines_total += out.skipped
            log.warning(
                "%s: batch job %s: skipped %d unreadable result line(s)", self.name, st.id, out.skipped
            )
        for custom_id in wanted:
            if custom_id not in out:
                out[custom_id] = self._missing_error(st, custom_id)
        return out

    async def delete_file(self, file_id: str) -> None:
        """Delete a file at the provider (e.g. the input/output of a job whose answers are produced)."""
        await self._request("DELETE", f"/files/{_path_id(file_id)}", "delete file")

    def cost_usd(self, usage: Usage) -> float:
        """The price of one batch-answered call: the candidate's prices times ``batch_api.discount``."""
        return cost_usd(
            self.cfg, usage.prompt_tokens, usage.completion_tokens, discount=self.cfg.batch_api.discount
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- HTTP ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = self.cfg.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        timeout_s = self._timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                request = self._http.build_request(
                    method,
                    f"{self.base_url}{path}",
                    headers=self._headers(),
                    timeout=httpx.Timeout(timeout_s),
                    **kwargs,
                )
                await request.aread()  # multipart bodies go to aiohttp as bytes, with a length
                resp = await self._http.send(request)
                await resp.aread()
        except Exception as exc:
            error = transport_error(exc, f"{self.name}: {what}", timeout_s)
            if error is None:
                raise
            raise error from None
        if not 200 <= resp.status_code < 300:
            raise _status_error(
                f"{self.name}: {what}: HTTP {resp.status_code} from batch endpoint",
                resp.status_code,
                parse_retry_after(resp.headers),
            )
        return resp

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        try:
            data = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise RetryableModelError(
                f"{self.name}: {what}: malformed body (not JSON)", kind="malformed", status=resp.status_code
            ) from None
        if not isinstance(data, dict):
            raise RetryableModelError(
                f"{self.name}: {what}: malformed body (not an object)",
                kind="malformed",
                status=resp.status_code,
            )
        return data

    def _json_field(self, resp: httpx.Response, key: str, what: str) -> str:
        value = self._json(resp, what).get(key)
        if not isinstance(value, str) or not value:
            raise RetryableModelError(
                f"{self.name}: {what}: malformed body (no {key})", kind="malformed", status=resp.status_code
            )
        return value

    async def _download(self, file_id: str) -> bytes:
        resp = await self._request("GET", f"/files/{_path_id(file_id)}/content", "download file")
        return resp.content

    async def _input_messages(self, file_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for raw in (await self._download(file_id)).splitlines():
            try:
                line = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str) and line["custom_id"]:
                body = line.get("body")
                messages = body.get("messages") if isinstance(body, dict) else None
                out.setdefault(line["custom_id"], messages if isinstance(messages, list) else [])
        return out

    # ---- parsing ---------------------------------------------------------------------------
    def _parse_status(self, data: dict[str, Any], job_id: str) -> BatchStatus:
        state = data.get("status")
        if state not in BATCH_STATES:
            raise RetryableModelError(f"{self.name}: batch job {job_id}: malformed status", kind="malformed")
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

    def _line_outcome(
        self,
        st: BatchStatus,
        custom_id: str,
        line: dict[str, Any],
        messages: list[dict[str, Any]],
        latency_ms: float,
    ) -> Completion | ModelError:
        prefix = f"{self.name}: batch job {st.id}, {custom_id}"
        error = line.get("error")
        response = line.get("response")
        if isinstance(error, dict) and not isinstance(response, dict):
            code = error.get("code")
            kind, retryable = (
                _ERROR_CODES.get(code, ("line_error", False))
                if isinstance(code, str)
                else ("line_error", False)
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
            return _status_error(f"{prefix}: HTTP {status} for the line", status, None)
        try:
            return completion_from_openai(
                response.get("body"),
                name=prefix,
                default_model=self.cfg.model,
                messages=messages,
                latency_ms=latency_ms,
                status=status,
                what="line",
            )
        except RetryableModelError as exc:
            return exc

    def _missing_error(self, st: BatchStatus, custom_id: str) -> ModelError:
        prefix = f"{self.name}: batch job {st.id}, {custom_id}"
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


def _status_error(msg: str, status: int, retry_after: float | None) -> ModelError:
    """The same status → error mapping as the online client."""
    if status == 429:
        return RetryableModelError(msg, kind="throttled", status=status, retry_after=retry_after)
    if status >= 500:
        return RetryableModelError(msg, kind="server_error", status=status, retry_after=retry_after)
    if status in (408, 409):
        return RetryableModelError(msg, kind="http_error", status=status, retry_after=retry_after)
    if status in (401, 403):
        return FatalModelError(msg, kind="auth", status=status)
    return FatalModelError(msg, kind="client_error", status=status)


def _path_id(value: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        raise ValueError(f"not a provider id: {value!r}")
    return value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
