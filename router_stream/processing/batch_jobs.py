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
from ..providers.call_result import CallResult
from ..schemas import Attempt, Request, now_ms
from ..state.store import job_key, parked_key, request_key
from .answers import Answers, RoutingFacts, answer_too_large
from .partition import StateView

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
        self.answers = Answers(processor.worker_id, processor.config.allow_request_candidate_field)
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
        candidate = job["candidate"]
        client = self.clients[candidate]
        batch = {"job_id": job_id, "mode": "batch_api"}
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
                facts = RoutingFacts.from_parked(entry)
                result = results.get(rid)
                answer = result if isinstance(result, Completion) else None
                cost = client.cost_usd(answer.usage) if answer is not None else 0.0
                # the budgets' notes are the settlement's (charged per record), not the admission's
                facts.budgets = None
                if ledger is not None and entry.get("budget_holds"):
                    paid_tokens = answer.usage.total_tokens if answer is not None else 0
                    facts.budgets = ledger.settle_parked(entry["budget_holds"], state_view, cost, paid_tokens)
                # an answer no Kafka record could carry is this job's failure (paid for all the same)
                too_large = answer_too_large(answer, facts.kafka_key)
                if answer is not None and too_large is None:
                    done = CallResult(
                        answer,
                        candidate,
                        [Attempt(candidate=candidate, outcome="ok", latency_ms=elapsed)],
                        cost_usd=cost,
                        batch=batch,
                    )
                else:
                    kind = (
                        "answer_too_large"
                        if too_large
                        else (getattr(result, "kind", None) or "batch_missing")
                    )
                    error = too_large or (
                        f"{candidate}: batch job {job_id} ended {state}; no answer for this request ({kind})"
                    )
                    attempt = Attempt(
                        candidate=candidate, outcome="error", latency_ms=elapsed, error_kind=kind, error=error
                    )
                    done = CallResult(None, None, [attempt], error, kind, cost_usd=cost, batch=batch)
                response, audit, delivered = self.answers.answered(facts, done)
                key_bytes = facts.kafka_key
                outputs.append((t.responses, key_bytes, response.model_dump_json(exclude_none=True).encode()))
                outputs.append((t.audit, key_bytes, audit.model_dump_json(exclude_none=True).encode()))
                outcome = "ok" if delivered else (response.error_kind or "error")
                metrics.requests(candidate, facts.decided_by, outcome).inc()
                writes[parked_key(rid)] = None
                if self.p.config.cache.dedup_window_s > 0:
                    writes[request_key(rid)] = response.model_dump_json().encode()
                for dup_key, dup_raw in self.part.store.scan(
                    b"p:" + rid.encode("utf-8", "surrogatepass") + b"\x00"
                ):
                    dup = json.loads(dup_raw)
                    again, dup_audit = self.answers.repeat(
                        response, facts.key, dup["source"], dup["received_at"], dup["headers"]
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
