"""``router-stream state get`` / ``state evict``: inspect and steer one key's state through Kafka.

Why through Kafka and not a worker's API: ``get`` reads the committed changelog
(:mod:`.state.changelog`), so it answers with no worker running, during a rebalance, and after a
restart; ``evict`` produces a control record (:mod:`.processing.control`) to the partition
that owns the key, applied by its owner in that partition's transaction, exactly once and in
order with the key's requests.

Which key: ``--key K`` is a Kafka record key. It picks the partition (the default partitioner)
and is the scope key itself with ``cache.scope: key`` (and for requests without a usable
field/expression value under the other scopes). ``--scope-value V`` is a ``cache.scope: field``
or ``expression`` value: such a value's requests may arrive on any partition, and each partition
keeps its own entry for it, so ``V`` is looked up (or evicted) on every partition unless
``--kafka-key`` or ``--partition`` names one.

Exit codes: 0 done (``get``: state found; ``evict``: applied, or confirmed there was nothing to
evict), 1 ``get``: no state for the key / ``evict``: a worker refused it (a dead letter: wrong
secret, control disabled) or none confirmed within ``--wait`` (the record stays in Kafka and is
applied when a worker reads it), 2 usage or config, 75 Kafka unavailable (try again later).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, KafkaUnavailable, UsageError

if TYPE_CHECKING:  # the config (pydantic) is imported when a command runs, not for --help
    from .config import RouterConfig

EXIT_NOT_FOUND = 1
REFUSED = "REFUSED"


def _target(config: RouterConfig, args: argparse.Namespace) -> tuple[str, bytes | None]:
    """(scope key, Kafka key that places it or None = look on every partition)."""
    scope = config.cache.scope
    if args.key is not None:
        if args.kafka_key is not None:
            raise UsageError("--kafka-key goes with --scope-value; with --key the Kafka key is K itself")
        return args.key, args.key.encode("utf-8")
    if scope == "key":
        raise UsageError(
            "cache.scope is 'key': the scope key is the Kafka key; use --key K (--scope-value is "
            "for cache.scope field or expression)"
        )
    return args.scope_value, args.kafka_key.encode("utf-8") if args.kafka_key is not None else None


def _kafka_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(refused: credentials or ACLs, a config problem; unavailable: worth retrying)."""
    from aiokafka import errors as e

    refused = (
        e.AuthenticationFailedError,
        e.SaslAuthenticationFailed,
        e.UnsupportedSaslMechanismError,
        e.TopicAuthorizationFailedError,
        e.ClusterAuthorizationFailedError,
        e.GroupAuthorizationFailedError,
    )
    return refused, (e.KafkaError, OSError, TimeoutError, asyncio.TimeoutError)


def _run_kafka(config: RouterConfig, coro: Any) -> Any:
    """Run a Kafka coroutine; its failures become ConfigError (refused) or KafkaUnavailable."""
    from .state.changelog import TopicMissing

    refused, unavailable = _kafka_errors()
    try:
        return asyncio.run(coro)
    except TopicMissing as exc:
        raise ConfigError(str(exc)) from None
    except refused as exc:
        raise ConfigError(
            f"kafka: the broker refused us ({type(exc).__name__}); check the SASL settings and the "
            "ACLs (docs/operations.md)"
        ) from None
    except unavailable as exc:
        raise KafkaUnavailable(
            f"cannot talk to Kafka at {config.kafka.bootstrap_servers} "
            f"({type(exc).__name__}: {exc}); is the broker up?"
        ) from None


# ------------------------------------------------------------------ get
def _get(args: argparse.Namespace) -> int:
    from .config import load_config
    from .kafka_settings import client_settings
    from .state import keystate
    from .state.changelog import read_keys
    from .state.store import key_state_key

    config = load_config(args.config)
    try:
        scope_key, kafka_key = _target(config, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = client_settings(config.kafka)
    topics = config.topics
    wanted = key_state_key(scope_key)
    from .budgets import spend_key

    spend_keys = {b.name: spend_key(b.name, scope_key) for b in config.budgets}

    try:
        result = _run_kafka(
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


# ------------------------------------------------------------------ evict
def _secret(config: RouterConfig) -> str:
    from .processing.control import MIN_SECRET_CHARS

    name = config.control.secret_env
    if not name:
        raise UsageError(
            "control.secret_env is not set in the config: control records are disabled. Set it to the "
            "name of an env var holding a shared secret, in the workers' and your environment"
        )
    secret = os.environ.get(name) or ""
    if len(secret) < MIN_SECRET_CHARS:
        raise UsageError(
            f"the env var {name} (control.secret_env) is {'not set' if not secret else 'too short'}: "
            f"export the same secret (at least {MIN_SECRET_CHARS} characters) the workers have"
        )
    return secret


def _send_control(args: argparse.Namespace) -> int:
    """``state evict`` / ``state reset-budget``: one control record per owning partition, then
    each partition's confirmation (its audit record) or refusal (a dead letter)."""
    from .config import load_config
    from .kafka_settings import client_settings
    from .processing.control import CONTROL_HEADER, control_body

    config = load_config(args.config)
    try:
        scope_key, kafka_key = _target(config, args)
        secret = _secret(config)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = client_settings(config.kafka)
    control_id = f"control-{uuid.uuid4()}"
    action = "reset_budget" if args.action == "reset-budget" else "evict"
    budget = getattr(args, "budget", None)
    if action == "reset_budget":
        names = [b.name for b in config.budgets]
        if not names or (budget is not None and budget not in names):
            print(
                f"error: --budget: {budget!r} is not a budget of this config (budgets: {', '.join(names) or 'none'})"
                if budget is not None
                else "error: the config has no budgets: nothing to reset",
                file=sys.stderr,
            )
            return 2
    body = control_body(action, scope_key, getattr(args, "strategy", None), control_id, budget=budget)
    record_key = kafka_key if kafka_key is not None else scope_key.encode("utf-8")

    async def send() -> tuple[list[int], dict[int, str]]:
        from aiokafka import AIOKafkaProducer

        from .state.changelog import partition_for_key

        producer = AIOKafkaProducer(**settings, enable_idempotence=True, acks="all")
        await asyncio.wait_for(producer.start(), 30)
        try:
            n = len(await producer.partitions_for(config.topics.requests))
            if args.partition is not None:
                if not 0 <= args.partition < n:
                    raise ValueError(
                        f"partition {args.partition} does not exist: {config.topics.requests} has "
                        f"partitions 0..{n - 1}"
                    )
                targets = [args.partition]
            elif kafka_key is not None:
                targets = [partition_for_key(kafka_key, n)]
            else:
                targets = list(range(n))
            marks = await _output_ends(settings, config) if args.wait > 0 else {}
            sent = [
                await producer.send(
                    config.topics.requests,
                    key=record_key,
                    value=body,
                    partition=p,
                    headers=[(CONTROL_HEADER, secret.encode("utf-8"))],
                )
                for p in targets
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        if args.wait <= 0:
            return targets, {}
        return targets, await _confirmations(settings, config, marks, control_id, len(targets), args.wait)

    try:
        targets, confirmed = _run_kafka(config, send())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "action": action,
        "scope_key": scope_key,
        "strategy": getattr(args, "strategy", None),
        "budget": budget,
        "control_id": control_id,
        "partitions": targets,
        "confirmed": confirmed,
        "waited_s": args.wait,
    }
    failed = (
        [p for p in targets if p not in confirmed or confirmed[p].startswith(REFUSED)]
        if args.wait > 0
        else []
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        what = (
            f"evict {scope_key!r}"
            + (f" (only if decided by {args.strategy!r})" if getattr(args, "strategy", None) else "")
            if action == "evict"
            else f"reset budget {budget or '(all budgets)'} of {scope_key!r}"
        )
        print(
            what
            + f": control record {control_id} produced to {config.topics.requests} partition(s) "
            + ", ".join(map(str, targets))
        )
        for p in targets:
            if p in confirmed:
                print(f"  partition {p}: {confirmed[p]}")
            elif args.wait > 0:
                print(
                    f"  partition {p}: not confirmed within {args.wait:g} s (is a worker running? the record "
                    "is in Kafka and is applied when the partition's owner reads it)"
                )
    return EXIT_NOT_FOUND if failed else 0


async def _output_ends(settings: dict[str, Any], config: RouterConfig) -> dict[Any, int]:
    """The committed end of the audit and dead-letter topics, before the control record is sent:
    its confirmation can only come after."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from .state.changelog import topic_partitions

    consumer = AIOKafkaConsumer(
        **settings, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    await asyncio.wait_for(consumer.start(), 30)
    try:
        tps = []
        for topic in (config.topics.audit, config.topics.dead_letter):
            tps += [TopicPartition(topic, p) for p in range(await topic_partitions(consumer, topic))]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _confirmations(
    settings: dict[str, Any],
    config: RouterConfig,
    marks: dict[Any, int],
    control_id: str,
    expect: int,
    wait_s: float,
) -> dict[int, str]:
    """{requests partition: what its worker did} from the audit (applied or not needed) or the
    dead letters (refused), read after ``marks``, until every target answered or ``wait_s``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        **settings, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    await asyncio.wait_for(consumer.start(), 30)
    out: dict[int, str] = {}
    try:
        consumer.assign(list(marks))
        for tp, offset in marks.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + wait_s
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in batch.items():
                for record in records:
                    found = _confirmation(record.value, control_id, tp.topic == config.topics.dead_letter)
                    if found is not None:
                        out[found[0]] = found[1]
    finally:
        await consumer.stop()
    return out


def _confirmation(value: bytes | None, control_id: str, dead: bool) -> tuple[int, str] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if not dead:
        if data.get("request_id") != control_id or data.get("decided_by") != "control":
            return None
        note = data.get("control") or {}
        partition = int((data.get("source") or {}).get("partition", -1))
        return partition, f"{note.get('result', 'applied')} (worker {data.get('worker_id')})"
    try:
        original = json.loads(base64.b64decode(data.get("value_b64") or ""))
    except ValueError:
        return None
    if not isinstance(original, dict) or original.get("control_id") != control_id:
        return None
    return int(
        data.get("partition", -1)
    ), f"{REFUSED}: dead letter {data.get('reason')}: {data.get('message')}"


# ------------------------------------------------------------------ registration
_STATE_HELP = """\
get    reads the key's state from the committed changelog: works with no worker running.
evict  produces a control record to the partition owning the key; its worker applies it in the
       partition's transaction (exactly once, ordered with the key's requests). Needs
       control.secret_env in the config and that env var set to the workers' secret.
reset-budget  the same way, sets the scope's budget spend in the current window to zero.

Exit codes: 0 done (get: found; evict: every partition applied it or had nothing to evict), 1 get:
no state / evict: a partition refused it (dead letter) or did not answer within --wait, 2 usage or
config, 75 Kafka unavailable.
See docs/operations.md, "Inspect and evict a key's state".
"""
_TARGET_HELP = (
    "--key K: a Kafka record key; it picks the partition (default partitioner, murmur2) and is the "
    "scope key with cache.scope key. --scope-value V: a cache.scope field/expression value; its "
    "requests may arrive on any partition and each keeps its own entry, so V is looked up on all "
    "partitions unless --kafka-key (the records' Kafka key) or --partition names one."
)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        metavar="PATH",
        help="the routing config (Kafka settings, topics, cache scope)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the Kafka key (= the scope key with cache.scope key)")
    which.add_argument(
        "--scope-value",
        help="the value of cache.scope_field / scope_expression (field and expression scopes)",
    )
    p.add_argument(
        "--kafka-key", help="with --scope-value: the Kafka key its records carry (picks one partition)"
    )
    p.add_argument(
        "--partition",
        type=int,
        help="this requests/changelog partition (for producers whose "
        "partitioner is not murmur2, e.g. librdkafka's default crc32)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _control_args(p: argparse.ArgumentParser) -> None:
    """What every command sent as a control record takes (``evict``, ``reset-budget``)."""
    _target_args(p)
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the owning worker's audit record (0: do not wait)",
    )
    p.set_defaults(func=_send_control)


def register(sub: Any) -> None:
    """Add ``state get``, ``state evict`` and ``state reset-budget`` to the ``router-stream`` parser."""
    state = sub.add_parser(
        "state",
        help="inspect or evict one key's committed state (sticky decision, requests)",
        description=_STATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = state.add_subparsers(dest="action", required=True)
    get = ssub.add_parser(
        "get",
        help="the key's sticky decision, request count and recent request ids, read "
        "from the committed changelog (no worker needed)",
        description=_TARGET_HELP,
    )
    _target_args(get)
    get.set_defaults(func=_get)
    ev = ssub.add_parser(
        "evict",
        help="drop the key's sticky decision, through a control record applied by the "
        "owning worker in its transaction (needs control.secret_env)",
        description=_TARGET_HELP,
    )
    _control_args(ev)
    ev.add_argument("--strategy", help="evict only if the sticky decision was made by this strategy")
    rb = ssub.add_parser(
        "reset-budget",
        help="set the scope's spend in the current window to zero (reservations "
        "in flight stay), through a control record like evict",
        description=_TARGET_HELP,
    )
    _control_args(rb)
    rb.add_argument("--budget", help="reset only this budget (default: every budget of the config)")
