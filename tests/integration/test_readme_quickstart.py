"""The README's "Already have Kafka and an API key?" block, run as written, so it cannot rot.

The block is taken from README.md (the fenced block after the ``<!-- quickstart`` marker) and
run by bash in a scratch directory against the session's real broker, with the environment a
user would have plus overrides that point the config at this test's broker, loopback models and
scratch topics: ``KAFKA_BOOTSTRAP_SERVERS`` and ``ROUTER_STREAM__...`` variables, the documented
way to override a config file. Only the install line is skipped (the package is installed
already; pip from inside a test would reach the network).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from router_stream_dev.harness import free_port

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_block() -> str:
    text = README.read_text()
    marker = text.index("<!-- quickstart")
    match = re.search(r"```bash\n(.*?)```", text[marker:], re.S)
    assert match, "no ```bash block after the quickstart marker in README.md"
    return match.group(1)


def test_the_block_is_five_commands():
    lines = [ln for ln in quickstart_block().splitlines() if ln.strip()]
    heredoc = [i for i, ln in enumerate(lines) if "<<'YAML'" in ln]
    assert len(heredoc) == 1
    end = lines.index("YAML")
    commands = [*lines[: heredoc[0]], lines[heredoc[0]], *lines[end + 1 :]]
    assert len(commands) == 5, commands
    assert commands[0].startswith("python -m pip install")
    assert commands[-1].startswith("router-stream send") and "--wait" in commands[-1]


def test_readme_quickstart_runs_as_written(kafka_bootstrap, model_servers, prefix, tmp_path):
    block = quickstart_block()
    install = next(ln for ln in block.splitlines() if ln.startswith("python -m pip install"))
    script = block.replace(install, "true  # installed already")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "OPENAI_API_KEY": "sk-test-not-a-key",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ROUTER_STREAM_METRICS_PORT": str(free_port()),
        "ROUTER_STREAM_GROUP_ID": f"{prefix}-router",
        "ROUTER_STREAM__CANDIDATES__CHEAP__BASE_URL": model_servers["cheap"].base_url,
        "ROUTER_STREAM__CANDIDATES__STRONG__BASE_URL": model_servers["strong"].base_url,
    }
    for role in ("requests", "responses", "audit", "dead_letter", "changelog"):
        env[f"ROUTER_STREAM__TOPICS__{role.upper()}"] = f"{prefix}.{role}"
    # output to files: the backgrounded worker keeps its copy of the script's stdout open
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out_f, err_path.open("w") as err_f:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,
        )
    try:
        proc.wait(timeout=180)
    finally:
        try:  # the backgrounded `router-stream run` is in the script's process group
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    out, err = out_path.read_text(), err_path.read_text()
    assert proc.returncode == 0, f"quick start failed ({proc.returncode}):\n{out}\n{err}"
    assert (tmp_path / "routing.yaml").exists()
    # send --wait printed the answer of the cheap candidate (the loopback model names itself)
    assert re.search(r"\bcheap\b", out) and "[cheap]" in out, out
