"""Train on a small slice of the shared routing data (skipped when ../shared is absent)."""

from pathlib import Path

import numpy as np
import pytest

from router_stream.learning import artifact as A
from router_stream.learning import data, train
from router_stream.routing.base import RoutingContext
from router_stream.routing.learned import LearnedConfig
from router_stream.routing.strategy_config import BuildContext
from router_stream.schemas import Request

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "routing" / "train.jsonl"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared routing data not present at {DATA}")


def test_split_is_stable_and_about_a_fifth():
    ids = [f"mmlu/x/{i}" for i in range(5000)]
    held = [data.is_held_out(i) for i in ids]
    assert 0.17 < np.mean(held) < 0.23
    assert held == [data.is_held_out(i) for i in reversed(ids)][::-1]
    recs = [data.Record(i, "s", "p", {"a": 1.0}) for i in ids]
    train_, test = data.split(recs)
    assert len(train_) + len(test) == 5000 and {r.id for r in test} == {i for i, h in zip(ids, held) if h}


@needs_data
def test_two_model_on_a_slice(tmp_path):
    recs = data.load_jsonl(DATA, "mmlu")[::8]  # ~1200 rows across subjects
    art, report = train.run_training(recs, "two-model", "tfidf", strong_share=0.3)
    assert report["router"]["apgr"] > 0.45  # tiny data: just sane, not good
    assert abs(report["router"]["share_at_threshold"] - 0.3) < 0.05
    path = A.save(art, tmp_path / "slice.npz")
    strat = LearnedConfig(type="learned", artifact=str(path), weak="cheap", strong="smart").build(
        BuildContext()
    )
    import asyncio

    d = asyncio.run(
        strat.decide(Request(request_id="1", prompt=recs[0].prompt), RoutingContext("k", ("cheap", "smart")))
    )
    assert d.candidate in ("cheap", "smart")


@needs_data
async def test_multi_model_on_a_slice(tmp_path):
    recs = data.load_jsonl(DATA, "routerbench")[::3]
    art, report = train.run_training(recs, "multi-model", "tfidf", strong_share=0.3)
    assert len(art.models) >= 5
    assert 0 < report["router_at_threshold"]["cost"] < report["single_models"][report["strong"]]["cost"]
    path = A.save(art, tmp_path / "multi.npz")
    cfg = LearnedConfig(
        type="learned",
        artifact=str(path),
        candidates={"gpt-4-1106-preview": "smart", "mistralai/mixtral-8x7b-chat": "cheap"},
    )
    d = await cfg.build(BuildContext()).decide(
        Request(request_id="1", prompt=recs[0].prompt), RoutingContext("k", ("cheap", "smart"))
    )
    assert d.candidate in ("cheap", "smart") and d.detail["model"] in cfg.candidates
    with pytest.raises(A.ArtifactError, match="no model"):
        LearnedConfig(type="learned", artifact=str(path), candidates={"nope": "x"}).build(BuildContext())


def test_fast_hashed_counts_match_hashing_vectorizer():
    """The per-request fast path gives the same buckets and counts as HashingVectorizer.transform."""
    import random

    import numpy as np

    from router_stream.learning.features import TfidfFeaturizer, hashed_counts

    feat = TfidfFeaturizer(word_bits=12, char_bits=12)
    rng = random.Random(5)
    alphabet = "abcdefghij KLMNOP éüß漢字 ,.!?\n"
    texts = ["", " ", "What is the capital of Peru?", "the the the THE The", "naïve café — 東京 2024!"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    for text in texts:
        for vec in (feat._word, feat._char):
            idx, counts = hashed_counts(vec, text)
            ref = vec.transform([text])
            assert np.array_equal(idx, ref.indices.astype(np.int64)), text
            assert np.allclose(counts, ref.data), text
