"""router-stream benchmarks: ``python -m bench`` (= ``make bench``).

Every benchmark reports absolute figures and, above all, ratios against a baseline measured in
the same run, on the same broker and machine, so that a busy or slow machine moves both sides:

=================  =================================================================  ===========
name               what is compared                                                   target
=================  =================================================================  ===========
``kafka-limit``    worker CPU per record (instant loopback model, rule routing,        ≤ 2×
                   decision cache) vs the floor: a bare aiokafka transactional
                   pass-through making one raw aiohttp call per record; the
                   worker's CPU per record in parts; pass-throughs without a
                   model call as information
``latency-bound``  worker throughput with a 200 ms model vs Little's bound C / L,     ≥ 0.8
                   for C = 64, 128, 256, 512; per-key order checked in the output
``micro-batching`` ``batch.size`` 20 vs 1 on 10,000 records, 200 ms model, calls       calls A/B
                   capped by ``max_connections`` 16: model calls, records/s, and      ≥ 10×,
                   per-record answers identical (read_committed, per request_id)      speed ≥ 5×
``http-client``    httpx default transport vs httpx + AiohttpTransport vs raw aiohttp  (report)
                   (and router-stream's own client), calls/s and p99
``decision-cache`` 1,000,000 distinct keys through ``PartitionStore``: RSS growth      ≤ 200 MB
                   and hit-lookup latency vs a Python dict
``routing``        ``decide`` cost per request of each strategy, as a share of the     (report)
                   per-record Kafka cost measured by ``kafka-limit``
=================  =================================================================  ===========

Nothing here is asserted by ``make test``: timings depend on the machine. ``--quick`` is a ~30 s
smoke run per benchmark, ``--only NAME`` picks benchmarks. The broker is ``$KAFKA_BOOTSTRAP_SERVERS``
when set, else a local Apache Kafka started (and stopped) for this run. ``bench/chaos.py`` is the
separate chaos run (``make chaos``), not part of ``python -m bench``.
"""
