"""A key's state value (``k:<scope key>``): its sticky decision, request count, last request ids.

One small JSON document per scope key, rewritten by each of the key's requests in the
partition's transaction (so it is in the changelog with the answer). Everything that reads or
writes it goes through here: the handler (count and recent ids), control records (eviction),
``router-stream state get`` and the worker's ``/state`` endpoint (:func:`describe`).

Shape: ``{"decision": CachedDecision | null, "count": n, "recent": [request ids, oldest first]}``.
``recent`` keeps the last :data:`RECENT_IDS` request ids only: it answers "which requests went
there lately" without a per-request history (measured in docs/operations.md: a few dozen bytes
per changelog record and a few microseconds per request). Values written before ``recent``
existed have none; readers say so instead of inventing one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

#: how many request ids a key's state remembers (newest last)
RECENT_IDS = 5


def load(raw: bytes | None) -> dict[str, Any]:
    """The stored state, or a fresh one (no decision, no requests)."""
    return json.loads(raw) if raw else {"decision": None, "count": 0}


def note_request(state: dict[str, Any], request_id: str) -> None:
    """Count a request of the key and remember its id among the last :data:`RECENT_IDS`."""
    state["count"] = int(state.get("count", 0)) + 1
    recent = state.get("recent")
    recent = recent[-(RECENT_IDS - 1) :] if isinstance(recent, list) else []
    recent.append(request_id)
    state["recent"] = recent


def copy(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a state that :func:`note_request` and the handler may change without touching
    the original: they only ever replace its top-level values (``decision``, ``count``,
    ``recent``), so those are copied and anything else (a newer worker's fields) is shared."""
    out = dict(state)
    if isinstance(out.get("recent"), list):
        out["recent"] = list(out["recent"])
    if isinstance(out.get("decision"), dict):
        out["decision"] = dict(out["decision"])
    return out


#: compact JSON; made once (``json.dumps(..., separators=...)`` builds an encoder per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dump(state: dict[str, Any]) -> bytes:
    return _ENCODER.encode(state).encode()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(raw: bytes | None, now_ms: int, default_ttl_s: float) -> dict[str, Any]:
    """What an operator wants to know about a stored value, as plain JSON-able data.

    ``decision``: candidate, decider, when (ms and ISO), age, the TTL that applies to it (its
    decider's ``cache.ttl_s``, else ``default_ttl_s`` = the config's ``cache.ttl_s``), time left,
    and ``expired`` (an expired decision is no longer applied; the janitor deletes it).
    ``recent_request_ids`` is None when the value predates them; unknown fields are listed in
    ``ignored_fields`` (a newer worker may have written them)."""
    if raw is None:
        return {"found": False}
    try:
        state = json.loads(raw)
    except ValueError:
        return {"found": True, "unreadable": "the stored value is not JSON"}
    if not isinstance(state, dict):
        return {"found": True, "unreadable": "the stored value is not a JSON object"}
    out: dict[str, Any] = {"found": True, "count": state.get("count", 0), "decision": None}
    decision = state.get("decision")
    if isinstance(decision, dict) and "decided_at" in decision:
        decided_at = int(decision["decided_at"])
        own_ttl = decision.get("ttl_s")
        ttl_s = float(own_ttl) if own_ttl is not None else default_ttl_s
        age_s = max(0.0, (now_ms - decided_at) / 1000)
        out["decision"] = {
            "candidate": decision.get("candidate"),
            "decided_by": decision.get("decided_by"),
            "decided_at": decided_at,
            "decided_at_iso": _iso(decided_at),
            "age_s": round(age_s, 3),
            "ttl_s": ttl_s,
            "ttl_from": "strategy" if own_ttl is not None else "cache.ttl_s",
            "expires_in_s": round(ttl_s - age_s, 3),
            "expired": age_s > ttl_s,
        }
    recent = state.get("recent")
    out["recent_request_ids"] = list(recent) if isinstance(recent, list) else None
    extra = sorted(set(state) - {"decision", "count", "recent"})
    if extra:
        out["ignored_fields"] = extra
    return out
