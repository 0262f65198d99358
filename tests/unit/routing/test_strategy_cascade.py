"""The cascade strategy: cheapest first, escalate on a validator's rejection, over real HTTP."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import pytest

from router_stream.config import RouterConfig, parse_config
from router_stream.errors import ConfigError
from router_stream.processing.cascade_runner import run_cascade
from router_stream.providers.resilience import Dispatcher
from router_stream.routing.base import RoutingContext
from router_stream.routing.cascade import CascadeConfig, CascadePlan
from router_stream.routing.cascade_validators import (
    JsonSchemaValidator,
    JudgeValidator,
    schema_problems,
    strip_fence,
)
from router_stream.routing.strategy_config import BuildContext
from router_stream.runtime import build_context, build_pipeline
from router_stream.schemas import Request
from router_stream_dev.model_server import ModelServer

KEY = "sk-cascade-secret-7"
PRICES = {"cheap": (1.0, 2.0), "strong": (10.0, 20.0), "judge": (0.5, 0.5)}
REQ = Request(request_id="r1", prompt="what is the capital of France?")


@pytest.fixture
async def servers(monkeypatch):
    monkeypatch.setenv("RS_CASCADE_KEY", KEY)
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(ModelServer(name, provider_model=f"{name}-v1", api_key=KEY))
            for name in PRICES
        }


def config(servers: dict[str, ModelServer], validator: dict[str, Any], **cascade: Any) -> RouterConfig:
    candidates = {
        name: {
            "base_url": srv.base_url,
            "model": f"{name}-model",
            "api_key_env": "RS_CASCADE_KEY",
            "request_timeout_ms": 2000,
            "max_retries": 0,
            "price_input_per_1k": PRICES[name][0],
            "price_output_per_1k": PRICES[name][1],
        }
        for name, srv in servers.items()
    }
    strategy = {
        "type": "cascade",
        "name": "cheap-first",
        "candidates": ["cheap", "strong"],
        "validator": validator,
        **cascade,
    }
    return parse_config({"candidates": candidates, "default": "cheap", "strategies": [strategy]}, environ={})


@pytest.fixture
async def run(servers):
    """``await run(validator, **cascade)`` -> (CascadeResult, Decision) through the real pipeline."""
    dispatchers: list[Dispatcher] = []

    async def go(
        validator: dict[str, Any],
        request: Request = REQ,
        deadline_s: float = 10.0,
        clock=time.monotonic,
        **cascade: Any,
    ):
        cfg = config(servers, validator, **cascade)
        d = Dispatcher(cfg)
        dispatchers.append(d)
        routed = await build_pipeline(cfg).route(
            request, RoutingContext(key="k", candidates=tuple(cfg.candidates))
        )
        assert routed.decided_by == "cheap-first" and routed.candidate == "cheap" and not routed.cacheable
        assert isinstance(routed.plan, CascadePlan)
        return await run_cascade(d, request, routed.plan, time.monotonic() + deadline_s, clock=clock)

    yield go
    for d in dispatchers:
        await d.aclose()


def step_view(result) -> list[tuple[str, bool, bool]]:
    return [(s["candidate"], s["accepted"], s["served"]) for s in result.cascade]


# ---- (a) the cheap answer passes -------------------------------------------------------------
async def test_cheap_answer_that_passes_is_one_step_and_one_call(run, servers):
    result = await run({"type": "min_length", "chars": 10})
    assert result.ok and result.served_by == "cheap"
    assert result.completion.text.startswith("[cheap] answer to:")
    assert step_view(result) == [("cheap", True, True)]
    assert servers["cheap"].stats()["calls"] == 1 and servers["strong"].stats()["calls"] == 0
    assert len(result.attempts) == 1 and result.attempts[0].candidate == "cheap"
    usage = result.completion.usage
    assert result.cost_usd == pytest.approx(
        (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1000
    )
    assert result.cascade[0]["cost_usd"] == pytest.approx(result.cost_usd)


async def test_the_decision_names_the_cascade_and_is_not_cacheable():
    strategy = CascadeConfig.model_validate(
        {"type": "cascade", "candidates": ["a", "b", "c"], "validator": {"type": "min_length", "chars": 3}}
    ).build(BuildContext())
    decision = await strategy.decide(REQ, RoutingContext(key="k", candidates=("a", "b", "c")))
    assert decision.candidate == "a" and decision.reason == "cascade" and decision.cacheable is False
    assert decision.detail == {"cascade": ["a", "b", "c"], "validator": "min_length"}
    assert decision.plan.candidates == ("a", "b", "c") and decision.plan.when_all_rejected == "last"


# ---- (b) a rejected cheap answer escalates -----------------------------------------------------
async def test_regex_rejection_escalates_and_sums_the_cost(run, servers):
    result = await run({"type": "regex", "pattern": r"^\[strong\]"})
    assert result.ok and result.served_by == "strong" and result.completion.text.startswith("[strong]")
    assert step_view(result) == [("cheap", False, False), ("strong", True, True)]
    assert result.cascade[0]["reason"] == "does not match the pattern"
    assert [a.candidate for a in result.attempts] == ["cheap", "strong"]
    costs = [s["cost_usd"] for s in result.cascade]
    assert all(c > 0 for c in costs) and costs[1] > costs[0]
    assert result.cost_usd == pytest.approx(sum(costs))
    assert servers["cheap"].stats()["calls"] == servers["strong"].stats()["calls"] == 1


async def test_regex_must_not_match(run):
    result = await run({"type": "regex", "pattern": r"\[cheap\]", "must_match": False})
    assert step_view(result) == [("cheap", False, False), ("strong", True, True)]
    assert result.cascade[0]["reason"] == "matches a forbidden pattern"


async def test_a_failed_step_escalates_with_the_error_as_reason(run, servers):
    servers["cheap"].script("500")
    result = await run({"type": "min_length", "chars": 5})
    assert result.served_by == "strong"
    assert step_view(result) == [("cheap", False, False), ("strong", True, True)]
    assert result.cascade[0]["served_by"] is None and result.cascade[0]["cost_usd"] == 0
    assert result.cascade[0]["reason"].startswith("no answer (server_error)")
    assert [(a.candidate, a.outcome) for a in result.attempts] == [("cheap", "error"), ("strong", "ok")]


# ---- (c) JSON schema -------------------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "string", "minLength": 2}, "n": {"type": "integer"}},
}


async def test_json_schema_rejects_invalid_json_and_accepts_valid(run, servers):
    servers["cheap"].set_faults(answer="Sure! The answer is Paris.")
    servers["strong"].set_faults(answer='```json\n{"answer": "Paris", "n": 3}\n```')
    result = await run({"type": "json_schema", "schema": SCHEMA})
    assert step_view(result) == [("cheap", False, False), ("strong", True, True)]
    assert result.cascade[0]["reason"].startswith("not JSON")
    assert result.completion.text.startswith(
        "```json"
    )  # served as answered; the fence is only stripped to check


async def test_json_schema_rejects_json_that_breaks_the_schema(run, servers):
    servers["cheap"].set_faults(answer='{"n": 1.5}')
    servers["strong"].set_faults(answer='{"answer": "Paris"}')
    result = await run({"type": "json_schema", "schema": SCHEMA})
    assert step_view(result) == [("cheap", False, False), ("strong", True, True)]
    assert "missing required property 'answer'" in result.cascade[0]["reason"]
    assert "$.n: expected integer" in result.cascade[0]["reason"]


def test_schema_subset():
    assert schema_problems({"answer": "ok", "n": 2.0}, SCHEMA) == []
    assert schema_problems({"answer": "x"}, SCHEMA) == ["$.answer: shorter than 2 characters"]
    assert schema_problems([1, "a"], {"type": "array", "items": {"type": ["integer", "null"]}}) == [
        "$[1]: expected integer or null, got str"
    ]
    assert schema_problems(True, {"enum": [1, "a"]}) == ["$: 'True' is not one of the allowed values"]
    assert schema_problems(1, {"enum": [1.0]}) == []
    assert schema_problems(True, {"type": "integer"})  # a boolean is no integer
    assert strip_fence("  ```\n[1]\n```  ") == "[1]" and strip_fence('{"a": 1}') == '{"a": 1}'
    v = JsonSchemaValidator.model_validate({"type": "json_schema", "schema": {"type": "string"}})
    assert v.check('"fine"').accepted and not v.check("fine").accepted


# ---- (d) everything rejected -------------------------------------------------------------------------
async def test_all_rejected_serves_the_last_answer_marked_as_rejected(run, servers):
    result = await run({"type": "min_length", "chars": 1000})
    assert result.ok and result.served_by == "strong" and result.error is None
    assert step_view(result) == [("cheap", False, False), ("strong", False, True)]
    assert "served anyway (all rejected, when_all_rejected: last)" in result.cascade[1]["reason"]
    assert result.cost_usd == pytest.approx(sum(s["cost_usd"] for s in result.cascade))


async def test_best_effort_serves_the_best_ranked_rejected_answer(run, servers):
    servers["cheap"].set_faults(answer="a rather long answer, though not long enough")
    servers["strong"].set_faults(answer="short")
    result = await run({"type": "min_length", "chars": 1000}, when_all_rejected="best_effort")
    assert result.served_by == "cheap" and result.completion.text.startswith("a rather long")
    assert step_view(result) == [("cheap", False, True), ("strong", False, False)]


async def test_nobody_answering_is_an_error(run, servers):
    servers["cheap"].script("500")
    servers["strong"].script("503")
    result = await run({"type": "min_length", "chars": 1})
    assert not result.ok and result.error.startswith("cascade: no candidate answered: cheap: no answer")
    assert result.error_kind == "server_error"
    assert step_view(result) == [("cheap", False, False), ("strong", False, False)]


# ---- (e) the deadline ------------------------------------------------------------------------------
async def test_no_step_starts_after_the_deadline(run, servers):
    ticks = iter([0.0])  # the first step starts in time; afterwards the deadline has passed

    def clock() -> float:
        return next(ticks, float("inf"))

    result = await run({"type": "min_length", "chars": 1000}, clock=clock)
    assert servers["strong"].stats()["calls"] == 0
    assert result.served_by == "cheap"  # the rejected answer we have, per when_all_rejected: last
    assert step_view(result) == [("cheap", False, True), ("strong", False, False)]
    assert (
        result.cascade[1]["skipped"] is True
        and result.cascade[1]["reason"] == "deadline passed before this step"
    )


async def test_a_slow_cheap_step_uses_up_the_deadline(run, servers):
    servers["cheap"].set_faults(latency_ms=1000)
    result = await run({"type": "min_length", "chars": 1}, deadline_s=0.2)
    assert not result.ok and result.error_kind == "deadline_exceeded"
    assert servers["strong"].stats()["calls"] == 0
    assert [s.get("skipped", False) for s in result.cascade] == [False, True]


async def test_a_passed_deadline_calls_nobody(run, servers):
    result = await run({"type": "min_length", "chars": 1}, deadline_s=-1)
    assert not result.ok and result.error_kind == "deadline_exceeded" and result.attempts == []
    assert servers["cheap"].stats()["calls"] == servers["strong"].stats()["calls"] == 0


# ---- the judge validator -------------------------------------------------------------------------------
async def test_judge_says_no_then_yes(run, servers):
    servers["judge"].set_faults(answer="No.")
    result = await run({"type": "judge", "candidate": "judge"})
    # the same fixed judge reply for both steps: both rejected, the last served
    assert step_view(result) == [("cheap", False, False), ("strong", False, True)]
    assert result.cascade[0]["reason"] == "judge 'judge' said no"
    assert [a.candidate for a in result.attempts] == ["cheap", "judge", "strong", "judge"]
    assert all(s["judge_cost_usd"] > 0 for s in result.cascade)
    assert result.cost_usd == pytest.approx(sum(s["cost_usd"] + s["judge_cost_usd"] for s in result.cascade))
    body = servers["judge"].stats()["last_body"]
    content = body["messages"][-1]["content"]
    assert '"what is the capital of France?"' in content and '"[strong] answer to: what' in content

    servers["judge"].set_faults(answer="Yes, it is acceptable")
    result = await run({"type": "judge", "candidate": "judge"})
    assert step_view(result) == [("cheap", True, True)]


async def test_judge_failure_accepts_with_a_note(run, servers):
    servers["judge"].script("500")
    result = await run({"type": "judge", "candidate": "judge"})
    assert step_view(result) == [("cheap", True, True)]
    assert result.cascade[0]["reason"] == "judge 'judge' failed (server_error): accepted unchecked"
    servers["judge"].set_faults(answer="I cannot say")
    result = await run({"type": "judge", "candidate": "judge"})
    assert result.cascade[0]["reason"] == "judge 'judge' gave no yes/no: accepted unchecked"
    assert servers["strong"].stats()["calls"] == 0


def test_judge_reply_parsing_and_prompt():
    v = JudgeValidator.model_validate({"type": "judge", "candidate": "j", "prompt": "Q {request} A {answer}"})
    assert (
        v.parse("Yes") is True and v.parse("**no**, because") is False and v.parse("nope, yesterday") is None
    )
    assert v.parse("no" * 200) is None and v.parse(None) is None
    assert v.judge_request(REQ, 'say "yes"').messages[0].content == (
        'Q "what is the capital of France?" A "say \\"yes\\""'
    )


# ---- (f) config errors ---------------------------------------------------------------------------
def config_error(servers, validator: dict[str, Any], **cascade: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config(servers, validator, **cascade)
    return str(info.value)


async def test_config_errors_name_the_field(servers):
    msg = config_error(servers, {"type": "regex", "pattern": "([a-z"})
    assert msg.startswith("strategies[0].validator.pattern: invalid regex '([a-z'"), msg
    msg = config_error(servers, {"type": "regex", "pattern": r"^(\w+\s?)*$"})  # it runs over model answers
    assert msg.startswith("strategies[0].validator.pattern: regex ") and "nested quantifier" in msg, msg
    msg = config_error(servers, {"type": "min_length", "chars": 3}, candidates=["cheap", "nope"])
    assert msg == "strategies[0].candidates[1]: 'nope' is not a candidate (known: cheap, judge, strong)"
    msg = config_error(servers, {"type": "min_length", "chars": 3}, candidates=["cheap"])
    assert msg.startswith("strategies[0].candidates: a cascade needs at least 2 candidates"), msg
    msg = config_error(servers, {"type": "min_length", "chars": 3}, candidates=["cheap", "cheap"])
    assert msg.startswith("strategies[0].candidates: a candidate appears twice"), msg
    msg = config_error(servers, {"type": "judge", "candidate": "oracle"})
    assert (
        msg == "strategies[0].validator.candidate: 'oracle' is not a candidate (known: cheap, judge, strong)"
    )
    msg = config_error(servers, {"type": "judge", "candidate": "judge", "prompt": "ok?"})
    assert "strategies[0].validator.prompt: the judge prompt must contain {answer}" in msg
    msg = config_error(
        servers, {"type": "json_schema", "schema": {"type": "object", "additionalProperties": False}}
    )
    assert "strategies[0].validator.schema: schema: unsupported keyword(s) additionalProperties" in msg
    msg = config_error(servers, {"type": "json_schema", "schema": {"properties": {"a": {"type": "text"}}}})
    assert "schema.properties.a.type" in msg
    msg = config_error(servers, {"type": "spellcheck"})
    assert msg.startswith("strategies[0].validator"), msg


async def test_a_batch_mode_candidate_cannot_be_in_a_cascade(servers):
    cfg = config(servers, {"type": "min_length", "chars": 3})
    cfg.candidates["strong"].mode = "batch"
    with pytest.raises(ConfigError, match=r"candidates\[1\] 'strong' has mode: batch"):
        build_pipeline(cfg)


# ---- the handler -----------------------------------------------------------------------------------
async def test_handler_puts_the_cascade_steps_in_the_audit(servers):
    from router_stream.processing.handler import Handler
    from router_stream.processing.partition import Source, StateView

    cfg = config(servers, {"type": "regex", "pattern": r"^\[strong\]"})
    d = Dispatcher(cfg)
    handler = Handler(cfg, build_pipeline(cfg), d, "w1")
    view = StateView({})  # type: ignore[arg-type]
    try:
        outcome = await handler.handle(
            Source("requests", 0, 7, b"user-1", REQ.model_dump_json().encode()), view
        )
    finally:
        await d.aclose()
    response, audit = outcome.response, outcome.audit
    assert (
        response.error is None and response.candidate == "strong" and response.output.startswith("[strong]")
    )
    assert audit.chosen == "cheap" and audit.served_by == "strong" and audit.decided_by == "cheap-first"
    assert [(s["candidate"], s["accepted"]) for s in audit.cascade] == [("cheap", False), ("strong", True)]
    assert audit.estimated_cost_usd == pytest.approx(sum(s["cost_usd"] for s in audit.cascade))
    assert [a.candidate for a in audit.attempts] == ["cheap", "strong"]
    assert audit.verdicts[-1].detail == {"cascade": ["cheap", "strong"], "validator": "regex"}
    # the audit record round-trips, and the decision was not cached for the key
    assert type(audit).model_validate_json(audit.model_dump_json()).cascade == audit.cascade
    assert b'"decision":null' in next(v for k, v in view.pending.items() if b"user-1" in k)


def test_a_cascade_not_listed_cheapest_first_is_warned_about_at_build(caplog):
    def build(order):
        cfg = parse_config(
            {
                "candidates": {
                    "cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c", "price_input_per_1k": 0.1},
                    "smart": {"base_url": "http://127.0.0.1:9/v1", "model": "s", "price_input_per_1k": 2.0},
                },
                "default": "cheap",
                "strategies": [
                    {
                        "type": "cascade",
                        "name": "c1",
                        "candidates": order,
                        "validator": {"type": "min_length", "chars": 1},
                    }
                ],
            },
            environ={},
        )
        caplog.clear()
        cfg.strategies[0].build(build_context(cfg))
        return [r.getMessage() for r in caplog.records if r.name == "router_stream.routing.cascade"]

    assert build(["cheap", "smart"]) == []
    (warning,) = build(["smart", "cheap"])
    assert "candidates[1] 'cheap'" in warning and "cheaper than candidates[0] 'smart'" in warning
