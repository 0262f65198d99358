"""AiohttpBodyTransport answers as httpx_aiohttp.AiohttpTransport does, over real loopback HTTP."""

from __future__ import annotations

import gzip

import aiohttp
import httpx
import pytest
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from router_stream.providers.openai import transport_error
from router_stream.providers.transport import AiohttpBodyTransport


@pytest.fixture
async def base_url():
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        if request.query.get("gzip"):
            return web.Response(
                body=gzip.compress(b'{"ok": true}'),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json", "X-Two": "a"},
            )
        return web.Response(
            status=int(request.query.get("status", 200)),
            reason="Custom Reason",
            body=b'{"got": %d, "ua": "%s"}' % (len(body), request.headers.get("User-Agent", "").encode()),
            headers={"Set-Cookie": "a=1", "X-Two": "b"},
        )

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _post(transport: httpx.AsyncBaseTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        return await client.post(url, content=b"x" * 300, headers={"User-Agent": "rs-test"})


@pytest.mark.parametrize("query", ["", "?gzip=1", "?status=503"])
async def test_same_response_as_the_streaming_transport(base_url, query):
    lean = await _post(AiohttpBodyTransport(), f"{base_url}/echo{query}")
    stock = await _post(AiohttpTransport(), f"{base_url}/echo{query}")
    assert lean.status_code == stock.status_code
    assert lean.content == stock.content  # gzip decoded by httpx in both
    assert lean.json() == stock.json()
    assert lean.reason_phrase == stock.reason_phrase
    assert lean.headers.get("x-two") == stock.headers.get("x-two")
    assert lean.http_version == stock.http_version == "HTTP/1.1"


async def test_refused_connection_maps_as_the_stock_transport():
    with socket_free_port() as port:
        url = f"http://127.0.0.1:{port}/echo"
    with pytest.raises(httpx.TransportError) as lean:
        await _post(AiohttpBodyTransport(), url)
    with pytest.raises(httpx.TransportError) as stock:
        await _post(AiohttpTransport(), url)
    assert type(lean.value) is type(stock.value)
    assert isinstance(lean.value.__cause__, aiohttp.ClientConnectionError)
    error = transport_error(lean.value, "cheap", 1.0)
    assert error is not None and error.kind == "connection"


class socket_free_port:
    """A port nobody listens on (bound, then released)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
