"""Config loader errors: env overrides, duplicate YAML keys, pydantic wording, secrets, unique names.

Every error names the field path and says what to do; an env var that caused it is named; a
secret (or something that looks like one) is never echoed.
"""

from __future__ import annotations

import pytest

from router_stream.config import load_config, parse_config
from router_stream.errors import ConfigError

FAKE_KEY = "sk-proj-Zq8xWv3Lr9Tn2Kp7Ys4Mb6Hd1Fg5Jc0"


def _cfg(**over):
    data = {
        "candidates": {
            "cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
            "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"},
        },
        "default": "cheap",
    }
    data.update(over)
    return data


def _error(data, environ=None) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, environ=environ or {})
    return str(err.value)


def _file_error(tmp_path, text: str, environ=None) -> str:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=environ or {})
    return str(err.value)


def _rules(name=None, then="cheap"):
    strategy = {"type": "rules", "rules": [{"when": "True", "then": then}]}
    if name is not None:
        strategy["name"] = name
    return strategy


# ---------------------------------------------------------------- 1. env names match keys case-insensitively
def test_env_override_reaches_a_mixed_case_candidate():
    data = _cfg()
    data["candidates"]["myModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    cfg = parse_config(data, environ={"ROUTER_STREAM__CANDIDATES__MYMODEL__MAX_RETRIES": "1"})
    assert cfg.candidates["myModel"].max_retries == 1 and "mymodel" not in cfg.candidates
    assert "max_retries" not in data["candidates"]["myModel"]  # the caller's dict is left alone


def test_env_override_of_a_whole_mixed_case_entry_replaces_it():
    data = _cfg()
    data["candidates"]["myModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    cfg = parse_config(
        data, environ={"ROUTER_STREAM__CANDIDATES__MYMODEL": "{base_url: 'http://h/v1', model: x}"}
    )
    assert cfg.candidates["myModel"].model == "x" and set(cfg.candidates) == {"cheap", "smart", "myModel"}


def test_env_override_matching_two_keys_is_ambiguous():
    data = _cfg()
    data["candidates"]["myModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    data["candidates"]["MyModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    msg = _error(data, {"ROUTER_STREAM__CANDIDATES__MYMODEL__MAX_RETRIES": "1"})
    assert "ROUTER_STREAM__CANDIDATES__MYMODEL__MAX_RETRIES" in msg and "ambiguous" in msg
    assert "'myModel'" in msg and "'MyModel'" in msg


def test_env_override_indexes_a_list_and_rejects_a_path_through_a_value():
    cfg = parse_config(
        _cfg(strategies=[_rules("a"), _rules("b")]), environ={"ROUTER_STREAM__STRATEGIES__1__NAME": "renamed"}
    )
    assert [s.name for s in cfg.strategies] == ["a", "renamed"]
    msg = _error(_cfg(strategies=[_rules("a")]), {"ROUTER_STREAM__STRATEGIES__3__NAME": "x"})
    assert msg.startswith("ROUTER_STREAM__STRATEGIES__3__NAME: ") and "strategies" in msg
    msg = _error(_cfg(), {"ROUTER_STREAM__DEFAULT__X": "1"})  # default is a single value, not a section
    assert msg.startswith("ROUTER_STREAM__DEFAULT__X: ") and "default" in msg


def test_env_override_into_an_empty_section():
    data = _cfg(worker=None)  # a YAML `worker:` line with nothing under it
    assert parse_config(data, environ={"ROUTER_STREAM__WORKER__MAX_IN_FLIGHT": "9"}).worker.max_in_flight == 9


# ---------------------------------------------------------------- 2. errors name the env var behind them
def test_bad_env_value_names_the_env_var():
    msg = _error(_cfg(), {"ROUTER_STREAM__WORKER__MAX_IN_FLIGHT": "abc"})
    assert msg.startswith("worker.max_in_flight: ")
    assert "'abc'" in msg and "env var ROUTER_STREAM__WORKER__MAX_IN_FLIGHT" in msg
    msg = _error(_cfg(), {"ROUTER_STREAM_METRICS_PORT": "http"})
    assert msg.startswith("worker.metrics_port: ") and "env var ROUTER_STREAM_METRICS_PORT" in msg


def test_unknown_field_from_env_names_the_env_var():
    msg = _error(_cfg(), {"ROUTER_STREAM__NOPE": "1"})
    assert msg.startswith("nope: ") and "env var ROUTER_STREAM__NOPE" in msg


def test_bad_reference_from_env_names_the_env_var():
    msg = _error(_cfg(), {"ROUTER_STREAM__DEFAULT": "ghost"})
    assert "default: 'ghost' is not a candidate (known: cheap, smart)" in msg
    assert "env var ROUTER_STREAM__DEFAULT" in msg


def test_entry_invented_by_a_misspelt_env_var_names_it():
    msg = _error(_cfg(), {"ROUTER_STREAM__CANDIDATES__CHEEP__MAX_RETRIES": "1"})
    assert "candidates.cheep.base_url: " in msg and "ROUTER_STREAM__CANDIDATES__CHEEP__MAX_RETRIES" in msg


def test_errors_from_the_file_do_not_blame_env():
    msg = _error(_cfg(worker={"max_in_flight": "abc"}), {"ROUTER_STREAM__WORKER__METRICS_PORT": "7000"})
    assert msg.startswith("worker.max_in_flight: ") and "env var" not in msg


def test_env_value_that_is_not_yaml_is_a_config_error():
    msg = _error(_cfg(), {"ROUTER_STREAM__WORKER__WORKER_ID": "a: b: c"})
    assert msg.startswith("ROUTER_STREAM__WORKER__WORKER_ID: ") and "YAML" in msg and "a: b: c" not in msg


# ---------------------------------------------------------------- 3. duplicate YAML keys
def test_duplicate_top_level_key_is_an_error(tmp_path):
    msg = _file_error(
        tmp_path,
        """\
candidates:
  cheap: {base_url: "http://127.0.0.1:1/v1", model: c}
default: cheap
strategies:
  - {type: rules, rules: [{when: "True", then: cheap}]}
strategies:
  - {type: rules, rules: [{when: "False", then: cheap}]}
""",
    )
    assert "duplicate key 'strategies'" in msg and "line 6" in msg and "line 4" in msg


def test_duplicate_candidate_is_an_error(tmp_path):
    msg = _file_error(
        tmp_path,
        """\
candidates:
  cheap: {base_url: "http://127.0.0.1:1/v1", model: c}
  smart: {base_url: "http://127.0.0.1:1/v1", model: s}
  cheap: {base_url: "http://127.0.0.1:2/v1", model: c2}
default: cheap
""",
    )
    assert "duplicate key 'cheap'" in msg and "line 4" in msg and "line 2" in msg


def test_merge_key_overrides_are_not_duplicates(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text("""\
candidates:
  base: &base {base_url: "http://127.0.0.1:1/v1", model: c, max_retries: 1}
  cheap: {<<: *base, max_retries: 5}
default: cheap
""")
    assert load_config(path, environ={}).candidates["cheap"].max_retries == 5


def test_duplicate_key_in_an_env_value_names_the_env_var():
    msg = _error(_cfg(), {"ROUTER_STREAM__WORKER": "{max_in_flight: 1, max_in_flight: 2}"})
    assert msg.startswith("ROUTER_STREAM__WORKER: ") and "duplicate key 'max_in_flight'" in msg


def test_yaml_syntax_error_does_not_echo_the_line(tmp_path):
    secret = "sk-Zq8xWv3Lr9Tn"
    msg = _file_error(tmp_path, f"candidates:\n  cheap: {{api_key_env: {secret}: x\n")
    assert "not valid YAML" in msg and "line 2" in msg and secret not in msg


# ---------------------------------------------------------------- 4. "(got ...)" only when it adds something
def test_got_is_not_repeated_when_the_message_shows_the_input():
    msg = _error(_cfg(strategies=[{"type": "custom", "class": "os:path"}]))
    assert msg.count("'os:path'") == 1 and "(got module)" in msg
    msg = _error(_cfg(strategies=[{"type": "keywords", "rules": [{"regex": ["ok", "("], "then": "cheap"}]}]))
    assert msg.startswith("strategies[0].rules[0].regex[1]: invalid regex '('") and "(got '('" not in msg


def test_got_is_still_shown_when_it_adds_something():
    data = _cfg()
    data["candidates"]["cheap"]["max_retries"] = -1
    assert "candidates.cheap.max_retries: Input should be greater than or equal to 0 (got -1)" in _error(data)


@pytest.mark.parametrize(
    "section,field",
    [
        ("candidates.cheap", "api_key_env"),
        ("kafka", "sasl_password_env"),
        ("candidates.cheap", "api_key"),
        ("candidates.cheap", "token"),
    ],
)
def test_secret_named_fields_never_echo_their_value(section, field):
    data = _cfg(kafka={})
    node = data
    for part in section.split("."):
        node = node[part]
    for value in (FAKE_KEY, 12345678):
        node[field] = value
        msg = _error(data)
        assert f"{section}.{field}: " in msg and str(value) not in msg and "got" not in msg


def test_a_key_pasted_as_api_key_says_where_keys_go():
    data = _cfg()
    data["candidates"]["cheap"]["api_key"] = FAKE_KEY
    msg = _error(data)
    assert msg.startswith("candidates.cheap.api_key: ") and "api_key_env" in msg and FAKE_KEY not in msg


# ---------------------------------------------------------------- 5. no pydantic wording
def test_unknown_strategy_type():
    msg = _error(_cfg(strategies=[{"type": "rulez", "rules": []}]))
    assert msg.startswith("strategies[0].type: unknown strategy type 'rulez' (known: rules, keywords, split,")
    assert "Input tag" not in msg


def test_missing_strategy_type():
    msg = _error(_cfg(strategies=[_rules(), {"rules": []}]))
    assert msg.startswith("strategies[1].type: missing; give one of: rules, keywords, split,")
    assert "discriminator" not in msg


def test_candidate_given_as_a_string():
    msg = _error(_cfg(candidates={"cheap": "http://127.0.0.1:1/v1"}))
    assert msg == "candidates.cheap: expected a mapping (base_url, model, ...), got a string"


def test_strategy_given_as_a_string():
    msg = _error(_cfg(strategies=["rules"]))
    assert msg.startswith("strategies[0]: expected a mapping") and msg.endswith("got a string")


def test_empty_config_file(tmp_path):
    msg = _file_error(tmp_path, "# nothing yet\n")
    assert "router.yaml: the file is empty" in msg and "candidates" in msg and "NoneType" not in msg
    assert "NoneType" not in _error(None)


# ---------------------------------------------------------------- 6. api_key_env holds a name, not a key
@pytest.mark.parametrize(
    "value",
    [
        FAKE_KEY,
        "my-api-key",
        "sk_live_51HqLyjWDarjtT1zdp7dcXYZ",
        "AIzaSyD3x9Kq7Lm2Np4Rt6Vw8Yz0Ab1Cd2Ef3Gh",
        "0123456789abcdef0123456789abcdef",
        "OPENAI API KEY",
        "",
    ],
)
def test_api_key_env_that_looks_like_a_key_is_refused_without_echo(value):
    data = _cfg()
    data["candidates"]["cheap"]["api_key_env"] = value
    msg = _error(data)
    assert msg.startswith("candidates.cheap.api_key_env: must be the NAME of an environment variable")
    assert "not the key itself" in msg and (not value or value not in msg)
    msg = _error(_cfg(), {"ROUTER_STREAM__CANDIDATES__CHEAP__API_KEY_ENV": value or "''"})
    assert "ROUTER_STREAM__CANDIDATES__CHEAP__API_KEY_ENV" in msg and (not value or value not in msg)


@pytest.mark.parametrize(
    "value",
    [
        "OPENAI_API_KEY",
        "CHEAP_KEY",
        "RS_TEST_KEY",
        "vllm_api_key",
        "_K2",
        "MY_VERY_LONG_PROVIDER_NAME_SERVICE_ACCOUNT_API_KEY",
    ],
)
def test_api_key_env_names_are_accepted(value):
    data = _cfg()
    data["candidates"]["cheap"]["api_key_env"] = value
    assert parse_config(data, environ={}).candidates["cheap"].api_key_env == value


def test_kafka_secret_env_holding_a_password_is_refused_without_echo():
    msg = _error(_cfg(kafka={"sasl_password_env": "hunter2-Pa55!"}))
    assert msg.startswith("kafka.sasl_password_env: must be the NAME of an environment variable")
    assert "hunter2" not in msg


# ---------------------------------------------------------------- 7. strategy names are unique
def test_two_strategies_with_one_name():
    msg = _error(_cfg(strategies=[_rules("a"), _rules("judge"), _rules("b"), _rules("judge")]))
    assert msg == (
        "strategies[3].name: 'judge' is already the name of strategies[1]; give each strategy a unique name"
    )


def test_two_unnamed_strategies_of_one_type_collide_on_the_default_name():
    msg = _error(_cfg(strategies=[_rules(), _rules()]))
    assert msg.startswith("strategies[1].name: 'rules'") and "strategies[0]" in msg and "unique name" in msg
    assert "default" in msg


# ---------------------------------------------------------------- 8. a candidate does not fall back to itself
def test_candidate_falling_back_to_itself():
    data = _cfg()
    data["candidates"]["cheap"]["fallbacks"] = ["smart", "cheap"]
    msg = _error(data)
    assert msg.startswith("candidates.cheap.fallbacks[1]: ") and "itself" in msg


def test_fallback_to_unknown_candidate_is_still_an_error():
    data = _cfg()
    data["candidates"]["cheap"]["fallbacks"] = ["ghost"]
    assert "candidates.cheap.fallbacks[0]: 'ghost' is not a candidate (known: cheap, smart)" in _error(data)


def test_a_scorer_api_key_env_that_looks_like_a_key_is_refused_without_echo():
    msg = _error(_cfg(strategies=[{"type": "scorer", "url": "http://s/score", "api_key_env": FAKE_KEY}]))
    assert msg.startswith("strategies[0].api_key_env: must be the NAME of an environment variable")
    assert FAKE_KEY not in msg


@pytest.mark.parametrize("where", ["candidate", "scorer"])
def test_credentials_in_a_url_are_refused_without_echo(where):
    url = "https://alice:hunter2-secret@models.example.com/v1"
    if where == "candidate":
        data = _cfg()
        data["candidates"]["cheap"]["base_url"] = url
        path = "candidates.cheap.base_url"
    else:
        data = _cfg(strategies=[{"type": "scorer", "url": url}])
        path = "strategies[0].url"
    msg = _error(data)
    assert msg.startswith(f"{path}: the URL has credentials in it"), msg
    assert "hunter2" not in msg and "alice" not in msg
    # not a URL at all, but with an @ in it: still not echoed
    bad = "alice:hunter2-secret@models.example.com"
    if where == "candidate":
        data["candidates"]["cheap"]["base_url"] = bad
    else:
        data["strategies"][0]["url"] = bad
    msg = _error(data)
    assert "is not an http(s) URL" in msg and "hunter2" not in msg


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cretpw@api.example.com",
        "https://user:s3cretpw word@h",
        "ftp://user:s3cret/pw@h",
        "https://user:s3cret/pw@api.example.com/v1",
    ],
)
def test_no_form_of_a_url_with_a_password_is_accepted_or_echoed(url):
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = url
    msg = _error(data)
    assert msg.startswith("candidates.cheap.base_url: ") and "s3cret" not in msg, msg


# ---------------------------------------------------------------- 9. every error in one pass, one per line
def test_a_type_error_and_a_bad_reference_are_reported_together():
    data = _cfg(strategies=[_rules("a", then="smartt")])
    data["candidates"]["cheap"]["max_retries"] = -1
    assert _error(data).splitlines() == [
        "candidates.cheap.max_retries: Input should be greater than or equal to 0 (got -1)",
        "strategies[0].rules[0].then: 'smartt' is not a candidate; did you mean 'smart'? (known: cheap, smart)",
    ]


def test_one_pass_reads_top_to_bottom_and_skips_references_of_what_did_not_parse():
    data = _cfg(
        fallbacks=["ghost"],
        strategies=[
            {
                "type": "split",
                "weights": {"cheap": -1, "nobody": 1},
            },  # does not parse: its references are not judged
            _rules("b", then="smrt"),
            _rules("b"),
        ],
    )
    data["candidates"]["smart"]["fallbacks"] = ["smart"]
    data["candidates"]["smart"]["model"] = 5
    assert _error(data).splitlines() == [
        "candidates.smart.model: Input should be a valid string (got 5)",
        "candidates.smart.fallbacks[0]: 'smart' cannot fall back to itself; remove it (retries on the same "
        "candidate are max_retries)",
        "fallbacks[0]: 'ghost' is not a candidate (known: cheap, smart)",
        "strategies[0].weights.cheap: Input should be greater than or equal to 0 (got -1)",
        "strategies[1].rules[0].then: 'smrt' is not a candidate; did you mean 'smart'? (known: cheap, smart)",
        "strategies[2].name: 'b' is already the name of strategies[1]; give each strategy a unique name",
    ]


def test_an_unusable_candidates_section_reports_no_references_against_it():
    assert _error(_cfg(candidates="cheap", strategies=[_rules("a", then="x")])).splitlines() == [
        "candidates: expected a mapping, got a string"
    ]


# ---------------------------------------------------------------- 10. did you mean
def test_a_misspelt_top_level_key_suggests_the_field():
    data = _cfg()
    data["defualt"] = data.pop("default")
    assert _error(data).splitlines() == [
        "defualt: unknown field; did you mean 'default'?",
        "default: Field required",
    ]


@pytest.mark.parametrize(
    "where, key, line",
    [
        ("candidate", "max_retry", "candidates.cheap.max_retry: unknown field; did you mean 'max_retries'?"),
        ("candidate", "Model", "candidates.cheap.Model: unknown field; did you mean 'model'?"),
        ("rule", "thne", "strategies[0].rules[0].thne: unknown field; did you mean 'then'?"),
        (
            "ramp",
            "form",
            "strategies[0].ramp.form: unknown field; did you mean 'from'?",
        ),  # the alias, not from_
        ("validator", "schemaa", "strategies[0].validator.schemaa: unknown field; did you mean 'schema'?"),
        ("rule", "otherwise", "strategies[0].rules[0].otherwise: unknown field (allowed: when, then)"),
    ],
)
def test_a_misspelt_nested_key_suggests_the_field_of_its_own_section(where, key, line):
    data = _cfg()
    if where == "candidate":
        data["candidates"]["cheap"][key] = 3
    elif where == "rule":
        data["strategies"] = [{"type": "rules", "rules": [{"when": "True", "then": "cheap", key: "x"}]}]
    elif where == "ramp":
        data["strategies"] = [
            {
                "type": "split",
                "weights": {"cheap": 1},
                "ramp": {
                    "to": "smart",
                    "start": "2026-01-01T00:00:00Z",
                    "end": "2026-01-02T00:00:00Z",
                    key: "cheap",
                },
            }
        ]
    else:
        data["strategies"] = [
            {
                "type": "cascade",
                "candidates": ["cheap", "smart"],
                "validator": {"type": "json_schema", key: {}},
            }
        ]
    assert line in _error(data).splitlines()


def test_an_unknown_key_never_echoes_its_value():
    data = _cfg()
    data["candidates"]["cheap"]["passwrd"] = "hunter2-Pa55word"
    msg = _error(data)
    assert (
        msg.startswith("candidates.cheap.passwrd: unknown field (allowed: base_url, model,")
        and "hunter2" not in msg
    )


@pytest.mark.parametrize(
    "name, hint",
    [
        ("smartt", "; did you mean 'smart'?"),
        ("Smart", "; did you mean 'smart'?"),
        ("cheapo", "; did you mean 'cheap'?"),
        ("gpt4", ""),
    ],
)
def test_a_misspelt_candidate_name_suggests_the_candidate(name, hint):
    assert _error(_cfg(default=name)) == f"default: {name!r} is not a candidate{hint} (known: cheap, smart)"


# ---------------------------------------------------------------- 11. strategies that can never run
def _warnings(strategies):
    return parse_config(_cfg(strategies=strategies), environ={}).never_run_warnings()


def _some(name):
    """A rules strategy that decides only some requests."""
    return {"type": "rules", "name": name, "rules": [{"when": 'fields.lang == "de"', "then": "smart"}]}


def test_strategies_after_a_split_never_run():
    assert _warnings(
        [
            _some("first"),
            {"type": "split", "name": "canary", "weights": {"cheap": 9, "smart": 1}},
            _some("late"),
            {"type": "keywords", "rules": [{"keywords": ["x"], "then": "smart"}]},
        ]
    ) == [
        "strategies[1]: 'canary' always decides (a split sends every key to one of its arms), so the 2 strategies "
        "after it never run ('late', 'keywords'); move it last, or remove what follows it"
    ]


@pytest.mark.parametrize(
    "when, decides",
    [
        ("True", True),
        ("true", True),
        ("1 == 1", True),
        ('len("x") > 0', True),
        ("False", False),
        ("len(prompt) >= 0", False),
        ('"a" in tags', False),
    ],
)
def test_a_rules_strategy_with_a_catch_all_rule_always_decides(when, decides):
    rules = {
        "type": "rules",
        "name": "r",
        "rules": [{"when": "fields.x == 1", "then": "smart"}, {"when": when, "then": "cheap"}],
    }
    expected = (
        [
            f"strategies[0]: 'r' always decides (rules[1] `when: {when}` matches every request), so the "
            "strategy after it never runs ('s'); move it last, or remove what follows it"
        ]
        if decides
        else []
    )
    assert _warnings([rules, {"type": "split", "name": "s", "weights": {"cheap": 1}}]) == expected


def test_a_cascade_always_decides_and_a_last_strategy_warns_nothing():
    cascade = {
        "type": "cascade",
        "candidates": ["cheap", "smart"],
        "validator": {"type": "min_length", "chars": 5},
    }
    assert _warnings([cascade, _some("x")])[0].startswith(
        "strategies[0]: 'cascade' always decides (a cascade "
    )
    assert _warnings([_some("x"), cascade]) == []
    assert _warnings([_some("x"), {"type": "split", "weights": {"cheap": 1}}]) == []


def test_the_readme_every_strategy_example_is_checked(tmp_path):
    """The README's example with every strategy type: split and cascade both always decide, so
    the first of them shadows what follows; check-config must say so (the README says it too)."""
    import pathlib

    import yaml

    text = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    start = text.index("```yaml\nstrategies:\n  - type: rules") + len("```yaml\n")
    doc = yaml.safe_load(text[start : text.index("```", start)])
    doc["candidates"] = {
        name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "strong")
    }
    assert parse_config(doc, environ={}).never_run_warnings() == [
        "strategies[7]: 'cheap-first' always decides (a cascade starts every request on its first candidate), so the "
        "strategy after it never runs ('canary'); move it last, or remove what follows it"
    ]


# ---------------------------------------------------------------- 12. no key in any part of a URL
@pytest.mark.parametrize(
    "url, part",
    [
        (f"https://api.example.com/v1?api_key={FAKE_KEY}", "query string (parameter 'api_key')"),
        (
            "https://api.example.com/v1?key=AIzaSyD3x9Kq7Lm2Np4Rt6Vw8Yz0Ab1Cd2Ef3Gh",
            "query string (parameter 'key')",
        ),
        ("https://api.example.com/v1?token=hunter2-Pa55word", "query string (parameter 'token')"),
        ("https://api.example.com/v1?x=1&sig=Zq8xWv3Lr9Tn2Kp7Ys4Mb6Hd1", "query string (parameter 'sig')"),
        (f"https://api.example.com/v1?{FAKE_KEY}", "query string (a parameter)"),
        (f"https://api.example.com/{FAKE_KEY}/v1", "path (segment 1)"),
        ("https://api.example.com/v1/keys/Zq8xWv3Lr9Tn2Kp7Ys4Mb6Hd1Fg5Jc0", "path (segment 3)"),
        (f"https://api.example.com/v1#{FAKE_KEY}", "after '#'"),
    ],
)
@pytest.mark.parametrize("where", ["candidate", "scorer", "env"])
def test_a_key_in_any_part_of_a_url_is_refused_without_echo(url, part, where):
    environ = {}
    if where == "candidate":
        data = _cfg()
        data["candidates"]["cheap"]["base_url"] = url
        path = "candidates.cheap.base_url"
    elif where == "scorer":
        data, path = _cfg(strategies=[{"type": "scorer", "url": url}]), "strategies[0].url"
    else:
        data, path = _cfg(), "candidates.cheap.base_url"
        environ = {"ROUTER_STREAM__CANDIDATES__CHEAP__BASE_URL": url}
    msg = _error(data, environ)
    assert msg.startswith(
        (
            f"{path}: the URL has a key-like value in its {part}; put the key in an environment "
            "variable and name it in api_key_env instead",
            f"{path}: the URL has a key-like value {part}; put the key",
        )
    ), msg
    assert len(msg.splitlines()) == 1
    for secret in (FAKE_KEY, "AIzaSyD3x9", "hunter2", "Zq8xWv3Lr9"):
        assert secret not in msg


@pytest.mark.parametrize(
    "url",
    [
        "https://my-res.openai.azure.com/openai/deployments/gpt-4o-2024-08-06?api-version=2024-02-01",
        "https://gateway.ai.cloudflare.com/v1/0123456789abcdef0123456789abcdef/my-gateway/openai",  # account id: hex
        "http://127.0.0.1:8000/v1",
        "https://api.example.com/v1?max_tokens=100&token_limit=100&key=",
    ],
)
def test_urls_without_keys_are_accepted(url):
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = url
    assert parse_config(data, environ={}).candidates["cheap"].base_url == url.rstrip("/")


def test_a_non_url_holding_a_key_is_not_echoed():
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = f"api.example.com/v1?api_key={FAKE_KEY}"
    assert _error(data) == "candidates.cheap.base_url: the value is not an http(s) URL"


@pytest.mark.parametrize(
    "value, secret",
    [
        (FAKE_KEY, True),
        ("Bearer abc.def", True),
        ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", True),
        ("0123456789abcdef0123456789abcdef", True),
        ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", True),
        ("token  Zq8xWv3Lr9Tn2Kp7", True),
        ("application/json", False),
        ("gpt-4o-2024-08-06", False),
        ("OPENAI_API_KEY", False),
        ("Bearer ${OPENAI_API_KEY}", False),
        ("2024-02-01", False),
        ("", False),
        ("router-stream/1.0 (+https://example.com)", False),
    ],
)
def test_looks_like_secret(value, secret):
    from router_stream.env_names import looks_like_secret

    assert looks_like_secret(value) is secret


def test_reference_problems_of_a_config_whose_fields_all_parse_read_top_to_bottom():
    data = _cfg(default="ghost")
    data["candidates"]["cheap"]["fallbacks"] = ["cheap"]
    assert _error(data).splitlines() == [
        "candidates.cheap.fallbacks[0]: 'cheap' cannot fall back to itself; remove it (retries on the same "
        "candidate are max_retries)",
        "default: 'ghost' is not a candidate (known: cheap, smart)",
    ]
