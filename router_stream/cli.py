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

# This module is the parser and main(); the handlers are in router_stream.cli_commands (and in
# console/, state_cli, learning/offline_commands for their groups).

from __future__ import annotations

import argparse
import sys

from .cli_commands import cmd_check, cmd_demo, cmd_explain, cmd_model_server, cmd_run, cmd_topics
from .cli_common import add_config_option, resolve_config
from .errors import ConfigError, KafkaUnavailable, RouterStreamError, SetupError

EXIT_CODES = """\
exit status:
  0   ok
  1   failure (e.g. topics apply reported an ERROR line, send --wait got an error answer or timed out)
  2   usage or config error (the message names the field or option; also Kafka refusing our
      credentials, and a missing topic: run `router-stream topics apply`)
  75  Kafka unavailable: try again later (EX_TEMPFAIL)"""

LOGLEVELS = ("debug", "info", "warning", "error", "critical")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("router-stream")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


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
    run.set_defaults(func=cmd_run)

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
    apply.set_defaults(func=cmd_topics)

    check = sub.add_parser("check-config", help="validate a config file (and build its strategies)")
    add_config_option(check)
    check.set_defaults(func=cmd_check)

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
    ex.set_defaults(func=cmd_explain)

    from .console.commands import register as register_console

    register_console(sub)

    demo = sub.add_parser(
        "demo", help="run the embedded demo and print a summary (needs the repository's dev package)"
    )
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
    demo.set_defaults(func=cmd_demo)

    ms = sub.add_parser(
        "model-server",
        help="run a loopback dev/test model endpoint (OpenAI chat completions; needs the dev package)",
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
    ms.set_defaults(func=cmd_model_server)

    from .state_cli import register as register_state

    register_state(sub)  # state get / state evict

    try:
        from .learning.offline_commands import register
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
    except RouterStreamError as exc:  # any other error raised on purpose: its message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `router-stream tail ... | head -3`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
