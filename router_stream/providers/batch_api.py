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
``httpx.AsyncClient`` on :class:`.aiohttp_transport.ModelTransport` and sends ``Authorization: Bearer
<key>`` read from the candidate's env var on every call. HTTP failures of the files/batches calls
raise the usual error tree (``timeout``, ``connection``, ``throttled``, ``server_error``,
``http_error``, ``malformed``, ``auth``, ``client_error``); messages are built from the candidate
name, the operation, status codes and exception class names only, never from headers or bodies.

Per-record outcomes in :meth:`~BatchAPIClient.results` are returned as values, never raised;
their kinds, and the JSONL / job-status format behind them, are in :mod:`.batch_api_format` (no
HTTP there). This module is the HTTP client only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, RetryableModelError
from ..schemas import Usage
from .base import ChatCall
from .batch_api_format import (
    ACTIVE_STATES,
    BATCH_STATES,
    TERMINAL_STATES,
    BatchCounts,
    BatchResults,
    BatchStatus,
    add_result_lines,
    input_file,
    input_messages,
    missing_error,
    parse_status,
    status_error,
)
from .dialect import parse_retry_after
from .http_transport import shared_http_client, transport_error
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

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")


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
        payload = input_file(items, self.cfg.model, self.settings.endpoint)

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
        return parse_status(self._json(resp, "batch status"), job_id, self.name)

    async def cancel(self, job_id: str) -> BatchStatus:
        """Ask the provider to cancel the job (it passes through ``cancelling``)."""
        resp = await self._request("POST", f"/batches/{_path_id(job_id)}/cancel", "cancel batch")
        return parse_status(self._json(resp, "cancel batch"), job_id, self.name)

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
            add_result_lines(
                out,
                await self._download(file_id),
                wanted_set,
                messages_by_id,
                name=self.name,
                model=self.cfg.model,
                latency_ms=latency_ms,
            )

        if out.skipped:
            self.skipped_lines_total += out.skipped
            log.warning(
                "%s: batch job %s: skipped %d unreadable result line(s)", self.name, st.id, out.skipped
            )
        for custom_id in wanted:
            if custom_id not in out:
                out[custom_id] = missing_error(st, custom_id, self.name)
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
            raise status_error(
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
        return input_messages(await self._download(file_id))


def _path_id(value: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        raise ValueError(f"not a provider id: {value!r}")
    return value
