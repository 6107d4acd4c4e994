#!/usr/bin/env bash
# Fetches the Apache Kafka broker jars pinned in a pom (default
# config/kafka/pom.xml; tools/bench.py's Lua peer passes
# config/kafka-peer/pom.xml) from Maven Central into
# var/cache/kafka-<version>/libs, once.  Prints the libs directory.  The
# cache is keyed by version, so bumping the pin refetches.
#
#   tools/fetch-kafka.sh [pom.xml]
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pom="${1:-$top/config/kafka/pom.xml}"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache="${ELEARN_CACHE:-$top/var/cache}/kafka-$version"

if [ ! -f "$cache/.complete" ]; then
    rm -rf "$cache"
    mkdir -p "$cache"
    echo "kafka: fetching Apache Kafka $version from Maven Central" >&2
    mvn -q -B -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$cache/libs" -DincludeScope=runtime >&2
    ls "$cache/libs"/kafka_2.13-"$version".jar >/dev/null
    touch "$cache/.complete"
fi
echo "$cache/libs"
