"""The transport under the model clients' ``httpx.AsyncClient``: aiohttp, the body read whole.

``httpx_aiohttp.AiohttpTransport`` hands httpx a *streaming* response: httpx then reads it
through four layers of async iterators (``aiter_raw`` → ``aiter_bytes`` → the transport's
``iter_chunked`` → aiohttp), and closes it through two more. A model answer is a few kilobytes
that the client always reads whole, so this transport reads the body with one
``ClientResponse.read()``, releases the connection, and returns an ``httpx.Response`` whose
content is already there (httpx still applies ``Content-Encoding`` to it, as it would to a
stream). Measured by ``python -m bench --only kafka-limit``: about a quarter of the client's CPU
per call (docs/performance.md).

Everything else is ``AiohttpTransport``'s: the same aiohttp connector and limits, the same
request (headers, body, no redirects, no decompression by aiohttp, the per-request connect and
read timeouts from httpx's ``timeout`` extension) and the same exception mapping
(``httpx_aiohttp.transport.map_aiohttp_exceptions``: a refused or reset connection is reported
as ``httpx.ConnectTimeout`` caused by the aiohttp error, which ``openai.transport_error``
unwraps), now also around the body read, where the streaming transport mapped it too.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

_HTTP11 = b"HTTP/1.1"


class AiohttpBodyTransport(AiohttpTransport):
    """:class:`httpx_aiohttp.AiohttpTransport` that reads each response body whole (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

    def _client_timeout(self, timeout: dict[str, Any]) -> aiohttp.ClientTimeout:
        """aiohttp's timeout for httpx's ``timeout`` extension (one object per distinct value)."""
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) > 64:  # per-request timeouts that vary: do not grow without end
                self._timeouts.clear()
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.proxy is not None or not isinstance(request.stream, httpx.ByteStream):
            return await super().handle_async_request(request)  # a proxy, or a streamed upload
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        body = request.content or None
        with map_aiohttp_exceptions():
            async with self.client.request(
                method=request.method,
                url=str(request.url),
                headers=request.headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._client_timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
            ) as response:
                content = await response.read()
                status, raw_headers, reason = response.status, response.raw_headers, response.reason
        extensions: dict[str, Any] = {"http_version": _HTTP11}
        if reason:
            extensions["reason_phrase"] = reason.encode()
        return httpx.Response(
            status_code=status, headers=raw_headers, content=content, request=request, extensions=extensions
        )
