"""Lay a runnable Apache Kafka broker classpath into the cache, with Python alone.

Why: ``make demo`` and ``make test`` must need nothing but Python; the broker is the
``kafka_2.13`` artifact and its dependencies from Maven Central, and resolving a Maven dependency
tree needs Maven.  So the tree is resolved once, by a maintainer, into a committed lock file per
Kafka version (``dev/router_stream_dev/data/kafka-<version>.lock``, made by ``deploy/local-kafka/lock.py``)
and this module only downloads what the lock lists, checking each file's size and sha256.

Layout and guarantees (the same as the former ``fetch.sh``, so caches carry over)::

    <cache>/kafka/<version>/libs/*.jar     the classpath
    <cache>/kafka/<version>/.complete      written last (holds the lock's sha256): a fetch that
                                           died half-way, or one of an older lock, is redone
    <cache>/kafka/.fetch.lock              flock'ed: concurrent fetchers of one cache queue up

Files are downloaded into a temporary directory beside the target and moved into place only when
every one is verified, so a reader never sees a partial classpath.

Shell use: ``python -m router_stream_dev.kafka_jars [VERSION]`` prints the libs directory.
``$ROUTER_STREAM_MAVEN_URL`` points at a Maven Central mirror (a company proxy).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import fcntl
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from router_stream.errors import RouterStreamError

DEFAULT_VERSION = "3.9.1"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
LOCK_DIR = Path(__file__).resolve().parent / "data"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_WORKERS = 8
_CHUNK = 1 << 16


class FetchError(RouterStreamError, RuntimeError):
    """The classpath could not be fetched or did not verify; the message says what to do."""


@dataclass(frozen=True)
class Artifact:
    """One locked file: Maven coordinate, path under the repository root, size, sha256."""

    coordinate: str
    path: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def cache_root() -> Path:
    """Where jars and the local broker's default workdir live.

    ``$ROUTER_STREAM_CACHE``, else ``<repo>/.cache`` (a checkout), else ``./.cache``.
    """
    env = os.environ.get("ROUTER_STREAM_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    checkout = (_PROJECT_ROOT / "deploy" / "local-kafka").is_dir()
    return (_PROJECT_ROOT if checkout else Path.cwd()) / ".cache"


def lock_file(version: str) -> Path:
    return LOCK_DIR / f"kafka-{version}.lock"


def locked_versions() -> list[str]:
    """Kafka versions that have a lock file, i.e. that can be fetched without Maven."""
    return sorted(p.name[len("kafka-") : -len(".lock")] for p in LOCK_DIR.glob("kafka-*.lock"))


def read_lock(path: Path) -> list[Artifact]:
    """Parse a lock file: ``coordinate path bytes sha256`` per line, ``#`` comments."""
    artifacts = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4 or not fields[2].isdigit() or len(fields[3]) != 64:
            raise FetchError(f"{path}:{number}: expected 'coordinate path bytes sha256': {line!r}")
        if ".." in fields[1].split("/") or fields[1].startswith("/"):
            raise FetchError(f"{path}:{number}: artifact path must stay inside the repository")
        artifacts.append(Artifact(fields[0], fields[1], int(fields[2]), fields[3].lower()))
    if not artifacts:
        raise FetchError(f"{path} lists no artifacts")
    return artifacts


def libs_dir(cache: Path, version: str) -> Path:
    return cache / "kafka" / version / "libs"


def is_complete(cache: Path, version: str, lock: Path | None = None) -> bool:
    """Whether the cache holds the classpath ``lock`` lists (default: the version's lock file).

    The marker holds the lock's sha256, so a regenerated lock refetches. An empty marker (written
    by the former mvn-based fetch.sh) is taken as complete: those caches came from the same pom.
    """
    marker = cache / "kafka" / version / ".complete"
    if not marker.exists():
        return False
    lock = lock or lock_file(version)
    recorded = marker.read_text().strip()
    return not recorded or not lock.exists() or recorded == _digest(lock)


def _digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def fetch(
    version: str,
    cache: Path,
    *,
    repo_url: str | None = None,
    lock: Path | None = None,
    timeout: float = 60,
    attempts: int = 3,
) -> Path:
    """Return the libs dir of Kafka ``version`` under ``cache``, downloading it when not complete.

    Network errors and 5xx answers are retried ``attempts`` times per artifact; a file that does
    not match its size and sha256 is refused at once. Either way FetchError names the artifact
    and URL, nothing is marked complete, and the next call starts over.
    """
    base = cache / "kafka" / version
    lock = lock or lock_file(version)
    if is_complete(cache, version, lock):
        return base / "libs"
    if not lock.exists():
        known = ", ".join(locked_versions()) or "none"
        raise FetchError(
            f"no lock file for Kafka {version} ({lock}); versions with one: {known}. "
            "A maintainer adds one with: python deploy/local-kafka/lock.py " + version
        )
    artifacts = read_lock(lock)
    repo, auth = _split_credentials(
        (repo_url or os.environ.get("ROUTER_STREAM_MAVEN_URL") or MAVEN_CENTRAL).rstrip("/")
    )
    (cache / "kafka").mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / "kafka" / ".fetch.lock"):
        if is_complete(cache, version, lock):  # another fetcher finished while we waited
            return base / "libs"
        tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{version}.", dir=cache / "kafka"))
        try:
            libs = tmp / "libs"
            libs.mkdir()
            print(f"fetching Kafka {version} ({len(artifacts)} jars) from {repo}", file=sys.stderr)
            with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool:
                jobs = [pool.submit(_download, repo, auth, a, libs, timeout, attempts) for a in artifacts]
                try:
                    for job in concurrent.futures.as_completed(jobs):
                        job.result()
                except BaseException:
                    for job in jobs:  # the first failure wins; queued downloads are dropped
                        job.cancel()
                    raise
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            libs.rename(base / "libs")
            (base / ".complete").write_text(_digest(lock) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return base / "libs"


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (the file the mvn-based fetch.sh locked: old and new
    fetchers sharing a cache queue up alike)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _split_credentials(url: str) -> tuple[str, str | None]:
    """A mirror URL without its ``user:password@`` and the Basic auth header value made of them.

    Why: the credentials then never reach a message, a log line or an exception's text (urllib
    would quote the netloc in its errors), and they are sent only to the mirror itself.
    """
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return clean, "Basic " + base64.b64encode(pair.encode()).decode()


def _download(
    repo: str, auth: str | None, artifact: Artifact, libs: Path, timeout: float, attempts: int
) -> None:
    """Download one artifact to ``libs/<filename>`` via a ``.part`` file, verified, then renamed."""
    url = f"{repo}/{artifact.path}"
    part = libs / (artifact.filename + ".part")
    last: BaseException | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5 * attempt)
        try:
            digest, size = _stream(url, auth, part, artifact.size, timeout)
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, cut transfers
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                raise FetchError(f"{artifact.coordinate}: {url} answered HTTP {exc.code}") from None
            last = exc
            continue
        if size != artifact.size or digest != artifact.sha256:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{artifact.coordinate}: {url} does not match the lock file "
                f"(got {size} bytes sha256 {digest}, locked {artifact.size} bytes sha256 "
                f"{artifact.sha256}); refusing it. A mirror serving other bytes, or a tampered "
                "download: check ROUTER_STREAM_MAVEN_URL and retry"
            )
        part.rename(libs / artifact.filename)
        return
    part.unlink(missing_ok=True)
    raise FetchError(
        f"{artifact.coordinate}: could not download {url} after {attempts} attempts "
        f"({type(last).__name__}: {last}); "
        "check the network or set ROUTER_STREAM_MAVEN_URL to a reachable Maven mirror"
    )


def _stream(url: str, auth: str | None, dest: Path, expected: int, timeout: float) -> tuple[str, int]:
    """Write ``url`` to ``dest``; return (sha256, bytes). Stops reading past ``expected`` + 1.

    A body shorter than the server's Content-Length is a cut transfer (retried by the caller:
    ``read(n)`` returns short instead of raising); a complete body is judged by its hash.
    """
    sha = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "router-stream kafka_jars"})
    if auth:  # unredirected: a redirect to another host does not carry the credentials
        request.add_unredirected_header("Authorization", auth)
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        declared = response.headers.get("Content-Length")
        while size <= expected:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if declared and declared.isdigit() and size < int(declared):
        raise http.client.IncompleteRead(b"", int(declared) - size)
    return sha.hexdigest(), size


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router_stream_dev.kafka_jars",
        description="Download a Kafka broker classpath (verified against its lock file).",
    )
    parser.add_argument(
        "version",
        nargs="?",
        default=os.environ.get("KAFKA_VERSION") or DEFAULT_VERSION,
        help=f"Kafka version (default: $KAFKA_VERSION, else {DEFAULT_VERSION}); "
        f"locked: {', '.join(locked_versions())}",
    )
    args = parser.parse_args(argv)
    try:
        print(fetch(args.version, cache_root()))
    except FetchError as exc:
        print(f"kafka_jars: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
