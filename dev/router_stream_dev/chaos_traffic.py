"""The chaos run's input: the requests (:func:`make_traffic`) and the thread that streams them.

The runner (:mod:`.chaos`) pauses the stream across a broker restart by holding
:attr:`PacedProducer.lock`, so no produce request is in flight while the broker is down.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

from aiokafka import AIOKafkaProducer

from .harness import request_value


def make_traffic(records: int, keys: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``records`` requests over ``keys`` keys, each with a random ``fields.tier``."""
    rng = random.Random(seed)
    out = []
    for i in range(records):
        key = f"cust-{rng.randrange(keys)}"
        tier = rng.choice(("gold", "basic"))
        out.append(
            (key.encode(), request_value(f"req-{i}", f"question {i} from {key}", fields={"tier": tier}))
        )
    return out


class PacedProducer(threading.Thread):
    """Streams the requests at a steady rate; ``lock`` is held while a chunk is in flight."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.bootstrap, self.topic, self.records, self.rate = bootstrap, topic, records, rate
        self.lock = threading.Lock()
        self.sent = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    async def _run(self) -> None:
        chunk = max(1, int(self.rate / 4)) if self.rate > 0 else 1000
        started = time.monotonic()
        producer: AIOKafkaProducer | None = None
        try:
            while self.sent < len(self.records):
                if self.rate > 0:  # pace: record i is due at started + i / rate
                    due = started + self.sent / self.rate
                    if due > time.monotonic():
                        await asyncio.sleep(due - time.monotonic())
                await asyncio.to_thread(self.lock.acquire)
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(
                            bootstrap_servers=self.bootstrap,
                            enable_idempotence=True,
                            acks="all",
                            linger_ms=5,
                            request_timeout_ms=60_000,
                        )
                        await producer.start()
                    batch = self.records[self.sent : self.sent + chunk]
                    futures = [await producer.send(self.topic, key=k, value=v) for k, v in batch]
                    await asyncio.gather(*futures)
                    self.sent += len(batch)
                finally:
                    self.lock.release()
        finally:
            if producer is not None:
                await producer.stop()
