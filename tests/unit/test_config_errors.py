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
    data = {"candidates": {"cheap": {"base_url": "http://127.0.0.1:1/v1", "model": "c"},
                           "smart": {"base_url": "http://127.0.0.1:1/v1", "model": "s"}},
            "default": "cheap"}
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
    cfg = parse_config(data, environ={"ROUTER_STREAM__CANDIDATES__MYMODEL": "{base_url: 'http://h/v1', model: x}"})
    assert cfg.candidates["myModel"].model == "x" and set(cfg.candidates) == {"cheap", "smart", "myModel"}


def test_env_override_matching_two_keys_is_ambiguous():
    data = _cfg()
    data["candidates"]["myModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    data["candidates"]["MyModel"] = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    msg = _error(data, {"ROUTER_STREAM__CANDIDATES__MYMODEL__MAX_RETRIES": "1"})
    assert "ROUTER_STREAM__CANDIDATES__MYMODEL__MAX_RETRIES" in msg and "ambiguous" in msg
    assert "'myModel'" in msg and "'MyModel'" in msg


def test_env_override_indexes_a_list_and_rejects_a_path_through_a_value():
    cfg = parse_config(_cfg(strategies=[_rules("a"), _rules("b")]),
                       environ={"ROUTER_STREAM__STRATEGIES__1__NAME": "renamed"})
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
    msg = _file_error(tmp_path, """\
candidates:
  cheap: {base_url: "http://127.0.0.1:1/v1", model: c}
default: cheap
strategies:
  - {type: rules, rules: [{when: "True", then: cheap}]}
strategies:
  - {type: rules, rules: [{when: "False", then: cheap}]}
""")
    assert "duplicate key 'strategies'" in msg and "line 6" in msg and "line 4" in msg


def test_duplicate_candidate_is_an_error(tmp_path):
    msg = _file_error(tmp_path, """\
candidates:
  cheap: {base_url: "http://127.0.0.1:1/v1", model: c}
  smart: {base_url: "http://127.0.0.1:1/v1", model: s}
  cheap: {base_url: "http://127.0.0.1:2/v1", model: c2}
default: cheap
""")
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


@pytest.mark.parametrize("section,field", [("candidates.cheap", "api_key_env"), ("kafka", "sasl_password_env"),
                                           ("candidates.cheap", "api_key"), ("candidates.cheap", "token")])
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
@pytest.mark.parametrize("value", [FAKE_KEY, "my-api-key", "sk_live_51HqLyjWDarjtT1zdp7dcXYZ",
                                   "AIzaSyD3x9Kq7Lm2Np4Rt6Vw8Yz0Ab1Cd2Ef3Gh", "0123456789abcdef0123456789abcdef",
                                   "OPENAI API KEY", ""])
def test_api_key_env_that_looks_like_a_key_is_refused_without_echo(value):
    data = _cfg()
    data["candidates"]["cheap"]["api_key_env"] = value
    msg = _error(data)
    assert msg.startswith("candidates.cheap.api_key_env: must be the NAME of an environment variable")
    assert "not the key itself" in msg and (not value or value not in msg)
    msg = _error(_cfg(), {"ROUTER_STREAM__CANDIDATES__CHEAP__API_KEY_ENV": value or "''"})
    assert "ROUTER_STREAM__CANDIDATES__CHEAP__API_KEY_ENV" in msg and (not value or value not in msg)


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "CHEAP_KEY", "RS_TEST_KEY", "vllm_api_key", "_K2",
                                   "MY_VERY_LONG_PROVIDER_NAME_SERVICE_ACCOUNT_API_KEY"])
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
    assert msg == ("strategies[3].name: 'judge' is already the name of strategies[1]; "
                   "give each strategy a unique name")


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


@pytest.mark.parametrize("url", ["http://:s3cretpw@api.example.com", "https://user:s3cretpw word@h",
                                 "ftp://user:s3cret/pw@h", "https://user:s3cret/pw@api.example.com/v1"])
def test_no_form_of_a_url_with_a_password_is_accepted_or_echoed(url):
    data = _cfg()
    data["candidates"]["cheap"]["base_url"] = url
    msg = _error(data)
    assert msg.startswith("candidates.cheap.base_url: ") and "s3cret" not in msg, msg
