"""What the offline commands (``train``, ``calibrate``, ``eval``) share: the subset names, the
``--data`` default, the argument checks run before any slow work, and saving an artifact.

Apart from the handlers (:mod:`.offline_handlers`) and the parsers (:mod:`.offline_commands`) so
both read the same names and every refusal has one wording.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from .data import SAMPLE_DATA

SAMPLE_HELP = (
    "default: a 200-record sample shipped in the package (RouteLLM MMLU rows): enough to try the "
    "command, not to train a useful router"
)
#: ``--subset`` -> the artifact kind it trains (and back, for ``eval``)
KINDS = {"mmlu": "two-model", "routerbench": "multi-model"}
SUBSET_OF_KIND = {kind: subset for subset, kind in KINDS.items()}


def data_path(args: argparse.Namespace) -> Path:
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


def fail(msg: str) -> int:
    """Print the refusal on stderr; 2 is the usage exit code of every command."""
    print(f"error: {msg}", file=sys.stderr)
    return 2


# ---- argument checks (before any slow work) -------------------------------------------------


def check_limit(v: int | None) -> str | None:
    return None if v is None or v >= 1 else f"--limit must be a positive integer (got {v})"


def check_share(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else f"--strong-share must be between 0 and 1 (got {v})"


def check_band(v: float | None) -> str | None:
    return (
        None
        if v is None or (math.isfinite(v) and v >= 0.0)
        else f"--abstain-band must be a number >= 0 (got {v})"
    )


def check_out(path: Path, flag: str = "--out") -> str | None:
    """Refuse up front an output path that cannot be a file (before a minute of training)."""
    if path.is_dir():
        return f"{flag} {path} is a directory; give a file name, e.g. {path / 'router.npz'}"
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        return f"{flag} {path}: {anc} is not a directory"
    return None


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def save_artifact(art: Any, path: Path) -> Path:
    """Save, saying so when the parent directory had to be created."""
    from . import artifact as A

    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
        print(f"created directory {parent}")
    return A.save(art, path)
