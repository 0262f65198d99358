"""The one error tree of router-stream.

Every exception router-stream raises on purpose derives from :class:`RouterStreamError`; callers
catch the level they care about (``except ConfigError``, ``except ModelError``...)::

    RouterStreamError          the root: catch it to catch anything router-stream raises on purpose
    ├── ConfigError            bad YAML / env; the message names the field path and the bad value
    │   ├── SetupError         Kafka lacks what the command needs; names the command that fixes it
    │   │   └── TopicMissing       a topic the command reads does not exist (``topics apply``)
    │   ├── DuplicateKeyError      a YAML mapping names one key twice (both line numbers)
    │   └── ExpressionError        a ``when`` / scope expression that does not compile
    ├── UsageError             command-line arguments that do not fit together (the CLI exits 2)
    ├── ArtifactError          a learned-router artifact missing, unreadable or of another version
    ├── KafkaUnavailable       the brokers cannot be reached: retry later (the CLI exits 75)
    ├── WaitTimeout            ``send --wait``: not every answer came within ``--timeout``
    ├── RoutingMiss            a strategy named something that is not a candidate
    ├── ModelError             a model call failed (after retries, if any)
    │   ├── RetryableModelError    timeouts, connection errors, 408/409/429, 5xx, malformed bodies
    │   │   └── BatchParseError        a micro-batched answer without usable structure
    │   └── FatalModelError        other 4xx: retrying cannot help
    │       └── Unsupported            a request the candidate's API cannot take (names the field)
    └── FatalProcessorError    the worker cannot continue safely and stops (to be restarted)

The dev package of the repository (``router_stream_dev``: local broker, emulators; not in the
wheel) derives its errors from :class:`RouterStreamError` too: ``JavaNotFoundError``,
``FetchError``, ``LocalKafkaError``, ``RealLLMError``.

Classes defined elsewhere (``TopicMissing`` in :mod:`router_stream.state.changelog`, ...) live
beside the code that raises them and derive from a class here; :mod:`router_stream` exports the
ones a user meets. Those that derived from a built-in before (``ValueError``, ``RuntimeError``,
``LookupError``, ``yaml.YAMLError``) still do, so code catching the built-in keeps working.

A bad record is not an exception: the intake returns a ``Poison`` value with a machine-readable
reason, and the record goes to the dead-letter topic with ``error_class: "PoisonRecord"`` (a
label kept for readers of dead letters, docs/dead-letters.md). Private exceptions (``_Skip``,
``_AllGone``...) are control flow inside one module and never leave it.

Messages never contain API keys: provider code builds them from status codes and error classes,
not from request headers.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FatalModelError",
    "KafkaUnavailable",
    "ModelError",
    "RetryableModelError",
    "RouterStreamError",
    "RoutingMiss",
    "SetupError",
    "UsageError",
]


class RouterStreamError(Exception):
    """Base class of every error raised on purpose by router-stream (the CLI prints its message
    on one line instead of a traceback)."""


class ConfigError(RouterStreamError):
    """The configuration cannot be used; the message says which field and what to change."""


class SetupError(ConfigError):
    """Kafka answers but is not set up for this command (e.g. a topic is missing); the message
    names what to run (``router-stream topics apply``). Fails the same way until someone does."""


class UsageError(RouterStreamError, ValueError):
    """Command-line arguments or input files that do not fit together or with the config; the
    message names the option. The commands print it and exit 2."""


class KafkaUnavailable(RouterStreamError):
    """The brokers could not be reached: worth retrying later (the CLI exits 75, EX_TEMPFAIL),
    unlike a config error (exit 2), which fails the same way every time."""


class RoutingMiss(RouterStreamError):
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
