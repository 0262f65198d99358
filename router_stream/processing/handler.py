"""What happens to one consumed record, apart from Kafka: classify, dedup, route, call, record.

The handler reads local state through a :class:`StateView` (committed store + this batch's
uncommitted writes) and returns an :class:`Outcome`: the records to produce and the state
writes to make, all of which the processor commits in one Kafka transaction. Nothing here
raises for a bad record: each record ends as a response (maybe with ``error``) or a dead letter;
an authorised control record (``control.py``) ends as an audit record only. The records themselves
are built by :mod:`.answers`, as they are for Batch API answers; :class:`Source`, :class:`StateView`
and :class:`Outcome` live in :mod:`.partition` with the other records the path passes around.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import metrics
from ..budgets import Ledger
from ..config import RouterConfig
from ..providers.call_result import CallResult
from ..routing.base import RoutingContext
from ..routing.cascade import CascadePlan
from ..routing.expressions import Expression
from ..routing.pipeline import Pipeline
from ..schemas import CachedDecision, Request, Response, Verdict, now_ms
from ..state import keystate
from ..state.store import key_state_key, parked_dup_key, parked_key, request_key
from .answers import Answers, RoutingFacts, sticky_note
from .cascade_runner import Dispatcher, run_cascade
from .control import ControlCommand, ControlGate, apply_to_state
from .intake import Poison, classify, context_limit
from .partition import Outcome, Source, StateView
from .request_notes import model_names_candidate
from .scope import kafka_key_text, scope_key
from .trace import trace_headers

__all__ = ["Handler", "kafka_key_text", "request_override"]

log = logging.getLogger(__name__)


def request_override(config: RouterConfig, request: Request) -> Verdict | None:
    """The verdict on a request naming its own candidate (``allow_request_candidate_field``):
    ``chose`` when the field names a candidate, ``miss`` when it names something else, ``None``
    when the option is off or the field absent. Checked before the cache and the strategies.
    With the option set to ``model``, a chat-completions body's top-level ``model`` counts as
    ``fields.model`` when that is absent (see :mod:`.request_notes`)."""
    field_name = config.allow_request_candidate_field
    if not field_name:
        return None
    if field_name in request.fields:
        asked, where = request.fields[field_name], f"fields.{field_name}"
    elif model_names_candidate(request, field_name):
        asked, where = request.top_level("model"), "model"
    else:
        return None
    if isinstance(asked, str) and asked in config.candidates:
        return Verdict(
            strategy="request", outcome="chose", candidate=asked, reason=f"{where} allowed by config"
        )
    return Verdict(
        strategy="request", outcome="miss", candidate=str(asked)[:100], reason=f"{where} names no candidate"
    )


class Handler:
    """Turns a record into an :class:`Outcome`; one instance per worker, shared by partitions."""

    def __init__(
        self, config: RouterConfig, pipeline: Pipeline, dispatcher: Dispatcher, worker_id: str
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.dispatcher = dispatcher
        self.worker_id = worker_id
        self.answers = Answers(worker_id, config.allow_request_candidate_field)  # the records it produces
        self.candidates = tuple(config.candidates)
        self.max_prompt_tokens = context_limit(c.context_window for c in config.candidates.values())
        #: per-scope budgets (router_stream/budgets), or None when none are configured
        self.ledger: Ledger | None = Ledger(config.budgets, config.candidates) if config.budgets else None
        cache = config.cache  # the expression was checked at config load (cache.scope_expression)
        self._scope_expression = (
            Expression(cache.scope_expression)
            if cache.scope == "expression" and cache.scope_expression
            else None
        )
        self.control = ControlGate.from_env(config.control.secret_env)
        if config.control.secret_env and not self.control.enabled:
            log.warning("%s", self.control.disabled_why)

    def scope_key(self, source: Source, request: Request | ControlCommand | None) -> str:
        """The sticky-decision key: the configured request field or expression, else the Kafka key,
        else the request id. A field/expression value that is empty, null, a bool, or not a string
        or an integer (or an expression that fails on this request) falls back to the Kafka key.
        A control record's key is the one it names (so it is ordered with that key's requests)."""
        if isinstance(request, ControlCommand):
            return request.scope_key
        return scope_key(self.config.cache, self._scope_expression, source, request)

    def budget_tokens(self, source: Source, request: Request | ControlCommand | None) -> list[str]:
        """Order tokens for this record's budget scopes: the processor runs a partition's requests
        of one scope value one after the other, so no two read the same spend (budgets/ledger.py)."""
        if self.ledger is None:
            return []
        if isinstance(request, ControlCommand):  # a budget reset is ordered with the scope's requests
            return (
                [
                    f"s\x00{b.name}\x00{request.scope_key}"
                    for b in self.ledger.budgets
                    if request.budget in (None, b.name)
                ]
                if request.action == "reset_budget"
                else []
            )
        try:
            return self.ledger.order_tokens(
                kafka_key_text(source.key) if source.key else None, request, trace_headers(source.headers)
            )
        except Exception:  # never for a record's content; if it does, the record is ordered by its key only
            log.exception("budget scope of %s[%d]@%d failed", source.topic, source.partition, source.offset)
            return []

    def dead_letter(self, source: Source, poison: Poison, error_class: str = "PoisonRecord") -> Outcome:
        """The record as a dead letter (:meth:`.answers.Answers.dead_letter`), counted."""
        metrics.dead_letters(poison.reason).inc()
        return Outcome(dead_letter=self.answers.dead_letter(source, poison, error_class))

    def classify(self, source: Source) -> Request | Poison | ControlCommand:
        """The record's request, or why it is poison (:func:`~.intake.classify` with this
        worker's size and context limits), or an authorised control record (``.control``). Pure: a
        caller that needs the request earlier (the processor, for a field/expression scope's order
        token) parses once and passes it on."""
        control = self.control.check(source.headers, source.value)
        if control is not None:
            return control
        return classify(source.value, self.config.kafka.max_record_bytes, self.max_prompt_tokens)

    async def handle(
        self,
        source: Source,
        view: StateView,
        parsed: Request | Poison | ControlCommand | None = None,
        scope: str | None = None,
    ) -> Outcome:
        """Never raises for a record's content; an unexpected bug becomes a dead letter too.

        ``parsed``: :meth:`classify` of this very source, and ``scope``: :meth:`scope_key` of it
        and that request, when the caller already has them.
        """
        try:
            return await self._handle(source, view, parsed, scope)
        except Exception as exc:
            log.exception(
                "unexpected error handling %s[%d]@%d", source.topic, source.partition, source.offset
            )
            return self.dead_letter(
                source,
                Poison("internal_error", f"{type(exc).__name__} while handling the record"),
                error_class=type(exc).__name__,
            )

    async def _handle(
        self,
        source: Source,
        view: StateView,
        parsed: Request | Poison | ControlCommand | None,
        scope: str | None,
    ) -> Outcome:
        received = now_ms()
        if parsed is None:
            parsed = self.classify(source)
        if isinstance(parsed, Poison):
            return self.dead_letter(source, parsed)
        if isinstance(parsed, ControlCommand):
            return self.apply_control(source, view, parsed, received)
        request = parsed
        key = scope if scope is not None else self.scope_key(source, request)
        headers = trace_headers(source.headers)
        src = {"topic": source.topic, "partition": source.partition, "offset": source.offset}

        # a producer retry of an answered request: answer again from the first answer, no model call
        if self.config.cache.dedup_window_s > 0:
            seen = view.get(request_key(request.request_id))
            if seen is not None:
                first = Response.model_validate_json(seen)
                if received - first.produced_at <= self.config.cache.dedup_window_s * 1000:
                    metrics.DUPLICATES.inc()
                    metrics.requests(
                        first.candidate or "",
                        "duplicate",
                        "ok" if first.error is None else (first.error_kind or "error"),
                    ).inc()
                    response, audit = self.answers.repeat(first, key, src, received, headers, request)
                    return Outcome(response=response, audit=audit)

        if view.get(parked_key(request.request_id)) is not None:
            # a repeat of a request still waiting for its Batch API job: answered with it
            metrics.DUPLICATES.inc()
            view.put(
                parked_dup_key(request.request_id, source.offset),
                json.dumps({"source": src, "headers": headers, "received_at": received}).encode(),
            )
            return Outcome(parked=True)

        state_key = key_state_key(key)
        state = view.get_state(state_key)
        verdicts: list[Verdict] = []
        cache_hit = False
        chosen: str | None = None
        decided_by = ""
        plan = None  # a strategy's execution plan (a cascade), never from the cache

        asked = request_override(self.config, request)
        if asked is not None:
            verdicts.append(asked)
            if asked.outcome == "chose":
                chosen, decided_by = asked.candidate, "request"

        # the key's sticky decision: it stands in for its decider, after the strategies before it
        # (which run on every request and win when they decide: routing/pipeline.py)
        sticky: CachedDecision | None = None
        if chosen is None and self.config.cache.enabled and state.get("decision"):
            cached = CachedDecision.model_validate(state["decision"])
            ttl_s = cached.ttl_s if cached.ttl_s is not None else self.config.cache.ttl_s  # the decider's TTL
            if received - cached.decided_at <= ttl_s * 1000:
                sticky = cached
            else:
                metrics.cache_lookups("expired").inc()
                state["decision"] = None
        elif chosen is None:
            metrics.cache_lookups("miss").inc()

        sticky_audit: dict[str, Any] | None = None
        if chosen is None:
            ctx = RoutingContext(
                key=key,
                candidates=self.candidates,
                headers=headers,
                now_ms=received,
                stats=getattr(self.dispatcher, "stats", None),
                state=view,
            )
            routed = await self.pipeline.route(request, ctx, sticky)
            verdicts.extend(routed.verdicts)
            chosen, decided_by = routed.candidate, routed.decided_by
            plan = routed.plan
            if routed.sticky is not None:
                metrics.cache_lookups(routed.sticky).inc()
            if routed.sticky == "hit" and sticky is not None:
                cache_hit = True
                sticky_audit = sticky_note(sticky, received, routed.verdicts)
            elif routed.sticky == "orphaned":
                state["decision"] = None  # its decider left the pipeline (or stopped caching)
            if routed.cacheable and self.config.cache.enabled:
                state["decision"] = CachedDecision(
                    candidate=chosen, decided_by=decided_by, decided_at=received, ttl_s=routed.ttl_s
                ).model_dump()
        for v in verdicts:
            metrics.strategy_verdicts(v.strategy, v.outcome).inc()

        # budgets: admit with the estimate (downgrade or reject at a hard limit), settle after the call
        admission = None
        served = chosen  # the candidate called: the routed choice, or a budget's downgrade
        facts = RoutingFacts(
            request,
            key,
            source.key,
            chosen,
            decided_by,
            verdicts,
            cache_hit,
            sticky_audit,
            src,
            received,
            headers,
        )
        if self.ledger is not None:
            admission = self.ledger.admit(
                request,
                chosen,
                kafka_key_text(source.key) if source.key else None,
                headers,
                view,
                received,
                source.partition,
            )
            facts.budgets = admission.notes
            if admission.rejected is not None:  # refused before any call: no attempts, no cost
                refused = CallResult(None, None, error=admission.rejected, error_kind="budget_exceeded")
                response, audit, _ = self.answers.answered(facts, refused)
                done = self.record_answer(view, state_key, state, request, Outcome(response, audit=audit))
                metrics.requests(chosen, decided_by, "budget_exceeded").inc()
                return done
            if admission.candidate != chosen:
                served, plan = admission.candidate, None  # a downgrade replaces a cascade's plan too

        if self.config.candidates[served].mode == "batch":
            keystate.note_request(state, request.request_id)
            view.put_state(state_key, state)
            facts.chosen = served  # the candidate whose Batch API job answers it
            holds = [h.to_json() for h in admission.holds] if admission is not None else None
            view.put(parked_key(request.request_id), facts.parked_entry(holds))
            return Outcome(parked=True)

        budget_ms = request.deadline_ms or self.config.worker.default_deadline_ms
        deadline_at = time.monotonic() + budget_ms / 1000
        result: CallResult
        if isinstance(plan, CascadePlan):  # cheapest first, escalating while the validator rejects
            result = await run_cascade(self.dispatcher, request, plan, deadline_at)
        else:
            result = await self.dispatcher.call(request, served, deadline_at)
        if admission is not None and self.ledger is not None:
            paid = result.completion  # paid for even when too large to deliver
            self.ledger.settle(
                admission, view, result.cost_usd, paid.usage.total_tokens if paid is not None else 0
            )
        response, audit, delivered = self.answers.answered(facts, result)
        done = self.record_answer(view, state_key, state, request, Outcome(response, audit=audit))
        done.model_called = True
        outcome_label = "ok" if delivered else (response.error_kind or "error")
        metrics.requests(response.candidate or "", decided_by, outcome_label).inc()
        # paid for even when too large to deliver (a completion always comes with its served_by)
        if result.completion is not None and result.served_by is not None:
            completion = result.completion
            metrics.tokens(result.served_by, "input").inc(completion.usage.prompt_tokens)
            metrics.tokens(result.served_by, "output").inc(completion.usage.completion_tokens)
            metrics.cost(result.served_by).inc(result.cost_usd)
        return done

    def record_answer(
        self, view: StateView, state_key: bytes, state: dict[str, Any], request: Request, done: Outcome
    ) -> Outcome:
        """Note an answered request in its key's state and, within a dedup window, keep its
        response for repeats: the JSON produced (nulls left out, read back to the same response),
        made once here and reused by the transaction (:meth:`.partition.Outcome.response_json`)."""
        keystate.note_request(state, request.request_id)
        view.put_state(state_key, state)
        if self.config.cache.dedup_window_s > 0:
            view.put(request_key(request.request_id), done.response_json())
        return done

    def apply_control(
        self, source: Source, view: StateView, command: ControlCommand, received: int
    ) -> Outcome:
        """An authorised control record, applied to this partition's state in the batch's
        transaction: no response, an audit record (``decided_by: "control"``, ``control``: what
        was done) so operators can see it happened."""
        if command.action == "reset_budget":
            note = (
                self.ledger.reset(command.scope_key, command.budget, view)
                if self.ledger is not None
                else {"action": command.action, "applied": False, "result": "no budgets configured"}
            )
        else:
            note = apply_to_state(command, view)
        log.info(
            "control %s of key %r on %s[%d]@%d: %s",
            command.action,
            command.scope_key,
            source.topic,
            source.partition,
            source.offset,
            note["result"],
        )
        src = {"topic": source.topic, "partition": source.partition, "offset": source.offset}
        headers = trace_headers(source.headers)
        return Outcome(
            audit=self.answers.control(command.control_id, command.scope_key, note, src, received, headers)
        )
