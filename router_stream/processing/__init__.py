"""The exactly-once request path: the processor's loop, partition lifecycle and restore,
per-key ordering, transactions, and the handler that turns one record into its outputs.

Internal: the public surface is :mod:`router_stream` (its ``__all__``); names here may change.
"""
