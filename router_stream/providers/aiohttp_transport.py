"""The httpx transport every model client sits on: aiohttp underneath, answers read whole.

httpx is the HTTP API of router-stream's clients (requests, responses, status errors); its own
transport collapses under concurrency (``/work/shared/notes/http-client.md``), so the bytes go
through aiohttp. ``httpx_aiohttp.AiohttpTransport`` did that generically: per request it
re-parsed the URL into a ``yarl.URL``, rebuilt aiohttp's header dict from httpx's headers, made
a ``ClientTimeout``, and handed the body back as a stream of async iterators that httpx then
walked chunk by chunk. With it (and ``AsyncClient.send``) one call cost ~395 µs of CPU against
~165 µs on raw aiohttp; on this transport, handed requests directly by the client, ~325 µs
(interleaved A/B, 64 in flight, instant loopback model; docs/performance.md). A model answer is
one small JSON document that the caller reads whole anyway, so this transport:

* keeps the parsed ``yarl.URL``, the header dict and the ``ClientTimeout`` per distinct value (a
  candidate sends the same few; each cache is bounded, see :data:`CACHE_LIMIT`);
* reads the answer whole inside aiohttp and returns an ``httpx.Response`` built on those bytes,
  so the connection goes back to the pool before the caller parses anything;
* raises httpx's transport exceptions with the aiohttp error as ``__cause__`` (what
  :func:`.http_transport.transport_error` reads to tell a timeout from a refused connection).

It takes request bodies as bytes: every caller sends JSON, and the Batch API reads its multipart
upload into bytes first (``Request.aread``) so aiohttp sends a length, not chunks.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["CACHE_LIMIT", "ModelTransport", "default_ssl_context"]

#: entries per cache (URLs, header sets, timeouts); past it the cache is cleared and refilled.
#: A candidate sends one URL and one header set (the API key is read per call, so a rotated key
#: adds one), so 256 is never reached in practice; the bound only keeps a misbehaving caller
#: (a header value per request) from growing memory.
CACHE_LIMIT = 256

#: headers aiohttp sets itself, never forwarded: the body's length and framing (so the header
#: cache key does not change with each body), and ``Accept-Encoding``: aiohttp decodes answers
#: itself and advertises exactly the encodings it can decode, while httpx's client default
#: advertises what *httpx* could decode (br or zstd when their packages are installed).
#: (``Host`` is forwarded: httpx sets it from the URL, and a configured one, e.g. for a gateway
#: addressed by IP, must reach the wire.)
_SET_BY_AIOHTTP = frozenset({b"content-length", b"transfer-encoding", b"accept-encoding"})

_Headers = CIMultiDictProxy[str]


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def _cached(cache: dict[_K, _V], key: _K, make: Callable[[_K], _V]) -> _V:
    """``cache[key]``, made by ``make(key)`` when missing; a full cache (:data:`CACHE_LIMIT`) is
    cleared first."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        value = cache[key] = make(key)
    return value


def _header_dict(raw: tuple[tuple[bytes, bytes], ...]) -> _Headers:
    return CIMultiDictProxy(
        CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)
    )


@functools.lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    """One default TLS context for all transports (building one loads the CA bundle: ~50 ms)."""
    return httpx.create_ssl_context()


class ModelTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession`` (see the module doc).

    ``max_connections`` bounds the session's pool; idle connections close after
    ``keepalive_expiry_s``. The session is made on the first request, inside the running loop.
    Without ``ssl_context``, the shared :func:`default_ssl_context`.
    """

    def __init__(
        self,
        max_connections: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        self._ssl = ssl_context or default_ssl_context()
        self._max_connections = max_connections
        self._keepalive_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}
        self._headers: dict[tuple[tuple[bytes, bytes], ...], _Headers] = {}
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_s, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def _url(self, request: httpx.Request) -> yarl.URL:
        return _cached(self._urls, str(request.url), lambda text: yarl.URL(text, encoded=True))

    def _headers_of(self, request: httpx.Request) -> _Headers:
        key = tuple(pair for pair in request.headers.raw if pair[0].lower() not in _SET_BY_AIOHTTP)
        return _cached(self._headers, key, _header_dict)

    def _timeout_of(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's per-phase timeouts as aiohttp's (``pool`` bounds getting a connection)."""
        given = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        return _cached(
            self._timeouts,
            key,
            lambda k: aiohttp.ClientTimeout(sock_connect=k[0], sock_read=k[1], connect=k[2]),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_now()
        body = request.content or None  # bytes: raises httpx.RequestNotRead for an unread stream
        try:
            async with session.request(
                request.method,
                self._url(request),
                headers=self._headers_of(request),
                data=body,
                allow_redirects=False,
                compress=False,
                timeout=self._timeout_of(request),
            ) as answer:
                content = await answer.read()
                status, raw_headers = answer.status, answer.raw_headers
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(f"no answer in time ({type(exc).__name__})", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(f"connection failed ({type(exc).__name__})", request=request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.ReadError(f"answer cut short ({type(exc).__name__})", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(f"connection failed ({type(exc).__name__})", request=request) from exc
        # the body is already decoded (gzip/deflate) by aiohttp: drop the header so httpx does not
        # decode it a second time
        headers = [(k, v) for k, v in raw_headers if k.lower() != b"content-encoding"]
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
