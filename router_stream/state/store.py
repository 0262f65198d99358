"""One partition's local state on RocksDB (rocksdict), mirrored by a Kafka changelog.

Why not a Faust ``Table``: its changelog writes go through Faust's own producer, outside the
transaction that commits our offsets (see docs/faust-eos-defects.md, cause 1 and 3). Here the
changelog records are produced *in the same transaction* as the responses and the consumed
offsets, and the local store is written only **after** that transaction committed, together
with a checkpoint (the changelog offset it reflects) in one atomic RocksDB write batch. So local
state is never ahead of Kafka; after any stop it is brought up to date by replaying the
changelog from the checkpoint (or from the start when the checkpoint cannot be trusted).

Keys:

* ``k:<scope key>`` → the key's state (JSON: sticky decision or none, request count);
* ``r:<request_id>`` → the response first given to that request id (JSON), for answering
  producer retries without a second model call;
* ``j:<request_id>`` → a request parked for a Batch API job, ``b:<job id>`` → a submitted job,
  ``p:<request_id>\0<offset>`` → a repeat of a parked request (see ``processing/batch_jobs.py``);
* ``c:recal:<strategy name>`` → a learned strategy's recalibration controller (JSON: threshold,
  measured strong share, decision count; see ``routing/learned.py``). The janitor never purges it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, WriteBatch

CHECKPOINT_KEY = b"\x00checkpoint"


def key_state_key(scope_key: str) -> bytes:
    return b"k:" + scope_key.encode("utf-8", "surrogatepass")


def request_key(request_id: str) -> bytes:
    return b"r:" + request_id.encode("utf-8", "surrogatepass")


def parked_key(request_id: str) -> bytes:
    """A request waiting for a Batch API job (candidate ``mode: batch``)."""
    return b"j:" + request_id.encode("utf-8", "surrogatepass")


def parked_dup_key(request_id: str, offset: int) -> bytes:
    """A repeat of a parked request, answered when the job completes."""
    return b"p:" + request_id.encode("utf-8", "surrogatepass") + b"\x00" + str(offset).encode()


def controller_key(strategy_name: str) -> bytes:
    """A strategy's controller state (e.g. the learned router's recalibrated threshold)."""
    return b"c:recal:" + strategy_name.encode("utf-8", "surrogatepass")


def job_key(job_id: str) -> bytes:
    """A submitted Batch API job: candidate, request ids, submit time."""
    return b"b:" + job_id.encode("utf-8", "surrogatepass")


class PartitionStore:
    """RocksDB for one input partition. Not shared between partitions or processes.

    ``scan``, ``apply``, ``wipe`` and ``close`` run in worker threads (``asyncio.to_thread``) and
    hold one lock: cancelling the coroutine that awaits a scan does not stop its thread, and
    closing the database under a running iterator is a use-after-free in RocksDB. ``get`` runs on
    the event loop and needs none (nothing closes the store while batches can still read it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._options = Options(raw_mode=True)
        self._options.create_if_missing(True)
        # rocksdict's default 64 MB memtable per partition store kept 1M keys in RAM (bench:
        # +476 MB); 4 MB x 2 memtables moves them to disk (+163 MB) and made lookups faster.
        self._options.set_write_buffer_size(4 * 1024 * 1024)
        self._options.set_max_write_buffer_number(2)
        self._db = Rdict(str(path), self._options)
        self._io = threading.Lock()
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        out: list[tuple[bytes, bytes]] = []
        with self._io:
            if self._closed:
                return out
            # raw_mode: keys and values are bytes (rocksdict's stubs type every mode's keys at once)
            items = cast("Iterator[tuple[bytes, bytes]]", self._db.items(from_key=prefix))
            for key, value in items:
                if not key.startswith(prefix):
                    break
                out.append((key, value))
        return out

    @property
    def checkpoint(self) -> int | None:
        """The changelog offset up to which this store is known to be complete (exclusive)."""
        raw = self._db.get(CHECKPOINT_KEY)
        return int(raw) if raw is not None else None

    def apply(self, writes: dict[bytes, bytes | None], checkpoint: int) -> None:
        """Write committed changes and the new checkpoint atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        with self._io:
            if self._closed:
                raise RuntimeError(f"state store {self.path} is closed; {len(writes)} writes not applied")
            self._db.write(batch)

    def wipe(self) -> None:
        """Drop everything (used when the checkpoint cannot be trusted); reopen empty."""
        with self._io:
            self._db.close()
            Rdict.destroy(str(self.path), self._options)
            shutil.rmtree(self.path, ignore_errors=True)
            self._db = Rdict(str(self.path), self._options)

    def close(self) -> None:
        """Close after any scan or apply still running in a thread (idempotent)."""
        with self._io:
            if not self._closed:
                self._closed = True
                self._db.close()
