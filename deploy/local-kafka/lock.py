#!/usr/bin/env python3
"""Regenerate the Kafka broker lock files from pom.xml (a maintainer tool; needs mvn).

Why: users fetch the broker classpath with plain Python (dev/router_stream_dev/kafka_jars.py)
from a committed list of artifacts and their sha256, so they need no Maven. That list must be
exactly what Maven resolves from pom.xml (kafka_2.13 plus the logging binding of its profile), so
it is made by Maven: ``mvn dependency:list`` into a fresh, throw-away local repository with strict
checksums (``-C``: every artifact's .sha1 from Maven Central is checked), then hashed here.

Usage (from anywhere)::

    python deploy/local-kafka/lock.py 3.9.1 4.1.1

writes ``dev/router_stream_dev/data/kafka-<version>.lock`` for each version. Commit the result; adding a
Kafka version is this command plus a line in the README's tested versions.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOCK_DIR = ROOT / "dev" / "router_stream_dev" / "data"


def profile_for(version: str) -> str:
    """The pom profile with the logging binding of a Kafka line (same rule as fetch.sh had)."""
    return "kafka3" if version.startswith("3.") else "kafka4"


def resolve(version: str, repo: Path) -> list[tuple[str, Path]]:
    """(coordinate, file) for every runtime artifact Maven resolves for ``version``."""
    listing = repo / "deps.txt"
    cmd = [
        "mvn", "-q", "-B", "-C", "-Dstyle.color=never",
        f"-Dmaven.repo.local={repo}", "-f", str(HERE / "pom.xml"), "-P", profile_for(version),
        f"-Dkafka.version={version}", "-DincludeScope=runtime",
        "-DoutputAbsoluteArtifactFilename=true", f"-DoutputFile={listing}",
        "dependency:list",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"mvn failed for Kafka {version}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    out: list[tuple[str, Path]] = []
    for raw in listing.read_text().splitlines():
        line = raw.strip().split(" -- ", 1)[0]  # drop " -- module x (auto)"
        if ":" not in line or line.startswith("The following"):
            continue
        # group:artifact:type[:classifier]:version:scope:/abs/path
        head, _, path = line.partition(f":{repo}")
        parts = head.split(":")
        group, artifact, _type = parts[0], parts[1], parts[2]
        classifier = parts[3] if len(parts) == 6 else ""
        ver = parts[-2]
        coord = f"{group}:{artifact}:{ver}" + (f":{classifier}" if classifier else "")
        out.append((coord, Path(f"{repo}{path}")))
    if not any(c.startswith(f"org.apache.kafka:kafka_2.13:{version}") for c, _ in out):
        sys.exit(f"kafka_2.13:{version} missing from Maven's resolution")
    return out


def write_lock(version: str) -> Path:
    with tempfile.TemporaryDirectory(prefix="kafka-lock-") as tmp:
        repo = Path(tmp).resolve()
        rows = []
        for coord, file in sorted(resolve(version, repo)):
            data = file.read_bytes()
            rel = file.relative_to(repo).as_posix()
            rows.append(f"{coord} {rel} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
    lock = LOCK_DIR / f"kafka-{version}.lock"
    lock.write_text(
        f"# Kafka {version} broker classpath (pom.xml profile {profile_for(version)}), resolved by\n"
        "# deploy/local-kafka/lock.py; do not edit by hand. One artifact a line:\n"
        "# group:artifact:version[:classifier]  path-under-the-maven-repository  bytes  sha256\n"
        + "".join(rows)
    )
    return lock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="Kafka versions, e.g. 3.9.1 4.1.1")
    for version in parser.parse_args().versions:
        print(write_lock(version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
