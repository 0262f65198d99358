"""The tfidf+subject-prior featurizer on synthetic data: fits, round-trips, single == batch path,
and nested featurizer versions are checked (no shared data or MiniLM weights needed)."""

import json

import numpy as np
import pytest

from router_stream.learning import artifact as A
from router_stream.learning import train
from router_stream.learning.data import Record
from router_stream.learning.features import StaticEmbedFeaturizer, SubjectPriorFeaturizer, check_featurizer

WORDS = {
    "alg": "group ring field polynomial degree extension matrix eigenvalue",
    "bio": "cell protein enzyme gene membrane mitochondria species",
    "law": "court statute plaintiff contract tort defendant jury",
}


def toy_embed(dim: int = 8) -> StaticEmbedFeaturizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "the", "which", "of", "?"]
    vocab += sorted({w for ws in WORDS.values() for w in ws.split()})
    rng = np.random.default_rng(0)
    vec = rng.integers(-127, 128, size=(len(vocab), dim)).astype(np.int8)
    return StaticEmbedFeaturizer(vocab, vec, np.full(len(vocab), 0.01, np.float32))


def toy_records(n: int = 240) -> list[Record]:
    rng = np.random.default_rng(1)
    subjects = sorted(WORDS)
    gains = {"alg": 0.6, "bio": 0.1, "law": 0.3}  # P(strong right, weak wrong) per subject
    out = []
    for i in range(n):
        subj = subjects[i % 3]
        words = rng.choice(WORDS[subj].split(), size=5).tolist()
        strong_right = rng.random() < 0.8
        weak_right = strong_right and rng.random() > gains[subj]
        if rng.random() < 0.05:
            weak_right, strong_right = True, False
        out.append(
            Record(
                f"toy/{subj}/{i}",
                f"toy-{subj}",
                "which of the " + " ".join(words) + " ?",
                {"weak": float(weak_right), "strong": float(strong_right)},
            )
        )
    return out


@pytest.fixture(params=["tfidf+subject", "embed+tfidf+subject"])
def toy_artifact(request, monkeypatch, tmp_path):
    monkeypatch.setattr(train, "distil_cached", lambda dim, cache_dir=None: toy_embed())
    art = train.train_two_model(toy_records(), "weak", "strong", featurizer=request.param)
    path = A.save(art, tmp_path / "subject.npz")
    has_embed = request.param.startswith("embed")
    assert (art.meta["featurizer"]["embed"] is not None) == has_embed
    assert any(k.startswith("m2v/") for k in A.load(path).feature_arrays) == has_embed
    return path


def test_fits_round_trips_and_single_equals_batch(toy_artifact):
    art = A.load(toy_artifact)
    spec = art.meta["featurizer"]
    assert spec["name"] == "tfidf+subject-prior" and spec["version"] == SubjectPriorFeaturizer.version
    assert spec["groups"] == ["toy-alg", "toy-bio", "toy-law"]
    assert art.feature_arrays["subject/coef"].dtype == np.int8
    router = A.LearnedRouter(art)
    texts = ["which polynomial degree of the field extension ?", "the court and the jury ?", "mitochondria"]
    batch = router.scores(texts)
    one = [router.scores([t])[0] for t in texts]
    np.testing.assert_allclose(one, batch, atol=1e-5)
    # the subject prior names the subject, and the high-gain subject scores higher
    probs = router.featurizer.group_probabilities(texts)
    assert probs.argmax(1).tolist() == [0, 2, 1]
    assert batch[0] > batch[1] > batch[2]


def test_nested_featurizer_versions_are_checked(toy_artifact):
    spec = A.load(toy_artifact).meta["featurizer"]
    check_featurizer(spec)
    bad = json.loads(json.dumps(spec))
    bad["tfidf"]["version"] = 99
    with pytest.raises(ValueError, match="'tfidf' is version 99"):
        check_featurizer(bad)
    if spec["embed"] is not None:
        bad = json.loads(json.dumps(spec))
        bad["embed"]["version"] = 99
        with pytest.raises(ValueError, match="m2v-minilm"):
            check_featurizer(bad)
    bad = json.loads(json.dumps(spec))
    bad["version"] = 2
    with pytest.raises(ValueError, match="retrain"):
        check_featurizer(bad)


def test_fold_index_maps_both_blocks():
    feat = SubjectPriorFeaturizer.__new__(SubjectPriorFeaturizer)
    feat.fold_bits = 4
    feat.tfidf = type("T", (), {"word_bits": 6})()
    idx = np.array([0, 17, 63, 64, 64 + 17, 64 + 63])
    assert feat._fold_index(idx).tolist() == [0, 1, 15, 16, 17, 31]
