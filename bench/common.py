"""What every benchmark shares, in one import; each part lives in a module of its own role.

- :mod:`bench.report`: :class:`Result`, :class:`Table`, :class:`Headline` and numeric helpers;
- :mod:`bench.context`: the run context :class:`Ctx` and the demo's :data:`RULES_STRATEGY`;
- :mod:`bench.procs`: process CPU / RSS accounting and the loopback model server process;
- :mod:`bench.traffic`: request traffic, producing it, and the router's topics;
- :mod:`bench.worker_runs`: a worker's config and draining a backlog with it.

Benchmarks import from here (``from .common import Ctx, Table, ...``) so they need not know
which module holds what.
"""

from __future__ import annotations

from .context import RULES_STRATEGY, Ctx
from .procs import CLK_TCK, CpuWatch, ModelServerProc, proc_cpu_s, proc_rss_mb
from .report import Headline, Result, Table, fmt_load, loadavg, pct, ratio
from .traffic import delete_topics, produce_fast, router_topics, topic_end_total, traffic, wait_for_leaders
from .worker_runs import (
    Drain,
    drain_data,
    drain_with_worker,
    health_note,
    prom_value,
    records_done,
    worker_config,
    worker_log_health,
)

__all__ = [
    "CLK_TCK",
    "RULES_STRATEGY",
    "CpuWatch",
    "Ctx",
    "Drain",
    "Headline",
    "ModelServerProc",
    "Result",
    "Table",
    "delete_topics",
    "drain_data",
    "drain_with_worker",
    "fmt_load",
    "health_note",
    "loadavg",
    "pct",
    "proc_cpu_s",
    "proc_rss_mb",
    "produce_fast",
    "prom_value",
    "ratio",
    "records_done",
    "router_topics",
    "topic_end_total",
    "traffic",
    "wait_for_leaders",
    "worker_config",
    "worker_log_health",
]
