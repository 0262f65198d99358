"""Which request headers travel with a request: the tracing headers, and nothing else.

One list for every use: the handler gives them to strategies and expressions and writes them
into the audit record, the transaction copies them onto the response and audit records
(never onto dead letters), and ``explain`` shows the same ones. Any other header a producer
sets stays on the input record: it may carry a secret, and it says nothing about routing.
"""

from __future__ import annotations

__all__ = ["TRACE_HEADERS", "trace_headers"]

#: W3C trace context and baggage, and the request-id / B3 headers most tracers use
TRACE_HEADERS = ("traceparent", "tracestate", "baggage", "x-request-id", "x-b3-traceid")

#: a longer value is dropped: no tracing header is near this size, and the audit stays small
MAX_VALUE_BYTES = 512


def trace_headers(headers: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    """The tracing headers of a consumed record, names lower-cased, values decoded (bad UTF-8
    replaced); values over :data:`MAX_VALUE_BYTES` are left out."""
    out: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in TRACE_HEADERS and value is not None and len(value) <= MAX_VALUE_BYTES:
            out[name.lower()] = value.decode("utf-8", "replace")
    return out
