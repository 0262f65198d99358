"""One scope's spend for one budget: the state value behind an ``s:<budget>\\0<scope>`` key.

Amounts are integers in micro-USD (sums stay exact). A calendar budget keeps the spend of its
current window (``w``: the window's start; ``u``/``t``: micro-USD and tokens). A rolling budget
keeps its spend per bucket (``b``: bucket start -> [micro-USD, tokens]); what counts is the sum
of the buckets still inside the window. Reservations (``ru``/``rt``) are the estimates of
requests admitted and not yet settled (Batch API requests waiting for their job), whatever the
window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .windows import Window

MICRO = 1_000_000
SPEND_PREFIX = b"s:"


def spend_key(budget: str, scope: str) -> bytes:
    """State key of one budget's spend for one scope value."""
    return SPEND_PREFIX + budget.encode() + b"\x00" + scope.encode("utf-8", "surrogatepass")


def split_spend_key(key: bytes) -> tuple[str, str] | None:
    """``(budget, scope)`` of a :func:`spend_key`, or None for another key."""
    if not key.startswith(SPEND_PREFIX) or b"\x00" not in key:
        return None
    name, _, scope = key[len(SPEND_PREFIX) :].partition(b"\x00")
    return name.decode(), scope.decode("utf-8", "surrogatepass")


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


@dataclass
class Entry:
    """See the module docstring."""

    window: int = 0
    usd: int = 0
    tokens: int = 0
    reserved_usd: int = 0
    reserved_tokens: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # rolling budgets only

    @classmethod
    def load(cls, raw: bytes | None) -> Entry:
        if not raw:
            return cls()
        d = json.loads(raw)
        buckets = {int(k): [int(v[0]), int(v[1])] for k, v in (d.get("b") or {}).items()}
        return cls(
            int(d.get("w", 0)),
            int(d.get("u", 0)),
            int(d.get("t", 0)),
            int(d.get("ru", 0)),
            int(d.get("rt", 0)),
            buckets,
        )

    def dump(self) -> bytes:
        d: dict[str, object] = {
            "w": self.window,
            "u": self.usd,
            "t": self.tokens,
            "ru": self.reserved_usd,
            "rt": self.reserved_tokens,
        }
        if self.buckets:
            d["b"] = {str(k): v for k, v in sorted(self.buckets.items())}
        return json.dumps(d, separators=(",", ":")).encode()

    def spent(self, period: Window, now_start: int) -> tuple[int, int]:
        """(micro-USD, tokens) settled in the window current at ``now_start`` (reservations apart).
        Calendar: the stored window's spend if it is the current one (a clock that stepped back
        keeps counting in the newer window), else nothing. Rolling: the live buckets."""
        if period.rolling:
            live = [v for start, v in self.buckets.items() if period.live(start, max(now_start, self.window))]
            return sum(v[0] for v in live), sum(v[1] for v in live)
        return (self.usd, self.tokens) if self.window >= now_start else (0, 0)

    def charge(self, period: Window, start: int, usd: int, tokens: int) -> None:
        """Add a settled cost to the window (calendar) or bucket (rolling) starting at ``start``.
        Calendar: charged to the newer of the stored and the given window (a request admitted just
        before midnight and settled after it counts in the new day when something already did)."""
        if period.rolling:
            bucket = self.buckets.setdefault(start, [0, 0])
            bucket[0] += usd
            bucket[1] += tokens
            self.window = max(self.window, start)
            self.buckets = {s: v for s, v in self.buckets.items() if period.live(s, self.window)}
            self.usd = sum(v[0] for v in self.buckets.values())
            self.tokens = sum(v[1] for v in self.buckets.values())
            return
        if self.window < start:
            self.window, self.usd, self.tokens = start, 0, 0
        self.usd += usd
        self.tokens += tokens

    def clear(self) -> tuple[int, int]:
        """Forget the settled spend (an operator's reset); returns what it was. Reservations stay."""
        before = (self.usd, self.tokens)
        self.usd, self.tokens, self.buckets = 0, 0, {}
        return before
