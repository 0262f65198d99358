"""The one error tree of router-stream.

Callers catch the level they care about::

    RouterStreamError
    ├── ConfigError            bad YAML / env; the message names the field path and the bad value
    │   └── SetupError         Kafka lacks what the command needs (a topic): names the command that fixes it
    ├── KafkaUnavailable       the brokers cannot be reached: retry later
    ├── RoutingError
    │   └── RoutingMiss        a strategy named something that is not a candidate
    ├── ModelError             a model call failed (after retries, if any)
    │   ├── RetryableModelError     timeouts, connection errors, 408/409/429, 5xx, malformed bodies
    │   └── FatalModelError         other 4xx: retrying cannot help
    └── PoisonRecord           a record that cannot be turned into a request (goes to dead letters)

Messages never contain API keys: provider code builds them from status codes and error classes,
not from request headers.
"""

from __future__ import annotations


class RouterStreamError(Exception):
    """Base class of every error raised on purpose by router-stream."""


class ConfigError(RouterStreamError):
    """The configuration cannot be used; the message says which field and what to change."""


class SetupError(ConfigError):
    """Kafka answers but is not set up for this command (e.g. a topic is missing); the message
    names what to run (``router-stream topics apply``). Fails the same way until someone does."""


class KafkaUnavailable(RouterStreamError):
    """The brokers could not be reached: worth retrying later (the CLI exits 75, EX_TEMPFAIL),
    unlike a config error (exit 2), which fails the same way every time."""


class RoutingError(RouterStreamError):
    """Routing could not produce a usable candidate."""


class RoutingMiss(RoutingError):
    """A strategy decided on a name that is not a configured candidate."""


class ModelError(RouterStreamError):
    """A model call failed. ``kind`` is a short machine-readable class (e.g. ``timeout``)."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class RetryableModelError(ModelError):
    """Worth another attempt: timeouts, connection resets, 408/409/429, 5xx, garbage bodies."""

    retryable = True


class FatalModelError(ModelError):
    """Not worth another attempt on the same candidate (e.g. 400, 401, 404)."""


class PoisonRecord(RouterStreamError):
    """A consumed record that cannot become a request. ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
