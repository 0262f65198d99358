"""Minimal faust-streaming app for the exactly-once crash reproduction (see ../faust-eos-defects.md).

One agent on `req` (4 partitions): per JSON record it sleeps 5 ms (a stand-in for a model call),
increments a per-key count in a RocksDB-backed Table, and sends one record to `resp` and one to
`audit`, each carrying the request_id. processing_guarantee="exactly_once".
"""

import asyncio
import json
import os

import faust

app = faust.App(
    os.environ.get("REPRO_APP_ID", "eos-repro"),
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    processing_guarantee="exactly_once",
    store="rocksdb://",
    datadir=os.environ.get("REPRO_DATADIR", "./repro-data"),
    topic_partitions=4,
    web_enabled=False,
    broker_session_timeout=float(os.environ.get("REPRO_SESSION_TIMEOUT", "10")),
)
req = app.topic("req", value_type=bytes, value_serializer="raw")
resp = app.topic("resp", value_type=bytes, value_serializer="raw")
audit = app.topic("audit", value_type=bytes, value_serializer="raw")
counts = app.Table("counts", default=int, partitions=4)

if os.environ.get("REPRO_SUBSCRIBE_OUTPUTS"):
    # variant: make the output topics known to the consumer (cause 1's workaround attempt)
    @app.agent(resp)
    async def _noop_resp(stream):
        async for _ in stream:
            pass

    @app.agent(audit)
    async def _noop_audit(stream):
        async for _ in stream:
            pass


@app.agent(req)
async def handle(stream):
    async for event in stream.events():
        body = json.loads(event.value)
        await asyncio.sleep(0.005)
        counts[event.key] += 1
        await resp.send(key=event.key, value=json.dumps({"request_id": body["request_id"]}).encode())
        await audit.send(key=event.key, value=json.dumps({"request_id": body["request_id"]}).encode())


if __name__ == "__main__":
    app.main()
