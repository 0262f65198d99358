"""The processor's batch pipeline without a broker: ordering, chained state, failed commits.

The Kafka clients are replaced by small fakes that record what the processor asks of them; the
integration tests (test_exactly_once, test_chaos) cover the same code against a real broker, but
cannot force a commit to fail at a chosen batch.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from router_stream.config import RouterConfig
from router_stream.processing.intake import classify
from router_stream.processing.partition import Outcome, Partition, Source, StateView
from router_stream.processing.processor import Processor
from router_stream.schemas import Request, Response

TP = TopicPartition("router.requests", 0)


class FakeProducer:
    def __init__(self, fail_commits: int = 0) -> None:
        self.committed: list[list[tuple[Any, ...]]] = []
        self.txn: list[tuple[Any, ...]] | None = None
        self.fail_commits = fail_commits
        self.aborts = 0

    async def begin_transaction(self) -> None:
        assert self.txn is None, "a transaction began while another was open"
        self.txn = []

    async def send(
        self, topic: str, key: Any = None, value: Any = None, headers: Any = None, partition: Any = None
    ) -> asyncio.Future[Any]:
        assert self.txn is not None, "send outside a transaction"
        self.txn.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(offset=sum(map(len, self.committed)) + len(self.txn)))
        return fut

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        assert self.txn is not None
        self.txn.append(("offsets", offsets[TP]))

    async def commit_transaction(self) -> None:
        assert self.txn is not None
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaError("injected commit failure")
        self.committed.append(self.txn)
        self.txn = None

    async def abort_transaction(self) -> None:
        self.aborts += 1
        self.txn = None


class FakeStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def apply(self, writes: dict[bytes, bytes | None], checkpoint: int) -> None:
        for k, v in writes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[int] = []
        self.paused = False

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused = True

    def resume(self, *tps: TopicPartition) -> None:
        self.paused = False

    def assignment(self) -> set[TopicPartition]:
        return {TP}


class CountingHandler:
    """Counts requests per key in the state (read-modify-write) and logs start/end per record."""

    ledger = None  # no budgets

    def __init__(self, slow_keys: dict[str, float] | None = None) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.slow = slow_keys or {}

    def scope_key(self, source: Source, request: Any) -> str:
        return source.key.decode()

    async def handle(self, source: Source, view: StateView, parsed: Any = None, scope: Any = None) -> Outcome:
        key = source.key.decode()
        self.events.append(("start", key, source.offset))
        state_key = b"k:" + source.key
        count = json.loads(view.get(state_key) or b"0") + 1
        await asyncio.sleep(self.slow.get(key, 0.0))
        view.put(state_key, json.dumps(count).encode())
        self.events.append(("end", key, source.offset))
        rid = json.loads(source.value)["request_id"]
        return Outcome(response=Response(request_id=rid, candidate="cheap", output=f"{key}#{count}"))


def record(offset: int, key: str) -> SimpleNamespace:
    value = json.dumps({"request_id": f"r-{offset}", "prompt": "hi"}).encode()
    return SimpleNamespace(
        topic=TP.topic, partition=0, offset=offset, key=key.encode(), value=value, headers=(), timestamp=0
    )


def processor(
    handler: CountingHandler, producer: FakeProducer, cache: dict[str, Any] | None = None
) -> tuple[Processor, Partition, FakeConsumer]:
    config = RouterConfig.model_validate(
        {
            "candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
            "default": "cheap",
            "worker": {"batches_in_flight": 4},
            "cache": cache or {},
        }
    )
    p = Processor(config, handler, "w-test")  # type: ignore[arg-type]
    consumer = FakeConsumer()
    p.partitions.consumer = consumer  # type: ignore[assignment]
    part = p.partitions.new_partition(TP, producer, FakeStore(), 0)  # type: ignore[arg-type]
    p.partitions.parts[TP] = part
    return p, part, consumer


def outputs(producer: FakeProducer) -> list[str]:
    return [
        json.loads(entry[2])["output"]
        for txn in producer.committed
        for entry in txn
        if entry[0] == "router.responses"
    ]


async def wait_all(part: Partition, tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def test_batches_overlap_but_keep_key_order_state_and_commit_order():
    handler = CountingHandler(slow_keys={"a": 0.05})
    producer = FakeProducer()
    p, part, _ = processor(handler, producer)
    p._dispatch(part, [record(0, "a"), record(1, "b")])
    p._dispatch(part, [record(2, "a"), record(3, "b")])  # its "b" runs while batch 1's "a" is slow
    tasks = [t for b in list(part.inflight) if (t := b.task) is not None]
    assert len(part.inflight) == 2 and part.dispatched == 4
    await wait_all(part, tasks)

    ev = handler.events
    assert ev.index(("end", "a", 0)) < ev.index(("start", "a", 2))  # same key across batches: in order
    assert ev.index(("start", "b", 3)) < ev.index(("end", "a", 0))  # other keys do not wait
    # the second batch read the first one's uncommitted count; commits in offset order
    assert outputs(producer) == ["a#1", "b#1", "a#2", "b#2"]
    assert [txn[-1] for txn in producer.committed] == [("offsets", 2), ("offsets", 4)]
    assert part.next_offset == 4 and part.store.data[b"k:a"] == b"2"
    assert not part.inflight and not part.tails


async def test_a_failed_commit_discards_the_batches_after_it_and_rewinds():
    handler = CountingHandler()
    producer = FakeProducer(fail_commits=1)
    p, part, consumer = processor(handler, producer)
    p._dispatch(part, [record(0, "a"), record(1, "b")])
    p._dispatch(part, [record(2, "a"), record(3, "c")])
    tasks = [t for b in list(part.inflight) if (t := b.task) is not None]
    await wait_all(part, tasks)

    assert producer.committed == [] and producer.aborts == 1  # nothing of either batch is visible
    assert consumer.seeks == [0] and part.dispatched == 0 and part.gen == 1
    assert not part.inflight and not part.tails and not part.rewinding
    assert part.store.data == {}  # uncommitted state never reached the store

    # the re-read: same records, counted once each
    p._dispatch(part, [record(0, "a"), record(1, "b"), record(2, "a"), record(3, "c")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert outputs(producer) == ["a#1", "b#1", "a#2", "c#1"]
    assert part.next_offset == 4 and part.store.data[b"k:a"] == b"2"


async def test_the_batches_in_flight_budget_pauses_and_resumes_the_partition():
    handler = CountingHandler(slow_keys={"a": 0.2})
    producer = FakeProducer()
    p, part, consumer = processor(handler, producer)
    for start in range(0, 8, 2):
        p._dispatch(part, [record(start, "a"), record(start + 1, "a")])
    assert consumer.paused and len(part.inflight) == 4  # the budget of batches in flight is used
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert not consumer.paused  # resumed as batches committed
    assert outputs(producer) == [f"a#{i}" for i in range(1, 9)]


class FieldScopeHandler(CountingHandler):
    """Scopes by the request's ``conv`` field; counts parses and records what handle() was given."""

    def __init__(self, slow_keys: dict[str, float] | None = None) -> None:
        super().__init__(slow_keys)
        self.parses = 0
        self.given: list[Any] = []
        self.scopes: list[Any] = []

    def classify(self, source: Source) -> Any:
        self.parses += 1
        return classify(source.value)

    def scope_key(self, source: Source, request: Any) -> str:
        return request.fields["conv"] if request is not None else source.key.decode()

    async def handle(self, source: Source, view: StateView, parsed: Any = None, scope: Any = None) -> Outcome:
        self.given.append((source.offset, parsed))
        self.scopes.append((source.offset, scope))
        return await super().handle(source, view)


def conv_record(offset: int, key: str, conv: str) -> SimpleNamespace:
    value = json.dumps({"request_id": f"r-{offset}", "prompt": "hi", "fields": {"conv": conv}}).encode()
    return SimpleNamespace(
        topic=TP.topic, partition=0, offset=offset, key=key.encode(), value=value, headers=(), timestamp=0
    )


async def test_a_field_scope_orders_by_the_field_and_parses_each_record_once():
    handler = FieldScopeHandler(slow_keys={"x": 0.05})
    producer = FakeProducer()
    p, part, _ = processor(handler, producer, cache={"scope": "field", "scope_field": "conv"})
    # x and y are different Kafka keys in one conversation: y must wait for x; z is free
    p._dispatch(part, [conv_record(0, "x", "c1"), conv_record(1, "y", "c1"), conv_record(2, "z", "c2")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])

    ev = handler.events
    assert ev.index(("end", "x", 0)) < ev.index(("start", "y", 1))
    assert ev.index(("start", "z", 2)) < ev.index(("end", "x", 0))
    assert handler.parses == 3  # once per record, by the processor
    given = dict(handler.given)
    assert set(given) == {0, 1, 2}
    assert all(isinstance(r, Request) and r.request_id == f"r-{o}" for o, r in given.items())
    assert dict(handler.scopes) == {0: "c1", 1: "c1", 2: "c2"}  # and the scope key, worked out once


async def test_the_kafka_key_scope_parses_each_record_once_too():
    # the order tokens need the request id, so the ordering parses the record; the handler gets
    # that parse (and the scope key worked out from it) instead of parsing the record again
    handler = FieldScopeHandler()
    p, part, _ = processor(handler, FakeProducer())
    p._dispatch(part, [conv_record(0, "x", "c1")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert handler.parses == 1
    ((offset, parsed),) = handler.given
    assert offset == 0 and isinstance(parsed, Request) and parsed.request_id == "r-0"
    assert handler.scopes == [(0, "c1")]


class ExplodingHandler(CountingHandler):
    """Raises (a bug, never a record's content) in scope_key or handle for chosen offsets, once."""

    def __init__(self, slow_keys=None, bad_scope: set[int] = frozenset(), bad_handle: set[int] = frozenset()):
        super().__init__(slow_keys)
        self.bad_scope, self.bad_handle = set(bad_scope), set(bad_handle)

    def scope_key(self, source: Source, request: Any) -> str:
        if source.offset in self.bad_scope:
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        return super().scope_key(source, request)

    async def handle(self, source: Source, view: StateView, parsed: Any = None, scope: Any = None) -> Outcome:
        if source.offset in self.bad_handle:
            self.bad_handle.discard(source.offset)
            await asyncio.sleep(self.fail_after)
            raise RuntimeError("a bug")
        return await super().handle(source, view)

    fail_after = 0.0


class SlowCommitProducer(FakeProducer):
    """Commits like aiokafka: the broker round trip is shielded, a cancel cannot call it back."""

    async def commit_transaction(self) -> None:
        await asyncio.shield(asyncio.sleep(0.2))
        await super().commit_transaction()


async def test_a_failing_scope_key_orders_that_record_by_offset_instead_of_failing_the_batch():
    handler = ExplodingHandler(bad_scope={1})
    producer = FakeProducer()
    p, part, consumer = processor(handler, producer)
    p._dispatch(part, [record(0, "a"), record(1, "b")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert outputs(producer) == ["a#1", "b#1"] and producer.aborts == 0 and consumer.seeks == []
    assert p.fatal is None


async def test_a_later_batch_failing_before_its_commit_rewinds_to_the_oldest_batch_in_flight():
    # batch 1 is slow; batch 2 fails while handling (before any transaction): nothing may be
    # skipped (it used to seek to batch 2's first offset and cancel batch 1), nothing aborted
    handler = ExplodingHandler(slow_keys={"a": 0.1}, bad_handle={2})
    producer = FakeProducer()
    p, part, consumer = processor(handler, producer)
    p._dispatch(part, [record(0, "a"), record(1, "b")])
    p._dispatch(part, [record(2, "c"), record(3, "d")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert consumer.seeks == [0] and part.dispatched == 0
    assert producer.aborts == 0 and p.fatal is None  # no transaction had begun: nothing to abort
    p._dispatch(part, [record(0, "a"), record(1, "b"), record(2, "c"), record(3, "d")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert sorted(outputs(producer)) == ["a#1", "b#1", "c#1", "d#1"] and part.next_offset == 4


def test_an_output_too_large_to_produce_becomes_a_small_dead_letter():
    from router_stream.processing.answers import output_budget
    from router_stream.processing.handler import Handler
    from router_stream.processing.outputs import serialize_outputs
    from router_stream.runtime import build_pipeline

    config = RouterConfig.model_validate(
        {"candidates": {"cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}, "default": "cheap"}
    )
    p = Processor(config, Handler(config, build_pipeline(config), None, "w"), "w-test")  # type: ignore[arg-type]
    rec = record(0, "a")
    huge = Outcome(response=Response(request_id="r-0", candidate="cheap", output="z" * 1_100_000))
    fine = Outcome(response=Response(request_id="r-1", candidate="cheap", output="ok"))
    (first,), (second,) = serialize_outputs(p.topics, p.handler, [rec, record(1, "b")], [huge, fine])
    topic, value = first
    dead = json.loads(value)
    assert topic == "router.dead-letter" and dead["reason"] == "internal_error"
    assert dead["error_class"] == "RecordTooLarge" and "over the" in dead["message"]
    assert len(value) < output_budget(rec.key)
    assert second[0] == "router.responses" and json.loads(second[1])["output"] == "ok"


async def test_an_earlier_batch_that_is_committing_is_left_to_commit_when_a_later_one_fails():
    # batch 1 is inside its (shielded) commit when batch 2 fails while handling: batch 1 must
    # commit once and not be re-read (cancelling it re-read records whose answers were out)
    handler = ExplodingHandler(bad_handle={2})
    handler.fail_after = 0.05
    producer = SlowCommitProducer()
    p, part, consumer = processor(handler, producer)
    p._dispatch(part, [record(0, "a"), record(1, "b")])
    p._dispatch(part, [record(2, "c"), record(3, "d")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert consumer.seeks == [2] and part.dispatched == 2 and part.next_offset == 2
    assert part.store.data[b"k:a"] == b"1" and producer.aborts == 0
    p._dispatch(part, [record(2, "c"), record(3, "d")])
    await wait_all(part, [b.task for b in list(part.inflight) if b.task is not None])
    assert outputs(producer) == ["a#1", "b#1", "c#1", "d#1"] and part.next_offset == 4


async def test_a_fence_seen_by_a_janitor_transaction_reopens_the_partition_once():
    from aiokafka.errors import ProducerFenced

    class FencedProducer(FakeProducer):
        async def commit_transaction(self) -> None:
            raise ProducerFenced()

    producer = FencedProducer()
    p, part, _ = processor(CountingHandler(), producer)
    reopened: list[Any] = []

    async def reopen(pt):
        reopened.append(pt)

    p.partitions.reopen_if_still_ours = reopen  # type: ignore[method-assign]
    with pytest.raises(ProducerFenced):
        await part.transactions.transact([], {b"k:x": None})  # what the janitor does
    await asyncio.sleep(0)
    assert part.lost and reopened == [part]  # it used to be only logged: the partition stayed fenced
    p.partitions.fenced(part, ProducerFenced(), "a batch met it too")  # whoever sees the same fence next
    await asyncio.sleep(0)
    assert reopened == [part] and producer.committed == []
