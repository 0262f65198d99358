"""Batch API mode: requests parked in the partition's state, answered when their job completes.

For candidates with ``mode: batch`` the handler does not call the model; it *parks* the request
(``j:<request_id>`` in the partition store, written through the changelog in the same
transaction as the consumed offset). One :class:`PartitionJobs` per partition then:

1. **submits** parked requests without a job (per candidate, when ``max_records`` are waiting or
   the oldest has waited ``max_wait_ms``) and records the job id — ``b:<job>`` and the job id in
   each ``j:`` entry — in a transaction on the partition's producer;
2. **polls** every recorded job; when it is terminal, produces the responses and audit records
   (and the answers of repeats parked as ``p:`` entries), deletes the ``j:``/``p:``/``b:``
   entries and writes the dedup entries, all in one transaction.

A restart restores the entries from the changelog, so polling resumes and nothing is
resubmitted. A crash after a job was created but before its id was committed submits those
requests again in a new job (the first job's answers are never read): outputs stay exactly
once, the provider may bill twice for that window. State changes run under the partition's
state lock, so a batch being handled never races a job completion.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..errors import ModelError
from ..providers.base import ChatCall, Completion
from ..providers.batch_api import TERMINAL_STATES as TERMINAL
from ..schemas import Attempt, Audit, Request, Response, Verdict, now_ms
from ..state.store import job_key, parked_key, request_key
from .handler import StateView, answer_too_large
from .request_notes import audit_notes

if TYPE_CHECKING:
    from .partition import Partition
    from .processor import Processor

log = logging.getLogger(__name__)


class PartitionJobs:
    """The submit/poll loop of one input partition."""

    def __init__(self, processor: Processor, part: Partition, clients: dict[str, Any]) -> None:
        self.p = processor
        self.part = part
        self.clients = clients
        cfgs = processor.config.candidates
        self.interval = min(cfgs[c].batch_api.poll_interval_ms for c in clients) / 1000

    async def run(self) -> None:
        while True:
            try:
                await self.submit_due()
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network trouble: log and try again next round
                log.warning("batch jobs of %s: %s: %s", self.part.tp, type(exc).__name__, exc)
            await asyncio.sleep(self.interval)

    # ---------------------------------------------------------------- submit
    async def submit_due(self) -> None:
        waiting: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        for key, value in self.part.store.scan(b"j:"):
            entry = json.loads(value)
            if entry.get("job") is None and entry["chosen"] in self.clients:
                waiting.setdefault(entry["chosen"], []).append((key, entry))
        now = now_ms()
        for candidate, entries in waiting.items():
            cfg = self.p.config.candidates[candidate].batch_api
            oldest = min(e["received_at"] for _, e in entries)
            if len(entries) < cfg.max_records and now - oldest < cfg.max_wait_ms:
                continue
            for start in range(0, len(entries), cfg.max_records):
                await self._submit(candidate, entries[start : start + cfg.max_records])

    async def _submit(self, candidate: str, entries: list[tuple[bytes, dict[str, Any]]]) -> None:
        items = []
        for _, entry in entries:
            request = Request.model_validate(entry["request"])
            items.append(
                (
                    request.request_id,
                    ChatCall(
                        request.chat_messages(),
                        request.call_params(),
                        self.p.config.candidates[candidate].request_timeout_ms / 1000,
                    ),
                )
            )
        job_id = await self.clients[candidate].submit(items)
        log.info(
            "partition %s: submitted batch job %s to %s with %d requests",
            self.part.tp,
            job_id,
            candidate,
            len(items),
        )
        writes: dict[bytes, bytes | None] = {}
        async with self.part.gate.exclusive():
            for key, entry in entries:
                current = self.part.store.get(key)
                if current is None or json.loads(current).get("job") is not None:
                    continue
                entry["job"] = job_id
                writes[key] = json.dumps(entry, separators=(",", ":")).encode()
            writes[job_key(job_id)] = json.dumps(
                {"candidate": candidate, "submitted_at": now_ms(), "request_ids": [rid for rid, _ in items]}
            ).encode()
            await self.part.transactions.transact([], writes)

    # ---------------------------------------------------------------- poll and complete
    async def poll(self) -> None:
        for key, value in self.part.store.scan(b"b:"):
            job = json.loads(value)
            job_id = key[2:].decode()
            client = self.clients.get(job["candidate"])
            if client is None:
                continue
            status = await client.status(job_id)
            if status.state not in TERMINAL:
                continue
            # every terminal state: an expired or cancelled job keeps the answers it finished
            results = await client.results(status, expected=job["request_ids"])
            await self._complete(job_id, job, status.state, results)

    async def _complete(
        self, job_id: str, job: dict[str, Any], state: str, results: dict[str, Completion | ModelError]
    ) -> None:
        cand_cfg = self.p.config.candidates[job["candidate"]]
        discount = cand_cfg.batch_api.discount
        t = self.p.topics
        async with self.part.gate.exclusive():
            if self.part.store.get(job_key(job_id)) is None:
                return  # completed already (e.g. by a previous round that committed)
            outputs: list[tuple[str, bytes | None, bytes]] = []
            writes: dict[bytes, bytes | None] = {job_key(job_id): None}
            ledger = self.p.handler.ledger
            state_view = StateView(self.part.store, writes)  # budget spend: read the writes made so far
            elapsed = max(0.0, now_ms() - job["submitted_at"])
            for rid in job["request_ids"]:
                raw = self.part.store.get(parked_key(rid))
                if raw is None:
                    continue
                entry = json.loads(raw)
                result = results.get(rid)
                key_bytes = _unb64(entry.get("kafka_key_b64"))
                cost = 0.0
                if isinstance(result, Completion):
                    usage = result.usage
                    cost = (
                        discount
                        * (
                            usage.prompt_tokens * cand_cfg.price_input_per_1k
                            + usage.completion_tokens * cand_cfg.price_output_per_1k
                        )
                        / 1000
                    )
                budget_notes = None
                if ledger is not None and entry.get("budget_holds"):  # charged per record
                    paid_tokens = result.usage.total_tokens if isinstance(result, Completion) else 0
                    budget_notes = ledger.settle_parked(entry["budget_holds"], state_view, cost, paid_tokens)
                too_large = answer_too_large(result, key_bytes) if isinstance(result, Completion) else None
                if isinstance(result, Completion) and too_large is None:
                    response = Response(
                        request_id=rid,
                        candidate=job["candidate"],
                        latency_ms=elapsed,
                        batch={"job_id": job_id, "mode": "batch_api"},
                        **result.answer_fields(),
                    )
                    attempt = Attempt(candidate=job["candidate"], outcome="ok", latency_ms=elapsed)
                    error = None
                else:  # no answer, or one no Kafka record could carry (paid for all the same)
                    kind = (
                        "answer_too_large"
                        if too_large
                        else (getattr(result, "kind", None) or "batch_missing")
                    )
                    error = too_large or (
                        f"{job['candidate']}: batch job {job_id} ended {state}; "
                        f"no answer for this request ({kind})"
                    )
                    response = Response(
                        request_id=rid,
                        candidate=job["candidate"],
                        latency_ms=elapsed,
                        error=error,
                        error_kind=kind,
                        batch={"job_id": job_id, "mode": "batch_api"},
                    )
                    attempt = Attempt(
                        candidate=job["candidate"],
                        outcome="error",
                        latency_ms=elapsed,
                        error_kind=kind,
                        error=error,
                    )
                ignored, notes = audit_notes(
                    Request.model_validate(entry["request"]), self.p.config.allow_request_candidate_field
                )
                audit = Audit(
                    request_id=rid,
                    key=entry["key"],
                    chosen=entry["chosen"],
                    served_by=job["candidate"] if error is None else None,
                    decided_by=entry["decided_by"],
                    verdicts=[Verdict.model_validate(v) for v in entry["verdicts"]],
                    cache_hit=entry["cache_hit"],
                    sticky=entry.get("sticky"),
                    attempts=[attempt],
                    estimated_cost_usd=cost,
                    error=error,
                    worker_id=self.p.worker_id,
                    source=entry["source"],
                    received_at=entry["received_at"],
                    headers=entry["headers"],
                    batch=response.batch,
                    budgets=budget_notes,
                    ignored_fields=ignored,
                    notes=notes,
                )
                outputs.append((t.responses, key_bytes, response.model_dump_json(exclude_none=True).encode()))
                outputs.append((t.audit, key_bytes, audit.model_dump_json(exclude_none=True).encode()))
                metrics.requests(job["candidate"], entry["decided_by"], "ok" if error is None else kind).inc()
                writes[parked_key(rid)] = None
                if self.p.config.cache.dedup_window_s > 0:
                    writes[request_key(rid)] = response.model_dump_json().encode()
                for dup_key, dup_raw in self.part.store.scan(
                    b"p:" + rid.encode("utf-8", "surrogatepass") + b"\x00"
                ):
                    dup = json.loads(dup_raw)
                    again = response.model_copy(update={"duplicate": True, "produced_at": now_ms()})
                    dup_audit = Audit(
                        request_id=rid,
                        key=entry["key"],
                        chosen=response.candidate,
                        served_by=response.candidate,
                        decided_by="duplicate",
                        duplicate=True,
                        worker_id=self.p.worker_id,
                        source=dup["source"],
                        received_at=dup["received_at"],
                        headers=dup["headers"],
                        error=error,
                    )
                    outputs.append(
                        (t.responses, key_bytes, again.model_dump_json(exclude_none=True).encode())
                    )
                    outputs.append(
                        (t.audit, key_bytes, dup_audit.model_dump_json(exclude_none=True).encode())
                    )
                    writes[dup_key] = None
            await self.part.transactions.transact(outputs, writes)
        log.info(
            "partition %s: batch job %s %s, %d answers produced",
            self.part.tp,
            job_id,
            state,
            len(outputs) // 2,
        )


def _unb64(value: str | None) -> bytes | None:
    import base64

    return base64.b64decode(value) if value else None
