"""The ``budgets:`` section: per-scope spend limits in USD and/or tokens per calendar window.

One entry is one budget::

    budgets:
      - name: tenant-daily
        scope: field                 # key (the Kafka key) | field | expression
        scope_field: tenant          # request.fields.tenant
        window: day                  # minute | hour | day | month (calendar, in time_zone) | rolling
        # rolling_s: 86400           # window: rolling: the last 24 h, in 12 buckets of 2 h
        time_zone: Europe/Berlin     # default UTC
        limit: {usd: 5.00, tokens: 2000000}   # hard limit (either or both)
        soft: {usd: 4.00}            # noted in the audit and a metric; nothing else changes
        action: downgrade            # at the hard limit: downgrade | reject
        downgrade_to: cheap
        expected_output_tokens: 256  # for the estimate when a request sets no max_tokens

Semantics, modes and exactness: docs/budgets.md; the accounting is :mod:`.ledger`.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..routing.expressions import check_expression, scope_problem
from .windows import Window


class Limit(BaseModel):
    """An amount in USD and/or tokens; a budget is over it when either is reached."""

    model_config = ConfigDict(extra="forbid")

    usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> Limit:
        if self.usd is None and self.tokens is None:
            raise ValueError("give usd, tokens or both")
        return self


class BudgetConfig(BaseModel):
    """One budget (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    scope: Literal["key", "field", "expression"] = "key"
    scope_field: str | None = None
    scope_expression: str | None = None
    window: Literal["minute", "hour", "day", "month", "rolling"] = "day"
    time_zone: str = "UTC"
    rolling_s: float | None = Field(
        None,
        ge=60,
        allow_inf_nan=False,
        description="window: rolling: its length in seconds (spend leaves it in 12 steps)",
    )
    limit: Limit
    soft: Limit | None = None
    action: Literal["reject", "downgrade"] = "reject"
    downgrade_to: str | None = None
    expected_output_tokens: int = Field(
        256, ge=0, description="output tokens assumed for the estimate when the request sets no max_tokens"
    )
    metrics_scopes: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="scope values that get their own metric series (bounded)",
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or Europe/Berlin)") from None
        return v

    @field_validator("scope_expression")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        return check_expression(v)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetConfig:
        problem = scope_problem(self.scope, self.scope_field, self.scope_expression)
        if problem is not None:
            raise ValueError(problem)
        if self.window == "rolling" and self.rolling_s is None:
            raise ValueError("window 'rolling' needs rolling_s (its length in seconds, e.g. 86400)")
        if self.window != "rolling" and self.rolling_s is not None:
            raise ValueError(
                f"rolling_s is only used with window: rolling (this budget has window: {self.window})"
            )
        if self.action == "downgrade" and not self.downgrade_to:
            raise ValueError("action 'downgrade' needs downgrade_to (a cheaper candidate)")
        if self.action == "reject" and self.downgrade_to:
            raise ValueError("downgrade_to is only used with action: downgrade")
        if self.soft is not None:
            for unit in ("usd", "tokens"):
                soft, hard = getattr(self.soft, unit), getattr(self.limit, unit)
                if soft is not None and hard is not None and soft > hard:
                    raise ValueError(f"soft.{unit} ({soft:g}) is above limit.{unit} ({hard:g})")
        return self

    @property
    def period(self) -> Window:
        """The budget's :class:`~.windows.Window`."""
        return Window(self.window, self.time_zone, int((self.rolling_s or 0) * 1000))

    @property
    def co_partitioned(self) -> bool:
        """True when every request of one scope value reaches one partition (the scope is the
        Kafka key): enforcement is then exact. Otherwise accounting is exact and enforcement
        lags (docs/budgets.md, "Modes")."""
        return self.scope == "key"

    def mode(self) -> str:
        """What ``check-config`` says about this budget's mode."""
        if self.co_partitioned:
            return (
                f"budget {self.name!r}: co-partitioned (scope is the Kafka key): exact accounting and exact "
                "enforcement, a hard limit is exceeded by at most one request's estimate"
            )
        what = (
            f"fields.{self.scope_field}" if self.scope == "field" else f"expression {self.scope_expression!r}"
        )
        return (
            f"budget {self.name!r}: spread (scope is {what}): exact accounting; enforcement lags by the time "
            "other partitions' committed spend takes to reach this worker through the changelog (about the "
            "commit interval plus 0.1-0.5 s); produce records keyed by the scope value for exact enforcement"
        )


def check_names_unique(budgets: list[BudgetConfig]) -> list[str]:
    """Problems (``budgets[i].name: ...``) for names used twice."""
    seen: dict[str, int] = {}
    out = []
    for i, b in enumerate(budgets):
        j = seen.setdefault(b.name, i)
        if j != i:
            out.append(f"budgets[{i}].name: {b.name!r} is already the name of budgets[{j}]")
    return out


SCOPE_VALUE = re.compile(r"^[^\x00-\x1f]{1,512}$")
