"""The ``shape`` featurizer (structural prompt features) and the ``tfidf+shape`` /
``tfidf+subject+shape`` featurizers: feature values, standardisation, artifact round-trip,
single == batch path, and refusal of an artifact whose feature list differs."""

import json

import numpy as np
import pytest

from router_stream.learning import artifact as A
from router_stream.learning import train
from router_stream.learning.data import Record
from router_stream.learning.features import (
    SHAPE_FEATURES,
    ShapeFeaturizer,
    check_featurizer,
    shape_features,
    split_choices,
)

MC = "Which of the following is NOT a prime number?\nA. 2\nB. 3\nC. 9\nD. 11\nAnswer:"
STATEMENTS = (
    "Statement 1 | Every group of order 4 is cyclic. Statement 2 | Z_4 is a ring.\n"
    "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
)
ROMAN = (
    "Which statements are true?\nI. x = 2\nII. y^2 = 4\nIII. z > 0\nA. I only\nB. II only\n"
    "C. I and II\nD. None of the above\nAnswer:"
)


def feats(text: str) -> dict[str, float]:
    return dict(zip(SHAPE_FEATURES, shape_features(text)))


def test_split_choices():
    stem, opts = split_choices(MC)
    assert stem == "Which of the following is NOT a prime number?"
    assert opts == ["2", "3", "9", "11"]
    assert split_choices("just a question without options") == ("just a question without options", [])


def test_shape_feature_values():
    assert len(shape_features(MC)) == len(SHAPE_FEATURES)
    f = feats(MC)
    assert f["n_options"] == 4 and f["neg_upper"] == 1 and f["neg_lower"] == 1 and f["ends_q"] == 1
    assert f["numeric_opts"] == 1.0 and f["fill_in"] == 0 and f["statement_pair"] == 0
    assert f["log_len"] == pytest.approx(np.log1p(len(MC)))
    low = feats(MC.replace("NOT", "not"))
    assert low["neg_upper"] == 0 and low["neg_lower"] == 1  # case carries information TF-IDF loses
    s = feats(STATEMENTS)
    assert s["statement_pair"] == 1 and s["tf_opts"] == 1 and s["numeric_opts"] == 0
    r = feats(ROMAN)
    assert r["roman"] == 1 and r["roman_opts"] == 1 and r["aota"] == 1 and r["log_math"] > 0
    code = feats(
        "What does print(f(3)) output?\ndef f(x):\n    return x * 2\nA. 6\nB. 3\nC. 9\nD. 0\nAnswer:"
    )
    assert code["code"] > 0
    empty = shape_features("")
    assert len(empty) == len(SHAPE_FEATURES) and all(np.isfinite(empty))


def test_shape_featurizer_standardises_and_round_trips():
    texts = [MC, STATEMENTS, ROMAN, "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"]
    feat = ShapeFeaturizer().fit(texts)
    x = feat.transform(texts)
    assert x.shape == (4, len(SHAPE_FEATURES)) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    assert np.all(x[:, SHAPE_FEATURES.index("n_options")] == 0)  # constant feature -> 0, not nan
    again = ShapeFeaturizer.from_artifact(feat.spec(), feat.arrays())
    np.testing.assert_allclose(again.transform(texts), x)
    _idx, val = feat.sparse_one(MC)
    np.testing.assert_allclose(val, x[0])
    assert np.abs(feat.transform(["x" * 5000 + "?"])).max() <= feat.clip
    with pytest.raises(ValueError, match="retrain"):
        ShapeFeaturizer.from_artifact({**feat.spec(), "features": ["other"]}, feat.arrays())


def toy_records(n: int = 240) -> list[Record]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        subj = ["alg", "bio", "law"][i % 3]
        hard = i % 2 == 0  # long numeric NOT-questions are the ones the strong model adds value on
        stem = (
            "Which of these is NOT equal to " + " + ".join(str(v) for v in rng.integers(1, 99, 4)) + "?"
            if hard
            else f"which {subj} term is meant ?"
        )
        prompt = (
            stem
            + "\nA. "
            + ("12\nB. 40\nC. 7\nD. 3" if hard else "cell\nB. court\nC. ring\nD. gene")
            + "\nAnswer:"
        )
        strong = rng.random() < 0.85
        weak = strong and rng.random() > (0.7 if hard else 0.05)
        if rng.random() < 0.05:  # a few prompts where only the weak model is right
            weak, strong = True, False
        out.append(
            Record(f"toy/{subj}/{i}", f"toy-{subj}", prompt, {"weak": float(weak), "strong": float(strong)})
        )
    return out


@pytest.mark.parametrize(
    "name,spec_name", [("tfidf+shape", "tfidf+shape"), ("tfidf+subject+shape", "tfidf+subject-prior+shape")]
)
def test_shape_artifact_round_trip(name, spec_name, tmp_path):
    art = train.train_two_model(toy_records(), "weak", "strong", featurizer=name, c=0.5)
    path = A.save(art, tmp_path / "shape.npz")
    loaded = A.load(path)
    spec = loaded.meta["featurizer"]
    assert spec["name"] == spec_name and spec["weights"] == [1.0, train.SHAPE_WEIGHT]
    assert spec["parts"][-1]["name"] == "shape" and spec["parts"][-1]["features"] == list(SHAPE_FEATURES)
    assert "shape/mean" in loaded.feature_arrays and "shape/std" in loaded.feature_arrays
    router, original = A.LearnedRouter(loaded), A.LearnedRouter(art)
    texts = [
        "Which of these is NOT equal to 3 + 4 + 5?\nA. 12\nB. 40\nC. 7\nD. 3\nAnswer:",
        "which law term is meant ?\nA. cell\nB. court\nC. ring\nD. gene\nAnswer:",
    ]
    batch = router.scores(texts)
    np.testing.assert_allclose(batch, original.scores(texts), atol=1e-6)
    np.testing.assert_allclose([router.scores([t])[0] for t in texts], batch, atol=1e-5)
    assert batch[0] > batch[1]
    bad = json.loads(json.dumps(spec))
    bad["parts"][-1]["version"] = 99
    with pytest.raises(ValueError, match="'shape' is version 99"):
        check_featurizer(bad)
