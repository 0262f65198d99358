"""``router-stream state get`` / ``state evict``: inspect and steer one key's state through Kafka.

Why through Kafka and not a worker's API: ``get`` reads the committed changelog
(:mod:`.state.changelog`), so it answers with no worker running, during a rebalance, and after a
restart; ``evict`` produces a control record (:mod:`.processing.control`) to the partition
that owns the key, applied by its owner in that partition's transaction, exactly once and in
order with the key's requests.

Which key: ``--key K`` is a Kafka record key. It picks the partition (the default partitioner)
and is the scope key itself with ``cache.scope: key`` (and for requests without a usable
field/expression value under the other scopes). ``--scope-value V`` is a ``cache.scope: field``
or ``expression`` value: such a value's requests may arrive on any partition, and each partition
keeps its own entry for it, so ``V`` is looked up (or evicted) on every partition unless
``--kafka-key`` or ``--partition`` names one.

Exit codes: 0 done (``get``: state found; ``evict``: applied, or confirmed there was nothing to
evict), 1 ``get``: no state for the key / ``evict``: a worker refused it (a dead letter: wrong
secret, control disabled) or none confirmed within ``--wait`` (the record stays in Kafka and is
applied when a worker reads it), 2 usage or config, 75 Kafka unavailable (try again later).

The commands live in :mod:`.state_cli_get` (``get``) and :mod:`.state_cli_control` (``evict``,
``reset-budget``); this module only builds their parsers, and imports them without the config
models, so ``--help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from .state_cli_control import send_control
from .state_cli_get import get_command

# ------------------------------------------------------------------ registration
_STATE_HELP = """\
get    reads the key's state from the committed changelog: works with no worker running.
evict  produces a control record to the partition owning the key; its worker applies it in the
       partition's transaction (exactly once, ordered with the key's requests). Needs
       control.secret_env in the config and that env var set to the workers' secret.
reset-budget  the same way, sets the scope's budget spend in the current window to zero.

Exit codes: 0 done (get: found; evict: every partition applied it or had nothing to evict), 1 get:
no state / evict: a partition refused it (dead letter) or did not answer within --wait, 2 usage or
config, 75 Kafka unavailable.
See docs/operations.md, "Inspect and evict a key's state".
"""
_TARGET_HELP = (
    "--key K: a Kafka record key; it picks the partition (default partitioner, murmur2) and is the "
    "scope key with cache.scope key. --scope-value V: a cache.scope field/expression value; its "
    "requests may arrive on any partition and each keeps its own entry, so V is looked up on all "
    "partitions unless --kafka-key (the records' Kafka key) or --partition names one."
)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        metavar="PATH",
        help="the routing config (Kafka settings, topics, cache scope)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the Kafka key (= the scope key with cache.scope key)")
    which.add_argument(
        "--scope-value",
        help="the value of cache.scope_field / scope_expression (field and expression scopes)",
    )
    p.add_argument(
        "--kafka-key", help="with --scope-value: the Kafka key its records carry (picks one partition)"
    )
    p.add_argument(
        "--partition",
        type=int,
        help="this requests/changelog partition (for producers whose "
        "partitioner is not murmur2, e.g. librdkafka's default crc32)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _control_args(p: argparse.ArgumentParser) -> None:
    """What every command sent as a control record takes (``evict``, ``reset-budget``)."""
    _target_args(p)
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the owning worker's audit record (0: do not wait)",
    )
    p.set_defaults(func=send_control)


def register(sub: Any) -> None:
    """Add ``state get``, ``state evict`` and ``state reset-budget`` to the ``router-stream`` parser."""
    state = sub.add_parser(
        "state",
        help="inspect or evict one key's committed state (sticky decision, requests)",
        description=_STATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = state.add_subparsers(dest="action", required=True)
    get = ssub.add_parser(
        "get",
        help="the key's sticky decision, request count and recent request ids, read "
        "from the committed changelog (no worker needed)",
        description=_TARGET_HELP,
    )
    _target_args(get)
    get.set_defaults(func=get_command)
    ev = ssub.add_parser(
        "evict",
        help="drop the key's sticky decision, through a control record applied by the "
        "owning worker in its transaction (needs control.secret_env)",
        description=_TARGET_HELP,
    )
    _control_args(ev)
    ev.add_argument("--strategy", help="evict only if the sticky decision was made by this strategy")
    rb = ssub.add_parser(
        "reset-budget",
        help="set the scope's spend in the current window to zero (reservations "
        "in flight stay), through a control record like evict",
        description=_TARGET_HELP,
    )
    _control_args(rb)
    rb.add_argument("--budget", help="reset only this budget (default: every budget of the config)")
