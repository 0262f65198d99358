"""What ``state get``, ``state evict`` and ``state reset-budget`` share: which key and partition a
command names, and running its Kafka I/O so failures become the CLI's error levels.

Kept apart from the commands so :mod:`.state_cli_get` and :mod:`.state_cli_control` use one
reading of ``--key`` / ``--scope-value`` / ``--kafka-key`` and one mapping of Kafka failures
(refused: a config problem, exit 2; unavailable: try again later, exit 75).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, KafkaUnavailable, UsageError

if TYPE_CHECKING:  # the config (pydantic) is imported when a command runs, not for --help
    from .config import RouterConfig

EXIT_NOT_FOUND = 1


def target(config: RouterConfig, args: argparse.Namespace) -> tuple[str, bytes | None]:
    """(scope key, Kafka key that places it or None = look on every partition)."""
    scope = config.cache.scope
    if args.key is not None:
        if args.kafka_key is not None:
            raise UsageError("--kafka-key goes with --scope-value; with --key the Kafka key is K itself")
        return args.key, args.key.encode("utf-8")
    if scope == "key":
        raise UsageError(
            "cache.scope is 'key': the scope key is the Kafka key; use --key K (--scope-value is "
            "for cache.scope field or expression)"
        )
    return args.scope_value, args.kafka_key.encode("utf-8") if args.kafka_key is not None else None


def _kafka_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(refused: credentials or ACLs, a config problem; unavailable: worth retrying)."""
    from aiokafka import errors as e

    refused = (
        e.AuthenticationFailedError,
        e.SaslAuthenticationFailed,
        e.UnsupportedSaslMechanismError,
        e.TopicAuthorizationFailedError,
        e.ClusterAuthorizationFailedError,
        e.GroupAuthorizationFailedError,
    )
    return refused, (e.KafkaError, OSError, TimeoutError, asyncio.TimeoutError)


def run_kafka(config: RouterConfig, coro: Any) -> Any:
    """Run a Kafka coroutine; its failures become ConfigError (refused) or KafkaUnavailable."""
    from .state.changelog import TopicMissing

    refused, unavailable = _kafka_errors()
    try:
        return asyncio.run(coro)
    except TopicMissing as exc:
        raise ConfigError(str(exc)) from None
    except refused as exc:
        raise ConfigError(
            f"kafka: the broker refused us ({type(exc).__name__}); check the SASL settings and the "
            "ACLs (docs/operations.md)"
        ) from None
    except unavailable as exc:
        raise KafkaUnavailable(
            f"cannot talk to Kafka at {config.kafka.bootstrap_servers} "
            f"({type(exc).__name__}: {exc}); is the broker up?"
        ) from None
