"""The featurizer seam: what every featurizer offers, and the check that a stored spec fits a class.

Kept apart from the registry so that featurizers which rebuild nested ones (the group and
subject priors) can check those specs without importing the registry, which imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Featurizer(Protocol):
    """Text -> features. ``spec()`` and ``arrays()`` are what the artifact stores to rebuild it."""

    name: str
    version: int

    @property
    def dim(self) -> int: ...

    def transform(self, texts: Sequence[str]) -> Any: ...  # ndarray or scipy.sparse matrix

    def spec(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


def check_spec(spec: Any, kind: Any) -> None:
    """Raise ValueError unless ``spec`` describes featurizer class ``kind`` at this code's version.

    ``kind`` is a featurizer class (its ``name`` and ``version`` attributes). The message says
    what to do: an artifact from another router-stream version must be retrained.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"the {kind.name!r} featurizer's spec is not a mapping; retrain the artifact")
    name, version = spec.get("name"), spec.get("version")
    if name != kind.name:
        raise ValueError(f"featurizer {name!r} stands where {kind.name!r} belongs; retrain the artifact")
    if version != kind.version:
        raise ValueError(
            f"featurizer {name!r} is version {version} in the artifact but version {kind.version} "
            "in this router-stream; retrain the artifact with `router-stream train`"
        )
