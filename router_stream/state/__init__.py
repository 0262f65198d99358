"""Local state: the sticky decision table and the request-id dedup window, per partition.

Internal: the public surface is :mod:`router_stream` (its ``__all__``); names here may change.
"""
