"""Per-key ordering: records of one key or one request id stay in one chain, in offset order."""

from __future__ import annotations

from router_stream.processing.ordering import order_chains


def test_group_keeps_same_key_and_same_request_id_together():
    chains = order_chains([("a", "1"), ("b", "2"), ("a", "3"), ("c", "2"), ("d", None)])
    as_sets = sorted(sorted(c) for c in chains)
    assert as_sets == [[0, 2], [1, 3], [4]]
    for c in chains:
        assert c == sorted(c)  # offset order inside a chain
