"""micro-batching's per-record checks: the answer each record is owed, and how A and B are compared.

For :mod:`bench.micro_batching`: :func:`numbered_traffic` makes the backlog (each prompt starts
with the record's number, so a mix-up inside a batch shows) with the answer the loopback server
owes each request id; :func:`compare` checks both runs' responses against it and each other,
:func:`batch_checks` the batch info (id, size, position) of responses and audit records.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from .common import traffic

MODEL_NAME = "mb"  # the loopback server's name, echoed in every answer
COMPARED = ("output", "error", "error_kind", "candidate", "provider_model")


def numbered_traffic(
    n: int, keys: int, seed: int, id_prefix: str
) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """The demo mix (``bench.common.traffic``) with each record's text starting ``#<i>: ``, and
    the answer the loopback server owes each request id (its text's first 40 chars)."""
    out, expected = [], {}
    for key, value in traffic(n, keys, seed, id_prefix):
        body = json.loads(value)
        tag = f"#{body['request_id'].rsplit('-', 1)[1]}: "
        if "prompt" in body:
            body["prompt"] = tag + body["prompt"]
            text = body["prompt"]
        else:
            body["messages"] = [{**m, "content": tag + m["content"]} for m in body["messages"]]
            text = body["messages"][-1]["content"]
        expected[body["request_id"]] = f"[{MODEL_NAME}] answer to: {text[:40]}"
        out.append((key, json.dumps(body).encode()))
    return out, expected


def by_id(records: list[Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """Bodies per request id (the first seen) and how many ids came more than once."""
    out: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    for r in records:
        body = json.loads(r.value)
        counts[body["request_id"]] += 1
        out.setdefault(body["request_id"], body)
    return out, sum(1 for c in counts.values() if c > 1)


def batch_checks(resp: dict[str, dict[str, Any]], audit: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Batch info of one run's responses (and audit records): present, well-formed, consistent."""
    with_info = malformed = audit_mismatch = 0
    answered: Counter[str] = Counter()
    members: dict[str, list[tuple[int, int]]] = defaultdict(list)
    sizes: list[int] = []
    for rid, body in resp.items():
        b = body.get("batch")
        if audit is not None and rid in audit and audit[rid].get("batch") != b:
            audit_mismatch += 1
        if not b:
            continue
        with_info += 1
        if not (
            isinstance(b.get("id"), str)
            and isinstance(b.get("size"), int)
            and isinstance(b.get("position"), int)
            and 0 <= b["position"] < b["size"]
        ):
            malformed += 1
            continue
        answered[f"{b.get('answered')}{'/' + b['reason'] if b.get('reason') else ''}"] += 1
        members[b["id"]].append((b["position"], b["size"]))
        sizes.append(b["size"])
    inconsistent = sum(
        1
        for m in members.values()
        if sorted(p for p, _ in m) != list(range(m[0][1])) or len({s for _, s in m}) != 1
    )
    return {
        "with_info": with_info,
        "malformed": malformed,
        "audit_mismatch": audit_mismatch,
        "audits": len(audit) if audit is not None else None,
        "answered": dict(answered),
        "batches": len(members),
        "inconsistent_batches": inconsistent,
        "record_weighted_size": sum(sizes) / len(sizes) if sizes else float("nan"),
    }


def compare(
    a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], expected: dict[str, str]
) -> dict[str, Any]:
    """Per request id: A's and B's answers equal, and each the one owed to its own record."""
    out: dict[str, Any] = {
        "missing_a": 0,
        "missing_b": 0,
        "differing": 0,
        "errors_a": 0,
        "errors_b": 0,
        "wrong_a": 0,
        "wrong_b": 0,
        "bad_ids": 0,
        "unexpected_ids": len((set(a) | set(b)) - set(expected)),
        "examples": [],
        "error_kinds_a": Counter(),
        "error_kinds_b": Counter(),
    }
    for rid, want in expected.items():
        ra, rb = a.get(rid), b.get(rid)
        bad = ra is None or rb is None
        out["missing_a"] += ra is None
        out["missing_b"] += rb is None
        for tag, r in (("a", ra), ("b", rb)):
            if r is not None:
                if r.get("error"):
                    out[f"errors_{tag}"] += 1
                    out[f"error_kinds_{tag}"][r.get("error_kind") or "?"] += 1
                if r.get("output") != want:
                    out[f"wrong_{tag}"] += 1
                    bad = True
        if ra is not None and rb is not None:
            diff = [f for f in COMPARED if ra.get(f) != rb.get(f)]
            if diff:
                out["differing"] += 1
                bad = True
                if len(out["examples"]) < 3:
                    out["examples"].append({"request_id": rid, **{f: (ra.get(f), rb.get(f)) for f in diff}})
        out["bad_ids"] += bad
    out["error_kinds_a"], out["error_kinds_b"] = dict(out["error_kinds_a"]), dict(out["error_kinds_b"])
    return out


def kinds_text(kinds: dict[str, int]) -> str:
    """Error kinds and their counts, for a table cell."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())) or "-"


def answered_text(b: dict[str, Any]) -> str:
    """Records answered by their batch / alone (a :func:`batch_checks` result), for a table cell."""
    ans = b["answered"]
    alone = sum(v for k, v in ans.items() if k.startswith("alone"))
    return f"{ans.get('batch', 0):,} / {alone:,}"
