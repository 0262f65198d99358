"""One decoded copy of the output topics' metadata for all of a worker's partition producers.

Why: every requests partition has its own transactional producer (a new owner's
``init_transactions`` fences the old one: ``lifecycle.py``), and every aiokafka producer keeps its
own ``ClusterMetadata``, filled by its own Metadata request for the topics it writes to. Those
topics have as many partitions as the requests topic, so a worker opening P partitions had the
broker encode, and its event loop decode and index, 3 × P partitions P times: at 480 partitions
~11 ms of event-loop CPU per producer (8.4 ms to read the response, 2.8 ms to index it), 5.3 s in
all, the biggest single cost of opening them (bench/partitions.py, docs/operations.md
"Partitions per worker").

What: the first producer opened asks for the output topics' metadata (one request, as before) and
a snapshot of it is kept; each producer opened while that snapshot is younger than ``max_age_s``
adopts its tables instead of asking. Each producer still tracks the output topics itself, so its
own refreshes (after a NOT_LEADER error, a lost connection, or every ``metadata_max_age_ms``) ask
for those topics only and give it its own fresh copy. A stale adopted leader costs what a leader
move costs any producer: one NOT_LEADER answer, then a refresh. Sending, fencing and transactions
are untouched.

aiokafka internals used (checked against aiokafka 0.14.0;
tests/unit/processing/test_producer_metadata.py fails when they change):

* ``ClusterMetadata`` holds its tables in the attributes of :data:`_TABLES`, and
  ``update_metadata`` replaces them with new objects under ``_lock`` (it never mutates them in
  place), so two instances can share them until either is updated;
* ``AIOKafkaClient._topics`` is the set of topics its metadata requests ask for (``set_topics``
  sets it too, but also sends a request: the request saved here).

Where these attributes are missing (another aiokafka), every producer asks for its own copy, as
before, and a warning says so once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata

log = logging.getLogger(__name__)

#: ``ClusterMetadata`` attributes replaced as a whole by ``update_metadata`` (aiokafka 0.14.0).
_TABLES = (
    "_brokers",
    "_partitions",
    "_broker_partitions",
    "controller",
    "internal_topics",
    "unauthorized_topics",
)


def internals_present(cluster: ClusterMetadata, client: object) -> bool:
    """Whether ``cluster`` and ``client`` have the attributes this module relies on."""
    return all(hasattr(cluster, a) for a in (*_TABLES, "_lock")) and isinstance(
        getattr(client, "_topics", None), set
    )


def adopt(target: ClusterMetadata, source: ClusterMetadata) -> None:
    """Make ``target`` answer as ``source`` does, sharing its tables (no copy, no decode)."""
    with target._lock:
        for name in _TABLES:
            setattr(target, name, getattr(source, name))


class SharedTopicMetadata:
    """The metadata of ``topics`` fetched once for the producers opened within ``max_age_s``."""

    def __init__(self, topics: Iterable[str], max_age_s: float = 30.0) -> None:
        self.topics = sorted(set(topics))
        self.max_age_s = max_age_s
        self.fetches = 0
        self.adopted = 0
        self._snapshot: ClusterMetadata | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()  # the first producer of a wave asks; the others wait for its answer
        self._usable: bool | None = None

    def _check(self, producer: AIOKafkaProducer) -> bool:
        if self._usable is None:
            self._usable = internals_present(producer.client.cluster, producer.client)
            if not self._usable:
                log.warning(
                    "this aiokafka keeps its metadata differently from 0.14: every partition's "
                    "producer fetches the output topics' metadata itself (slower opens with many "
                    "partitions; see router_stream/processing/producer_metadata.py)"
                )
        return self._usable

    def track(self, producer: AIOKafkaProducer) -> None:
        """Before ``producer.start()``: any metadata refresh it makes asks for ``topics`` only.

        Without it a refresh before :meth:`attach` (a failed InitProducerId retries after one)
        asks for every topic of the cluster."""
        if self._check(producer):
            producer.client._topics = set(self.topics)

    async def attach(self, producer: AIOKafkaProducer) -> bool:
        """After ``producer.start()``: give it the metadata of ``topics``; True when it was
        adopted from the snapshot, False when this producer asked the broker for it."""
        client = producer.client
        usable = self._check(producer)
        async with self._lock:
            snapshot = self._snapshot
            if usable and snapshot is not None and time.monotonic() - self._taken_at < self.max_age_s:
                adopt(client.cluster, snapshot)
                self.adopted += 1
                return True
            # set_topics asks only when the topics are new to the client: after track() they are not
            await client.set_topics(self.topics)
            cluster = client.cluster
            if not self._complete(cluster):
                await client.force_metadata_update()
            self.fetches += 1
            if usable and self._complete(cluster):
                snapshot = ClusterMetadata()
                adopt(snapshot, cluster)
                self._snapshot, self._taken_at = snapshot, time.monotonic()
            return False

    def _complete(self, cluster: ClusterMetadata) -> bool:
        """Every partition of every topic known and led (worth sharing)."""
        for topic in self.topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions or cluster.available_partitions_for_topic(topic) != partitions:
                return False
        return True
