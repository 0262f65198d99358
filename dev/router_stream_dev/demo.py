"""The embedded demo: a local broker, two loopback models, a worker, sample traffic, a summary.

Everything it starts it stops. Run with ``router-stream demo`` (or ``make demo``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import WorkerProcess, free_port, make_config, produce, read_topic, write_config

DEMO_STRATEGIES: list[dict[str, Any]] = [
    {
        "type": "rules",
        "name": "by-content",
        "rules": [
            {"when": '"legal" in tags or fields.lang == "de"', "then": "strong"},
            {"when": "len(prompt) > 200", "then": "strong"},
        ],
    },
    # the packaged learned router (MMLU, weak vs strong); abstains near its threshold
    {"type": "learned", "weak": "cheap", "strong": "strong", "abstain_band": 0.01},
]

SHORT = [
    "What is 2+2?",
    "Translate 'cat' to French.",
    "Name a prime number.",
    "Capital of Peru?",
    "Is water wet?",
    "Spell 'necessary'.",
    "What colour is the sky?",
    "Give me a synonym for fast.",
]
LONG = (
    "Please read the following contract clause carefully and explain, step by step, which obligations "
    "it creates for each party, what happens on early termination, and whether the liability cap "
    "applies to indirect damages. "
)


def request_body(i: int, rng: random.Random, id_prefix: str = "demo") -> dict[str, Any]:
    """One valid request of the demo's mix: short and long prompts, legal tags, German."""
    body: dict[str, Any] = {"request_id": f"{id_prefix}-{i}"}
    kind = rng.random()
    if kind < 0.55:
        body["prompt"] = rng.choice(SHORT)
    elif kind < 0.75:
        body["prompt"] = LONG * 2
    elif kind < 0.9:
        body["prompt"] = "Is this NDA enforceable?"
        body["tags"] = ["legal"]
    else:
        body["messages"] = [{"role": "user", "content": "Wie spät ist es?"}]
        body["fields"] = {"lang": "de"}
    return body


def sample_traffic(n: int, seed: int = 42) -> list[tuple[bytes | None, bytes | None]]:
    """~n records: short and long prompts, tagged and German ones, repeat customers, a few malformed."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n):
        key = f"customer-{rng.randrange(max(1, n // 4))}".encode()
        if i % 40 == 39:
            out.append((key, rng.choice([b"{oops", b"[]", b'{"prompt": "no id"}', b"\xff\xfe"])))
            continue
        out.append((key, json.dumps(request_body(i, rng)).encode()))
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summarize(responses: list[Any], audits: list[Any], dead: list[Any], sent: int, elapsed: float) -> str:
    resp = [json.loads(r.value) for r in responses]
    aud = [json.loads(r.value) for r in audits]
    dl = [json.loads(r.value) for r in dead]
    lat = [r["latency_ms"] for r in resp if r.get("latency_ms") is not None]
    hits = sum(1 for a in aud if a.get("cache_hit"))
    cost = sum(a.get("estimated_cost_usd", 0.0) for a in aud)
    ids = Counter(r["request_id"] for r in resp)
    lines = [
        "",
        "router-stream demo summary",
        "==========================",
        f"records sent          {sent}",
        f"responses             {len(resp)} ({len(ids)} distinct request ids, "
        f"{sum(1 for n in ids.values() if n > 1)} duplicated)",
        f"audit records         {len(aud)}",
        f"dead letters          {len(dl)}  "
        + ", ".join(f"{k}={v}" for k, v in Counter(d["reason"] for d in dl).items()),
        f"errors in responses   {sum(1 for r in resp if r.get('error'))}",
        "",
        "requests per candidate:   "
        + ", ".join(f"{k}={v}" for k, v in sorted(Counter(r.get("candidate") for r in resp).items())),
        "requests per decider:     "
        + ", ".join(f"{k}={v}" for k, v in sorted(Counter(a["decided_by"] for a in aud).items())),
        f"cache hit rate:           {hits / len(aud):.1%} ({hits} of {len(aud)})"
        if aud
        else "cache hit rate: n/a",
        f"model latency p50 / p95:  {_pct(lat, 0.5):.1f} ms / {_pct(lat, 0.95):.1f} ms",
        f"estimated cost:           ${cost:.4f}",
        f"wall time:                {elapsed:.1f} s",
    ]
    return "\n".join(lines)


#: what a scenario's model starter returns: ``{name: base_url}`` and per-candidate config overrides
StartedModels = tuple[dict[str, str], dict[str, dict[str, Any]]]


@dataclass
class Scenario:
    """What a demo run starts and sends; :func:`run_scenario` does the rest (broker, worker, reading).

    ``start_models`` starts the candidates (registering their stop on the stack) and returns
    ``{name: base_url}`` plus per-candidate config overrides. ``expected_dead`` is the exact number
    of dead letters the traffic must give (None: any; every record must still come out once, as a
    response or a dead letter). ``summarize`` turns what was read into the printed summary.
    """

    name: str
    start_models: Callable[[ExitStack, Callable[[str], None]], StartedModels]
    traffic: list[tuple[bytes | None, bytes | None]]
    strategies: list[dict[str, Any]]
    expected_dead: int | None
    summarize: Callable[[list[Any], list[Any], list[Any], int, float], str] = summarize
    process_timeout_s: float = 120.0


def _loopback_models(stack: ExitStack, say: Callable[[str], None]) -> StartedModels:
    from .model_server import ModelServer

    cheap = ModelServer(name="cheap", latency_ms=5, jitter_ms=5)
    strong = ModelServer(name="strong", latency_ms=40, jitter_ms=20)
    for server in (cheap, strong):
        server.start_in_thread()
        stack.callback(server.stop)
    say(f"loopback models: cheap at {cheap.base_url} (fast), strong at {strong.base_url} (slower)")
    return {"cheap": cheap.base_url, "strong": strong.base_url}, {}


def run_demo(requests: int = 200, bootstrap: str | None = None) -> int:
    """``router-stream demo``: two loopback models and the sample traffic mix."""
    traffic = sample_traffic(requests)
    malformed = sum(1 for _, v in traffic if v is None or not v.startswith(b'{"request_id"'))
    return run_scenario(
        Scenario(
            name="demo",
            start_models=_loopback_models,
            traffic=traffic,
            strategies=DEMO_STRATEGIES,
            expected_dead=malformed,
        ),
        bootstrap,
    )


def run_scenario(scenario: Scenario, bootstrap: str | None = None) -> int:
    """Start a broker (unless given), the scenario's models and a worker; send, wait, read, summarize."""
    from .local_kafka import LocalKafka

    def say(msg: str) -> None:
        print(f"[{scenario.name}] {msg}", flush=True)

    started = time.monotonic()
    bootstrap_given = bootstrap
    traffic = scenario.traffic
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix=f"router-stream-{scenario.name}-") as tmp:
        work = Path(tmp)
        if bootstrap is None:
            say("starting a local Apache Kafka broker (KRaft, 127.0.0.1) ...")
            kafka = LocalKafka(workdir=work / "kafka")
            bootstrap = kafka.start()
            stack.callback(kafka.stop)
        say(f"broker at {bootstrap}")
        candidates, candidate_extra = scenario.start_models(stack, say)

        config = make_config(
            bootstrap=bootstrap,
            prefix=f"{scenario.name}{int(time.time())}",
            state_dir=work / "state",
            candidates=candidates,
            candidate_extra=candidate_extra,
            default="cheap",
            strategies=scenario.strategies,
        )
        cfg_path = write_config(work / "routing.yaml", config)
        from router_stream.config import load_config
        from router_stream.topics import apply_topics, load_spec

        router_config = load_config(cfg_path)
        for line in asyncio.run(apply_topics(router_config, load_spec(None, router_config, partitions=4))):
            say(f"topics: {line}")

        worker = WorkerProcess(cfg_path, work / "worker.log", free_port()).start()
        stack.callback(worker.terminate)
        say("starting worker (router-stream run) ...")
        try:
            waited = worker.wait_ready(timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        say(f"worker ready in {waited:.1f}s")

        t0 = time.monotonic()
        asyncio.run(produce(bootstrap, config["topics"]["requests"], traffic))
        planned = (
            "" if scenario.expected_dead is None else f" ({scenario.expected_dead} malformed on purpose)"
        )
        say(f"produced {len(traffic)} requests{planned}")
        tty = sys.stdout.isatty()  # a progress line redrawn in place; in a log, one line every 5 s
        last = 0.0
        while True:
            done = worker.records_done()
            finished = done >= len(traffic) or time.monotonic() - t0 > scenario.process_timeout_s
            if tty:
                print(
                    f"\r[{scenario.name}] processed {done}/{len(traffic)}",
                    end="\n" if finished else "",
                    flush=True,
                )
            elif finished or time.monotonic() - last >= 5:
                say(f"processed {done}/{len(traffic)}")
                last = time.monotonic()
            if finished:
                break
            time.sleep(0.5)
        # dead letters first: with an open count (expected_dead None) the responses to wait for follow
        dead = asyncio.run(
            read_topic(
                bootstrap, config["topics"]["dead_letter"], expect=scenario.expected_dead, timeout=30, idle=1
            )
        )
        expect = len(traffic) - (len(dead) if scenario.expected_dead is None else scenario.expected_dead)
        responses = asyncio.run(
            read_topic(bootstrap, config["topics"]["responses"], expect=expect, timeout=60, idle=1)
        )
        audits = asyncio.run(
            read_topic(bootstrap, config["topics"]["audit"], expect=expect, timeout=30, idle=1)
        )
        print(scenario.summarize(responses, audits, dead, len(traffic), time.monotonic() - t0))
        say(
            "stopping worker, models"
            + (" and broker ..." if bootstrap_given is None else " ... (the broker given stays up)")
        )
        code = worker.terminate()
        ids = Counter(json.loads(r.value)["request_id"] for r in responses)
        ok = (
            len(responses) == expect
            and len(ids) == expect
            and code == 0
            and (scenario.expected_dead is None or len(dead) == scenario.expected_dead)
        )
        if not ok:
            want = "" if scenario.expected_dead is None else f" and {scenario.expected_dead} dead letters"
            print(
                f"[{scenario.name}] FAILED: expected {expect} responses with distinct ids{want}, got "
                f"{len(responses)} ({len(ids)} distinct) and {len(dead)} dead letters (worker exit {code}); "
                f"worker log tail:\n{worker.tail()}",
                file=sys.stderr,
            )
    say(f"done in {time.monotonic() - started:.1f}s")
    return 0 if ok else 1
