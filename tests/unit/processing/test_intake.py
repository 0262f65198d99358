"""Classification at the door (router_stream.processing.intake).

Property-based: over arbitrary bytes and arbitrary JSON the classifier never raises (we call the
inner ``_classify`` so the defence-in-depth ``except`` cannot hide a bug) and always yields
exactly one of a valid :class:`Request` or a :class:`Poison` with a documented reason; whatever it
yields can be written to Kafka (a response / dead letter built from it serialises to UTF-8 JSON).
Then one example per reason code, and the handler's use of it (context window, duplicates).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from router_stream.processing.intake import (
    MAX_REQUEST_ID_CHARS,
    REASONS,
    Poison,
    _classify,
    classify,
    context_limit,
)
from router_stream.schemas import SCHEMA_VERSION, DeadLetter, Request, Response

DOCS = Path(__file__).resolve().parents[3] / "docs" / "dead-letters.md"
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_outcome(
    value: bytes | None, max_bytes: int = 1_000_000, max_tokens: int | None = None
) -> Request | Poison:
    """The invariants every outcome must satisfy; returns it for more specific checks."""
    out = _classify(value, max_bytes, max_tokens)  # must not raise: no safety net here
    assert isinstance(out, (Request, Poison)) and not (isinstance(out, Request) and isinstance(out, Poison))
    assert classify(value, max_bytes, max_tokens) == out
    if currently_in_test_context():  # --hypothesis-show-statistics shows how often each outcome came
        event(out.reason if isinstance(out, Poison) else "request")
    if isinstance(out, Poison):
        assert out.reason in REASONS and out.reason != "internal_error", out
        assert isinstance(out.message, str) and out.message.strip()
        if out.request_id is not None:
            assert isinstance(out.request_id, str) and out.request_id.strip()
            assert len(out.request_id) <= MAX_REQUEST_ID_CHARS
        # the dead letter for it can be produced (UTF-8 JSON) and carries the original bytes
        dl = DeadLetter(
            reason=out.reason,
            message=out.message,
            error_class="PoisonRecord",
            topic="t",
            partition=0,
            offset=1,
            value_b64=base64.b64encode(value).decode() if value is not None else None,
            request_id=out.request_id,
        )
        back = json.loads(dl.model_dump_json(exclude_none=True).encode("utf-8"))
        assert back["reason"] == out.reason
        if value is not None:
            assert base64.b64decode(back["value_b64"]) == value
    else:
        assert value is not None and len(value) <= max_bytes
        assert out.request_id.strip() and len(out.request_id) <= MAX_REQUEST_ID_CHARS
        assert out.messages or out.prompt
        assert 1 <= out.schema_version <= SCHEMA_VERSION
        # a response and the request itself serialise (no lone surrogates, no NaN)
        Response(request_id=out.request_id, output=out.text()).model_dump_json().encode("utf-8")
        json.dumps(out.model_dump(), allow_nan=False, ensure_ascii=False).encode("utf-8")
    return out


# ---------------------------------------------------------------- properties over arbitrary input
@PROPS
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff")
@example(b"\xef\xbb\xbf{}")
@example(b"[" * 50_000)
@example(b'{"a":' * 50_000)
@example(b'{"request_id": "\\ud800", "prompt": "x"}')
@example(b'{"request_id": "a", "prompt": NaN}')
@example(b'{"request_id": "a", "prompt": "x", "deadline_ms": 1' + b"0" * 400 + b"}")
@example(b'{"request_id": "a", "prompt": "x", "schema_version": 1' + b"0" * 5000 + b"}")
def test_arbitrary_bytes(value: bytes) -> None:
    check_outcome(value)


@PROPS
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_size_limit_is_exact(value: bytes, limit: int) -> None:
    out = check_outcome(value, max_bytes=limit)
    assert (isinstance(out, Poison) and out.reason == "oversized") == (len(value) > limit)


# any text, surrogates included: with ensure_ascii=True they arrive as \udXXX escapes in valid UTF-8
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
FIELDS = ("schema_version", "request_id", "messages", "prompt", "fields", "params", "tags", "deadline_ms")


def _dump(data: Any, ascii_only: bool) -> bytes:
    return json.dumps(data, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@PROPS
@given(JSON, st.booleans())
def test_arbitrary_json(data: Any, ascii_only: bool) -> None:
    check_outcome(_dump(data, ascii_only))


# objects shaped like requests, each field valid, wrong or missing: reaches the deeper checks
VALID = {
    "schema_version": st.just(SCHEMA_VERSION) | st.sampled_from([str(SCHEMA_VERSION), float(SCHEMA_VERSION)]),
    "request_id": st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=8).filter(
        str.strip
    ),
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system"]), "content": ANY_TEXT}, optional={"name": ANY_TEXT}
        ),
        min_size=1,
        max_size=3,
    ),
    "prompt": ANY_TEXT.filter(bool),
    "fields": st.dictionaries(st.text(max_size=5), JSON, max_size=3),
    "params": st.dictionaries(st.text(max_size=5), JSON, max_size=3),
    "tags": st.lists(ANY_TEXT, max_size=3),
    "deadline_ms": st.integers(1, 10**6),
}
INVALID = {
    "schema_version": st.integers(-2, SCHEMA_VERSION + 2)
    | st.sampled_from(["2", 2.0, 2.5, True, None, "x", 10**30]),
    "request_id": st.sampled_from(["", "  ", "x" * 257, "\ud800", None, 5, ["a"], "a\x00b", "line\nbreak"]),
    "messages": st.sampled_from(
        [[], [{"role": "user"}], [{"content": "x"}], "hi", [{"role": 1, "content": "x"}]]
    ),
    "prompt": st.sampled_from(["", 5, None, ["x"]]),
    "fields": st.sampled_from([[], "x", 1]),
    "params": st.sampled_from([[], "x", 1]),
    "tags": st.sampled_from(["x", [1], {}]),
    "deadline_ms": st.integers(-5, 0) | st.sampled_from([10**20, 1.5, "soon", 2**53 + 1]),
}


@st.composite
def request_like(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in FIELDS:
        kind = draw(st.sampled_from(["valid", "valid", "valid", "absent", "absent", "invalid", "json"]))
        if kind == "valid":
            data[name] = draw(VALID[name])
        elif kind == "invalid":
            data[name] = draw(INVALID[name])
        elif kind == "json":
            data[name] = draw(JSON)
    if draw(st.integers(0, 9)) == 0:
        data[draw(ANY_TEXT)] = draw(JSON)
    return data


REQUEST_LIKE = request_like()


@PROPS
@given(REQUEST_LIKE, st.booleans(), st.none() | st.integers(1, 20))
def test_request_like_json(data: dict[str, Any], ascii_only: bool, max_tokens: int | None) -> None:
    value = _dump(data, ascii_only)
    out = check_outcome(value, max_tokens=max_tokens)
    if isinstance(out, Request):
        assert out.request_id == data["request_id"]
        assert out == Request.model_validate(data)  # the door accepts what the schema accepts
    elif out.reason == "invalid_request" and "deadline_ms" not in out.message:
        with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
            Request.model_validate(data)


REQUEST_ID = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=MAX_REQUEST_ID_CHARS
).filter(str.strip)


@PROPS
@given(
    REQUEST_ID, st.text(st.characters(codec="utf-8"), min_size=1, max_size=200), st.booleans(), st.booleans()
)
def test_valid_requests_are_accepted(rid: str, prompt: str, as_messages: bool, ascii_only: bool) -> None:
    body: dict[str, Any] = {"request_id": rid}
    if as_messages:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    out = check_outcome(_dump(body, ascii_only))
    assert isinstance(out, Request) and out.request_id == rid and out.text() == prompt


# ---------------------------------------------------------------- one example per reason
def _req(**kw: Any) -> bytes:
    return json.dumps({"request_id": "r1", "prompt": "hello", **kw}).encode()


CASES = [
    ("tombstone", None, None),
    ("oversized", b"{" + b" " * 2000 + b"}", None),
    ("not_utf8", b"\xff\xfe{}", None),
    ("not_utf8", b'{"request_id": "a", "prompt": "\\udc00"}', None),  # escaped lone surrogate
    ("not_utf8", b'{"request_id": "\\ud83d", "prompt": "x"}', None),
    ("not_json", b"{not json", None),
    ("not_json", b"", None),
    ("not_json", b"\xef\xbb\xbf" + _req(), None),  # a BOM is not JSON (RFC 8259 8.1)
    ("not_json", b'{"request_id": "a", "prompt": "x", "params": {"t": NaN}}', None),
    ("not_json", b"[" * 100_000 + b"]" * 100_000, None),
    ("wrong_shape", b"[1, 2, 3]", None),
    ("wrong_shape", b'"a string"', None),
    ("wrong_shape", b"null", None),
    ("wrong_shape", b"42", None),
    ("missing_request_id", json.dumps({"prompt": "x"}).encode(), None),
    ("missing_request_id", _req(request_id=""), None),
    ("missing_request_id", _req(request_id="   "), None),
    ("missing_request_id", _req(request_id=None), None),
    ("missing_request_id", _req(request_id=7), None),
    ("missing_request_id", _req(request_id=["a"]), None),
    ("missing_request_id", _req(request_id="x" * (MAX_REQUEST_ID_CHARS + 1)), None),
    ("unsupported_schema_version", _req(schema_version=SCHEMA_VERSION + 1), "r1"),
    ("unsupported_schema_version", _req(schema_version=99, request_id=None), None),
    ("unsupported_schema_version", _req(schema_version=str(SCHEMA_VERSION + 1)), "r1"),
    ("unsupported_schema_version", _req(schema_version=0), "r1"),
    ("unsupported_schema_version", _req(schema_version=-1), "r1"),
    ("invalid_request", json.dumps({"request_id": "r1"}).encode(), "r1"),
    ("invalid_request", _req(prompt=""), "r1"),
    ("invalid_request", _req(prompt=5), "r1"),
    ("invalid_request", _req(messages=[{"role": "user"}], prompt=None), "r1"),
    ("invalid_request", _req(messages=[{"role": "user", "content": None}], prompt=None), "r1"),
    (
        "invalid_request",
        _req(messages=[{"role": "user", "content": [{"text": "no type"}]}], prompt=None),
        "r1",
    ),
    ("invalid_request", _req(schema_version="one"), "r1"),
    ("invalid_request", _req(deadline_ms=0), "r1"),
    ("invalid_request", _req(deadline_ms=10**400), "r1"),
    ("invalid_request", _req(tags="not-a-list"), "r1"),
    ("context_window", _req(prompt="word " * 100), "r1"),
]


@pytest.mark.parametrize("reason,value,rid", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_reason_examples(reason: str, value: bytes | None, rid: str | None) -> None:
    out = check_outcome(value, max_bytes=1000 if reason == "oversized" else 1_000_000, max_tokens=50)
    assert isinstance(out, Poison), out
    assert (out.reason, out.request_id) == (reason, rid), out.message


def test_every_reason_has_an_example_and_a_row_in_the_docs() -> None:
    assert {c[0] for c in CASES} == set(REASONS) - {"internal_error"}
    table = DOCS.read_text()
    for reason in REASONS:
        assert f"`{reason}`" in table, f"{reason} is not documented in {DOCS}"


def test_accepts_what_the_schema_accepts() -> None:
    out = check_outcome(
        json.dumps(
            {
                "request_id": "r1",
                "messages": [{"role": "user", "content": "hi"}],
                "schema_version": SCHEMA_VERSION,
                "fields": {"lang": "de"},
                "params": {"temperature": 0.2},
                "tags": ["a"],
                "deadline_ms": 500,
            }
        ).encode()
    )
    assert isinstance(out, Request) and out.fields == {"lang": "de"} and out.deadline_ms == 500
    assert isinstance(
        check_outcome(b'{"request_id": "\\ud83d\\ude00", "prompt": "ok"}'), Request
    )  # a real pair
    assert isinstance(check_outcome(_req(), max_bytes=len(_req())), Request)  # the limit is inclusive


def test_context_window_boundary() -> None:
    # estimate: ceil(chars / 4) + 4 per message (the dispatcher's estimate, so the two agree)
    assert isinstance(check_outcome(_req(prompt="x" * 40), max_tokens=14), Request)
    out = check_outcome(_req(prompt="x" * 41), max_tokens=14)
    assert isinstance(out, Poison) and out.reason == "context_window"
    assert isinstance(check_outcome(_req(prompt="x" * 10_000), max_tokens=None), Request)


def test_context_limit() -> None:
    assert context_limit([100, 32000, 8000]) == 32000
    assert context_limit([100, None]) is None  # one candidate without a limit takes anything
    assert context_limit([]) is None


def test_classify_survives_a_bug_inside() -> None:
    class Evil(bytes):
        def decode(self, *a: Any, **kw: Any) -> str:
            raise RuntimeError("boom")

    out = classify(Evil(b"{}"))
    assert isinstance(out, Poison) and out.reason == "internal_error"


# ---------------------------------------------------------------- the handler's use of it
class _Dispatcher:
    def __init__(self, answer: str | None = None) -> None:
        self.calls = 0
        self.answer = answer

    async def call(self, request: Request, chosen: str, deadline_at: float):
        from router_stream.providers.base import Completion
        from router_stream.providers.call_result import CallResult
        from router_stream.schemas import Usage

        self.calls += 1
        text = self.answer if self.answer is not None else f"[{chosen}] {self.calls}"
        return CallResult(
            completion=Completion(text=text, provider_model="m", usage=Usage(), latency_ms=1.0),
            served_by=chosen,
        )


def _handler(**config_extra: Any):
    from router_stream.config import parse_config
    from router_stream.processing.handler import Handler
    from router_stream.runtime import build_pipeline

    config = parse_config(
        {
            "candidates": {
                "cheap": {"base_url": "http://127.0.0.1:1", "model": "c", "context_window": 100},
                "big": {"base_url": "http://127.0.0.1:1", "model": "b", "context_window": 1000},
            },
            "default": "cheap",
            **config_extra,
        },
        environ={},
    )
    dispatcher = _Dispatcher()
    return Handler(config, build_pipeline(config), dispatcher, "w"), dispatcher


def _source(value: bytes | None, offset: int = 0, key: bytes | None = b"k", headers=()):
    from router_stream.processing.partition import Source

    return Source("requests", 0, offset, key, value, tuple(headers))


def test_handler_dead_letters_a_prompt_no_candidate_fits_without_a_model_call() -> None:
    from router_stream.processing.partition import StateView

    handler, dispatcher = _handler()
    view = StateView({})  # type: ignore[arg-type]
    too_big = asyncio.run(handler.handle(_source(_req(prompt="x" * 8000)), view))
    assert too_big.response is None and too_big.dead_letter is not None
    assert too_big.dead_letter.reason == "context_window" and too_big.dead_letter.request_id == "r1"
    assert dispatcher.calls == 0
    # fits only the bigger candidate: routed to cheap, the dispatcher decides (error response path)
    fits_big = asyncio.run(handler.handle(_source(_req(request_id="r2", prompt="x" * 1000)), view))
    assert fits_big.dead_letter is None and fits_big.response is not None and dispatcher.calls == 1


def test_handler_answers_a_duplicate_from_the_first_answer() -> None:
    from router_stream.processing.partition import StateView

    handler, dispatcher = _handler()
    view = StateView({})  # type: ignore[arg-type]
    first = asyncio.run(handler.handle(_source(_req(), 0), view))
    again = asyncio.run(handler.handle(_source(_req(), 1), view))
    assert dispatcher.calls == 1
    assert first.response is not None and again.response is not None and again.audit is not None
    assert first.response.duplicate is False and again.response.duplicate is True and again.audit.duplicate
    assert (again.response.output, again.response.candidate) == (
        first.response.output,
        first.response.candidate,
    )
    # counted as answered, with decided_by="duplicate" (the operations guide's metrics table)
    from router_stream import metrics

    series = metrics.requests(first.response.candidate, "duplicate", "ok")
    before = series._value.get()
    asyncio.run(handler.handle(_source(_req(), 2), view))
    assert series._value.get() == before + 1


def test_handler_request_candidate_field_only_when_allowed() -> None:
    from router_stream.processing.partition import StateView

    handler, _ = _handler()
    out = asyncio.run(handler.handle(_source(_req(fields={"candidate": "big"})), StateView({})))  # type: ignore[arg-type]
    assert out.response is not None and out.response.candidate == "cheap"  # not allowed: ignored
    handler, _ = _handler(allow_request_candidate_field="candidate")
    out = asyncio.run(handler.handle(_source(_req(fields={"candidate": "big"})), StateView({})))  # type: ignore[arg-type]
    assert out.response is not None and out.response.candidate == "big" and out.audit.decided_by == "request"
    out = asyncio.run(
        handler.handle(_source(_req(request_id="r2", fields={"candidate": "nope"})), StateView({}))
    )  # type: ignore[arg-type]
    assert out.response is not None and out.response.candidate == "cheap"
    assert out.audit.verdicts[0].strategy == "request" and out.audit.verdicts[0].outcome == "miss"


def test_handler_keeps_trace_headers_and_ignores_unknown_ones() -> None:
    from router_stream.processing.partition import StateView

    handler, _ = _handler()
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = asyncio.run(
        handler.handle(
            _source(
                _req(), headers=[("traceparent", tp), ("x-junk", b"\xff\x00"), ("TraceState", b"a=b\xff")]
            ),
            StateView({}),
        )
    )  # type: ignore[arg-type]
    assert out.audit is not None and out.audit.headers == {
        "traceparent": tp.decode(),
        "tracestate": "a=b\ufffd",
    }


def test_no_nan_floats_survive() -> None:
    out = check_outcome(_req(params={"temperature": 0.5}))
    assert isinstance(out, Request) and not math.isnan(out.params["temperature"])


def test_handler_dedup_window_is_configurable() -> None:
    from router_stream.processing.partition import StateView
    from router_stream.state.store import request_key

    handler, dispatcher = _handler(cache={"dedup_window_s": 60})
    view = StateView({})  # type: ignore[arg-type]
    asyncio.run(handler.handle(_source(_req(), 0), view))
    stored = Response.model_validate_json(view.get(request_key("r1")))  # type: ignore[arg-type]
    view.put(
        request_key("r1"),
        stored.model_copy(update={"produced_at": stored.produced_at - 61_000}).model_dump_json().encode(),
    )
    late = asyncio.run(handler.handle(_source(_req(), 1), view))
    assert dispatcher.calls == 2 and late.response is not None and late.response.duplicate is False
    handler, dispatcher = _handler(cache={"dedup_window_s": 0})  # 0 turns deduplication off
    view = StateView({})  # type: ignore[arg-type]
    for offset in (0, 1):
        asyncio.run(handler.handle(_source(_req(), offset), view))
    assert dispatcher.calls == 2


def test_handler_null_key_scope() -> None:
    from router_stream.processing.partition import StateView

    handler, _ = _handler()
    out = asyncio.run(handler.handle(_source(_req(), key=None), StateView({})))  # type: ignore[arg-type]
    assert out.audit is not None and out.audit.key == "request:r1"
    handler, _ = _handler(cache={"scope": "field", "scope_field": "tenant"})
    out = asyncio.run(handler.handle(_source(_req(fields={"tenant": "acme"}), key=None), StateView({})))  # type: ignore[arg-type]
    assert out.audit is not None and out.audit.key == "acme"


def test_scope_key_never_raises_and_keeps_binary_kafka_keys_apart() -> None:
    handler, _ = _handler(cache={"scope": "expression", "scope_expression": 'get(fields, "tenant", 0) * 10'})
    huge = Request.model_validate({"request_id": "r", "prompt": "hi", "fields": {"tenant": int("9" * 4300)}})
    # the expression makes a 4,301-digit integer, which str() refuses: the Kafka key is used
    assert handler.scope_key(_source(b"{}", key=b"alice"), huge) == "alice"
    field_handler, _ = _handler(cache={"scope": "field", "scope_field": "tenant"})
    assert field_handler.scope_key(_source(b"{}", key=b"k"), huge) == "9" * 4300  # at the limit: fine
    # two binary keys that decode to the same text with replacement characters stay apart
    plain, _ = _handler()
    one, two = (
        plain.scope_key(_source(b"{}", key=b"\x80k"), None),
        plain.scope_key(_source(b"{}", key=b"\x81k"), None),
    )
    assert one != two and one.startswith("b64:")
    assert plain.scope_key(_source(b"{}", key="zoë".encode()), None) == "zoë"


def test_a_dead_letter_of_a_huge_record_copies_only_its_start_and_stays_producible() -> None:
    import hashlib

    from router_stream.processing.answers import DEAD_LETTER_COPY_BYTES, MAX_PRODUCED_RECORD_BYTES
    from router_stream.processing.partition import StateView

    handler, _ = _handler(kafka={"max_record_bytes": 2_000_000})
    value = b"{" + b"x" * 900_000  # not JSON, and a base64 copy of all of it would be 1.2 MB
    out = asyncio.run(handler.handle(_source(value, key=b"k" * 20_000), StateView({})))  # type: ignore[arg-type]
    dead = out.dead_letter
    assert dead is not None and dead.reason == "not_json"
    assert dead.value_truncated and base64.b64decode(dead.value_b64) == value[:DEAD_LETTER_COPY_BYTES]
    assert dead.value_bytes == len(value) and dead.value_sha256 == hashlib.sha256(value).hexdigest()
    assert dead.key_truncated and len(base64.b64decode(dead.key_b64)) == 16 * 1024
    assert len(dead.model_dump_json(exclude_none=True)) < MAX_PRODUCED_RECORD_BYTES // 2
    small = asyncio.run(handler.handle(_source(b"{", key=b"k"), StateView({}))).dead_letter  # type: ignore[arg-type]
    assert small is not None and not small.value_truncated and base64.b64decode(small.value_b64) == b"{"


def test_an_answer_too_large_for_a_kafka_record_becomes_an_error_response() -> None:
    from router_stream.processing.answers import output_budget
    from router_stream.processing.handler import Handler
    from router_stream.processing.partition import StateView

    handler, _ = _handler()
    handler.dispatcher = _Dispatcher(answer="\x01" * 200_000)  # 6 bytes each as JSON: 1.2 MB
    out = asyncio.run(handler.handle(_source(_req()), StateView({})))  # type: ignore[arg-type]
    assert out.response is not None and out.response.output is None
    assert out.response.error_kind == "answer_too_large" and "ask for fewer max_tokens" in out.response.error
    assert out.audit is not None and out.audit.served_by == "cheap" and out.audit.error == out.response.error
    assert len(out.response.model_dump_json()) < output_budget(b"k")
    handler.dispatcher = _Dispatcher(answer="y" * 500_000)  # long, but fits as JSON: delivered
    out = asyncio.run(handler.handle(_source(_req(request_id="r2")), StateView({})))  # type: ignore[arg-type]
    assert out.response is not None and out.response.output == "y" * 500_000 and out.response.error is None
    assert isinstance(handler, Handler)


@pytest.mark.parametrize(
    "rid, where",
    [("a\x00b", "U+0000 at position 1"), ("x\n", "U+000A at position 1"), ("\x85y", "U+0085 at position 0")],
)
def test_a_request_id_with_a_control_character_is_dead_lettered(rid: str, where: str) -> None:
    out = check_outcome(json.dumps({"request_id": rid, "prompt": "hi"}).encode())
    assert (
        isinstance(out, Poison) and out.reason == "missing_request_id" and out.message.endswith(f"({where})")
    )
