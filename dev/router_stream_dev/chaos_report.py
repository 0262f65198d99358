"""What a chaos run saw: the :class:`Report` of :func:`.chaos.run_chaos` and its timeline :class:`Event`.

Plain data apart from the runner (:mod:`.chaos`) and the checks that fill the counts
(:mod:`.chaos_verify`), so both can share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .chaos_budgets import BudgetReport


@dataclass
class Event:
    at: float  # seconds since the start of the stream
    kind: str  # kill | broker_restart | crash | restart
    detail: str = ""


@dataclass
class Report:
    """What a chaos run saw. ``ok`` when nothing was lost, duplicated or changed."""

    records: int = 0
    workers: int = 0
    partitions: int = 0
    keys: int = 0
    input_records: int = 0  # records read back from the requests topic
    responses: int = 0  # response records (read_committed)
    audits: int = 0
    lost: int = 0  # input records without a response
    duplicated: int = 0  # request ids answered more often than they were sent
    unexpected: int = 0  # responses for request ids never sent
    audit_lost: int = 0
    audit_duplicated: int = 0
    changed: int = 0  # keys whose sticky candidate changed within the TTL
    redecided: int = 0  # keys decided afresh within the TTL (state lost)
    counter_mismatch: int = 0  # keys whose changelog request counter != requests sent
    dead_letters: int = 0
    error_responses: int = 0  # responses carrying an error (model failures)
    kills: int = 0
    sigterms: int = 0  # graceful stops right before a broker restart
    broker_restarts: int = 0
    crashes: int = 0  # worker exits we did not cause (restarted by us)
    fenced_batches: int = 0  # "partition ...: fenced (...)" lines in the worker logs
    aborted_batches: int = 0  # "failed (...); it will be re-read" lines
    fatal_exits: int = 0  # "fatal:" lines (exit 70)
    final_exit_codes: list[int | None] = field(default_factory=list)
    produce_s: float = 0.0
    drain_s: float = 0.0  # end of production to group lag 0
    verify_s: float = 0.0
    total_s: float = 0.0
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    budgets: BudgetReport | None = None  # with budget_usd: the exactness checks of chaos_budgets.py

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.audit_lost
            or self.audit_duplicated
            or self.changed
            or self.redecided
            or self.counter_mismatch
            or self.dead_letters
            or self.input_records != self.records
            or (self.budgets is not None and not self.budgets.ok)
        )

    def summary(self) -> str:
        lines = [
            f"chaos: {self.records} records, {self.keys} keys, {self.partitions} partitions, "
            f"{self.workers} workers; {self.kills} kill -9, {self.sigterms} SIGTERM, {self.broker_restarts} broker restarts, "
            f"{self.crashes} worker crashes (restarted)",
            f"  read_committed: {self.input_records} requests, {self.responses} responses, {self.audits} audits, "
            f"{self.dead_letters} dead letters, {self.error_responses} error responses",
            f"  lost {self.lost}  duplicated {self.duplicated}  unexpected {self.unexpected}  "
            f"audit lost {self.audit_lost}  audit duplicated {self.audit_duplicated}",
            f"  sticky: changed {self.changed}  redecided {self.redecided}  counter mismatch {self.counter_mismatch}",
            f"  worker logs: {self.fenced_batches} fenced batches, {self.aborted_batches} aborted batches, "
            f"{self.fatal_exits} fatal exits; final SIGTERM exit codes {self.final_exit_codes}",
            f"  time: produce {self.produce_s:.1f}s, drain {self.drain_s:.1f}s, verify {self.verify_s:.1f}s, "
            f"total {self.total_s:.1f}s",
        ]
        if self.budgets is not None:
            lines.append(self.budgets.summary())
            for name, ex in self.budgets.examples.items():
                lines.append(f"  e.g. {name}: {ex}")
        lines += [f"  note: {n}" for n in self.notes]
        for name, ex in self.examples.items():
            lines.append(f"  e.g. {name}: {ex}")
        lines.append("  RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)
