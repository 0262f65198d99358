"""decision-cache: 1,000,000 distinct keys through the per-partition RocksDB store.

What a worker's state holds after a million distinct keys, written the way the processor writes
it: per request a ``k:<key>`` sticky-decision state (~100 B JSON) and an ``r:<request_id>``
dedup copy of the response (~300 B JSON), applied with :meth:`PartitionStore.apply` in batches of
500 (one per committed transaction, with its checkpoint), spread over one store per partition.
Then random cache-hit lookups of ``k:`` keys with :meth:`PartitionStore.get`, alone and with the
handler's decode (``json.loads`` + ``CachedDecision.model_validate``), and misses: wall µs per
lookup, the fastest of 5 passes (a busy machine only ever adds time).

Baseline: the same entries in a Python dict (one per partition) in another fresh process.
Each side runs in its own child process, so RSS growth is that side's alone (target ≤ 200 MB for
the store). RSS is measured after writing, after the lookups, and at the peak (VmHWM).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Ctx, Headline, Result, Table, proc_rss_mb, ratio

NAME = "decision-cache"
TITLE = "1,000,000 distinct keys in PartitionStore (RocksDB) vs a Python dict"
NEEDS_KAFKA = False
TARGET_MB = 200.0
BATCH = 500


def _state(i: int) -> bytes:
    cand = "strong" if i % 3 == 0 else "cheap"
    return json.dumps(
        {
            "decision": {"candidate": cand, "decided_by": "by-content", "decided_at": 1764230000000 + i},
            "count": 1,
        },
        separators=(",", ":"),
    ).encode()


def _response(i: int) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "request_id": f"req-{i:08d}",
            "candidate": "cheap",
            "provider_model": "cheap-model",
            "output": f"[cheap] answer to: What is {i % 1000} + 1?",
            "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
            "latency_ms": 3.217,
            "duplicate": False,
            "produced_at": 1764230000000 + i,
        }
    ).encode()


def _kkey(i: int) -> bytes:
    return b"k:customer-%08d" % i


def _child(kind: str, keys: int, partitions: int, lookups: int, state_dir: str) -> dict[str, Any]:
    from router_stream.schemas import CachedDecision
    from router_stream.state.store import PartitionStore

    rng = random.Random(3)
    picks = [rng.randrange(keys) for _ in range(lookups)]
    probe = [(i % partitions, _kkey(i)) for i in picks]  # built before the RSS baseline
    miss = [(i % partitions, b"k:nobody-%08d" % i) for i in picks]
    gc.collect()
    rss0 = proc_rss_mb()
    is_store = kind.startswith("store")
    if is_store:
        stores: list[Any] = [PartitionStore(Path(state_dir) / f"p{p}") for p in range(partitions)]
    else:
        stores = [{} for _ in range(partitions)]
    rss_open = proc_rss_mb()
    pending: list[dict[bytes, bytes | None]] = [{} for _ in range(partitions)]
    checkpoints = [0] * partitions
    write_s = 0.0

    def flush(p: int) -> None:
        nonlocal write_s
        checkpoints[p] += len(pending[p])
        t = time.perf_counter()
        if is_store:
            stores[p].apply(pending[p], checkpoints[p])
        else:
            stores[p].update(pending[p])
        write_s += time.perf_counter() - t
        pending[p] = {}

    for i in range(keys):
        p = i % partitions  # a key's partition; the hash is irrelevant to the store
        pending[p][_kkey(i)] = _state(i)
        pending[p][b"r:req-%08d" % i] = _response(i)
        if len(pending[p]) >= 2 * BATCH:
            flush(p)
    for p in range(partitions):
        if pending[p]:
            flush(p)
    pending.clear()  # the written maps go before the RSS reading
    gc.collect()
    rss_written = proc_rss_mb()

    def best_us(body: Any, keys_: list[tuple[int, bytes]], repeats: int = 5) -> float:
        """Fastest of ``repeats`` passes over a slice each (timeit's min: a busy machine's
        descheduling only ever adds time), loop overhead subtracted, µs per lookup."""
        chunk = max(1, len(keys_) // repeats)
        best = float("inf")
        for r in range(repeats):
            part = keys_[r * chunk : (r + 1) * chunk]
            t = time.perf_counter()
            for p, _k in part:
                stores[p]
            overhead = time.perf_counter() - t
            t = time.perf_counter()
            body(part)
            best = min(best, (time.perf_counter() - t - overhead) / len(part))
        return best * 1e6

    counter = {"found": 0}

    def hits(part: list[tuple[int, bytes]]) -> None:
        for p, k in part:
            if stores[p].get(k) is not None:
                counter["found"] += 1

    def hits_decoded(part: list[tuple[int, bytes]]) -> None:
        for p, k in part:
            CachedDecision.model_validate(json.loads(stores[p].get(k))["decision"])

    def misses(part: list[tuple[int, bytes]]) -> None:
        for p, k in part:
            stores[p].get(k)

    get_us = best_us(hits, probe)
    found = counter["found"]
    decode_us = best_us(hits_decoded, probe)
    miss_us = best_us(misses, miss)
    gc.collect()
    rss_lookups = proc_rss_mb()
    hwm = proc_rss_mb(key="VmHWM")
    if is_store:
        for s in stores:
            s.close()
    disk = sum(f.stat().st_size for f in Path(state_dir).rglob("*") if f.is_file()) if is_store else 0
    return {
        "kind": kind,
        "keys": keys,
        "entries": 2 * keys,
        "partitions": partitions,
        "write_s": write_s,
        "writes_per_s": 2 * keys / write_s,
        "found": found,
        "lookups": lookups,
        "get_us": get_us,
        "hit_decode_us": decode_us,
        "miss_us": miss_us,
        "rss_start_mb": rss0,
        "rss_open_mb": rss_open,
        "rss_written_mb": rss_written,
        "rss_lookups_mb": rss_lookups,
        "hwm_mb": hwm,
        "growth_mb": max(rss_written, rss_lookups) - rss0,
        "peak_growth_mb": hwm - rss0,
        "disk_mb": disk / 2**20,
        "open_growth_mb": rss_open - rss0,
    }


def _run_child(ctx: Ctx, kind: str, keys: int, partitions: int, lookups: int) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-", dir=ctx.workdir))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.decision_cache",
                "--child",
                kind,
                "--keys",
                str(keys),
                "--partitions",
                str(partitions),
                "--lookups",
                str(lookups),
                "--dir",
                str(state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=Path(__file__).resolve().parents[1],
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def run(ctx: Ctx) -> Result:
    keys = 100_000 if ctx.quick else 1_000_000
    lookups = 50_000 if ctx.quick else 200_000
    parts = ctx.partitions
    res = Result(NAME, f"{keys:,} distinct keys in PartitionStore (RocksDB) vs a Python dict")
    out = {}
    for kind in ("store", "dict"):
        ctx.say(
            f"{kind}: {keys:,} keys ({2 * keys:,} entries: k: state + r: dedup) over {parts} partitions, "
            f"{lookups:,} lookups (child process)"
        )
        out[kind] = _run_child(ctx, kind, keys, parts, lookups)
        r = out[kind]
        ctx.say(
            f"{kind}: RSS +{r['growth_mb']:.0f} MB (peak +{r['peak_growth_mb']:.0f} MB), "
            f"get {r['get_us']:.2f} µs, "
            f"{r['writes_per_s']:,.0f} writes/s"
        )
    s, d = out["store"], out["dict"]
    rows = []
    for label, key, _unit in (
        ("RSS growth after writes + lookups", "growth_mb", "MB"),
        ("RSS growth at peak (VmHWM)", "peak_growth_mb", "MB"),
        ("RSS growth from opening alone", "open_growth_mb", "MB"),
        ("writes/s (apply in batches of 1,000 entries)", "writes_per_s", ""),
        ("cache-hit get (µs)", "get_us", ""),
        ("cache-hit get + json.loads + CachedDecision (µs)", "hit_decode_us", ""),
        ("miss get (µs)", "miss_us", ""),
        ("on disk (MB)", "disk_mb", ""),
    ):
        rows.append([label, s[key], d[key], f"{ratio(s[key], d[key]):.2f}" if d[key] else "-"])
    res.tables.append(
        Table(
            f"{keys:,} distinct keys = {2 * keys:,} entries over {parts} partitions, "
            f"{lookups:,} random lookups",
            ["figure", "PartitionStore", "dict", "store ÷ dict"],
            rows,
        )
    )
    res.headlines.append(
        Headline(
            f"store RSS growth for {keys:,} keys (MB)",
            s["growth_mb"],
            f"≤ {TARGET_MB:.0f} MB",
            s["growth_mb"] <= TARGET_MB,
            f"peak +{s['peak_growth_mb']:.0f} MB; dict +{d['growth_mb']:.0f} MB",
        )
    )
    res.headlines.append(
        Headline(
            "cache-hit get, store ÷ dict",
            ratio(s["get_us"], d["get_us"]),
            "report",
            None,
            f"{s['get_us']:.2f} vs {d['get_us']:.3f} µs; "
            f"with decode {s['hit_decode_us']:.1f} vs "
            f"{d['hit_decode_us']:.1f} µs",
        )
    )
    if s["found"] != s["lookups"] or d["found"] != d["lookups"]:
        res.notes.append(
            f"WARNING: lookups found {s['found']}/{s['lookups']} (store), {d['found']}/{d['lookups']} (dict)"
        )
    res.notes.append(
        "PartitionStore opens each partition's DB with 2 x 4 MB write buffers (state/store.py): "
        "entries beyond that go to SST files on disk, so RSS does not scale with the keys. With "
        "rocksdict's default 64 MB buffers this benchmark measured +476 MB (2026-11-27)"
    )
    for name in ("kafka-limit", "latency-bound"):
        prev = ctx.results.get(name)
        w = prev.data.get("worker") if prev and prev.data else None
        if w and w.get("rss_ready_mb"):
            res.notes.append(
                f"worker process in {name}: RSS {w['rss_ready_mb']:.0f} MB ready → "
                f"{w['rss_end_mb']:.0f} MB after {prev.data['n']:,} records over "
                f"{prev.data['keys']:,} keys"
            )
    res.data = out
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=("store", "dict"), required=True)
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--lookups", type=int, default=200_000)
    p.add_argument("--dir", required=True)
    a = p.parse_args(argv)
    print(json.dumps(_child(a.child, a.keys, a.partitions, a.lookups, a.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
