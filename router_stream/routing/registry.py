"""The registry of strategy types: which config model reads a ``strategies[i]`` entry, by ``type``.

Each strategy module defines its config model (a
:class:`~router_stream.routing.strategy_config.StrategyConfigBase` with a ``Literal`` ``type``)
next to its strategy class; this module is the one place that lists them, as the pydantic
discriminated union :data:`StrategyConfig` that :class:`~router_stream.config.RouterConfig` reads
``strategies`` with (so an error names the field: ``strategies[2].rules[0].then: ...``).

The dependencies run one way: :mod:`router_stream.config` → this registry → the strategy modules
→ :mod:`~router_stream.routing.strategy_config` and the routing basics. No strategy module
imports the config module: what a strategy needs of the rest of the config when it is built
arrives in a :class:`~router_stream.routing.strategy_config.BuildContext`.

To add a strategy type, import its config class and add it to the union (one per line). A user's
own strategy needs no entry here: ``type: custom`` names its class (:mod:`.custom`).
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from .cascade import CascadeConfig
from .custom import CustomConfig
from .judge import JudgeConfig
from .keywords import KeywordsConfig
from .learned import LearnedConfig
from .optimize import OptimizeConfig
from .rules import RulesConfig
from .scorer import ScorerConfig
from .split import SplitConfig
from .strategy_config import StrategyConfigBase

StrategyConfig = Annotated[
    RulesConfig
    | KeywordsConfig
    | SplitConfig
    | JudgeConfig
    | ScorerConfig
    | LearnedConfig
    | CascadeConfig
    | OptimizeConfig
    | CustomConfig,
    Field(discriminator="type"),
]

#: the registered config classes, in the union's order
STRATEGY_CONFIGS: tuple[type[StrategyConfigBase], ...] = get_args(get_args(StrategyConfig)[0])
