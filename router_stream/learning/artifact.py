"""The learned router's model artifact: one versioned ``.npz`` file, no pickle.

Layout (``numpy.savez_compressed``, read back with ``allow_pickle=False``):

- ``__meta__``: UTF-8 JSON as a uint8 array — ``format``, ``format_version``, ``kind``
  (``two-model`` or ``multi-model``), ``featurizer`` (id + parameters), ``models`` (dataset
  model names, one per output row), ``weak``/``strong`` (two-model), ``costs`` (mean USD per
  call, multi-model), ``threshold``, ``abstain_band``, ``calibration``, ``metrics``,
  ``trained_on``;
- ``model/coef`` [k, d] and ``model/intercept`` [k]: a linear model over the features
  (k = 1 for two-model: P(strong needed); k = one per model for multi-model: P(model succeeds));
- ``feat/...``: the featurizer's own arrays (vocabulary, idf, token vectors...).

Every array is plain numbers or fixed-width unicode, so loading runs no code from the file.
A file with another format version, or a featurizer this code does not know (or knows at
another version), is refused with an :class:`ArtifactError` saying which and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RouterStreamError

FORMAT = "router-stream/learned-router"
FORMAT_VERSION = 1

#: The artifact shipped in the package (two-model, trained on the RouteLLM MMLU rows).
DEFAULT_ARTIFACT_NAME = "learned-router-mmlu.npz"


class ArtifactError(RouterStreamError, ValueError):
    """The artifact file is missing, unreadable, or of a version / featurizer we do not speak."""


_DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # router_stream/data (package data)


def default_artifact_path() -> Path:
    return _DATA_DIR / DEFAULT_ARTIFACT_NAME


def resolve_artifact_path(path: str | Path | None) -> Path:
    """``None``, ``""`` or ``"default"`` mean the packaged artifact; ``pkg:NAME`` a packaged file."""
    if path is None or str(path) in ("", "default"):
        return default_artifact_path()
    text = str(path)
    if text.startswith("pkg:"):
        return _DATA_DIR / text[4:]
    return Path(text).expanduser()


@dataclass
class Artifact:
    meta: dict[str, Any]
    coef: np.ndarray
    intercept: np.ndarray
    feature_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def models(self) -> list[str]:
        return list(self.meta["models"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def abstain_band(self) -> float:
        return float(self.meta.get("abstain_band", 0.0))

    @property
    def featurizer_id(self) -> str:
        spec = self.meta["featurizer"]
        return f"{spec['name']}/v{spec['version']}"

    def digest(self) -> str:
        """A short content hash of the weights (for audit details and logs)."""
        h = hashlib.blake2b(digest_size=6)
        h.update(self.coef.tobytes())
        h.update(self.intercept.tobytes())
        return h.hexdigest()


def save(artifact: Artifact, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(artifact.meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    arrays: dict[str, np.ndarray] = {
        "__meta__": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
        "model/coef": np.asarray(artifact.coef, dtype=np.float32),
        "model/intercept": np.asarray(artifact.intercept, dtype=np.float32),
    }
    for name, arr in artifact.feature_arrays.items():
        arr = np.asarray(arr)
        if arr.dtype == object:
            raise ArtifactError(f"feature array {name!r} has dtype object; it would need pickle")
        arrays[f"feat/{name}"] = arr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub also matches **arrays to allow_pickle: bool
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    artifact.meta = meta
    artifact.path = path
    return path


def load(path: str | Path | None = None) -> Artifact:
    """Read and check an artifact; ``None`` reads the packaged default."""
    from .features import check_featurizer  # late: features imports nothing from here

    p = resolve_artifact_path(path)
    if not p.exists():
        raise ArtifactError(f"learned-router artifact not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled content), OSError
        raise ArtifactError(f"{p}: not a learned-router artifact ({type(exc).__name__}: {exc})") from None
    if "__meta__" not in arrays:
        raise ArtifactError(f"{p}: not a learned-router artifact (no __meta__ entry)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except ValueError as exc:
        raise ArtifactError(f"{p}: unreadable metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{p}: format {meta.get('format')!r} is not {FORMAT!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{p}: artifact format version {version} but this router-stream reads version "
            f"{FORMAT_VERSION}; retrain it with `router-stream train` from this version"
        )
    for key in ("kind", "featurizer", "models", "threshold"):
        if key not in meta:
            raise ArtifactError(f"{p}: metadata lacks {key!r}")
    if meta["kind"] not in ("two-model", "multi-model"):
        raise ArtifactError(f"{p}: unknown kind {meta['kind']!r}")
    try:
        check_featurizer(meta["featurizer"])
    except ValueError as exc:
        raise ArtifactError(f"{p}: {exc}") from None
    coef = arrays.pop("model/coef", None)
    intercept = arrays.pop("model/intercept", None)
    if coef is None or intercept is None or coef.ndim != 2 or intercept.shape != (coef.shape[0],):
        raise ArtifactError(f"{p}: model weights missing or misshapen")
    rows = len(meta.get("classes", [])) if meta["kind"] == "two-model" else len(meta["models"])
    if coef.shape[0] != rows:
        raise ArtifactError(f"{p}: {coef.shape[0]} output rows do not match kind {meta['kind']}")
    feats = {k[len("feat/") :]: v for k, v in arrays.items() if k.startswith("feat/")}
    return Artifact(meta=meta, coef=coef, intercept=intercept, feature_arrays=feats, path=p)


class LearnedRouter:
    """An artifact made usable: featurizer rebuilt, scores and choices computed.

    Two-model: :meth:`scores` is the expected quality gain of the strong model,
    P(strong right, weak wrong) − P(weak right, strong wrong), in [-1, 1]; send to strong when
    the score is at or above the threshold. Multi-model: :meth:`probabilities` is each model's
    P(success); :meth:`choose` picks the cheapest model whose P(success) reaches the threshold
    (the most likely one when none does).
    """

    def __init__(self, artifact: Artifact) -> None:
        from .features import build_featurizer

        self.artifact = artifact
        self.featurizer = build_featurizer(artifact.meta["featurizer"], artifact.feature_arrays)
        if self.featurizer.dim != artifact.coef.shape[1]:
            raise ArtifactError(
                f"{artifact.path}: featurizer gives {self.featurizer.dim} features but the model expects {artifact.coef.shape[1]}"
            )
        self._w = np.ascontiguousarray(artifact.coef.T.astype(np.float32))
        self._b = artifact.intercept.astype(np.float32)
        self.kind = artifact.kind
        self.models = artifact.models
        self.classes = [int(c) for c in artifact.meta.get("classes", [])]
        costs = artifact.meta.get("costs") or {}
        self.costs = np.array([float(costs.get(m, 0.0)) for m in self.models])

    def logits(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:  # the serving path: skip sparse-matrix machinery
            sparse_one = getattr(self.featurizer, "sparse_one", None)
            if sparse_one is not None:
                idx, val = sparse_one(texts[0])
                return (val @ self._w[idx] + self._b)[None, :]
        x = self.featurizer.transform(texts)
        return np.asarray(x @ self._w) + self._b

    def scores(self, texts: list[str]) -> np.ndarray:
        """Two-model score per text (higher: the strong model is more likely to be needed)."""
        if self.kind != "two-model":
            raise ValueError("scores() is for two-model artifacts; use probabilities()")
        z = self.logits(texts)
        if z.shape[1] == 1:
            return 1.0 / (1.0 + np.exp(-z[:, 0]))
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        return p[:, self.classes.index(1)] - p[:, self.classes.index(-1)]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Multi-model P(success) per text and model, [len(texts), len(models)]."""
        if self.kind != "multi-model":
            raise ValueError("probabilities() is for multi-model artifacts; use scores()")
        return 1.0 / (1.0 + np.exp(-self.logits(texts)))

    def choose(self, probs: np.ndarray, threshold: float, allowed: list[int] | None = None) -> np.ndarray:
        """Index (into ``models``) of the cheapest allowed model with P(success) ≥ threshold."""
        allowed_idx = np.arange(len(self.models)) if allowed is None else np.asarray(allowed)
        p = probs[:, allowed_idx]
        by_cost = np.argsort(self.costs[allowed_idx], kind="stable")
        ok = p[:, by_cost] >= threshold
        first_ok = np.where(ok.any(1), ok.argmax(1), -1)
        pick = np.where(first_ok >= 0, by_cost[np.maximum(first_ok, 0)], p.argmax(1))
        return allowed_idx[pick]
