"""The Batch API half of the loopback model server: OpenAI-style ``/v1/files`` + ``/v1/batches``.

:class:`BatchAPIEmulator` is attached to every :class:`~router_stream.devtools.model_server.ModelServer`
as ``server.batch_api`` and serves, on the same port:

=========================================  ====================================================
``POST /v1/files``                         multipart upload (``purpose=batch``, ``file=<JSONL>``)
``GET /v1/files/{id}``                     file object
``GET /v1/files/{id}/content``             the bytes (inputs, outputs and error files)
``DELETE /v1/files/{id}``                  delete a file
``POST /v1/batches``                       ``{input_file_id, endpoint, completion_window, metadata}``
``GET /v1/batches``                        list (newest first)
``GET /v1/batches/{id}``                   the batch object (advances the clock, see below)
``POST /v1/batches/{id}/cancel``           ``cancelling`` → ``cancelled`` (partial output kept)
``GET|POST /admin/batch_api``              settings, ``{"reset": true}``, ``{"fail_next": [503]}``
=========================================  ====================================================

A fast clock: a job is ``validating`` for the first 10 % of ``complete_s`` (default 1 s, settable
with ``ModelServer(batch_complete_s=...)`` or :meth:`BatchAPIEmulator.set`), ``in_progress`` to
90 %, ``finalizing`` to 100 %, then takes its outcome. Every input line is answered like a normal
chat completion by the server (``"[<name>] answer to: ..."``); bad input lines (not JSON, no
``custom_id``, duplicate ids, wrong ``url``/``method``, no ``messages``) make the job ``failed``
after validation, as at OpenAI.

Knobs (:class:`BatchAPISettings`, copied into a job when it is created): ``outcome``
(``completed`` | ``failed`` | ``expired``), ``fail_code``, ``drop_custom_ids`` (lines left out
of every file: the provider "forgets" them), ``line_errors`` (``custom_id`` → an HTTP status,
written as a failed response in the error file, or an error code string such as
``"server_error"``, written as an ``error`` object), ``garbage_lines`` (unparseable lines
added to the output file), ``partial_fraction`` (share of lines answered before an expiry).
Per job, at any time: :meth:`~BatchAPIEmulator.fail_job`, :meth:`~BatchAPIEmulator.expire_job`,
:meth:`~BatchAPIEmulator.finish_job`. :meth:`~BatchAPIEmulator.fail_next` answers the next
files/batches requests with the given HTTP statuses.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .admin import Knobs, add_admin_routes
from .loopback_http import openai_error, status_error

if TYPE_CHECKING:  # pragma: no cover
    from .model_server import ModelServer

__all__ = ["BatchAPIEmulator", "BatchAPISettings"]

_TERMINAL = ("completed", "failed", "expired", "cancelled")
_OUTCOMES = ("completed", "failed", "expired")
_ENDPOINTS = ("/v1/chat/completions", "/chat/completions")
_WINDOW_S = {"24h": 86_400}


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

    def validate(self) -> "BatchAPISettings":
        if self.complete_s < 0:
            raise ValueError(f"complete_s {self.complete_s!r} is negative")
        if self.outcome not in _OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not {'|'.join(_OUTCOMES)}")
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

    def updated(self, changes: dict[str, Any]) -> "BatchAPISettings":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown batch_api setting(s): {', '.join(sorted(unknown))}")
        data = dataclasses.asdict(self)
        data.update(changes)
        data["drop_custom_ids"] = [str(x) for x in data["drop_custom_ids"]]
        data["line_errors"] = {str(k): v for k, v in dict(data["line_errors"]).items()}
        return BatchAPISettings(**data).validate()


@dataclass
class _File:
    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose}


@dataclass
class _Job:
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


class BatchAPIEmulator:
    """Files and batch jobs of one :class:`ModelServer` (see the module doc)."""

    def __init__(self, server: "ModelServer", *, complete_s: float = 1.0) -> None:
        self._server = server
        self._initial = BatchAPISettings(complete_s=complete_s).validate()
        self.settings = self._initial
        self._lock = threading.RLock()
        self._files: dict[str, _File] = {}
        self._jobs: dict[str, _Job] = {}
        self._http_script: collections.deque[int] = collections.deque()
        self.reset_stats()

    # ---- control ---------------------------------------------------------------------------
    def set(self, **changes: Any) -> BatchAPISettings:
        """Change settings (fields of :class:`BatchAPISettings`) for jobs created from now on."""
        with self._lock:
            self.settings = self.settings.updated(changes)
            return self.settings

    def reset(self) -> BatchAPISettings:
        """Back to the start settings; clears :meth:`fail_next` (files and jobs stay)."""
        with self._lock:
            self.settings = self._initial
            self._http_script.clear()
            return self.settings

    def fail_next(self, *statuses: int) -> None:
        """Answer the next files/batches requests with these HTTP statuses, one each."""
        with self._lock:
            for s in statuses:
                if not 100 <= int(s) <= 599:
                    raise ValueError(f"{s!r} is not an HTTP status")
                self._http_script.append(int(s))

    def fail_job(self, job_id: str, code: str | None = None) -> None:
        """Make the job ``failed`` now (job error ``code``, default ``settings.fail_code``)."""
        self._force(job_id, "failed", code)

    def expire_job(self, job_id: str) -> None:
        """Make the job ``expired`` now (``partial_fraction`` of its lines answered)."""
        self._force(job_id, "expired", None)

    def finish_job(self, job_id: str) -> None:
        """Make the job reach its configured outcome now."""
        with self._lock:
            job = self._job(job_id)
            self._force(job_id, job.settings.outcome, None)

    def job(self, job_id: str) -> dict[str, Any]:
        """The batch object, as ``GET /v1/batches/{id}`` would answer it."""
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            return self._obj(job)

    def job_ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._files[file_id].data

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "auth_present": self._auth_present,
                "auth_missing": self._auth_missing,
                "files_uploaded": self._files_uploaded,
                "bytes_uploaded": self._bytes_uploaded,
                "files_created": self._files_created,
                "files": len(self._files),
                "jobs_created": self._jobs_created,
                "jobs": len(self._jobs),
                "jobs_by_state": dict(self._jobs_by_state),
                "lines_answered": self._lines_answered,
                "lines_failed": self._lines_failed,
                "lines_dropped": self._lines_dropped,
                "cancel_requests": self._cancels,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._auth_present = 0
            self._auth_missing = 0
            self._files_uploaded = 0
            self._bytes_uploaded = 0
            self._files_created = 0
            self._jobs_created = 0
            self._jobs_by_state: collections.Counter[str] = collections.Counter()
            self._lines_answered = 0
            self._lines_failed = 0
            self._lines_dropped = 0
            self._cancels = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._h_upload)
        app.router.add_get("/v1/files/{file_id}", self._h_file)
        app.router.add_get("/v1/files/{file_id}/content", self._h_file_content)
        app.router.add_delete("/v1/files/{file_id}", self._h_file_delete)
        app.router.add_post("/v1/batches", self._h_create)
        app.router.add_get("/v1/batches", self._h_list)
        app.router.add_get("/v1/batches/{batch_id}", self._h_get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._h_cancel)
        add_admin_routes(app, "/admin/batch_api", self.knobs())

    def knobs(self) -> Knobs:
        """What ``/admin/batch_api`` reads and changes (its GET view carries the counters too)."""
        return Knobs(settings=lambda: self.settings, change=self.set, reset=self.reset, queue_field="fail_next",
                     queued=self._failing_next, enqueue=self.fail_next, extra=lambda: {"stats": self.stats()})

    def _failing_next(self) -> list[int]:
        with self._lock:
            return list(self._http_script)

    # ---- handlers --------------------------------------------------------------------------
    def _gate(self, request: web.Request) -> web.Response | None:
        """Count the request; answer a scripted failure or a 401; None = go on."""
        auth = request.headers.get("Authorization")
        with self._lock:
            self._requests += 1
            if auth:
                self._auth_present += 1
            else:
                self._auth_missing += 1
            scripted = self._http_script.popleft() if self._http_script else None
        if scripted is not None:
            return status_error(scripted, retry_after="1")
        api_key = self._server.api_key
        if api_key is not None and auth != f"Bearer {api_key}":
            return openai_error(401, "invalid API key", "invalid_request_error")
        return None

    async def _h_upload(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        if not request.content_type.startswith("multipart/"):
            return openai_error(400, "expected multipart/form-data", "invalid_request_error")
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if purpose != "batch":
            return openai_error(400, "purpose must be 'batch'", "invalid_request_error")
        if upload is None or isinstance(upload, str) or not hasattr(upload, "file"):
            return openai_error(400, "'file' must be a file part", "invalid_request_error")
        data = upload.file.read()
        f = self._new_file("batch", upload.filename or "upload.jsonl", data)
        with self._lock:
            self._files_uploaded += 1
            self._bytes_uploaded += len(data)
        return web.json_response(f.obj())

    async def _h_file(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        with self._lock:
            f = self._files.get(request.match_info["file_id"])
        return web.json_response(f.obj()) if f else openai_error(404, "no such file", "invalid_request_error")

    async def _h_file_content(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        with self._lock:
            f = self._files.get(request.match_info["file_id"])
        if f is None:
            return openai_error(404, "no such file", "invalid_request_error")
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def _h_file_delete(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        file_id = request.match_info["file_id"]
        with self._lock:
            f = self._files.pop(file_id, None)
        if f is None:
            return openai_error(404, "no such file", "invalid_request_error")
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def _h_create(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return openai_error(400, "body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return openai_error(400, "expected a JSON object", "invalid_request_error")
        endpoint = body.get("endpoint")
        window = body.get("completion_window")
        metadata = body.get("metadata") or {}
        if endpoint not in _ENDPOINTS:
            return openai_error(400, f"endpoint must be one of {', '.join(_ENDPOINTS)}", "invalid_request_error")
        if window not in _WINDOW_S:
            return openai_error(400, "completion_window must be '24h'", "invalid_request_error")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            return openai_error(400, "metadata must map strings to strings", "invalid_request_error")
        with self._lock:
            f = self._files.get(str(body.get("input_file_id")))
            if f is None or f.purpose != "batch":
                return openai_error(400, "input_file_id is not an uploaded batch file", "invalid_request_error")
            lines, errors = _parse_input(f.data, endpoint)
            job = _Job(
                id=f"batch_{uuid.uuid4().hex[:24]}", input_file_id=f.id, endpoint=endpoint,
                completion_window=window, metadata=dict(metadata), settings=self.settings,
                lines=lines, validation_errors=errors, created_mono=time.monotonic(),
                created_at=int(time.time()),
            )
            job.counts["total"] = len(lines)
            self._jobs[job.id] = job
            self._jobs_created += 1
            return web.json_response(self._obj(job))

    async def _h_list(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        try:
            limit = max(1, min(100, int(request.query.get("limit", "20"))))
        except ValueError:
            return openai_error(400, "limit must be an integer", "invalid_request_error")
        with self._lock:
            jobs = list(self._jobs.values())[::-1]
            for job in jobs:
                self._advance(job)
            data = [self._obj(j) for j in jobs[:limit]]
        return web.json_response({"object": "list", "data": data, "has_more": len(jobs) > limit})

    async def _h_get(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        with self._lock:
            job = self._jobs.get(request.match_info["batch_id"])
            if job is None:
                return openai_error(404, "no such batch", "invalid_request_error")
            self._advance(job)
            return web.json_response(self._obj(job))

    async def _h_cancel(self, request: web.Request) -> web.Response:
        if (denied := self._gate(request)) is not None:
            return denied
        with self._lock:
            job = self._jobs.get(request.match_info["batch_id"])
            if job is None:
                return openai_error(404, "no such batch", "invalid_request_error")
            self._advance(job)
            if job.state in _TERMINAL:
                return openai_error(400, f"cannot cancel a batch that is {job.state}", "invalid_request_error")
            if job.cancel_mono is None:
                now = time.monotonic()
                job.cancel_mono = now
                job.cancel_progress = self._progress(job, now)
                job.stamps["cancelling_at"] = int(time.time())
                job.state = "cancelling"
                self._cancels += 1
            return web.json_response(self._obj(job))

    # ---- the clock -------------------------------------------------------------------------
    def _job(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no batch job {job_id!r}") from None

    def _force(self, job_id: str, state: str, code: str | None) -> None:
        with self._lock:
            job = self._job(job_id)
            if job.state not in _TERMINAL:
                job.forced = (state, code)
                self._advance(job)

    @staticmethod
    def _progress(job: _Job, now: float) -> float:
        c = job.settings.complete_s
        if c <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - job.created_mono - 0.1 * c) / (0.8 * c)))

    def _advance(self, job: _Job) -> None:
        """Move the job along the fast clock (lazily, whenever it is looked at)."""
        if job.state in _TERMINAL:
            return
        now = time.monotonic()
        c = job.settings.complete_s
        if job.forced is not None:
            self._finish(job, *job.forced)
            return
        if job.cancel_mono is not None:
            if now - job.cancel_mono >= min(0.05, 0.1 * c):
                self._finish(job, "cancelled", None)
            return
        t = now - job.created_mono
        if t < 0.1 * c:
            job.state = "validating"
            return
        if job.validation_errors:
            self._finish(job, "failed", None)
            return
        job.stamps.setdefault("in_progress_at", int(time.time()))
        if t < 0.9 * c:
            job.state = "in_progress"
            job.counts["completed"] = int(len(job.lines) * self._progress(job, now))
            return
        job.stamps.setdefault("finalizing_at", int(time.time()))
        if t < c:
            job.state = "finalizing"
            return
        self._finish(job, job.settings.outcome, None)

    def _finish(self, job: _Job, state: str, code: str | None) -> None:
        s = job.settings
        wall = int(time.time())
        job.state = state
        job.stamps[f"{state}_at"] = wall
        self._jobs_by_state[state] += 1
        n = len(job.lines)
        if state == "failed":
            job.errors = job.validation_errors or [
                {"code": code or s.fail_code, "message": "the batch failed on purpose", "param": None,
                 "line": None}]
            job.counts = {"total": n, "completed": 0, "failed": 0}
            return
        job.stamps.setdefault("finalizing_at", wall)
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
                    body = {"error": {"message": f"fault {err} on purpose", "type": "invalid_request_error"
                                      if err < 500 else "server_error", "code": None}}
                    errors.append(_line(cid, {"status_code": err, "request_id": _req_id(), "body": body}, None))
                else:
                    errors.append(_line(cid, None, {"code": err, "message": "line failed on purpose"}))
            else:
                body = line["body"]
                answer = self._server.complete(body, body["messages"])
                outputs.append(_line(cid, {"status_code": 200, "request_id": _req_id(), "body": answer}, None))
        if outputs or s.garbage_lines:
            rows = [json.dumps(o) for o in outputs]
            for i in range(s.garbage_lines):
                rows.insert(min(len(rows), 1 + i), "{not json at all" if i % 2 == 0 else '"just a string"')
            job.output_file_id = self._new_file("batch_output", f"{job.id}_output.jsonl",
                                                ("\n".join(rows) + "\n").encode()).id
        if errors:
            job.error_file_id = self._new_file("batch_output", f"{job.id}_error.jsonl",
                                               ("\n".join(json.dumps(e) for e in errors) + "\n").encode()).id
        job.counts = {"total": n, "completed": len(outputs) + dropped, "failed": len(errors)}
        self._lines_answered += len(outputs)
        self._lines_failed += len(errors)
        self._lines_dropped += dropped

    def _new_file(self, purpose: str, filename: str, data: bytes) -> _File:
        f = _File(id=f"file-{uuid.uuid4().hex[:24]}", purpose=purpose, filename=filename, data=data,
                  created_at=int(time.time()))
        with self._lock:
            self._files[f.id] = f
            if purpose == "batch_output":
                self._files_created += 1
        return f

    def _obj(self, job: _Job) -> dict[str, Any]:
        window_s = _WINDOW_S.get(job.completion_window, 86_400)
        stamps = {k: job.stamps.get(k) for k in ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                                                  "expired_at", "cancelling_at", "cancelled_at")}
        return {
            "id": job.id, "object": "batch", "endpoint": job.endpoint,
            "errors": {"object": "list", "data": job.errors} if job.errors else None,
            "input_file_id": job.input_file_id, "completion_window": job.completion_window,
            "status": job.state, "output_file_id": job.output_file_id, "error_file_id": job.error_file_id,
            "created_at": job.created_at, "expires_at": job.created_at + window_s, **stamps,
            "request_counts": dict(job.counts), "metadata": dict(job.metadata),
        }


def _parse_input(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response,
            "error": error}


def _req_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"

