"""An example of a custom strategy (``type: custom``), for the docs and the tests.

Routes by prompt length: prompts of at least ``threshold`` characters go to ``long``, shorter
ones to ``short``. Use it as::

    - type: custom
      name: by-length
      class: "router_stream_dev.example_strategy:ByLength"
      config: {threshold: 200, short: cheap, long: smart}
      candidates: [cheap, smart]

The whole contract is in :mod:`router_stream.routing.custom`: a class with an ``async decide``;
its ``__init__`` takes ``config`` (and here ``name`` and ``candidates``) because it declares
``config``. It imports only public names (``from router_stream import ...``), as a strategy
outside this package does.
"""

from __future__ import annotations

from typing import Any

from router_stream import Decision, Request, RoutingContext


class ByLength:
    """Long prompts to ``long``, short ones to ``short``; abstains when a name is not a candidate."""

    def __init__(self, name: str, config: dict[str, Any], candidates: tuple[str, ...]) -> None:
        threshold = config.get("threshold", 200)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be a non-negative integer (got {threshold!r})")
        self.name = name
        self.threshold = threshold
        self.short = str(config.get("short", candidates[0] if candidates else "cheap"))
        self.long = str(config.get("long", candidates[-1] if candidates else "smart"))
        self.candidates = candidates

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        length = len(request.text())
        pick = self.long if length >= self.threshold else self.short
        if pick not in ctx.candidates:
            ctx.explain(f"{pick!r} is not a candidate here")
            return None
        side = ">=" if length >= self.threshold else "<"
        return Decision(
            pick,
            reason=f"prompt length {length} {side} {self.threshold}",
            detail={"length": length, "threshold": self.threshold},
        )


class ByLengthPlain:
    """The same rule with the plain constructor form: ``cls(**config)``."""

    def __init__(self, threshold: int = 200, short: str = "cheap", long: str = "smart") -> None:
        self.name = "by-length-plain"
        self.threshold, self.short, self.long = threshold, short, long

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        length = len(request.text())
        return Decision(
            self.long if length >= self.threshold else self.short,
            reason=f"prompt length {length}",
            detail={"length": length},
        )
