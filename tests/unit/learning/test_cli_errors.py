"""``router-stream train | calibrate | eval``: argument checks, prompt-only calibration samples,
help text, output directories and the eval subset check. Tiny synthetic jsonl files in tmp_path,
the packaged artifact for calibrate/eval (never written to), no shared data needed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from router_stream.cli import main
from router_stream.learning import artifact as A
from router_stream.learning.data import MMLU_STRONG, MMLU_WEAK, is_held_out, load_prompts

PACKAGED = A.default_artifact_path()
needs_packaged = pytest.mark.skipif(not PACKAGED.exists(), reason="packaged learned-router artifact missing")

WORDS = {
    "alg": "group ring field polynomial degree extension matrix eigenvalue",
    "bio": "cell protein enzyme gene membrane mitochondria species",
    "law": "court statute plaintiff contract tort defendant jury",
}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def routing_rows(n: int = 120, seed: int = 0) -> list[dict[str, object]]:
    """Two-model MMLU-like rows: the strong model's gain depends on the subject's words."""
    rng = random.Random(seed)
    gains = {"alg": 0.6, "bio": 0.1, "law": 0.3}
    out: list[dict[str, object]] = []
    for i in range(n):
        subj = sorted(WORDS)[i % 3]
        words = " ".join(rng.choice(WORDS[subj].split()) for _ in range(5))
        strong = rng.random() < 0.8
        weak = (strong and rng.random() > gains[subj]) or rng.random() < 0.05
        out.append(
            {
                "id": f"toy/{subj}/{i}",
                "source": f"routellm-mmlu/{subj}",
                "prompt": f"which of the {words} ?",
                "scores": {MMLU_WEAK: float(weak), MMLU_STRONG: float(strong)},
            }
        )
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- 1. calibrate --data: a 'prompt' per line is enough ------------------------------------------


@needs_packaged
def test_calibrate_accepts_prompt_only_lines_and_ignores_other_fields(tmp_path, capsys):
    prompts = [
        "What is 2+2?",
        "Explain renormalization in quantum field theory.",
        "Name a prime.",
        "Define a tort.",
    ]
    data = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": prompts[0]},
            {"prompt": prompts[1], "scores": None, "costs": "n/a", "extra": [1, 2]},
            "",
            {"prompt": prompts[2], "source": "mine"},
            {"prompt": prompts[3]},
        ],
    )
    out_path = tmp_path / "cal.npz"
    code, out, err = run(
        capsys,
        "calibrate",
        "--artifact",
        str(PACKAGED),
        "--strong-share",
        "0.5",
        "--data",
        str(data),
        "--out",
        str(out_path),
    )
    assert code == 0, err
    assert "on 4 prompts" in out and str(out_path) in out
    assert "no held-out split" in err  # lines without ids: every prompt is used, and it says so
    art = A.load(out_path)
    assert art.meta["calibration"] == {"strong_share": 0.5, "sample": str(data), "n": 4}
    scores = A.LearnedRouter(art).scores(prompts)
    assert np.mean(scores.astype(float) >= art.threshold) == pytest.approx(0.5)  # as served: float64


@needs_packaged
def test_calibrate_with_ids_uses_the_held_out_split_or_all(tmp_path, capsys):
    ids = [f"q{i}" for i in range(60)]
    held = [i for i in ids if is_held_out(i)]
    assert held and len(held) < len(ids)
    data = write_jsonl(
        tmp_path / "ids.jsonl", [{"id": i, "prompt": f"question {i} about a court"} for i in ids]
    )
    code, out, err = run(
        capsys,
        "calibrate",
        "--artifact",
        str(PACKAGED),
        "--strong-share",
        "0.3",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "a.npz"),
    )
    assert code == 0, err
    assert f"on {len(held)} prompts" in out and "held-out split" in err
    code, out, err = run(
        capsys,
        "calibrate",
        "--artifact",
        str(PACKAGED),
        "--strong-share",
        "0.3",
        "--all",
        "--limit",
        "7",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b.npz"),
    )
    assert code == 0, err
    assert "on 7 prompts" in out

    train_only = write_jsonl(
        tmp_path / "train_only.jsonl", [{"id": i, "prompt": "p"} for i in ids if not is_held_out(i)][:3]
    )
    code, out, err = run(
        capsys,
        "calibrate",
        "--artifact",
        str(PACKAGED),
        "--strong-share",
        "0.3",
        "--data",
        str(train_only),
        "--out",
        str(tmp_path / "c.npz"),
    )
    assert code == 2 and "held-out split" in err and "--all" in err
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize(
    "lines,where,what",
    [
        (['{"prompt": "ok"}', "not json at all"], 2, "not JSON"),
        (['{"prompt": "ok"}', "", '{"id": "x", "text": "no prompt"}'], 3, "no string 'prompt'"),
        (['{"prompt": 42}'], 1, "no string 'prompt'"),
        (['["a", "list"]'], 1, "not a JSON object"),
        (['{"prompt": "ok"'], 1, "not JSON"),
    ],
)
def test_calibrate_names_file_and_line_of_a_bad_prompt_line(tmp_path, capsys, lines, where, what):
    data = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=rf"bad\.jsonl:{where}: {what}"):
        load_prompts(data)
    # the artifact is loaded first, so a missing artifact would mask the data error: use the packaged one
    if PACKAGED.exists():
        code, out, err = run(
            capsys,
            "calibrate",
            "--artifact",
            str(PACKAGED),
            "--strong-share",
            "0.3",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "x.npz"),
        )
        assert code == 2 and out == ""
        assert err.startswith(f"error: {data}:{where}: {what}")
        assert "Traceback" not in err


def test_load_prompts_tolerates_bom_and_keeps_ids(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 7, "prompt": "a"}\r\n{"prompt": "b", "source": null}\n')
    got = load_prompts(path)
    assert [(p.id, p.source, p.prompt) for p in got] == [("7", "", "a"), (None, "", "b")]
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bom\.jsonl:2: not UTF-8"):
        load_prompts(path)


# ---- 2. argument checks: a clear error and exit 2, before any data is read -----------------------

MISSING = "/nonexistent/routing.jsonl"  # validation must come first: this file is never opened


@pytest.mark.parametrize(
    "argv,message",
    [
        (["calibrate", "--strong-share", "1.5"], "--strong-share must be between 0 and 1 (got 1.5)"),
        (["calibrate", "--strong-share", "-0.1"], "--strong-share must be between 0 and 1 (got -0.1)"),
        (["calibrate", "--strong-share", "nan"], "--strong-share must be between 0 and 1 (got nan)"),
        (
            ["calibrate", "--strong-share", "0.3", "--limit", "-3"],
            "--limit must be a positive integer (got -3)",
        ),
        (
            ["calibrate", "--strong-share", "0.3", "--limit", "0"],
            "--limit must be a positive integer (got 0)",
        ),
        (
            ["calibrate", "--strong-share", "0.3", "--abstain-band", "-0.1"],
            "--abstain-band must be a number >= 0 (got -0.1)",
        ),
        (["train", "--strong-share", "1.5"], "--strong-share must be between 0 and 1 (got 1.5)"),
        (["train", "--C", "0"], "--C must be a positive number (got 0.0)"),
        (["train", "--C", "-1"], "--C must be a positive number (got -1.0)"),
        (["train", "--C", "inf"], "--C must be a positive number (got inf)"),
        (["train", "--limit", "-5"], "--limit must be a positive integer (got -5)"),
        (["train", "--embed-dim", "0"], "--embed-dim must be a positive integer (got 0)"),
        (["train", "--abstain-band", "-1"], "--abstain-band must be a number >= 0 (got -1.0)"),
        (["train", "--test-fraction", "1"], "--test-fraction must be at least 0 and below 1 (got 1.0)"),
        (["train", "--test-fraction", "-0.2"], "--test-fraction must be at least 0 and below 1 (got -0.2)"),
        (["eval", "--limit", "-1"], "--limit must be a positive integer (got -1)"),
        (["eval", "--test-fraction", "0"], "--test-fraction must be above 0 and at most 1 (got 0.0)"),
        (["eval", "--test-fraction", "1.5"], "--test-fraction must be above 0 and at most 1 (got 1.5)"),
    ],
)
def test_bad_arguments_fail_cleanly_before_reading_data(tmp_path, capsys, argv, message):
    cmd, *rest = argv
    extra = {
        "train": ["--out", str(tmp_path / "o.npz")],
        "calibrate": ["--artifact", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o.npz")],
        "eval": ["--artifact", str(tmp_path / "missing.npz")],
    }[cmd]
    code, out, err = run(capsys, cmd, *rest, *extra, "--data", MISSING)
    assert code == 2
    assert err == f"error: {message}\n"
    assert out == "" and not (tmp_path / "o.npz").exists()


@needs_packaged
@pytest.mark.parametrize("share", ["0", "1"])
def test_calibrate_accepts_the_bounds_of_the_share(tmp_path, capsys, share):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"prompt number {i} on law"} for i in range(10)])
    code, _out, err = run(
        capsys,
        "calibrate",
        "--artifact",
        str(PACKAGED),
        "--strong-share",
        share,
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o.npz"),
    )
    assert code == 0, err
    art = A.load(tmp_path / "o.npz")
    expected = 0.0 if share == "0" else 1.0
    scores = A.LearnedRouter(art).scores([f"prompt number {i} on law" for i in range(10)])
    assert np.mean(scores.astype(float) >= art.threshold) == expected  # as served: float64


# ---- 3. train --help ----------------------------------------------------------------------------


def test_train_help_has_no_doubled_percent(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "%%" not in text and "80%" in text and "--test-fraction" in text
    for cmd in ("calibrate", "eval"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "%%" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "CPT(50%)" in top and "%%" not in top


# ---- 4. train --out: a missing directory is created and reported; impossible paths refused --------


def test_train_reports_a_created_directory(tmp_path, capsys):
    data = write_jsonl(tmp_path / "routing.jsonl", routing_rows())
    out_path = tmp_path / "new" / "deeper" / "x.npz"
    code, out, err = run(capsys, "train", "--data", str(data), "--no-eval", "--out", str(out_path))
    assert code == 0, err
    assert f"created directory {out_path.parent}\n" in out
    assert f"wrote {out_path}" in out
    assert A.load(out_path).kind == "two-model"
    # an existing directory: no message about creating it
    code, out, err = run(
        capsys,
        "train",
        "--data",
        str(data),
        "--no-eval",
        "--limit",
        "100",
        "--out",
        str(tmp_path / "again.npz"),
    )
    assert code == 0, err
    assert "created directory" not in out


def test_train_refuses_an_out_path_that_cannot_be_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for bad, why in ((tmp_path, "is a directory"), (tmp_path / "a_file" / "x.npz", "is not a directory")):
        code, _out, err = run(capsys, "train", "--data", MISSING, "--out", str(bad))
        assert code == 2 and why in err and err.startswith(f"error: --out {bad}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_load_errors_name_the_missing_field(tmp_path, capsys):
    """eval needs labelled rows: a prompt-only file gets a readable error, not a bare KeyError repr."""
    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}])
    code, _out, err = run(capsys, "train", "--data", str(data), "--out", str(tmp_path / "o.npz"))
    assert code == 2 and err == f"error: {data}:1: bad record (no 'scores' field)\n"


# ---- 5. eval --subset / --weak / --strong follow the artifact ------------------------------------


def test_eval_help_says_the_subset_comes_from_the_artifact(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the subset always follows the artifact" in text and "refused" in text


@needs_packaged
@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--subset", "routerbench", "--subset routerbench contradicts the artifact"),
        ("--weak", "some-other-model", "--weak 'some-other-model' contradicts the artifact"),
        ("--strong", "gpt-3.5", "--strong 'gpt-3.5' contradicts the artifact"),
    ],
)
def test_eval_refuses_options_that_contradict_the_artifact(capsys, flag, value, message):
    code, out, err = run(capsys, "eval", "--artifact", str(PACKAGED), flag, value, "--data", MISSING)
    assert code == 2 and err.startswith(f"error: {message}") and out == ""


@needs_packaged
def test_eval_runs_with_a_matching_subset_and_explains_empty_splits(tmp_path, capsys):
    data = write_jsonl(tmp_path / "routing.jsonl", routing_rows(90))
    code, out, err = run(
        capsys,
        "eval",
        "--artifact",
        str(PACKAGED),
        "--subset",
        "mmlu",
        "--weak",
        MMLU_WEAK,
        "--data",
        str(data),
        "--no-baseline",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["n"] > 0
    # nothing held out: a clear error instead of a StopIteration traceback
    ids = [r for r in routing_rows(90) if not is_held_out(str(r["id"]))][:5]
    code, out, err = run(
        capsys,
        "eval",
        "--artifact",
        str(PACKAGED),
        "--no-baseline",
        "--data",
        str(write_jsonl(tmp_path / "train_only.jsonl", ids)),
    )
    assert code == 2 and "no held-out rows" in err
    # everything held out: the baseline has nothing to train on
    code, out, err = run(
        capsys, "eval", "--artifact", str(PACKAGED), "--test-fraction", "1", "--data", str(data)
    )
    assert code == 2 and "--no-baseline" in err and "Traceback" not in err
    assert "some evaluation rows were training rows" in err  # 1 > the artifact's 0.2
