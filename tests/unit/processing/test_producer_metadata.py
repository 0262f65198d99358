"""The aiokafka internals that producer_metadata.py relies on (checked against aiokafka 0.14.0).

A producer that adopts the shared snapshot must answer every metadata question as a producer that
fetched the same response itself, and a later update of either copy must leave the other alone.
These fail if aiokafka renames ``ClusterMetadata``'s tables or starts updating them in place; the
same path against a real broker is in tests/integration/test_producer_metadata.py."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataResponse_v1

from router_stream.processing.producer_metadata import adopt, internals_present


def response(leaders: dict[str, list[int]], brokers: tuple[int, ...] = (1, 2)) -> MetadataResponse_v1:
    """A Metadata answer: topic -> the leader of each partition."""
    return MetadataResponse_v1(
        [(b, f"broker-{b}", 9092, None) for b in brokers],
        brokers[0],
        [
            (0, topic, False, [(0, p, leader, [leader], [leader]) for p, leader in enumerate(parts)])
            for topic, parts in leaders.items()
        ],
    )


def views(cluster: ClusterMetadata, topics: list[str]) -> dict[str, object]:
    """Everything a producer asks its ClusterMetadata (client, sender, accumulator)."""
    brokers = sorted(b.nodeId for b in cluster.brokers())
    return {
        "brokers": brokers,
        "broker_hosts": [cluster.broker_metadata(b) for b in brokers],
        "controller": cluster.controller,
        "topics": cluster.topics(),
        "partitions": {t: cluster.partitions_for_topic(t) for t in topics},
        "available": {t: cluster.available_partitions_for_topic(t) for t in topics},
        "leaders": {
            (t, p): cluster.leader_for_partition(TopicPartition(t, p))
            for t in topics
            for p in cluster.partitions_for_topic(t) or ()
        },
        "by_broker": {b: cluster.partitions_for_broker(b) for b in brokers},
        "unauthorized": cluster.unauthorized_topics,
    }


def test_an_adopted_copy_answers_as_one_that_decoded_the_response_itself() -> None:
    answer = response({"out.responses": [1, 2, 1, 2], "out.audit": [2, 2, 1]})
    fetched, source, adopted = ClusterMetadata(), ClusterMetadata(), ClusterMetadata()
    fetched.update_metadata(answer)
    source.update_metadata(answer)
    adopt(adopted, source)
    topics = ["out.responses", "out.audit", "missing"]
    assert views(adopted, topics) == views(fetched, topics)
    assert adopted.partitions_for_topic("out.audit") == {0, 1, 2}
    assert adopted.leader_for_partition(TopicPartition("out.responses", 1)) == 2


def test_updating_either_copy_leaves_the_other_as_it_was() -> None:
    first = response({"out.responses": [1, 1], "out.audit": [1]})
    moved = response({"out.responses": [2, 2], "out.audit": [2]})
    source, adopted = ClusterMetadata(), ClusterMetadata()
    source.update_metadata(first)
    adopt(adopted, source)
    before = views(source, ["out.responses", "out.audit"])

    adopted.update_metadata(moved)  # the producer's own refresh after a NOT_LEADER answer

    assert views(source, ["out.responses", "out.audit"]) == before
    assert adopted.leader_for_partition(TopicPartition("out.responses", 0)) == 2
    source.update_metadata(response({"out.audit": [1]}))
    assert adopted.partitions_for_topic("out.responses") == {0, 1}


async def test_the_attributes_relied_on_exist_in_this_aiokafka() -> None:
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
    assert internals_present(client.cluster, client)
    assert client._topics == set()  # a refresh of an empty set asks for every topic of the cluster


def test_missing_internals_are_detected_not_assumed() -> None:
    class OtherClient:
        topics: set[str] = set()

    assert not internals_present(ClusterMetadata(), OtherClient())
