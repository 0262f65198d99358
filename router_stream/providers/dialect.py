"""The dialect seam: how one provider's HTTP API differs from OpenAI chat completions.

:class:`~router_stream.providers.openai.OpenAIChatClient` owns the HTTP machinery (one shared
aiohttp-transport client per candidate, FIFO connection slots, timeouts, transport errors). What
differs between providers sits behind :class:`Dialect`, which the client asks three things:

* :meth:`Dialect.request` — the URL, headers and JSON body for an OpenAI-format
  chat-completions body, plus the names of the request fields the provider does not take
  (dropped, so the audit can name them);
* :meth:`Dialect.status_error` — the :class:`~router_stream.errors.ModelError` for a non-2xx answer;
* :meth:`Dialect.openai_response` — the provider's JSON answer as an OpenAI ``chat.completion``
  dict, which the client parses like any OpenAI answer.

One module per adapter: :class:`OpenAIDialect` here (the default, ``api: openai``),
:mod:`.azure` and :mod:`.anthropic`. :func:`parse_retry_after` and the OpenAI status mapping live
here too because every adapter builds on them. Secrets (the key, ``headers``/``query`` values from
env vars) are read on every call, go only into the request, and never into an error, a log line
or a repr: :attr:`Dialect.endpoint` is the URL without its query string.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from ..config import CandidateConfig
from ..errors import FatalModelError, ModelError, RetryableModelError
from ..secret_values import resolve

#: error kind of a request this adapter cannot express (e.g. an audio part for Anthropic): the
#: endpoint was not called, so the breaker ignores it and the chain moves on to the next candidate
UNSUPPORTED_INPUT = "unsupported_input"


@dataclass(frozen=True)
class WireRequest:
    """One provider call: where, with which headers (they may hold secrets: never log them), what."""

    url: httpx.URL
    headers: list[tuple[str, str]]
    body: dict[str, Any]
    #: request fields the provider does not take, left out of ``body`` (named in the audit)
    dropped: tuple[str, ...] = ()


class Dialect(Protocol):
    """What an adapter tells the shared client (see the module doc)."""

    api: str
    #: the URL without a query string: safe to show in reprs and messages
    endpoint: str

    def request(self, body: dict[str, Any]) -> WireRequest:
        """The call for an OpenAI chat-completions ``body``; raises ``FatalModelError`` with kind
        :data:`UNSUPPORTED_INPUT` when the provider cannot take what the body asks for."""
        ...

    def status_error(self, resp: httpx.Response) -> ModelError:
        """The error for a non-2xx answer; its message holds no header and no body text."""
        ...

    def openai_response(self, data: Any) -> Any:
        """The provider's parsed JSON answer as an OpenAI ``chat.completion`` dict; raises
        ``RetryableModelError(kind="malformed")`` when it is not a valid answer. (The OpenAI
        dialect hands ``data`` on untouched, whatever it is: the client's parser judges it.)"""
        ...


def unsupported(candidate: str, api: str, what: str) -> FatalModelError:
    """The error for a request the adapter cannot send (``what`` names the field, never a value)."""
    return FatalModelError(
        f"{candidate}: api {api} cannot take {what}; route such requests to another "
        "candidate (or give this one a fallback)",
        kind=UNSUPPORTED_INPUT,
    )


def text_contents(messages: list[dict[str, Any]], candidate: str, api: str) -> list[dict[str, Any]]:
    """``messages`` with each list of content parts joined into one string (``content_parts:
    text``): many local servers' chat templates concatenate ``content`` as a string and fail on a
    list. Only text (and refusal) parts can be joined; any other part is :data:`UNSUPPORTED_INPUT`."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("text", "refusal") and isinstance(part.get(kind), str):
                    texts.append(part[kind])
                else:
                    raise unsupported(
                        candidate,
                        api,
                        f"a {kind or 'malformed'} content part (content_parts: text sends text only)",
                    )
            m = {**m, "content": "\n".join(texts)}
        out.append(m)
    return out


def malformed(candidate: str, what: str, status: int = 200) -> RetryableModelError:
    return RetryableModelError(f"{candidate}: malformed body ({what})", kind="malformed", status=status)


def parse_retry_after(headers: httpx.Headers | dict[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(0.0, value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_ts = time.time() if now is None else now
    return max(0.0, when.timestamp() - now_ts)


def openai_status_error(name: str, resp: httpx.Response) -> ModelError:
    """OpenAI's mapping: 429 throttled, 5xx server_error, 408/409 http_error (all retryable, with
    ``retry_after``); 401/403 auth; other statuses client_error."""
    status = resp.status_code
    msg = f"{name}: HTTP {status} from model endpoint"
    if status == 429:
        return RetryableModelError(
            msg, kind="throttled", status=status, retry_after=parse_retry_after(resp.headers)
        )
    if status >= 500:
        return RetryableModelError(
            msg, kind="server_error", status=status, retry_after=parse_retry_after(resp.headers)
        )
    if status in (408, 409):
        return RetryableModelError(
            msg, kind="http_error", status=status, retry_after=parse_retry_after(resp.headers)
        )
    if status in (401, 403):
        return FatalModelError(msg, kind="auth", status=status)
    return FatalModelError(msg, kind="client_error", status=status)


def error_code(resp: httpx.Response) -> tuple[str | None, str | None]:
    """``(error.type, error.code)`` of a JSON error body, for mapping only (never quoted)."""
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    kind, code = err.get("type"), err.get("code")
    details = err.get("details")
    if code is None and isinstance(details, dict):
        code = details.get("error_code")
    return (kind if isinstance(kind, str) else None), (str(code) if isinstance(code, (str, int)) else None)


class _QueryRedaction(logging.Filter):
    """Strips query strings from httpx's request log lines: a ``query:`` value may be a secret.

    httpx logs ``HTTP Request: POST <url> ...`` at INFO; the worker keeps that logger at WARNING,
    but an embedding application may not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) and a.query for a in record.args):
            record.args = tuple(
                a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


_REDACTION = _QueryRedaction()


def split_base_url(base_url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``(base_url without query or fragment, its query parameters)``: an adapter appends its path
    to the first and sends the second with every call (``https://gw/v1?team=a`` →
    ``https://gw/v1/chat/completions?team=a``)."""
    parts = urlsplit(base_url)
    if not parts.query and not parts.fragment:
        return base_url, ()
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, tuple(parse_qsl(parts.query, keep_blank_values=True))


class HTTPDialect:
    """What adapters share: the URL with the query parameters of ``base_url`` and the candidate's
    ``query:`` (parsed once per set of values), and the headers with the candidate's ``headers:``
    (read from the env on every call). Adapters build ``endpoint`` from :attr:`base`."""

    api = ""  # each adapter names its api

    def __init__(
        self, name: str, cfg: CandidateConfig, path: str, fixed_query: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.base, base_query = split_base_url(cfg.base_url)
        self.endpoint = self.base + path
        self._fixed_query = (*base_query, *fixed_query)
        self._url_for: tuple[tuple[tuple[str, str], ...], httpx.URL] | None = None
        if cfg.query or base_query:
            logging.getLogger("httpx").addFilter(_REDACTION)  # a filter is added once however often

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self.endpoint!r})"

    def url(self) -> httpx.URL:
        """The endpoint with its query; re-parsed only when an env-sourced value changed."""
        params = (*self._fixed_query, *resolve(self.cfg.query)) if self.cfg.query else self._fixed_query
        cached = self._url_for
        if cached is None or cached[0] != params:
            url = httpx.URL(self.endpoint, params=list(params)) if params else httpx.URL(self.endpoint)
            self._url_for = cached = (params, url)
        return cached[1]

    def auth_headers(self) -> list[tuple[str, str]]:
        """The provider's own credential header(s) from ``api_key_env``."""
        return []

    def headers(self) -> list[tuple[str, str]]:
        """The auth header(s), then the candidate's ``headers:`` (a configured header replaces an
        auth header of the same name, e.g. a gateway's own ``Authorization``)."""
        auth = self.auth_headers()
        if not self.cfg.headers:
            return auth
        extra = resolve(self.cfg.headers)
        names = {name.lower() for name, _ in extra}
        return [h for h in auth if h[0].lower() not in names] + extra


class OpenAIDialect(HTTPDialect):
    """``api: openai``: ``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``;
    the body goes as is and the answer is already OpenAI's."""

    api = "openai"

    def __init__(
        self,
        name: str,
        cfg: CandidateConfig,
        path: str = "/chat/completions",
        fixed_query: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(name, cfg, path, fixed_query)

    def auth_headers(self) -> list[tuple[str, str]]:
        key = self.cfg.api_key()  # read on every call: a rotated key is picked up without a restart
        return [("Authorization", f"Bearer {key}")] if key else []

    def request(self, body: dict[str, Any]) -> WireRequest:
        if self.cfg.content_parts == "text":
            body = {**body, "messages": text_contents(body.get("messages") or [], self.name, self.api)}
        return WireRequest(self.url(), self.headers(), body)

    def status_error(self, resp: httpx.Response) -> ModelError:
        return openai_status_error(self.name, resp)

    def openai_response(self, data: Any) -> Any:
        return data
