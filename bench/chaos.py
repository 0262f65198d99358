"""``make chaos``: kill -9 workers and restart the broker under a stream, then prove exactly once.

    .venv/bin/python -m bench.chaos --records 100000 --workers 3 --partitions 12 \\
        --kills 20 --broker-restarts 2 --rate 400

Starts its own local Kafka (from the jars deploy/local-kafka fetches) so it can restart it;
with ``KAFKA_BOOTSTRAP_SERVERS`` set it uses that broker instead and skips the broker restarts.
Prints lost / duplicated / changed counts and exits 1 when any is non-zero.
See dev/router_stream_dev/chaos.py for what is done and checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from router_stream_dev.chaos import run_chaos
from router_stream_dev.local_kafka import LocalKafka


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--broker-restarts", type=int, default=2)
    p.add_argument("--keys", type=int, default=None, help="default: records / 20, at most 1000")
    p.add_argument("--rate", type=float, default=400, help="requests produced per second")
    p.add_argument("--max-batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="kept after the run (default: a temp dir, removed when the run passes)",
    )
    p.add_argument(
        "--budget-usd",
        type=float,
        default=None,
        help="a per-key budget of this many USD, checked to the micro-dollar (docs/budgets.md)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the report here as JSON")
    args = p.parse_args(argv)
    # our own producer and readers log every connection error while the broker restarts: noise here
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="router-stream-chaos-"))
    kwargs = {
        "records": args.records,
        "workers": args.workers,
        "partitions": args.partitions,
        "kills": args.kills,
        "broker_restarts": args.broker_restarts,
        "keys": args.keys,
        "seed": args.seed,
        "rate": args.rate,
        "max_batch": args.max_batch,
        "workdir": workdir / "run",
        "drain_timeout": max(600.0, args.records / 50),
        "budget_usd": args.budget_usd,
    }
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        report = run_chaos(os.environ["KAFKA_BOOTSTRAP_SERVERS"], **kwargs)
    else:
        with LocalKafka(workdir=workdir / "kafka") as kafka:
            report = run_chaos(kafka, **kwargs)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    if not report.ok:
        print(f"logs kept in {workdir}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
