"""http-client: calls/s and p99 of the HTTP clients the model call could sit on.

The loopback model server runs in its own process; the client runs in this one, C callers in a
closed loop for a fixed time (a warm-up, then the measured window). Clients:

* ``httpx default`` — ``httpx.AsyncClient()`` with its own transport (default limits);
* ``httpx + AiohttpTransport`` — httpx API over ``httpx_aiohttp.AiohttpTransport`` (limits = C);
* ``router-stream client`` — :class:`router_stream.providers.openai.OpenAIChatClient`, what the
  worker uses: httpx requests and responses on its own aiohttp transport
  (:class:`router_stream.providers.aiohttp_transport.ModelTransport`, answers read whole, no
  ``AsyncClient.send``), plus error mapping and response parsing;
* ``aiohttp`` — a raw ``aiohttp.ClientSession`` (connector limit = C): the baseline.

Each at 64 and 256 in flight, with a 200 ms and an instant model. Ratios: against raw aiohttp
(same cell) and, at 200 ms, against Little's bound C / L. CPU per call is this process's CPU
time over the window divided by the calls completed in it. The window opens only once every
caller has completed a call on average (connections warm), however slow the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .common import Ctx, Headline, ModelServerProc, Result, Table, pct, ratio

NAME = "http-client"
TITLE = "httpx default vs httpx+AiohttpTransport vs router-stream client vs raw aiohttp"
NEEDS_KAFKA = False

CLIENTS = ("httpx default", "httpx + AiohttpTransport", "router-stream client", "aiohttp")
BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "What is the capital of Peru?"}],
    "max_tokens": 50,
}


Call = Callable[[], Awaitable[Any]]


def _httpx_caller(client: Any, url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """A closed-loop caller over an ``httpx.AsyncClient`` (whatever its transport) and its close."""

    async def call() -> Any:
        r = await client.post(url, json=BODY)
        r.raise_for_status()
        return r.json()

    return call, client.aclose


async def _client(kind: str, base_url: str, conc: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    url = f"{base_url}/chat/completions"
    if kind == "httpx default":
        import httpx

        return _httpx_caller(httpx.AsyncClient(timeout=httpx.Timeout(30.0)), url)
    if kind == "httpx + AiohttpTransport":
        import httpx
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        return _httpx_caller(
            httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits),
                limits=limits,
                trust_env=False,
                timeout=httpx.Timeout(30.0),
            ),
            url,
        )
    if kind == "router-stream client":
        from router_stream.config import CandidateConfig
        from router_stream.providers.base import ChatCall
        from router_stream.providers.openai import OpenAIChatClient

        cfg = CandidateConfig(
            base_url=base_url, model="bench-model", request_timeout_ms=30_000, max_connections=conc
        )
        rs = OpenAIChatClient("bench", cfg)
        chat = ChatCall(messages=BODY["messages"], params={"max_tokens": 50}, timeout_s=30.0)

        async def call() -> Any:
            return await rs.complete(chat)

        return call, rs.aclose
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=conc), timeout=aiohttp.ClientTimeout(total=30)
        )

        async def call() -> Any:
            async with session.post(url, json=BODY) as r:
                r.raise_for_status()
                return await r.json()

        return call, session.close
    raise ValueError(kind)


async def cell(
    kind: str,
    base_url: str,
    conc: int,
    warm_s: float,
    measure_s: float,
    *,
    warm_calls: int | None = None,
    max_stretch_s: float = 6.0,
) -> dict[str, Any]:
    """C callers in a closed loop. The window opens after ``warm_s`` *and* after C calls have
    completed (``warm_calls``, default C: every slot has made a round trip, however slow the
    client), then lasts ``measure_s`` or three times the warm-up (at most ``measure_s +
    max_stretch_s``), whichever is longer: slow clients complete in waves one round trip apart."""
    warm_calls = conc if warm_calls is None else warm_calls
    call, close = await _client(kind, base_url, conc)
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    window = {"t0": float("inf"), "t1": float("inf"), "length": measure_s}
    opened = asyncio.Event()
    latencies: list[float] = []
    completed = done_in_window = errors = 0
    cpu: dict[str, float] = {}

    def maybe_open(now: float) -> None:
        if not opened.is_set() and (
            (now - t_start >= warm_s and completed >= warm_calls) or now - t_start >= 20
        ):
            # a slow client's C callers complete in waves one round trip apart: span several
            window["length"] = max(measure_s, min(3 * (now - t_start), measure_s + max_stretch_s))
            window["t0"], window["t1"] = now, now + window["length"]
            cpu["t0"] = time.process_time()
            opened.set()

    async def closer() -> None:
        while not opened.is_set():
            maybe_open(loop.time())
            await asyncio.sleep(0.01)
        await asyncio.sleep(max(0.0, window["t1"] - loop.time()))
        cpu["t1"] = time.process_time()

    async def caller() -> None:
        nonlocal done_in_window, errors, completed
        while True:
            s = loop.time()
            if s >= window["t1"]:
                return
            try:
                await call()
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            e = loop.time()
            completed += 1
            if window["t0"] <= e <= window["t1"]:
                done_in_window += 1
            if s >= window["t0"]:
                latencies.append(e - s)

    marker = asyncio.create_task(closer())
    tasks = [asyncio.create_task(caller()) for _ in range(conc)]
    _, pending = await asyncio.wait(tasks, timeout=20 + measure_s + 15)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await marker
    try:
        await close()
    except Exception:
        pass
    return {
        "calls_per_s": done_in_window / window["length"],
        "window_s": window["length"],
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors,
        "unfinished": len(pending),
        "warm_up_s": window["t0"] - t_start,
        "cpu_ms_per_call": (cpu["t1"] - cpu["t0"]) / done_in_window * 1000
        if done_in_window
        else float("nan"),
    }


def run(ctx: Ctx) -> Result:
    warm_s, measure_s = (0.3, 1.0) if ctx.quick else (1.0, 4.0)
    res = Result(NAME, TITLE)
    results: dict[tuple[float, int, str], dict[str, Any]] = {}
    with ModelServerProc(ctx.workdir, "http", latency_ms=200) as model:
        for latency in (200.0, 0.0):
            model.set_latency(latency)
            for conc in (64, 256):
                for kind in CLIENTS:
                    r = asyncio.run(
                        cell(
                            kind,
                            model.base_url,
                            conc,
                            warm_s,
                            measure_s,
                            warm_calls=min(conc, 64) if ctx.quick else conc,
                            max_stretch_s=2.0 if ctx.quick else 6.0,
                        )
                    )
                    results[(latency, conc, kind)] = r
                    ctx.say(
                        f"{latency:.0f} ms, {conc} in flight, {kind}: {r['calls_per_s']:,.0f} calls/s, "
                        f"p99 {r['p99_ms']:,.0f} ms, {r['cpu_ms_per_call']:.2f} ms CPU/call"
                        + (f", {r['errors']} errors" if r["errors"] else "")
                    )
    for latency in (200.0, 0.0):
        rows = []
        for conc in (64, 256):
            base = results[(latency, conc, "aiohttp")]
            for kind in CLIENTS:
                r = results[(latency, conc, kind)]
                row = [
                    conc,
                    kind,
                    r["calls_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["cpu_ms_per_call"],
                    f"{ratio(r['calls_per_s'], base['calls_per_s']):.2f}",
                ]
                if latency:
                    row.append(f"{r['calls_per_s'] / (conc / (latency / 1000)):.2f}")
                row.append(r["errors"])
                rows.append(row)
        headers = ["in flight", "client", "calls/s", "p50 ms", "p99 ms", "CPU ms/call", "÷ aiohttp"]
        if latency:
            headers.append("÷ C/L")
        headers.append("errors")
        res.tables.append(
            Table(
                f"model latency {latency:.0f} ms"
                + (" (Little's bound 320/s at 64, 1,280/s at 256)" if latency else " (instant)"),
                headers,
                rows,
            )
        )
    rs256 = results[(200.0, 256, "router-stream client")]
    default256 = results[(200.0, 256, "httpx default")]
    aio256 = results[(200.0, 256, "aiohttp")]
    res.headlines.append(
        Headline(
            "router-stream client / raw aiohttp, 256 in flight, 200 ms (calls/s)",
            ratio(rs256["calls_per_s"], aio256["calls_per_s"]),
            "report",
            None,
            f"{rs256['calls_per_s']:,.0f} vs {aio256['calls_per_s']:,.0f}; httpx default "
            f"{default256['calls_per_s']:,.0f} calls/s, p99 {default256['p99_ms']:,.0f} ms",
        )
    )
    res.headlines.append(
        Headline(
            "router-stream client / C/L, 256 in flight, 200 ms",
            rs256["calls_per_s"] / 1280,
            "report",
            None,
            f"p99 {rs256['p99_ms']:,.0f} ms",
        )
    )
    longest = max(r["window_s"] for r in results.values())
    warm_calls = "min(C, 64)" if ctx.quick else "C"
    res.notes.append(
        f"window {measure_s:g} s per cell (up to {longest:.1f} s for slow clients: 3× their warm-up, "
        f"capped), opened after ≥ {warm_s:g} s and ≥ {warm_calls} completed calls (warm connections); "
        "client and server share the same 2 cores with everything else on the machine"
    )
    res.data = {f"{lat:.0f}ms/{c}/{k}": v for (lat, c, k), v in results.items()}
    res.data["cpu_ms_per_call_router_client_instant_64"] = results[(0.0, 64, "router-stream client")][
        "cpu_ms_per_call"
    ]
    return res
