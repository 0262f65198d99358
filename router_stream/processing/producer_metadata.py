"""One decoded copy of the output topics' metadata for all of a worker's partition producers.

Why: every requests partition has its own transactional producer (a new owner's
``init_transactions`` fences the old one: ``lifecycle.py``), and every aiokafka producer keeps its
own ``ClusterMetadata``, filled by its own Metadata request for the topics it writes to. Those
topics have as many partitions as the requests topic, so a worker opening P partitions had the
broker encode, and its event loop decode and index, 3 × P partitions P times: at 480 partitions
~11 ms of event-loop CPU per producer (8.4 ms to read the response, 2.8 ms to index it), 5.3 s in
all, the biggest single cost of opening them (bench/partitions.py, docs/operations.md
"Partitions per worker").

What: one client of the worker's own tracks the output topics (one request at start, then its
own refresh every ``metadata_max_age_ms``); each producer adopts its tables instead of asking,
and adopts them again after each of its refreshes. So a worker keeps one copy in memory, not one
per producer (~330 MB at 480 partitions), and one refresh every 5 minutes, not 480 (~5.6 s of
event-loop CPU each round). Producers are created with a day-long ``metadata_max_age_ms``
(:data:`PRODUCER_MAX_AGE_MS`): they refresh on their own only when a broker tells them their
metadata is stale (NOT_LEADER, a lost connection, an unknown topic), as aiokafka does for any
producer, and then ask for the tracked topics only. Sending, fencing and transactions are
untouched.

aiokafka internals used (checked against aiokafka 0.14.0;
tests/unit/processing/test_producer_metadata.py fails when they change):

* ``ClusterMetadata`` holds its tables in the attributes of :data:`_TABLES`, and
  ``update_metadata`` replaces them with new objects under ``_lock`` (it never mutates them in
  place), so two instances can share them until either is updated;
* ``AIOKafkaClient._topics`` is the set of topics its metadata requests ask for (``set_topics``
  sets it too, but also sends a request: the request saved here).

Where these attributes are missing (another aiokafka), every producer asks for its own copy and
refreshes it every 5 minutes, as before, and a warning says so once.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata

log = logging.getLogger(__name__)

#: aiokafka's default metadata age: how often the shared copy is refreshed.
DEFAULT_MAX_AGE_MS = 300_000
#: A producer kept up to date by :class:`SharedTopicMetadata` refreshes on its own only on demand.
PRODUCER_MAX_AGE_MS = 24 * 3600 * 1000

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
    """The metadata of ``topics``, fetched and refreshed once for all of a worker's producers."""

    def __init__(self, topics: Iterable[str], settings: dict[str, Any] | None = None) -> None:
        self.topics = sorted(set(topics))
        self.settings = settings or {}
        self.fetches = 0
        self.adopted = 0
        self._client: AIOKafkaClient | None = None
        self._producers: weakref.WeakSet[AIOKafkaProducer] = weakref.WeakSet()
        self._usable = False

    @property
    def producer_max_age_ms(self) -> int:
        """``metadata_max_age_ms`` for a producer that :meth:`attach` will keep up to date."""
        return PRODUCER_MAX_AGE_MS if self._usable else DEFAULT_MAX_AGE_MS

    async def start(self) -> None:
        """Connect and fetch the topics' metadata once (a request with these topics only)."""
        client = AIOKafkaClient(**self.settings, client_id="router-stream-output-metadata")
        await client.bootstrap()
        self._client = client
        self._usable = internals_present(client.cluster, client)
        if not self._usable:
            log.warning(
                "this aiokafka keeps its metadata differently from 0.14: every partition's "
                "producer fetches the output topics' metadata itself (slower opens with many "
                "partitions; see router_stream/processing/producer_metadata.py)"
            )
            return
        client.cluster.add_listener(self._spread)
        await client.set_topics(self.topics)

    async def refresh(self) -> bool:
        """Refresh the shared copy now (it refreshes itself every 5 minutes); producers adopt it."""
        return self._client is not None and bool(await self._client.force_metadata_update())

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def track(self, producer: AIOKafkaProducer) -> None:
        """Before ``producer.start()``: any metadata refresh it makes asks for ``topics`` only.

        Without it a refresh before :meth:`attach` (a failed InitProducerId retries after one)
        asks for every topic of the cluster."""
        if self._usable:
            producer.client._topics = set(self.topics)

    async def attach(self, producer: AIOKafkaProducer) -> bool:
        """After ``producer.start()``: give it the metadata of ``topics``; True when it adopted
        the shared copy (and will adopt each refresh of it), False when it asked the broker."""
        client = producer.client
        shared = self._client.cluster if self._client is not None else None
        if self._usable:
            self._producers.add(producer)  # it adopts the next refresh either way
        if self._usable and shared is not None and self._complete(shared):
            adopt(client.cluster, shared)
            self.adopted += 1
            return True
        # set_topics asks only when the topics are new to the client: after track() they are not
        await client.set_topics(self.topics)
        if not self._complete(client.cluster):
            await client.force_metadata_update()
        self.fetches += 1
        return False

    def _spread(self, cluster: ClusterMetadata) -> None:
        """After each refresh of the shared copy (aiokafka calls it inside ``update_metadata``)."""
        if self._complete(cluster):
            for producer in list(self._producers):
                adopt(producer.client.cluster, cluster)

    def _complete(self, cluster: ClusterMetadata) -> bool:
        """Every partition of every topic known and led (worth sharing)."""
        for topic in self.topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions or cluster.available_partitions_for_topic(topic) != partitions:
                return False
        return True
