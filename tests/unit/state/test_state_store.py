"""The partition store (RocksDB): atomic apply with its checkpoint, prefix scans, and a close that
waits for a scan still running in a worker thread."""

from __future__ import annotations

import threading
import time

import pytest

from router_stream.state.store import PartitionStore


def test_apply_scan_checkpoint_and_wipe(tmp_path):
    store = PartitionStore(tmp_path / "p0")
    store.apply({b"k:a": b"1", b"k:b": b"2", b"r:x": b"3"}, checkpoint=7)
    store.apply({b"k:a": None}, checkpoint=9)
    assert store.scan(b"k:") == [(b"k:b", b"2")] and store.get(b"r:x") == b"3" and store.checkpoint == 9
    store.wipe()
    assert store.scan(b"") == [] and store.checkpoint is None
    store.close()
    store.close()  # idempotent


def test_close_waits_for_a_scan_running_in_another_thread(tmp_path):
    store = PartitionStore(tmp_path / "p0")
    store.apply({b"k:%08d" % i: b"v" * 100 for i in range(60_000)}, checkpoint=1)
    result: list[int] = []
    scanning = threading.Thread(target=lambda: result.append(len(store.scan(b"k:"))))
    scanning.start()
    time.sleep(0.005)  # the scan is under way (what a cancelled janitor leaves behind)
    store.close()  # must not free the database under the iterator
    scanning.join(10)
    assert result in ([60_000], [0])  # all of it, or none if close won the race: never a crash
    assert store.scan(b"k:") == []
    with pytest.raises(RuntimeError, match="is closed"):
        store.apply({b"k:z": b"1"}, checkpoint=2)
