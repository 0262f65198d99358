"""The learned strategy with the packaged artifact: loads offline, decides, abstains in its band."""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from router_stream.learning import artifact as A
from router_stream.routing.base import RoutingContext
from router_stream.routing.learned import LearnedConfig
from router_stream.routing.strategy_config import BuildContext
from router_stream.schemas import Request

HARD = (
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
)


def ctx() -> RoutingContext:
    return RoutingContext(key="k", candidates=("cheap", "smart"))


def test_packaged_artifact_loads_and_is_small():
    path = A.default_artifact_path()
    assert path.exists()
    assert path.stat().st_size < 6_000_000
    art = A.load()
    assert art.kind == "two-model"
    assert art.meta["format_version"] == A.FORMAT_VERSION
    assert art.meta["weak"] and art.meta["strong"]


async def test_decides_weak_or_strong_with_detail():
    strat = LearnedConfig(type="learned", weak="cheap", strong="smart").build(BuildContext())
    d = await strat.decide(Request(request_id="r1", prompt=HARD), ctx())
    assert d is not None and d.candidate in ("cheap", "smart")
    assert set(d.detail) >= {"score", "threshold"}
    assert -1.0 <= d.detail["score"] <= 1.0


async def test_threshold_override_moves_the_decision():
    req = Request(request_id="r1", prompt=HARD)
    low = (
        await LearnedConfig(type="learned", weak="cheap", strong="smart", threshold=-1.0)
        .build(BuildContext())
        .decide(req, ctx())
    )
    high = (
        await LearnedConfig(type="learned", weak="cheap", strong="smart", threshold=1.0)
        .build(BuildContext())
        .decide(req, ctx())
    )
    assert low.candidate == "smart" and high.candidate == "cheap"


async def test_abstains_inside_the_band():
    req = Request(request_id="r1", messages=[{"role": "user", "content": HARD}])
    strat = LearnedConfig(type="learned", weak="cheap", strong="smart").build(BuildContext())
    score = (await strat.decide(req, ctx())).detail["score"]
    c = ctx()
    near = LearnedConfig(
        type="learned", weak="cheap", strong="smart", threshold=score + 0.01, abstain_band=0.05
    ).build(BuildContext())
    assert await near.decide(req, c) is None
    assert "within" in c.take_note()
    far = LearnedConfig(
        type="learned", weak="cheap", strong="smart", threshold=score + 0.2, abstain_band=0.05
    ).build(BuildContext())
    assert (await far.decide(req, ctx())).candidate == "cheap"


def test_config_forms_and_referenced_candidates():
    cfg = LearnedConfig(type="learned", weak="cheap", strong="smart")
    assert cfg.referenced_candidates() == [(".weak", "cheap"), (".strong", "smart")]
    multi = LearnedConfig(type="learned", artifact="x.npz", candidates={"gpt-4-1106-preview": "smart"})
    assert multi.referenced_candidates() == [(".candidates['gpt-4-1106-preview']", "smart")]
    with pytest.raises(ValidationError):
        LearnedConfig(type="learned", weak="cheap")
    with pytest.raises(ValidationError):
        LearnedConfig(type="learned")
    with pytest.raises(ValidationError):
        LearnedConfig(type="learned", weak="a", strong="b", candidates={"m": "c"})


def test_two_model_artifact_refuses_a_candidates_mapping():
    with pytest.raises(A.ArtifactError, match="two-model"):
        LearnedConfig(type="learned", candidates={"gpt-4-1106-preview": "smart"}).build(BuildContext())


def test_featurizer_expectation_is_checked():
    with pytest.raises(A.ArtifactError, match="featurizer"):
        LearnedConfig(type="learned", weak="a", strong="b", featurizer="no-such").build(BuildContext())


def _rewrite(tmp_path: Path, **changes) -> Path:
    with np.load(A.default_artifact_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    for k, v in changes.items():
        if k == "featurizer_version":
            meta["featurizer"]["version"] = v
        else:
            meta[k] = v
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = tmp_path / "a.npz"
    np.savez(out, **arrays)
    return out


def test_version_and_featurizer_mismatch_are_clear_errors(tmp_path):
    with pytest.raises(A.ArtifactError, match="format version 99"):
        A.load(_rewrite(tmp_path, format_version=99))
    with pytest.raises(A.ArtifactError, match="version 7 in the artifact"):
        A.load(_rewrite(tmp_path, featurizer_version=7))
    with pytest.raises(A.ArtifactError, match="not found"):
        A.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(A.ArtifactError, match="not a learned-router artifact"):
        A.load(tmp_path / "junk.npz")


def test_round_trip_keeps_scores(tmp_path):
    art = A.load()
    before = A.LearnedRouter(art).scores([HARD, "hello"])
    A.save(art, tmp_path / "copy.npz")
    after = A.LearnedRouter(A.load(tmp_path / "copy.npz")).scores([HARD, "hello"])
    np.testing.assert_allclose(before, after, rtol=1e-6)
    # the single-text fast path equals the batch path
    one = A.LearnedRouter(art)
    np.testing.assert_allclose([one.scores([HARD])[0], one.scores(["hello"])[0]], before, atol=1e-5)
