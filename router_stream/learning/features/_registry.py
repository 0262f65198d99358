"""Featurizers by name: the check and rebuild of a stored spec, and :class:`ConcatFeaturizer`.

The artifact stores a featurizer as its ``spec()`` (a name, a version, parameters) plus its
``arrays()``; only the *names* below are stored, never module paths, so featurizers may move
between modules without breaking saved artifacts. The concatenation lives here because its
parts are rebuilt by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import check_spec
from ._embed import StaticEmbedFeaturizer
from ._priors import GroupPriorFeaturizer, SubjectPriorFeaturizer
from ._shape import ShapeFeaturizer
from ._tfidf import TfidfFeaturizer


class ConcatFeaturizer:
    """Several featurizers side by side, each block scaled by a weight (sparse result)."""

    version = 1

    def __init__(self, parts: Sequence[Any], weights: Sequence[float]) -> None:
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]
        self.name = "+".join(p.name for p in self.parts)

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def transform(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        return sp.hstack(
            [sp.csr_matrix(p.transform(texts) * w) for p, w in zip(self.parts, self.weights)]
        ).tocsr()

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        idx_parts, val_parts = [], []
        offset = 0
        for p, w in zip(self.parts, self.weights):
            if hasattr(p, "sparse_one"):
                idx, val = p.sparse_one(text)
            else:
                val = p.transform([text])[0]
                idx = np.arange(p.dim)
            idx_parts.append(idx + offset)
            val_parts.append(val * w)
            offset += p.dim
        return np.concatenate(idx_parts), np.concatenate(val_parts).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weights": self.weights,
            "parts": [p.spec() for p in self.parts],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for p in self.parts:
            out.update(p.arrays())
        return out

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> ConcatFeaturizer:
        return cls([build_featurizer(s, arrays) for s in spec["parts"]], spec["weights"])


_KINDS: dict[str, Any] = {
    TfidfFeaturizer.name: TfidfFeaturizer,
    StaticEmbedFeaturizer.name: StaticEmbedFeaturizer,
    GroupPriorFeaturizer.name: GroupPriorFeaturizer,
    SubjectPriorFeaturizer.name: SubjectPriorFeaturizer,
    ShapeFeaturizer.name: ShapeFeaturizer,
}


def check_featurizer(spec: dict[str, Any]) -> None:
    """Raise ValueError unless this code can rebuild the featurizer ``spec`` describes."""
    name, version = spec.get("name"), spec.get("version")
    if "parts" in spec:
        if version != ConcatFeaturizer.version:
            raise ValueError(
                f"featurizer {name!r} version {version}, this code has {ConcatFeaturizer.version}"
            )
        for part in spec["parts"]:
            check_featurizer(part)
        return
    kind = _KINDS.get(str(name))
    if kind is None:
        raise ValueError(
            f"unknown featurizer {name!r} (known: {', '.join(sorted(_KINDS))}); retrain the artifact"
        )
    check_spec(spec, kind)
    for sub in ("tfidf", "embed"):  # nested featurizers (group-prior, tfidf+subject-prior)
        if isinstance(spec.get(sub), dict):
            check_featurizer(spec[sub])


def build_featurizer(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    check_featurizer(spec)
    if "parts" in spec:
        return ConcatFeaturizer.from_artifact(spec, arrays)
    return _KINDS[spec["name"]].from_artifact(spec, arrays)
