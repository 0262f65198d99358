"""ModelTransport: httpx requests over aiohttp, answers read whole, errors as httpx's with the cause."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket

import httpx
import pytest
from aiohttp import web

from router_stream.providers.aiohttp_transport import CACHE_LIMIT, ModelTransport
from router_stream.providers.http_transport import transport_error


@pytest.fixture
async def server():
    """A loopback aiohttp server: /echo answers what it got, /gzip a compressed answer, /slow waits."""
    seen: list[dict[str, object]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"headers": dict(request.headers), "body": body, "query": dict(request.query)})
        return web.json_response({"len": len(body), "query": dict(request.query)}, headers={"X-Answer": "1"})

    async def gzipped(request: web.Request) -> web.Response:
        raw = json.dumps({"text": "Lima " * 50}).encode()
        return web.Response(
            body=gzip.compress(raw),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/gzip", gzipped)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def transport():
    """A transport, closed after the test."""
    transport = ModelTransport(4)
    yield transport
    await transport.aclose()


async def test_a_request_goes_out_with_its_headers_body_and_query_and_comes_back_whole(server, transport):
    base, seen = server
    request = httpx.Request("POST", f"{base}/echo?team=a", headers={"X-Team": "search"}, content=b'{"a": 1}')
    resp = await transport.handle_async_request(request)
    assert resp.status_code == 200 and resp.json() == {"len": 8, "query": {"team": "a"}}
    assert resp.headers["x-answer"] == "1" and resp.request is request
    assert seen[-1]["headers"]["X-Team"] == "search" and seen[-1]["headers"]["Content-Length"] == "8"
    # a configured Host (a gateway addressed by IP) reaches the wire
    await transport.handle_async_request(
        httpx.Request("POST", f"{base}/echo", headers={"Host": "models.internal"}, content=b"{}")
    )
    assert seen[-1]["headers"]["Host"] == "models.internal"
    # Accept-Encoding is aiohttp's own (what it can decode), not what httpx would ask for
    own = seen[-1]["headers"].get("Accept-Encoding")
    await transport.handle_async_request(
        httpx.Request("POST", f"{base}/echo", headers={"Accept-Encoding": "x-unknown"}, content=b"{}")
    )
    assert seen[-1]["headers"].get("Accept-Encoding") == own and own != "x-unknown"


async def test_the_header_cache_ignores_body_lengths_and_stays_bounded(server, transport):
    base, seen = server
    for body in (b"{}", b'{"longer": true}'):  # a different Content-Length: the same header set
        await transport.handle_async_request(httpx.Request("POST", f"{base}/echo", content=body))
    assert len(transport._headers) == 1
    await transport.handle_async_request(
        httpx.Request("POST", f"{base}/echo", headers={"Authorization": "Bearer rotated"}, content=b"{}")
    )
    assert len(transport._headers) == 2 and seen[-1]["headers"]["Authorization"] == "Bearer rotated"
    for i in range(CACHE_LIMIT + 5):  # a header value per request: the cache is cleared, not grown
        await transport.handle_async_request(
            httpx.Request("POST", f"{base}/echo", headers={"X-Id": str(i)}, content=b"{}")
        )
    assert len(transport._headers) <= CACHE_LIMIT and seen[-1]["headers"]["X-Id"] == str(CACHE_LIMIT + 4)


async def test_a_compressed_answer_is_decoded_once(server, transport):
    base, _ = server
    resp = await transport.handle_async_request(httpx.Request("GET", f"{base}/gzip"))
    assert resp.json() == {"text": "Lima " * 50}
    assert "content-encoding" not in resp.headers  # aiohttp decoded it: httpx must not again


async def test_an_unread_streamed_body_is_refused(transport):
    async def chunks():
        yield b"{}"

    with pytest.raises(httpx.RequestNotRead):
        await transport.handle_async_request(httpx.Request("POST", "http://127.0.0.1:9/", content=chunks()))


async def test_a_refused_connection_is_a_connection_error_not_a_timeout(transport):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        await transport.handle_async_request(
            httpx.Request("POST", f"http://127.0.0.1:{port}/", content=b"{}")
        )
    error = transport_error(caught.value, "cheap", 1.0)
    assert error is not None and error.kind == "connection" and error.retryable


async def test_a_read_timeout_from_the_request_is_a_timeout(server, transport):
    base, _ = server
    request = httpx.Request(
        "POST", f"{base}/slow", content=b"{}", extensions={"timeout": httpx.Timeout(0.1).as_dict()}
    )
    with pytest.raises(httpx.ReadTimeout) as caught:
        await transport.handle_async_request(request)
    error = transport_error(caught.value, "cheap", 0.1)
    assert error is not None and error.kind == "timeout"
