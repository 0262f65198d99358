"""``router-stream send``: produce requests to the requests topic and, with ``--wait``, read their
answers from the responses topic.

Requests are checked against :class:`~router_stream.schemas.Request` before anything is produced,
so a typo is a one-line usage error here instead of a dead letter there; a file is checked whole
before its first line is sent.

Waiting: the consumer of the responses topic is assigned every partition and positioned at the
end (``read_committed``: the last stable offset) *before* the first request is produced, so an
answer that comes back fast cannot slip in ahead of the consumer's starting point. Only committed
answers are shown: a worker that crashed mid-transaction may have written answers that were then
aborted and produced again, and a client must see each answer once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from ..errors import RouterStreamError, UsageError
from ..schemas import Request
from .target import Target


class WaitTimeout(RouterStreamError, RuntimeError):
    """Not every answer came within ``--timeout`` (the CLI prints it and exits 1)."""


@dataclass(frozen=True)
class Outgoing:
    key: bytes | None
    request: dict[str, Any]

    @property
    def request_id(self) -> str:
        return str(self.request["request_id"])

    def value(self) -> bytes:
        return json.dumps(self.request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_field(item: str) -> tuple[str, Any]:
    """``k=v`` → (k, v); v is taken as JSON when it parses (``n=3``, ``vip=true``), else as text."""
    name, sep, raw = item.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--field {item!r}: expected NAME=VALUE, e.g. --field lang=de")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def _problem(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
            for e in errors()[:3]
        )
    return str(exc)


def finish(
    base: dict[str, Any],
    *,
    request_id: str | None,
    tags: Iterable[str],
    fields: Iterable[str],
    deadline_ms: int | None,
    where: str,
) -> dict[str, Any]:
    """``base`` with the command-line additions, a request id (a new uuid4 unless given), checked."""
    request = dict(base)
    if request_id is not None:
        request["request_id"] = request_id
    request.setdefault("request_id", str(uuid.uuid4()))
    if tags:
        request["tags"] = list(request.get("tags") or []) + list(tags)
    if fields:
        request["fields"] = {**(request.get("fields") or {}), **dict(parse_field(f) for f in fields)}
    if deadline_ms is not None:
        request["deadline_ms"] = deadline_ms
    try:
        Request.model_validate(request)
    except ValueError as exc:
        raise UsageError(f"{where}: not a valid request: {_problem(exc)}") from None
    return request


def from_arguments(
    *, request_json: bytes | None, prompt: str | None, messages_json: bytes | None, **extra: Any
) -> dict[str, Any]:
    """One request from ``--request``, ``--prompt`` and ``--messages`` (later ones win)."""
    base: dict[str, Any] = {}
    if request_json is not None:
        base = _json_object(request_json, "--request")
    if prompt is not None:
        base["prompt"] = prompt
    if messages_json is not None:
        try:
            messages = json.loads(messages_json)
        except ValueError as exc:
            raise UsageError(f"--messages: not JSON: {exc}") from None
        if not isinstance(messages, list):
            raise UsageError('--messages: expected a JSON list, e.g. [{"role": "user", "content": "hi"}]')
        base["messages"] = messages
    if not base.get("prompt") and not base.get("messages"):
        raise UsageError(
            "nothing to send: give --prompt TEXT, --messages JSON, --request JSON or --file PATH"
        )
    return finish(base, where="the request", **extra)


def from_jsonl(stream: IO[str], name: str, **extra: Any) -> list[dict[str, Any]]:
    """One request per non-blank line of ``stream`` (a request object each); all checked first."""
    out = []
    for lineno, line in enumerate(stream, 1):
        if line.strip():
            out.append(
                finish(
                    _json_object(line.encode("utf-8"), f"{name}:{lineno}"), where=f"{name}:{lineno}", **extra
                )
            )
    if not out:
        raise UsageError(f"{name}: no requests in it (one JSON object a line)")
    ids = [r["request_id"] for r in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UsageError(
            f"{name}: request_id {dup!r} appears more than once (a repeat is answered as a duplicate)"
        )
    return out


def _json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UsageError(f'{where}: expected a JSON object, e.g. {{"request_id": "r1", "prompt": "hi"}}')
    return obj


async def send(
    target: Target,
    records: list[Outgoing],
    *,
    wait: bool,
    timeout: float,
    response_partitions: int,
    on_sent: Callable[[Outgoing, Any], None],
    on_answer: Callable[[bytes | None, bytes, dict[str, Any]], None],
) -> None:
    """Produce ``records``; with ``wait``, call ``on_answer`` for each one's answer as it comes.

    ``response_partitions``: the responses topic's partition count (from the preflight check).
    Raises :class:`WaitTimeout` naming the unanswered request ids when ``timeout`` seconds pass
    (counted from the last request sent) before every answer was read.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from ..kafka_settings import client_settings
    from .render import parse

    settings = client_settings(target.kafka)
    consumer = None
    if wait:
        consumer = AIOKafkaConsumer(
            **settings, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
    producer = AIOKafkaProducer(**settings, acks="all", enable_idempotence=True)
    try:
        if consumer is not None:
            tps = [TopicPartition(target.topics.responses, p) for p in range(response_partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the positions now, before anything is produced
                await consumer.position(tp)
        await producer.start()
        pending = [(r, await producer.send(target.topics.requests, r.value(), key=r.key)) for r in records]
        for record, fut in pending:
            on_sent(record, await fut)
        if consumer is None:
            return
        waiting = {r.request_id for r in records}
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                shown = ", ".join(sorted(waiting)[:5]) + (" ..." if len(waiting) > 5 else "")
                raise WaitTimeout(
                    f"no answer within {timeout:g} s for {len(waiting)} of {len(records)} request(s) "
                    f"({shown}) on {target.topics.responses}; is a worker running on "
                    f"{target.topics.requests}? (router-stream run --config ...; "
                    f"router-stream tail dead-letters shows rejected records)"
                )
            batches = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for batch in batches.values():
                for msg in batch:
                    obj = parse(msg.value)
                    if obj is not None and obj.get("request_id") in waiting:
                        waiting.discard(obj["request_id"])
                        on_answer(msg.key, msg.value, obj)
    finally:
        await producer.stop()
        if consumer is not None:
            await consumer.stop()


def run(target: Target, records: list[Outgoing], **kw: Any) -> None:
    """:func:`send` from synchronous code; Kafka errors become the CLI's one-line errors."""
    from ..kafka_check import translate

    try:
        asyncio.run(send(target, records, **kw))
    except (WaitTimeout, BrokenPipeError):  # BrokenPipe: our reader went away (| head), not Kafka
        raise
    except Exception as exc:
        raise translate(exc, target.kafka.bootstrap_servers, "send") from None
