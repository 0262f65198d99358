"""``router-stream state evict`` / ``state reset-budget``: steer one key's state by producing a
control record (:mod:`.processing.control`) to each partition that owns it, then reading each
partition's answer.

The owning worker applies the record in that partition's transaction, exactly once and in order
with the key's requests; its confirmation is an audit record, its refusal (wrong secret, control
disabled) a dead letter. Both are read back from after the committed ends taken before sending.
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

from .errors import UsageError
from .state_cli_kafka import EXIT_NOT_FOUND, run_kafka, target

if TYPE_CHECKING:  # the config (pydantic) is imported when a command runs, not for --help
    from .config import RouterConfig

REFUSED = "REFUSED"


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


def send_control(args: argparse.Namespace) -> int:
    """``state evict`` / ``state reset-budget``: one control record per owning partition, then
    each partition's confirmation (its audit record) or refusal (a dead letter)."""
    from .config import load_config
    from .kafka_settings import client_settings
    from .processing.control import CONTROL_HEADER, control_body

    config = load_config(args.config)
    try:
        scope_key, kafka_key = target(config, args)
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
        targets, confirmed = run_kafka(config, send())
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
