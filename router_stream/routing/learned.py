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

Online recalibration (two-model only) holds the share of strong decisions at a target by moving
the threshold, one small step per decision (docs/learned-router.md, "Online recalibration")::

    - type: learned
      weak: cheap
      strong: smart
      recalibrate:
        target_strong_share: 0.3
        window: 1000             # horizon of the measured share (decisions)
        step: 0.002              # threshold change per decision, times (strong? 1 : 0) - target
        min_threshold: -0.5      # optional bounds
        max_threshold: 0.8

The controller's state (threshold, measured share, decision count) lives in the partition's
state store under ``c:recal:<name>``, written in the same Kafka transaction as the outputs and
restored from the changelog: one controller per input partition. Without a state store
(``ctx.state`` is None: ``router-stream explain``, tests) the configured threshold is used.
The decision's ``detail`` then also carries ``controller_share`` and ``controller_n``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..schemas import Request
from .base import Decision, RoutingContext, StrategyState
from .strategy_config import BuildContext, StrategyConfigBase


class RecalibrateConfig(BaseModel):
    """Online recalibration: move the threshold so that ``target_strong_share`` of decisions are strong."""

    model_config = ConfigDict(extra="forbid")

    target_strong_share: float = Field(gt=0.0, lt=1.0, description="wanted share of strong decisions")
    window: int = Field(1000, ge=10, le=10_000_000, description="horizon (decisions) of the measured share")
    step: float = Field(
        0.002,
        gt=0.0,
        allow_inf_nan=False,
        description="threshold change per decision: step * (strong - target)",
    )
    min_threshold: float | None = Field(None, allow_inf_nan=False)
    max_threshold: float | None = Field(None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> RecalibrateConfig:
        if (
            self.min_threshold is not None
            and self.max_threshold is not None
            and self.min_threshold >= self.max_threshold
        ):
            raise ValueError(
                f"min_threshold {self.min_threshold} must be below max_threshold {self.max_threshold}"
            )
        return self

    def clamp(self, threshold: float) -> float:
        if self.min_threshold is not None:
            threshold = max(self.min_threshold, threshold)
        if self.max_threshold is not None:
            threshold = min(self.max_threshold, threshold)
        return threshold


class LearnedConfig(StrategyConfigBase):
    type: Literal["learned"]
    name: str = "learned"
    artifact: str = Field("default", description="artifact path; 'default' is the packaged MMLU router")
    weak: str | None = None
    strong: str | None = None
    candidates: dict[str, str] | None = Field(
        None, description="multi-model: dataset model name -> candidate"
    )
    threshold: float | None = None
    abstain_band: float | None = Field(None, ge=0.0, description="default: the artifact's (0 unless set)")
    featurizer: str | None = Field(
        None, description="if set, the artifact's featurizer must be this (e.g. 'tfidf')"
    )
    recalibrate: RecalibrateConfig | None = Field(
        None, description="two-model: hold the strong share at a target"
    )

    @model_validator(mode="after")
    def _one_form(self) -> LearnedConfig:
        pair = self.weak is not None or self.strong is not None
        if pair and self.candidates is not None:
            raise ValueError("give either weak+strong (two-model) or candidates (multi-model), not both")
        if pair and (self.weak is None or self.strong is None):
            raise ValueError("a two-model learned router needs both 'weak' and 'strong'")
        if not pair and not self.candidates:
            raise ValueError(
                "a learned router needs 'weak' and 'strong', or a non-empty 'candidates' mapping"
            )
        if self.recalibrate is not None and not pair:
            raise ValueError("recalibrate needs a two-model learned router ('weak' and 'strong')")
        return self

    def referenced_candidates(self) -> list[tuple[str, str]]:
        if self.candidates is not None:
            return [(f".candidates[{model!r}]", cand) for model, cand in self.candidates.items()]
        assert self.weak is not None and self.strong is not None
        return [(".weak", self.weak), (".strong", self.strong)]

    def always_decides(self) -> str | None:
        """None: scores inside the abstain band, and requests it cannot score, abstain."""
        return None

    def build(self, ctx: BuildContext) -> LearnedStrategy:
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
        self._recal = config.recalibrate
        if self._recal is not None:
            from ..state.store import controller_key

            if not self._two:
                raise ArtifactError(
                    f"{art.path} is a multi-model artifact: recalibrate needs a two-model one"
                )
            self._recal_key = controller_key(self.name)
        if self._two:
            if config.candidates is not None:
                raise ArtifactError(
                    f"{art.path} is a two-model artifact: configure 'weak' and 'strong', not 'candidates'"
                )
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
                raise ArtifactError(
                    f"{art.path} has no model(s) {unknown}; it knows: {', '.join(art.models)}"
                )
            self._allowed = [art.models.index(m) for m in config.candidates]
            self._target = {art.models.index(m): c for m, c in config.candidates.items()}

    # ---- online recalibration (state in the partition store; see the module docstring) ----------
    def controller(self, state: StrategyState) -> dict[str, Any]:
        """The controller state in ``state`` (a get/put store), or a fresh one at the configured
        threshold when there is none, it is unreadable, or it was made for another artifact or
        another configured threshold (changing either restarts the controller)."""
        assert self._recal is not None
        raw = state.get(self._recal_key)
        if raw:
            try:
                st = json.loads(raw)
                if (
                    isinstance(st, dict)
                    and st.get("artifact") == self.artifact_id
                    and st.get("base") == self.threshold
                    and math.isfinite(float(st["threshold"]))
                    and 0.0 <= float(st["share"]) <= 1.0
                    and int(st["n"]) >= 0
                ):
                    st["threshold"] = self._recal.clamp(float(st["threshold"]))
                    return st
            except (ValueError, TypeError, KeyError):
                pass
        return {
            "threshold": self._recal.clamp(self.threshold),
            "share": self._recal.target_strong_share,
            "n": 0,
            "artifact": self.artifact_id,
            "base": self.threshold,
        }

    def _record(self, state: StrategyState, st: dict[str, Any], strong: bool) -> None:
        """One decision: update the measured share and move the threshold; write it back."""
        rc = self._recal
        assert rc is not None
        hit = 1.0 if strong else 0.0
        st["n"] = int(st["n"]) + 1
        st["share"] = float(st["share"]) + (hit - float(st["share"])) / min(st["n"], rc.window)
        st["threshold"] = rc.clamp(float(st["threshold"]) + rc.step * (hit - rc.target_strong_share))
        state.put(self._recal_key, json.dumps(st, separators=(",", ":")).encode())

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        text = request.text()
        if self._two:
            score = float(self._router.scores([text])[0])
            # no await between reading and writing the controller state: records handled
            # concurrently on the event loop cannot interleave inside this update
            state = ctx.state
            st = self.controller(state) if self._recal is not None and state is not None else None
            threshold = float(st["threshold"]) if st is not None else self.threshold
            detail = {"score": round(score, 6), "threshold": threshold, "artifact": self.artifact_id}
            if abs(score - threshold) < self.band:
                ctx.explain(f"score {score:.4f} within ±{self.band} of threshold {threshold:.4f}")
                return None
            strong = score >= threshold
            if st is not None and state is not None:  # st is only read where there is state
                self._record(state, st, strong)
                detail["controller_share"] = round(float(st["share"]), 4)
                detail["controller_n"] = st["n"]
            if strong:
                return Decision(
                    self._strong, reason=f"learned score {score:.4f} >= {threshold:.4f}", detail=detail
                )
            return Decision(self._weak, reason=f"learned score {score:.4f} < {threshold:.4f}", detail=detail)
        probs = self._router.probabilities([text])
        pick = int(self._router.choose(probs, self.threshold, self._allowed)[0])
        p = float(probs[0, pick])
        model = self._router.models[pick]
        detail = {
            "score": round(p, 6),
            "threshold": self.threshold,
            "model": model,
            "artifact": self.artifact_id,
        }
        if abs(p - self.threshold) < self.band:
            ctx.explain(
                f"P(success) {p:.4f} of {model} within ±{self.band} of threshold {self.threshold:.4f}"
            )
            return None
        return Decision(
            self._target[pick],
            reason=f"cheapest model with P(success) >= {self.threshold:.4f}: {model}"
            if p >= self.threshold
            else f"no model reaches {self.threshold:.4f}; most likely: {model}",
            detail=detail,
        )
