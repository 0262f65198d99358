"""One builder of Response and Audit (processing/answers.py) for every path, and one trace list."""

from __future__ import annotations

import json

from router_stream.processing.answers import MAX_PRODUCED_RECORD_BYTES, Answers, RoutingFacts
from router_stream.processing.trace import TRACE_HEADERS, trace_headers
from router_stream.providers.base import Completion
from router_stream.providers.call_result import CallResult
from router_stream.schemas import Attempt, Request, Usage, Verdict

SOURCE = {"topic": "requests", "partition": 3, "offset": 41}


def facts(**over) -> RoutingFacts:
    values = {
        "request": Request.model_validate(
            {"request_id": "r1", "prompt": "hi", "stream": False, "fields": {"tenant": "acme"}}
        ),
        "key": "acme",
        "kafka_key": b"\xff\x00binary",
        "chosen": "cheap",
        "decided_by": "rules",
        "verdicts": [Verdict(strategy="rules", outcome="chose", candidate="cheap", reason="short")],
        "cache_hit": False,
        "sticky": None,
        "source": SOURCE,
        "received_at": 1_000,
        "headers": {"traceparent": "00-abc"},
    }
    values.update(over)
    return RoutingFacts(**values)


def completion(text: str = "hello", **over) -> Completion:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    return Completion(text=text, provider_model="m", usage=usage, latency_ms=12.0, **over)


def test_an_online_answer_carries_the_routing_the_call_and_the_request_notes():
    result = CallResult(
        completion(),
        "strong",  # a fallback answered
        [
            Attempt(candidate="cheap", outcome="error", latency_ms=1.25),
            Attempt(candidate="strong", outcome="ok"),
        ],
        cost_usd=0.002,
        batch={"id": "b1", "size": 2, "position": 0},
    )
    response, audit, delivered = Answers("w-1", None).answered(facts(budgets=[{"budget": "b"}]), result)
    assert delivered and response.output == "hello" and response.error is None
    assert response.candidate == "strong" and response.latency_ms == 1.25 and response.batch == result.batch
    assert (audit.chosen, audit.served_by, audit.decided_by, audit.key) == (
        "cheap",
        "strong",
        "rules",
        "acme",
    )
    assert [a.candidate for a in audit.attempts] == ["cheap", "strong"]
    assert audit.estimated_cost_usd == 0.002 and audit.budgets == [{"budget": "b"}]
    assert audit.worker_id == "w-1" and audit.source == SOURCE and audit.headers == {"traceparent": "00-abc"}
    assert audit.ignored_fields == ["stream"]  # the request's own notes, on every path


def test_an_answer_no_record_can_carry_is_an_error_but_the_audit_says_who_served_it():
    huge = completion("x" * MAX_PRODUCED_RECORD_BYTES)
    result = CallResult(huge, "cheap", [Attempt(candidate="cheap", outcome="ok")], cost_usd=0.5)
    response, audit, delivered = Answers("w", None).answered(facts(), result)
    assert not delivered and response.error_kind == "answer_too_large" and response.output is None
    assert audit.served_by == "cheap" and audit.error == response.error and audit.estimated_cost_usd == 0.5


def test_a_refusal_before_any_call_has_no_attempts_and_costs_nothing():
    refused = CallResult(None, None, error="over budget", error_kind="budget_exceeded")
    response, audit, delivered = Answers("w", None).answered(facts(), refused)
    assert not delivered and response.candidate == "cheap" and response.latency_ms == 0.0
    assert response.error_kind == "budget_exceeded" and audit.error == "over budget"
    assert audit.served_by is None and audit.attempts == [] and audit.estimated_cost_usd == 0.0


def test_a_parked_request_comes_back_with_the_same_facts():
    before = facts(
        sticky={"strategy": "rules", "candidate": "cheap"}, budgets=[{"budget": "b", "state": "ok"}]
    )
    entry = json.loads(before.parked_entry([{"hold": 1}]))
    assert entry["job"] is None and entry["budget_holds"] == [{"hold": 1}]
    after = RoutingFacts.from_parked(entry)
    assert after == before  # the binary Kafka key, the verdicts and the request survive the changelog


def test_a_repeat_is_the_first_response_again_with_its_own_audit():
    first = Answers("w", None).answered(facts(), CallResult(completion(), "cheap", [], cost_usd=0.1)).response
    again, audit = Answers("w2", None).repeat(first, "acme", {"offset": 99}, 2_000, {})
    assert again.duplicate and again.output == first.output and again.request_id == "r1"
    assert audit.decided_by == "duplicate" and audit.duplicate and audit.served_by == "cheap"
    assert audit.source == {"offset": 99} and audit.ignored_fields is None
    _, noted = Answers("w2", None).repeat(first, "acme", {}, 2_000, {}, facts().request)
    assert noted.ignored_fields == ["stream"]


def test_only_trace_headers_travel_whatever_their_case_and_never_a_long_one():
    headers = (
        ("TraceParent", b"00-abc"),
        ("authorization", b"Bearer sk-secret"),
        ("baggage", b"x" * 513),
        ("x-request-id", b"\xffid"),
    )
    assert trace_headers(headers) == {"traceparent": "00-abc", "x-request-id": "\ufffdid"}
    assert "authorization" not in TRACE_HEADERS
