"""Routing metrics on toy cases small enough to check by hand."""

import math

import numpy as np
import pytest

from router_stream.learning import evaluation as M

# Four items. weak answers items 0 and 3, strong answers 0, 1 and 2: W = 0.5, S = 0.75.
WEAK = [1, 0, 0, 1]
STRONG = [1, 1, 1, 0]
# The router ranks item 1, then 2 (both gain +1), then 3 (gain -1), then 0 (gain 0).
SCORES = [0.1, 0.9, 0.8, 0.2]


def test_curve_points():
    c = M.routing_curve(SCORES, WEAK, STRONG)
    assert c.weak == 0.5 and c.strong == 0.75
    np.testing.assert_allclose(c.shares, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.quality, [0.5, 0.75, 1.0, 0.75, 0.75])
    np.testing.assert_allclose(c.pgr, [0, 1, 2, 1, 1])


def test_apgr_trapezoid():
    # 0.25 * ((0+1) + (1+2) + (2+1) + (1+1)) / 2
    assert M.apgr(M.routing_curve(SCORES, WEAK, STRONG)) == pytest.approx(1.125)


def test_cpt_interpolates_first_crossing():
    c = M.routing_curve(SCORES, WEAK, STRONG)
    assert M.cpt(c, 0.5) == pytest.approx(0.125)
    assert M.cpt(c, 0.8) == pytest.approx(0.2)
    assert M.cpt(c, 2.0) == pytest.approx(0.5)
    assert math.isnan(M.cpt(c, 2.5))


def test_share_for_95_percent_quality():
    c = M.routing_curve(SCORES, WEAK, STRONG)
    # target 0.95 * 0.75 = 0.7125; quality climbs 0.5 -> 0.75 over shares 0 -> 0.25
    assert M.share_for_quality(c, 0.95) == pytest.approx(0.2125)
    assert M.quality_at_share(c, 0.375) == pytest.approx(0.875)


def test_ties_are_a_straight_line():
    c = M.routing_curve([0.3] * 4, WEAK, STRONG)
    np.testing.assert_allclose(c.shares, [0, 1])
    assert M.apgr(c) == pytest.approx(0.5)
    assert M.cpt(c, 0.5) == pytest.approx(0.5)
    assert M.share_for_quality(c, 0.95) == pytest.approx(0.85)


def test_partial_tie_group():
    # items 1 and 3 tie at the top: gains +1 and -1 cancel inside the group
    c = M.routing_curve([0.0, 0.9, 0.5, 0.9], WEAK, STRONG)
    np.testing.assert_allclose(c.shares, [0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.quality, [0.5, 0.5, 0.75, 0.75])


def test_random_baseline():
    assert M.random_apgr() == 0.5
    assert M.random_cpt(0.8) == 0.8
    assert M.random_share_for_quality(0.5, 0.75, 0.95) == pytest.approx(0.85)
    assert M.random_share_for_quality(0.9, 0.92, 0.95) == 0.0


def test_empirical_random_router_is_near_the_diagonal():
    rng = np.random.default_rng(0)
    weak = rng.random(20_000) < 0.6
    strong = rng.random(20_000) < 0.8
    c = M.routing_curve(rng.random(20_000), weak, strong)
    assert M.apgr(c) == pytest.approx(0.5, abs=0.03)
    assert M.cpt(c, 0.5) == pytest.approx(0.5, abs=0.05)


def test_oracle_is_best():
    weak, strong = np.array(WEAK), np.array(STRONG)
    oracle = M.apgr(M.routing_curve(strong - weak, weak, strong))
    assert oracle >= M.apgr(M.routing_curve(SCORES, weak, strong))


def test_summary_keys():
    s = M.summary(M.routing_curve(SCORES, WEAK, STRONG))
    assert s["apgr"] == pytest.approx(1.125)
    assert s["random_share_at_95"] == pytest.approx(0.85)
    assert {"cpt50", "cpt80", "share_at_95", "random_apgr"} <= set(s)


def test_bad_input():
    with pytest.raises(ValueError):
        M.routing_curve([], [], [])
    with pytest.raises(ValueError):
        M.routing_curve([1, 2], [1], [1, 0])


def test_upper_hull_and_reading_it():
    x = [1, 0, 2, 3, 4]
    y = [0.6, 0.5, 0.9, 0.85, 1.0]
    hx, hy = M.upper_hull(x, y)
    np.testing.assert_allclose(hx, [0, 2, 4])
    np.testing.assert_allclose(hy, [0.5, 0.9, 1.0])
    assert M.min_x_for_y(x, y, 0.95) == pytest.approx(3.0)
    assert M.min_x_for_y(x, y, 0.4) == 0.0
    assert math.isnan(M.min_x_for_y(x, y, 1.1))
    # mean of the hull over [0, 4]: (2 * 0.7 + 2 * 0.95) / 4
    assert M.hull_area(x, y, 0, 4) == pytest.approx(0.825, abs=1e-6)
