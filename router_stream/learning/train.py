"""Train, calibrate and evaluate the learned router.

Two-model (the RouteLLM MMLU rows, or any pair of models scored on the same prompts): a
multinomial logistic regression over the features predicts the strong model's quality gain on
the prompt, ``strong - weak`` in {-1, 0, +1}; the routing score is its expectation
P(+1) − P(−1). The threshold is set so that a chosen share of a prompt sample goes to strong.

Multi-model (RouterBench rows: 11 priced models): one logistic regression per model predicts
P(model succeeds); the router sends a prompt to the cheapest model (by mean cost per call on the
training rows) whose P(success) reaches the threshold, else to the most likely model.

Every evaluation uses the held-out split of :func:`router_stream.learning.data.split` (a
stable 20% by hash of the record id); the model never sees it in training.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import evaluation as M
from .artifact import Artifact, LearnedRouter
from .data import MMLU_STRONG, MMLU_WEAK, Record, models_in, split
from .features import (
    ConcatFeaturizer,
    GroupPriorFeaturizer,
    ShapeFeaturizer,
    StaticEmbedFeaturizer,
    SubjectPriorFeaturizer,
    TfidfFeaturizer,
)

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


def _pair(records: Sequence[Record], weak: str, strong: str) -> list[Record]:
    return [r for r in records if weak in r.scores and strong in r.scores]


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
    rows = _pair(train, weak, strong)
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


def baseline_scores(train: Sequence[Record], test: Sequence[Record], weak: str, strong: str) -> np.ndarray:
    """The reference router: TF-IDF (word 1-2-grams, sublinear tf) + logistic regression on
    "strong beats weak", scikit-learn defaults otherwise (C = 1)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rows = _pair(train, weak, strong)
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
    x = vec.fit_transform([r.prompt for r in rows])
    y = np.array([r.scores[strong] > r.scores[weak] for r in rows]).astype(int)
    lr = _fit_lr(x, y, 1.0)
    return lr.predict_proba(vec.transform([r.prompt for r in test]))[:, 1]


def threshold_for_share(scores: np.ndarray, strong_share: float) -> float:
    """The score at or above which ``strong_share`` of the sample goes to strong."""
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError("strong share must be within [0, 1]")
    if strong_share <= 0.0:
        return float(np.max(scores)) + 1e-9
    return float(np.quantile(scores, 1.0 - strong_share, method="higher" if strong_share < 1 else "lower"))


def _paired_bootstrap(
    a: np.ndarray, b: np.ndarray, weak: np.ndarray, strong: np.ndarray, n: int = 300, seed: int = 0
) -> dict[str, list[float]]:
    """95% intervals of (ours − baseline) for APGR and share-at-95%, resampling items."""
    rng = np.random.default_rng(seed)
    d_apgr, d_share = [], []
    for _ in range(n):
        i = rng.integers(0, len(a), len(a))
        ca, cb = M.routing_curve(a[i], weak[i], strong[i]), M.routing_curve(b[i], weak[i], strong[i])
        d_apgr.append(M.apgr(ca) - M.apgr(cb))
        d_share.append(M.share_for_quality(ca) - M.share_for_quality(cb))
    q = lambda v: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]  # noqa: E731
    return {"apgr_diff_ci95": q(d_apgr), "share_at_95_diff_ci95": q(d_share)}


def evaluate_two_model(
    router: LearnedRouter,
    test: Sequence[Record],
    train: Sequence[Record] | None = None,
    bootstrap: int = 300,
) -> dict[str, Any]:
    """Held-out metrics of the router, of the TF-IDF+LR baseline (when ``train`` is given) and
    of a random router, on the same items."""
    weak, strong = router.artifact.meta["weak"], router.artifact.meta["strong"]
    rows = _pair(test, weak, strong)
    w = np.array([r.scores[weak] for r in rows])
    s = np.array([r.scores[strong] for r in rows])
    t0 = time.perf_counter()
    ours = router.scores([r.prompt for r in rows])
    per_request_ms = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
    result: dict[str, Any] = {
        "n": len(rows),
        "weak": weak,
        "strong": strong,
        "batch_ms_per_prompt": per_request_ms,
    }
    result["router"] = M.summary(M.routing_curve(ours, w, s))
    threshold = router.artifact.threshold
    result["router"]["share_at_threshold"] = float(np.mean(ours >= threshold))
    result["router"]["quality_at_threshold"] = float(np.mean(np.where(ours >= threshold, s, w)))
    result["random"] = {
        "apgr": M.random_apgr(),
        "cpt50": 0.5,
        "cpt80": 0.8,
        "share_at_95": M.random_share_for_quality(float(w.mean()), float(s.mean())),
    }
    result["oracle"] = M.summary(M.routing_curve(s - w, w, s))
    if train is not None:
        base = baseline_scores(train, rows, weak, strong)
        result["baseline_tfidf_lr"] = M.summary(M.routing_curve(base, w, s))
        if bootstrap:
            result["vs_baseline"] = _paired_bootstrap(ours, base, w, s, bootstrap)
    return result


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


def _multi_rows(records: Sequence[Record], models: Sequence[str]) -> list[Record]:
    return [r for r in records if all(m in r.scores and m in r.costs for m in models)]


def multi_model_sweep(
    router: LearnedRouter, rows: Sequence[Record], thresholds: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    models = router.models
    q = np.array([[r.scores[m] for m in models] for r in rows])
    c = np.array([[r.costs[m] for m in models] for r in rows])
    probs = router.probabilities([r.prompt for r in rows])
    ts = np.linspace(0.0, 1.0, 101) if thresholds is None else thresholds
    cost, qual = [], []
    for t in ts:
        pick = router.choose(probs, float(t))
        cost.append(c[np.arange(len(rows)), pick].mean())
        qual.append(q[np.arange(len(rows)), pick].mean())
    return {
        "thresholds": ts,
        "cost": np.array(cost),
        "quality": np.array(qual),
        "q": q,
        "c": c,
        "probs": probs,
    }


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


def evaluate_multi_model(
    router: LearnedRouter, test: Sequence[Record], strong: str | None = None
) -> dict[str, Any]:
    """Cost/quality of the router on held-out rows, against every single model and the best
    prompt-blind mixture of them (the upper hull of the single-model points)."""
    models = router.models
    rows = _multi_rows(test, models)
    sweep = multi_model_sweep(router, rows)
    q, c = sweep["q"], sweep["c"]
    single = {
        m: {"quality": float(q[:, j].mean()), "cost": float(c[:, j].mean())} for j, m in enumerate(models)
    }
    strong = strong or max(single, key=lambda m: single[m]["quality"])
    s_q, s_c = single[strong]["quality"], single[strong]["cost"]
    sx = np.array([v["cost"] for v in single.values()])
    sy = np.array([v["quality"] for v in single.values()])
    target = 0.95 * s_q
    lo, hi = float(sx.min()), s_c
    thr = router.artifact.threshold
    pick = router.choose(sweep["probs"], thr)
    at_thr: dict[str, Any] = {
        "threshold": thr,
        "quality": float(q[np.arange(len(rows)), pick].mean()),
        "cost": float(c[np.arange(len(rows)), pick].mean()),
        "share_by_model": {m: float(np.mean(pick == j)) for j, m in enumerate(models) if np.any(pick == j)},
    }
    at_thr["cost_share"] = at_thr["cost"] / s_c
    oracle_pick = np.where((q >= 0.5).any(1), np.argmin(np.where(q >= 0.5, c, np.inf), 1), np.argmin(c, 1))
    return {
        "n": len(rows),
        "strong": strong,
        "single_models": single,
        "router_at_threshold": at_thr,
        "cost_share_at_95": {
            "router": M.min_x_for_y(sweep["cost"], sweep["quality"], target) / s_c,
            "best_single_model_mix": M.min_x_for_y(sx, sy, target) / s_c,
        },
        "best_quality": {"router": float(sweep["quality"].max()), "best_single": float(sy.max())},
        "mean_quality_over_cost_range": {
            "range_usd": [lo, hi],
            "router": M.hull_area(np.append(sweep["cost"], sx), np.append(sweep["quality"], sy), lo, hi),
            "best_single_model_mix": M.hull_area(sx, sy, lo, hi),
        },
        "oracle": {
            "quality": float(q[np.arange(len(rows)), oracle_pick].mean()),
            "cost": float(c[np.arange(len(rows)), oracle_pick].mean()),
        },
        "curve": {
            "cost": sweep["cost"].tolist(),
            "quality": sweep["quality"].tolist(),
            "thresholds": sweep["thresholds"].tolist(),
        },
    }


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
        sample = [r.prompt for r in _pair(test, weak, strong)] or [r.prompt for r in train]
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
