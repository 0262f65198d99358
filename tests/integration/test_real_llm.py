"""A real LLM behind the router, on the real broker: SmolLM2-135M-Instruct served by llama.cpp.

The loopback model server answers in the shape the router expects; a real model does not. These
tests check that real answers and the server's real token usage come through exactly once, and
that micro-batching survives a model that cannot follow the batch format (135M parameters will
not write ``{"results": [...]}``): every record is answered alone, once.

They need the server built once into the cache by ``make demo-real`` (≈10 min of compiling);
without it the module is skipped, so CI never builds it. The model answers one call at a time,
so answers are kept short (``max_tokens``) and timeouts generous.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from router_stream_dev.harness import produce
from router_stream_dev.real_llm import BUILD_HINT, MODEL_ALIAS, LlamaServer, built_model

from .helpers import assert_exactly_once, ids_of, make_config, read, setup_topics, start_worker

MODEL = built_model()
if MODEL is None:
    pytest.skip(BUILD_HINT, allow_module_level=True)

pytestmark = [pytest.mark.kafka, pytest.mark.real_llm]

MAX_TOKENS = 8
SHORT = "Hi."
LONG = (
    "Read this carefully: the quick brown fox jumps over the lazy dog while the farmer watches "
    "from the old wooden fence, wondering whether the rain will come before the harvest is in. "
    "In one word, what animal jumps?"
)
PROMPTS = [
    SHORT,
    LONG,
    "What is the capital of France?",
    "Name a colour.",
    "What is 3+4?",
    "Say hello in German.",
    "What do cows drink?",
    "Name a planet.",
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory):
    assert MODEL is not None
    server = LlamaServer(MODEL, log_path=tmp_path_factory.mktemp("llama") / "server.log")
    server.start(timeout=120)
    yield server
    server.stop()


def _config(kafka_bootstrap: str, prefix: str, tmp_path, llama: LlamaServer, **cheap: Any) -> dict[str, Any]:
    # the model serialises calls: the last of a burst waits for all before it, hence the timeout
    extra = {
        "model": MODEL_ALIAS,
        "request_timeout_ms": 120_000,
        "max_retries": 1,
        "context_window": llama.n_ctx,
        **cheap,
    }
    return make_config(
        bootstrap=kafka_bootstrap,
        prefix=prefix,
        state_dir=tmp_path / "state",
        candidates={"cheap": llama.base_url},
        default="cheap",
        candidate_extra={"cheap": extra},
    )


def _send(config: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    records = [(f"k{i % 4}".encode(), json.dumps(b).encode()) for i, b in enumerate(bodies)]
    asyncio.run(produce(config["kafka"]["bootstrap_servers"], config["topics"]["requests"], records))


def _collect(config: dict[str, Any], n: int) -> tuple[dict[str, dict[str, Any]], list[Any], list[Any]]:
    responses = read(config, "responses", expect=n, timeout=240, idle=1)
    audits = read(config, "audit", expect=n, timeout=60, idle=1)
    expected = {f"r{i}" for i in range(n)}
    assert_exactly_once(ids_of(responses), expected, "responses")
    assert_exactly_once(ids_of(audits), expected, "audit")
    assert read(config, "dead_letter", timeout=10, idle=1) == []
    return {json.loads(r.value)["request_id"]: json.loads(r.value) for r in responses}, responses, audits


def test_real_answers_and_usage_come_through_exactly_once(kafka_bootstrap, prefix, tmp_path, llama):
    config = _config(kafka_bootstrap, prefix, tmp_path, llama)
    setup_topics(config, partitions=2)
    worker = start_worker(tmp_path, config)
    n = 12
    bodies: list[dict[str, Any]] = []
    for i in range(n):
        text = PROMPTS[i % len(PROMPTS)]
        body: dict[str, Any] = {"request_id": f"r{i}", "params": {"max_tokens": MAX_TOKENS}}
        if i % 2:
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        bodies.append(body)
    _send(config, bodies)
    by_id, _, audits = _collect(config, n)
    assert worker.terminate() == 0

    for rid, r in by_id.items():
        assert not r.get("error"), (rid, r.get("error"))
        assert r["candidate"] == "cheap"
        assert r["output"] and r["output"].strip(), (rid, r)
        u = r["usage"]
        # the server's count, not an estimate: capped by max_tokens, adding up
        assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= MAX_TOKENS, (rid, u)
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # the tokenizer's count follows the prompt: same text, same count; a longer text, more tokens
    short = {by_id[f"r{i}"]["usage"]["prompt_tokens"] for i in range(n) if PROMPTS[i % len(PROMPTS)] == SHORT}
    long_ = {by_id[f"r{i}"]["usage"]["prompt_tokens"] for i in range(n) if PROMPTS[i % len(PROMPTS)] == LONG}
    assert len(short) == 1 and len(long_) == 1, (short, long_)
    assert long_.pop() > short.pop() + 30
    for a in (json.loads(r.value) for r in audits):
        assert a["served_by"] == "cheap" and not a.get("error")
        assert [t["outcome"] for t in a["attempts"]][-1] == "ok"


def test_micro_batching_falls_back_to_single_calls_once_each(kafka_bootstrap, prefix, tmp_path, llama):
    config = _config(
        kafka_bootstrap,
        prefix,
        tmp_path,
        llama,
        batch={"size": 5, "timeout_ms": 500, "on_parse_error": "individual", "on_missing": "individual"},
    )
    setup_topics(config, partitions=1)  # one fetch holds the burst: the records queue together
    worker = start_worker(tmp_path, config)
    n = 8
    _send(
        config,
        [
            {"request_id": f"r{i}", "prompt": PROMPTS[i % len(PROMPTS)], "params": {"max_tokens": MAX_TOKENS}}
            for i in range(n)
        ],
    )
    by_id, _, audits = _collect(config, n)
    assert worker.terminate() == 0

    answered: Counter[tuple[str, str | None]] = Counter()
    for rid, r in by_id.items():
        assert not r.get("error"), (rid, r.get("error"))
        assert r["output"] and r["output"].strip(), (rid, r)
        batch = r.get("batch")
        assert batch is not None and batch["size"] >= 1, (rid, r)
        answered[(batch["answered"], batch.get("reason"))] += 1
        if batch["answered"] == "alone":
            # its own call's usage plus its share of the failed batched call
            assert r["usage"]["completion_tokens"] > 0
    # the records were batched (not sent one by one) and the model's answer did not parse, or
    # left records out: those were called alone, each exactly once (checked above)
    assert max(r["batch"]["size"] for r in by_id.values()) > 1, answered
    alone = sum(v for (how, _), v in answered.items() if how == "alone")
    assert alone >= 1, f"expected the fall-back to single calls, got {dict(answered)}"
    assert {reason for (how, reason) in answered if how == "alone"} <= {"parse_error", "missing"}
    for a in (json.loads(r.value) for r in audits):
        assert a.get("batch") == by_id[a["request_id"]]["batch"]
