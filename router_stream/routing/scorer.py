"""An external scoring model over HTTP: it scores the candidates, the best one above a floor wins.

Example::

    - type: scorer
      name: quality-scorer
      url: http://scorer.internal:8080/score
      allowed: [cheap, smart]      # who may be picked and is sent as "candidates" (default: all)
      min_score: 0.5               # the best score must be at least this (default: any score)
      timeout_ms: 300              # no answer in time: abstain
      api_key_env: SCORER_KEY      # optional: sent as "Authorization: Bearer <key>"

For each request the strategy POSTs ``{"request_id", "prompt", "fields", "candidates"}`` as JSON
to ``url`` (``prompt`` is the request's text, cut at ``max_prompt_chars``) and expects either
``{"scores": {"<candidate>": <number>, ...}}`` (the highest score among the allowed candidates
wins if it is at least ``min_score``; ties go to the one listed first in ``allowed``) or
``{"candidate": "<name>"}`` (taken if it is exactly an allowed name, case-insensitively), or,
with ``threshold`` configured, one number ``{"score": <number>}`` (a scorer that says how hard
the request is, e.g. P(the strong model is needed)): ``above`` if it is at least ``threshold``,
else ``below``::

    - type: scorer
      name: difficulty
      url: http://scorer.internal:8080/difficulty
      threshold: 0.6
      above: smart                 # score >= threshold
      below: cheap                 # score <  threshold

The reply is untrusted, as with the judge: a status other than 2xx, a body over
``max_reply_bytes``, not JSON, scores that are not finite numbers, names that are not allowed
(ignored, counted in the reason), no usable entry, a timeout or a connection failure make the
strategy abstain with the reason in the audit: a routing miss, never an error. The scores of the
allowed candidates go to ``Decision.detail``. Decisions are cacheable (one call per key while the
decision cache holds it).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import Any, Literal

import aiohttp
import httpx
from pydantic import Field, field_validator, model_validator

from ..env_names import check_env_name, check_http_url
from ..providers.aiohttp_transport import ModelTransport
from ..schemas import Request
from .base import Decision, RoutingContext
from .strategy_config import BuildContext, StrategyConfigBase


class ScorerConfig(StrategyConfigBase):
    type: Literal["scorer"]
    name: str = "scorer"
    url: str
    allowed: list[str] | None = Field(None, min_length=1, description="default: all candidates")
    min_score: float | None = Field(None, allow_inf_nan=False)
    timeout_ms: int = Field(1_000, ge=1)
    api_key_env: str | None = Field(None, description="name of the env var holding a bearer key")
    max_prompt_chars: int = Field(32_000, ge=0)
    max_reply_bytes: int = Field(65_536, ge=1)
    threshold: float | None = Field(
        None,
        allow_inf_nan=False,
        description='one-score replies {"score": x}: above if x >= threshold, else below',
    )
    above: str | None = None
    below: str | None = None

    @model_validator(mode="after")
    def _one_score(self) -> ScorerConfig:
        if (self.threshold is None) != (self.above is None) or (self.threshold is None) != (
            self.below is None
        ):
            raise ValueError("threshold, above and below go together (one-score replies)")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_http_url(v)

    @field_validator("api_key_env")
    @classmethod
    def _key_env_is_a_name(cls, v: str | None) -> str | None:
        return check_env_name(v, "key", "SCORER_KEY")

    def referenced_candidates(self) -> list[tuple[str, str]]:
        refs = [(f".allowed[{i}]", name) for i, name in enumerate(self.allowed or [])]
        return refs + [
            (f".{side}", name) for side, name in (("above", self.above), ("below", self.below)) if name
        ]

    def always_decides(self) -> str | None:
        """None: it abstains on a timeout, an error or a score below ``min_score``."""
        return None

    def build(self, ctx: BuildContext) -> ScorerStrategy:
        return ScorerStrategy(self, ctx.names)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_reply(
    data: Any, offered: list[str], min_score: float | None, one_score: tuple[float, str, str] | None = None
) -> tuple[str | None, str, dict[str, Any]]:
    """``(candidate, reason, detail)`` from an untrusted scorer reply; candidate ``None`` = abstain.

    ``one_score`` = ``(threshold, above, below)`` accepts ``{"score": x}`` replies too.
    """
    if not isinstance(data, dict):
        return None, f"scorer reply is not a JSON object ({type(data).__name__})", {}
    if one_score is not None and "score" in data and "scores" not in data and "candidate" not in data:
        threshold, above, below = one_score
        score = _number(data["score"])
        if score is None:
            return None, "scorer 'score' is not a finite number", {}
        name: str | None = above if score >= threshold else below
        detail: dict[str, Any] = {"score": round(score, 6), "threshold": threshold}
        if name not in offered:
            return None, f"score {score:.4g} picks {name!r}, which is not allowed here", detail
        op = ">=" if score >= threshold else "<"
        return name, f"scorer score {score:.4g} {op} threshold {threshold:g}", detail
    lookup = {name.lower(): name for name in offered}
    if "scores" in data:
        raw = data["scores"]
        if not isinstance(raw, dict):
            return None, "scorer 'scores' is not an object", {}
        scores: dict[str, float] = {}
        ignored = 0
        for key, value in raw.items():
            name = lookup.get(key.lower()) if isinstance(key, str) else None
            score = _number(value)
            if name is None or score is None or name in scores:
                ignored += 1
                continue
            scores[name] = score
        note = f" ({ignored} entries ignored: not an allowed candidate or not a number)" if ignored else ""
        if not scores:
            return None, "scorer gave no usable score" + note, {}
        ordered = {name: scores[name] for name in offered if name in scores}
        best = max(ordered, key=ordered.__getitem__)  # first of the ties in ``offered`` order
        detail = {"scores": {n: round(s, 6) for n, s in ordered.items()}, "score": round(ordered[best], 6)}
        if min_score is not None and ordered[best] < min_score:
            return (
                None,
                f"best score {ordered[best]:.4g} ({best!r}) is below min_score {min_score:g}" + note,
                detail,
            )
        return best, f"scorer scored {best!r} highest ({ordered[best]:.4g})" + note, detail
    if "candidate" in data:
        raw = data["candidate"]
        if not isinstance(raw, str) or len(raw) > 200:
            return None, "scorer 'candidate' is not a short string", {}
        name = lookup.get(raw.strip().lower())
        if name is None:
            return None, f"scorer named {raw[:40]!r}, not an allowed candidate", {}
        return name, f"scorer chose {name!r}", {}
    return (
        None,
        "scorer reply has neither 'scores' nor 'candidate'" + (" nor 'score'" if one_score else ""),
        {},
    )


class ScorerStrategy:
    """Calls the scorer for each request; abstains on any failure or unusable reply."""

    def __init__(self, config: ScorerConfig, candidates: tuple[str, ...] = ()) -> None:
        self.name = config.name
        self.config = config
        self.allowed = list(config.allowed) if config.allowed is not None else list(candidates)
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:  # made on first use, inside the running loop
            self._http = httpx.AsyncClient(
                transport=ModelTransport(64),  # its pool is the bound: httpx's limits are unused
                trust_env=False,
                timeout=httpx.Timeout(self.config.timeout_ms / 1000.0),
                headers={"Accept": "application/json", "User-Agent": "router-stream"},
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, body: dict[str, Any]) -> tuple[bytes | None, str]:
        """The reply body, or ``(None, why not)``; never raises for the scorer's misbehaviour."""
        cap = self.config.max_reply_bytes
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000.0):
                async with self._client().stream(
                    "POST", self.config.url, json=body, headers=self._headers()
                ) as resp:
                    if not 200 <= resp.status_code < 300:
                        return None, f"scorer answered HTTP {resp.status_code}"
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > cap:
                            return None, f"scorer reply is larger than {cap} bytes"
                    return bytes(data), ""
        except TimeoutError:
            return None, f"scorer gave no answer within {self.config.timeout_ms} ms"
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            if isinstance(exc, httpx.TimeoutException) and exc.__cause__ is None:
                return None, f"scorer gave no answer within {self.config.timeout_ms} ms"
            return None, f"scorer unreachable ({type(exc.__cause__ or exc).__name__})"

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        offered = [name for name in self.allowed if name in ctx.candidates]
        if not offered:
            ctx.explain("no allowed candidate")
            return None
        body = {
            "request_id": request.request_id,
            "prompt": request.text()[: self.config.max_prompt_chars],
            "fields": request.fields,
            "candidates": offered,
        }
        raw, problem = await self._post(body)
        if raw is None:
            ctx.explain(problem)
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
            ctx.explain("scorer reply is not JSON")
            return None
        c = self.config
        one = (c.threshold, c.above, c.below) if c.threshold is not None and c.above and c.below else None
        name, reason, detail = parse_reply(data, offered, c.min_score, one)
        if name is None:
            ctx.explain(reason)
            return None
        return Decision(name, reason=reason, detail=detail)
