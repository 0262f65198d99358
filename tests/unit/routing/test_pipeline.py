"""The strategy pipeline: the first decision wins, every verdict is recorded, else the default."""

from __future__ import annotations

from router_stream.routing.base import Decision, RoutingContext
from router_stream.routing.pipeline import Pipeline
from router_stream.schemas import Request


class _Fixed:
    def __init__(self, name, answer, boom=False):
        self.name, self.answer, self.boom = name, answer, boom

    async def decide(self, request, ctx):
        if self.boom:
            raise RuntimeError("broken strategy")
        if self.answer is None:
            ctx.explain("not my case")
            return None
        return Decision(self.answer)


async def test_pipeline_first_decision_wins_and_records_every_verdict():
    p = Pipeline(
        [
            _Fixed("a", None),
            _Fixed("b", "ghost"),
            _Fixed("c", None, boom=True),
            _Fixed("d", "smart"),
            _Fixed("e", "cheap"),
        ],
        ("cheap", "smart"),
        "cheap",
    )
    routed = await p.route(Request(request_id="r", prompt="x"), RoutingContext("k", ("cheap", "smart")))
    assert routed.candidate == "smart" and routed.decided_by == "d" and routed.cacheable
    assert [v.outcome for v in routed.verdicts] == ["abstained", "miss", "error", "chose"]
    assert routed.verdicts[0].reason == "not my case"


async def test_pipeline_falls_to_default_uncached():
    p = Pipeline([_Fixed("a", None)], ("cheap", "smart"), "smart")
    routed = await p.route(Request(request_id="r", prompt="x"), RoutingContext("k", ("cheap", "smart")))
    assert (routed.candidate, routed.decided_by, routed.cacheable) == ("smart", "default", False)
