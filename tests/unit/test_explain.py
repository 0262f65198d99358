"""``router-stream explain``: verdicts and final choice, dead letters, --no-io, --json, the CLI."""

from __future__ import annotations

import json

import pytest

from router_stream.cli import main
from router_stream.config import parse_config
from router_stream.explain import explain
from router_stream.routing.base import stable_fraction
from router_stream_dev.model_server import ModelServer

CANDIDATES = {name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in ("cheap", "smart")}
STRATEGIES = [
    {"type": "rules", "name": "by-content", "rules": [{"when": '"legal" in tags', "then": "smart"}]},
    {"type": "split", "name": "canary", "weights": {"cheap": 1, "smart": 1}},
]
CONFIG_YAML = """\
candidates:
  cheap: {base_url: "http://127.0.0.1:9/v1", model: cheap}
  smart: {base_url: "http://127.0.0.1:9/v1", model: smart}
default: cheap
strategies:
  - type: rules
    name: by-content
    rules:
      - when: '"legal" in tags'
        then: smart
  - type: judge
    name: the-judge
    candidate: cheap
  - type: split
    name: canary
    weights: {cheap: 1, smart: 1}
"""


def config(strategies=STRATEGIES, **extra):
    return parse_config(
        {"candidates": CANDIDATES, "default": "cheap", "strategies": strategies, **extra}, environ={}
    )


def req(**fields) -> bytes:
    return json.dumps({"request_id": "r1", "prompt": "hello", **fields}).encode()


async def test_rules_then_split_verdicts_and_final_choice():
    result = await explain(config(), req(), key="user-7")
    arm = "cheap" if stable_fraction("canary", "user-7") < 0.5 else "smart"
    assert [(v.strategy, v.outcome, v.candidate) for v in result.verdicts] == [
        ("by-content", "abstained", None),
        ("canary", "chose", arm),
    ]
    assert result.verdicts[0].reason == "no rule matched"
    assert (result.candidate, result.decided_by, result.cacheable) == (arm, "canary", True)
    assert (result.key, result.key_source, result.exit_code) == ("user-7", "the Kafka key", 0)
    assert any("sticky decision was not read" in n for n in result.notes)

    legal = await explain(config(), req(tags=["legal"]), key="user-7")
    assert [(v.strategy, v.outcome) for v in legal.verdicts] == [("by-content", "chose")]
    assert (legal.candidate, legal.decided_by) == ("smart", "by-content")


async def test_default_when_nobody_decides_and_scope_without_key():
    result = await explain(config(strategies=STRATEGIES[:1]), req())
    assert (result.candidate, result.decided_by, result.cacheable) == ("cheap", "default", False)
    assert (result.key, result.key_source) == ("request:r1", "no Kafka key: the request id")
    assert "no strategy decided" in result.table()


async def test_request_field_and_scope_field_as_in_the_worker():
    cfg = config(allow_request_candidate_field="route_to", cache={"scope": "field", "scope_field": "user"})
    result = await explain(cfg, req(fields={"route_to": "smart", "user": "u9"}), key="k")
    assert [(v.strategy, v.outcome) for v in result.verdicts] == [("request", "chose")]
    assert (result.candidate, result.decided_by) == ("smart", "request")
    assert (result.key, result.key_source) == ("u9", "request field fields.user")


async def test_malformed_request_is_the_workers_dead_letter():
    result = await explain(config(), b'{"prompt": "no id"}')
    assert result.exit_code == 2 and result.dead_letter.reason == "missing_request_id"
    assert result.verdicts == [] and result.candidate is None
    assert result.table().startswith("dead letter: missing_request_id: the request has no usable request_id")
    assert (await explain(config(), b"not json")).dead_letter.reason == "not_json"
    tight = config(candidates={"cheap": {**CANDIDATES["cheap"], "context_window": 5}}, strategies=[])
    assert (await explain(tight, req(prompt="x" * 500))).dead_letter.reason == "context_window"


async def test_a_chosen_candidate_too_small_for_the_prompt_is_noted():
    cands = {
        "cheap": {**CANDIDATES["cheap"], "context_window": 50, "fallbacks": ["smart"]},
        "smart": CANDIDATES["smart"],
    }
    result = await explain(config(candidates=cands, strategies=[]), req(prompt="x" * 1000))
    assert result.candidate == "cheap" and result.dead_letter is None
    assert any(
        n.startswith("the prompt is ~")
        and "over 'cheap''s context window (50)" in n
        and n.endswith("skip it for its fallbacks (smart)")
        for n in result.notes
    ), result.notes


async def test_by_default_judge_and_scorer_are_not_run_and_no_model_is_called():
    async with ModelServer(name="judge", answer="smart") as judge_server:
        candidates = {**CANDIDATES, "judge": {"base_url": judge_server.base_url, "model": "j"}}
        strategies = [
            {"type": "judge", "name": "j", "candidate": "judge", "allowed": ["cheap", "smart"]},
            {"type": "scorer", "name": "s", "url": "http://127.0.0.1:9/score"},
            STRATEGIES[1],
        ]
        cfg = config(candidates=candidates, strategies=strategies)
        result = await explain(cfg, req(), key="k")
        assert [(v.strategy, v.outcome) for v in result.verdicts[:2]] == [
            ("j", "abstained"),
            ("s", "abstained"),
        ]
        assert result.verdicts[0].reason == "not run: judge strategies call a model (--with-io runs them)"
        assert (
            result.verdicts[1].reason == "not run: scorer strategies call an endpoint (--with-io runs them)"
        )
        assert result.decided_by == "canary"
        assert "not run (they call a model or an endpoint; --with-io runs them): j, s" in result.notes
        assert judge_server.stats()["calls"] == 0
        # --with-io: the judge's model is asked (and decides); the scorer is not reached
        result = await explain(cfg, req(), key="k", with_io=True)
        assert (result.candidate, result.decided_by) == ("smart", "j")
        assert judge_server.stats()["calls"] == 1
        assert "not reached (j decided first): s, canary" in result.notes


async def test_strategies_after_the_decider_are_listed_as_not_reached():
    result = await explain(config(), req(tags=["legal"]))
    assert result.decided_by == "by-content" and len(result.verdicts) == 1
    assert "not reached (by-content decided first): canary" in result.notes


async def test_only_trace_headers_reach_strategies():
    strategies = [
        {"type": "rules", "name": "h", "rules": [{"when": 'headers.traceparent == "t1"', "then": "smart"}]}
    ]
    result = await explain(
        config(strategies=strategies), req(), headers={"traceparent": "t1", "x-other": "y"}
    )
    assert result.decided_by == "h"
    assert any("headers not passed to strategies" in n and n.endswith("x-other") for n in result.notes)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG_YAML)
    return path


def test_cli_table(config_file, capsys):
    code = main(["explain", "--config", str(config_file), "--request", req().decode(), "--key", "user-7"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("request 'r1', key 'user-7' (the Kafka key)")
    assert any(line.startswith("2  the-judge   abstained") and "not run: judge" in line for line in lines)
    arm = "cheap" if stable_fraction("canary", "user-7") < 0.5 else "smart"
    assert f"final: {arm} (decided_by canary), cacheable" in lines
    assert any(line.startswith("note: the key's sticky decision was not read") for line in lines)


def test_cli_json_from_file_with_headers(config_file, tmp_path, capsys):
    request_file = tmp_path / "r.json"
    request_file.write_bytes(req(tags=["legal"]))
    code = main(
        [
            "explain",
            "--config",
            str(config_file),
            "--request",
            f"@{request_file}",
            "--no-io",
            "--json",  # --no-io: the default, still accepted
            "--headers",
            '{"traceparent": "00-1"}',
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["final"] == {"candidate": "smart", "decided_by": "by-content", "cacheable": True}
    assert data["verdicts"][0]["outcome"] == "chose" and data["key"] == "request:r1"


def test_cli_malformed_request_exits_2_with_the_reason(config_file, capsys):
    code = main(["explain", "--config", str(config_file), "--request", '{"request_id": "r1"}', "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 2
    assert data["dead_letter"]["reason"] == "invalid_request"
    assert data["dead_letter"]["request_id"] == "r1"
    assert "needs 'messages' or 'prompt'" in data["dead_letter"]["message"]
    code = main(["explain", "--config", str(config_file), "--request", "[1]"])
    assert code == 2 and capsys.readouterr().out.startswith("dead letter: wrong_shape:")


def test_cli_bad_arguments_exit_2(config_file, tmp_path, capsys):
    assert main(["explain", "--config", str(config_file), "--request", f"@{tmp_path / 'missing.json'}"]) == 2
    assert "--request: cannot read" in capsys.readouterr().err
    assert (
        main(["explain", "--config", str(config_file), "--request", req().decode(), "--headers", "[1]"]) == 2
    )
    assert "--headers: expected a JSON object" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG_YAML.replace("then: smart", "then: smartt"))
    assert main(["explain", "--config", str(bad), "--request", req().decode()]) == 2
    assert "strategies[0].rules[0].then: 'smartt' is not a candidate" in capsys.readouterr().err


async def test_a_sticky_decision_applies_after_the_strategies_before_its_decider():
    from router_stream.explain import parse_sticky

    sticky = parse_sticky("canary=cheap", 0)
    plain = await explain(config(), req(), key="user-7", sticky=sticky)
    assert [(v.strategy, v.outcome, v.candidate) for v in plain.verdicts] == [
        ("by-content", "abstained", None),
        ("canary", "chose", "cheap"),
    ]
    assert plain.verdicts[1].detail["sticky"] is True
    assert any(
        "sticky decision canary=cheap applied at 'canary'" in n and "after by-content abstained" in n
        for n in plain.notes
    )
    legal = await explain(config(), req(tags=["legal"]), key="user-7", sticky=sticky)
    assert (legal.candidate, legal.decided_by) == ("smart", "by-content")
    assert any("'by-content' comes before 'canary' and decided" in n for n in legal.notes)
    gone = await explain(config(), req(), key="user-7", sticky=parse_sticky("retired=cheap", 0))
    assert gone.decided_by == "canary" and any("not applied: 'retired'" in n for n in gone.notes)
    with pytest.raises(ValueError, match="expected STRATEGY=CANDIDATE"):
        parse_sticky("canary", 0)


def test_cli_sticky_flag(config_file, capsys):
    code = main(
        [
            "explain",
            "--config",
            str(config_file),
            "--request",
            req(tags=["legal"]).decode(),
            "--key",
            "user-7",
            "--sticky",
            "canary=cheap",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "final: smart (decided_by by-content)" in out
    assert "note: sticky decision canary=cheap not applied: 'by-content' comes before 'canary'" in out
    assert main(["explain", "--config", str(config_file), "--request", req().decode(), "--sticky", "x"]) == 2
