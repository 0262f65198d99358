"""Changelog restore at scale: the partitions opening together share one bounds lookup, and a
store one offset short of the end (its commit marker) reads nothing; a real gap is replayed.

The reader is a stand-in for aiokafka's consumer that counts the requests a real one would send;
the restore path against a real broker is in tests/integration/test_exactly_once.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from router_stream.processing.restore import ChangelogRestorer
from router_stream.state.store import PartitionStore

TOPIC = "t.changelog"


class CountingReader:
    """Offsets and records of a changelog whose partition p ends at ``ends[p]``."""

    def __init__(self, ends: dict[int, int], records: dict[int, list[tuple[int, bytes, bytes]]]) -> None:
        self.ends, self.records = ends, records
        self.end_calls: list[int] = []
        self.begin_calls: list[int] = []
        self.fetches = 0
        self._pos: dict[TopicPartition, int] = {}

    async def end_offsets(self, tps):
        self.end_calls.append(len(tps))
        await asyncio.sleep(0.01)
        return {tp: self.ends[tp.partition] for tp in tps}

    async def beginning_offsets(self, tps):
        self.begin_calls.append(len(tps))
        return dict.fromkeys(tps, 0)

    def assign(self, tps):
        self._pos = {}

    def seek(self, tp, offset):
        self._pos[tp] = offset

    async def position(self, tp):
        return self._pos[tp]

    async def getmany(self, tp, timeout_ms, max_records):
        self.fetches += 1
        got = [
            SimpleNamespace(offset=o, key=k, value=v)
            for o, k, v in self.records.get(tp.partition, [])
            if o >= self._pos[tp]
        ]
        self._pos[tp] = self.ends[tp.partition]
        return {tp: got}

    def pause(self, tp):
        pass


def restorer(reader: CountingReader) -> ChangelogRestorer:
    config = SimpleNamespace(topics=SimpleNamespace(changelog=TOPIC), kafka=None)
    r = ChangelogRestorer(config)  # type: ignore[arg-type]
    r._reader = reader  # type: ignore[assignment]
    return r


def test_partitions_opening_together_share_one_bounds_lookup(tmp_path):
    n = 60
    reader = CountingReader(dict.fromkeys(range(n), 0), {})
    stores = [PartitionStore(tmp_path / f"p{p}") for p in range(n)]

    async def main():
        r = restorer(reader)
        return await asyncio.gather(*(r.restore(p, stores[p]) for p in range(n)))

    assert asyncio.run(main()) == [0] * n
    assert reader.end_calls == [n] and reader.begin_calls == [n] and reader.fetches == 0
    for s in stores:
        s.close()


def test_commit_marker_alone_is_not_replayed_but_a_real_gap_is(tmp_path):
    # partition 0: checkpoint 5, end 6 (our own commit's marker); partition 1: checkpoint 5,
    # a committed transaction after it (records 5 and 6, marker 7, end 8)
    reader = CountingReader({0: 6, 1: 8}, {1: [(5, b"k:a", b"1"), (6, b"k:b", b"2")]})
    s0, s1 = PartitionStore(tmp_path / "p0"), PartitionStore(tmp_path / "p1")
    s0.apply({b"k:x": b"0"}, checkpoint=5)
    s1.apply({b"k:x": b"0"}, checkpoint=5)

    async def main():
        r = restorer(reader)
        return await r.restore(0, s0), await r.restore(1, s1), r.restored_records

    assert asyncio.run(main()) == (0, 2, 2)
    assert reader.fetches == 1
    assert s1.get(b"k:b") == b"2" and s1.checkpoint == 8 and s0.checkpoint == 5
    s0.close()
    s1.close()


def test_a_failed_lookup_fails_every_waiter_and_the_next_one_asks_again(tmp_path):
    reader = CountingReader({0: 0, 1: 0}, {})
    calls = {"n": 0}
    real = reader.end_offsets

    async def flaky(tps):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("broker went away")
        return await real(tps)

    reader.end_offsets = flaky  # type: ignore[method-assign]

    async def main():
        r = restorer(reader)
        first = await asyncio.gather(r.bounds(0), r.bounds(1), return_exceptions=True)
        return first, await r.bounds(1)

    first, again = asyncio.run(main())
    assert all(isinstance(e, OSError) for e in first) and again == (0, 0)
