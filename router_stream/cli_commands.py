"""The handlers of the top-level ``router-stream`` commands (``run``, ``topics apply``,
``check-config``, ``explain``, ``demo``, ``model-server``): each takes the parsed namespace and
returns an exit code, raising the :mod:`.errors` levels that :func:`router_stream.cli.main` turns
into one line and an exit status.

Apart from :mod:`router_stream.cli` (the parser and ``main``) so the parser reads as the command
list; light at import time like it: every heavy import (config models, Kafka, Faust, the
pipeline) happens when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .errors import ConfigError, KafkaUnavailable

if TYPE_CHECKING:
    from types import ModuleType

    from .config import RouterConfig


def _load(args: argparse.Namespace) -> RouterConfig:
    from .cli_common import load

    return load(args.config)


def _warn_config(config: RouterConfig) -> None:
    """What is legal but probably a mistake: key variables not set, strategies that never run,
    fields that no longer do anything."""
    for path, var in config.unset_secret_envs():
        print(
            f"warning: {path}: environment variable {var} is not set; calls that need it will go without it",
            file=sys.stderr,
        )
    for line in [*config.never_run_warnings(), *config.retired_field_warnings()]:
        print(f"warning: {line}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from .kafka_check import run_preflight
    from .kafka_settings import client_settings
    from .runtime import build_pipeline

    config = _load(args)
    client_settings(config.kafka)  # SASL/TLS settings complete (names kafka.<field> otherwise)
    _warn_config(config)
    # built before Kafka, so a missing artifact or a failing custom strategy is a config error
    # (exit 2) rather than a traceback inside Faust; the worker then uses this very pipeline
    pipeline = build_pipeline(config)
    # Kafka reachable, our login accepted, our topics there: else one line and exit 75 or 2,
    # within seconds (Faust itself would print a page of traceback and exit 1)
    run_preflight(
        config.kafka, config.topics.model_dump(), f"router-stream topics apply --config {args.config}"
    )
    from .app import run_worker

    run_worker(config, loglevel=args.loglevel, pipeline=pipeline)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from .topics import TopicPlan, apply_topics, builtin_spec_note, load_spec

    config = _load(args)
    specs = load_spec(args.spec, config, partitions=args.partitions)
    shown: list[str] = []

    def show(plan: TopicPlan) -> None:  # before anything changes
        shown.extend(plan.lines())
        print(
            f"plan ({plan.brokers} broker{'s' if plan.brokers != 1 else ''}"
            + (f"; {builtin_spec_note(specs)}" if args.spec is None else f"; spec {args.spec}")
            + "):"
        )
        for line in shown:
            print(f"  {line}")

    try:
        report = asyncio.run(apply_topics(config, specs, dry_run=args.dry_run, on_plan=show))
    except KafkaUnavailable:
        from .kafka_check import raise_if_login_refused

        raise_if_login_refused(config.kafka)  # aiokafka reports a refused login as "cannot bootstrap"
        raise
    except _kafka_refused() as exc:  # credentials or ACLs: retrying cannot help
        raise ConfigError(
            f"kafka: the broker refused us ({type(exc).__name__}: {exc}); check the SASL "
            "settings and the ACLs (docs/operations.md)"
        ) from None
    except (KafkaError, TimeoutError, OSError) as exc:  # a broker problem, not ours: retry later
        raise KafkaUnavailable(f"topics apply failed talking to Kafka: {type(exc).__name__}: {exc}") from None
    for line in report:
        if line not in shown:  # what the plan showed already (existing topics) is not repeated
            print(line)
    return 1 if any(line.startswith("ERROR") for line in report) else 0


def cmd_check(args: argparse.Namespace) -> int:
    from .kafka_settings import client_settings
    from .runtime import check_pipeline

    config = _load(args)
    client_settings(config.kafka)  # SASL/TLS settings complete (names kafka.<field> otherwise)
    _warn_config(config)
    check_pipeline(config)  # load artifacts, construct custom strategies: what the worker does at start
    print(
        f"ok: {len(config.candidates)} candidates ({', '.join(config.candidates)}), "
        f"{len(config.strategies)} strategies, default {config.default!r}"
    )
    for budget in config.budgets:  # which mode each budget is in (docs/budgets.md, "Modes")
        print(budget.mode())
    return 0


def _kafka_refused() -> tuple[type[BaseException], ...]:
    from .kafka_check import refused_errors

    return refused_errors()


def _read_arg(value: str, what: str) -> bytes:
    """``@file`` (``@-`` = stdin) as bytes, else the text itself, UTF-8 encoded."""
    if not value.startswith("@"):
        return value.encode("utf-8")
    if value == "@-":
        return sys.stdin.buffer.read()
    try:
        with open(value[1:], "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {value[1:]}: {exc.strerror}") from None


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .explain import explain, parse_sticky
    from .schemas import now_ms

    config = _load(args)
    try:
        sticky = parse_sticky(args.sticky, now_ms()) if args.sticky is not None else None
        request_bytes = _read_arg(args.request, "--request")
        headers = None
        if args.headers is not None:
            raw_headers = _read_arg(args.headers, "--headers")
            try:
                headers = json.loads(raw_headers)
            except ValueError as exc:
                raise ValueError(f"--headers: not JSON: {exc}") from None
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise ValueError(
                    '--headers: expected a JSON object of strings, e.g. {"traceparent": "00-..."}'
                )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(
        explain(config, request_bytes, key=args.key, headers=headers, with_io=args.with_io, sticky=sticky)
    )
    print(result.to_json() if args.json else result.table())
    return result.exit_code


def _dev_module(name: str, command: str) -> ModuleType | None:
    """``router_stream_dev.<name>``, or None after saying how to get it.

    Why: the demo and the loopback model server are development tooling; they live in the
    repository's dev package (``dev/``), which the shipped wheel leaves out."""
    import importlib

    try:
        return importlib.import_module(f"router_stream_dev.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != "router_stream_dev":
            raise  # the dev package is there but broken: its own error says more
    print(
        f"error: `router-stream {command}` is development tooling from the repository's dev package "
        "(router_stream_dev), which the installed router-stream does not include. From a clone of "
        "the repository run `make demo`, or install it: pip install -e ./dev",
        file=sys.stderr,
    )
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    demo = _dev_module("demo", "demo")
    if demo is None:
        return 2
    return demo.run_demo(requests=args.requests, bootstrap=args.bootstrap)


def cmd_model_server(args: argparse.Namespace) -> int:
    model_server = _dev_module("model_server", "model-server")
    if model_server is None:
        return 2
    argv = [
        "--name",
        args.name,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--latency-ms",
        str(args.latency_ms),
    ]
    return model_server.main(argv) or 0
