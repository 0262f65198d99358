"""Per-scope spend, admitted before the call and settled after it, in the partition's state.

Why in the partition's state: the state is written in the same Kafka transaction as the answer,
so the committed spend of a scope is exactly the sum of its committed answers' costs — a crash
loses or repeats both together, never one of them — which a gateway that updates Redis after
the call cannot offer.

Flow for one request, per budget whose scope value it has:

1. :meth:`Ledger.admit` (before the call): the scope's spend in the current window (this
   partition's, from the state, plus other partitions' committed spend for spread budgets, from
   :class:`RemoteTotals`) plus the reservations in flight plus this request's estimate is compared
   with the hard limit. Over it: ``downgrade`` re-checks with the downgrade candidate (its own
   estimate), ``reject`` answers with ``budget_exceeded``. Admitted: the estimate is reserved.
2. :meth:`Ledger.settle` (after the call, success or failure): the reservation is released and the
   actual cost and tokens are added. Both writes go to the batch's state view, committed with the
   answer.

Requests of one scope value run one after the other inside a partition (the processor orders
them by :meth:`Ledger.order_tokens`, as it orders the requests of one cache key), so two of them
never read the same spend; the reservation matters for Batch API requests, parked across
transactions. Amounts are integers in micro-USD, so sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import metrics
from ..providers.base import estimate_prompt_tokens
from ..providers.pricing import cost_usd
from ..routing.expressions import Expression, request_names
from ..schemas import Request
from .entry import MICRO, SPEND_PREFIX, Entry, spend_key, split_spend_key, to_micro
from .limits import BudgetConfig

__all__ = [
    "MICRO",
    "SPEND_PREFIX",
    "Admission",
    "Entry",
    "Hold",
    "Ledger",
    "NoRemote",
    "RemoteTotals",
    "spend_key",
    "split_spend_key",
    "to_micro",
]


class StateAccess(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes | None) -> None: ...


class RemoteTotals(Protocol):
    """Other partitions' committed spend of a scope in a window (spread budgets)."""

    def total(
        self, key: bytes, budget: BudgetConfig, now_start: int, exclude_partition: int
    ) -> tuple[int, int]: ...


class NoRemote:
    """Co-partitioned budgets only: no other partition ever holds spend of the same scope."""

    def total(
        self, key: bytes, budget: BudgetConfig, now_start: int, exclude_partition: int
    ) -> tuple[int, int]:
        return 0, 0


@dataclass
class Hold:
    """What :meth:`Ledger.admit` reserved for one budget, for :meth:`Ledger.settle`."""

    budget: BudgetConfig
    scope: str
    key: bytes
    window: int
    estimate_usd: int
    estimate_tokens: int
    note: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """What a parked (Batch API) request keeps to settle when its job completes."""
        return {
            "budget": self.budget.name,
            "scope": self.scope,
            "window": self.window,
            "estimate_usd": self.estimate_usd,
            "estimate_tokens": self.estimate_tokens,
        }


@dataclass
class Admission:
    """The outcome of the budget checks for one request."""

    candidate: str
    rejected: str | None = None  # the error text of a budget_exceeded response
    holds: list[Hold] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


class Ledger:
    """The configured budgets of one worker (shared by its partitions; state comes per call)."""

    def __init__(
        self, budgets: list[BudgetConfig], candidates: dict[str, Any], remote: RemoteTotals | None = None
    ) -> None:
        self.budgets = budgets
        self.candidates = candidates
        self.remote: RemoteTotals = remote or NoRemote()
        self._expr = {
            b.name: Expression(b.scope_expression)
            for b in budgets
            if b.scope == "expression" and b.scope_expression
        }

    @property
    def needs_request_for_order(self) -> bool:
        """True when a scope value comes from the request body (field/expression)."""
        return any(b.scope != "key" for b in self.budgets)

    def scope_value(
        self, budget: BudgetConfig, kafka_key: str | None, request: Request | None, headers: dict[str, str]
    ) -> str | None:
        """The scope value of a request for ``budget``, or None (the budget does not apply: a
        request without the scope's field, or without a Kafka key for ``scope: key``)."""
        if budget.scope == "key":
            value: Any = kafka_key
        elif request is None:
            return None
        elif budget.scope == "field":
            value = request.fields.get(budget.scope_field or "")
        else:
            value, _problem = self._expr[budget.name].value(request_names(request, kafka_key or "", headers))
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        text = str(value)
        return text if text and len(text) <= 512 and "\x00" not in text else None

    def order_tokens(
        self, kafka_key: str | None, request: Request | None, headers: dict[str, str]
    ) -> list[str]:
        """Tokens that order a partition's requests of one scope value one after the other."""
        out = []
        for b in self.budgets:
            scope = self.scope_value(b, kafka_key, request, headers)
            if scope is not None:
                out.append(f"s\x00{b.name}\x00{scope}")
        return out

    def estimate(self, candidate: str, request: Request, budget: BudgetConfig) -> tuple[int, int]:
        """(micro-USD, tokens) a call to ``candidate`` is expected to cost: the prompt's estimated
        tokens plus ``max_completion_tokens`` / ``max_tokens`` of the request (else the budget's
        ``expected_output_tokens``), at the candidate's prices."""
        cfg = self.candidates[candidate]
        prompt = estimate_prompt_tokens(request.chat_messages())
        params = request.call_params()  # top-level chat-completions fields win over params
        out = params.get("max_completion_tokens") or params.get("max_tokens")
        output = (
            out
            if isinstance(out, int) and not isinstance(out, bool) and out > 0
            else budget.expected_output_tokens
        )
        usd = cost_usd(cfg, prompt, output)
        return to_micro(usd), prompt + output

    def admit(
        self,
        request: Request,
        chosen: str,
        kafka_key: str | None,
        headers: dict[str, str],
        state: StateAccess,
        now_ms: int,
        partition: int,
    ) -> Admission:
        """Check every budget for ``chosen`` (downgrading or rejecting at a hard limit) and
        reserve the estimate of the candidate that will be called."""
        admission = Admission(chosen)
        scoped = []
        for b in self.budgets:
            scope = self.scope_value(b, kafka_key, request, headers)
            if scope is None:
                admission.notes.append(
                    {"budget": b.name, "state": "skipped", "reason": f"the request has no {_scope_what(b)}"}
                )
                continue
            start = b.period.start(now_ms)
            key = spend_key(b.name, scope)
            entry = Entry.load(state.get(key))
            spent = entry.spent(b.period, start)
            remote_usd, remote_tokens = (
                self.remote.total(key, b, start, partition) if not b.co_partitioned else (0, 0)
            )
            scoped.append((b, scope, key, start, entry, spent, remote_usd, remote_tokens))

        candidate = chosen
        for _round in range(2):  # the chosen candidate, then at most once the downgrade
            over = [
                (b, why)
                for b, scope, key, start, entry, spent, ru, rt in scoped
                if (why := _over(b, entry, spent, ru, rt, *self.estimate(candidate, request, b))) is not None
            ]
            if not over:
                break
            b, why = over[0]
            target = b.downgrade_to if b.action == "downgrade" else None
            if target is None or target == candidate or _round == 1:
                scope = next(s for bb, s, *_ in scoped if bb is b)
                start = next(st for bb, _s, _k, st, *_ in scoped if bb is b)
                admission.rejected = (
                    f"budget {b.name!r} for {_scope_what(b)} {scope!r}: {b.period.label(start)}: {why}"
                )
                metrics.budget_events(b.name, "reject").inc()
                break
            metrics.budget_events(b.name, "downgrade").inc()
            admission.notes.append(
                {"budget": b.name, "state": "downgraded", "from": candidate, "to": target, "reason": why}
            )
            candidate = target
        admission.candidate = candidate

        for b, scope, key, start, entry, spent, ru, rt in scoped:
            est_usd, est_tokens = self.estimate(candidate, request, b)
            soft = _soft(b, entry, spent, ru, rt)
            note = {
                "budget": b.name,
                "scope": scope,
                "window": b.period.label(start),
                "window_start": start,
                "window_end": b.period.end(start),
                "spent_usd": (spent[0] + ru) / MICRO,
                "spent_tokens": spent[1] + rt,
                "estimate_usd": est_usd / MICRO,
                "estimate_tokens": est_tokens,
                "mode": "co-partitioned" if b.co_partitioned else "spread",
                "state": "rejected" if admission.rejected else ("soft" if soft else "ok"),
            }
            if not b.co_partitioned:
                note["other_partitions_usd"] = ru / MICRO
            if soft and not admission.rejected:
                metrics.budget_events(b.name, "soft").inc()
            admission.notes.append(note)
            if admission.rejected:
                continue
            entry.reserved_usd += est_usd
            entry.reserved_tokens += est_tokens
            state.put(key, entry.dump())
            admission.holds.append(Hold(b, scope, key, start, est_usd, est_tokens, note))
        return admission

    def settle(self, admission: Admission, state: StateAccess, cost_usd: float, tokens: int) -> None:
        """Release the reservations and charge the actual cost and tokens (0 when the call failed
        without an answer), in the window the request was admitted in."""
        charged = to_micro(cost_usd)
        for hold in admission.holds:
            entry = Entry.load(state.get(hold.key))
            entry.reserved_usd = max(0, entry.reserved_usd - hold.estimate_usd)
            entry.reserved_tokens = max(0, entry.reserved_tokens - hold.estimate_tokens)
            entry.charge(hold.budget.period, hold.window, charged, tokens)
            state.put(hold.key, entry.dump())
            hold.note["charged_usd"] = charged / MICRO
            hold.note["charged_tokens"] = tokens
            hold.note["charged_window_start"] = entry.window
            metrics.budget_spend(hold.budget.name).inc(charged / MICRO)
            if hold.scope in hold.budget.metrics_scopes:
                metrics.BUDGET_SCOPE_SPEND.labels(hold.budget.name, hold.scope).set(entry.usd / MICRO)

    def reset(self, scope: str, budget: str | None, state: StateAccess) -> dict[str, Any]:
        """An operator's ``state reset-budget``: the scope's spend in its current window becomes
        zero (reservations of requests in flight stay, so they still settle). Returns the note for
        the control record's audit."""
        note: dict[str, Any] = {"action": "reset_budget", "budget": budget, "applied": False, "reset": []}
        for b in self.budgets:
            if budget not in (None, b.name):
                continue
            key = spend_key(b.name, scope)
            raw = state.get(key)
            if raw is None:
                continue
            entry = Entry.load(raw)
            usd, tokens = entry.clear()
            note["reset"].append(
                {
                    "budget": b.name,
                    "window_start": entry.window,
                    "spent_usd": usd / MICRO,
                    "spent_tokens": tokens,
                }
            )
            state.put(key, entry.dump())
        note["applied"] = bool(note["reset"])
        note["result"] = (
            f"reset {len(note['reset'])} budget(s) of {scope!r}"
            if note["applied"]
            else f"no budget spend recorded for {scope!r} on this partition: nothing to reset"
        )
        return note

    def settle_parked(
        self, holds: list[dict[str, Any]] | None, state: StateAccess, cost_usd: float, tokens: int
    ) -> list[dict[str, Any]]:
        """:meth:`settle` for a Batch API request: its holds come back from the parked entry
        (:meth:`Hold.to_json`); a budget removed from the config since is skipped. Returns the
        notes for the audit."""
        by_name = {b.name: b for b in self.budgets}
        admission = Admission("")
        for h in holds or []:
            budget = by_name.get(h.get("budget", ""))
            if budget is None:
                continue
            note: dict[str, Any] = {"budget": budget.name, "scope": h["scope"], "state": "ok"}
            admission.holds.append(
                Hold(
                    budget,
                    h["scope"],
                    spend_key(budget.name, h["scope"]),
                    int(h["window"]),
                    int(h["estimate_usd"]),
                    int(h["estimate_tokens"]),
                    note,
                )
            )
            admission.notes.append(note)
        self.settle(admission, state, cost_usd, tokens)
        return admission.notes


def _scope_what(b: BudgetConfig) -> str:
    return {"key": "Kafka key", "field": f"fields.{b.scope_field}", "expression": "scope"}[b.scope]


def _over(
    b: BudgetConfig,
    entry: Entry,
    spent: tuple[int, int],
    remote_usd: int,
    remote_tokens: int,
    est_usd: int,
    est_tokens: int,
) -> str | None:
    """Why admitting ``est`` would pass the hard limit, or None."""
    spent_usd = spent[0] + entry.reserved_usd + remote_usd
    spent_tokens = spent[1] + entry.reserved_tokens + remote_tokens
    if b.limit.usd is not None and spent_usd + est_usd > to_micro(b.limit.usd):
        return (
            f"hard limit ${b.limit.usd:g} reached (spent ${spent_usd / MICRO:.6g}, "
            f"this request ~${est_usd / MICRO:.6g})"
        )
    if b.limit.tokens is not None and spent_tokens + est_tokens > b.limit.tokens:
        return (
            f"hard limit {b.limit.tokens} tokens reached (spent {spent_tokens}, this request ~{est_tokens})"
        )
    return None


def _soft(b: BudgetConfig, entry: Entry, spent: tuple[int, int], remote_usd: int, remote_tokens: int) -> bool:
    if b.soft is None:
        return False
    if b.soft.usd is not None and spent[0] + entry.reserved_usd + remote_usd >= to_micro(b.soft.usd):
        return True
    return b.soft.tokens is not None and spent[1] + entry.reserved_tokens + remote_tokens >= b.soft.tokens
