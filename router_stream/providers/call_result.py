"""What one dispatched request came to: :class:`CallResult`, the dispatcher's answer to its callers.

Plain data apart from the dispatch loop (:mod:`.resilience`, which re-exports it), so code that
only reads a result (answers, audit records, batch jobs, cascades) can depend on this record and
not on the machinery of retries, breakers and limits that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schemas import Attempt
from .base import Completion

__all__ = ["CallResult"]


@dataclass
class CallResult:
    """What :meth:`~.resilience.Dispatcher.call` found: a completion, or why there is none."""

    completion: Completion | None
    served_by: str | None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    cost_usd: float = 0.0
    batch: dict[str, Any] | None = None  # the micro-batch that answered (or last failed), if any

    @property
    def ok(self) -> bool:
        return self.completion is not None
