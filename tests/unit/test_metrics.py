"""Metrics: the cached label children are the registry's own series."""

from __future__ import annotations


def test_metric_children_are_the_registry_series():
    from router_stream import metrics

    before = (
        metrics.REGISTRY.get_sample_value("router_stream_cache_lookups_total", {"result": "test-children"})
        or 0.0
    )
    metrics.cache_lookups("test-children").inc()
    metrics.cache_lookups("test-children").inc(2)
    assert metrics.cache_lookups("test-children") is metrics.CACHE.labels("test-children")
    assert (
        metrics.REGISTRY.get_sample_value("router_stream_cache_lookups_total", {"result": "test-children"})
        == before + 3
    )
