"""Model clients: one HTTP client with a dialect per API, retries, breakers, rate limits,
micro-batching and the Batch API.

Internal: the public surface is :mod:`router_stream` (its ``__all__``); names here may change.
"""
