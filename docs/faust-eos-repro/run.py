"""Drive the reproduction: 3,000 requests over 100 keys, kill -9 the faust worker twice, count.

    .venv/bin/python docs/faust-eos-repro/run.py [--subscribe-outputs]

Starts its own local Kafka (router_stream_dev.local_kafka) unless KAFKA_BOOTSTRAP_SERVERS
is set. Prints total / distinct / missing / duplicated for `resp` and `audit` in the
read_committed view and the sum of the table changelog (want 3,000).
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from router_stream_dev.harness import create_topics, produce, read_topic
from router_stream_dev.local_kafka import LocalKafka

HERE = Path(__file__).parent
N, KEYS = 3000, 100


def count(bootstrap, topic, isolation="read_committed"):
    return asyncio.run(read_topic(bootstrap, topic, expect=None, timeout=120, idle=5, isolation_level=isolation))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribe-outputs", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="faust-eos-"))
    kafka = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        kafka = LocalKafka(workdir=tmp / "kafka")
        bootstrap = kafka.start()
    app_id = f"eos-repro-{int(time.time())}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REPRO_APP_ID": app_id,
           "REPRO_DATADIR": str(tmp / "data")}
    if args.subscribe_outputs:
        env["REPRO_SUBSCRIBE_OUTPUTS"] = "1"
    asyncio.run(create_topics(bootstrap, ["req", "resp", "audit"], 4))
    records = [(f"k{i % KEYS}".encode(), json.dumps({"request_id": f"r{i}"}).encode()) for i in range(N)]
    asyncio.run(produce(bootstrap, "req", records))

    def start():
        log = open(tmp / "worker.log", "ab")
        return subprocess.Popen([sys.executable, str(HERE / "app.py"), "worker", "-l", "warn"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def seen():
        return len(asyncio.run(read_topic(bootstrap, "resp", timeout=5, idle=0.5, isolation_level="read_uncommitted")))

    p = start()
    for threshold in (1000, 1600):
        while seen() < threshold:
            if p.poll() is not None:
                raise SystemExit(f"worker exited with {p.returncode}; see {tmp / 'worker.log'}")
            time.sleep(0.5)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        print(f"killed after >= {threshold} outputs", flush=True)
        p = start()
    deadline = time.time() + 300
    while time.time() < deadline and len(set(json.loads(r.value)["request_id"]
                                              for r in count(bootstrap, "resp"))) < N:
        time.sleep(2)
    time.sleep(10)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    for topic in ("resp", "audit"):
        ids = Counter(json.loads(r.value)["request_id"] for r in count(bootstrap, topic))
        missing = N - len(ids)
        dup = sum(n - 1 for n in ids.values() if n > 1)
        print(f"{topic}: total {sum(ids.values())} distinct {len(ids)} missing {missing} duplicated {dup}")
    changelog = f"{app_id}-counts-changelog"
    last = {}
    for r in count(bootstrap, changelog):
        last[r.key] = r.value
    print(f"table sum (want {N}): {sum(int(v) for v in last.values() if v is not None)}")
    print(f"worker log: {tmp / 'worker.log'}")
    if kafka:
        kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
