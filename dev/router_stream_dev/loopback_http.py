"""HTTP plumbing of the loopback emulators: one aiohttp server on 127.0.0.1, its lifecycle, and
the answers every emulated endpoint shares (an OpenAI error body, a dropped connection).

Kept apart from what the servers emulate (:mod:`.model_server`, :mod:`.batch_api_server`,
:mod:`.dialects`) so starting, stopping and threading live in one place and the emulators only
say which routes they serve (:meth:`LoopbackServer.add_routes`).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Self

from aiohttp import web

__all__ = ["LoopbackServer", "drop_connection", "openai_error", "status_error"]


def openai_error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}}, status=status, headers=headers
    )


def status_error(status: int, retry_after: str | None = None) -> web.Response:
    """A failure on purpose with ``status``: the error type OpenAI gives that status, and
    ``Retry-After`` on 429 and 503 when ``retry_after`` is given."""
    headers = {"Retry-After": retry_after} if retry_after is not None and status in (429, 503) else None
    kind = (
        "rate_limit_error"
        if status == 429
        else ("server_error" if status >= 500 else "invalid_request_error")
    )
    return openai_error(status, f"fault {status} on purpose", kind, headers)


async def drop_connection(request: web.Request, *, rst: bool) -> web.StreamResponse:
    """Close the client's connection without answering; with ``rst`` as a reset (RST), so the
    client sees "connection reset by peer" rather than a clean close."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if rst and sock is not None:
            try:  # SO_LINGER 0: close() sends RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort() if rst else transport.close()
    # the handler is cancelled once aiohttp notices the lost connection
    await asyncio.sleep(3600)
    raise web.HTTPServiceUnavailable()  # pragma: no cover


class LoopbackServer:
    """An aiohttp server on ``host:port`` (0 = a free port), run in-process (``async with``), in a
    daemon thread for sync code (:meth:`start_in_thread` … :meth:`stop`), or by a CLI's loop.

    Subclasses register their endpoints in :meth:`add_routes`; ``name`` names the thread."""

    def __init__(self, name: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what a candidate's ``base_url`` should be."""
        return f"http://{self.host}:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        """Register this server's endpoints on ``app`` (called once per :meth:`start`)."""
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a daemon thread with its own event loop; returns ``base_url``."""
        if self._thread is not None:
            raise RuntimeError("already running in a thread")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # report to the caller, then give up
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.close())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"model-server-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"model server {self.name!r} did not start within {timeout}s")
        if failure:
            self._thread = None
            raise failure[0]
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread`."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None
