"""router-stream: per-record model routing inside a Kafka stream, exactly once.

The public surface is what this module exports (``__all__``); import from here::

    from router_stream import Decision, Request, RoutingContext, Strategy

- the records on the topics: :class:`Request` (and its :class:`Message`), :class:`Response`
  (:class:`Usage`), :class:`Audit` (:class:`Attempt`, :class:`Verdict`), :class:`DeadLetter`;
- what a strategy is made of: :class:`Strategy` (the protocol), :class:`Decision`,
  :class:`RoutingContext` (docs/strategies.md, "custom");
- the configuration: :class:`RouterConfig`, :func:`load_config` (a YAML file plus the
  environment), :func:`parse_config` (an already-parsed mapping);
- the error tree's levels a caller catches (:class:`RouterStreamError` and below; the whole tree
  is drawn in :mod:`router_stream.errors`).

Every other module is internal: its names may change between releases without notice. Modules
say so in their own docstring or ``__all__``; the ``router-stream`` command is the other
supported entry point.

The records and the config pull in pydantic (about a second for the config models), and the
``router-stream`` command imports this package before it knows what it will run, so those names
load on first use (PEP 562 ``__getattr__``); the errors cost nothing and are imported at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    FatalModelError,
    KafkaUnavailable,
    ModelError,
    RetryableModelError,
    RouterStreamError,
    RoutingMiss,
    SetupError,
    UsageError,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .config import RouterConfig, load_config, parse_config
    from .routing.base import Decision, RoutingContext, Strategy
    from .schemas import (
        SCHEMA_VERSION,
        Attempt,
        Audit,
        DeadLetter,
        Message,
        Request,
        Response,
        Usage,
        Verdict,
    )

__version__ = "0.1.0"

#: public name -> the internal module that defines it, imported on first access
_LAZY = {
    "SCHEMA_VERSION": "schemas",
    "Attempt": "schemas",
    "Audit": "schemas",
    "DeadLetter": "schemas",
    "Message": "schemas",
    "Request": "schemas",
    "Response": "schemas",
    "Usage": "schemas",
    "Verdict": "schemas",
    "Decision": "routing.base",
    "RoutingContext": "routing.base",
    "Strategy": "routing.base",
    "RouterConfig": "config",
    "load_config": "config",
    "parse_config": "config",
}

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "Audit",
    "ConfigError",
    "DeadLetter",
    "Decision",
    "FatalModelError",
    "KafkaUnavailable",
    "Message",
    "ModelError",
    "Request",
    "Response",
    "RetryableModelError",
    "RouterConfig",
    "RouterStreamError",
    "RoutingContext",
    "RoutingMiss",
    "SetupError",
    "Strategy",
    "Usage",
    "UsageError",
    "Verdict",
    "__version__",
    "load_config",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'router_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
