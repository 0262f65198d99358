"""The key a request is remembered and ordered under: its *scope key*.

Sticky decisions live under it (``k:<scope key>``), and the ordering runs a partition's records
of one scope key one after the other. It is the configured request field or expression
(``cache.scope``), else the Kafka key, else the request id; the handler, the ordering and
``explain`` all take it from here.
"""

from __future__ import annotations

import base64

from ..config import CacheConfig
from ..routing.expressions import Expression, request_names
from ..schemas import Request
from .partition import Source
from .trace import trace_headers

__all__ = ["kafka_key_text", "scope_key"]


def kafka_key_text(key: bytes) -> str:
    """A Kafka key as a scope key: its text when it is UTF-8, else ``b64:<base64>`` (decoding
    with replacement characters would give two different binary keys one sticky decision)."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(key).decode()


def scope_key(
    cache: CacheConfig, expression: Expression | None, source: Source, request: Request | None
) -> str:
    """The scope key of a record and its request (None when it is no request): the configured
    field or ``expression`` value, else the Kafka key, else the request id (else the offset). A
    field/expression value that is empty, null, a bool, or not a string or an integer (or an
    expression that fails on this request) falls back to the Kafka key."""
    if source.key:
        fallback = kafka_key_text(source.key)
    else:
        fallback = (
            f"request:{request.request_id}"
            if request is not None
            else f"offset:{source.partition}:{source.offset}"
        )
    if request is None:
        return fallback
    if cache.scope == "field" and cache.scope_field:
        value = request.fields.get(cache.scope_field)
    elif expression is not None:
        value, _problem = expression.value(request_names(request, fallback, trace_headers(source.headers)))
    else:
        return fallback
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            text = str(value)
        except ValueError:  # an integer too long to print (Python's 4,300-digit limit)
            return fallback
        if text:
            return text
    return fallback
