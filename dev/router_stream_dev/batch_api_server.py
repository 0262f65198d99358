"""The Batch API half of the loopback model server: OpenAI-style ``/v1/files`` + ``/v1/batches``.

:class:`BatchAPIEmulator` is attached to every :class:`~router_stream_dev.model_server.ModelServer`
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

This module holds the files, the jobs and their clock, and the counters; the routes above are
:mod:`.batch_api_http`, the job records and the lines a finished job writes :mod:`.batch_api_jobs`.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .admin import Knobs, add_admin_routes
from .batch_api_http import add_batch_api_routes
from .batch_api_jobs import (
    TERMINAL,
    BatchAPISettings,
    Job,
    StoredFile,
    output_bytes,
    parse_input,
    result_lines,
)

if TYPE_CHECKING:  # pragma: no cover
    from .model_server import ModelServer

__all__ = ["BatchAPIEmulator", "BatchAPISettings"]


class BatchAPIEmulator:
    """Files and batch jobs of one :class:`ModelServer` (see the module doc)."""

    def __init__(self, server: ModelServer, *, complete_s: float = 1.0) -> None:
        self._server = server
        self._initial = BatchAPISettings(complete_s=complete_s).validate()
        self.settings = self._initial
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._jobs: dict[str, Job] = {}
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
            return job.obj()

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
        """The files/batches routes (:mod:`.batch_api_http`) and ``/admin/batch_api``."""
        add_batch_api_routes(app, self)
        add_admin_routes(app, "/admin/batch_api", self.knobs())

    def knobs(self) -> Knobs:
        """What ``/admin/batch_api`` reads and changes (its GET view carries the counters too)."""
        return Knobs(
            settings=lambda: self.settings,
            change=self.set,
            reset=self.reset,
            queue_field="fail_next",
            queued=self._failing_next,
            enqueue=self.fail_next,
            extra=lambda: {"stats": self.stats()},
        )

    def _failing_next(self) -> list[int]:
        with self._lock:
            return list(self._http_script)

    # ---- what the HTTP routes (:mod:`.batch_api_http`) do ------------------------------------
    @property
    def api_key(self) -> str | None:
        """The key a request must carry as ``Authorization: Bearer``; None = any request goes."""
        return self._server.api_key

    def count_request(self, auth: str | None) -> int | None:
        """Count one files/batches request; the HTTP status to fail it with, from :meth:`fail_next`."""
        with self._lock:
            self._requests += 1
            if auth:
                self._auth_present += 1
            else:
                self._auth_missing += 1
            return self._http_script.popleft() if self._http_script else None

    def upload(self, filename: str, data: bytes) -> StoredFile:
        """Store an uploaded ``purpose=batch`` input file."""
        f = self._new_file("batch", filename, data)
        with self._lock:
            self._files_uploaded += 1
            self._bytes_uploaded += len(data)
        return f

    def stored_file(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; False when there is none."""
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def create_job(
        self, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str]
    ) -> dict[str, Any] | None:
        """A new job over an uploaded batch file (its batch object); None when there is no such file."""
        with self._lock:
            f = self._files.get(input_file_id)
            if f is None or f.purpose != "batch":
                return None
            lines, errors = parse_input(f.data, endpoint)
            job = Job(
                id=f"batch_{uuid.uuid4().hex[:24]}",
                input_file_id=f.id,
                endpoint=endpoint,
                completion_window=window,
                metadata=metadata,
                settings=self.settings,
                lines=lines,
                validation_errors=errors,
                created_mono=time.monotonic(),
                created_at=int(time.time()),
            )
            job.counts["total"] = len(lines)
            self._jobs[job.id] = job
            self._jobs_created += 1
            return job.obj()

    def list_jobs(self, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The newest ``limit`` batch objects (each moved along the clock), and whether there are more."""
        with self._lock:
            jobs = list(self._jobs.values())[::-1]
            for job in jobs:
                self._advance(job)
            return [j.obj() for j in jobs[:limit]], len(jobs) > limit

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Start cancelling the job (``cancelling``, then ``cancelled``); its batch object.

        KeyError when there is no such job, ValueError when it has already ended.
        """
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            if job.state in TERMINAL:
                raise ValueError(f"cannot cancel a batch that is {job.state}")
            if job.cancel_mono is None:
                now = time.monotonic()
                job.cancel_mono = now
                job.cancel_progress = job.progress(now)
                job.stamps["cancelling_at"] = int(time.time())
                job.state = "cancelling"
                self._cancels += 1
            return job.obj()

    # ---- the clock -------------------------------------------------------------------------
    def _job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no batch job {job_id!r}") from None

    def _force(self, job_id: str, state: str, code: str | None) -> None:
        with self._lock:
            job = self._job(job_id)
            if job.state not in TERMINAL:
                job.forced = (state, code)
                self._advance(job)

    def _advance(self, job: Job) -> None:
        """Move the job along the fast clock (lazily, whenever it is looked at)."""
        if job.state in TERMINAL:
            return
        due = job.due(time.monotonic())
        if due is not None:
            self._finish(job, *due)

    def _finish(self, job: Job, state: str, code: str | None) -> None:
        s = job.settings
        wall = int(time.time())
        job.state = state
        job.stamps[f"{state}_at"] = wall
        self._jobs_by_state[state] += 1
        n = len(job.lines)
        if state == "failed":
            job.errors = job.validation_errors or [
                {
                    "code": code or s.fail_code,
                    "message": "the batch failed on purpose",
                    "param": None,
                    "line": None,
                }
            ]
            job.counts = {"total": n, "completed": 0, "failed": 0}
            return
        job.stamps.setdefault("finalizing_at", wall)
        outputs, errors, dropped = result_lines(
            job, state, lambda body: self._server.complete(body, body["messages"])
        )
        if outputs or s.garbage_lines:
            job.output_file_id = self._new_file(
                "batch_output", f"{job.id}_output.jsonl", output_bytes(outputs, s.garbage_lines)
            ).id
        if errors:
            job.error_file_id = self._new_file(
                "batch_output",
                f"{job.id}_error.jsonl",
                ("\n".join(json.dumps(e) for e in errors) + "\n").encode(),
            ).id
        job.counts = {"total": n, "completed": len(outputs) + dropped, "failed": len(errors)}
        self._lines_answered += len(outputs)
        self._lines_failed += len(errors)
        self._lines_dropped += dropped

    def _new_file(self, purpose: str, filename: str, data: bytes) -> StoredFile:
        f = StoredFile(
            id=f"file-{uuid.uuid4().hex[:24]}",
            purpose=purpose,
            filename=filename,
            data=data,
            created_at=int(time.time()),
        )
        with self._lock:
            self._files[f.id] = f
            if purpose == "batch_output":
                self._files_created += 1
        return f
