"""StateView's decoded key states: a shortcut for the parse, never a different answer."""

from __future__ import annotations

import json

from router_stream.processing.partition import StateView
from router_stream.state import keystate


def state(count: int, decision: str | None = "cheap") -> dict:
    return {
        "decision": {"candidate": decision, "decided_by": "rules", "decided_at": 5, "count": 0, "ttl_s": 1.5}
        if decision
        else None,
        "count": count,
        "recent": [f"r{i}" for i in range(count)],
        "newer_field": {"kept": [1, 2]},
    }


def test_a_state_put_reads_back_as_its_json_would():
    view = StateView({})  # type: ignore[arg-type]
    view.put_state(b"k:a", state(2))
    assert view.pending[b"k:a"] == keystate.dump(state(2))
    assert view.get_state(b"k:a") == json.loads(view.pending[b"k:a"]) == state(2)


def test_changing_a_state_read_does_not_change_the_next_read():
    view = StateView({})  # type: ignore[arg-type]
    view.put_state(b"k:a", state(2))
    first = view.get_state(b"k:a")
    keystate.note_request(first, "x")
    first["decision"]["candidate"] = "strong"  # even in place
    first["count"] = 99
    assert view.get_state(b"k:a") == state(2)


def test_a_value_written_another_way_is_parsed_not_taken_from_the_copy():
    parent = StateView({})  # type: ignore[arg-type]
    parent.put_state(b"k:a", state(2))
    child = StateView(parent)
    assert child.get_state(b"k:a") == state(2)  # through the view before it
    child.put(b"k:a", keystate.dump(state(7, None)))  # e.g. a control record's eviction
    assert child.get_state(b"k:a") == state(7, None)
    child.put(b"k:a", None)
    assert child.get_state(b"k:a") == keystate.load(None)


def test_once_committed_reads_go_to_the_store():
    store = {b"k:a": keystate.dump(state(3))}
    view = StateView({})  # type: ignore[arg-type]
    view.put_state(b"k:a", state(2))
    view.committed(store)  # type: ignore[arg-type]
    assert view.decoded == {} and view.pending == {}
    assert view.get_state(b"k:a") == state(3)
