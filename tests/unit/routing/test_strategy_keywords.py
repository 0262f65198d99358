"""The keywords strategy: terms over chosen fields, options, config-load errors, the scan cap."""

from __future__ import annotations

import time

import pytest

from router_stream.config import parse_config
from router_stream.errors import ConfigError
from router_stream.routing.base import RoutingContext
from router_stream.routing.keywords import KeywordsConfig, KeywordsStrategy, check_regex
from router_stream.routing.strategy_config import BuildContext
from router_stream.schemas import Request

CANDIDATES = {
    "cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c"},
    "smart": {"base_url": "http://127.0.0.1:9/v1", "model": "s"},
    "legal": {"base_url": "http://127.0.0.1:9/v1", "model": "l"},
}


def strategy(**cfg) -> KeywordsStrategy:
    return KeywordsConfig.model_validate({"type": "keywords", **cfg}).build(BuildContext())


def ctx() -> RoutingContext:
    return RoutingContext(key="k", candidates=tuple(CANDIDATES))


def req(prompt: str = "hello", **kw) -> Request:
    return Request(request_id="r1", prompt=prompt, **kw)


def config_error(strategies) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"candidates": CANDIDATES, "default": "cheap", "strategies": strategies}, environ={})
    return str(info.value)


async def test_any_keyword_picks_first_matching_rule():
    s = strategy(
        rules=[
            {"keywords": ["refund", "invoice"], "then": "cheap"},
            {"keywords": ["contract"], "then": "legal"},
        ]
    )
    c = ctx()
    d = await s.decide(req("Please check my INVOICE and the contract"), c)
    assert d.candidate == "cheap" and d.detail == {"rule": 0, "terms": ["invoice"], "fields": ["prompt"]}
    assert "invoice" in d.reason and d.cacheable
    d = await s.decide(req("about the contract"), c)
    assert d.candidate == "legal" and d.detail["rule"] == 1
    assert await s.decide(req("nothing here"), c) is None
    assert c.take_note() == "no keyword rule matched"


async def test_all_needs_every_keyword_and_regex():
    s = strategy(
        rules=[
            {"keywords": ["contract", "clause"], "regex": [r"section\s+\d+"], "match": "all", "then": "legal"}
        ]
    )
    assert await s.decide(req("contract clause only"), ctx()) is None
    assert await s.decide(req("contract section 4"), ctx()) is None
    d = await s.decide(req("In the contract, clause 2 of Section 12 says"), ctx())
    assert d.candidate == "legal" and d.detail["terms"] == ["contract", "clause", r"section\s+\d+"]


async def test_case_sensitivity_and_whole_word_with_rule_overrides():
    s = strategy(rules=[{"keywords": ["bill"], "then": "cheap"}])
    assert (await s.decide(req("BILLION dollars"), ctx())).candidate == "cheap"  # substring, any case
    s = strategy(whole_word=True, rules=[{"keywords": ["bill", "c++"], "then": "cheap"}])
    assert await s.decide(req("billion dollars"), ctx()) is None
    assert (await s.decide(req("my Bill, please"), ctx())).candidate == "cheap"
    assert (await s.decide(req("write it in C++."), ctx())).candidate == "cheap"  # non-word edges work
    s = strategy(
        case_sensitive=True,
        rules=[
            {"keywords": ["API"], "then": "cheap"},
            {"keywords": ["api"], "case_sensitive": False, "then": "smart"},
        ],
    )
    assert (await s.decide(req("the API"), ctx())).candidate == "cheap"
    assert (await s.decide(req("the Api"), ctx())).candidate == "smart"
    s = strategy(case_sensitive=True, rules=[{"regex": ["^urgent"], "then": "smart"}])
    assert await s.decide(req("URGENT: help"), ctx()) is None
    s = strategy(rules=[{"regex": ["^urgent"], "then": "smart"}])
    assert (await s.decide(req("URGENT: help"), ctx())).candidate == "smart"


async def test_fields_tags_and_request_fields():
    s = strategy(
        whole_word=True,
        rules=[
            {"keywords": ["vip"], "fields": ["tags"], "then": "smart"},
            {"keywords": ["de"], "fields": ["fields.user.lang"], "then": "legal"},
            {"keywords": ["42"], "fields": ["fields.ids", "prompt"], "then": "cheap"},
        ],
    )
    assert (await s.decide(req("vip treatment?", tags=["a"]), ctx())) is None  # prompt is not scanned
    d = await s.decide(req("hi", tags=["beta", "VIP"]), ctx())
    assert d.candidate == "smart" and d.detail["fields"] == ["tags"]
    assert (await s.decide(req("hi", fields={"user": {"lang": "de"}}), ctx())).candidate == "legal"
    assert await s.decide(req("hi", fields={"user": "de"}), ctx()) is None
    assert (await s.decide(req("hi", fields={"ids": [7, 42]}), ctx())).candidate == "cheap"
    msgs = Request(
        request_id="r", messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "id 42"}]
    )
    assert (await s.decide(msgs, ctx())).candidate == "cheap"


async def test_scan_cap_bounds_a_slow_regex_on_a_huge_prompt():
    huge = "a" * 1_000_000  # r"\w*x" is quadratic in the text length: minutes on 1 MB uncapped
    s = strategy(
        max_scan_chars=2_000,
        rules=[{"regex": [r"\w*x"], "then": "smart"}, {"keywords": ["needle"], "then": "cheap"}],
    )
    c = ctx()
    started = time.perf_counter()
    assert await s.decide(req(huge + "needle x"), c) is None  # beyond the cap: not seen
    assert time.perf_counter() - started < 1.0
    assert "first 2000 characters" in c.take_note()
    assert (await s.decide(req("needle " + huge), c)).candidate == "cheap"


def test_invalid_regex_fails_at_load_naming_the_rule():
    msg = config_error(
        [
            {"type": "rules", "rules": [{"when": "True", "then": "cheap"}]},
            {"type": "keywords", "rules": [{"regex": ["ok", "fine", "("], "then": "smart"}]},
        ]
    )
    assert msg.startswith("strategies[1].rules[0].regex[2]: invalid regex '(': missing )")


def test_catastrophic_shapes_are_refused_and_plain_ones_pass():
    for bad in [r"(a+)+$", r"(a*)*", r"(\w+\s?)+x", r"(?:x?a+)*", r"(a|b+)+", r"^(\d+)*$"]:
        with pytest.raises(ValueError, match="nested quantifier"):
            check_regex(bad)
    for good in [
        r"\bsection\s+\d+(\.\d+)*",
        r"(\d+,)*",
        r"(\w+\s)*",
        r"(a+)++",
        r"(?:ab)+",
        r"[a-z]+@[a-z]+\.com",
        r"(\w+\s){2,5}",
        r"(?:\s*,\s*\w+)*",
    ]:
        assert check_regex(good) == good
    msg = config_error(
        [
            {
                "type": "keywords",
                "rules": [{"keywords": ["x"], "then": "cheap"}, {"regex": [r"(a+)+"], "then": "smart"}],
            }
        ]
    )
    assert msg.startswith("strategies[0].rules[1].regex[0]: regex '(a+)+' repeats a group")


def test_a_repeated_choice_with_overlapping_alternatives_is_refused():
    # each of these takes seconds on ~25 characters in Python's re; the parser factors common
    # prefixes out first ((a|aa) is a(?:|a)), so what is left is an ambiguous choice in a repeat
    for bad in [r"(a|a)*b", r"(?:a|aa)+b", r"(x|x)+y", r"(.|\s)*z", r"(ab|abab)*c", r"x(?:(?:a|a))*y"]:
        with pytest.raises(ValueError, match="repeats a choice whose alternatives can match the same text"):
            check_regex(bad)
    for good in [
        r"(a|ab)*c",
        r"(.|\n)*end",
        r"(foo|bar)*",
        r"(?:\s|,)*",
        r"(\w|\.)+",
        r"(\w|\d)+x",
        r"(?i)(yes|no)+",
        r"(?:Mr|Mrs|Ms)\.? \w+",
        r"(cat|dog)s?( and (cat|dog)s?)*",
        r"((?:a|a))*+b",
        r"(?:\s*(?:,|;)\s*\w+)*",
        r"((https?|ftp)://\S+\s*)+",
    ]:
        assert check_regex(good) == good
    # case: the keyword rules may run case-insensitively (their default), where E and e start alike
    with pytest.raises(ValueError, match="repeats a choice"):
        check_regex(r"(Error|error)+x")
    assert check_regex(r"(Error|error)+x", ignorecase=False) == r"(Error|error)+x"
    with pytest.raises(ValueError, match="repeats a choice"):
        check_regex(r"(?i)(Error|error)+x", ignorecase=False)
    msg = config_error([{"type": "keywords", "rules": [{"regex": [r"(a|aa)+$"], "then": "smart"}]}])
    assert msg.startswith("strategies[0].rules[0].regex[0]: regex '(a|aa)+$' repeats a choice")


def test_other_config_errors_name_the_field():
    assert config_error([{"type": "keywords", "rules": [{"keywords": ["x"], "then": "smartt"}]}]) == (
        "strategies[0].rules[0].then: 'smartt' is not a candidate; did you mean 'smart'? (known: cheap, legal, smart)"
    )
    assert config_error([{"type": "keywords", "rules": [{"then": "smart"}]}]) == (
        "strategies[0].rules[0]: a rule needs at least one of 'keywords' or 'regex'"
    )
    assert config_error(
        [{"type": "keywords", "rules": [{"keywords": ["x"], "fields": ["prompt", "body"], "then": "smart"}]}]
    ).startswith("strategies[0].rules[0].fields[1]: unknown field 'body'")
    assert config_error(
        [{"type": "keywords", "rules": [{"keywords": ["x", ""], "then": "smart"}]}]
    ).startswith("strategies[0].rules[0].keywords[1]:")
    assert config_error(
        [{"type": "keywords", "max_scan_chars": 0, "rules": [{"keywords": ["x"], "then": "smart"}]}]
    ).startswith("strategies[0].max_scan_chars:")
