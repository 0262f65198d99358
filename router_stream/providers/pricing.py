"""What a call costs, in USD: the one formula every cost in the router comes from.

Candidates carry their prices per 1,000 tokens (``price_input_per_1k``, ``price_output_per_1k``);
a call that ran is priced from its usage, a call still to run (a budget's admission, a judge's
``max_cost_usd``, ``optimize: by: price``) from an estimate of its tokens. The Batch API bills at a
discount (``batch_api.discount``), passed as ``discount``. Keeping the formula here means the audit's
``estimated_cost_usd``, the budgets' spend and the strategies' estimates can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FREE", "Priced", "Prices", "cost_usd"]


class Priced(Protocol):
    """Anything with per-1k-token prices: a candidate's config, or :class:`Prices`."""

    @property
    def price_input_per_1k(self) -> float: ...

    @property
    def price_output_per_1k(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Prices:
    """Per-1k-token prices on their own, for callers that keep prices apart from a candidate."""

    price_input_per_1k: float = 0.0
    price_output_per_1k: float = 0.0


#: the prices of a candidate that has none (or is unknown): every call costs nothing
FREE = Prices()


def cost_usd(prices: Priced, input_tokens: float, output_tokens: float, *, discount: float = 1.0) -> float:
    """USD for ``input_tokens`` in and ``output_tokens`` out at ``prices``, times ``discount``
    (``batch_api.discount`` for a Batch API call, 1 otherwise)."""
    return (
        discount
        * (input_tokens * prices.price_input_per_1k + output_tokens * prices.price_output_per_1k)
        / 1000.0
    )
