"""Held-out evaluation of a trained router: its routing curve against a TF-IDF + logistic
regression baseline and a random router (two-model), or against every single model and their
best prompt-blind mixture (multi-model).

Apart from training (:mod:`.train`) because ``router-stream eval`` runs it on any artifact, not
only right after a fit; the metrics themselves (APGR, CPT, hull areas) are :mod:`.evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import evaluation as M
from .artifact import LearnedRouter
from .data import Record, pair_rows


def baseline_scores(train: Sequence[Record], test: Sequence[Record], weak: str, strong: str) -> np.ndarray:
    """The reference router: TF-IDF (word 1-2-grams, sublinear tf) + logistic regression on
    "strong beats weak", scikit-learn defaults otherwise (C = 1)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rows = pair_rows(train, weak, strong)
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
    x = vec.fit_transform([r.prompt for r in rows])
    y = np.array([r.scores[strong] > r.scores[weak] for r in rows]).astype(int)
    lr = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)  # as the learned router's own fit
    return lr.predict_proba(vec.transform([r.prompt for r in test]))[:, 1]


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
    rows = pair_rows(test, weak, strong)
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
