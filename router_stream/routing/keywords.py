"""Keyword and regex rules over chosen request fields: the first rule that matches picks ``then``.

Example::

    - type: keywords
      name: by-topic
      case_sensitive: false      # default for every rule
      whole_word: true           # keywords only match whole words ("bill" not in "billion")
      max_scan_chars: 10000      # only the first N characters of each field are scanned
      rules:
        - keywords: [refund, invoice, chargeback]
          then: support
        - keywords: [contract, clause]
          regex: ['\\bsection\\s+\\d+(\\.\\d+)*']
          match: all             # every keyword and every regex must be found
          fields: [prompt, tags, fields.department]
          then: legal

A rule matches ``any`` (default) or ``all`` of its terms (keywords and regexes together); a term
is found when it occurs in at least one of the rule's ``fields``: ``prompt`` (all request text),
``tags`` (one per line) or ``fields.<name>`` (a request field, dotted for nesting; lists are
scanned one item per line). ``case_sensitive`` applies to keywords and regexes, ``whole_word`` to
keywords only (write ``\\b`` in a regex yourself); a rule may override both.

Regexes are compiled at config load (:func:`~router_stream.routing.regex_safety.check_regex`):
an invalid one fails naming it (``strategies[1].rules[0].regex[2]: invalid regex '(' ...``), and
so does one with a shape that backtracks catastrophically (nested quantifiers, ``(a+)+``; a
repeated ambiguous choice, ``(a|aa)+``). Python's ``re`` has no timeout, so the scanned text is
capped as well (``max_scan_chars``): even a merely quadratic pattern costs seconds on a
megabyte-long prompt. A keyword beyond the cap is not seen.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..schemas import Request
from .base import Decision, RoutingContext
from .regex_safety import check_regex
from .strategy_config import BuildContext, StrategyConfigBase


def _check_field(name: str) -> str:
    if name in ("prompt", "tags"):
        return name
    if name.startswith("fields.") and all(name.removeprefix("fields.").split(".")):
        return name
    raise ValueError(f"unknown field {name!r} (known: prompt, tags, fields.<name>)")


Keyword = Annotated[str, Field(min_length=1)]
Regex = Annotated[str, Field(min_length=1), AfterValidator(check_regex)]
FieldName = Annotated[str, AfterValidator(_check_field)]


class KeywordRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[Keyword] = Field(default_factory=list)
    regex: list[Regex] = Field(default_factory=list)
    match: Literal["any", "all"] = "any"
    fields: list[FieldName] = Field(default_factory=lambda: ["prompt"], min_length=1)
    case_sensitive: bool | None = Field(None, description="overrides the strategy's setting")
    whole_word: bool | None = Field(None, description="overrides the strategy's setting")
    then: str

    @model_validator(mode="after")
    def _has_terms(self) -> KeywordRule:
        if not self.keywords and not self.regex:
            raise ValueError("a rule needs at least one of 'keywords' or 'regex'")
        return self


class KeywordsConfig(StrategyConfigBase):
    type: Literal["keywords"]
    name: str = "keywords"
    case_sensitive: bool = False
    whole_word: bool = False
    max_scan_chars: int = Field(10_000, ge=1, description="characters of each field scanned, from the start")
    rules: list[KeywordRule] = Field(min_length=1)

    def referenced_candidates(self) -> list[tuple[str, str]]:
        return [(f".rules[{i}].then", r.then) for i, r in enumerate(self.rules)]

    def always_decides(self) -> str | None:
        """None: whether a term matches depends on the request text."""
        return None

    def build(self, ctx: BuildContext) -> KeywordsStrategy:
        return KeywordsStrategy(self)


class _CompiledRule:
    __slots__ = ("fields", "index", "match_all", "terms", "then")

    def __init__(self, index: int, rule: KeywordRule, config: KeywordsConfig) -> None:
        case_sensitive = config.case_sensitive if rule.case_sensitive is None else rule.case_sensitive
        whole_word = config.whole_word if rule.whole_word is None else rule.whole_word
        flags = 0 if case_sensitive else re.IGNORECASE
        terms: list[tuple[str, re.Pattern[str]]] = []
        for kw in rule.keywords:
            body = re.escape(kw)
            if whole_word:
                body = rf"(?<!\w){body}(?!\w)"
            terms.append((kw, re.compile(body, flags)))
        for pattern in rule.regex:
            terms.append((pattern, re.compile(pattern, flags)))
        self.index = index
        self.terms = terms
        self.match_all = rule.match == "all"
        self.fields = tuple(rule.fields)
        self.then = rule.then


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return None


def field_text(request: Request, name: str) -> str:
    """The text a rule scans for field ``name`` ("" when the request has no such field)."""
    if name == "prompt":
        return request.text()
    if name == "tags":
        return "\n".join(request.tags)
    node: Any = request.fields
    for part in name.removeprefix("fields.").split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, list):
        return "\n".join(t for t in map(_scalar_text, node) if t is not None)
    return _scalar_text(node) or ""


class KeywordsStrategy:
    """Scans the chosen fields of a request for each rule's terms; abstains when none matches."""

    def __init__(self, config: KeywordsConfig) -> None:
        self.name = config.name
        self.max_scan_chars = config.max_scan_chars
        self._rules = [_CompiledRule(i, r, config) for i, r in enumerate(config.rules)]

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        texts: dict[str, str] = {}

        def text(name: str) -> str:
            if name not in texts:
                texts[name] = field_text(request, name)[: self.max_scan_chars]
            return texts[name]

        for rule in self._rules:
            found: list[tuple[str, str]] = []  # (term, field)
            for term, pattern in rule.terms:
                where = next((f for f in rule.fields if pattern.search(text(f))), None)
                if where is not None:
                    found.append((term, where))
                    if not rule.match_all:
                        break
                elif rule.match_all:
                    break
            if found and (not rule.match_all or len(found) == len(rule.terms)):
                terms = [t for t, _ in found]
                fields = sorted({f for _, f in found})
                what = ", ".join(repr(t) for t in terms[:5]) + (" ..." if len(terms) > 5 else "")
                return Decision(
                    rule.then,
                    reason=f"rule {rule.index} matched {what} in {', '.join(fields)}",
                    detail={"rule": rule.index, "terms": terms[:20], "fields": fields},
                )
        truncated = any(len(t) >= self.max_scan_chars for t in texts.values())
        ctx.explain(
            "no keyword rule matched"
            + (f" (scanned the first {self.max_scan_chars} characters)" if truncated else "")
        )
        return None
