"""The ``router-stream`` command.

    router-stream run --config routing.yaml          run a worker (a Faust worker process)
    router-stream topics apply --config routing.yaml create missing topics, report differences
    router-stream check-config routing.yaml          validate a config file (and build its strategies)
    router-stream explain --config c.yaml --request '{...}'   what routing would decide, no model call
    router-stream demo                               the embedded demo (local broker, models, traffic)
    router-stream model-server --name cheap          a loopback dev/test model endpoint
    router-stream train | calibrate | eval           the learned router
    router-stream state get|evict --config c.yaml --key K   inspect or evict one key's state
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import RouterConfig, load_config
from .errors import ConfigError, KafkaUnavailable


def _warn_unset_secrets(config: RouterConfig) -> None:
    for path, var in config.unset_secret_envs():
        print(f"warning: {path}: environment variable {var} is not set; calls that need it will go "
              "without it", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from .runtime import build_pipeline
    config = load_config(args.config)
    _warn_unset_secrets(config)
    # built before Kafka, so a missing artifact or a failing custom strategy is a config error
    # (exit 2) rather than a traceback inside Faust; the worker then uses this very pipeline
    pipeline = build_pipeline(config)
    from .app import run_worker
    run_worker(config, loglevel=args.loglevel, pipeline=pipeline)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from .topics import apply_topics, load_spec
    config = load_config(args.config)
    specs = load_spec(args.spec, config, partitions=args.partitions)
    try:
        report = asyncio.run(apply_topics(config, specs))
    except _kafka_refused() as exc:  # credentials or ACLs: retrying cannot help
        raise ConfigError(f"kafka: the broker refused us ({type(exc).__name__}: {exc}); check the SASL "
                          "settings and the ACLs (docs/operations.md)") from None
    except (KafkaError, TimeoutError, OSError) as exc:  # a broker problem, not ours: retry later
        raise KafkaUnavailable(f"topics apply failed talking to Kafka: {type(exc).__name__}: {exc}") from None
    for line in report:
        print(line)
    return 1 if any(line.startswith("ERROR") for line in report) else 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .kafka_settings import client_settings
    from .runtime import check_pipeline
    config = load_config(args.config)
    client_settings(config.kafka)  # SASL/TLS settings complete (names kafka.<field> otherwise)
    _warn_unset_secrets(config)
    check_pipeline(config)  # load artifacts, construct custom strategies: what the worker does at start
    print(f"ok: {len(config.candidates)} candidates ({', '.join(config.candidates)}), "
          f"{len(config.strategies)} strategies, default {config.default!r}")
    return 0


def _kafka_refused() -> tuple[type[BaseException], ...]:
    from aiokafka import errors as e
    return (e.AuthenticationFailedError, e.SaslAuthenticationFailed, e.UnsupportedSaslMechanismError,
            e.TopicAuthorizationFailedError, e.ClusterAuthorizationFailedError, e.GroupAuthorizationFailedError,
            e.TransactionalIdAuthorizationFailed)


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
    import json

    from .explain import explain, parse_sticky
    from .schemas import now_ms
    config = load_config(args.config)
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
                raise ValueError('--headers: expected a JSON object of strings, e.g. {"traceparent": "00-..."}')
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(explain(config, request_bytes, key=args.key, headers=headers, with_io=args.with_io,
                                 sticky=sticky))
    print(result.to_json() if args.json else result.table())
    return result.exit_code


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
    apply.add_argument("--spec", default=None, help="topics spec YAML (default: a built-in dev spec: 12 partitions, "
                       "rf 1, compacted changelog; production: topics/topics.yaml, rf 3 with retention settings)")
    apply.add_argument("--partitions", type=int, default=None, help="override the partition count")
    apply.set_defaults(func=_cmd_topics)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(func=_cmd_check)

    ex = sub.add_parser("explain", help="show each strategy's verdict and the final choice for one request "
                                        "(no model call, no Kafka)")
    ex.add_argument("--config", required=True)
    ex.add_argument("--request", required=True, help="the request JSON, or @file.json (@- = stdin)")
    ex.add_argument("--key", default=None, help="the Kafka key of the record (default: none)")
    ex.add_argument("--headers", default=None, help='record headers as a JSON object, or @file.json '
                                                    '(strategies see only trace headers, as in the worker)')
    ex.add_argument("--with-io", action="store_true",
                    help="also run judge and scorer strategies: calls the judge's model and the scorer's URL "
                         "(default: they abstain, 'not run'; no candidate serves the request either way)")
    ex.add_argument("--sticky", default=None, metavar="STRATEGY=CANDIDATE",
                    help="the key's sticky decision, as the worker would hold it (e.g. learned=cheap): shows "
                         "whether it applies or an earlier strategy decides first")
    ex.add_argument("--no-io", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    ex.set_defaults(func=_cmd_explain)

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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KafkaUnavailable as exc:
        print(f"kafka unavailable: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later (the topics Job retries this one)


if __name__ == "__main__":
    sys.exit(main())
