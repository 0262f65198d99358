#!/usr/bin/env bash
# Lay a runnable Apache Kafka broker classpath into the project-local cache.
#
# Why: there is no Docker here and only Maven Central is reachable, so the broker
# comes from the kafka_2.13 artifact and its dependencies instead of a tarball.
#
# Usage: deploy/local-kafka/fetch.sh [VERSION]
#   VERSION              default: $KAFKA_VERSION, else 3.9.1 (4.x works too)
#   ROUTER_STREAM_CACHE  cache root, default <repo>/.cache
# Prints the libs directory (<cache>/kafka/<version>/libs) on stdout.
# Idempotent: a completed fetch leaves a marker and later calls return at once.
# Safe to run concurrently: a lock serialises fetchers of the same cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version="${1:-${KAFKA_VERSION:-3.9.1}}"
cache="${ROUTER_STREAM_CACHE:-$root/.cache}"
base="$cache/kafka/$version"
libs="$base/libs"
marker="$base/.complete"

if [[ -f "$marker" ]]; then
  echo "$libs"
  exit 0
fi

case "$version" in
  3.*) profile=kafka3 ;;   # SLF4J 1.7 + reload4j
  *) profile=kafka4 ;;     # log4j2 (Kafka >= 4.0)
esac

mkdir -p "$cache/kafka"
exec 9>"$cache/kafka/.fetch.lock"
flock 9
if [[ -f "$marker" ]]; then   # another fetcher finished while we waited
  echo "$libs"
  exit 0
fi

tmp="$(mktemp -d "$cache/kafka/.fetch-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching kafka_2.13:$version ($profile) from Maven Central..." >&2
if ! mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -P "$profile" \
  -Dkafka.version="$version" \
  -DoutputDirectory="$tmp/libs" \
  -DincludeScope=runtime \
  dependency:copy-dependencies >"$tmp/mvn.log" 2>&1; then
  cat "$tmp/mvn.log" >&2
  echo "fetch.sh: maven could not fetch kafka_2.13:$version" >&2
  exit 1
fi

if ! compgen -G "$tmp/libs/kafka_2.13-$version*.jar" >/dev/null; then
  echo "fetch.sh: kafka_2.13-$version jar missing after maven run" >&2
  exit 1
fi

rm -rf "$base"
mkdir -p "$base"
mv "$tmp/libs" "$libs"
touch "$marker"
echo "$libs"
