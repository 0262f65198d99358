"""``router-stream explain``: what the pipeline would decide for one request, without Kafka or a model.

:func:`explain` takes the raw request bytes (as a producer would send them), reads them with the
worker's own intake (:func:`~router_stream.processing.intake.classify`, same limits), so a
malformed request yields the same dead-letter reason the worker would give, and then runs the
configured strategy pipeline on it, exactly as the worker does, reporting every strategy's
verdict (chose / abstained with its reason / miss / error) and the final choice.

What it does not do, and says so in its notes:

* it calls no model and talks to no broker: nothing is served, and ``judge`` and ``scorer``
  strategies (which call a model, or a scoring endpoint) are replaced by an abstention
  "not run: …" unless ``with_io`` is set (``--with-io``: they then call their judge candidate /
  URL as in the worker; still nothing is served). ``custom`` strategies always run as configured;
* it does not read the key's sticky decision from the worker's state; ``sticky`` (``--sticky
  STRATEGY=CANDIDATE``) supplies one, and it then applies exactly as in the worker: at its
  decider's position, after the strategies before it, which run and win when they decide;
* it does not consult the request_id dedup window (the worker answers a repeat from it first);

The cache-scope key and the headers a strategy sees are computed as in the worker: ``cache.scope``
(a request field, else the Kafka key, else ``request:<id>``), and only trace headers are passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import RouterConfig
from .processing.handler import Handler, kafka_key_text, request_override
from .processing.intake import Poison, classify, context_limit
from .processing.partition import Source
from .processing.request_notes import audit_notes
from .processing.trace import TRACE_HEADERS, trace_headers
from .providers.base import estimate_prompt_tokens
from .routing.base import Decision, RoutingContext
from .routing.pipeline import Pipeline, close_strategy
from .runtime import build_pipeline
from .schemas import CachedDecision, Request, Verdict, now_ms

#: strategy types that call a model or an HTTP endpoint while deciding (run only ``with_io``)
IO_TYPES = ("judge", "scorer")
_WHAT_THEY_CALL = {"judge": "a model", "scorer": "an endpoint"}


class _Skipped:
    """Stands in for an I/O strategy unless ``--with-io``: always abstains, saying so."""

    def __init__(self, name: str, type_: str) -> None:
        self.name = name
        self.type = type_

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        ctx.explain(
            f"not run: {self.type} strategies call {_WHAT_THEY_CALL[self.type]} (--with-io runs them)"
        )
        return None


@dataclass
class ExplainResult:
    """The verdicts and the final choice, or the dead letter the request would become."""

    request_id: str | None = None
    key: str | None = None
    key_source: str | None = None
    now_ms: int = 0
    verdicts: list[Verdict] = field(default_factory=list)
    candidate: str | None = None
    decided_by: str | None = None
    cacheable: bool = False
    dead_letter: Poison | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when routed, 2 when the request would be a dead letter."""
        return 2 if self.dead_letter is not None else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id}
        if self.dead_letter is not None:
            out["dead_letter"] = {
                "reason": self.dead_letter.reason,
                "message": self.dead_letter.message,
                "request_id": self.dead_letter.request_id,
            }
        else:
            out.update(
                {
                    "key": self.key,
                    "key_source": self.key_source,
                    "now_ms": self.now_ms,
                    "verdicts": [v.model_dump(mode="json") for v in self.verdicts],
                    "final": {
                        "candidate": self.candidate,
                        "decided_by": self.decided_by,
                        "cacheable": self.cacheable,
                    },
                }
            )
        out["notes"] = list(self.notes)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def table(self) -> str:
        """A human-readable report."""
        lines: list[str] = []
        if self.dead_letter is not None:
            poison = self.dead_letter
            lines.append(f"dead letter: {poison.reason}: {poison.message}")
            if poison.request_id is not None:
                lines.append(f"request_id: {poison.request_id}")
        else:
            at = datetime.fromtimestamp(self.now_ms / 1000, UTC).isoformat(timespec="seconds")
            lines.append(
                f"request {self.request_id!r}, key {self.key!r} ({self.key_source}), "
                f"at {at.replace('+00:00', 'Z')}"
            )
            lines.append("")
            rows = [("#", "strategy", "outcome", "candidate", "reason", "detail")]
            for i, v in enumerate(self.verdicts, 1):
                detail = (
                    json.dumps(v.detail, ensure_ascii=False, separators=(",", ":"), default=str)
                    if v.detail
                    else ""
                )
                if len(detail) > 80:
                    detail = detail[:79] + "…"
                rows.append((str(i), v.strategy, v.outcome, v.candidate or "-", v.reason or "-", detail))
            if len(rows) == 1:
                rows.append(("-", "(no strategies configured)", "", "", "", ""))
            widths = [max(len(r[c]) for r in rows) for c in range(5)]
            for r in rows:
                cells = "  ".join(r[c].ljust(widths[c]) for c in range(5))
                lines.append(f"{cells}  {r[5]}" if r[5] else cells.rstrip())
            lines.append("")
            why = " (no strategy decided)" if self.decided_by == "default" else ""
            lines.append(
                f"final: {self.candidate} (decided_by {self.decided_by}{why})"
                f"{', cacheable' if self.cacheable else ''}"
            )
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _key_source(config: RouterConfig, request: Request, kafka_key: bytes | None, scope_key: str) -> str:
    """Where :meth:`Handler.scope_key` took the key from (it falls back to the Kafka key, then the id)."""
    cache = config.cache
    fallback = kafka_key_text(kafka_key) if kafka_key else f"request:{request.request_id}"
    if cache.scope == "field" and cache.scope_field:
        value = request.fields.get(cache.scope_field)
        if value is not None and not isinstance(value, bool) and str(value) == scope_key:
            return f"request field fields.{cache.scope_field}"
    elif cache.scope != "key" and scope_key != fallback:
        expression = getattr(cache, "scope_expression", None)
        return f"cache.scope {cache.scope}" + (f": {expression}" if expression else "")
    return "the Kafka key" if kafka_key else "no Kafka key: the request id"


def _sticky_note(
    config: RouterConfig, sticky: CachedDecision, outcome: str | None, verdicts: list[Verdict]
) -> str:
    """What became of a supplied sticky decision, in the worker's terms."""
    what = f"sticky decision {sticky.decided_by}={sticky.candidate}"
    if not config.cache.enabled:
        return f"{what}: not applied, cache.enabled is false"
    if outcome == "hit":
        before = [v.strategy for v in verdicts[:-1]]
        return f"{what} applied at {sticky.decided_by!r}'s position" + (
            f", after {', '.join(before)} abstained" if before else " (the first strategy)"
        )
    if outcome == "preempted":
        return f"{what} not applied: {verdicts[-1].strategy!r} comes before {sticky.decided_by!r} and decided"
    return (
        f"{what} not applied: {sticky.decided_by!r} is not a caching strategy of this pipeline or "
        f"{sticky.candidate!r} is not a candidate (the worker re-routes and replaces it)"
    )


def parse_sticky(text: str, now: int) -> CachedDecision:
    """``STRATEGY=CANDIDATE`` (``--sticky``) as a decision made just now; ValueError otherwise."""
    strategy, sep, candidate = text.partition("=")
    if not sep or not strategy.strip() or not candidate.strip():
        raise ValueError(f"--sticky: expected STRATEGY=CANDIDATE (e.g. learned=cheap), got {text!r}")
    return CachedDecision(candidate=candidate.strip(), decided_by=strategy.strip(), decided_at=now)


async def build_explain_pipeline(config: RouterConfig, with_io: bool = False) -> Pipeline:
    """The worker's pipeline (:func:`~router_stream.runtime.build_pipeline`); unless ``with_io``
    its judge and scorer strategies are replaced by an abstention (and their clients closed)."""
    pipeline = build_pipeline(config)
    if not with_io:
        for i, strategy_config in enumerate(config.strategies):
            if strategy_config.type in IO_TYPES:
                built, pipeline.strategies[i] = (
                    pipeline.strategies[i],
                    _Skipped(strategy_config.name, strategy_config.type),
                )
                await close_strategy(built)
    return pipeline


async def explain(
    config: RouterConfig,
    request_bytes: bytes | None,
    key: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    with_io: bool = False,
    at_ms: int | None = None,
    sticky: CachedDecision | None = None,
) -> ExplainResult:
    """Run intake and the strategy pipeline on one request as the worker would; call no model
    (``with_io``: run judge and scorer strategies, which call theirs). ``sticky``: a cached
    decision for the key, applied as the worker would (after the strategies before its decider)."""
    kafka_key = key.encode("utf-8") if isinstance(key, str) else key
    max_prompt_tokens = context_limit(c.context_window for c in config.candidates.values())
    parsed = classify(request_bytes, config.kafka.max_record_bytes, max_prompt_tokens)
    if isinstance(parsed, Poison):
        return ExplainResult(
            request_id=parsed.request_id,
            dead_letter=parsed,
            notes=[
                "the worker would send this record to the dead-letter topic "
                f"({config.topics.dead_letter}) without routing it"
            ],
        )
    request = parsed
    received = now_ms() if at_ms is None else at_ms
    raw_headers = tuple((name, value.encode("utf-8")) for name, value in (headers or {}).items())
    source = Source(
        topic=config.topics.requests,
        partition=0,
        offset=0,
        key=kafka_key,
        value=request_bytes,
        headers=raw_headers,
    )
    pipeline = await build_explain_pipeline(config, with_io)
    handler = Handler(config, pipeline, dispatcher=None, worker_id="explain")  # type: ignore[arg-type]
    scope_key = handler.scope_key(source, request)
    ttl_s = config.cache.ttl_s
    result = ExplainResult(
        request_id=request.request_id,
        key=scope_key,
        key_source=_key_source(config, request, kafka_key, scope_key),
        now_ms=received,
    )
    trace = trace_headers(raw_headers)
    dropped = sorted(name for name, _ in raw_headers if name.lower() not in trace)
    if dropped:
        result.notes.append(
            f"headers not passed to strategies (the worker passes only {', '.join(TRACE_HEADERS)}"
            f", of at most 512 bytes): {', '.join(dropped)}"
        )
    _ignored, field_notes = audit_notes(request, config.allow_request_candidate_field)
    result.notes.extend(field_notes or [])  # what the audit would say about fields no model gets

    try:
        # as in the worker: a request field may name the candidate first
        asked = request_override(config, request)
        if asked is not None:
            result.verdicts.append(asked)
            if asked.outcome == "chose":
                result.candidate, result.decided_by = asked.candidate, "request"
                result.notes.append("no strategy was asked: the request named its candidate")
        if result.candidate is None:
            ctx = RoutingContext(
                key=scope_key, candidates=tuple(config.candidates), headers=trace, now_ms=received
            )
            fresh = sticky if sticky is not None and config.cache.enabled else None
            routed = await pipeline.route(request, ctx, fresh)
            result.verdicts.extend(routed.verdicts)
            if sticky is not None:
                result.notes.append(_sticky_note(config, sticky, routed.sticky, routed.verdicts))
            result.candidate, result.decided_by = routed.candidate, routed.decided_by
            seen = {v.strategy for v in routed.verdicts}
            not_reached = [s.name for s in config.strategies if s.name not in seen]
            if not_reached:
                result.notes.append(
                    f"not reached ({routed.decided_by} decided first): {', '.join(not_reached)}"
                )
            result.cacheable = routed.cacheable and config.cache.enabled
            ttl_s = getattr(routed, "ttl_s", None) or ttl_s  # the deciding strategy's own cache.ttl_s
            plan = getattr(routed, "plan", None)
            if plan is not None:
                order = getattr(plan, "candidates", None)
                result.notes.append(
                    f"{routed.decided_by} returned an execution plan ({type(plan).__name__}"
                    + (f": {' -> '.join(order)}" if order else "")
                    + "): the worker would run "
                    "it instead of one call to the chosen candidate"
                )
    finally:
        await pipeline.aclose()  # a judge's or scorer's HTTP client

    if config.cache.enabled and sticky is None:
        result.notes.append(
            f"the key's sticky decision was not read (--sticky STRATEGY=CANDIDATE supplies one): in the worker a "
            f"fresh one for key {scope_key!r} applies at its decider's position, after the strategies before it"
            + (f"; this decision would be cached for that key for {ttl_s:g}s" if result.cacheable else "")
        )
    if config.cache.dedup_window_s > 0:
        result.notes.append(
            f"the dedup window was not consulted: a repeat of request_id {request.request_id!r} "
            f"within {config.cache.dedup_window_s:g}s is answered from the first answer"
        )
    chosen_cfg = config.candidates.get(result.candidate) if result.candidate is not None else None
    tokens = estimate_prompt_tokens(request.chat_messages(), request.call_params())
    if (
        chosen_cfg is not None
        and chosen_cfg.context_window is not None
        and tokens > chosen_cfg.context_window
    ):
        chain = [
            n for n in dict.fromkeys([*chosen_cfg.fallbacks, *config.fallbacks]) if n != result.candidate
        ]
        result.notes.append(
            f"the prompt is ~{tokens} tokens, over {result.candidate!r}'s context window "
            f"({chosen_cfg.context_window}): the worker would skip it for its fallbacks "
            f"({', '.join(chain) or 'none configured'})"
        )
    if result.candidate is not None and config.candidates[result.candidate].mode == "batch":
        result.notes.append(
            f"candidate {result.candidate!r} has mode: batch: the worker would park the request "
            f"for a Batch API job"
        )
    io_names = [s.name for s in config.strategies if s.type in IO_TYPES]
    if io_names and not with_io:
        result.notes.append(
            f"not run (they call a model or an endpoint; --with-io runs them): {', '.join(io_names)}"
        )
    elif io_names:
        result.notes.append(f"run with --with-io, calling their model or endpoint: {', '.join(io_names)}")
    result.notes.append("the request was not sent to any candidate: nothing was served")
    return result
