"""An OpenAI-compatible chat-completions client on httpx with the aiohttp transport.

One :class:`OpenAIChatClient` per candidate holds ONE shared ``httpx.AsyncClient`` whose
transport is ``httpx_aiohttp.AiohttpTransport`` (httpx's default transport collapses under
concurrency, see ``/work/shared/notes/http-client.md``). With ``api: openai`` it POSTs
``{base_url}/chat/completions`` (``base_url`` includes ``/v1``) with ``Authorization: Bearer <key>``
read from the candidate's env var on every call; ``api: azure-openai`` and ``api: anthropic`` change
the address, headers, body and answer through their :mod:`.dialect` (:mod:`.azure`,
:mod:`.anthropic`), on the same HTTP machinery.

Failures become the error tree of :mod:`router_stream.errors`; ``kind`` is one of (the status
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
import functools
import json
import logging
import ssl
import time
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError, RetryableModelError
from ..schemas import Usage
from .anthropic import AnthropicDialect
from .azure import AzureOpenAIDialect
from .base import ChatCall, Completion, estimate_prompt_tokens, estimate_tokens
from .dialect import Dialect, OpenAIDialect, WireRequest, parse_retry_after

__all__ = ["OpenAIChatClient", "dialect_for", "parse_retry_after", "shared_http_client", "transport_error"]

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


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One default TLS context for all clients (building one loads the CA bundle: ~50 ms)."""
    return httpx.create_ssl_context()


def _is_timeout(exc: BaseException) -> bool:
    """True when a transport error is really a timeout.

    ``AiohttpTransport`` maps every ``aiohttp.ClientConnectionError`` (refused, reset, server
    disconnected) to ``httpx.ConnectTimeout``, so the httpx class alone cannot be trusted: look at
    the aiohttp exception it wraps.
    """
    cause = exc.__cause__
    if cause is not None:
        return isinstance(cause, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError))
    return isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError))


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return _well_formed(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return _well_formed("".join(parts)) if parts else None
    return None


def _well_formed(text: str) -> str:
    """``text`` with each lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot carry it) replaced
    by U+FFFD: otherwise the response could not be serialized, and a served answer would become a
    dead letter. Escaped surrogate *pairs* are joined into their character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _well_formed_json(value: Any) -> Any:
    """``value`` (parsed JSON) with :func:`_well_formed` applied to every string, keys included."""
    if isinstance(value, str):
        return _well_formed(value)
    if isinstance(value, dict):
        return {_well_formed(str(k)): _well_formed_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_well_formed_json(v) for v in value]
    return value


def _details(raw: Any) -> dict[str, Any] | None:
    return _well_formed_json(raw) if isinstance(raw, dict) and raw else None


def _usage(
    raw: Any, messages: list[dict[str, Any]], text: str, params: dict[str, Any] | None = None
) -> Usage:
    if isinstance(raw, dict):
        try:
            p = int(raw.get("prompt_tokens") or 0)
            c = int(raw.get("completion_tokens") or 0)
            t = int(raw.get("total_tokens") or (p + c))
            return Usage(
                prompt_tokens=p,
                completion_tokens=c,
                total_tokens=t,
                prompt_tokens_details=_details(raw.get("prompt_tokens_details")),
                completion_tokens_details=_details(raw.get("completion_tokens_details")),
            )
        except (TypeError, ValueError, OverflowError):
            pass
    p = estimate_prompt_tokens(messages, params)
    c = estimate_tokens(text)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _answered(message: dict[str, Any]) -> bool:
    """An assistant message says something: content (text, even empty), tool calls, a refusal,
    a (deprecated) function call, or audio. Anything less is a malformed answer."""
    return (
        _content_text(message.get("content")) is not None
        or (isinstance(message.get("tool_calls"), list) and bool(message["tool_calls"]))
        or isinstance(message.get("refusal"), str)
        or isinstance(message.get("function_call"), dict)
        or isinstance(message.get("audio"), dict)
    )


def _str_or_none(value: Any) -> str | None:
    return _well_formed(value) if isinstance(value, str) and value else None


def completion_from_openai(
    data: Any,
    *,
    name: str,
    default_model: str,
    messages: list[dict[str, Any]],
    latency_ms: float,
    status: int = 200,
    params: dict[str, Any] | None = None,
    what: str = "body",
) -> Completion:
    """A parsed OpenAI chat-completion response (``{"id", "model", "choices", "usage", ...}``) as a
    :class:`~.base.Completion`: the first choice's assistant message as returned, its text,
    ``finish_reason``, every choice when there are several, usage with its details (estimated
    from ``messages`` when the provider sends none), and the response id.

    The one place that reads this shape: the online client, the Batch API's result lines and
    adapters that translate another provider's answer into it all come through here. Raises
    ``RetryableModelError(kind="malformed")`` (``what`` names the thing in the message: body,
    line) when there is no object, no choices, or a first message with neither content,
    tool_calls, refusal, function_call nor audio. Every string is made UTF-8-safe.
    """
    if not isinstance(data, dict):
        raise RetryableModelError(
            f"{name}: malformed {what} (not an object)", kind="malformed", status=status
        )
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RetryableModelError(f"{name}: malformed {what} (no choices)", kind="malformed", status=status)
    first = choices[0]
    message = first.get("message")
    if not isinstance(message, dict) or not _answered(message):
        raise RetryableModelError(
            f"{name}: malformed {what} (no message content, tool calls or refusal)",
            kind="malformed",
            status=status,
        )
    try:
        message = _well_formed_json(message)
        all_choices = None
        if len(choices) > 1:
            all_choices = [_well_formed_json(c) for c in choices if isinstance(c, dict)]
        logprobs = _well_formed_json(first["logprobs"]) if isinstance(first.get("logprobs"), dict) else None
    except RecursionError:
        raise RetryableModelError(
            f"{name}: malformed {what} (nested too deeply)", kind="malformed", status=status
        ) from None
    text = _content_text(message.get("content")) or ""
    estimate_text = text if not message.get("tool_calls") else text + json.dumps(message["tool_calls"])
    model = data.get("model")
    return Completion(
        text=text,
        provider_model=_well_formed(model) if isinstance(model, str) and model else default_model,
        usage=_usage(data.get("usage"), messages, estimate_text, params),
        latency_ms=latency_ms,
        status=status,
        message=message,
        finish_reason=_str_or_none(first.get("finish_reason")),
        response_id=_str_or_none(data.get("id")),
        choices=all_choices,
        logprobs=logprobs,
        system_fingerprint=_str_or_none(data.get("system_fingerprint")),
        service_tier=_str_or_none(data.get("service_tier")),
    )


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

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, value: Any) -> None:
        raise TypeError("model HTTP clients keep no cookies")


#: headers every client sends (requests are built without the client's header merge, see below)
BASE_HEADERS: tuple[tuple[str, str], ...] = (("Accept", "application/json"), ("User-Agent", "router-stream"))


def shared_http_client(cfg: CandidateConfig, timeout_s: float) -> ModelHTTPClient:
    """The one ``httpx.AsyncClient`` a candidate's client keeps, on the aiohttp transport.

    trust_env=False: with proxy env vars set, httpx would mount its default transport for
    proxied URLs, silently bypassing the aiohttp transport.
    """
    limits = httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections)
    return ModelHTTPClient(
        transport=AiohttpTransport(verify=_ssl_context(), limits=limits),
        limits=limits,
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


_DIALECTS = {"openai": OpenAIDialect, "azure-openai": AzureOpenAIDialect, "anthropic": AnthropicDialect}
_REQUEST_HEADERS = (*BASE_HEADERS, ("Content-Type", "application/json"))


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
        self._http = shared_http_client(cfg, cfg.request_timeout_ms / 1000.0)
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
        content = json.dumps(wire.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
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
            async with asyncio.timeout(max(0.001, wait_s)):
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
                    resp = await self._http.send(self._request(wire))
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
        await self._http.aclose()
