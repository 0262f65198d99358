"""The run context every benchmark gets (:class:`Ctx`: broker, scratch dir, sizes, results so far)
and the routing rules the benchmarks' workers use (:data:`RULES_STRATEGY`, the demo's).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import Result

# The rules the demo uses: content and tags decide between a cheap and a strong candidate.
RULES_STRATEGY: dict[str, Any] = {
    "type": "rules",
    "name": "by-content",
    "rules": [
        {"when": '"legal" in tags or fields.lang == "de"', "then": "strong"},
        {"when": "len(prompt) > 200", "then": "strong"},
    ],
}


@dataclass
class Ctx:
    """One ``python -m bench`` run: broker, scratch dir, sizes, results so far."""

    bootstrap: str | None
    workdir: Path
    quick: bool
    partitions: int
    broker_pid: int | None = None
    external_broker: bool = False
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Result] = field(default_factory=dict)
    current: str = ""
    created_topics: list[str] = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"  [{time.monotonic() - self.started:6.1f}s {self.current}] {msg}", flush=True)

    def prefix(self, tag: str) -> str:
        return f"bench-{tag}-{uuid.uuid4().hex[:6]}"

    def need_kafka(self) -> str:
        if not self.bootstrap:
            raise RuntimeError("this benchmark needs a Kafka broker")
        return self.bootstrap
