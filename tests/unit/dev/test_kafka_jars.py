"""The lock-file downloader against a real HTTP server on 127.0.0.1 serving fake artifacts.

Why: users fetch the broker classpath with nothing but Python, so the downloader is the only
thing between Maven Central and a JVM that runs what it wrote. It must refuse bytes that do not
match the lock, never mark a partial classpath complete, start over after a failure, and fetch
once when several processes ask at the same time.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from router_stream_dev.kafka_jars import (
    FetchError,
    fetch,
    is_complete,
    libs_dir,
    lock_file,
    locked_versions,
    read_lock,
)

ARTIFACTS = {
    "org/example/alpha/1.0/alpha-1.0.jar": b"alpha jar bytes " * 5000,
    "org/example/beta/2.0/beta-2.0-linux.jar": b"beta",
}


@dataclass
class Repo:
    """What the fake Maven repository serves, and what it was asked for."""

    url: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    # path -> a function of the request number for that path returning (status, body, cut_at)
    behaviour: dict[str, Callable[[int], tuple[int, bytes, int | None]]] = field(default_factory=dict)


@pytest.fixture
def repo() -> Iterator[Repo]:
    state = Repo(url="", files=dict(ARTIFACTS))
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.removeprefix("/maven2/")
            with lock:
                state.requests.append(path)
                state.authorization.append(self.headers.get("Authorization"))
                nth = state.requests.count(path)
            if path in state.behaviour:
                status, body, cut = state.behaviour[path](nth)
            elif path in state.files:
                status, body, cut = 200, state.files[path], None
            else:
                status, body, cut = 404, b"not found", None
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/maven2"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def write_lock(path: Path, files: dict[str, bytes]) -> Path:
    lines = ["# test lock\n"]
    for rel, data in files.items():
        name = rel.split("/")[-3]
        lines.append(f"org.example:{name}:x {rel} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
    path.write_text("".join(lines))
    return path


def served(repo: Repo) -> list[str]:
    """Request paths (the /maven2 prefix stripped, as the lock names them)."""
    return list(repo.requests)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "kafka").iterdir() if p.name.startswith(".fetch-"))


def test_fetch_lays_verified_files_marks_complete_and_is_idempotent(repo: Repo, tmp_path: Path):
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    cache = tmp_path / "cache"

    libs = fetch("9.9.9", cache, repo_url=repo.url, lock=lock)

    assert libs == libs_dir(cache, "9.9.9")
    assert sorted(p.name for p in libs.iterdir()) == ["alpha-1.0.jar", "beta-2.0-linux.jar"]
    assert (libs / "alpha-1.0.jar").read_bytes() == ARTIFACTS["org/example/alpha/1.0/alpha-1.0.jar"]
    assert is_complete(cache, "9.9.9")
    assert leftovers(cache) == []
    asked = len(repo.requests)
    assert fetch("9.9.9", cache, repo_url=repo.url, lock=lock) == libs
    assert len(repo.requests) == asked  # complete: nothing downloaded again


def test_sha256_mismatch_is_refused_and_nothing_is_marked_complete(repo: Repo, tmp_path: Path):
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    bad = "org/example/alpha/1.0/alpha-1.0.jar"
    good = ARTIFACTS[bad]
    repo.files[bad] = good[:-1] + b"X"  # same size, other bytes
    cache = tmp_path / "cache"

    with pytest.raises(FetchError) as caught:
        fetch("9.9.9", cache, repo_url=repo.url, lock=lock)

    message = str(caught.value)
    assert "org.example:alpha:x" in message and "does not match the lock file" in message
    assert hashlib.sha256(good).hexdigest() in message
    assert served(repo).count(bad) == 1  # a wrong hash is refused, not retried
    assert not is_complete(cache, "9.9.9")
    assert not libs_dir(cache, "9.9.9").exists()
    assert leftovers(cache) == []


def test_truncated_download_is_retried_then_refused_never_marked_complete(repo: Repo, tmp_path: Path):
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    cut = "org/example/alpha/1.0/alpha-1.0.jar"
    body = ARTIFACTS[cut]
    repo.behaviour[cut] = lambda nth: (200, body, len(body) // 2)  # connection drops half-way
    cache = tmp_path / "cache"

    with pytest.raises(FetchError, match=r"could not download .*alpha-1\.0\.jar after 2 attempts"):
        fetch("9.9.9", cache, repo_url=repo.url, lock=lock, attempts=2)

    assert served(repo).count(cut) == 2
    assert not is_complete(cache, "9.9.9")
    assert not libs_dir(cache, "9.9.9").exists()
    assert leftovers(cache) == []


def test_short_body_without_error_is_refused_by_size(repo: Repo, tmp_path: Path):
    """A server that sends fewer bytes and says so (Content-Length matches) is still caught."""
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    short = "org/example/alpha/1.0/alpha-1.0.jar"
    repo.files[short] = ARTIFACTS[short][:100]

    with pytest.raises(FetchError, match="got 100 bytes"):
        fetch("9.9.9", tmp_path / "cache", repo_url=repo.url, lock=lock)
    assert not is_complete(tmp_path / "cache", "9.9.9")


def test_a_transient_server_error_is_retried(repo: Repo, tmp_path: Path):
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    flaky = "org/example/beta/2.0/beta-2.0-linux.jar"
    repo.behaviour[flaky] = lambda nth: (503, b"busy", None) if nth == 1 else (200, b"beta", None)

    libs = fetch("9.9.9", tmp_path / "cache", repo_url=repo.url, lock=lock)

    assert (libs / "beta-2.0-linux.jar").read_bytes() == b"beta"
    assert served(repo).count(flaky) == 2


def test_missing_artifact_names_the_url_at_once(repo: Repo, tmp_path: Path):
    files = dict(ARTIFACTS, **{"org/example/gone/1/gone-1.jar": b"never served"})
    lock = write_lock(tmp_path / "x.lock", files)  # the repository does not have gone-1.jar

    with pytest.raises(FetchError, match=r"/maven2/org/example/gone/1/gone-1.jar answered HTTP 404"):
        fetch("9.9.9", tmp_path / "cache", repo_url=repo.url, lock=lock)
    assert served(repo).count("org/example/gone/1/gone-1.jar") == 1


def test_a_partial_earlier_fetch_is_replaced_not_trusted(repo: Repo, tmp_path: Path):
    """A fetch killed after moving libs but before the marker (or a hand-made dir) is redone."""
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    cache = tmp_path / "cache"
    stale = libs_dir(cache, "9.9.9")
    stale.mkdir(parents=True)
    (stale / "half-written.jar").write_bytes(b"junk")

    libs = fetch("9.9.9", cache, repo_url=repo.url, lock=lock)

    assert sorted(p.name for p in libs.iterdir()) == ["alpha-1.0.jar", "beta-2.0-linux.jar"]
    assert is_complete(cache, "9.9.9")


def test_a_regenerated_lock_refetches(repo: Repo, tmp_path: Path):
    cache = tmp_path / "cache"
    fetch("9.9.9", cache, repo_url=repo.url, lock=write_lock(tmp_path / "old.lock", ARTIFACTS))
    newer = dict(ARTIFACTS, **{"org/example/gamma/3/gamma-3.jar": b"gamma"})
    repo.files.update(newer)
    new_lock = write_lock(tmp_path / "new.lock", newer)
    assert not is_complete(cache, "9.9.9", new_lock)

    libs = fetch("9.9.9", cache, repo_url=repo.url, lock=new_lock)

    assert sorted(p.name for p in libs.iterdir()) == ["alpha-1.0.jar", "beta-2.0-linux.jar", "gamma-3.jar"]
    assert is_complete(cache, "9.9.9", new_lock)


def test_an_empty_marker_of_the_mvn_fetcher_is_trusted(repo: Repo, tmp_path: Path):
    """Caches filled by the former fetch.sh (same pom, empty marker) are not fetched again."""
    cache = tmp_path / "cache"
    libs = libs_dir(cache, "9.9.9")
    libs.mkdir(parents=True)
    (libs / "alpha-1.0.jar").write_bytes(b"from mvn")
    (cache / "kafka" / "9.9.9" / ".complete").write_text("")

    assert fetch("9.9.9", cache, repo_url=repo.url, lock=write_lock(tmp_path / "x.lock", ARTIFACTS)) == libs
    assert repo.requests == []


def test_concurrent_fetchers_download_once(repo: Repo, tmp_path: Path):
    lock = write_lock(tmp_path / "x.lock", ARTIFACTS)
    cache = tmp_path / "cache"
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(fetch("9.9.9", cache, repo_url=repo.url, lock=lock))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert results == [libs_dir(cache, "9.9.9")] * 4
    assert sorted(served(repo)) == sorted(ARTIFACTS)  # each artifact requested exactly once


def test_mirror_credentials_are_sent_as_basic_auth_and_never_shown(repo: Repo, tmp_path: Path):
    files = dict(ARTIFACTS, **{"org/example/gone/1/gone-1.jar": b"never served"})
    lock = write_lock(tmp_path / "x.lock", files)
    mirror = repo.url.replace("http://", "http://deploy%40corp:s3cr%3At@")

    with pytest.raises(FetchError) as caught:
        fetch("9.9.9", tmp_path / "cache", repo_url=mirror, lock=lock)

    assert "gone-1.jar answered HTTP 404" in str(caught.value)
    assert "s3cr" not in str(caught.value) and "deploy" not in str(caught.value)
    expected = "Basic " + base64.b64encode(b"deploy@corp:s3cr:t").decode()
    assert repo.authorization and set(repo.authorization) == {expected}


def test_unknown_version_says_which_are_locked(tmp_path: Path):
    with pytest.raises(FetchError, match=r"no lock file for Kafka 0\.0\.0.*3\.9\.1") as caught:
        fetch("0.0.0", tmp_path / "cache")
    assert "lock.py 0.0.0" in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        "org.example:a:1 org/a.jar 12",  # a field missing
        "org.example:a:1 org/a.jar twelve " + "0" * 64,
        "org.example:a:1 ../../etc/passwd 12 " + "0" * 64,
        "org.example:a:1 /etc/passwd 12 " + "0" * 64,
    ],
)
def test_a_malformed_lock_line_is_refused_with_its_number(tmp_path: Path, line: str):
    lock = tmp_path / "x.lock"
    lock.write_text("# header\n" + line + "\n")
    with pytest.raises(FetchError, match=r"x.lock:2: "):
        read_lock(lock)


def test_committed_locks_hold_their_kafka_broker_and_one_logging_binding():
    """The shipped lock files are complete enough to start a broker (the integration test starts
    one from each); this catches a lock regenerated from a broken pom before anything runs."""
    versions = locked_versions()
    assert {"3.9.1", "4.1.1"} <= set(versions)
    for version in versions:
        artifacts = read_lock(lock_file(version))
        coords = {
            a.coordinate.rsplit(":", 1)[0] if a.coordinate.count(":") > 2 else a.coordinate for a in artifacts
        }
        assert f"org.apache.kafka:kafka_2.13:{version}" in coords
        assert f"org.apache.kafka:kafka-clients:{version}" in coords
        binding = (
            "org.slf4j:slf4j-reload4j"
            if version.startswith("3.")
            else "org.apache.logging.log4j:log4j-slf4j2-impl"
        )
        assert any(c.startswith(binding + ":") for c in coords)
        assert len({a.filename for a in artifacts}) == len(artifacts)  # no two share a file name
