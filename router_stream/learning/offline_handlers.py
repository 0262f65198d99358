"""The handlers of ``router-stream train | calibrate | eval``: each takes the parsed namespace,
checks it before any slow work, runs the learning code (:mod:`.train`, :mod:`.artifact`) and
returns an exit code (0 done, 2 a bad argument or input, with the reason on stderr).

:func:`format_report` is the text form of a training or evaluation report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .data import SAMPLE_DATA, is_held_out, load_jsonl, load_prompts, split
from .offline_args import (
    KINDS,
    SUBSET_OF_KIND,
    check_band,
    check_limit,
    check_out,
    check_share,
    data_path,
    fail,
    first_problem,
    save_artifact,
)


def train_command(args: argparse.Namespace) -> int:
    from .train import run_training

    problem = first_problem(
        check_limit(args.limit),
        check_share(args.strong_share),
        None if math.isfinite(args.c) and args.c > 0 else f"--C must be a positive number (got {args.c})",
        check_band(args.abstain_band),
        None if args.embed_dim >= 1 else f"--embed-dim must be a positive integer (got {args.embed_dim})",
        None
        if 0.0 <= args.test_fraction < 1.0
        else f"--test-fraction must be at least 0 and below 1 (got {args.test_fraction})",
        check_out(args.out),
    )
    if problem:
        return fail(problem)
    try:
        records = load_jsonl(data_path(args), args.subset, args.limit)
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
            KINDS[args.subset],
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
        return fail(str(exc))
    try:
        path = save_artifact(art, args.out)
    except (OSError, ValueError) as exc:
        return fail(f"cannot write {args.out}: {exc}")
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, featurizer {art.featurizer_id}, "
        f"threshold {art.threshold:.4f})"
    )
    if report:
        print(format_report(report))
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .train import threshold_for_cost_share, threshold_for_share

    problem = first_problem(
        check_share(args.strong_share),
        check_limit(args.limit),
        check_band(args.abstain_band),
        check_out(args.out) if args.out is not None else None,
    )
    if problem:
        return fail(problem)
    try:
        art = A.load(args.artifact)
        router = A.LearnedRouter(art)
        prompts = load_prompts(data_path(args))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    if not args.all:
        if prompts and all(p.id is not None for p in prompts):
            test_fraction = float((art.meta.get("trained_on") or {}).get("test_fraction", 0.2))
            held = [p for p in prompts if is_held_out(p.id or "", test_fraction)]
            if not held:
                return fail(
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
        return fail(f"no prompts to calibrate on in {args.data}")
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
        return fail(str(exc))
    if args.abstain_band is not None:
        art.meta["abstain_band"] = args.abstain_band
    target = args.out or args.artifact
    try:
        out = save_artifact(art, target)
    except (OSError, ValueError) as exc:
        return fail(f"cannot write {target}: {exc}")
    print(f"threshold {art.threshold:.4f} for share {args.strong_share} on {len(texts)} prompts -> {out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from . import artifact as A
    from .held_out import evaluate_multi_model, evaluate_two_model

    problem = first_problem(
        check_limit(args.limit),
        None
        if 0.0 < args.test_fraction <= 1.0
        else f"--test-fraction must be above 0 and at most 1 (got {args.test_fraction})",
    )
    if problem:
        return fail(problem)
    try:
        art = A.load(args.artifact)
        router = A.LearnedRouter(art)
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    subset = SUBSET_OF_KIND[art.kind]
    if args.subset is not None and args.subset != subset:
        return fail(
            f"--subset {args.subset} contradicts the artifact {art.path}: it is {art.kind}, "
            f"evaluated on --subset {subset} (eval takes the subset from the artifact)"
        )
    if art.kind == "two-model":
        for flag, given in (("--weak", args.weak), ("--strong", args.strong)):
            have = art.meta[flag[2:]]
            if given is not None and given != have:
                return fail(
                    f"{flag} {given!r} contradicts the artifact {art.path}, whose {flag[2:]} model is {have!r}"
                )
    elif args.weak is not None or args.strong is not None:
        return fail(f"--weak/--strong are for two-model artifacts; {art.path} is {art.kind}")
    trained_fraction = (art.meta.get("trained_on") or {}).get("test_fraction")
    if trained_fraction is not None and args.test_fraction > float(trained_fraction):
        print(
            f"warning: the artifact was trained with --test-fraction {trained_fraction}; with "
            f"{args.test_fraction} some evaluation rows were training rows",
            file=sys.stderr,
        )
    try:
        records = load_jsonl(data_path(args), subset, args.limit)
    except (OSError, ValueError) as exc:
        return fail(str(exc))
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
        return fail(
            f"no held-out rows of {args.data} {what} ({len(records)} records read, "
            f"{len(test)} held out; raise --limit or check --data)"
        )
    if art.kind == "two-model" and not args.no_baseline and not train:
        return fail(
            "no train rows left for the TF-IDF+LR baseline (lower --test-fraction or pass --no-baseline)"
        )
    try:
        if art.kind == "two-model":
            report = evaluate_two_model(router, test, None if args.no_baseline else train)
        else:
            report = evaluate_multi_model(router, test)
    except ValueError as exc:
        return fail(f"evaluation failed: {exc}")
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
