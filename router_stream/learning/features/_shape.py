"""The ``shape`` featurizer: structural cues of a multiple-choice prompt (lengths, digits,
math and code tokens, case-sensitive negations, answer formats), standardised.

Pure Python + numpy; appended to the TF-IDF row with a small weight (``tfidf+shape``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_SHAPE_OPT = re.compile(r"^\s*([A-J])[\.\)]\s?(.*)$")
_SHAPE_NUM = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_SHAPE_NUMERIC_OPT = re.compile(r"^\s*[-+$]?\s*\d[\d.,/\s%]*[a-zA-Zµ°%/²³^\-\s]{0,12}$")
_SHAPE_MATH = re.compile(r"[=+*/^<>≤≥√∑∫π±×÷∞≈≠∂∆]|\b(?:sqrt|log|ln|sin|cos|tan|lim|mod)\b")
_SHAPE_LATEX = re.compile(r"\\[a-zA-Z]+|\$|_\{|\^\{|\^\d|_\d")
_SHAPE_NEG_UP = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|INCORRECT|NEVER|NO)\b")
_SHAPE_NEG_LO = re.compile(r"\b(?:not|except|least|false|incorrect|never|cannot|untrue)\b", re.I)
_SHAPE_AOTA = re.compile(r"\b(?:all of the above|none of the above|all of these|none of these)\b", re.I)
_SHAPE_BOTH = re.compile(r"^\s*(?:both|neither)\b", re.I)
_SHAPE_ROMAN = re.compile(
    r"(?:^|\s|\()(?:I|II|III|IV|V|VI)[\.\):](?=\s)|\b(?:I|II|III|IV) (?:and|only|,)", re.M
)
_SHAPE_ROMAN_OPT = re.compile(r"\b(?:I|II|III|IV)\b")
_SHAPE_STATEMENT = re.compile(r"Statement \d\s*\|")
_SHAPE_CODE = re.compile(
    r"(?:\bdef |\breturn\b|\bint |\bvoid |\bprint\(|==|!=|\+\+|;\s*$|[{}]|\bfor \(|\bwhile \(|"
    r"\bIF\b|\bTHEN\b|\bREPEAT\b|←)",
    re.M,
)
_SHAPE_TF_OPT = re.compile(r"^(?:true|false)(?:\s*,\s*(?:true|false))*$", re.I)
_SHAPE_QUOTE = re.compile(r"[\"“”]")
_SHAPE_CAPWORD = re.compile(r"\b[A-Z][a-z]+")
_SHAPE_WORD = re.compile(r"\w+")
_SHAPE_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")

#: The features of :func:`shape_features`, in order (part of the ``shape`` featurizer's spec).
SHAPE_FEATURES = (
    "log_len",
    "log_stem_len",
    "log_opts_len",
    "stem_share",
    "n_options",
    "log_opt_mean",
    "opt_len_cv",
    "log_opt_max_min",
    "digit_share",
    "digit_share_opts",
    "numeric_opts",
    "log_nums_stem",
    "log_math",
    "log_latex",
    "upper_share",
    "neg_upper",
    "neg_lower",
    "aota",
    "both_neither_opt",
    "roman",
    "roman_opts",
    "statement_pair",
    "code",
    "ends_q",
    "fill_in",
    "log_lines",
    "tf_opts",
    "log_quotes",
    "log_sentences",
    "mean_word_len",
    "capword_share",
    "comma_opts",
)


def split_choices(text: str) -> tuple[str, list[str]]:
    """(stem, options) of a multiple-choice prompt: the options are the trailing run of lines
    labelled ``A.`` / ``B)`` ... (a final ``Answer:`` line is dropped); no options -> all stem."""
    lines = text.rstrip().split("\n")
    if lines and lines[-1].strip().lower().startswith("answer"):
        lines = lines[:-1]
    opts: list[str] = []
    i = len(lines) - 1
    while i >= 0:
        m = _SHAPE_OPT.match(lines[i])
        if not m:
            break
        opts.append(m.group(2))
        i -= 1
    opts.reverse()
    return "\n".join(lines[: i + 1]), opts


def shape_features(text: str, max_chars: int = 4000) -> list[float]:
    """Hand-crafted structural cues of how hard a (multiple-choice) prompt is, raw (unscaled):
    lengths of the stem and options, digits / math / LaTeX-ish / code tokens, case-sensitive
    negation cues ("NOT", "EXCEPT"; TF-IDF lowercases), "all/none of the above", roman-numeral
    and "Statement 1 |" formats, question mark vs fill-in ending. Names: :data:`SHAPE_FEATURES`."""
    t = text[:max_chars]
    stem, opts = split_choices(t)
    n = max(len(t), 1)
    ol = np.array([len(o) for o in opts], float) if opts else np.zeros(1)
    opts_text = "\n".join(opts)
    letters = [c for c in t if c.isalpha()]
    words = _SHAPE_WORD.findall(stem)
    s = stem.rstrip()
    return [
        math.log1p(len(t)),
        math.log1p(len(stem)),
        math.log1p(len(opts_text)),
        len(stem) / max(len(stem) + len(opts_text), 1),
        float(len(opts)),
        math.log1p(ol.mean()),
        float(ol.std() / (ol.mean() + 1.0)),
        math.log((ol.max() + 1.0) / (ol.min() + 1.0)),
        sum(c.isdigit() for c in t) / n,
        sum(c.isdigit() for c in opts_text) / max(len(opts_text), 1),
        (sum(bool(_SHAPE_NUMERIC_OPT.match(o)) for o in opts) / len(opts)) if opts else 0.0,
        math.log1p(len(_SHAPE_NUM.findall(stem))),
        math.log1p(len(_SHAPE_MATH.findall(t))),
        math.log1p(len(_SHAPE_LATEX.findall(t))),
        (sum(c.isupper() for c in letters) / len(letters)) if letters else 0.0,
        float(bool(_SHAPE_NEG_UP.search(stem))),
        float(bool(_SHAPE_NEG_LO.search(stem))),
        float(bool(_SHAPE_AOTA.search(opts_text))),
        float(any(_SHAPE_BOTH.match(o) for o in opts)),
        float(bool(_SHAPE_ROMAN.search(stem))),
        float(sum(bool(_SHAPE_ROMAN_OPT.search(o)) for o in opts) >= 2),
        float(bool(_SHAPE_STATEMENT.search(stem))),
        math.log1p(len(_SHAPE_CODE.findall(t))),
        float(s.endswith("?")),
        float(s.endswith(("_", ":")) or "___" in s or (bool(s) and s[-1].isalnum())),
        math.log1p(t.count("\n")),
        float(bool(opts) and all(_SHAPE_TF_OPT.match(o.strip()) for o in opts)),
        math.log1p(len(_SHAPE_QUOTE.findall(t))),
        math.log1p(len(_SHAPE_SENTENCE_END.findall(stem))),
        (sum(len(w) for w in words) / len(words)) if words else 0.0,
        (len(_SHAPE_CAPWORD.findall(stem)) / len(words)) if words else 0.0,
        (sum(("," in o) or (" and " in o) for o in opts) / len(opts)) if opts else 0.0,
    ]


class ShapeFeaturizer:
    """:func:`shape_features`, standardised with the training rows' mean and standard deviation
    and clipped to ±``clip`` (a dense block of ``len(SHAPE_FEATURES)`` columns). Appended to the
    TF-IDF row with a small weight (``tfidf+shape``, ``tfidf+subject+shape``). Pure Python + numpy."""

    name = "shape"
    version = 1

    def __init__(
        self,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        max_chars: int = 4000,
        clip: float = 5.0,
    ) -> None:
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.std = None if std is None else np.asarray(std, np.float64)
        self.max_chars = int(max_chars)
        self.clip = float(clip)
        for arr in (self.mean, self.std):
            if arr is not None and arr.shape != (self.dim,):
                raise ValueError(
                    f"shape featurizer statistics have shape {arr.shape}, expected ({self.dim},)"
                )

    @property
    def dim(self) -> int:
        return len(SHAPE_FEATURES)

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([shape_features(t, self.max_chars) for t in texts], np.float64).reshape(
            len(texts), self.dim
        )

    def fit(self, texts: Sequence[str]) -> ShapeFeaturizer:
        x = self.raw(texts)
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.where(std < 1e-9, 1.0, std)  # a constant feature stays 0
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("ShapeFeaturizer used before fit")
        return np.clip((self.raw(texts) - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(self.dim, dtype=np.int64), self.transform([text])[0]

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "features": list(SHAPE_FEATURES),
            "max_chars": self.max_chars,
            "clip": self.clip,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.std is not None
        return {"shape/mean": self.mean, "shape/std": self.std}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> ShapeFeaturizer:
        if list(spec.get("features", [])) != list(SHAPE_FEATURES):
            raise ValueError(
                "the artifact's shape features differ from this router-stream's; retrain the artifact"
            )
        return cls(arrays["shape/mean"], arrays["shape/std"], spec["max_chars"], spec["clip"])
