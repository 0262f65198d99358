"""The learned strategy with the packaged artifact, its config checks, and train/eval on real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.routing.base import RoutingContext
from router_stream.routing.learned import LearnedConfig, LearnedStrategy
from router_stream.schemas import Request

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "routing" / "train.jsonl"

EASY = "What is 2 + 2?"
HARD = ("Let f be a continuous function on [0,1] such that the integral of f(x) x^n dx vanishes for every "
        "n >= 0. Prove that f is identically zero, using the Weierstrass approximation theorem, and explain "
        "which step fails for functions that are merely Lebesgue integrable.")


def _ctx():
    return RoutingContext("k", ("cheap", "strong"))


async def test_packaged_artifact_decides_weak_or_strong_with_score():
    strategy = LearnedStrategy(LearnedConfig(type="learned", weak="cheap", strong="strong"))
    easy = await strategy.decide(Request(request_id="e", prompt=EASY), _ctx())
    hard = await strategy.decide(Request(request_id="h", prompt=HARD), _ctx())
    assert easy is not None and hard is not None
    assert {easy.candidate, hard.candidate} <= {"cheap", "strong"}
    assert hard.detail["score"] >= easy.detail["score"]  # the harder prompt scores as needing strong more
    for d in (easy, hard):
        assert d.candidate == ("strong" if d.detail["score"] >= d.detail["threshold"] else "cheap")


async def test_abstain_band_abstains_near_the_threshold_and_says_why():
    base = LearnedStrategy(LearnedConfig(type="learned", weak="cheap", strong="strong"))
    probe = await base.decide(Request(request_id="p", prompt=EASY), _ctx())
    wide = LearnedStrategy(LearnedConfig(type="learned", weak="cheap", strong="strong", abstain_band=10.0,
                                         threshold=probe.detail["score"]))
    ctx = _ctx()
    assert await wide.decide(Request(request_id="p", prompt=EASY), ctx) is None
    assert ctx.take_note()


def test_learned_config_names_unknown_candidates():
    data = {"candidates": {"cheap": {"base_url": "http://x/v1", "model": "c"},
                           "strong": {"base_url": "http://x/v1", "model": "s"}},
            "default": "cheap", "strategies": [{"type": "learned", "weak": "cheap", "strong": "strongg"}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ={})
    assert "strategies[0].strong: 'strongg' is not a candidate" in str(err.value)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/datasets/routing/train.jsonl is not on this machine")
def test_train_and_eval_on_a_slice_of_the_real_data(tmp_path, capsys):
    from router_stream.cli import main
    out = tmp_path / "slice.npz"
    assert main(["train", "--data", str(SHARED), "--limit", "2500", "--out", str(out), "--featurizer", "tfidf"]) == 0
    text = capsys.readouterr().out
    assert "APGR" in text and "random" in text
    strategy = LearnedStrategy(LearnedConfig(type="learned", artifact=str(out), weak="cheap", strong="strong"))
    assert strategy.threshold is not None
