"""Control records (issue 17 §3): who may send one, what it does to a key's state, what it leaves behind.

The gate is checked on its own (header, secret, disabled, forged JSON) and through the handler,
which must apply an authorised eviction to the key's state with an audit record and no response,
and turn every forged or refused one into a dead letter that leaves the state alone and never
carries the secret.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.processing.control import (
    CONTROL_HEADER,
    ControlCommand,
    ControlGate,
    apply_command,
    control_body,
    parse_command,
)
from router_stream.processing.handler import Handler
from router_stream.processing.intake import Poison
from router_stream.processing.partition import Source, StateView
from router_stream.runtime import build_pipeline
from router_stream.schemas import now_ms
from router_stream.state import keystate
from router_stream.state.store import key_state_key

from ..fakes import InstantDispatcher

SECRET = "s3cret-" + "x" * 20
BODY = control_body("evict", "user-0", None, "control-1")


def _gate() -> ControlGate:
    return ControlGate.from_env("RS_SECRET", {"RS_SECRET": SECRET})


def test_authorised_record_becomes_a_command():
    got = _gate().check(((CONTROL_HEADER, SECRET.encode()),), BODY)
    assert got == ControlCommand("evict", "user-0", None, "control-1")


@pytest.mark.parametrize(
    "headers",
    [
        ((CONTROL_HEADER, b"wrong-" + b"x" * 30),),
        ((CONTROL_HEADER, b""),),
        ((CONTROL_HEADER, None),),
        ((CONTROL_HEADER, SECRET.encode()[:-1]),),
    ],
)
def test_wrong_or_missing_secret_is_unauthorised(headers):
    got = _gate().check(headers, BODY)
    assert isinstance(got, Poison) and got.reason == "unauthorised_control"
    assert SECRET not in got.message and SECRET[:8] not in repr(_gate())


def test_control_shaped_json_without_the_header_is_unauthorised():
    got = _gate().check((), BODY)
    assert isinstance(got, Poison) and got.reason == "unauthorised_control" and "header" in got.message
    # also when dressed up as a request, and when control is disabled
    forged = json.dumps({"request_id": "r1", "prompt": "hi", "control": "evict", "scope_key": "x"}).encode()
    assert (
        ControlGate.from_env(None).check((("traceparent", b"00"),), forged).reason == "unauthorised_control"
    )


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"request_id": "r1", "prompt": 'say "control" please'}).encode(),  # escaped in a string
        json.dumps(
            {"request_id": "r1", "prompt": "hi", "tags": ["control"]}
        ).encode(),  # a value, not a field
        json.dumps({"request_id": "r1", "prompt": "hi", "fields": {"control": "evict"}}).encode(),  # nested
        b'{"control": broken',
        None,
        b"",
    ],
)
def test_ordinary_records_are_not_control_records(value):
    assert _gate().check((), value) is None


def test_disabled_gate_says_how_to_enable():
    for gate in (
        ControlGate.from_env(None),
        ControlGate.from_env("RS_SECRET", {}),
        ControlGate.from_env("RS_SECRET", {"RS_SECRET": "short"}),
    ):
        got = gate.check(((CONTROL_HEADER, b"short"),), BODY)
        assert isinstance(got, Poison) and got.reason == "control_disabled"
        assert "control records are disabled" in got.message and not gate.enabled
    assert "control.secret_env" in ControlGate.from_env(None).check(((CONTROL_HEADER, b"x"),), BODY).message


@pytest.mark.parametrize(
    "body, why",
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (
            json.dumps({"control": "wipe", "scope_key": "k", "control_id": "c"}).encode(),
            "must be one of evict",
        ),
        (json.dumps({"control": "evict", "scope_key": "", "control_id": "c"}).encode(), "scope_key"),
        (
            json.dumps({"control": "evict", "scope_key": "k", "strategy": 3, "control_id": "c"}).encode(),
            "strategy",
        ),
        (json.dumps({"control": "evict", "scope_key": "k"}).encode(), "control_id"),
    ],
)
def test_authorised_but_malformed_is_invalid_control(body, why):
    got = parse_command(body)
    assert isinstance(got, Poison) and got.reason == "invalid_control" and why in got.message


def test_unknown_fields_are_ignored_and_named():
    body = json.dumps(
        {"control": "evict", "scope_key": "k", "control_id": "c", "reason": "ticket 42"}
    ).encode()
    command = parse_command(body)
    assert isinstance(command, ControlCommand) and command.ignored_fields == ("reason",)
    _, note = apply_command(command, None)
    assert note["ignored_fields"] == ["reason"]


def _state(decided_by: str = "learned") -> dict:
    return {
        "decision": {"candidate": "cheap", "decided_by": decided_by, "decided_at": 1, "ttl_s": None},
        "count": 7,
        "recent": ["a", "b"],
    }


def test_evict_drops_the_decision_and_keeps_the_history():
    state = _state()
    changed, note = apply_command(ControlCommand("evict", "k", None, "c"), state)
    assert changed and note["applied"] and note["evicted"]["decided_by"] == "learned"
    assert state == {"decision": None, "count": 7, "recent": ["a", "b"]}


def test_evict_by_strategy_only_evicts_that_strategy_decision():
    state = _state("rules")
    changed, note = apply_command(ControlCommand("evict", "k", "learned", "c"), state)
    assert not changed and state == _state("rules") and "'rules'" in note["result"]
    changed, _ = apply_command(ControlCommand("evict", "k", "rules", "c"), state)
    assert changed and state["decision"] is None


def test_evict_without_state_or_decision_changes_nothing():
    assert apply_command(ControlCommand("evict", "k", None, "c"), None)[0] is False
    assert apply_command(ControlCommand("evict", "k", None, "c"), {"decision": None, "count": 1})[0] is False


def test_recent_ids_are_bounded_newest_last():
    state = keystate.load(None)
    for i in range(keystate.RECENT_IDS + 3):
        keystate.note_request(state, f"r{i}")
    assert state["count"] == keystate.RECENT_IDS + 3
    assert state["recent"] == [f"r{i}" for i in range(3, keystate.RECENT_IDS + 3)]


def test_describe_reports_age_ttl_and_expiry():
    raw = keystate.dump(
        {
            "decision": {"candidate": "cheap", "decided_by": "learned", "decided_at": 1_000_000, "ttl_s": 60},
            "count": 2,
        }
    )
    fresh = keystate.describe(raw, 1_000_000 + 10_000, 3600)
    assert fresh["decision"]["ttl_s"] == 60 and fresh["decision"]["ttl_from"] == "strategy"
    assert fresh["decision"]["expires_in_s"] == 50 and not fresh["decision"]["expired"]
    assert fresh["recent_request_ids"] is None  # written before recent ids were kept: said, not invented
    assert keystate.describe(raw, 1_000_000 + 61_000, 3600)["decision"]["expired"] is True
    assert keystate.describe(None, 0, 1) == {"found": False}


def test_config_control_section():
    base = {"candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}, "default": "cheap"}
    assert parse_config(base).control.secret_env is None
    assert parse_config({**base, "control": {"secret_env": "RS_SECRET"}}).control.secret_env == "RS_SECRET"
    with pytest.raises(ConfigError, match=r"control\.secret_env"):
        parse_config({**base, "control": {"secret_env": "not a name = " + SECRET}})


# ---------------------------------------------------------------- through the handler
def _handler(monkeypatch, scope: dict | None = None) -> Handler:
    monkeypatch.setenv("RS_SECRET", SECRET)
    config = parse_config(
        {
            "candidates": {n: {"base_url": "http://127.0.0.1:9/v1", "model": n} for n in ("cheap", "strong")},
            "default": "cheap",
            "control": {"secret_env": "RS_SECRET"},
            "cache": scope or {},
            "strategies": [
                {"type": "rules", "name": "by-tag", "rules": [{"when": '"hard" in tags', "then": "strong"}]}
            ],
        }
    )
    return Handler(config, build_pipeline(config), InstantDispatcher(), "w-test")


def _run(handler: Handler, store: dict, key: bytes, value: bytes, headers=(), offset: int = 0):
    view = StateView(store)
    outcome = asyncio.run(handler.handle(Source("req", 0, offset, key, value, tuple(headers)), view))
    store.update({k: v for k, v in view.pending.items() if v is not None})
    return outcome


def test_handler_applies_an_authorised_eviction(monkeypatch):
    handler, store = _handler(monkeypatch), {}
    _run(
        handler, store, b"user-0", json.dumps({"request_id": "r1", "prompt": "x", "tags": ["hard"]}).encode()
    )
    assert json.loads(store[key_state_key("user-0")])["decision"]["candidate"] == "strong"
    outcome = _run(handler, store, b"user-0", BODY, [(CONTROL_HEADER, SECRET.encode())], offset=1)
    assert outcome.response is None and outcome.dead_letter is None and not outcome.model_called
    audit = outcome.audit
    assert audit.decided_by == "control" and audit.request_id == "control-1" and audit.key == "user-0"
    assert audit.control["applied"] is True and audit.control["evicted"]["candidate"] == "strong"
    assert SECRET not in audit.model_dump_json()
    state = json.loads(store[key_state_key("user-0")])
    assert state["decision"] is None and state["count"] == 1 and state["recent"] == ["r1"]
    # the next request is decided afresh
    nxt = _run(handler, store, b"user-0", json.dumps({"request_id": "r2", "prompt": "x"}).encode(), offset=2)
    assert nxt.audit.cache_hit is False and nxt.audit.chosen == "cheap"


@pytest.mark.parametrize("headers", [[], [(CONTROL_HEADER, b"guess-" + b"y" * 20)]])
def test_handler_dead_letters_a_forged_eviction_and_keeps_the_state(monkeypatch, headers):
    handler, store = _handler(monkeypatch), {}
    _run(
        handler, store, b"user-0", json.dumps({"request_id": "r1", "prompt": "x", "tags": ["hard"]}).encode()
    )
    before = dict(store)
    outcome = _run(handler, store, b"user-0", BODY, headers, offset=1)
    assert outcome.response is None and outcome.audit is None
    dead = outcome.dead_letter
    assert dead is not None and dead.reason == "unauthorised_control"
    assert SECRET not in dead.model_dump_json()
    assert store == before


def test_handler_orders_a_control_record_by_the_key_it_names(monkeypatch):
    """Under a field scope the processor orders records by scope key: a control record's is the
    key it targets, whatever its Kafka key."""
    handler = _handler(monkeypatch, {"scope": "field", "scope_field": "tenant"})
    source = Source(
        "req",
        0,
        0,
        b"some-kafka-key",
        control_body("evict", "acme", None, "c1"),
        ((CONTROL_HEADER, SECRET.encode()),),
    )
    command = handler.classify(source)
    assert isinstance(command, ControlCommand)
    assert handler.scope_key(source, command) == "acme"
    request = handler.classify(
        Source(
            "req",
            0,
            1,
            b"k",
            json.dumps({"request_id": "r", "prompt": "x", "fields": {"tenant": "acme"}}).encode(),
        )
    )
    assert handler.scope_key(source, request) == "acme"


def test_now_ms_is_used_for_received(monkeypatch):
    handler, store = _handler(monkeypatch), {}
    started = now_ms()
    outcome = _run(handler, store, b"k", BODY, [(CONTROL_HEADER, SECRET.encode())])
    assert outcome.audit.received_at >= started and outcome.audit.control["applied"] is False


def test_control_reasons_have_rows_in_the_dead_letter_docs():
    from pathlib import Path

    table = (Path(__file__).resolve().parents[3] / "docs" / "dead-letters.md").read_text()
    for reason in ("unauthorised_control", "control_disabled", "invalid_control"):
        assert f"| `{reason}` |" in table, reason
