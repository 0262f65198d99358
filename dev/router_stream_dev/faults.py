"""Fault injection for the loopback chat endpoint: the settings, which mode a call gets, and how
each fault mode answers (the modes are listed in :mod:`.model_server`'s doc).

Kept apart from the chat emulation so what a *correct* answer is (:mod:`.model_server`,
:mod:`.chat_replies`, :mod:`.batched_prompts`) and how the server *misbehaves* can be read, and
changed, one without the other.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .admin import Knobs, merged
from .loopback_http import drop_connection, openai_error, status_error

__all__ = ["NAMED_MODES", "FaultConfig", "FaultInjector", "drip", "fail", "malformed", "refuse", "valid_mode"]

NAMED_MODES = (
    "ok",
    "slow",
    "timeout",
    "reset",
    "malformed",
    "slow_drip",
    "down",
    "batch_drop",
    "batch_bad_index",
    "batch_garbage",
)


def valid_mode(mode: str) -> bool:
    """A named mode, or a 3-digit HTTP status (100-599)."""
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

    def validate(self) -> FaultConfig:
        for mode, p in self.faults.items():
            if not valid_mode(mode):
                raise ValueError(
                    f"unknown fault mode {mode!r} (known: {', '.join(NAMED_MODES)}, or a status)"
                )
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

    def updated(self, changes: dict[str, Any]) -> FaultConfig:
        data = merged(self, changes, "fault")
        data["faults"] = {str(k): float(v) for k, v in (data.get("faults") or {}).items()}
        return FaultConfig(**data).validate()

    def retry_after_value(self) -> str:
        """``Retry-After`` as configured: seconds, or an HTTP date that many seconds ahead."""
        seconds = float(self.retry_after or 0.0)
        if self.retry_after_format == "http-date":
            return email.utils.formatdate(time.time() + seconds, usegmt=True)
        return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


class FaultInjector:
    """The current :class:`FaultConfig`, the start one, the script, and the dice: which mode the
    next call gets, and the answers of the modes that replace a normal answer."""

    def __init__(self, initial: FaultConfig, *, seed: int | None = None) -> None:
        self.initial = initial
        self.config = initial
        self.rng = random.Random(seed)
        self._script: collections.deque[str] = collections.deque()

    # ---- control ---------------------------------------------------------------------------
    def set(self, **changes: Any) -> FaultConfig:
        """Change settings (fields of :class:`FaultConfig`; ``faults`` replaces the whole map)."""
        self.config = self.config.updated(changes)
        return self.config

    def reset(self) -> FaultConfig:
        """Back to the start settings; also clears the script."""
        self.config = self.initial
        self._script.clear()
        return self.config

    def script(self, *modes: str) -> None:
        """Queue modes for the next calls, one each (``"ok"`` = a normal answer)."""
        for mode in modes:
            if not valid_mode(str(mode)):
                raise ValueError(f"unknown fault mode {mode!r}")
            self._script.append(str(mode))

    def scripted(self) -> list[str]:
        return list(self._script)

    def knobs(self) -> Knobs:
        """What ``/admin/faults`` reads and changes."""
        return Knobs(
            settings=lambda: self.config,
            change=self.set,
            reset=self.reset,
            queue_field="script",
            queued=self.scripted,
            enqueue=self.script,
        )

    # ---- per call --------------------------------------------------------------------------
    def pick_mode(self, cfg: FaultConfig) -> str:
        """The next scripted mode, else one drawn by the probabilities (``error_rate`` = ``500``)."""
        try:
            return self._script.popleft()
        except IndexError:
            pass
        probs = dict(cfg.faults)
        if cfg.error_rate:
            probs["500"] = max(probs.get("500", 0.0), cfg.error_rate)
        if not probs:
            return "ok"
        roll = self.rng.random()
        acc = 0.0
        for mode, p in probs.items():
            acc += p
            if roll < acc:
                return mode
        return "ok"

    def delay_s(self, cfg: FaultConfig, mode: str) -> float:
        """Latency plus jitter, plus ``slow_ms`` in ``slow`` mode."""
        delay_ms = cfg.latency_ms + (self.rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0)
        if mode == "slow":
            delay_ms += cfg.slow_ms
        return delay_ms / 1000.0


async def refuse(request: web.Request, cfg: FaultConfig, mode: str) -> web.StreamResponse | None:
    """``down`` and ``reset``, which answer before the body is read; None for other modes."""
    if mode == "down":
        if cfg.down_mode == "close":
            return await drop_connection(request, rst=False)
        return openai_error(503, "service unavailable (down)", "server_error")
    if mode == "reset":
        return await drop_connection(request, rst=True)
    return None


async def fail(cfg: FaultConfig, mode: str) -> web.Response | None:
    """``timeout`` (hang, then 504) and status modes, after the latency; None for other modes."""
    if mode == "timeout":
        await asyncio.sleep(cfg.hang_s)
        return openai_error(504, "hung on purpose", "server_error")
    if mode.isdigit():
        return status_error(int(mode), cfg.retry_after_value() if cfg.retry_after is not None else None)
    return None


def malformed(answer: dict[str, Any], kind: str) -> web.Response:
    """HTTP 200 with a bad body: not JSON, no ``choices``, or a message with no ``content``."""
    if kind == "not_json":
        return web.Response(
            status=200, text="<html>upstream proxy error</html>", content_type="application/json"
        )
    if kind == "no_choices":
        answer.pop("choices")
    else:
        answer["choices"][0]["message"].pop("content")
    return web.json_response(answer)


async def drip(request: web.Request, answer: dict[str, Any], cfg: FaultConfig) -> web.StreamResponse:
    """A valid answer sent ``drip_chunk_bytes`` at a time every ``drip_interval_ms``."""
    payload = json.dumps(answer).encode()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = len(payload)
    await resp.prepare(request)
    step = max(1, cfg.drip_chunk_bytes)
    for i in range(0, len(payload), step):
        await resp.write(payload[i : i + step])
        await asyncio.sleep(cfg.drip_interval_ms / 1000.0)
    await resp.write_eof()
    return resp
