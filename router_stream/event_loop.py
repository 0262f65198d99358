"""The worker's event loop: uvloop when it is installed, asyncio's own otherwise.

The worker is one Python process whose CPU per record is mostly event-loop work: sockets to the
broker and the model endpoints, tasks, futures and timers for every record. uvloop (libuv, in C)
does that work for less: measured by ``python -m bench --only kafka-limit`` (docs/performance.md).
It changes no behaviour the worker relies on (asyncio's API, ``asyncio.timeout``, threads for
the state store, Faust's consumer thread, signals); ``ROUTER_STREAM_EVENT_LOOP=asyncio`` keeps the
standard loop (to compare, or to rule uvloop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: env var choosing the loop: ``uvloop`` (the default when installed) or ``asyncio``
EVENT_LOOP_ENV = "ROUTER_STREAM_EVENT_LOOP"


def chosen_event_loop(env: Mapping[str, str] = os.environ) -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`install_event_loop` installs with ``env`` (the
    benchmarks run their baselines on the same one)."""
    wanted = env.get(EVENT_LOOP_ENV, "uvloop").strip().lower() or "uvloop"
    if wanted not in ("uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV} must be 'uvloop' or 'asyncio' (got {wanted!r})")
    if wanted == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "asyncio"
    return wanted


def install_event_loop(env: Mapping[str, str] = os.environ) -> str:
    """Make new event loops uvloop's unless ``env`` asks for asyncio's; returns the loop's name.

    Call before any loop exists (the worker's CLI does, before Faust creates its loops)."""
    if chosen_event_loop(env) == "asyncio":
        if env.get(EVENT_LOOP_ENV, "uvloop").strip().lower() in ("uvloop", ""):
            log.info("uvloop is not installed: the worker runs on asyncio's own event loop")
        return "asyncio"
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
