"""Candidate config for the adapters: ``api``, ``headers``/``query`` with env references, and the
secrets rules (a literal secret is refused without being echoed; reprs never hold one)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router_stream.config import CandidateConfig, parse_config
from router_stream.errors import ConfigError
from router_stream.providers.openai import OpenAIChatClient
from router_stream.secret_values import EnvRef, is_credential_name, looks_like_secret, resolve

SECRET = "sk-ant-api03-Zq8vB2xN4mK7pL1tR9wY3cF6hJ0dS5gA"


def cfg(**cand):
    cand.setdefault("base_url", "https://api.example.com/v1")
    cand.setdefault("model", "m")
    return {"candidates": {"c": cand}, "default": "c"}


def load_error(**cand) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(cfg(**cand), environ={})
    return str(info.value)


def test_api_defaults_to_openai_and_headers_query_parse():
    c = parse_config(
        cfg(
            headers={"X-Team": "search", "Authorization": {"env": "GW_TOKEN"}},
            query={"team": "a", "key": {"env": "GW_KEY"}},
        ),
        environ={},
    ).candidates["c"]
    assert c.api == "openai"
    assert c.headers == {"X-Team": "search", "Authorization": EnvRef(env="GW_TOKEN")}
    assert c.query == {"team": "a", "key": EnvRef(env="GW_KEY")}


@pytest.mark.parametrize(
    "section,name,value",
    [
        ("headers", "Authorization", SECRET),
        ("headers", "authorization", "Bearer abc"),
        ("headers", "x-api-key", "hello"),
        ("headers", "api-key", "0123"),
        ("headers", "Ocp-Apim-Subscription-Key", "plain"),
        ("headers", "X-Anything", SECRET),
        ("headers", "X-Anything", "Bearer " + "q" * 10),
        ("headers", "X-Anything", "3f7a9c0b1d2e4f5a6b7c8d9e0f1a2b3c"),
        ("headers", "X-Anything", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIx.c2lnbmF0dXJl"),
        ("query", "key", "abc"),
        ("query", "sig", "abc"),
        ("query", "apiKey", "abc"),
        ("query", "whatever", SECRET),
    ],
)
def test_literal_secrets_are_refused_without_being_echoed(section, name, value):
    message = load_error(**{section: {name: value}})
    assert message.startswith(f"candidates.c.{section}: {name}: ")
    assert "{env: NAME}" in message
    assert value not in message and value[:12] not in message
    with pytest.raises(ValidationError) as info:  # built in code: the pydantic text hides it too
        CandidateConfig(base_url="https://x/v1", model="m", **{section: {name: value}})
    assert value not in str(info.value) and value not in repr(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "search",
        "application/json",
        "2023-06-01",
        "prompt-caching-2024-07-31",
        "router-stream-production-eu-west-1",
        "internationalization",
    ],
)
def test_ordinary_literals_are_kept(value):
    assert not looks_like_secret(value)
    assert parse_config(cfg(headers={"X-Info": value}), environ={}).candidates["c"].headers == {
        "X-Info": value
    }


def test_an_env_reference_must_name_a_variable_not_hold_the_secret():
    message = load_error(headers={"Authorization": {"env": SECRET}})
    assert "NAME of an environment variable" in message and SECRET not in message
    assert "only the key 'env'" in load_error(headers={"X-A": {"env": "A", "default": "x"}})
    assert "only the key 'env'" in load_error(headers={"X-A": {"value": "x"}})


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"Content-Type": "text/plain"}, "Content-Type: set by the HTTP client itself"),
        ({"Bad Name": "x"}, "'Bad Name' is not a valid HTTP header name"),
        ({"X-A": "a", "x-a": "b"}, "x-a: given twice"),
        ({"X-A": "line\nbreak"}, "X-A: a header value cannot contain a line break"),
        ({"X-A": ["list"]}, "X-A: expected a string or {env: NAME}"),
        ("not a map", "expected a mapping of header names"),
    ],
)
def test_header_mistakes_name_the_header(headers, expected):
    assert expected in load_error(headers=headers)


def test_azure_needs_api_version_and_a_resource_endpoint():
    assert "api_version: required with api: azure-openai" in load_error(api="azure-openai")
    assert "the deployment goes in deployment:" in load_error(
        api="azure-openai",
        api_version="2024-10-21",
        base_url="https://r.openai.azure.com/openai/deployments/d",
    )
    assert "api-version is set by api_version" in load_error(
        api="azure-openai", api_version="2024-10-21", query={"api-version": "x"}
    )
    assert "api-version is set by api_version" in load_error(
        api="azure-openai", api_version="2024-10-21", base_url="https://r.openai.azure.com?api-version=1"
    )
    c = parse_config(
        cfg(api="azure-openai", api_version="2024-10-21", base_url="https://r.openai.azure.com"), environ={}
    ).candidates["c"]
    assert c.deployment is None and c.api_version == "2024-10-21"


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({"deployment": "d"}, "deployment: only used with api: azure-openai"),
        ({"api_version": "v"}, "api_version: only used with api: azure-openai or anthropic"),
        ({"default_max_tokens": 100}, "default_max_tokens: only used with api: anthropic"),
        ({"api": "anthropic", "mode": "batch"}, "mode: batch uses the OpenAI Batch API"),
        ({"api": "gemini"}, "candidates.c.api"),
    ],
)
def test_fields_of_another_api_are_refused(fields, expected):
    message = load_error(**fields)
    assert expected in message


def test_unset_env_references_are_warned_about():
    config = parse_config(
        cfg(headers={"Authorization": {"env": "GW_TOKEN"}}, query={"key": {"env": "GW_KEY"}}), environ={}
    )
    assert config.unset_secret_envs({"GW_KEY": "x"}) == [("candidates.c.headers.Authorization", "GW_TOKEN")]


def test_resolve_reads_env_per_call_and_leaves_unset_out():
    values = {"X-Team": "a", "Authorization": EnvRef(env="GW_TOKEN"), "X-Other": EnvRef(env="UNSET")}
    assert resolve(values, {"GW_TOKEN": "Bearer t1", "UNSET": ""}) == [
        ("X-Team", "a"),
        ("Authorization", "Bearer t1"),
    ]
    assert resolve(values, {"GW_TOKEN": "Bearer t2"})[1] == ("Authorization", "Bearer t2")


@pytest.mark.parametrize(
    "name,credential",
    [
        ("Authorization", True),
        ("X-Api-Key", True),
        ("api-key", True),
        ("xapikey", True),
        ("X-Auth-Token", True),
        ("Cookie", True),
        ("sig", True),
        ("apiKey", True),
        ("X-Team", False),
        ("anthropic-beta", False),
        ("keywords", False),
        ("api-version", False),
    ],
)
def test_credential_names(name, credential):
    assert is_credential_name(name) is credential


async def test_reprs_of_config_and_clients_hold_no_secret(monkeypatch):
    monkeypatch.setenv("GW_TOKEN", "Bearer " + SECRET)
    monkeypatch.setenv("GW_KEY", SECRET + "q")
    monkeypatch.setenv("API_KEY", SECRET + "k")
    config = parse_config(
        cfg(
            api="anthropic",
            api_key_env="API_KEY",
            headers={"Authorization": {"env": "GW_TOKEN"}},
            query={"key": {"env": "GW_KEY"}},
        )
    )
    client = OpenAIChatClient("c", config.candidates["c"])
    try:
        wire = client.dialect.request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert ("key", SECRET + "q") in wire.url.params.multi_items()  # it does go to the provider...
        for text in (
            repr(config),
            str(config),
            repr(client),
            str(client),
            repr(client.dialect),
            client.url,
            repr(config.candidates["c"]),
        ):
            assert SECRET not in text  # ...and nowhere else
    finally:
        await client.aclose()
