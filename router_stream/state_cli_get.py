"""``router-stream state get``: one key's committed state (sticky decision, request count, recent
request ids, budget spend) read from the changelog, with no worker needed.

Reads the committed changelog (:mod:`.state.changelog`) so it answers with no worker running,
during a rebalance and after a restart; :func:`render_text` is the human form of the report
(``--json`` prints the report itself).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .errors import UsageError
from .state_cli_kafka import EXIT_NOT_FOUND, run_kafka, target


def get_command(args: argparse.Namespace) -> int:
    from .config import load_config
    from .kafka_settings import client_settings
    from .state import keystate
    from .state.changelog import read_keys
    from .state.store import key_state_key

    config = load_config(args.config)
    try:
        scope_key, kafka_key = target(config, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = client_settings(config.kafka)
    topics = config.topics
    wanted = key_state_key(scope_key)
    from .budgets import spend_key

    spend_keys = {b.name: spend_key(b.name, scope_key) for b in config.budgets}

    try:
        result = run_kafka(
            config,
            read_keys(
                settings,
                topics.requests,
                topics.changelog,
                {wanted, *spend_keys.values()},
                partition=args.partition,
                kafka_key=kafka_key,
            ),
        )
    except ValueError as exc:  # a --partition that does not exist
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .schemas import now_ms

    now = now_ms()
    entries = [
        {
            "partition": p,
            "read_to_offset": end,
            **keystate.describe(result.values.get((p, wanted)), now, config.cache.ttl_s),
        }
        for p, end in sorted(result.end_offsets.items())
    ]
    found = [e for e in entries if e["found"]]
    from .budgets.report import spend_report

    budgets = spend_report(
        config.budgets,
        {
            name: {p: result.values.get((p, key)) for p in result.end_offsets}
            for name, key in spend_keys.items()
        },
        now,
    )
    report = {
        "scope_key": scope_key,
        "cache_scope": config.cache.scope,
        "changelog": topics.changelog,
        "found": bool(found or budgets),
        "partitions_read": sorted(result.end_offsets),
        "entries": found if len(entries) > 1 else entries,
        "budgets": budgets,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report, len(entries)))
    return 0 if found else EXIT_NOT_FOUND


def render_text(report: dict[str, Any], partitions_read: int) -> str:
    where = (
        f"partition {report['partitions_read'][0]}"
        if partitions_read == 1
        else f"all {partitions_read} partitions"
    )
    head = (
        f"key {report['scope_key']!r} (cache.scope {report['cache_scope']}), changelog {report['changelog']}"
    )
    if not report["found"]:
        return (
            f"{head}: no state on {where} (read to the committed end). The key has had no request there, "
            "or its state expired and was purged."
        )
    lines = [f"{head}, committed state:"]
    for e in report["entries"]:
        lines.append(f"  partition {e['partition']} (read to offset {e['read_to_offset']}):")
        if "unreadable" in e:
            lines.append(f"    unreadable: {e['unreadable']}")
            continue
        d = e["decision"]
        if d is None:
            lines.append("    sticky decision  none (the next request is decided afresh)")
        else:
            lines.append(
                f"    sticky decision  {d['candidate']}, decided by {d['decided_by']!r} at "
                f"{d['decided_at_iso']} ({d['age_s']:.1f} s ago)"
            )
            left = (
                "EXPIRED: no longer applied; the janitor deletes it"
                if d["expired"]
                else f"{d['expires_in_s']:.1f} s left"
            )
            lines.append(f"    ttl              {d['ttl_s']:g} s (from {d['ttl_from']}), {left}")
        lines.append(f"    requests         {e['count']}")
        recent = e["recent_request_ids"]
        lines.append(
            "    recent ids       "
            + (
                ", ".join(recent) + " (newest last)"
                if recent
                else "not recorded (this state was written before workers kept them)"
            )
        )
        if e.get("ignored_fields"):
            lines.append(f"    ignored fields   {', '.join(e['ignored_fields'])} (written by a newer worker)")
    for b in report.get("budgets") or []:
        limit = " / ".join(
            x
            for x in (
                f"${b['limit_usd']:g}" if b["limit_usd"] is not None else "",
                f"{b['limit_tokens']} tokens" if b["limit_tokens"] is not None else "",
            )
            if x
        )
        lines.append(
            f"  budget {b['budget']!r} ({b['mode']}), {b['window']}: ${b['spent_usd']:.6g} and "
            f"{b['spent_tokens']} tokens of {limit}"
            + (", in flight $" + f"{b['reserved_usd']:.6g}" if b["reserved_usd"] else "")
            + f" (summed over {b['partitions']} partition{'s' if b['partitions'] != 1 else ''})"
        )
    return "\n".join(lines)
