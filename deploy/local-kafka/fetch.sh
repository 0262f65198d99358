#!/usr/bin/env bash
# Lay a runnable Apache Kafka broker classpath into the project-local cache.
#
# A thin wrapper kept for scripts and docs that call it: the work is done by
# dev/router_stream_dev/kafka_jars.py (Python only, no Maven), which downloads the
# artifacts listed in dev/router_stream_dev/data/kafka-<version>.lock and checks their sha256.
#
# Usage: deploy/local-kafka/fetch.sh [VERSION]
#   VERSION              default: $KAFKA_VERSION, else 3.9.1
#   ROUTER_STREAM_CACHE  cache root, default <repo>/.cache
#   PYTHON               interpreter (>= 3.11), default python3
# Prints the libs directory (<cache>/kafka/<version>/libs) on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$root/dev${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m router_stream_dev.kafka_jars "$@"
