"""What every strategy's config model is: :class:`StrategyConfigBase`, and what its ``build`` gets.

Each strategy module defines one config model deriving from :class:`StrategyConfigBase` (its
``type`` a ``Literal`` tag, its own fields) next to its strategy class, and
:mod:`router_stream.routing.registry` puts the models in the union the config file is read with.
The base holds what all of them share: unknown fields are errors, a ``name`` for the audit and
metrics, the per-strategy ``cache`` settings (:mod:`router_stream.routing.caching`), the
load-time checks (:meth:`~StrategyConfigBase.referenced_candidates`,
:meth:`~StrategyConfigBase.always_decides`) and one way to make the strategy:
``build(ctx: BuildContext)``.

Why a :class:`BuildContext` and not the whole :class:`~router_stream.config.RouterConfig`: the
config module imports the strategy configs (through the registry) to read the file, so a strategy
module that imported the config module back would close a circle. A strategy needs little of the
rest of the config when it is built: the candidates' names, prices and mode, and for the judge a
client to its candidate. :func:`router_stream.runtime.build_context` makes one from a
``RouterConfig``; tests make one directly (``BuildContext()`` knows no candidates).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..providers.base import ModelClient
from .base import Strategy
from .caching import StrategyCache


class CandidateTerms(Protocol):
    """What a strategy may read about a candidate when it is built.

    :class:`~router_stream.config.CandidateConfig` has all of it; read-only so that any object
    with these attributes (a test's dataclass) fits."""

    @property
    def price_input_per_1k(self) -> float: ...

    @property
    def price_output_per_1k(self) -> float: ...

    @property
    def mode(self) -> str: ...


#: opens a model client to the named candidate (the judge's); called on first use, not at build
ClientFactory = Callable[[str], ModelClient]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What :meth:`StrategyConfigBase.build` gets besides the strategy's own config.

    ``candidates`` are the configured candidates in config order (their names are what a strategy
    may pick); ``open_client`` makes a model client for a candidate, None where nothing may be
    called (then a strategy that needs one fails on first use, saying so)."""

    candidates: Mapping[str, CandidateTerms] = field(default_factory=dict)
    open_client: ClientFactory | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The candidate names, in config order."""
        return tuple(self.candidates)

    def prices(self) -> dict[str, tuple[float, float]]:
        """``name -> (USD per 1k input tokens, per 1k output tokens)`` of every candidate."""
        return {name: (c.price_input_per_1k, c.price_output_per_1k) for name, c in self.candidates.items()}

    def client(self, candidate: str) -> ModelClient:
        """A new model client to ``candidate``; ConfigError when this context cannot make one."""
        if candidate not in self.candidates:
            raise ConfigError(f"{candidate!r} is not a candidate (known: {', '.join(self.candidates)})")
        if self.open_client is None:
            raise ConfigError(
                f"no model client for {candidate!r}: this strategy was built without a way to call "
                "candidates (build it with router_stream.runtime.build_context(config))"
            )
        return self.open_client(candidate)


class StrategyConfigBase(BaseModel):
    """The fields and methods every ``strategies[i]`` entry has; one subclass per strategy type.

    A subclass sets ``type: Literal["its-tag"]`` and a ``name`` default (the tag), adds its own
    fields, overrides :meth:`referenced_candidates` when it names candidates, and implements
    :meth:`build`. Then it is listed in :mod:`router_stream.routing.registry`."""

    model_config = ConfigDict(extra="forbid")

    #: the discriminator: each subclass narrows it to a ``Literal`` tag
    type: str
    #: how the audit and metrics call the strategy; unique within a config
    name: str
    cache: StrategyCache | None = Field(
        None, description="this strategy's sticky-decision settings (routing/caching.py)"
    )

    def referenced_candidates(self) -> list[tuple[str, str]]:
        """``(path suffix, candidate name)`` for every candidate the config names, checked at
        load (``.rules[2].then``, ``'smart'``); none by default."""
        return []

    def always_decides(self) -> str | None:
        """Why no request gets past this strategy, or None (the default: it may abstain). Used to
        warn about strategies placed after it, which never run."""
        return None

    @abstractmethod
    def build(self, ctx: BuildContext) -> Strategy:
        """The strategy this config describes, ready to ``decide``. Raises ConfigError (or
        ValueError) when it cannot be made; :func:`router_stream.runtime.build_pipeline` names
        the ``strategies[i]`` entry in the message."""
