"""Per-tenant budgets kept exactly in the stream: spend is committed with the answer.

Internal to router-stream (the public surface is :mod:`router_stream`). The names the rest of
the package uses: :class:`BudgetConfig` (the ``budgets:`` config), :class:`Ledger` (admission and
settlement), :class:`ChangelogTotals` (other partitions' committed spend, for spread budgets).
"""

from .ledger import Admission, Ledger, spend_key
from .limits import BudgetConfig
from .totals import ChangelogTotals

__all__ = ["Admission", "BudgetConfig", "ChangelogTotals", "Ledger", "spend_key"]
