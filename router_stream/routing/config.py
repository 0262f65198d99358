"""The strategy section of the config: one pydantic model per strategy type, by ``type``.

Each strategy module defines its config model (with ``type`` as discriminator,
``referenced_candidates()`` for load-time checks and ``build(router_config=None)``, which gets the
whole :class:`~router_stream.config.RouterConfig` so a strategy can reach candidate endpoints)
next to its strategy class; this module only assembles the union. To add a strategy, import its
config class and add it to the list below (one per line).
"""

from __future__ import annotations

from typing import Annotated

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
