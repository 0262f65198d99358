"""An OpenAI-compatible chat-completions client on httpx with the aiohttp transport.

One :class:`OpenAIChatClient` per candidate holds ONE httpx transport on aiohttp
(:class:`.aiohttp_transport.ModelTransport`; httpx's default transport collapses under
concurrency, see ``/work/shared/notes/http-client.md``) and hands it each ``httpx.Request``
itself: ``AsyncClient.send`` around it walks auth, redirect, cookie and event-hook machinery
that a model call never uses, measured at ~15% of the call's CPU. With ``api: openai`` it POSTs
``{base_url}/chat/completions`` (``base_url`` includes ``/v1``) with ``Authorization: Bearer <key>``
read from the candidate's env var on every call; ``api: azure-openai`` and ``api: anthropic`` change
the address, headers, body and answer through their :mod:`.dialect` (:mod:`.azure`,
:mod:`.anthropic`), on the same HTTP machinery.

The shared HTTP machinery (the httpx client, transport errors) is :mod:`.http_transport`;
reading the answer is :mod:`.openai_answer`. Failures become the error tree of :mod:`router_stream.errors`; ``kind`` is one of (the status
kinds are OpenAI's mapping; each adapter documents its own):

=================  ==========================================  =========
kind               cause                                       retryable
=================  ==========================================  =========
``timeout``        no full answer within ``call.timeout_s``    yes
``connection``     refused, reset, closed mid-answer           yes
``throttled``      HTTP 429 (``retry_after`` from the header)  yes
``server_error``   HTTP 5xx                                    yes
``http_error``     HTTP 408 / 409                              yes
``malformed``      not JSON, no ``choices``, no content        yes
``auth``           HTTP 401 / 403                              no
``client_error``   any other 4xx (and unexpected statuses)     no
``queue_timeout``  no free connection before the deadline      no
=================  ==========================================  =========

Calls wait for one of the candidate's ``max_connections`` slots in arrival order (an
``asyncio.Semaphore``): aiohttp's own pool hands a freed connection to the newest caller, so
under a backlog some calls starved until they timed out and opened the breaker on a healthy
model. A call that never got a slot is ``queue_timeout``: the endpoint was not contacted, so the
breaker ignores it and the chain moves on to the next candidate. With ``call.deadline_at``
(the dispatcher sets it) the slot wait is bounded by the request's deadline, not by the call's
timeout, and the HTTP exchange then gets the full ``request_timeout_ms`` or what is left of the
deadline (the dispatcher reports a timeout at the deadline as ``deadline_exceeded``).

Messages are built only from the candidate name, status codes and exception class names, never
from headers or response bodies (providers echo masked keys in 401 bodies), so the API key cannot
leak into an exception, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, RetryableModelError
from .aiohttp_transport import ModelTransport
from .anthropic import AnthropicDialect
from .azure import AzureOpenAIDialect
from .base import ChatCall, Completion
from .dialect import Dialect, OpenAIDialect, WireRequest
from .http_transport import BASE_HEADERS, transport_error
from .openai_answer import completion_from_openai

__all__ = ["OpenAIChatClient", "dialect_for", "openai_body"]

log = logging.getLogger(__name__)

#: request params the caller may not override: we set ``model`` and ``messages``, and answer
#: whole (``stream_options`` is refused by OpenAI without ``stream``). ``n`` is allowed: every
#: choice is kept (:func:`completion_from_openai`).
RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})


def openai_body(call: ChatCall, model: str) -> dict[str, Any]:
    """The chat-completions request body for ``call`` on ``model`` (the Batch API's lines too)."""
    body: dict[str, Any] = {k: v for k, v in call.params.items() if k not in RESERVED_PARAMS}
    body["model"] = model
    body["messages"] = call.messages
    return body


_DIALECTS: dict[str, Callable[[str, CandidateConfig], Dialect]] = {
    "openai": OpenAIDialect,
    "azure-openai": AzureOpenAIDialect,
    "anthropic": AnthropicDialect,
}
_REQUEST_HEADERS = (*BASE_HEADERS, ("Content-Type", "application/json"))
#: request bodies as httpx encodes ``json=`` (compact, UTF-8); made once: ``json.dumps`` with
#: options builds an encoder per call
_BODY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dialect_for(candidate_name: str, cfg: CandidateConfig) -> Dialect:
    """The adapter of the candidate's ``api`` (see :mod:`.dialect`)."""
    return _DIALECTS[cfg.api](candidate_name, cfg)


class OpenAIChatClient:
    """:class:`~router_stream.providers.base.ModelClient` for one candidate, whatever its ``api``:
    the HTTP machinery is this class's, what differs per provider is its :mod:`.dialect`."""

    def __init__(self, candidate_name: str, cfg: CandidateConfig) -> None:
        self.name = candidate_name
        self.cfg = cfg
        self.dialect = dialect_for(candidate_name, cfg)
        self.url = self.dialect.endpoint  # no query string: a query value may be a secret
        self._transport = ModelTransport(cfg.max_connections)
        self._timeout = httpx.Timeout(cfg.request_timeout_ms / 1000.0).as_dict()
        self._slots = asyncio.Semaphore(cfg.max_connections)  # FIFO: no caller starves (see module doc)

    def __repr__(self) -> str:
        return (
            f"OpenAIChatClient(name={self.name!r}, api={self.cfg.api!r}, url={self.url!r}, "
            f"model={self.cfg.model!r})"
        )

    def _request(self, wire: WireRequest) -> httpx.Request:
        """The POST, built directly rather than by ``AsyncClient.post``.

        ``post`` re-parses and merges the base URL, default headers, cookies and params on every
        call: measured at about a third of the client's CPU per call. Here the URL is parsed
        once and the headers are complete already; the body is encoded as httpx would encode
        ``json=`` (compact, UTF-8). The total timeout is enforced by ``asyncio.timeout`` around
        the call; the transport keeps the candidate's ``request_timeout_ms`` as its own bound.
        """
        content = _BODY_JSON.encode(wire.body).encode()
        headers = list(_REQUEST_HEADERS)
        if wire.headers:  # a configured header (e.g. User-Agent) replaces a default of the same name
            names = {name.lower() for name, _ in wire.headers}
            headers = [h for h in headers if h[0].lower() not in names] + wire.headers
        return httpx.Request(
            "POST", wire.url, headers=headers, content=content, extensions={"timeout": self._timeout}
        )

    async def complete(self, call: ChatCall) -> Completion:
        body = openai_body(call, self.cfg.model)
        timeout_s = max(0.001, call.timeout_s)
        queued_at = time.monotonic()
        wait_s = call.deadline_at - queued_at if call.deadline_at is not None else timeout_s
        wire = self.dialect.request(body)  # before a slot: an untranslatable request calls nobody
        try:
            if self._slots.locked():  # a free slot is taken at once: no timer for the common case
                async with asyncio.timeout(max(0.001, wait_s)):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError:
            raise FatalModelError(
                f"{self.name}: no free connection within {wait_s:.3g}s "
                f"(max_connections={self.cfg.max_connections})",
                kind="queue_timeout",
            ) from None
        try:
            started = time.monotonic()
            if call.deadline_at is not None:  # the slot wait did not eat the call's own timeout
                timeout_s = max(0.001, min(self.cfg.request_timeout_ms / 1000.0, call.deadline_at - started))
            try:
                async with asyncio.timeout(timeout_s):
                    resp = await self._transport.handle_async_request(self._request(wire))
            except Exception as exc:
                error = transport_error(exc, self.name, timeout_s)
                if error is None:
                    raise
                raise error from None
        finally:
            self._slots.release()
        latency_ms = (time.monotonic() - started) * 1000.0

        if not 200 <= resp.status_code < 300:
            raise self.dialect.status_error(resp)
        try:
            data = self.dialect.openai_response(
                json.loads(resp.content)
            )  # the provider's answer, as OpenAI's
        except (ValueError, UnicodeDecodeError):
            raise RetryableModelError(
                f"{self.name}: malformed body (not JSON)", kind="malformed", status=resp.status_code
            ) from None
        completion = completion_from_openai(
            data,
            name=self.name,
            default_model=self.cfg.model,
            messages=call.messages,
            latency_ms=latency_ms,
            status=resp.status_code,
            params=call.params,
        )
        completion.dropped_params = list(wire.dropped)
        return completion

    async def aclose(self) -> None:
        await self._transport.aclose()
