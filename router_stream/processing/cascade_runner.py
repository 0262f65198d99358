"""Running a cascade plan: call candidates cheapest first until the validator accepts an answer.

:func:`run_cascade` takes the :class:`~router_stream.routing.cascade.CascadePlan` a cascade
strategy put in its decision and returns a :class:`CascadeResult`: a
:class:`~router_stream.providers.resilience.CallResult` (what the handler turns into the response)
plus ``cascade``, one audit step per candidate::

    {"candidate": "cheap", "served_by": "cheap", "accepted": false, "served": false,
     "reason": "does not match the pattern", "cost_usd": 0.00012}

Each step is one :meth:`Dispatcher.call <router_stream.providers.resilience.Dispatcher.call>`, so
a step also walks that candidate's fallback chain (``candidates[x].fallbacks`` and the global
``fallbacks``) when the candidate fails: ``served_by`` says who answered. A step with no answer at
all (every endpoint failed) is recorded with the error as its reason and the cascade moves on.
No step starts once ``deadline_at`` has passed: the remaining candidates are recorded as skipped
(``"skipped": true``), and what was received so far is served per ``when_all_rejected``.

The result's ``attempts`` are every step's attempts (a judge's included), in order; ``cost_usd``
is their sum (a judge step adds ``judge_cost_usd``). When an answer is accepted it is served;
when none is, ``when_all_rejected`` picks one (see :mod:`router_stream.routing.cascade`) and its
step has ``"served": true`` with ``"accepted": false``; when nobody answered, the result is an
error (``error_kind`` of the last failure, or ``deadline_exceeded``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..providers.call_result import CallResult
from ..routing.cascade import CascadePlan, Check, JudgeValidator
from ..schemas import Attempt, Request


class Dispatcher(Protocol):
    """What the worker needs of :class:`~router_stream.providers.resilience.Dispatcher` (tests
    pass fakes): one call down ``chosen``'s fallback chain, which never raises for model failures."""

    async def call(self, request: Request, chosen: str, deadline_at: float) -> CallResult: ...


@dataclass
class CascadeResult(CallResult):
    """A :class:`CallResult` plus the cascade's steps for the audit."""

    cascade: list[dict[str, Any]] = field(default_factory=list)


async def _judge(
    dispatcher: Dispatcher, request: Request, validator: JudgeValidator, answer: str, deadline_at: float
) -> tuple[Check, CallResult]:
    """Ask the judge; a failed call or an unusable reply accepts the answer, with a note."""
    result = await dispatcher.call(validator.judge_request(request, answer), validator.candidate, deadline_at)
    if result.completion is None:
        why = f"judge {validator.candidate!r} failed ({result.error_kind or 'error'})"
        return Check(True, f"{why}: accepted unchecked"), result
    verdict = validator.parse(result.completion.text)
    if verdict is None:
        return Check(True, f"judge {validator.candidate!r} gave no yes/no: accepted unchecked"), result
    return Check(verdict, f"judge {result.served_by!r} said {'yes' if verdict else 'no'}"), result


async def run_cascade(
    dispatcher: Dispatcher,
    request: Request,
    plan: CascadePlan,
    deadline_at: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> CascadeResult:
    """Call ``plan.candidates`` in order until the validator accepts; never raises for model failures."""
    steps: list[dict[str, Any]] = []
    attempts: list[Attempt] = []
    cost = 0.0
    answered: list[tuple[CallResult, float, dict[str, Any]]] = []  # rejected answers: result, score, step
    last_failure: CallResult | None = None

    def result(answer: CallResult | None, **failure: Any) -> CascadeResult:
        """The cascade's result: ``answer``'s completion (or ``failure``'s error), every step's
        attempts and cost so far."""
        served = answer if answer is not None and answer.completion is not None else None
        return CascadeResult(
            completion=served.completion if served is not None else None,
            served_by=served.served_by if served is not None else None,
            attempts=attempts,
            cost_usd=cost,
            batch=answer.batch if answer is not None else None,
            cascade=steps,
            **failure,
        )

    for i, name in enumerate(plan.candidates):
        if clock() >= deadline_at:
            steps += [
                {
                    "candidate": rest,
                    "served_by": None,
                    "accepted": False,
                    "served": False,
                    "skipped": True,
                    "reason": "deadline passed before this step",
                    "cost_usd": 0.0,
                }
                for rest in plan.candidates[i:]
            ]
            break
        called = await dispatcher.call(request, name, deadline_at)
        attempts += called.attempts
        cost += called.cost_usd
        step: dict[str, Any] = {
            "candidate": name,
            "served_by": called.served_by,
            "accepted": False,
            "served": False,
            "cost_usd": round(called.cost_usd, 8),
        }
        steps.append(step)
        if called.completion is None:
            step["reason"] = f"no answer ({called.error_kind or 'error'}): {(called.error or '')[:200]}"
            last_failure = called
            continue
        text = called.completion.text or ""
        if isinstance(plan.validator, JudgeValidator):
            check, judged = await _judge(dispatcher, request, plan.validator, text, deadline_at)
            attempts += judged.attempts
            cost += judged.cost_usd
            step["judge_cost_usd"] = round(judged.cost_usd, 8)
        else:
            check = plan.validator.check(text)
        step["accepted"], step["reason"] = check.accepted, check.reason
        if check.accepted:
            step["served"] = True
            return result(called)
        answered.append((called, check.score, step))

    if answered:
        if plan.when_all_rejected == "best_effort":  # highest score; ties to the later candidate
            chosen, _, step = max(reversed(answered), key=lambda a: a[1])
        else:
            chosen, _, step = answered[-1]
        step["served"] = True
        step["reason"] += f"; served anyway (all rejected, when_all_rejected: {plan.when_all_rejected})"
        return result(chosen)
    if last_failure is None:
        return result(
            None,
            error="cascade: deadline passed before any candidate was called",
            error_kind="deadline_exceeded",
        )
    failures = "; ".join(f"{s['candidate']}: {s['reason']}" for s in steps if not s.get("skipped"))
    return result(
        last_failure,
        error=f"cascade: no candidate answered: {failures}"[:1000],
        error_kind=last_failure.error_kind or "error",
    )
