"""``make demo-real``: the demo with a real LLM (SmolLM2-135M via llama.cpp) as the ``cheap`` candidate.

The broker, worker, reading and the base summary are :func:`.demo.run_scenario`'s; this module
adds what differs: the model servers (the real one from :mod:`.real_llm` beside a loopback
``strong``), traffic in the shapes applications send (plain prompts, OpenAI bodies with content
parts, tool definitions at top level and in ``params``), and a summary with real answers and the
server's real token usage, per request kind. Dead letters are counted with their reasons rather
than treated as failures: until the worker accepts a request shape (e.g. content parts), the
demo shows how it is refused.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from .demo import LONG, Scenario, StartedModels, run_scenario, summarize
from .real_llm import MODEL_ALIAS, LlamaServer, RealModel, llm_dir

__all__ = ["REAL_STRATEGIES", "real_traffic", "run_real_demo"]

#: rules only: every request the rules leave alone goes to the default, the real model
REAL_STRATEGIES: list[dict[str, Any]] = [
    {
        "type": "rules",
        "name": "by-content",
        "rules": [
            {"when": '"legal" in tags or fields.lang == "de"', "then": "strong"},
            {"when": "len(prompt) > 200", "then": "strong"},
        ],
    },
]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "city name"}},
            "required": ["city"],
        },
    },
}

PLAIN = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2+2?",
    "Say hello in Spanish.",
    "Give me a synonym for happy.",
    "What do bees make?",
]
PARTS = ["Describe a cat in one sentence.", "What is the opposite of cold?", "Name a fruit that is yellow."]


def real_traffic(
    max_tokens: int = 40,
) -> tuple[list[tuple[bytes | None, bytes | None]], dict[str, tuple[str, str]]]:
    """The records, and ``request_id -> (kind, prompt text)`` for the summary."""
    bodies: list[tuple[str, str, dict[str, Any]]] = []  # (kind, text, body)
    for i, text in enumerate(PLAIN):
        bodies.append(
            (
                "plain",
                text,
                {"request_id": f"plain-{i}", "prompt": text, "params": {"max_tokens": max_tokens}},
            )
        )
    bodies.append(
        (
            "plain",
            "Answer briefly. / Why is the sky blue?",
            {
                "request_id": "plain-system",
                "params": {"max_tokens": max_tokens},
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "Why is the sky blue?"},
                ],
            },
        )
    )
    for i, text in enumerate(PARTS):  # an OpenAI body: content as a list of parts, max_tokens at top level
        bodies.append(
            (
                "content-parts",
                text,
                {
                    "request_id": f"parts-{i}",
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                },
            )
        )
    bodies.append(
        (
            "content-parts",
            "Translate to French: / good morning",
            {
                "request_id": "parts-two",
                "max_tokens": max_tokens,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Translate to French:"},
                            {"type": "text", "text": "good morning"},
                        ],
                    }
                ],
            },
        )
    )
    weather = "What is the weather in Paris right now?"
    for i in range(2):  # tools at top level, as an OpenAI body
        bodies.append(
            (
                "tools",
                weather,
                {
                    "request_id": f"tools-{i}",
                    "max_tokens": max_tokens,
                    "tools": [WEATHER_TOOL],
                    "messages": [{"role": "user", "content": weather}],
                },
            )
        )
    for i in range(2):  # tools in params: the form the worker has always accepted
        bodies.append(
            (
                "params.tools",
                weather,
                {
                    "request_id": f"params-tools-{i}",
                    "prompt": weather,
                    "params": {"tools": [WEATHER_TOOL], "max_tokens": max_tokens},
                },
            )
        )
    routed: list[tuple[str, dict[str, Any]]] = [
        ("Is this NDA enforceable?", {"tags": ["legal"]}),
        ("Wie spät ist es?", {"fields": {"lang": "de"}}),
        (LONG * 2, {}),
    ]
    for i, (text, extra) in enumerate(routed):  # the rules send these to the loopback 'strong'
        bodies.append(
            (
                "to-strong",
                text,
                {"request_id": f"strong-{i}", "prompt": text, "params": {"max_tokens": max_tokens}, **extra},
            )
        )
    records: list[tuple[bytes | None, bytes | None]] = []
    about: dict[str, tuple[str, str]] = {}
    for n, (kind, text, body) in enumerate(bodies):
        records.append((f"customer-{n % 5}".encode(), json.dumps(body).encode()))
        about[body["request_id"]] = (kind, text)
    for bad in (b"{oops", b'{"prompt": "no request id"}'):  # malformed on purpose
        records.append((b"customer-x", bad))
    return records, about


def _dead_id(d: dict[str, Any]) -> str:
    """The dead letter's request id: its own field, else the one in the copied value, else ''."""
    if d.get("request_id"):
        return str(d["request_id"])
    try:
        body = json.loads(base64.b64decode(d.get("value_b64") or ""))
    except ValueError:
        return ""
    return str(body.get("request_id") or "") if isinstance(body, dict) else ""


def _short(text: str | None, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def real_summary(
    about: dict[str, tuple[str, str]], samples: int = 8
) -> Callable[[list[Any], list[Any], list[Any], int, float], str]:
    """The base summary plus per-kind outcomes, dead-letter reasons, real usage and sample answers."""

    def render(responses: list[Any], audits: list[Any], dead: list[Any], sent: int, elapsed: float) -> str:
        resp = [json.loads(r.value) for r in responses]
        dls = [json.loads(r.value) for r in dead]
        lines = [
            summarize(responses, audits, dead, sent, elapsed),
            "",
            "per request kind (sent: answered / error / dead letter):",
        ]
        outcome: dict[str, Counter[str]] = defaultdict(Counter)
        for r in resp:
            outcome[about.get(r["request_id"], ("?", ""))[0]]["error" if r.get("error") else "answered"] += 1
        for d in dls:
            outcome[about.get(_dead_id(d), ("malformed", ""))[0]]["dead"] += 1
        sent_by_kind = Counter(kind for kind, _ in about.values())
        for kind in [*sent_by_kind, "malformed"]:
            c = outcome.get(kind, Counter())
            total = sent_by_kind[kind] if kind in sent_by_kind else sent - len(about)
            lines.append(f"  {kind:<14} {total:>3}: {c['answered']} / {c['error']} / {c['dead']}")
        if dls:
            lines.append("dead letters by reason:")
            reasons = Counter((d["reason"], _short(d.get("message"), 110)) for d in dls)
            lines.extend(f"  {n} x {reason}: {message}" for (reason, message), n in reasons.most_common())
        errors = Counter((r.get("error_kind"), _short(r.get("error"), 110)) for r in resp if r.get("error"))
        if errors:
            lines.append("error responses:")
            lines.extend(f"  {n} x {kind}: {msg}" for (kind, msg), n in errors.most_common())
        lines.append("token usage as the servers reported it (prompt / completion / total, answers):")
        for cand in sorted({r.get("candidate") for r in resp if r.get("usage")}, key=str):
            us = [r["usage"] for r in resp if r.get("candidate") == cand and r.get("usage")]
            p, c = sum(u["prompt_tokens"] for u in us), sum(u["completion_tokens"] for u in us)
            who = f"{cand} ({MODEL_ALIAS}, llama.cpp)" if cand == "cheap" else f"{cand} (loopback, chars/4)"
            lines.append(f"  {who:<28} {p} / {c} / {p + c} over {len(us)} answers")
        real = [r for r in resp if r.get("candidate") == "cheap" and not r.get("error")]
        real.sort(key=lambda r: (about.get(r["request_id"], ("?", ""))[0] == "plain", r["request_id"]))
        lines.append(f"sample answers from {MODEL_ALIAS} (the real model):")
        for r in real[:samples]:
            kind, text = about.get(r["request_id"], ("?", ""))
            u = r.get("usage") or {}
            extra = "".join(
                f", {k}={_short(json.dumps(r[k]), 80)}"
                for k in ("finish_reason", "tool_calls")
                if r.get(k) is not None
            )
            lines.append(
                f"  [{kind}] {_short(text, 50)!r}\n      -> {_short(r.get('output'))!r}\n"
                f"      ({u.get('prompt_tokens')}+{u.get('completion_tokens')} tokens, "
                f"{r.get('latency_ms') or 0:.0f} ms{extra})"
            )
        if not real:
            lines.append("  (none: no request reached the real model)")
        return "\n".join(lines)

    return render


def run_real_demo(model: RealModel, bootstrap: str | None = None, max_tokens: int = 40) -> int:
    """SmolLM2 as ``cheap`` beside a loopback ``strong``; the worker and broker from :func:`run_scenario`."""
    traffic, about = real_traffic(max_tokens)

    def start_models(stack: ExitStack, say: Callable[[str], None]) -> StartedModels:
        from .model_server import ModelServer

        say(f"starting llama_cpp.server with {model.gguf.rsplit('/', 1)[-1]} ...")
        llama = LlamaServer(model, log_path=llm_dir() / "server.log")
        stack.callback(llama.stop)
        waited = llama.start()
        say(f"real model: cheap = {MODEL_ALIAS} at {llama.base_url} (loaded in {waited:.1f}s)")
        strong = ModelServer(name="strong", latency_ms=40, jitter_ms=20)
        strong.start_in_thread()
        stack.callback(strong.stop)
        say(f"loopback model: strong at {strong.base_url}")
        # llama.cpp answers one call at a time: the queue, not the model, sets the wait, hence the timeout
        # SmolLM2's chat template in llama.cpp takes string content only: text parts are joined
        cheap = {
            "model": MODEL_ALIAS,
            "request_timeout_ms": 120_000,
            "max_retries": 1,
            "context_window": llama.n_ctx,
            "price_input_per_1k": 0.0,
            "price_output_per_1k": 0.0,
            "content_parts": "text",
        }
        return {"cheap": llama.base_url, "strong": strong.base_url}, {"cheap": cheap}

    return run_scenario(
        Scenario(
            name="demo-real",
            start_models=start_models,
            traffic=traffic,
            strategies=REAL_STRATEGIES,
            expected_dead=None,
            summarize=real_summary(about),
            process_timeout_s=600,
        ),
        bootstrap,
    )
