"""Routing metrics, as pure functions of router scores and per-item model quality.

Two-model (RouteLLM's definitions). A router gives each item a score; sending the items with the
highest scores to the strong model and the rest to the weak one, for every possible cut, traces
*quality* against *strong-call share* ``c`` (0 = all weak, 1 = all strong). With ``W`` and ``S``
the mean quality of all-weak and all-strong on the same items:

- PGR(c) = (quality(c) - W) / (S - W), the share of the performance gap recovered;
- APGR = ∫₀¹ PGR(c) dc;
- CPT(x) = the smallest c with PGR(c) ≥ x;
- share at 95% = the smallest c with quality(c) ≥ 0.95·S.

Items with equal scores cannot be split by a threshold: between the edges of a tie the curve is
the straight line a random tie-break gives in expectation. A random router's expected curve is
the diagonal: APGR 0.5, CPT(x) = x, share at 95% = (0.95·S − W) / (S − W).

Multi-model (RouterBench's view). A router that picks among many priced models gives, for each
threshold, one (mean cost, mean quality) point. :func:`upper_hull` keeps the points no mixture
beats (mixing two routers at random reaches any point between them), and :func:`min_x_for_y`
reads the cost needed to reach a quality off that hull. The same functions applied to the
single-model points give the best prompt-blind baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear quality curve against strong-call share (``shares`` ascending 0..1)."""

    shares: np.ndarray
    quality: np.ndarray
    weak: float  # W: mean quality when everything goes to the weak model
    strong: float  # S: mean quality when everything goes to the strong model

    @property
    def pgr(self) -> np.ndarray:
        gap = self.strong - self.weak
        if gap == 0:
            return np.full_like(self.quality, np.nan)
        return (self.quality - self.weak) / gap


def routing_curve(scores: ArrayLike, weak_quality: ArrayLike, strong_quality: ArrayLike) -> Curve:
    """The quality-vs-strong-share curve of a router whose higher score means "send to strong"."""
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weak_quality, dtype=float)
    g = np.asarray(strong_quality, dtype=float) - w
    n = len(s)
    if not (len(w) == len(g) == n) or n == 0:
        raise ValueError("scores, weak_quality and strong_quality must be non-empty and of equal length")
    order = np.argsort(-s, kind="stable")
    s_sorted, g_sorted = s[order], g[order]
    # Group boundaries: positions after which the next score differs (the ends of tied runs).
    ends = np.flatnonzero(np.diff(s_sorted) != 0) + 1
    ends = np.concatenate([ends, [n]])
    cum_gain = np.concatenate([[0.0], np.cumsum(g_sorted)[ends - 1]])
    shares = np.concatenate([[0.0], ends / n])
    quality = (w.sum() + cum_gain) / n
    return Curve(shares=shares, quality=quality, weak=float(w.mean()), strong=float(w.mean() + g.mean()))


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Smallest x at which the piecewise-linear y first reaches ``target`` (nan if never)."""
    if y[0] >= target:
        return float(x[0])
    above = np.flatnonzero(y >= target)
    if len(above) == 0:
        return float("nan")
    i = int(above[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def apgr(curve: Curve) -> float:
    """Area under PGR against strong-call share (0.5 for a random router, 1.0 ≈ perfect)."""
    return _area(curve.shares, curve.pgr)


def cpt(curve: Curve, fraction: float) -> float:
    """CPT(x): the smallest strong-call share recovering ``fraction`` of the gap (0.5 for 50%)."""
    return _first_crossing(curve.shares, curve.pgr, fraction)


def share_for_quality(curve: Curve, relative_to_strong: float = 0.95) -> float:
    """The smallest strong-call share whose quality reaches ``relative_to_strong`` × S."""
    return _first_crossing(curve.shares, curve.quality, relative_to_strong * curve.strong)


def random_apgr() -> float:
    return 0.5


def random_cpt(fraction: float) -> float:
    return float(fraction)


def random_share_for_quality(weak: float, strong: float, relative_to_strong: float = 0.95) -> float:
    """Strong share a random router needs for ``relative_to_strong`` × S (on the diagonal)."""
    target = relative_to_strong * strong
    if weak >= target:
        return 0.0
    if strong <= weak:
        return float("nan")
    return float(min(1.0, (target - weak) / (strong - weak)))


def summary(curve: Curve) -> dict[str, float]:
    """The headline numbers of one router's curve, next to a random router's on the same items."""
    return {
        "weak_quality": curve.weak,
        "strong_quality": curve.strong,
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "share_at_95": share_for_quality(curve, 0.95),
        "random_apgr": random_apgr(),
        "random_cpt50": random_cpt(0.5),
        "random_cpt80": random_cpt(0.8),
        "random_share_at_95": random_share_for_quality(curve.weak, curve.strong, 0.95),
    }


def quality_at_share(curve: Curve, share: float) -> float:
    """Quality when a ``share`` of calls goes to the strong model (interpolated)."""
    return float(np.interp(share, curve.shares, curve.quality))


# ---- multi-model: cost/quality points --------------------------------------------------------


def upper_hull(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of points (x = cost, y = quality), x ascending.

    Any point on it is reachable by randomly mixing the two operating points at its ends; points
    below it are beaten by such a mixture, and a point costlier but no better than another is
    dropped (quality never falls as budget grows).
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if len(xs) != len(ys) or len(xs) == 0:
        raise ValueError("x and y must be non-empty and of equal length")
    order = np.lexsort((-ys, xs))
    hull: list[tuple[float, float]] = []
    for px, py in zip(xs[order], ys[order]):
        if hull and py <= hull[-1][1]:
            continue  # no better than something cheaper (or as cheap)
        while len(hull) >= 2:
            (ax, ay), (bx, by) = hull[-2], hull[-1]
            # drop b if it lies on or below the segment a -> p
            if (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0:
                hull.pop()
            else:
                break
        hull.append((float(px), float(py)))
    hx, hy = zip(*hull)
    return np.array(hx), np.array(hy)


def min_x_for_y(x: ArrayLike, y: ArrayLike, target: float) -> float:
    """The least cost at which the hull of the points reaches quality ``target`` (nan if never)."""
    hx, hy = upper_hull(x, y)
    return _first_crossing(hx, hy, target)


def hull_area(x: ArrayLike, y: ArrayLike, x_lo: float, x_hi: float) -> float:
    """Mean hull quality over costs [x_lo, x_hi] (the hull is flat past its ends; 0 before its
    first point is not assumed: below the cheapest point the hull is undefined, so x_lo should
    be at or after it)."""
    hx, hy = upper_hull(x, y)
    grid = np.linspace(x_lo, x_hi, 1001)
    vals = np.interp(grid, hx, hy)
    return _area(grid, vals) / (x_hi - x_lo)
