"""Routing training data: load the jsonl records and split them stably.

One record a line: ``{"id", "source", "prompt", "scores": {model: 0..1}, "costs": {model: USD}}``
(see ``../shared/README.md``). The held-out split is a pure function of the record id (a hash,
not a random draw), so it is the same on every machine and across re-runs and re-orderings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The default ``--data``: 200 RouteLLM MMLU records shipped in the package (see
#: ``router_stream/data/routing-sample.NOTICE``), so ``train``/``calibrate``/``eval`` run out of the
#: box. Enough to try the commands; a useful router needs the full data (``--data``).
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "data" / "routing-sample.jsonl"

#: The two-model pair of the RouteLLM MMLU rows.
MMLU_WEAK = "mixtral-8x7b-instruct"
MMLU_STRONG = "gpt-4-1106-preview"

SUBSETS = ("mmlu", "routerbench", "all")


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    source: str
    prompt: str
    scores: dict[str, float]
    costs: dict[str, float] = field(default_factory=dict)


def load_jsonl(path: str | Path, subset: str = "all", limit: int | None = None) -> list[Record]:
    """Read records; ``subset`` keeps ``mmlu`` (routellm-mmlu/*), ``routerbench`` or ``all``."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, not {subset!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data not found: {path} (pass --data PATH)")
    out: list[Record] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                rec = Record(
                    id=str(raw["id"]),
                    source=str(raw.get("source", "")),
                    prompt=str(raw["prompt"]),
                    scores={str(k): float(v) for k, v in raw["scores"].items()},
                    costs={str(k): float(v) for k, v in (raw.get("costs") or {}).items()},
                )
            except KeyError as exc:
                raise ValueError(f"{path}:{lineno}: bad record (no {exc} field)") from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: bad record ({exc})") from None
            if subset == "mmlu" and not rec.source.startswith("routellm-mmlu"):
                continue
            if subset == "routerbench" and not rec.source.startswith("routerbench"):
                continue
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
    return out


@dataclass(frozen=True, slots=True)
class Prompt:
    """One line of a prompt sample (calibration needs no labels): ``id`` is None when absent."""

    id: str | None
    source: str
    prompt: str


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read a jsonl of prompts: each line a JSON object with a string ``prompt``; ``id`` and
    ``source`` are kept when present, every other field (``scores``, ``costs``...) is ignored.
    A line that is not JSON, not an object or has no string ``prompt`` raises ``ValueError``
    naming ``path:line``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path} (pass --data PATH)")
    out: list[Prompt] = []
    with path.open("rb") as fh:
        for lineno, raw_line in enumerate(fh, 1):
            try:
                line = raw_line.decode("utf-8-sig" if lineno == 1 else "utf-8")  # tolerate a BOM
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("prompt"), str):
                what = (
                    "no string 'prompt' field"
                    if isinstance(raw, dict)
                    else f"not a JSON object (a {type(raw).__name__})"
                )
                raise ValueError(f'{path}:{lineno}: {what} (each line needs {{"prompt": "..."}})')
            rid = raw.get("id")
            out.append(Prompt(None if rid is None else str(rid), str(raw.get("source") or ""), raw["prompt"]))
    return out


def stable_fraction(record_id: str, salt: str = "router-stream/split/v1") -> float:
    """A number in [0, 1) that depends only on the id (blake2b, not Python's salted hash)."""
    digest = hashlib.blake2b(f"{salt}\x1f{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_held_out(record_id: str, test_fraction: float = 0.2) -> bool:
    return stable_fraction(record_id) < test_fraction


def split(records: Iterable[Record], test_fraction: float = 0.2) -> tuple[list[Record], list[Record]]:
    """(train, held-out): a record is held out iff the hash of its id falls below the fraction."""
    train: list[Record] = []
    test: list[Record] = []
    for rec in records:
        (test if is_held_out(rec.id, test_fraction) else train).append(rec)
    return train, test


def models_in(records: Sequence[Record], need_costs: bool = False) -> list[str]:
    """Models scored (and, with ``need_costs``, priced) on at least half the records, sorted."""
    counts: dict[str, int] = {}
    for rec in records:
        for m in rec.scores:
            if not need_costs or m in rec.costs:
                counts[m] = counts.get(m, 0) + 1
    return sorted(m for m, c in counts.items() if c * 2 >= len(records))


def pair_rows(records: Sequence[Record], weak: str, strong: str) -> list[Record]:
    """The records that score both models of a two-model pair (training and evaluation use only these)."""
    return [r for r in records if weak in r.scores and strong in r.scores]
