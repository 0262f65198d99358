"""One CLI style: help on every option, ``--config`` on every config command (positional still
accepted), ``--version``, exit codes in the help, a fast ``--help``, one-line usage errors for
``send``/``tail`` (before any broker is contacted), ``class:`` importable beside the config, and
``train`` running on the packaged sample."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from router_stream.cli import build_parser, main

CONFIG = """\
candidates:
  cheap: {base_url: "http://127.0.0.1:9/v1", model: cheap}
  smart: {base_url: "http://127.0.0.1:9/v1", model: smart}
default: cheap
kafka: {bootstrap_servers: "127.0.0.1:1"}
"""


def cli(
    *args: str, cwd: str | Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        input=stdin,
    )


def _walk(parser: argparse.ArgumentParser, path: str = "router-stream"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def test_every_option_and_command_has_help():
    missing = []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions}
                missing += [f"{path} {name}" for name in action.choices if name not in helped]
            elif action.help is None:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help: {missing}"


def test_options_with_a_fixed_set_of_values_list_them():
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "debug, info, warning, error, critical (default: info)" in " ".join(text.split())
    res = cli("run", "--config", "x.yaml", "--loglevel", "loud")
    assert res.returncode == 2 and "invalid choice: 'loud'" in res.stderr


def test_version_comes_from_the_package_metadata():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"router-stream {metadata.version('router-stream')}"


def test_top_level_help_names_the_program_and_the_exit_codes():
    res = cli("--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: router-stream ")
    for line in ("  0   ok", "  1   failure", "  2   usage or config error", "  75  Kafka unavailable"):
        assert line in res.stdout
    for command in ("run", "topics", "check-config", "send", "tail", "train"):
        assert f"\n    {command} " in res.stdout or f"\n    {command}\n" in res.stdout


def test_help_is_fast_because_nothing_heavy_is_imported():
    probe = (
        "import sys, time; t = time.perf_counter(); from router_stream.cli import build_parser; "
        "build_parser(); print(time.perf_counter() - t); "
        "print(sorted(m for m in ('router_stream.config', 'aiokafka', 'faust', 'pydantic', 'numpy', 'httpx') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    ).stdout.split("\n")
    assert out[1] == "[]", f"imported at --help time: {out[1]}"
    best = min(_timed("--help") for _ in range(3))
    assert best < 1.0, f"router-stream --help took {best:.2f} s"


def _timed(*args: str) -> float:
    t = time.perf_counter()
    assert cli(*args).returncode == 0
    return time.perf_counter() - t


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.mark.parametrize("form", ["--config", "positional"])
def test_check_config_takes_the_config_either_way(config_file, form):
    args = ["check-config", "--config", config_file] if form == "--config" else ["check-config", config_file]
    res = cli(*args)
    assert res.returncode == 0 and res.stdout.startswith("ok: 2 candidates"), res.stderr


def test_a_missing_or_doubled_config_is_a_one_line_usage_error(config_file, tmp_path):
    none = cli("check-config")
    assert none.returncode == 2
    assert (
        none.stderr.splitlines()[-1] == "router-stream check-config: error: the config file is required: "
        "--config routing.yaml"
    )
    two = cli("run", "--config", config_file, str(tmp_path / "other.yaml"))
    assert two.returncode == 2 and "two configs given" in two.stderr.splitlines()[-1]


# ---- send / tail: bad input is refused before Kafka is contacted (the config's broker is 127.0.0.1:1) ----


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--prompt", "x", "--field", "lang"],
            "error: --field 'lang': expected NAME=VALUE, e.g. --field lang=de",
        ),
        (
            ["--request", '{"request_id": "r", "messages": [{"content": "x"}]}'],
            "error: the request: not a valid request: messages.0.role: Field required",
        ),
        (
            ["--request", "[1]"],
            'error: --request: expected a JSON object, e.g. {"request_id": "r1", "prompt": "hi"}',
        ),
        (
            ["--messages", '{"role": "user"}'],
            'error: --messages: expected a JSON list, e.g. [{"role": "user", "content": "hi"}]',
        ),
        ([], "error: nothing to send: give --prompt TEXT, --messages JSON, --request JSON or --file PATH"),
        (
            ["--file", "-", "--request-id", "x"],
            "error: --request-id names one request; with --file put request_id in each line",
        ),
        (
            ["--file", "/nonexistent/r.jsonl"],
            "error: --file: cannot read /nonexistent/r.jsonl: No such file or directory",
        ),
    ],
)
def test_send_refuses_bad_input_in_one_line(config_file, argv, message):
    res = cli("send", "--config", config_file, *argv, stdin="")
    assert res.returncode == 2 and res.stderr.strip() == message and res.stdout == ""


def test_send_checks_every_line_of_a_file_before_sending_any(config_file):
    lines = '{"request_id": "a", "prompt": "fine"}\n{"request_id": "b"}\n'
    res = cli("send", "--config", config_file, "--file", "-", stdin=lines)
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "error: <stdin>:2: not a valid request: request: a request needs 'messages' or 'prompt'"
    )
    dup = cli(
        "send", "--config", config_file, "--file", "-", stdin='{"request_id": "a", "prompt": "x"}\n' * 2
    )
    assert dup.returncode == 2 and "request_id 'a' appears more than once" in dup.stderr


def test_tail_refuses_a_non_positive_max_and_an_unknown_topic(config_file):
    res = cli("tail", "responses", "--config", config_file, "--max", "0")
    assert res.returncode == 2 and res.stderr.strip() == "error: --max must be a positive integer (got 0)"
    bad = cli("tail", "answers", "--config", config_file)
    assert bad.returncode == 2 and "invalid choice: 'answers'" in bad.stderr


# ---- custom strategies beside the config ---------------------------------------------------------

STRATEGY = """\
from router_stream.routing.base import Decision


class R:
    def __init__(self, pick="smart"):
        self.pick = pick

    async def decide(self, request, ctx):
        return Decision(self.pick, reason="mine")
"""


def _console_script(tmp_path: Path) -> Path:
    """A launcher written like the installed ``router-stream`` entry point (whose sys.path has
    neither the config's directory nor the working directory, unlike ``python -m``)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "router-stream"
    script.write_text("import sys\nfrom router_stream.cli import main\nsys.exit(main())\n")
    return script


@pytest.mark.parametrize("where", ["beside the config", "in the working directory"])
def test_a_custom_strategy_class_is_found_beside_the_config_or_in_the_cwd(tmp_path, where):
    confdir, cwd = tmp_path / "conf", tmp_path / "work"
    confdir.mkdir()
    cwd.mkdir()
    (confdir if where == "beside the config" else cwd).joinpath("myrouter.py").write_text(STRATEGY)
    config = confdir / "routing.yaml"
    config.write_text(CONFIG + 'strategies:\n  - {type: custom, name: mine, class: "myrouter:R"}\n')
    script = _console_script(tmp_path)
    res = subprocess.run(
        [sys.executable, str(script), "check-config", "--config", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    explained = subprocess.run(
        [
            sys.executable,
            str(script),
            "explain",
            "--config",
            str(config),
            "--json",
            "--request",
            '{"request_id": "r", "prompt": "hi"}',
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["final"] == {
        "candidate": "smart",
        "decided_by": "mine",
        "cacheable": True,
    }


def test_without_the_file_the_error_still_names_the_class(tmp_path):
    config = tmp_path / "routing.yaml"
    config.write_text(CONFIG + 'strategies:\n  - {type: custom, name: mine, class: "nothere_xyz:R"}\n')
    res = subprocess.run(
        [sys.executable, str(_console_script(tmp_path)), "check-config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "strategies[0].class: cannot import 'nothere_xyz:R': ModuleNotFoundError" in res.stderr


# ---- train on the packaged sample ----------------------------------------------------------------


def test_the_packaged_sample_is_small_mmlu_routing_data():
    from router_stream.learning.data import SAMPLE_DATA, load_jsonl

    records = load_jsonl(SAMPLE_DATA)
    assert 150 <= len(records) <= 300
    assert all(r.source.startswith("routellm-mmlu/") for r in records)
    assert all(set(r.scores) == {"mixtral-8x7b-instruct", "gpt-4-1106-preview"} for r in records)
    assert len({r.source for r in records}) >= 50  # spread over the subjects, not the first rows
    assert (SAMPLE_DATA.parent / "routing-sample.NOTICE").read_text().count("Apache License 2.0") == 1


def test_train_without_data_uses_the_sample_and_says_so(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--out", str(out), "--no-eval"]) == 0
    captured = capsys.readouterr()
    assert "note: no --data given: using the packaged 200-record sample routing-sample.jsonl" in captured.err
    assert out.exists() and captured.out.startswith(f"wrote {out}")


def test_train_on_the_sample_for_a_subset_it_lacks_says_to_pass_data(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "m.npz"), "--subset", "routerbench"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: no routerbench records in ") and err.endswith(
        "(the packaged sample has mmlu rows only; pass --data)"
    )
