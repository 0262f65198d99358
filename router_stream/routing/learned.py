"""A learned router: a classifier over the prompt text decides weak vs strong (or which of many).

Two-model example (the packaged artifact, trained on MMLU with mixtral-8x7b as weak and
gpt-4 as strong)::

    - type: learned
      weak: cheap
      strong: smart
      threshold: 0.05        # optional: override the artifact's calibrated threshold
      abstain_band: 0.02     # optional: abstain when |score - threshold| < band

Multi-model example (an artifact trained with ``router-stream train --subset routerbench``;
keys are the dataset's model names, values candidate names; unmapped models are never chosen)::

    - type: learned
      artifact: models/routerbench.npz
      candidates:
        mistralai/mixtral-8x7b-chat: mixtral
        gpt-3.5-turbo-1106: gpt35
        gpt-4-1106-preview: gpt4

Scoring is numpy/scipy on the request text (hashed TF-IDF by default), run inline: about
0.5 ms for a typical prompt (~300 characters), ~1.7 ms at 1,500 characters; only the first
4,000 characters are read, which bounds it at a few ms. The decision's ``detail``
carries ``score`` and ``threshold`` (and ``model`` for multi-model).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..schemas import Request
from .base import Decision, RoutingContext


class LearnedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["learned"]
    name: str = "learned"
    artifact: str = Field("default", description="artifact path; 'default' is the packaged MMLU router")
    weak: str | None = None
    strong: str | None = None
    candidates: dict[str, str] | None = Field(None, description="multi-model: dataset model name -> candidate")
    threshold: float | None = None
    abstain_band: float | None = Field(None, ge=0.0, description="default: the artifact's (0 unless set)")
    featurizer: str | None = Field(None, description="if set, the artifact's featurizer must be this (e.g. 'tfidf')")

    @model_validator(mode="after")
    def _one_form(self) -> "LearnedConfig":
        pair = self.weak is not None or self.strong is not None
        if pair and self.candidates is not None:
            raise ValueError("give either weak+strong (two-model) or candidates (multi-model), not both")
        if pair and (self.weak is None or self.strong is None):
            raise ValueError("a two-model learned router needs both 'weak' and 'strong'")
        if not pair and not self.candidates:
            raise ValueError("a learned router needs 'weak' and 'strong', or a non-empty 'candidates' mapping")
        return self

    def referenced_candidates(self) -> list[tuple[str, str]]:
        if self.candidates is not None:
            return [(f".candidates[{model!r}]", cand) for model, cand in self.candidates.items()]
        assert self.weak is not None and self.strong is not None
        return [(".weak", self.weak), (".strong", self.strong)]

    def build(self) -> "LearnedStrategy":
        return LearnedStrategy(self)


class LearnedStrategy:
    """Scores the request text with the artifact's model; abstains inside the uncertain band."""

    def __init__(self, config: LearnedConfig) -> None:
        from ..learning.artifact import ArtifactError, LearnedRouter, load

        self.name = config.name
        art = load(config.artifact)
        if config.featurizer is not None and art.meta["featurizer"]["name"] != config.featurizer:
            raise ArtifactError(
                f"{art.path}: featurizer is {art.meta['featurizer']['name']!r}, config expects {config.featurizer!r}"
            )
        self._router = LearnedRouter(art)
        self.threshold = art.threshold if config.threshold is None else float(config.threshold)
        self.band = art.abstain_band if config.abstain_band is None else float(config.abstain_band)
        self.artifact_id = f"{art.featurizer_id}:{art.digest()}"
        self._two = art.kind == "two-model"
        if self._two:
            if config.candidates is not None:
                raise ArtifactError(f"{art.path} is a two-model artifact: configure 'weak' and 'strong', not 'candidates'")
            assert config.weak is not None and config.strong is not None
            self._weak, self._strong = config.weak, config.strong
        else:
            if config.candidates is None:
                raise ArtifactError(
                    f"{art.path} is a multi-model artifact: configure 'candidates' mapping its models "
                    f"({', '.join(art.models)}) to candidate names"
                )
            unknown = sorted(set(config.candidates) - set(art.models))
            if unknown:
                raise ArtifactError(f"{art.path} has no model(s) {unknown}; it knows: {', '.join(art.models)}")
            self._allowed = [art.models.index(m) for m in config.candidates]
            self._target = {art.models.index(m): c for m, c in config.candidates.items()}

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        text = request.text()
        if self._two:
            score = float(self._router.scores([text])[0])
            detail = {"score": round(score, 6), "threshold": self.threshold, "artifact": self.artifact_id}
            if abs(score - self.threshold) < self.band:
                ctx.explain(f"score {score:.4f} within ±{self.band} of threshold {self.threshold:.4f}")
                return None
            if score >= self.threshold:
                return Decision(self._strong, reason=f"learned score {score:.4f} >= {self.threshold:.4f}", detail=detail)
            return Decision(self._weak, reason=f"learned score {score:.4f} < {self.threshold:.4f}", detail=detail)
        probs = self._router.probabilities([text])
        pick = int(self._router.choose(probs, self.threshold, self._allowed)[0])
        p = float(probs[0, pick])
        model = self._router.models[pick]
        detail = {"score": round(p, 6), "threshold": self.threshold, "model": model, "artifact": self.artifact_id}
        if abs(p - self.threshold) < self.band:
            ctx.explain(f"P(success) {p:.4f} of {model} within ±{self.band} of threshold {self.threshold:.4f}")
            return None
        return Decision(self._target[pick], reason=f"cheapest model with P(success) >= {self.threshold:.4f}: {model}"
                        if p >= self.threshold else f"no model reaches {self.threshold:.4f}; most likely: {model}",
                        detail=detail)
