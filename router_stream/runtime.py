"""Builds the runtime objects of one worker from a config: pipeline, dispatcher, handler, processor.

Kept apart from :mod:`router_stream.app` so tests and the benchmark can run the same request path
without a Faust worker around it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config import RouterConfig
from .errors import ConfigError
from .metrics import MetricsObserver
from .processing.handler import Handler
from .processing.processor import Processor
from .providers.base import ModelClient
from .providers.openai import OpenAIChatClient
from .providers.resilience import Dispatcher
from .routing.base import Strategy
from .routing.caching import cache_policy
from .routing.pipeline import Pipeline
from .routing.strategy_config import BuildContext


def worker_id(config: RouterConfig) -> str:
    return config.worker.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def build_context(config: RouterConfig) -> BuildContext:
    """What a strategy's ``build`` gets of ``config``: the candidates, and a way to open a client
    to one (an :class:`OpenAIChatClient`, which speaks each candidate's ``api``)."""

    def open_client(name: str) -> ModelClient:
        return OpenAIChatClient(name, config.candidates[name])

    return BuildContext(candidates=config.candidates, open_client=open_client)


def build_pipeline(config: RouterConfig) -> Pipeline:
    """The configured strategies, built (artifacts loaded, custom classes constructed).

    Anything a strategy's build raises becomes a :class:`ConfigError` naming ``strategies[i]``
    (``strategies[i].artifact`` for an unreadable learned-router artifact), so ``check-config``
    and a starting worker report it like any other config mistake instead of a traceback.
    """
    from .learning.artifact import ArtifactError

    ctx = build_context(config)
    strategies: list[Strategy] = []
    for i, strategy_config in enumerate(config.strategies):
        try:
            strategies.append(strategy_config.build(ctx))
        except ConfigError as exc:
            if str(exc).startswith("strategies["):
                raise
            raise ConfigError(f"strategies[{i}]: {exc}") from None
        except ArtifactError as exc:
            raise ConfigError(f"strategies[{i}].artifact: {exc}") from None
        except Exception as exc:
            raise ConfigError(
                f"strategies[{i}] ({strategy_config.type} {strategy_config.name!r}) could not be "
                f"built: {type(exc).__name__}: {exc}"
            ) from exc
    return Pipeline(
        strategies,
        tuple(config.candidates),
        config.default,
        cache_policies=[cache_policy(s) for s in config.strategies],
    )


def check_pipeline(config: RouterConfig) -> None:
    """Build the pipeline once and release it: what a worker would fail on at start, now.

    Raises :class:`ConfigError`. Judge and scorer clients are made on first use, so nothing
    is called; any client a strategy did open is closed.
    """
    asyncio.run(build_pipeline(config).aclose())


async def tcp_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout``: readiness asks only
    that a candidate's endpoint is up, not that a (billed) model call succeeds."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


@dataclass
class Runtime:
    config: RouterConfig
    worker_id: str
    dispatcher: Dispatcher
    handler: Handler
    processor: Processor

    _reach: dict[str, bool] = field(default_factory=dict)
    _reach_at: float = 0.0

    async def candidates_reachable(self, max_age_s: float = 5.0) -> dict[str, bool]:
        """Which candidates' endpoints accept a TCP connection (cached ``max_age_s``)."""
        if time.monotonic() - self._reach_at > max_age_s:
            names = list(self.config.candidates)
            results = await asyncio.gather(
                *(tcp_reachable(self.config.candidates[n].base_url) for n in names)
            )
            self._reach, self._reach_at = dict(zip(names, results)), time.monotonic()
        return self._reach

    async def aclose(self) -> None:
        await self.handler.pipeline.aclose()  # e.g. a judge's or scorer's HTTP client
        await self.dispatcher.aclose()


def build_runtime(config: RouterConfig, on_fatal=None, pipeline: Pipeline | None = None) -> Runtime:
    wid = worker_id(config)
    dispatcher = Dispatcher(config, observer=MetricsObserver())
    handler = Handler(config, pipeline if pipeline is not None else build_pipeline(config), dispatcher, wid)
    processor = Processor(config, handler, wid, on_fatal=on_fatal)
    return Runtime(config, wid, dispatcher, handler, processor)
