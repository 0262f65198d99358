"""The ``tfidf`` featurizer: hashed word and char n-grams, sublinear tf x idf, L2-normalised.

Hashing means no vocabulary to ship (the artifact holds only the idf of each bucket), and
:func:`hashed_counts` is the serving path's fast route through the hashing for one prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def hashed_counts(vec: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """One text through a ``HashingVectorizer`` (no norm, no alternate sign): sorted bucket
    indices (int64) and counts (float32), exactly as ``vec.transform([text])`` would give.

    ``transform`` builds and validates a scipy matrix per call, about 2/3 of the learned
    strategy's time per request on short prompts; this calls the same analyzer and the same
    MurmurHash3 hashing (sklearn's Cython ``_hashing_fast.transform``, seed 0) and sums the
    duplicates with numpy. If that private function moves, it falls back to ``transform``.
    """
    analyzer = getattr(vec, "_router_stream_analyzer", None)
    if analyzer is None:
        analyzer = vec.build_analyzer()
        vec._router_stream_analyzer = analyzer
    if _hashing_transform is not None:
        indices, _indptr, values = _hashing_transform(
            [((f, 1) for f in analyzer(text))], vec.n_features, np.float32, False, 0
        )
        if len(indices) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        uniq, inverse = np.unique(indices, return_inverse=True)
        return uniq.astype(np.int64), np.bincount(inverse, weights=values).astype(np.float32)
    x = vec.transform([text])
    return x.indices.astype(np.int64), x.data.astype(np.float32)


try:  # the Cython hashing HashingVectorizer itself uses (private: hence the fallback above)
    from sklearn.feature_extraction._hashing_fast import transform as _hashing_transform
except ImportError:  # pragma: no cover - depends on the installed scikit-learn
    _hashing_transform = None


class TfidfFeaturizer:
    """Hashed word 1-2-grams and char 2-5-grams (within word boundaries), sublinear tf × idf, L2.

    Hashing (scikit-learn's MurmurHash3, the same on every platform) means no vocabulary to ship:
    the artifact holds only the idf of each hash bucket.
    """

    name = "tfidf"
    version = 1

    def __init__(
        self, word_bits: int = 16, char_bits: int = 16, idf: np.ndarray | None = None, max_chars: int = 4000
    ) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.word_bits, self.char_bits = int(word_bits), int(char_bits)
        self.max_chars = int(max_chars)  # only the head of very long prompts is read
        common = {"alternate_sign": False, "norm": None, "lowercase": True, "dtype": np.float32}
        self._word = HashingVectorizer(n_features=2**self.word_bits, ngram_range=(1, 2), **common)
        self._char = HashingVectorizer(
            n_features=2**self.char_bits, analyzer="char_wb", ngram_range=(2, 5), **common
        )
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        if self.idf is not None and self.idf.shape != (self.dim,):
            raise ValueError(f"tfidf idf has shape {self.idf.shape}, expected ({self.dim},)")

    @property
    def dim(self) -> int:
        return 2**self.word_bits + 2**self.char_bits

    def _counts(self, texts: Sequence[str]) -> Any:

        # word and char blocks are normalised separately so neither drowns the other
        blocks = []
        texts = [t[: self.max_chars] for t in texts]
        for vec in (self._word, self._char):
            x = vec.transform(texts).tocsr()
            x.data = np.log1p(x.data)  # sublinear tf
            blocks.append(x)
        return blocks

    def fit(self, texts: Sequence[str]) -> TfidfFeaturizer:
        import scipy.sparse as sp

        x = sp.hstack(self._counts(texts)).tocsr()
        df = np.bincount(x.indices, minlength=self.dim).astype(np.float64)
        n = len(texts)
        self.idf = (np.log((1 + n) / (1 + df)) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        if self.idf is None:
            raise RuntimeError("TfidfFeaturizer used before fit")
        out = []
        offset = 0
        for x in self._counts(texts):
            x = x.multiply(self.idf[offset : offset + x.shape[1]]).tocsr()
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            out.append(sp.diags(1.0 / norms / np.sqrt(2.0)) @ x)
            offset += x.shape[1]
        return sp.hstack(out).tocsr().astype(np.float32)

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of one text's feature row, without scipy's per-call overhead."""
        if self.idf is None:
            raise RuntimeError("TfidfFeaturizer used before fit")
        text = text[: self.max_chars]
        idx_parts, val_parts = [], []
        offset = 0
        for vec in (self._word, self._char):
            hashed, counts = hashed_counts(vec, text)
            idx = hashed + offset
            val = np.log1p(counts) * self.idf[idx]
            norm = float(np.sqrt(np.dot(val, val)))
            if norm > 0:
                val /= norm * np.sqrt(2.0)
            idx_parts.append(idx)
            val_parts.append(val)
            offset += vec.n_features
        return np.concatenate(idx_parts), np.concatenate(val_parts).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "word_bits": self.word_bits,
            "char_bits": self.char_bits,
            "max_chars": self.max_chars,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.idf is not None
        return {"tfidf/idf": self.idf}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfFeaturizer:
        return cls(spec["word_bits"], spec["char_bits"], idf=arrays["tfidf/idf"], max_chars=spec["max_chars"])
