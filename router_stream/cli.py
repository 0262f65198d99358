"""The ``router-stream`` command.

    router-stream run --config routing.yaml          run a worker (a Faust worker process)
    router-stream topics apply --config routing.yaml create missing topics, report differences
    router-stream check-config routing.yaml          validate a config file and say what is wrong
    router-stream demo                               the embedded demo (local broker, models, traffic)
    router-stream model-server --name cheap          a loopback dev/test model endpoint
    router-stream train | calibrate | eval           the learned router
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import load_config
from .errors import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from .app import run_worker
    run_worker(config, loglevel=args.loglevel)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from .topics import apply_topics, load_spec
    config = load_config(args.config)
    specs = load_spec(args.spec, config, partitions=args.partitions)
    report = asyncio.run(apply_topics(config, specs))
    for line in report:
        print(line)
    return 1 if any(line.startswith("ERROR") for line in report) else 0


def _cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"ok: {len(config.candidates)} candidates ({', '.join(config.candidates)}), "
          f"{len(config.strategies)} strategies, default {config.default!r}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .devtools.demo import run_demo
    return run_demo(requests=args.requests, bootstrap=args.bootstrap)


def _cmd_model_server(args: argparse.Namespace) -> int:
    from .devtools import model_server
    argv = ["--name", args.name, "--host", args.host, "--port", str(args.port), "--latency-ms", str(args.latency_ms)]
    return model_server.main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router-stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a worker")
    run.add_argument("--config", required=True)
    run.add_argument("--loglevel", default="info")
    run.set_defaults(func=_cmd_run)

    topics = sub.add_parser("topics", help="topics as code")
    tsub = topics.add_subparsers(dest="action", required=True)
    apply = tsub.add_parser("apply", help="create missing topics, report differences, delete nothing")
    apply.add_argument("--config", required=True)
    apply.add_argument("--spec", default=None, help="topics spec YAML (default: built-in, same as topics/topics.yaml)")
    apply.add_argument("--partitions", type=int, default=None, help="override the partition count")
    apply.set_defaults(func=_cmd_topics)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser("demo", help="run the embedded demo and print a summary")
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    demo.set_defaults(func=_cmd_demo)

    ms = sub.add_parser("model-server", help="run a loopback dev/test model endpoint")
    ms.add_argument("--name", default="cheap")
    ms.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    ms.add_argument("--port", type=int, default=0)
    ms.add_argument("--latency-ms", type=float, default=5)
    ms.set_defaults(func=_cmd_model_server)

    try:
        from .learning.cli import register
    except ImportError:  # pragma: no cover - learning extras missing
        pass
    else:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
