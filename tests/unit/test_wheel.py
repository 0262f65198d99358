"""What ships: the wheel holds the router_stream package and its data, and nothing of the repository's
development tooling (dev/router_stream_dev), tests or benchmarks.

Why: the dev package (local Kafka launcher, loopback model servers, harness, demo, chaos runner) was
once a fifth of the wheel's code; ``pyproject.toml``'s package list and package data decide what ships,
and a widened glob or a dropped data pattern would change it unseen. The wheel is built the way a
user builds it (``pip wheel .``), offline (no build isolation: setuptools and wheel come from the test
extra), from a copy of the source tree so the checkout gets no ``build/`` or ``*.egg-info``.
"""

from __future__ import annotations

import importlib.abc
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from router_stream import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "router_stream"
# what a checkout may hold that is no source: never copied into the build tree
NOT_SOURCE = (
    ".git",
    ".venv",
    ".cache",
    ".state",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (built,) = out.glob("router_stream-*.whl")
    return built


def _source_files() -> set[str]:
    """Every file of the router_stream package in the source tree, as a wheel path."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_wheel_ships_router_stream_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        entry_points = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")))
    names = {i.filename for i in infos}
    size = wheel.stat().st_size
    print(
        f"\n{wheel.name}: {size / 1e6:.2f} MB, {len(names)} files, "
        f"{sum(i.file_size for i in infos) / 1e6:.2f} MB unpacked"
    )

    tops = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"router_stream"}, f"top-level entries besides the package: {tops}"
    assert not [n for n in names if n.startswith(("router_stream_dev", "tests/", "bench/", "dev/"))]

    assert "router_stream/py.typed" in names
    for data in ("learned-router-mmlu.npz", "routing-sample.jsonl", "routing-sample.NOTICE"):
        assert f"router_stream/data/{data}" in names, f"package data {data} is missing"
    # the Kafka jar locks are the dev package's data (dev/router_stream_dev/data), not the product's
    assert not [n for n in names if n.endswith(".lock")]
    missing = _source_files() - names
    assert not missing, f"source files left out of the wheel: {sorted(missing)[:10]}"
    assert b"router-stream = router_stream.cli:main" in entry_points


class _NoDevPackage(importlib.abc.MetaPathFinder):
    """Finds router_stream_dev nowhere, as in an environment where only the wheel is installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "router_stream_dev":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def test_dev_commands_without_the_dev_package_say_how_to_get_it(monkeypatch, capsys) -> None:
    """An installed wheel has no router_stream_dev: ``demo`` and ``model-server`` say what to do."""
    for name in [m for m in sys.modules if m == "router_stream_dev" or m.startswith("router_stream_dev.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoDevPackage(), *sys.meta_path])

    for command in (["demo"], ["model-server", "--port", "0"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert f"`router-stream {command[0]}` is development tooling" in err
        assert "pip install -e ./dev" in err and "make demo" in err
