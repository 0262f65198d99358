"""router-stream: per-record model routing inside a Kafka stream, exactly once.

Public surface: the records in :mod:`router_stream.schemas`, the error tree in
:mod:`router_stream.errors`, configuration in :mod:`router_stream.config` and the
``router-stream`` command (:mod:`router_stream.cli`).
"""

__version__ = "0.1.0"
