"""Routing: the strategies (one module each), the pipeline that runs them in order, and the
registry of strategy configs.

Internal: the public surface is :mod:`router_stream` (its ``__all__``: ``Strategy``, ``Decision``,
``RoutingContext`` for a custom strategy); names here may change.
"""
