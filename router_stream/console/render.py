"""How ``send --wait`` and ``tail`` show records: one JSON line each, or a short human form.

Records are read as plain JSON objects, not through the pydantic models: a record written by a
newer worker (unknown fields, a newer ``schema_version``) is still shown, whole in ``--jsonl``
and by the fields this version knows in the pretty form, which says how many it left out.
"""

from __future__ import annotations

import json
from typing import Any

from ..schemas import Audit, DeadLetter, Request, Response

_KNOWN = {
    "responses": set(Response.model_fields),
    "audit": set(Audit.model_fields),
    "dead_letter": set(DeadLetter.model_fields),
    "requests": set(Request.model_fields),
}


def parse(value: bytes | None) -> dict[str, Any] | None:
    """The record's JSON object, or None when it is not one (a tombstone, garbage)."""
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def jsonl(key: bytes | None, value: bytes | None, obj: dict[str, Any] | None) -> str:
    """The record's value as one line (as written, when it is JSON); non-JSON values are wrapped."""
    if obj is not None:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(
        {"_not_json": True, "key": _text(key), "value_bytes": None if value is None else len(value)}
    )


def pretty(role: str, key: bytes | None, value: bytes | None, obj: dict[str, Any] | None) -> str:
    """A few lines for a person: who answered what, why it went there, why it was dead-lettered."""
    if obj is None:
        what = "tombstone" if value is None else f"not a JSON object ({len(value)} bytes)"
        return f"key={_text(key)} {what}"
    body = {"responses": _response, "audit": _audit, "dead_letter": _dead_letter, "requests": _request}[role](
        obj
    )
    unknown = sorted(set(obj) - _KNOWN[role])
    if unknown:
        body += f"\n  ({len(unknown)} field(s) this version does not know, not shown: {', '.join(unknown)})"
    return body


def is_error(obj: dict[str, Any]) -> bool:
    """Whether a response reports a failure (no model answered)."""
    return bool(obj.get("error"))


def _response(r: dict[str, Any]) -> str:
    rid = r.get("request_id")
    if r.get("error"):
        return f"{rid}  ERROR ({r.get('error_kind') or 'error'}): {r['error']}"
    usage = r.get("usage") or {}
    facts = [str(x) for x in (r.get("provider_model"),) if x]
    if r.get("latency_ms") is not None:
        facts.append(f"{float(r['latency_ms']):.0f} ms")
    if usage.get("total_tokens"):
        facts.append(f"{usage['total_tokens']} tokens")
    if r.get("duplicate"):
        facts.append("duplicate: answered before")
    head = f"{rid}  {r.get('candidate')}" + (f" ({', '.join(facts)})" if facts else "")
    return head + "\n" + _indent(str(r.get("output") or ""))


def _audit(a: dict[str, Any]) -> str:
    line = f"{a.get('request_id')}  chosen {a.get('chosen')} by {a.get('decided_by')}"
    if a.get("cache_hit"):
        line += " (sticky decision)"
    if a.get("served_by") and a.get("served_by") != a.get("chosen"):
        line += f", served by {a['served_by']}"
    if a.get("estimated_cost_usd"):
        line += f", ~${float(a['estimated_cost_usd']):.6f}"
    if a.get("error"):
        line += f", error: {a['error']}"
    verdicts = a.get("verdicts") or []
    if verdicts:
        said = [
            f"{v.get('strategy')}: {v.get('outcome')}"
            + (f" {v['candidate']}" if v.get("candidate") else "")
            + (f" ({v['reason']})" if v.get("reason") else "")
            for v in verdicts
            if isinstance(v, dict)
        ]
        line += "\n" + _indent("; ".join(said))
    return line


def _dead_letter(d: dict[str, Any]) -> str:
    where = f"{d.get('topic')}[{d.get('partition')}]@{d.get('offset')}"
    rid = f" request {d['request_id']}" if d.get("request_id") else ""
    return f"{where}{rid}  {d.get('reason')}: {d.get('message')}"


def _request(q: dict[str, Any]) -> str:
    text = q.get("prompt")
    if text is None and isinstance(q.get("messages"), list):
        text = " / ".join(str(m.get("content")) for m in q["messages"] if isinstance(m, dict))
    extra = [f"tags {q['tags']}"] if q.get("tags") else []
    extra += [f"fields {json.dumps(q['fields'])}"] if q.get("fields") else []
    return (
        f"{q.get('request_id')}"
        + (f" ({', '.join(extra)})" if extra else "")
        + "\n"
        + _indent(str(text or ""))
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines() or [""])


def _text(b: bytes | None) -> str:
    return "null" if b is None else b.decode("utf-8", "replace")
