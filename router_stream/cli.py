"""router-stream: per-record model routing inside a Kafka stream, exactly once.

  router-stream check-config --config routing.yaml     validate a config (and build its strategies)
  router-stream topics apply --config routing.yaml     create missing topics, report differences
  router-stream run --config routing.yaml              run a worker
  router-stream send --config routing.yaml --prompt "hi" --wait    send a request, print its answer
  router-stream tail responses --config routing.yaml   follow answers (or audit, dead-letters)
  router-stream explain --config routing.yaml --request '{...}'    what routing would decide
  router-stream demo                                   the embedded demo (local broker, models, traffic)
  router-stream model-server --name cheap              a loopback dev/test model endpoint
  router-stream train | calibrate | eval               the learned router
  router-stream state get|evict|reset-budget --config c.yaml --key K   a key's state and budget spend

`router-stream COMMAND --help` for each command's options.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .cli_common import add_config_option, resolve_config
from .errors import ConfigError, KafkaUnavailable, SetupError

if TYPE_CHECKING:
    from .config import RouterConfig

EXIT_CODES = """\
exit status:
  0   ok
  1   failure (e.g. topics apply reported an ERROR line, send --wait got an error answer or timed out)
  2   usage or config error (the message names the field or option; also Kafka refusing our
      credentials, and a missing topic: run `router-stream topics apply`)
  75  Kafka unavailable: try again later (EX_TEMPFAIL)"""

LOGLEVELS = ("debug", "info", "warning", "error", "critical")


def _load(args: argparse.Namespace) -> RouterConfig:
    from .cli_common import load

    return load(args.config)


def _warn_config(config: RouterConfig) -> None:
    """What is legal but probably a mistake: key variables not set, strategies that never run."""
    for path, var in config.unset_secret_envs():
        print(
            f"warning: {path}: environment variable {var} is not set; calls that need it will go without it",
            file=sys.stderr,
        )
    for line in config.never_run_warnings():
        print(f"warning: {line}", file=sys.stderr)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("router-stream")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def _cmd_run(args: argparse.Namespace) -> int:
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


def _cmd_topics(args: argparse.Namespace) -> int:
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


def _cmd_check(args: argparse.Namespace) -> int:
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


def _cmd_explain(args: argparse.Namespace) -> int:
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .devtools.demo import run_demo

    return run_demo(requests=args.requests, bootstrap=args.bootstrap)


def _cmd_model_server(args: argparse.Namespace) -> int:
    from .devtools import model_server

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router-stream",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"router-stream {_version()}",
        help="print the installed version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a worker (until SIGTERM/SIGINT)",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a worker: consume requests, route, call a model, produce answers and\n"
        "audit records, exactly once. Checks first that Kafka answers, accepts the credentials\n"
        "and has the topics (router-stream topics apply creates them).",
    )
    add_config_option(run)
    run.add_argument(
        "--loglevel",
        default="info",
        choices=LOGLEVELS,
        type=str.lower,
        help="the worker's log level: %(choices)s (default: %(default)s)",
    )
    run.set_defaults(func=_cmd_run)

    topics = sub.add_parser("topics", help="topics as code: router-stream topics apply --config routing.yaml")
    tsub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = tsub.add_parser("apply", help="create missing topics, report differences, delete nothing")
    add_config_option(apply)
    apply.add_argument(
        "--spec",
        default=None,
        help="topics spec YAML (default: a built-in dev spec: 12 partitions, "
        "rf 1, compacted changelog; a cluster: deploy/k8s/topics.yaml, rf 3 with retention settings)",
    )
    apply.add_argument("--partitions", type=int, default=None, help="override the partition count")
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (what would be created, how existing "
        "topics compare) and change nothing; exit 1 if it shows an ERROR",
    )
    apply.set_defaults(func=_cmd_topics)

    check = sub.add_parser("check-config", help="validate a config file (and build its strategies)")
    add_config_option(check)
    check.set_defaults(func=_cmd_check)

    ex = sub.add_parser(
        "explain",
        help="show each strategy's verdict and the final choice for one request (no model call, no Kafka)",
    )
    add_config_option(ex)
    ex.add_argument("--request", required=True, help="the request JSON, or @file.json (@- = stdin)")
    ex.add_argument("--key", default=None, help="the Kafka key of the record (default: none)")
    ex.add_argument(
        "--headers",
        default=None,
        help="record headers as a JSON object, or @file.json "
        "(strategies see only trace headers, as in the worker)",
    )
    ex.add_argument(
        "--with-io",
        action="store_true",
        help="also run judge and scorer strategies: calls the judge's model and the scorer's URL "
        "(default: they abstain, 'not run'; no candidate serves the request either way)",
    )
    ex.add_argument(
        "--sticky",
        default=None,
        metavar="STRATEGY=CANDIDATE",
        help="the key's sticky decision, as the worker would hold it (e.g. learned=cheap): shows "
        "whether it applies or an earlier strategy decides first",
    )
    ex.add_argument(
        "--no-io", action="store_true", help=argparse.SUPPRESS
    )  # the default; kept for old scripts
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    ex.set_defaults(func=_cmd_explain)

    from .console.commands import register as register_console

    register_console(sub)

    demo = sub.add_parser("demo", help="run the embedded demo and print a summary")
    demo.add_argument(
        "--requests",
        type=int,
        default=200,
        metavar="N",
        help="how many requests to send through the demo (default: %(default)s)",
    )
    demo.add_argument(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="use this broker instead of starting a local one",
    )
    demo.set_defaults(func=_cmd_demo)

    ms = sub.add_parser(
        "model-server", help="run a loopback dev/test model endpoint (OpenAI chat completions)"
    )
    ms.add_argument(
        "--name",
        default="cheap",
        help="the name it answers as: every reply starts with [NAME] (default: %(default)s)",
    )
    ms.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    ms.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to listen on; 0 = a free one, printed at start (default: %(default)s)",
    )
    ms.add_argument(
        "--latency-ms",
        type=float,
        default=5,
        metavar="MS",
        help="how long each answer takes, in milliseconds (default: %(default)s)",
    )
    ms.set_defaults(func=_cmd_model_server)

    from .state_cli import register as register_state

    register_state(sub)  # state get / state evict

    try:
        from .learning.cli import register
    except ImportError:  # pragma: no cover - learning extras missing
        pass
    else:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.command != "run":  # one-shot commands turn Kafka errors into one line; aiokafka's own
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # log lines would say it twice
    resolve_config(args)
    try:
        return int(args.func(args) or 0)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        for line in str(exc).splitlines() or [""]:  # every problem at once, one per line
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except KafkaUnavailable as exc:
        print(f"kafka unavailable: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later (the topics Job retries this one)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `router-stream tail ... | head -3`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
