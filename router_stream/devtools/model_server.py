"""A loopback model server speaking OpenAI chat completions, with faults on demand.

For development and tests: the real client talks to it over real HTTP on 127.0.0.1. It answers
``POST /v1/chat/completions`` with ``"[<name>] answer to: <first 40 chars of the last user
message>"`` (or the fixed text of the ``answer`` setting) and rough usage (chars / 4), and can
misbehave on purpose. Tool calls (a request with ``tools`` is answered with a call of the first
tool; one ending in a ``tool`` message with text quoting the result), content parts and ``n``
choices are answered as described in :mod:`router_stream.devtools.chat_replies`; the last bodies
received are kept for tests (:meth:`ModelServer.received_bodies`).

Fault modes (each with a probability per call; one mode is drawn per call):

=============  ==================================================================================
``slow``       add ``slow_ms`` of latency, then answer normally
``timeout``    hang (``hang_s``) without answering
``429``        HTTP 429 with ``Retry-After`` (``retry_after`` seconds, or an HTTP date)
``500``        HTTP 500 (``error_rate`` is a shorthand for this mode's probability)
``503``        HTTP 503 with ``Retry-After`` when ``retry_after`` is set
``<status>``   any other 3-digit status, e.g. ``400`` or ``401``, with an OpenAI error body
``reset``      reset the connection (RST) without answering
``malformed``  HTTP 200 with a bad body: ``malformed_kind`` = not_json | no_choices | no_content
``slow_drip``  a valid answer sent ``drip_chunk_bytes`` at a time every ``drip_interval_ms``
``down``       refuse: ``down_mode`` = ``503`` (every call 503) or ``close`` (close, no answer)
=============  ==================================================================================

Batched prompts (see :mod:`router_stream.providers.micro_batch_format`): when the last user message holds
records rendered with the default template (``<record index="N">`` … ``</record>``), the server
answers every record as it would answer it alone, in the shape the system message's spec line
asks for (``Answer format: json|xml|delimited; path: "..."; index field: "..."; ...``; JSON with
``$.results`` when there is none). Three more modes answer batched prompts wrongly (a prompt
that is not batched gets a normal answer):

===================  ============================================================================
``batch_drop``       leave out the entry at ``batch_fault_position`` (a list index, -1 = the last)
``batch_bad_index``  give that entry an index outside the batch
``batch_garbage``    answer with prose that parses in no format
===================  ============================================================================

``script`` is a queue of modes (``"ok"`` for a normal answer) used one per call before any
probabilities, e.g. ``["503", "503"]`` = the next two calls fail and later ones do not.

Control it at start (constructor / CLI flags), at runtime with :meth:`ModelServer.set_faults` or
``POST /admin/faults`` (JSON with the same fields; ``{"reset": true}`` restores the start
settings), and read counters with :meth:`ModelServer.stats` or ``GET /admin/stats``. The server
records whether an ``Authorization`` header came (never its value); with ``api_key`` set it
answers 401 unless the bearer key matches.

The OpenAI-style Batch API (``/v1/files`` + ``/v1/batches``, with a fast clock: a job completes
after ``batch_complete_s``) lives in :mod:`router_stream.devtools.batch_api_server`, attached as
``server.batch_api``; its counters are ``stats()["batch_api"]``. Azure OpenAI, Anthropic's
Messages API and a header-recording gateway are served in front of the chat endpoint by
:mod:`router_stream.devtools.dialects` (``server.dialects``).

Run it in-process (``async with ModelServer(name="cheap") as srv: srv.base_url``), in a
background thread for sync code (``url = srv.start_in_thread()`` … ``srv.stop()``), or as a
process::

    python -m router_stream.devtools.model_server --name cheap --port 0 --latency-ms 5 \\
        --port-file /tmp/cheap.port
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import email.utils
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape as xml_escape, quoteattr

from aiohttp import web

from .chat_replies import choices_for, part_text, tool_reply

from .batch_api_server import BatchAPIEmulator
from .dialects import DialectEmulator

__all__ = ["FaultConfig", "ModelServer", "main"]

NAMED_MODES = ("ok", "slow", "timeout", "reset", "malformed", "slow_drip", "down",
               "batch_drop", "batch_bad_index", "batch_garbage")

#: one record of a batched prompt, as the default ``batch.prompt_template`` renders it
#: how many received bodies :meth:`ModelServer.received_bodies` keeps
RECENT_BODIES = 200
BATCH_RECORD = re.compile(r'<record index="(\d+)">\n(.*?)\n</record>', re.DOTALL)
#: the machine-readable spec line :func:`~router_stream.providers.micro_batch_format.format_instructions` ends with
BATCH_SPEC = re.compile(r'Answer format: (json|xml|delimited)((?:; [a-z ]+: "(?:[^"\\]|\\.)*")*)')
_BATCH_SPEC_FIELD = re.compile(r'; ([a-z ]+): ("(?:[^"\\]|\\.)*")')


def _valid_mode(mode: str) -> bool:
    return mode in NAMED_MODES or (len(mode) == 3 and mode.isdigit() and 100 <= int(mode) <= 599)


@dataclass
class FaultConfig:
    """How the server behaves; every field can be changed at runtime."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after: float | None = 1.0
    retry_after_format: str = "seconds"  # or "http-date"
    hang_s: float = 300.0
    slow_ms: float = 1000.0
    drip_interval_ms: float = 50.0
    drip_chunk_bytes: int = 16
    malformed_kind: str = "not_json"  # not_json | no_choices | no_content
    down_mode: str = "503"  # 503 | close
    batch_fault_position: int = -1  # which entry batch_drop / batch_bad_index spoil
    answer: str | None = None  # the text of every normal answer (None: the "[<name>] answer to: ..." echo)

    def validate(self) -> "FaultConfig":
        for mode, p in self.faults.items():
            if not _valid_mode(mode):
                raise ValueError(f"unknown fault mode {mode!r} (known: {', '.join(NAMED_MODES)}, or a status)")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"fault {mode!r}: probability {p!r} is not in [0, 1]")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate {self.error_rate!r} is not in [0, 1]")
        if self.malformed_kind not in ("not_json", "no_choices", "no_content"):
            raise ValueError(f"malformed_kind {self.malformed_kind!r} is not not_json|no_choices|no_content")
        if self.down_mode not in ("503", "close"):
            raise ValueError(f"down_mode {self.down_mode!r} is not 503|close")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError(f"retry_after_format {self.retry_after_format!r} is not seconds|http-date")
        return self

    def updated(self, changes: dict[str, Any]) -> "FaultConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        data = dataclasses.asdict(self)
        data.update(changes)
        data["faults"] = {str(k): float(v) for k, v in (data.get("faults") or {}).items()}
        return FaultConfig(**data).validate()


class ModelServer:
    """An aiohttp server on 127.0.0.1 answering OpenAI-style chat completions (see module doc)."""

    def __init__(
        self,
        name: str = "model",
        *,
        provider_model: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        seed: int | None = None,
        script: list[str] | None = None,
        batch_complete_s: float = 1.0,
        answer_for: Callable[[str], str] | None = None,
        **faults: Any,
    ) -> None:
        self.name = name
        #: per-prompt answers for tests (e.g. a scripted judge): called with the last user message
        #: (a batched record's content), returns the answer text; the fixed ``answer`` setting wins
        self.answer_for = answer_for
        self.provider_model = provider_model
        self.host = host
        self.port = port
        self._api_key = api_key
        self._initial = FaultConfig().updated(faults)
        self._cfg = self._initial
        self._script: collections.deque[str] = collections.deque()
        if script:
            self.script(*script)
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.batch_api = BatchAPIEmulator(self, complete_s=batch_complete_s)  # /v1/files, /v1/batches
        self.dialects = DialectEmulator(self, api_key=api_key)  # Azure, Anthropic, gateway (devtools/dialects.py)
        self.reset_stats()

    def __repr__(self) -> str:
        return f"ModelServer(name={self.name!r}, port={self.port})"

    # ---- control API ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what a candidate's ``base_url`` should be."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def faults(self) -> FaultConfig:
        return self._cfg

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change settings (fields of :class:`FaultConfig`; ``faults`` replaces the whole map)."""
        self._cfg = self._cfg.updated(changes)
        return self._cfg

    def reset_faults(self) -> FaultConfig:
        """Back to the settings the server was started with; also clears the script."""
        self._cfg = self._initial
        self._script.clear()
        return self._cfg

    def script(self, *modes: str) -> None:
        """Queue modes for the next calls, one each (``"ok"`` = a normal answer)."""
        for mode in modes:
            if not _valid_mode(str(mode)):
                raise ValueError(f"unknown fault mode {mode!r}")
            self._script.append(str(mode))

    def stats(self) -> dict[str, Any]:
        """Counters: calls received, ok answers, per mode, Authorization presence, in flight."""
        with self._lock:
            return {
                "name": self.name,
                "calls": self._calls,
                "ok": self._ok,
                "modes": dict(self._modes),
                "auth_present": self._auth_present,
                "auth_missing": self._auth_missing,
                "last_auth_present": self._last_auth_present,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "last_body": self._last_body,
                "batched_calls": self._batched_calls,
                "batched_records": self._batched_records,
                "batch_api": self.batch_api.stats(),
                "batches_created": self.batch_api.stats()["jobs_created"],  # shorthand of batch_api.jobs_created
            }

    def received_bodies(self) -> list[Any]:
        """The last :data:`RECENT_BODIES` chat-completions bodies received, oldest first."""
        with self._lock:
            return list(self._bodies)

    def reset_stats(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self._calls = 0
            self._ok = 0
            self._modes: collections.Counter[str] = collections.Counter()
            self._auth_present = 0
            self._auth_missing = 0
            self._last_auth_present: bool | None = None
            self._in_flight = 0
            self._max_in_flight = 0
            self._last_body: Any = None
            self._bodies: collections.deque[Any] = collections.deque(maxlen=RECENT_BODIES)
            self._batched_calls = 0
            self._batched_records = 0
        if hasattr(self, "batch_api"):
            self.batch_api.reset_stats()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/admin/stats", self._admin_stats)
        app.router.add_post("/admin/stats/reset", self._admin_stats_reset)
        app.router.add_get("/admin/faults", self._admin_get_faults)
        app.router.add_post("/admin/faults", self._admin_set_faults)
        app.router.add_get("/health", self._health)
        self.batch_api.add_routes(app)
        self.dialects.add_routes(app)
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

    async def __aenter__(self) -> "ModelServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
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

    # ---- handlers --------------------------------------------------------------------------
    def _pick_mode(self, cfg: FaultConfig) -> str:
        try:
            return self._script.popleft()
        except IndexError:
            pass
        probs = dict(cfg.faults)
        if cfg.error_rate:
            probs["500"] = max(probs.get("500", 0.0), cfg.error_rate)
        if not probs:
            return "ok"
        roll = self._rng.random()
        acc = 0.0
        for mode, p in probs.items():
            acc += p
            if roll < acc:
                return mode
        return "ok"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        cfg = self._cfg
        auth = request.headers.get("Authorization")
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if auth:
                self._auth_present += 1
            else:
                self._auth_missing += 1
            self._last_auth_present = bool(auth)
        try:
            mode = self._pick_mode(cfg)
            with self._lock:
                self._modes[mode] += 1
            return await self._answer(request, cfg, mode, auth)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, request: web.Request, cfg: FaultConfig, mode: str,
                      auth: str | None) -> web.StreamResponse:
        if mode == "down":
            if cfg.down_mode == "close":
                return await self._drop(request, rst=False)
            return self._error(503, "service unavailable (down)", "server_error")
        if mode == "reset":
            return await self._drop(request, rst=True)

        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "body is not JSON", "invalid_request_error")
        with self._lock:
            self._last_body = body
            self._bodies.append(body)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return self._error(400, "'messages' must be a non-empty list", "invalid_request_error")
        if self._api_key is not None and auth != f"Bearer {self._api_key}":
            return self._error(401, "invalid API key", "invalid_request_error")

        delay_ms = cfg.latency_ms + (self._rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0)
        if mode == "slow":
            delay_ms += cfg.slow_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        if mode == "timeout":
            await asyncio.sleep(cfg.hang_s)
            return self._error(504, "hung on purpose", "server_error")
        if mode.isdigit():
            status = int(mode)
            headers = {}
            if status in (429, 503) and cfg.retry_after is not None:
                headers["Retry-After"] = self._retry_after_value(cfg)
            kind = "rate_limit_error" if status == 429 else (
                "server_error" if status >= 500 else "invalid_request_error")
            return self._error(status, f"fault {status} on purpose", kind, headers)

        batch = self._batch_request(messages)
        if batch is not None:
            fmt, spec, records = batch
            text = self._batch_text(fmt, spec, records, mode, cfg)
            with self._lock:
                self._batched_calls += 1
                self._batched_records += len(records)
            answer = self._completion(body, messages, text)
        else:
            answer = self._completion(body, messages)
        if mode == "malformed":
            if cfg.malformed_kind == "not_json":
                return web.Response(status=200, text="<html>upstream proxy error</html>",
                                    content_type="application/json")
            if cfg.malformed_kind == "no_choices":
                answer.pop("choices")
            else:
                answer["choices"][0]["message"].pop("content")
            return web.json_response(answer)
        with self._lock:
            self._ok += 1
        if mode == "slow_drip":
            payload = json.dumps(answer).encode()
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = len(payload)
            await resp.prepare(request)
            step = max(1, cfg.drip_chunk_bytes)
            for i in range(0, len(payload), step):
                await resp.write(payload[i:i + step])
                await asyncio.sleep(cfg.drip_interval_ms / 1000.0)
            await resp.write_eof()
            return resp
        return web.json_response(answer)

    def _retry_after_value(self, cfg: FaultConfig) -> str:
        seconds = float(cfg.retry_after or 0.0)
        if cfg.retry_after_format == "http-date":
            return email.utils.formatdate(time.time() + seconds, usegmt=True)
        return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"

    @staticmethod
    def _error(status: int, message: str, kind: str,
               headers: dict[str, str] | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "code": status}}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    async def _drop(request: web.Request, *, rst: bool) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if rst and sock is not None:
                try:  # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer"
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort() if rst else transport.close()
        # the handler is cancelled once aiohttp notices the lost connection
        await asyncio.sleep(3600)
        raise web.HTTPServiceUnavailable()  # pragma: no cover

    def _answer_text(self, prompt: str) -> str:
        if self._cfg.answer is not None:
            return self._cfg.answer
        if self.answer_for is not None:
            return self.answer_for(prompt)
        return f"[{self.name}] answer to: {prompt[:40]}"

    @staticmethod
    def _last_user(messages: list[Any]) -> str:
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return part_text(m.get("content"))
        if isinstance(messages[-1], dict):
            return part_text(messages[-1].get("content"))
        return ""

    @staticmethod
    def _batch_request(messages: list[Any]) -> tuple[str, dict[str, str], list[tuple[int, str]]] | None:
        """``(format, spec, [(index, content)])`` of a batched prompt, or None."""
        user = ModelServer._last_user(messages)
        records = [(int(i), c) for i, c in BATCH_RECORD.findall(user)]
        if not records:
            return None
        fmt, spec = "json", {}
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "system":
                found = BATCH_SPEC.search(str(m.get("content") or ""))
                if found:
                    fmt = found.group(1)
                    spec = {k: json.loads(v) for k, v in _BATCH_SPEC_FIELD.findall(found.group(2))}
                    break
        return fmt, spec, records

    def _batch_text(self, fmt: str, spec: dict[str, str], records: list[tuple[int, str]],
                    mode: str, cfg: FaultConfig) -> str:
        """Each record answered as if alone, in the asked format (or spoilt, per ``mode``)."""
        if mode == "batch_garbage":
            return "I am sorry, but I cannot answer these in the requested shape today."
        entries = [[index, self._answer_text(content)] for index, content in records]
        if mode in ("batch_drop", "batch_bad_index") and entries:
            pos = cfg.batch_fault_position
            pos = pos if -len(entries) <= pos < len(entries) else -1
            if mode == "batch_drop":
                del entries[pos]
            else:
                entries[pos][0] = len(records) + 100
        index_field = spec.get("index field", "index")
        value_field = spec.get("value field", "value")
        if fmt == "delimited":
            delim, fdelim = spec.get("delimiter", "\n"), spec.get("field delimiter", "|")
            return delim.join(f"{i}{fdelim}{v.replace(delim, ' ')}" for i, v in entries)
        if fmt == "xml":
            return self._batch_xml(spec.get("path", "./item"), index_field, value_field, entries)
        keys = re.findall(r"\.([A-Za-z_][\w-]*)|\[['\"]([^'\"]*)['\"]\]", spec.get("path", "$.results"))
        doc: Any = [{index_field: i, value_field: v} for i, v in entries]
        for dotted, bracketed in reversed(keys):
            doc = {dotted or bracketed: doc}
        return json.dumps(doc)

    @staticmethod
    def _batch_xml(path: str, index_field: str, value_field: str, entries: list[list[Any]]) -> str:
        root = "results"
        if path.startswith("/") and not path.startswith("//"):
            root, _, path = path[1:].partition("/")
        names = [n for n in re.sub(r"^(\./|\.//|//)", "", path).split("/") if n] or ["item"]
        items = []
        for index, value in entries:
            attrs, children, text = "", "", ""
            for name, v in ((index_field, str(index)), (value_field, value)):
                if name in (".", "text()"):
                    text = xml_escape(v)
                elif name.startswith("@"):
                    attrs += f" {name[1:]}={quoteattr(v)}"
                else:
                    children += f"<{name}>{xml_escape(v)}</{name}>"
            items.append(f"<{names[-1]}{attrs}>{children}{text}</{names[-1]}>")
        inner = "".join(items)
        for name in reversed(names[:-1]):
            inner = f"<{name}>{inner}</{name}>"
        return f"<{root}>{inner}</{root}>"

    def _completion(self, body: dict[str, Any], messages: list[Any], text: str | None = None) -> dict[str, Any]:
        reply = tool_reply(self.name, body, messages) if text is None else None
        if reply is not None:  # a tool call, or the answer to a tool result (see chat_replies)
            message, finish_reason = reply
        else:
            if text is None:
                text = self._answer_text(self._last_user(messages))
            message, finish_reason = {"role": "assistant", "content": text}, "stop"
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
        prompt_tokens = max(1, prompt_chars // 4) + 4 * len(messages)
        produced = message.get("content")
        if not isinstance(produced, str):
            produced = json.dumps(message.get("tool_calls"))
        completion_tokens = max(1, len(produced) // 4)
        model = self.provider_model or str(body.get("model") or self.name)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices_for(message, finish_reason, body.get("n")),
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _admin_stats_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats())

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({**dataclasses.asdict(self._cfg), "script": list(self._script)})

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            changes = dict(changes)
            if changes.pop("reset", False):
                self.reset_faults()
            script = changes.pop("script", None)
            if changes:
                self.set_faults(**changes)
            if script:
                self.script(*script)
        except (ValueError, TypeError) as exc:
            return self._error(400, str(exc), "invalid_request_error")
        return await self._admin_get_faults(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "name": self.name})


# ---- command line --------------------------------------------------------------------------
def _parse_fault(text: str) -> tuple[str, float]:
    mode, _, prob = text.partition("=")
    try:
        return mode.strip(), float(prob) if prob else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fault {text!r}: expected MODE=PROBABILITY") from None


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m router_stream.devtools.model_server",
                                description="Loopback OpenAI-compatible model server with faults.")
    p.add_argument("--name", default="model", help="names itself in every answer")
    p.add_argument("--model", dest="provider_model", default=None, help="provider model name to report")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--port-file", type=Path, default=None, help="write the port here once listening")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0, help="probability of HTTP 500")
    p.add_argument("--fault", action="append", type=_parse_fault, default=[], metavar="MODE=P",
                   help="fault mode with probability, repeatable (e.g. 503=0.1, timeout=0.05)")
    p.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429/503")
    p.add_argument("--hang-s", type=float, default=300.0)
    p.add_argument("--api-key-env", default=None,
                   help="require 'Bearer <value of this env var>' (401 otherwise)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-complete-s", type=float, default=1.0,
                   help="Batch API: seconds until a batch job completes (fast clock)")
    return p


async def _serve(args: argparse.Namespace) -> None:
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    server = ModelServer(
        args.name, provider_model=args.provider_model, host=args.host, port=args.port,
        api_key=api_key, seed=args.seed, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
        error_rate=args.error_rate, faults=dict(args.fault), retry_after=args.retry_after,
        hang_s=args.hang_s, batch_complete_s=args.batch_complete_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    await server.start()
    try:
        if args.port_file is not None:
            tmp = args.port_file.with_name(args.port_file.name + ".tmp")
            tmp.write_text(f"{server.port}\n")
            os.replace(tmp, args.port_file)
        print(f"model server {server.name!r} listening on {server.base_url}", flush=True)
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        FaultConfig(faults=dict(args.fault), error_rate=args.error_rate).validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
