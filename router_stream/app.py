"""Faust wiring only: the worker process, its lifecycle and web views.

Faust runs the worker (signals, logging, lifecycle, web server for ``/metrics`` and health).
The request path itself runs in our :class:`~router_stream.processing.processor.Processor`, a
service started with the app, because Faust's own ``exactly_once`` loses and duplicates records
under kill -9 (docs/faust-eos-defects.md). The app declares no agents or tables, so it starts
without Kafka clients of its own (:class:`WorkerApp`): no consumer group to join, no producer.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import RouterConfig
from .metrics import REGISTRY
from .routing.pipeline import Pipeline
from .runtime import Runtime, build_runtime

log = logging.getLogger("router_stream")


class NoKafkaBoot(BootStrategy):
    """Faust's services without its Kafka consumer, conductor, table manager and producer.

    Why: with no agents or tables, Faust's consumer had nothing to read, yet it joined a consumer
    group of its own (``<group_id>-control``) before our processor even started. That join took a
    second on a healthy group (plus the table manager's fixed one-second wait) and, after a
    kill -9, waited for the dead member's session to expire: most of a worker's start-up. The
    request path, control records included, runs on the processor's own clients."""

    enable_kafka = False


class WorkerApp(faust.App):
    """A Faust app that runs the worker's services and web views, and no Kafka clients."""

    BootStrategy = NoKafkaBoot


def build_app(config: RouterConfig, pipeline: Pipeline | None = None) -> tuple[faust.App, dict[str, Any]]:
    """The Faust app for ``config``; the dict exposes the runtime once started (for tests).

    ``pipeline``: the strategies, already built (``router-stream run`` builds them before Kafka
    to report a bad artifact or class as a config error); default: built at start."""
    holder: dict[str, Any] = {}
    w = config.worker
    os.makedirs(config.cache.state_dir, exist_ok=True)
    app = WorkerApp(
        f"{config.kafka.group_id}-control",
        web_enabled=True,
        web_host=w.metrics_host,
        web_port=w.metrics_port,
        web_bind=w.metrics_host,
        datadir=os.path.join(config.cache.state_dir, "faust"),
    )

    class RouterService(Service):
        """Starts the processor with the worker and stops it (gracefully) with the worker."""

        runtime: Runtime

        async def on_start(self) -> None:
            self.runtime = build_runtime(config, on_fatal=self._fatal, pipeline=pipeline)
            holder["runtime"] = self.runtime
            holder["started_at"] = time.time()
            await self.runtime.processor.start()
            if config.worker.gc_threshold0:
                tune_gc(config.worker.gc_threshold0)
            log.info("router-stream worker %s consuming %s", self.runtime.worker_id, config.topics.requests)

        async def _fatal(self, exc: BaseException) -> None:
            # Loud stop: state is safe (nothing uncommitted is kept), a supervisor restarts us.
            log.critical("fatal: %s: %s; exiting with status 70", type(exc).__name__, exc)
            logging.shutdown()
            os._exit(70)

        async def on_stop(self) -> None:
            runtime = holder.get("runtime")
            if runtime is not None:
                await runtime.processor.stop()
                await runtime.aclose()
                log.info(
                    "router-stream worker %s stopped after %d records",
                    runtime.worker_id,
                    runtime.processor.records_done,
                )

    app.service(RouterService)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health/live")
    async def live(web: Any, request: Any) -> Any:
        runtime = holder.get("runtime")
        ok = runtime is None or runtime.processor.fatal is None
        return web.json({"live": ok}, status=200 if ok else 503)

    @app.page("/health/ready")
    async def ready(web: Any, request: Any) -> Any:
        runtime = holder.get("runtime")
        ok = runtime is not None and runtime.processor.ready
        body: dict[str, Any] = {"ready": ok}
        if runtime is not None:
            # ready = partitions assigned and restored, not failed, and some candidate reachable
            body["candidates_reachable"] = reachable = await runtime.candidates_reachable()
            body["ready"] = ok = ok and any(reachable.values())
            body["breakers"] = runtime.dispatcher.breaker_states()
            body["records_done"] = runtime.processor.records_done
            body["restored_records"] = runtime.processor.restored_records
            body["restored_on_assign"] = runtime.processor.restored_on_assign
        return web.json(body, status=200 if ok else 503)

    @app.page("/state")
    async def state(web: Any, request: Any) -> Any:
        from .state_http import state_view

        runtime = holder.get("runtime")
        if runtime is None:
            return web.json({"error": "the worker is still starting"}, status=503)
        status, body = state_view(runtime.processor, config.cache.ttl_s, config.cache.scope, request.query)
        return web.json(body, status=status)

    return app, holder


def tune_gc(threshold0: int) -> None:
    """Collect garbage less often, and never re-scan what start-up built.

    A worker with thousands of records in flight allocates fast (tasks, futures, records,
    pydantic models), and with CPython's default first threshold (700) the cyclic collector runs
    hundreds of times a second over a heap that includes every module, Faust and the learned
    router's arrays: measured ~20% of the worker's CPU per record at 1,000 records/s. Almost all
    of those objects are freed by reference counting anyway. ``gc.freeze()`` moves the start-up
    heap out of the collector's sight; the higher threshold makes collections rarer.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold0, max(second, 20), max(third, 20))


def run_worker(config: RouterConfig, loglevel: str = "info", pipeline: Pipeline | None = None) -> None:
    """Run a Faust worker for ``config`` until SIGTERM/SIGINT (blocks)."""
    app, _ = build_app(config, pipeline)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per model call is noise
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=True)
    worker.execute_from_commandline()
