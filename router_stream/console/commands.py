"""``router-stream send`` and ``router-stream tail``: the command-line side (options, output, exit codes).

:func:`register` adds both to the top-level subparsers. Importing this module is cheap (argparse
only): aiokafka and the config models load when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli_common import add_config_option
from ..errors import UsageError

#: the topics ``tail`` follows, as typed on the command line → the TopicsConfig field
TAIL_ROLES = {
    "responses": "responses",
    "audit": "audit",
    "dead-letters": "dead_letter",
    "requests": "requests",
}

SEND_EPILOG = """\
examples:
  router-stream send --config routing.yaml --prompt "What is Kafka?" --wait
  router-stream send --config routing.yaml --key cust-1 --tag legal --field lang=de --prompt "..."
  router-stream send --config routing.yaml --file requests.jsonl --wait --json
  echo '{"prompt": "hi"}' | router-stream send --bootstrap 127.0.0.1:9092 --file -

exit status: 0 sent (and, with --wait, every answer came without an error); 1 an answer reported an
error, or --timeout passed first; 2 bad input or config (nothing was sent); 75 Kafka unreachable."""

TAIL_EPILOG = """\
examples:
  router-stream tail responses --config routing.yaml                 follow new answers
  router-stream tail audit --config routing.yaml --request-id req-1 --from-beginning --max 1
  router-stream tail dead-letters --config routing.yaml --from-beginning --jsonl --timeout 5

exit status: 0 stopped (--max reached, --timeout passed, or Ctrl-C); 1 --timeout passed before --max
records; 2 bad usage or config; 75 Kafka unreachable."""


def register(sub: Any) -> None:
    s = sub.add_parser(
        "send",
        help="produce requests (from arguments, a JSONL file or stdin); --wait prints answers",
        description="Produce requests to the requests topic: one from --prompt, --messages or\n"
        "--request, or one per line of --file. Each is checked before anything is sent.",
        epilog=SEND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(
        s,
        required=False,
        help="routing config: Kafka settings and topic names (without it: "
        "127.0.0.1:9092 and the router.* topics, or ROUTER_STREAM_* env overrides)",
    )
    _kafka_opts(s, "requests")
    what = s.add_argument_group("the request (one of --prompt, --messages, --request, --file)")
    what.add_argument("--prompt", metavar="TEXT", help="the user prompt")
    what.add_argument(
        "--messages", metavar="JSON", help='chat messages, a JSON list: [{"role": "user", "content": "hi"}]'
    )
    what.add_argument(
        "--request", metavar="JSON", help="a whole request object as JSON, or @file.json (@- = stdin)"
    )
    what.add_argument(
        "--file",
        metavar="PATH",
        help="JSONL, one request object a line ('-' = stdin); a line without request_id gets a new uuid",
    )
    s.add_argument(
        "--request-id", metavar="ID", help="the request's id (default: a new uuid4; not with --file)"
    )
    s.add_argument(
        "--key",
        metavar="KEY",
        help="the record key: orders requests and scopes sticky decisions (default: none)",
    )
    s.add_argument("--tag", action="append", default=[], metavar="TAG", help="add a tag (repeatable)")
    s.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a routing field (repeatable); VALUE is JSON when it parses (3, true), else text",
    )
    s.add_argument("--deadline-ms", type=int, metavar="MS", help="the request's total time budget, in ms")
    s.add_argument(
        "--wait",
        action="store_true",
        help="wait for each answer on the responses topic (read_committed) and print it",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --wait: give up after this long (default: %(default)s)",
    )
    s.add_argument(
        "--json", action="store_true", help="print records as JSON lines instead of the short form"
    )
    s.set_defaults(func=_send)

    t = sub.add_parser(
        "tail",
        help="follow the responses, audit or dead-letter topic",
        description="Print the records of one of the router's topics as they come\n"
        "(read_committed, no consumer group: nothing is committed).",
        epilog=TAIL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "topic_role",
        choices=tuple(TAIL_ROLES),
        metavar="{" + ",".join(TAIL_ROLES) + "}",
        help="which topic: " + ", ".join(TAIL_ROLES),
    )
    add_config_option(
        t,
        required=False,
        help="routing config: Kafka settings and topic names (without it: "
        "127.0.0.1:9092 and the router.* topics, or ROUTER_STREAM_* env overrides)",
    )
    _kafka_opts(t, "chosen")
    t.add_argument("--jsonl", "--json", action="store_true", dest="jsonl", help="one JSON record per line")
    t.add_argument("--request-id", metavar="ID", help="only records of this request id")
    t.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record (default: new ones only)"
    )
    t.add_argument("--max", type=int, metavar="N", help="stop after N records")
    t.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long without a record")
    t.set_defaults(func=_tail)


def _kafka_opts(p: argparse.ArgumentParser, which: str) -> None:
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT[,...]", help="Kafka bootstrap servers (overrides the config's)"
    )
    p.add_argument(
        "--topic", metavar="NAME", help=f"the topic name (overrides the name of the {which} topic)"
    )


def _target(args: argparse.Namespace):
    from ..cli_common import load
    from .target import resolve

    config = load(args.config) if args.config else None
    return resolve(config, args.config, args.bootstrap)


def _read(value: str, what: str) -> bytes:
    if not value.startswith("@"):
        return value.encode("utf-8")
    try:
        if value == "@-":
            return sys.stdin.buffer.read()
        with open(value[1:], "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {value[1:]}: {exc.strerror}") from None


def _records(args: argparse.Namespace) -> list[Any]:
    from . import send as S

    extra = {"tags": args.tag, "fields": args.field, "deadline_ms": args.deadline_ms}
    key = args.key.encode("utf-8") if args.key is not None else None
    if args.file is not None:
        if args.prompt is not None or args.messages is not None or args.request is not None:
            raise UsageError("--file sends the file's requests; leave out --prompt/--messages/--request")
        if args.request_id is not None:
            raise UsageError("--request-id names one request; with --file put request_id in each line")
        if args.file == "-":
            requests = S.from_jsonl(sys.stdin, "<stdin>", request_id=None, **extra)
        else:
            try:
                with open(args.file, encoding="utf-8") as fh:
                    requests = S.from_jsonl(fh, args.file, request_id=None, **extra)
            except OSError as exc:
                raise UsageError(f"--file: cannot read {args.file}: {exc.strerror}") from None
    else:
        requests = [
            S.from_arguments(
                request_json=_read(args.request, "--request") if args.request is not None else None,
                prompt=args.prompt,
                messages_json=args.messages.encode("utf-8") if args.messages is not None else None,
                request_id=args.request_id,
                **extra,
            )
        ]
    return [S.Outgoing(key, r) for r in requests]


def _send(args: argparse.Namespace) -> int:
    from ..kafka_check import run_preflight
    from . import send as S
    from .render import is_error, jsonl, pretty

    try:
        records = _records(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = _target(args)
    if args.topic:
        target = type(target)(
            target.kafka, target.topics.model_copy(update={"requests": args.topic}), target.config_path
        )
    roles = {"requests": target.topics.requests}
    if args.wait:
        roles["responses"] = target.topics.responses
    partitions = run_preflight(target.kafka, roles, target.apply_hint())
    errors = 0
    note = sys.stderr if args.wait else sys.stdout

    def on_sent(record: Any, meta: Any) -> None:
        if args.json and not args.wait:
            import json

            print(
                json.dumps(
                    {
                        "request_id": record.request_id,
                        "topic": meta.topic,
                        "partition": meta.partition,
                        "offset": meta.offset,
                    }
                ),
                flush=True,
            )
        else:
            print(
                f"sent {record.request_id} -> {meta.topic}[{meta.partition}]@{meta.offset}",
                file=note,
                flush=True,
            )

    def on_answer(key: bytes | None, value: bytes, obj: dict[str, Any]) -> None:
        nonlocal errors
        errors += is_error(obj)
        print(jsonl(key, value, obj) if args.json else pretty("responses", key, value, obj), flush=True)

    try:
        S.run(
            target,
            records,
            wait=args.wait,
            timeout=args.timeout,
            on_sent=on_sent,
            on_answer=on_answer,
            response_partitions=partitions.get(target.topics.responses, 0),
        )
    except S.WaitTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if errors:
        print(f"error: {errors} of {len(records)} answer(s) reported an error", file=sys.stderr)
    return 1 if errors else 0


def _tail(args: argparse.Namespace) -> int:
    from ..kafka_check import run_preflight
    from .render import jsonl, pretty
    from .tail import run

    if args.max is not None and args.max < 1:
        print(f"error: --max must be a positive integer (got {args.max})", file=sys.stderr)
        return 2
    target = _target(args)
    field = TAIL_ROLES[args.topic_role]
    topic = args.topic or getattr(target.topics, field)
    partitions = run_preflight(target.kafka, {field: topic}, target.apply_hint())[topic]

    def emit(key: bytes | None, value: bytes | None, obj: dict[str, Any] | None) -> None:
        print(jsonl(key, value, obj) if args.jsonl else pretty(field, key, value, obj), flush=True)

    try:
        got = run(
            target,
            topic,
            partitions,
            emit,
            from_beginning=args.from_beginning,
            request_id=args.request_id,
            max_records=args.max,
            timeout=args.timeout,
        )
    except KeyboardInterrupt:
        return 0
    if args.max is not None and got < args.max:
        print(
            f"error: {got} of {args.max} record(s) on {topic} before --timeout {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    return 0
