"""Train, calibrate and evaluate the learned router.

Two-model (the RouteLLM MMLU rows, or any pair of models scored on the same prompts): a
multinomial logistic regression over the features predicts the strong model's quality gain on
the prompt, ``strong - weak`` in {-1, 0, +1}; the routing score is its expectation
P(+1) − P(−1). The threshold is set so that a chosen share of a prompt sample goes to strong.

Multi-model (RouterBench rows: 11 priced models): one logistic regression per model predicts
P(model succeeds); the router sends a prompt to the cheapest model (by mean cost per call on the
training rows) whose P(success) reaches the threshold, else to the most likely model.

Calibration (the thresholds) is here; the held-out evaluation of an artifact is
:mod:`.held_out`. Every evaluation uses the held-out split of :func:`router_stream.learning.data.split` (a
stable 20% by hash of the record id); the model never sees it in training.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .artifact import Artifact, LearnedRouter
from .data import MMLU_STRONG, MMLU_WEAK, Record, models_in, pair_rows, split
from .features import (
    ConcatFeaturizer,
    GroupPriorFeaturizer,
    ShapeFeaturizer,
    StaticEmbedFeaturizer,
    SubjectPriorFeaturizer,
    TfidfFeaturizer,
)
from .held_out import evaluate_multi_model, evaluate_two_model

FEATURIZERS = (
    "embed+tfidf",
    "tfidf",
    "embed",
    "tfidf+subject",
    "embed+tfidf+subject",
    "tfidf+shape",
    "tfidf+subject+shape",
)
#: Weight of the standardised ``shape`` block next to the TF-IDF row (chosen by 5-fold CV, with C = 0.5).
SHAPE_WEIGHT = 0.1
DEFAULT_FEATURIZER = "embed+tfidf"


def build_features(
    name: str,
    texts: Sequence[str],
    groups: Sequence[str],
    targets: np.ndarray,
    target_names: Sequence[str],
    embed_dim: int = 128,
    prior_weight: float = 5.0,
    cache_dir: Path | None = None,
) -> tuple[Any, Any]:
    """Fit the featurizer on the training rows; return it and the training feature matrix.

    ``groups`` (the rows' ``source``) and ``targets`` (per-row labels to average per group)
    feed the group prior of the ``embed`` featurizers and the subject prior of the ``*subject``
    ones; ``tfidf`` ignores them. ``X+shape`` appends the :class:`ShapeFeaturizer` block (weight
    :data:`SHAPE_WEIGHT`) to featurizer ``X``.
    """
    import scipy.sparse as sp

    if name.endswith("+shape") and name in FEATURIZERS:  # a base featurizer plus the structural block
        base, base_x = build_features(
            name[: -len("+shape")], texts, groups, targets, target_names, embed_dim, prior_weight, cache_dir
        )
        shape = ShapeFeaturizer().fit(texts)
        feat = ConcatFeaturizer([base, shape], [1.0, SHAPE_WEIGHT])
        return feat, sp.hstack(
            [sp.csr_matrix(base_x), sp.csr_matrix(shape.transform(texts) * SHAPE_WEIGHT)]
        ).tocsr()
    if name == "tfidf":
        tfidf = TfidfFeaturizer().fit(texts)
        return tfidf, tfidf.transform(texts)
    if name == "tfidf+subject":  # subject classifier over the tfidf only: no embedding table
        return SubjectPriorFeaturizer.fit(None, texts, groups, targets, target_names, prior_weight)
    if name not in FEATURIZERS:
        raise ValueError(f"featurizer must be one of {FEATURIZERS}, not {name!r}")
    embed = distil_cached(embed_dim, cache_dir)
    if name == "embed+tfidf+subject":
        return SubjectPriorFeaturizer.fit(embed, texts, groups, targets, target_names, prior_weight)
    if name == "embed":
        return GroupPriorFeaturizer.fit(
            embed, texts, groups, targets, target_names, prior_weight, include_embedding=True
        )
    tfidf = TfidfFeaturizer().fit(texts)
    prior, prior_x = GroupPriorFeaturizer.fit(embed, texts, groups, targets, target_names, prior_weight)
    feat = ConcatFeaturizer([tfidf, prior], [1.0, 1.0])
    return feat, sp.hstack([tfidf.transform(texts), sp.csr_matrix(prior_x)]).tocsr()


def distil_cached(dim: int, cache_dir: Path | None = None) -> StaticEmbedFeaturizer:
    """Distil the static MiniLM table once and keep it under ``.cache/`` (a minute or two)."""
    cache = (cache_dir or Path(".cache/router-stream")) / f"m2v-minilm-{dim}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return StaticEmbedFeaturizer.from_artifact({}, {k: z[k] for k in z.files})
    feat = StaticEmbedFeaturizer.distil(dim)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **feat.arrays())  # type: ignore[arg-type]  # numpy's stub also matches **arrays to allow_pickle: bool
    return feat


def _fit_lr(x: Any, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000).fit(x, y)


def _provenance(rows: Sequence[Record], c: float) -> dict[str, Any]:
    """What an artifact was trained on (rows, a digest of their ids, C, the split) and when."""
    return {
        "trained_on": {
            "rows": len(rows),
            "ids_digest": _data_digest(rows),
            "C": c,
            "split": "blake2b(id) >= 0.2",
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _data_digest(records: Sequence[Record]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for r in sorted(records, key=lambda r: r.id):
        h.update(r.id.encode())
        h.update(b"\x1f")
    return h.hexdigest()


# ---- two-model ------------------------------------------------------------------------------


def train_two_model(
    train: Sequence[Record],
    weak: str = MMLU_WEAK,
    strong: str = MMLU_STRONG,
    featurizer: str = DEFAULT_FEATURIZER,
    c: float = 1.0,
    embed_dim: int = 128,
) -> Artifact:
    rows = pair_rows(train, weak, strong)
    if len(rows) < 10:
        raise ValueError(f"only {len(rows)} training rows score both {weak!r} and {strong!r}")
    texts = [r.prompt for r in rows]
    w = np.array([r.scores[weak] for r in rows])
    s_ = np.array([r.scores[strong] for r in rows])
    gain = s_ - w
    y = np.sign(np.round(gain, 6)).astype(int)  # scores may be fractional: the sign of the gain
    feat, x = build_features(
        featurizer,
        texts,
        [r.source for r in rows],
        np.stack([gain, w, s_], 1),
        ["gain", f"quality:{weak}", f"quality:{strong}"],
        embed_dim,
    )
    classes = sorted(set(y.tolist()))
    if classes == [0, 1] or len(classes) < 2:
        raise ValueError(
            "training rows need both positive and non-positive gains (and ideally negative ones)"
        )
    lr = _fit_lr(x, y, c)
    coef, intercept = lr.coef_, lr.intercept_
    cls = [int(v) for v in lr.classes_]
    if len(cls) == 2:  # binary sklearn LR: one row for the larger class; make it softmax-shaped
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    meta = {
        "kind": "two-model",
        "featurizer": feat.spec(),
        "models": [weak, strong],
        "weak": weak,
        "strong": strong,
        "classes": cls,
        "score": "P(gain=+1) - P(gain=-1) of strong over weak",
        "threshold": 0.0,
        "abstain_band": 0.0,
        **_provenance(rows, c),
    }
    return Artifact(
        meta=meta,
        coef=np.asarray(coef, np.float32),
        intercept=np.asarray(intercept, np.float32),
        feature_arrays=feat.arrays(),
    )


def threshold_for_share(scores: np.ndarray, strong_share: float) -> float:
    """The score at or above which ``strong_share`` of the sample goes to strong."""
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError("strong share must be within [0, 1]")
    if strong_share <= 0.0:
        return float(np.max(scores)) + 1e-9
    return float(np.quantile(scores, 1.0 - strong_share, method="higher" if strong_share < 1 else "lower"))


# ---- multi-model ----------------------------------------------------------------------------


def train_multi_model(
    train: Sequence[Record],
    models: Sequence[str] | None = None,
    featurizer: str = DEFAULT_FEATURIZER,
    c: float = 1.0,
    embed_dim: int = 128,
) -> Artifact:
    models = list(models or models_in(train, need_costs=True))
    if len(models) < 2:
        raise ValueError("multi-model training needs at least two models with scores and costs")
    texts = [r.prompt for r in train]
    quality = np.array([[r.scores.get(m, np.nan) for m in models] for r in train])
    feat, x = build_features(
        featurizer, texts, [r.source for r in train], quality, [f"quality:{m}" for m in models], embed_dim
    )
    coefs, intercepts, costs = [], [], {}
    for m in models:
        idx = [i for i, r in enumerate(train) if m in r.scores]
        y = np.array([train[i].scores[m] >= 0.5 for i in idx]).astype(int)
        if y.min() == y.max():  # always (or never) right: a constant model
            coefs.append(np.zeros(x.shape[1]))
            intercepts.append(8.0 if y[0] else -8.0)
        else:
            lr = _fit_lr(x[idx], y, c)
            coefs.append(lr.coef_[0])
            intercepts.append(lr.intercept_[0])
        priced = [r.costs[m] for r in train if m in r.costs]
        costs[m] = float(np.mean(priced)) if priced else 0.0
    meta = {
        "kind": "multi-model",
        "featurizer": feat.spec(),
        "models": models,
        "costs": costs,
        "score": "P(model succeeds); pick the cheapest model reaching the threshold",
        "threshold": 0.7,
        "abstain_band": 0.0,
        **_provenance(train, c),
    }
    return Artifact(
        meta=meta,
        coef=np.asarray(coefs, np.float32),
        intercept=np.asarray(intercepts, np.float32),
        feature_arrays=feat.arrays(),
    )


def threshold_for_cost_share(
    router: LearnedRouter, texts: Sequence[str], cost_share: float, reference: str | None = None
) -> float:
    """Multi-model calibration: the lowest threshold whose mean (training-mean) cost stays within
    ``cost_share`` × the cost of sending everything to ``reference`` (default: the best-quality,
    i.e. costliest, model)."""
    probs = router.probabilities(list(texts))
    ref_cost = router.costs.max() if reference is None else router.costs[router.models.index(reference)]
    best = 0.0
    for t in np.linspace(0.0, 1.0, 201):
        mean_cost = router.costs[router.choose(probs, float(t))].mean()
        if mean_cost <= cost_share * ref_cost + 1e-15:
            best = float(t)
    return best


# ---- whole runs -----------------------------------------------------------------------------


def run_training(
    records: Sequence[Record],
    kind: str,
    featurizer: str = DEFAULT_FEATURIZER,
    c: float = 1.0,
    strong_share: float = 0.3,
    abstain_band: float = 0.0,
    weak: str = MMLU_WEAK,
    strong: str = MMLU_STRONG,
    test_fraction: float = 0.2,
    embed_dim: int = 128,
    evaluate: bool = True,
) -> tuple[Artifact, dict[str, Any]]:
    """Split, train on the 80%, calibrate on the held-out prompts (no labels), evaluate there."""
    train, test = split(records, test_fraction)
    if kind == "two-model":
        art = train_two_model(train, weak, strong, featurizer, c, embed_dim)
        router = LearnedRouter(art)
        sample = [r.prompt for r in pair_rows(test, weak, strong)] or [r.prompt for r in train]
        art.meta["threshold"] = threshold_for_share(router.scores(sample), strong_share)
        art.meta["calibration"] = {
            "strong_share": strong_share,
            "sample": "held-out prompts",
            "n": len(sample),
        }
    elif kind == "multi-model":
        art = train_multi_model(train, None, featurizer, c, embed_dim)
        router = LearnedRouter(art)
        sample = [r.prompt for r in test] or [r.prompt for r in train]
        art.meta["threshold"] = threshold_for_cost_share(router, sample, strong_share)
        art.meta["calibration"] = {"cost_share": strong_share, "sample": "held-out prompts", "n": len(sample)}
    else:
        raise ValueError("kind must be two-model or multi-model")
    art.meta["abstain_band"] = abstain_band
    art.meta["trained_on"].update({"test_fraction": test_fraction, "held_out": len(test)})
    report: dict[str, Any] = {}
    if evaluate and test:
        router = LearnedRouter(art)
        report = (
            evaluate_two_model(router, test, train)
            if kind == "two-model"
            else evaluate_multi_model(router, test)
        )
        art.meta["metrics"] = {k: v for k, v in report.items() if k != "curve"}
    return art, report
