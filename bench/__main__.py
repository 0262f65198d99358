"""``python -m bench [--quick] [--only NAME[,NAME]] [--json PATH]`` — see bench/__init__.py."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from bench.common import Ctx, Result, delete_topics, fmt_load, loadavg

# name -> module, in run order (routing reads kafka-limit's per-record cost)
BENCHMARKS = {
    "kafka-limit": "bench.kafka_limit",
    "latency-bound": "bench.latency_bound",
    "micro-batching": "bench.micro_batching",
    "http-client": "bench.http_client",
    "decision-cache": "bench.decision_cache",
    "routing": "bench.routing_overhead",
    "partitions": "bench.partitions",
    "recovery": "bench.recovery",
}


def machine() -> dict[str, object]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError):
        pass
    versions = {}
    for mod in ("aiokafka", "httpx", "httpx_aiohttp", "aiohttp", "rocksdict", "pydantic", "faust"):
        try:
            from importlib.metadata import version

            versions[mod] = version(
                {"httpx_aiohttp": "httpx-aiohttp", "faust": "faust-streaming"}.get(mod, mod)
            )
        except Exception:
            versions[mod] = "?"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def print_result(res: Result) -> None:
    print()
    print(
        f"== {res.name}: {res.title}  ({res.seconds:.0f} s, load {fmt_load(res.load_before)} → "
        f"{fmt_load(res.load_after)})"
    )
    if res.error:
        print(f"  FAILED: {res.error}")
        return
    for t in res.tables:
        print(t.render())
        print()
    for n in res.notes:
        print(f"  note: {n}")
    for h in res.headlines:
        verdict = {True: "MET", False: "NOT MET", None: ""}[h.met]
        value = f"{h.value:.2f}" if isinstance(h.value, float) else str(h.value)
        print(f"  >> {h.what}: {value} (target {h.target}) {verdict}  {h.text}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, ~30 s per benchmark")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}",
    )
    p.add_argument(
        "--partitions", type=int, default=12, help="partitions per topic (default 12, as topics.yaml)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write all results here as JSON")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, state)")
    args = p.parse_args(argv)

    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = [n for n in BENCHMARKS if n in names]
    modules = {n: importlib.import_module(BENCHMARKS[n]) for n in names}

    m = machine()
    print(f"router-stream benchmarks{' (--quick)' if args.quick else ''}: {', '.join(names)}")
    print(
        f"machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, "
        f"load average {fmt_load(loadavg())} (1/5/15 min)"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))  # type: ignore[union-attr]
    print("command: " + " ".join([os.path.basename(sys.executable), "-m", "bench", *(argv or sys.argv[1:])]))
    sys.stdout.flush()

    workdir = Path(tempfile.mkdtemp(prefix="router-stream-bench-"))
    started = time.monotonic()
    needs_kafka = any(getattr(mod, "NEEDS_KAFKA", False) for mod in modules.values())
    if "routing" in names and "kafka-limit" not in names:
        needs_kafka = True  # routing measures the per-record Kafka cost itself then
    exit_code = 0
    with ExitStack() as stack:
        ctx = Ctx(bootstrap=None, workdir=workdir, quick=args.quick, partitions=args.partitions)
        if needs_kafka:
            given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            if given:
                ctx.bootstrap, ctx.external_broker = given, True
                print(f"broker: {given} (KAFKA_BOOTSTRAP_SERVERS)")
            else:
                from router_stream_dev.local_kafka import LocalKafka

                kafka = LocalKafka(workdir=workdir / "kafka")
                t0 = time.monotonic()
                print("broker: starting a local Apache Kafka (KRaft, 127.0.0.1) ...", flush=True)
                ctx.bootstrap = kafka.start()
                stack.callback(kafka.stop)
                ctx.broker_pid = kafka.pid
                print(f"broker: Kafka {kafka.version} at {ctx.bootstrap}, up in {time.monotonic() - t0:.1f}s")
        for name in names:
            ctx.current = name
            print(f"\n-- {name} (load {fmt_load(loadavg())})", flush=True)
            t0 = time.monotonic()
            load_before = loadavg()
            try:
                res = modules[name].run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                res = Result(
                    name, getattr(modules[name], "TITLE", name), error=f"{type(exc).__name__}: {exc}"
                )
                exit_code = 1
            res.seconds = time.monotonic() - t0
            res.load_before, res.load_after = load_before, loadavg()
            ctx.results[name] = res
            print_result(res)
            if ctx.external_broker and ctx.created_topics:
                import asyncio

                try:
                    asyncio.run(delete_topics(ctx.bootstrap, ctx.created_topics))
                except Exception as exc:
                    print(f"  (could not delete bench topics: {exc})")
                ctx.created_topics = []

    print("\n== summary")
    print(
        f"  machine: {m['cores']} cores, load average at end {fmt_load(loadavg())}; total "
        f"{time.monotonic() - started:.0f} s"
    )
    for name, res in ctx.results.items():
        if res.error:
            print(f"  {name:15s} FAILED: {res.error}")
        for h in res.headlines:
            verdict = {True: "met", False: "NOT met", None: "-"}[h.met]
            value = f"{h.value:.2f}" if isinstance(h.value, float) else str(h.value)
            print(f"  {name:15s} {h.what}: {value} (target {h.target}, {verdict}) {h.text}")
    if args.json:
        out = {
            "machine": m,
            "quick": args.quick,
            "partitions": args.partitions,
            "results": {k: asdict(v) for k, v in ctx.results.items()},
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"  results written to {args.json}")
    if args.keep:
        print(f"  scratch kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
