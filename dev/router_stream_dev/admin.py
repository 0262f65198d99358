"""The one admin endpoint of the loopback emulators: read and change settings, queue failures,
read and reset counters, over HTTP.

Every emulator has the same knobs in the same shape: a settings dataclass with ``set`` (only
the given fields change) and ``reset`` (back to the start settings), a queue of one-shot
failures used before any probability (the chat endpoint's ``script`` of fault modes, the Batch
API's ``fail_next`` statuses), and counters. :class:`Knobs` names them; :func:`add_admin_routes`
serves them:

* ``GET <path>`` — the settings' fields, the queue under its name (and whatever ``extra`` adds);
* ``POST <path>`` — a JSON object: ``{"reset": true}`` first restores the start settings, then
  the other fields change settings, then the queue field's list is queued; a bad field or value
  is a 400 ``invalid_request_error`` naming it; the answer is the GET view;
* ``GET <stats_path>`` / ``POST <stats_path>/reset`` — counters, and counters zeroed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .loopback_http import openai_error

__all__ = ["Knobs", "add_admin_routes", "add_stats_routes", "merged"]


@dataclass(frozen=True)
class Knobs:
    """What one emulator lets its admin endpoint read and change."""

    settings: Callable[[], Any]  #: the current settings (a dataclass instance)
    change: Callable[..., Any]  #: change settings by field name; ValueError/TypeError on bad input
    reset: Callable[[], Any]  #: back to the start settings (and an empty queue)
    queue_field: str  #: the queue's name in the admin JSON (``script``, ``fail_next``)
    queued: Callable[[], list[Any]]  #: what is queued now
    enqueue: Callable[..., None]  #: queue more; ValueError on an unknown entry
    extra: Callable[[], dict[str, Any]] = dict  #: more fields for the GET view

    def view(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.settings()), self.queue_field: list(self.queued()), **self.extra()}

    def apply(self, changes: Any) -> None:
        """Apply a POSTed change (see the module doc); raises ValueError or TypeError."""
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        changes = dict(changes)
        if changes.pop("reset", False):
            self.reset()
        queue = changes.pop(self.queue_field, None)
        if changes:
            self.change(**changes)
        if queue:
            self.enqueue(*queue)


def merged(settings: Any, changes: dict[str, Any], what: str) -> dict[str, Any]:
    """The fields of the settings dataclass with ``changes`` applied, for the caller to check and
    rebuild; a ValueError names unknown fields (``unknown <what> setting(s): ...``)."""
    known = {f.name for f in dataclasses.fields(settings)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(sorted(unknown))}")
    data = dataclasses.asdict(settings)
    data.update(changes)
    return data


def add_admin_routes(app: web.Application, path: str, knobs: Knobs) -> None:
    """Serve ``GET`` and ``POST`` ``path`` for ``knobs`` (see the module doc)."""

    async def get(request: web.Request) -> web.Response:
        return web.json_response(knobs.view())

    async def post(request: web.Request) -> web.Response:
        try:
            knobs.apply(await request.json())
        except (ValueError, TypeError) as exc:  # bad JSON is a ValueError too
            return openai_error(400, str(exc), "invalid_request_error")
        return web.json_response(knobs.view())

    app.router.add_get(path, get)
    app.router.add_post(path, post)


def add_stats_routes(
    app: web.Application, path: str, stats: Callable[[], dict[str, Any]], reset_stats: Callable[[], None]
) -> None:
    """Serve ``GET path`` (the counters) and ``POST path/reset`` (zero them, answer the counters)."""

    async def get(request: web.Request) -> web.Response:
        return web.json_response(stats())

    async def reset(request: web.Request) -> web.Response:
        reset_stats()
        return web.json_response(stats())

    app.router.add_get(path, get)
    app.router.add_post(f"{path}/reset", reset)
