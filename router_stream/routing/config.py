"""The strategy section of the config: one pydantic model per strategy type, by ``type``.

Each strategy module defines its config model (with ``type`` as discriminator,
``referenced_candidates()`` for load-time checks and ``build()``) next to its strategy class;
this module only assembles the union.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .rules import RulesConfig

StrategyConfig = Annotated[Union[RulesConfig], Field(discriminator="type")]
