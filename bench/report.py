"""What a benchmark reports: its :class:`Result`, :class:`Table` and :class:`Headline` figures,
how a table prints, and the small numeric helpers the reports share (ratios, percentiles, load).

Plain data and formatting only: no Kafka, no processes, so every benchmark and ``__main__`` can
build and print results without pulling in the machinery that measured them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]

    def render(self) -> str:
        cells = [[_fmt(c) for c in row] for row in self.rows]
        widths = [
            max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(self.headers)
        ]
        line = "  ".join("-" * w for w in widths)
        out = [
            f"  {self.title}",
            "  " + "  ".join(h.ljust(w) for h, w in zip(self.headers, widths)),
            "  " + line,
        ]
        for r in cells:
            out.append("  " + "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
        return "\n".join(out)

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join(out)


@dataclass
class Headline:
    """The figure a benchmark is judged by: a ratio (or size) against its target."""

    what: str
    value: float | None
    target: str = ""
    met: bool | None = None
    text: str = ""


@dataclass
class Result:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    error: str | None = None


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|×|x|µs|ms|s|MB|/s|B)?", text.strip()))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]
