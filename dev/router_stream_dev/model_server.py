"""A loopback model server speaking OpenAI chat completions, with faults on demand.

For development and tests: the real client talks to it over real HTTP on 127.0.0.1. It answers
``POST /v1/chat/completions`` with ``"[<name>] answer to: <first 40 chars of the last user
message>"`` (or the fixed text of the ``answer`` setting) and rough usage (chars / 4), and can
misbehave on purpose. Tool calls (a request with ``tools`` is answered with a call of the first
tool; one ending in a ``tool`` message with text quoting the result), content parts and ``n``
choices are answered as described in :mod:`router_stream_dev.chat_replies`; the last bodies
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
after ``batch_complete_s``) lives in :mod:`router_stream_dev.batch_api_server`, attached as
``server.batch_api``; its counters are ``stats()["batch_api"]``. Azure OpenAI, Anthropic's
Messages API and a header-recording gateway are served in front of the chat endpoint by
:mod:`router_stream_dev.dialects` (``server.dialects``).

Run it in-process (``async with ModelServer(name="cheap") as srv: srv.base_url``), in a
background thread for sync code (``url = srv.start_in_thread()`` … ``srv.stop()``), or as a
process::

    python -m router_stream_dev.model_server --name cheap --port 0 --latency-ms 5 \\
        --port-file /tmp/cheap.port

This module is the chat-completions emulation and the command line; the rest lives by role:
:mod:`.loopback_http` (the aiohttp server, its lifecycle, shared error answers), :mod:`.faults`
(settings, mode choice, fault answers), :mod:`.admin` (the admin endpoints every emulator shares),
:mod:`.batched_prompts` and :mod:`.chat_replies` (what a correct answer says).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .admin import add_admin_routes, add_stats_routes
from .batch_api_server import BatchAPIEmulator
from .batched_prompts import batch_answer, parse_batch
from .chat_replies import completion_body, last_user_text, tool_reply
from .dialects import DialectEmulator
from .faults import FaultConfig, FaultInjector, drip, fail, malformed, refuse
from .loopback_http import LoopbackServer, openai_error

__all__ = ["FaultConfig", "ModelServer", "main"]

#: how many received bodies :meth:`ModelServer.received_bodies` keeps
RECENT_BODIES = 200


class ModelServer(LoopbackServer):
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
        super().__init__(name, host=host, port=port)
        #: per-prompt answers for tests (e.g. a scripted judge): called with the last user message
        #: (a batched record's content), returns the answer text; the fixed ``answer`` setting wins
        self.answer_for = answer_for
        self.provider_model = provider_model
        #: the bearer key every endpoint checks (None: none); never logged or reported
        self.api_key = api_key
        self.injector = FaultInjector(FaultConfig().updated(faults), seed=seed)
        if script:
            self.script(*script)
        self._lock = threading.Lock()
        self.batch_api = BatchAPIEmulator(self, complete_s=batch_complete_s)  # /v1/files, /v1/batches
        self.dialects = DialectEmulator(self, api_key=api_key)  # Azure, Anthropic, gateway (dialects.py)
        self.reset_stats()

    def __repr__(self) -> str:
        return f"ModelServer(name={self.name!r}, port={self.port})"

    # ---- control API ---------------------------------------------------------------------
    @property
    def faults(self) -> FaultConfig:
        return self.injector.config

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change settings (fields of :class:`FaultConfig`; ``faults`` replaces the whole map)."""
        return self.injector.set(**changes)

    def reset_faults(self) -> FaultConfig:
        """Back to the settings the server was started with; also clears the script."""
        return self.injector.reset()

    def script(self, *modes: str) -> None:
        """Queue modes for the next calls, one each (``"ok"`` = a normal answer)."""
        self.injector.script(*modes)

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
                "batches_created": self.batch_api.stats()[
                    "jobs_created"
                ],  # shorthand of batch_api.jobs_created
            }

    def received_bodies(self) -> list[Any]:
        """The last :data:`RECENT_BODIES` chat-completions bodies received, oldest first."""
        with self._lock:
            return list(self._bodies)

    def reset_stats(self) -> None:
        with self._lock:
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
        self.batch_api.reset_stats()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        add_stats_routes(app, "/admin/stats", self.stats, self.reset_stats)
        add_admin_routes(app, "/admin/faults", self.injector.knobs())
        app.router.add_get("/health", self._health)
        self.batch_api.add_routes(app)
        self.dialects.add_routes(app)

    # ---- the chat completions emulation ----------------------------------------------------
    def answer_text(self, prompt: str) -> str:
        """What a normal answer to ``prompt`` says: the ``answer`` setting, ``answer_for(prompt)``,
        or ``"[<name>] answer to: <first 40 chars>"``."""
        if self.faults.answer is not None:
            return self.faults.answer
        if self.answer_for is not None:
            return self.answer_for(prompt)
        return f"[{self.name}] answer to: {prompt[:40]}"

    def complete(self, body: dict[str, Any], messages: list[Any], text: str | None = None) -> dict[str, Any]:
        """The ``chat.completion`` a correct server answers to ``body`` (``text``: this answer text,
        and no tool turn); the Batch API answers its lines with it too."""
        reply = tool_reply(self.name, body, messages) if text is None else None
        if reply is not None:  # a tool call, or the answer to a tool result (see chat_replies)
            message, finish_reason = reply
        else:
            if text is None:
                text = self.answer_text(last_user_text(messages, or_last=True))
            message, finish_reason = {"role": "assistant", "content": text}, "stop"
        model = self.provider_model or str(body.get("model") or self.name)
        return completion_body(message, finish_reason, body, messages, model)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        cfg = self.faults
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
            mode = self.injector.pick_mode(cfg)
            with self._lock:
                self._modes[mode] += 1
            return await self._answer(request, cfg, mode, auth)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(
        self, request: web.Request, cfg: FaultConfig, mode: str, auth: str | None
    ) -> web.StreamResponse:
        refused = await refuse(request, cfg, mode)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return openai_error(400, "body is not JSON", "invalid_request_error")
        with self._lock:
            self._last_body = body
            self._bodies.append(body)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "'messages' must be a non-empty list", "invalid_request_error")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return openai_error(401, "invalid API key", "invalid_request_error")

        delay_s = self.injector.delay_s(cfg, mode)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        failed = await fail(cfg, mode)
        if failed is not None:
            return failed

        batch = parse_batch(messages)
        if batch is not None:
            text = batch_answer(batch, self.answer_text, mode, cfg.batch_fault_position)
            with self._lock:
                self._batched_calls += 1
                self._batched_records += len(batch[2])
            answer = self.complete(body, messages, text)
        else:
            answer = self.complete(body, messages)
        if mode == "malformed":
            return malformed(answer, cfg.malformed_kind)
        with self._lock:
            self._ok += 1
        if mode == "slow_drip":
            return await drip(request, answer, cfg)
        return web.json_response(answer)

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
    p = argparse.ArgumentParser(
        prog="python -m router_stream_dev.model_server",
        description="Loopback OpenAI-compatible model server with faults.",
    )
    p.add_argument("--name", default="model", help="names itself in every answer")
    p.add_argument("--model", dest="provider_model", default=None, help="provider model name to report")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--port-file", type=Path, default=None, help="write the port here once listening")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0, help="probability of HTTP 500")
    p.add_argument(
        "--fault",
        action="append",
        type=_parse_fault,
        default=[],
        metavar="MODE=P",
        help="fault mode with probability, repeatable (e.g. 503=0.1, timeout=0.05)",
    )
    p.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429/503")
    p.add_argument("--hang-s", type=float, default=300.0)
    p.add_argument(
        "--api-key-env", default=None, help="require 'Bearer <value of this env var>' (401 otherwise)"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--batch-complete-s",
        type=float,
        default=1.0,
        help="Batch API: seconds until a batch job completes (fast clock)",
    )
    return p


async def _serve(args: argparse.Namespace) -> None:
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    server = ModelServer(
        args.name,
        provider_model=args.provider_model,
        host=args.host,
        port=args.port,
        api_key=api_key,
        seed=args.seed,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_rate=args.error_rate,
        faults=dict(args.fault),
        retry_after=args.retry_after,
        hang_s=args.hang_s,
        batch_complete_s=args.batch_complete_s,
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
