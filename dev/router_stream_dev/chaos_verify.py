"""The audit after a chaos run: read every topic in ``read_committed`` and count what went wrong.

Step 4 of the run described in :mod:`.chaos`: exactly one output per input record, one audit per
answered request, sticky decisions that held for the TTL, per-key changelog counters equal to the
requests sent (and, with a budget, the exactness checks of :mod:`.chaos_budgets`). The counts land
in a :class:`~.chaos_report.Report`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from typing import Any

from .chaos_budgets import verify_budgets
from .chaos_report import Report
from .harness import read_topic


def verify(
    bootstrap: str,
    config: dict[str, Any],
    report: Report,
    expected_ids: set[str],
    *,
    timeout: float = 180,
    budget_usd: float | None = None,
) -> None:
    """Read every topic in read_committed and fill the counts of ``report``."""
    topics = config["topics"]
    ttl_ms = float(config["cache"]["ttl_s"]) * 1000

    def read(role: str, expect: int | None) -> list[Any]:
        return asyncio.run(read_topic(bootstrap, topics[role], expect=expect, timeout=timeout, idle=3))

    requests = read("requests", len(expected_ids))
    id_at = {(r.partition, r.offset): json.loads(r.value)["request_id"] for r in requests}
    sent_per_id = Counter(id_at.values())
    report.input_records = len(requests)
    per_key_sent = Counter(r.key.decode() for r in requests)
    responses = read("responses", len(requests))
    audits = read("audit", len(requests))
    dead = read("dead_letter", None)
    changelog = read("changelog", None)
    report.responses, report.audits, report.dead_letters = len(responses), len(audits), len(dead)

    # every input record gets exactly one committed output: a response (valid requests) or a
    # dead letter (poison records; none are produced here, so any dead letter is a failure too)
    resp_ids: Counter[str] = Counter()
    outputs_per_source: Counter[tuple[int, int]] = Counter()
    flagged_duplicate = 0
    for r in responses:
        body = json.loads(r.value)
        resp_ids[body["request_id"]] += 1
        flagged_duplicate += bool(body.get("duplicate"))
        if body.get("error"):
            report.error_responses += 1
    dead_ids: Counter[str] = Counter()
    dead_reasons: Counter[str] = Counter()
    for r in dead:
        body = json.loads(r.value)
        rid = body.get("request_id") or id_at.get((body["partition"], body["offset"]))
        dead_ids[rid or f"offset:{body['partition']}:{body['offset']}"] += 1
        dead_reasons[body.get("reason", "?")] += 1
        outputs_per_source[(body["partition"], body["offset"])] += 1
    audit_ids: Counter[str] = Counter()
    for r in audits:
        body = json.loads(r.value)
        audit_ids[body["request_id"]] += 1
        src = body.get("source") or {}
        outputs_per_source[(src.get("partition", -1), src.get("offset", -1))] += 1
    answered = resp_ids + dead_ids
    lost = [i for i in sent_per_id if answered[i] < sent_per_id[i]]
    dups = [i for i in answered if answered[i] > sent_per_id.get(i, 0) and i in sent_per_id]
    report.lost = sum(max(0, sent_per_id[i] - answered[i]) for i in sent_per_id)
    report.duplicated = len(dups)
    report.unexpected = sum(1 for i in answered if i not in sent_per_id)
    # one audit record per request that was not dead-lettered
    audit_expected = {i: max(0, n - dead_ids[i]) for i, n in sent_per_id.items()}
    report.audit_lost = sum(max(0, n - audit_ids[i]) for i, n in audit_expected.items())
    report.audit_duplicated = sum(1 for i in audit_ids if audit_ids[i] > audit_expected.get(i, 0))
    if set(sent_per_id) != expected_ids:
        report.notes.append(
            f"requests topic holds {len(set(sent_per_id))} distinct ids, produced {len(expected_ids)}"
        )
    if dead_reasons:
        report.notes.append(f"dead letters by reason: {dict(dead_reasons)}")
    if lost:
        report.examples["lost"] = sorted(lost)[:5]
    if dups:
        report.examples["duplicated (id, outputs)"] = [(i, answered[i]) for i in sorted(dups)[:5]]
        report.notes.append(
            f"{flagged_duplicate} responses are marked duplicate=true (answered again from the "
            "dedup store: the same input record was processed and committed twice)"
        )
    reread = sorted(k for k, n in outputs_per_source.items() if n > 1)
    if reread:
        by_part: dict[int, list[int]] = defaultdict(list)
        for part, off in reread:
            by_part[part].append(off)
        report.examples["input offsets committed twice (partition: count, first..last)"] = {
            p: (len(o), o[0], o[-1]) for p, o in sorted(by_part.items())
        }

    # sticky decisions, per key in the order the records were handled (received_at; the workers
    # share this machine's clock), which is offset order unless a partition was re-read
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in audits:
        a = json.loads(r.value)
        if not a.get("duplicate"):
            by_key[a.get("key") or ""].append(a)
    changed, redecided = [], []
    for key, items in by_key.items():
        items.sort(key=lambda a: (a["received_at"], a["source"].get("offset", 0)))
        decision: tuple[str, int] | None = None  # (candidate, decided_at)
        for a in items:
            fresh = decision is not None and a["received_at"] - decision[1] <= ttl_ms
            if a.get("cache_hit"):
                if fresh and a["chosen"] != decision[0]:  # type: ignore[index]
                    changed.append((key, decision[0], a["chosen"], a["request_id"]))  # type: ignore[index]
                    break
                if decision is None:
                    decision = (a["chosen"], a["received_at"])
                continue
            if fresh:
                redecided.append((key, a["request_id"]))
                if a["chosen"] != decision[0]:  # type: ignore[index]
                    changed.append((key, decision[0], a["chosen"], a["request_id"]))  # type: ignore[index]
                break
            decision = (a["chosen"], a["received_at"])
    report.changed, report.redecided = len(changed), len(redecided)
    if changed:
        report.examples["changed (key, before, after, request)"] = changed[:5]
    if redecided:
        report.examples["redecided (key, request)"] = redecided[:5]

    last: dict[bytes, bytes | None] = {}
    for r in changelog:
        last[r.key] = r.value
    counts = {k[2:].decode(): json.loads(v)["count"] for k, v in last.items() if k.startswith(b"k:") and v}
    mismatch = [(k, counts.get(k), n) for k, n in per_key_sent.items() if counts.get(k) != n]
    report.counter_mismatch = len(mismatch)
    if mismatch:
        report.examples["counter mismatch (key, changelog, sent)"] = mismatch[:5]
    if budget_usd is not None:
        report.budgets = verify_budgets(changelog, responses, audits, budget_usd)
