"""The records a consumed request ends as — its Response and Audit, or a DeadLetter — built here
for every path.

A request is answered online (one call, or a fallback chain, with or without a micro-batch:
``CallResult.batch``), by a cascade (``CascadeResult.cascade``), by a Batch API job
(:mod:`.batch_jobs`, minutes or hours later, from the parked entry), or again from the first
answer when it repeats (dedup). Each path gathers the same facts — how the request was routed
(:class:`RoutingFacts`) and what the call gave (:class:`~router_stream.providers.resilience.CallResult`)
— and :class:`Answers` turns them into records, so a field added to the Response or the Audit is
filled the same way on every path, and the audit of a Batch API answer reads like an online one.

Also here: what fits in one produced record (:func:`output_budget`, :func:`answer_too_large`) and
the dead letter of a record that is no request (:meth:`Answers.dead_letter`). Nothing here talks
to Kafka or counts metrics; the callers do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..providers.call_result import CallResult
from ..schemas import Audit, CachedDecision, DeadLetter, Request, Response, Verdict, now_ms
from .intake import Poison
from .request_notes import audit_notes

__all__ = [
    "DEAD_LETTER_COPY_BYTES",
    "DEAD_LETTER_KEY_COPY_BYTES",
    "MAX_PRODUCED_RECORD_BYTES",
    "Answer",
    "Answers",
    "RoutingFacts",
    "answer_too_large",
    "output_budget",
    "sticky_note",
]

log = logging.getLogger(__name__)

#: aiokafka's default ``max_request_size`` (not changed by this project): one produced record
#: (key, value and headers) must fit in it, or the send fails and the partition could never move
MAX_PRODUCED_RECORD_BYTES = 1_048_576
#: what a response or audit value may take, leaving room for the key, headers and record overhead
_HEADROOM_BYTES = 16 * 1024

#: how much of a dead record's value (key) a dead letter copies: with base64 and the other fields
#: it stays far below the producer's 1 MiB record limit whatever the input was
DEAD_LETTER_COPY_BYTES = 256 * 1024
DEAD_LETTER_KEY_COPY_BYTES = 16 * 1024


def output_budget(key: bytes | None) -> int:
    """The largest value (bytes) that can be produced with ``key``."""
    return MAX_PRODUCED_RECORD_BYTES - len(key or b"") - _HEADROOM_BYTES


def answer_too_large(completion: Any, key: bytes | None) -> str | None:
    """Why an answer cannot be delivered, or None. The response (and the dedup entry in the
    changelog) carry the answer as JSON, its text twice (``output`` and ``message.content``): at
    most ~6 bytes per character (``\\u00XX``), so short text-only answers are never measured; a
    long one, or one with tool calls, several choices, logprobs or audio, is measured as the
    JSON it will become."""
    if completion is None:
        return None
    budget = output_budget(key)
    message = completion.message or {}
    plain = (
        completion.choices is None
        and completion.logprobs is None
        and not message.get("tool_calls")
        and not message.get("audio")
    )
    if plain and len(completion.text) * 12 + 4096 <= budget:
        return None
    fields = completion.answer_fields()
    answer = [fields["output"], fields["message"], fields["choices"], fields["logprobs"]]
    size = len(json.dumps(answer, ensure_ascii=False).encode("utf-8", "surrogatepass")) + 2048
    if size <= budget:
        return None
    return (
        f"the answer is about {size} bytes as JSON, more than one Kafka record can carry "
        f"({budget} bytes with this key); ask for fewer max_tokens"
    )


def sticky_note(cached: CachedDecision, received_ms: int, verdicts: list[Verdict]) -> dict[str, Any]:
    """The audit's account of a sticky decision that applied: which strategy made it, when, and
    which strategies ran (and abstained) before it on this request."""
    ran_before = [v.strategy for v in verdicts[:-1]]
    return {
        "strategy": cached.decided_by,
        "candidate": cached.candidate,
        "decided_at": cached.decided_at,
        "age_ms": max(0, received_ms - cached.decided_at),
        "ttl_s": cached.ttl_s,
        "ran_before": ran_before,
    }


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None


def _cut(raw: bytes | None, limit: int) -> tuple[bytes | None, bool]:
    if raw is None or len(raw) <= limit:
        return raw, False
    return raw[:limit], True


@dataclass(slots=True)
class RoutingFacts:
    """How a request was routed, as its audit tells it: gathered by the handler before the call,
    kept in the parked entry while a Batch API job runs (:meth:`parked_entry`, :meth:`from_parked`)."""

    request: Request
    key: str  #: the scope key (sticky decisions, ordering)
    kafka_key: bytes | None  #: the input record's key: the outputs' key, and their size limit
    chosen: str | None
    decided_by: str
    verdicts: list[Verdict]
    cache_hit: bool
    sticky: dict[str, Any] | None  #: :func:`sticky_note` when a sticky decision applied
    source: dict[str, Any]  #: ``{topic, partition, offset}`` of the input record
    received_at: int
    headers: dict[str, str]  #: the trace headers (:mod:`.trace`)
    budgets: list[dict[str, Any]] | None = None  #: the budgets' notes (admission, then settlement)

    def parked_entry(self, budget_holds: list[dict[str, Any]] | None) -> bytes:
        """The ``j:`` entry of a request waiting for a Batch API job (``chosen`` is the candidate
        whose job answers it); ``job`` is filled in when the job is submitted."""
        return json.dumps(
            {
                "request": self.request.model_dump(mode="json", exclude_none=True),
                "key": self.key,
                "kafka_key_b64": _b64(self.kafka_key),
                "chosen": self.chosen,
                "decided_by": self.decided_by,
                "verdicts": [v.model_dump(mode="json") for v in self.verdicts],
                "cache_hit": self.cache_hit,
                "sticky": self.sticky,
                "budget_holds": budget_holds,
                "budgets": self.budgets,
                "received_at": self.received_at,
                "source": self.source,
                "headers": self.headers,
                "job": None,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_parked(cls, entry: dict[str, Any]) -> RoutingFacts:
        """The facts of a parked entry (:meth:`parked_entry`, already parsed)."""
        raw_key = entry.get("kafka_key_b64")
        return cls(
            request=Request.model_validate(entry["request"]),
            key=entry["key"],
            kafka_key=base64.b64decode(raw_key) if raw_key else None,
            chosen=entry["chosen"],
            decided_by=entry["decided_by"],
            verdicts=[Verdict.model_validate(v) for v in entry["verdicts"]],
            cache_hit=entry["cache_hit"],
            sticky=entry.get("sticky"),
            source=entry["source"],
            received_at=entry["received_at"],
            headers=entry["headers"],
            budgets=entry.get("budgets"),
        )


class SourceRecord(Protocol):
    """Where a dead record came from (the handler's ``Source``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Answer(NamedTuple):
    """A request's two records, and whether the response carries an answer."""

    response: Response
    audit: Audit
    delivered: bool


class Answers:
    """Builds the records of one worker's requests (its ``worker_id`` is in every audit)."""

    def __init__(self, worker_id: str, candidate_field: str | None) -> None:
        self.worker_id = worker_id
        self.candidate_field = candidate_field  #: ``allow_request_candidate_field``, for the notes

    def answered(self, facts: RoutingFacts, result: CallResult) -> Answer:
        """The response and audit of a request that was called (or refused before the call: a
        result without attempts). An answer no Kafka record could carry becomes an error
        response (``answer_too_large``); the audit still says who served it, since it was paid."""
        completion = result.completion
        error = result.error if completion is None else None
        error_kind = result.error_kind if completion is None else None
        too_large = answer_too_large(completion, facts.kafka_key)
        if too_large is not None:  # served, but no Kafka record could carry it: an error response
            src = facts.source
            log.warning("%s[%d]@%d: %s", src["topic"], src["partition"], src["offset"], too_large)
            completion, error, error_kind = None, too_large, "answer_too_large"
        batch = getattr(result, "batch", None)
        response = Response(
            request_id=facts.request.request_id,
            candidate=result.served_by if result.completion is not None else facts.chosen,
            latency_ms=round(sum(a.latency_ms for a in result.attempts), 3),
            error=error,
            error_kind=error_kind,
            batch=batch,
            **(completion.answer_fields() if completion is not None else {}),
        )
        ignored, notes = audit_notes(facts.request, self.candidate_field)
        audit = self._audit(
            facts.source,
            facts.received_at,
            facts.headers,
            request_id=facts.request.request_id,
            key=facts.key,
            chosen=facts.chosen,
            served_by=result.served_by if result.completion is not None else None,
            decided_by=facts.decided_by,
            verdicts=facts.verdicts,
            cache_hit=facts.cache_hit,
            sticky=facts.sticky,
            attempts=list(result.attempts),
            estimated_cost_usd=result.cost_usd,
            error=error,
            batch=batch,
            cascade=getattr(result, "cascade", None),
            ignored_fields=ignored,
            notes=notes,
            budgets=facts.budgets,
        )
        return Answer(response, audit, completion is not None)

    def repeat(
        self,
        first: Response,
        key: str,
        source: dict[str, Any],
        received_at: int,
        headers: dict[str, str],
        request: Request | None = None,
    ) -> tuple[Response, Audit]:
        """A repeat of an answered request (a producer retry): the first response again, marked
        ``duplicate``, and an audit of the repeat (``decided_by: "duplicate"``); ``request``, when
        the repeat's own request is at hand, adds its notes on ignored fields."""
        response = first.model_copy(update={"duplicate": True, "produced_at": now_ms()})
        ignored, notes = audit_notes(request, self.candidate_field) if request is not None else (None, None)
        audit = self._audit(
            source,
            received_at,
            headers,
            request_id=first.request_id,
            key=key,
            chosen=first.candidate,
            served_by=first.candidate,
            decided_by="duplicate",
            duplicate=True,
            error=first.error,
            ignored_fields=ignored,
            notes=notes,
        )
        return response, audit

    def control(
        self,
        control_id: str,
        scope_key: str,
        note: dict[str, Any],
        source: dict[str, Any],
        received_at: int,
        headers: dict[str, str],
    ) -> Audit:
        """The audit of an applied control record (``decided_by: "control"``; no response)."""
        return self._audit(
            source,
            received_at,
            headers,
            request_id=control_id,
            key=scope_key,
            decided_by="control",
            control=note,
        )

    def _audit(
        self, source: dict[str, Any], received_at: int, headers: dict[str, str], **fields: Any
    ) -> Audit:
        """An audit record by this worker of the input record at ``source`` (whatever its path)."""
        return Audit(
            worker_id=self.worker_id, source=source, received_at=received_at, headers=headers, **fields
        )

    def dead_letter(self, source: SourceRecord, poison: Poison, error_class: str) -> DeadLetter:
        """The record as a dead letter, with a copy of its key and value cut to
        ``DEAD_LETTER_COPY_BYTES``: base64 makes a copy a third larger, and a dead letter over the
        producer's record limit could never be produced (its partition would stall). The value's
        size and SHA-256 identify it in the input topic when the copy is cut."""
        key, key_cut = _cut(source.key, DEAD_LETTER_KEY_COPY_BYTES)
        value, value_cut = _cut(source.value, DEAD_LETTER_COPY_BYTES)
        raw = source.value
        return DeadLetter(
            reason=poison.reason,
            message=poison.message,
            error_class=error_class,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key_b64=_b64(key),
            value_b64=_b64(value),
            key_truncated=key_cut,
            value_truncated=value_cut,
            value_bytes=len(raw) if raw is not None else None,
            value_sha256=hashlib.sha256(raw).hexdigest() if raw is not None else None,
            request_id=poison.request_id,
            worker_id=self.worker_id,
        )
