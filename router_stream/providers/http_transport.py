"""The HTTP machinery every model client shares: the transport on aiohttp per candidate
(:class:`.aiohttp_transport.ModelTransport`; httpx's default transport collapses under
concurrency, see ``/work/shared/notes/http-client.md``), an ``httpx.AsyncClient`` on it with no
cookie jar for the clients that want one, and the mapping of transport exceptions to the
:mod:`router_stream.errors` tree (``timeout`` vs ``connection``).

Used by the online client (:mod:`.openai`) and the Batch API client (:mod:`.batch_api`).
Messages carry a prefix, a timeout and an exception class name, never a body or header.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError, RetryableModelError
from .aiohttp_transport import ModelTransport

__all__ = ["BASE_HEADERS", "ModelHTTPClient", "shared_http_client", "transport_error"]


def _is_timeout(exc: BaseException) -> bool:
    """True when a transport error is really a timeout.

    The transport raises httpx's classes with the aiohttp exception as the cause (and
    ``httpx_aiohttp.AiohttpTransport``, compared in the benchmarks, maps every refused or reset
    connection to ``httpx.ConnectTimeout``), so the httpx class alone cannot be trusted: look at
    the aiohttp exception it wraps.
    """
    cause = exc.__cause__
    if cause is not None:
        return isinstance(cause, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError))
    return isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError))


class _NoCookies(httpx.Cookies):
    """Cookies that stay empty: model APIs are stateless.

    A ``Set-Cookie`` from a load balancer must not pin or change later calls; and skipping
    ``http.cookiejar`` spares every response about 7% of the client's CPU per call.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()


class ModelHTTPClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` that keeps no cookies (see :class:`_NoCookies`)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, value: Any) -> None:
        raise TypeError("model HTTP clients keep no cookies")


#: headers every client sends (requests are built without the client's header merge, see below)
BASE_HEADERS: tuple[tuple[str, str], ...] = (("Accept", "application/json"), ("User-Agent", "router-stream"))


def shared_http_client(cfg: CandidateConfig, timeout_s: float) -> ModelHTTPClient:
    """An ``httpx.AsyncClient`` on the candidate's own transport (the Batch API client's).

    trust_env=False: with proxy env vars set, httpx would mount its default transport for
    proxied URLs, silently bypassing the aiohttp transport. No ``limits``: httpx uses them only to
    build a transport of its own; the candidate's transport bounds its pool.
    """
    return ModelHTTPClient(
        transport=ModelTransport(cfg.max_connections),
        trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        headers=dict(BASE_HEADERS),
    )


def transport_error(exc: BaseException, prefix: str, timeout_s: float) -> ModelError | None:
    """The :class:`ModelError` for an exception raised while talking HTTP, or None if not ours.

    Shared by every client on the aiohttp transport: it reports refused/reset connections as
    ``httpx.ConnectTimeout``, so the aiohttp error underneath decides timeout vs connection.
    Messages carry the prefix, the timeout and an exception class name, never a body or header.
    """
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, (httpx.TransportError, aiohttp.ClientError, OSError)) and _is_timeout(exc)
    ):
        return RetryableModelError(f"{prefix}: no answer within {timeout_s:.3g}s", kind="timeout")
    if isinstance(exc, (httpx.TransportError, aiohttp.ClientError, OSError)):
        return RetryableModelError(
            f"{prefix}: connection failed ({type(exc.__cause__ or exc).__name__})", kind="connection"
        )
    if isinstance(exc, httpx.HTTPError):  # e.g. a bad URL in config: not worth a retry
        return FatalModelError(f"{prefix}: request failed ({type(exc).__name__})", kind="client_error")
    return None
