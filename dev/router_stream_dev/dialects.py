"""Azure OpenAI, Anthropic Messages and gateway endpoints in front of a loopback :class:`ModelServer`.

Mounted by the model server (``server.dialects``) so tests of every adapter need no internet:

* ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` — Azure OpenAI: needs
  the ``api-version`` query parameter and, when the server has a key, the ``api-key`` header;
* ``POST /v1/messages`` — Anthropic's Messages API: needs ``anthropic-version`` and, with a key,
  ``x-api-key`` (request checks and answers: :mod:`.messages_api`);
* ``POST /gateway/v1/chat/completions`` — an OpenAI-compatible gateway that records the headers
  and query parameters it got (for ``headers:`` / ``query:`` tests).

Each checks its request the way the provider documents it (an Anthropic request with a field the
Messages API does not take, a ``tool_result`` that answers no ``tool_use`` of the previous turn,
or no ``max_tokens`` gets a 400 ``invalid_request_error``), then asks the server's own
``/v1/chat/completions`` over loopback HTTP, so the server's answers, fault modes (``429``,
``529``, ``timeout``, ``reset``, ``malformed``, scripts) and counters apply to every dialect.
Anthropic answers are built in the documented shape (``msg_…`` id, content blocks,
``stop_reason``, ``usage``); errors in Anthropic's error shape, with ``Retry-After`` on 429, 503
and 529. When a request offers tools and its last user turn carries no ``tool_result``, the answer
calls a tool (a ``tool_use`` block after a text block, as in Anthropic's documented example) with
arguments made from the tool's input schema; ``stop_sequences`` and ``max_tokens`` cut the answer
(``stop_reason`` ``stop_sequence`` / ``max_tokens``).

:meth:`DialectEmulator.stats` records what arrived (bodies, the last 100 Anthropic ones, api-version, headers and query
parameters, names lower-cased); the value of a credential-named header or parameter is kept only as a fingerprint
(``sha256:`` + 16 hex digits), so a test can check which secret came without the server keeping it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from router_stream.secret_values import is_credential_name

from .loopback_http import drop_connection
from .messages_api import ERROR_TYPES, to_chat_request, to_messages_answer, validate_messages_request

if TYPE_CHECKING:  # pragma: no cover
    from .model_server import ModelServer

__all__ = ["DialectEmulator", "anthropic_error", "azure_error", "fingerprint"]


def fingerprint(value: str) -> str:
    """How a secret is recorded: ``sha256:`` and the first 16 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _recorded(pairs: Any) -> dict[str, str]:
    """Header or parameter names (lower-cased) to values; a credential's value as its fingerprint."""
    return {k.lower(): (fingerprint(v) if is_credential_name(k) else v) for k, v in pairs}


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_" + uuid.uuid4().hex[:24],
    }
    return web.json_response(body, status=status, headers=headers)


def azure_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


#: how many recent Anthropic request bodies :meth:`DialectEmulator.stats` keeps
RECENT = 100


class _Dropped(Exception):
    """The server behind dropped the connection (``reset``: with RST)."""

    def __init__(self, rst: bool) -> None:
        super().__init__("dropped")
        self.rst = rst


class DialectEmulator:
    """The dialect endpoints of one :class:`ModelServer` (see the module doc)."""

    def __init__(self, server: ModelServer, api_key: str | None = None) -> None:
        self.server = server
        #: the key the dialect endpoints check (None: none); the hop to the chat endpoint uses the server's
        self.api_key = api_key
        self._server_key = api_key
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()
        self.reset_stats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        app.router.add_post("/gateway/v1/chat/completions", self._gateway)
        app.on_cleanup.append(self._close)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                for k, v in self._stats.items()
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {
                "anthropic_calls": 0,
                "azure_calls": 0,
                "gateway_calls": 0,
                "rejected": 0,
                "last_rejection": None,
                "last_anthropic_body": None,
                "last_azure": None,
                "last_gateway": None,
                "last_headers": {},
                "anthropic_bodies": [],
            }

    def _count(self, what: str, **last: Any) -> None:
        with self._lock:
            self._stats[f"{what}_calls"] += 1
            self._stats.update(last)

    def _reject(self, message: str) -> None:
        with self._lock:
            self._stats["rejected"] += 1
            self._stats["last_rejection"] = message

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # ---- the hop to the server's own chat completions -------------------------------------
    async def _forward(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        headers = {"Authorization": f"Bearer {self._server_key}"} if self._server_key else {}
        url = f"http://{self.server.host}:{self.server.port}/v1/chat/completions"
        try:
            async with self._session.post(url, json=body, headers=headers) as resp:
                raw = await resp.read()
                kept = {
                    k: v for k, v in resp.headers.items() if k.lower() in ("retry-after", "retry-after-ms")
                }
                return resp.status, kept, raw
        except aiohttp.ServerDisconnectedError:
            raise _Dropped(rst=False) from None
        except (aiohttp.ClientOSError, aiohttp.ClientPayloadError):
            raise _Dropped(rst=True) from None

    async def _relay(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Forward an OpenAI-shaped body and answer with what the server said, as it said it."""
        try:
            status, headers, raw = await self._forward(body)
        except _Dropped as dropped:
            return await drop_connection(request, rst=dropped.rst)
        return web.Response(status=status, body=raw, headers=headers, content_type="application/json")

    # ---- endpoints --------------------------------------------------------------------------
    async def _azure(self, request: web.Request) -> web.StreamResponse:
        deployment = request.match_info["deployment"]
        version = request.query.get("api-version")
        self._count("azure", last_headers=_recorded(request.headers.items()))
        if not version:
            self._reject("azure: no api-version")
            return azure_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if self.api_key is not None and request.headers.get("api-key") != self.api_key:
            self._reject("azure: api-key missing or wrong")
            return azure_error(
                401, "401", "Access denied due to invalid subscription key or wrong API endpoint."
            )
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return azure_error(400, "BadRequest", "body is not JSON")
        if not isinstance(body, dict):
            return azure_error(400, "BadRequest", "body is not an object")
        with self._lock:
            self._stats["last_azure"] = {
                "deployment": deployment,
                "api_version": version,
                "body": body,
                "query": _recorded(request.query.items()),
            }
        return await self._relay(request, {**body, "model": deployment})

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        self._count(
            "gateway",
            last_headers=_recorded(request.headers.items()),
            last_gateway={"query": _recorded(request.query.items())},
        )
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return azure_error(400, "BadRequest", "body is not JSON")
        return await self._relay(request, body)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        self._count("anthropic", last_headers=_recorded(request.headers.items()))
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            self._reject("anthropic: x-api-key missing or wrong")
            return anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            self._reject("anthropic: no anthropic-version")
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return anthropic_error(400, "There was an issue with your request body: not JSON")
        problem = validate_messages_request(body)
        with self._lock:
            self._stats["last_anthropic_body"] = body
            self._stats["anthropic_bodies"] = [*self._stats["anthropic_bodies"][-(RECENT - 1) :], body]
        if problem:
            self._reject(problem)
            return anthropic_error(400, problem)
        try:
            status, headers, raw = await self._forward(to_chat_request(body))
        except _Dropped as dropped:
            return await drop_connection(request, rst=dropped.rst)
        if status >= 400:
            if status in (429, 503, 529) and not headers and self.server.faults.retry_after is not None:
                headers = {"retry-after": f"{self.server.faults.retry_after:g}"}
            return anthropic_error(status, f"fault {status} on purpose", headers)
        try:
            answer = to_messages_answer(body, json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            answer = None
        if answer is None:  # a malformed answer from the server (fault mode): pass it on as it was
            return web.Response(status=status, body=raw, content_type="application/json")
        return web.json_response(answer, status=status)
