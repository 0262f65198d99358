"""The loopback model server: answers, faults, admin endpoint, thread and process modes."""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from router_stream_dev.model_server import FaultConfig, ModelServer

CHAT = {
    "model": "whatever",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is the capital of France and why is it Paris, tell me"},
    ],
}


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


async def test_answers_in_openai_shape_and_names_itself(http):
    async with ModelServer("cheap", provider_model="cheap-v1") as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
        resp = await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        assert resp.status_code == 200
        data = resp.json()
        text = data["choices"][0]["message"]["content"]
        assert text == "[cheap] answer to: " + CHAT["messages"][1]["content"][:40]
        assert data["model"] == "cheap-v1"
        usage = data["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        stats = (await http.get(srv.base_url.removesuffix("/v1") + "/admin/stats")).json()
        assert stats["calls"] == 1 and stats["ok"] == 1
        assert stats["last_body"]["messages"][1]["role"] == "user"


async def test_echoes_requested_model_when_none_configured(http):
    async with ModelServer("x") as srv:
        data = (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).json()
        assert data["model"] == "whatever"


async def test_records_authorization_presence_not_value(http):
    async with ModelServer("cheap") as srv:
        await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        await http.post(
            f"{srv.base_url}/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-top-secret"}
        )
        stats = srv.stats()
        assert stats["auth_missing"] == 1 and stats["auth_present"] == 1
        assert stats["last_auth_present"] is True
        assert "sk-top-secret" not in repr(stats)


async def test_required_api_key_gives_401_when_wrong(http):
    async with ModelServer("cheap", api_key="sk-right") as srv:
        url = f"{srv.base_url}/chat/completions"
        assert (await http.post(url, json=CHAT)).status_code == 401
        assert (await http.post(url, json=CHAT, headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (
            await http.post(url, json=CHAT, headers={"Authorization": "Bearer sk-right"})
        ).status_code == 200
        assert "sk-right" not in repr(srv)


async def test_bad_request_body_is_400(http):
    async with ModelServer("cheap") as srv:
        url = f"{srv.base_url}/chat/completions"
        assert (await http.post(url, content=b"not json")).status_code == 400
        assert (await http.post(url, json={"messages": []})).status_code == 400


@pytest.mark.parametrize(
    "mode,status", [("500", 500), ("503", 503), ("429", 429), ("400", 400), ("404", 404)]
)
async def test_status_faults(http, mode, status):
    async with ModelServer("cheap", faults={mode: 1.0}, retry_after=2) as srv:
        resp = await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        assert resp.status_code == status
        assert "error" in resp.json()
        if status in (429, 503):
            assert resp.headers["Retry-After"] == "2"
        assert srv.stats()["modes"] == {mode: 1}


async def test_error_rate_is_500(http):
    async with ModelServer("cheap", error_rate=1.0) as srv:
        assert (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code == 500


async def test_retry_after_as_http_date(http):
    async with ModelServer(
        "cheap", faults={"429": 1.0}, retry_after=30, retry_after_format="http-date"
    ) as srv:
        resp = await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        when = email.utils.parsedate_to_datetime(resp.headers["Retry-After"])
        assert 20 <= when.timestamp() - time.time() <= 31


@pytest.mark.parametrize("kind", ["not_json", "no_choices", "no_content"])
async def test_malformed_bodies(http, kind):
    async with ModelServer("cheap", faults={"malformed": 1.0}, malformed_kind=kind) as srv:
        resp = await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        assert resp.status_code == 200
        if kind == "not_json":
            with pytest.raises(ValueError):
                resp.json()
        elif kind == "no_choices":
            assert "choices" not in resp.json()
        else:
            assert "content" not in resp.json()["choices"][0]["message"]


async def test_reset_and_down_close_drop_the_connection(http):
    async with ModelServer("cheap", faults={"reset": 1.0}) as srv:
        with pytest.raises(httpx.TransportError):
            await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        srv.set_faults(faults={"down": 1.0}, down_mode="close")
        with pytest.raises(httpx.TransportError):
            await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        srv.set_faults(down_mode="503")
        assert (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code == 503


async def test_timeout_mode_hangs(http):
    async with ModelServer("cheap", faults={"timeout": 1.0}) as srv:
        with pytest.raises(httpx.TimeoutException):
            await http.post(f"{srv.base_url}/chat/completions", json=CHAT, timeout=0.3)
        assert srv.stats()["modes"] == {"timeout": 1}


async def test_slow_drip_delivers_a_valid_body_slowly(http):
    async with ModelServer(
        "cheap", faults={"slow_drip": 1.0}, drip_interval_ms=5, drip_chunk_bytes=64
    ) as srv:
        resp = await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        assert resp.json()["choices"][0]["message"]["content"].startswith("[cheap]")


async def test_fixed_latency(http):
    async with ModelServer("cheap", latency_ms=80, jitter_ms=10) as srv:
        t0 = time.monotonic()
        await http.post(f"{srv.base_url}/chat/completions", json=CHAT)
        assert time.monotonic() - t0 >= 0.075


async def test_probabilities_are_seeded_and_mixed(http):
    async with ModelServer("cheap", faults={"503": 0.5}, seed=7) as srv:
        codes = [
            (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code for _ in range(30)
        ]
        assert set(codes) == {200, 503}
        assert srv.stats()["calls"] == 30


async def test_script_runs_before_probabilities(http):
    async with ModelServer("cheap", script=["503", "429"]) as srv:
        srv.script("ok", "500")
        codes = [
            (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code for _ in range(5)
        ]
        assert codes == [503, 429, 200, 500, 200]


async def test_admin_endpoint_sets_and_resets_faults(http):
    async with ModelServer("cheap", latency_ms=1) as srv:
        root = srv.base_url.removesuffix("/v1")
        resp = await http.post(f"{root}/admin/faults", json={"faults": {"503": 1.0}, "retry_after": 3})
        assert resp.status_code == 200 and resp.json()["faults"] == {"503": 1.0}
        assert (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code == 503
        await http.post(f"{root}/admin/faults", json={"reset": True, "script": ["429"]})
        assert srv.faults.faults == {} and srv.faults.latency_ms == 1
        assert (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code == 429
        assert (await http.post(f"{srv.base_url}/chat/completions", json=CHAT)).status_code == 200
        bad = await http.post(f"{root}/admin/faults", json={"faults": {"explode": 1.0}})
        assert bad.status_code == 400
        bad = await http.post(f"{root}/admin/faults", json={"nonsense": 1})
        assert bad.status_code == 400
        stats = (await http.get(f"{root}/admin/stats")).json()
        assert stats["calls"] == 3
        await http.post(f"{root}/admin/stats/reset")
        assert srv.stats()["calls"] == 0


def test_fault_config_validation():
    with pytest.raises(ValueError):
        FaultConfig(faults={"503": 1.5}).validate()
    with pytest.raises(ValueError):
        FaultConfig().updated({"down_mode": "explode"})
    with pytest.raises(ValueError):
        ModelServer("x", faults={"bogus": 0.1})


def test_runs_in_a_thread_for_sync_code():
    srv = ModelServer("threaded", latency_ms=1)
    url = srv.start_in_thread()
    try:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            resp = client.post(f"{url}/chat/completions", json=CHAT)
            assert resp.json()["choices"][0]["message"]["content"].startswith("[threaded]")
            srv.set_faults(faults={"503": 1.0})
            assert client.post(f"{url}/chat/completions", json=CHAT).status_code == 503
        assert srv.stats()["calls"] == 2
    finally:
        srv.stop()
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{url}/chat/completions", json=CHAT, timeout=1.0, trust_env=False)


def test_runs_as_a_subprocess(tmp_path: Path):
    port_file = tmp_path / "cheap.port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router_stream_dev.model_server",
            "--name",
            "cheap",
            "--port",
            "0",
            "--latency-ms",
            "5",
            "--port-file",
            str(port_file),
            "--fault",
            "429=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "server did not write its port"
            time.sleep(0.02)
        port = int(port_file.read_text())
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=5.0, trust_env=False
        )
        assert resp.json()["choices"][0]["message"]["content"].startswith("[cheap]")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err.decode()
