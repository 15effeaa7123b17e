#!/usr/bin/env bash
# The project's test command: starts a real single-node Apache Kafka (KRaft)
# broker on 127.0.0.1 via kafkactl, runs the Go tests against it
# (KAVARI_BROKERS, KAVARI_KAFKA_VERSION, KAVARI_KAFKA_LIB are exported), and
# stops the broker afterwards.
#
#   bash scripts/test.sh                       # go test -race -count=1 ./..., then 20 s of fuzzing
#   bash scripts/test.sh ./internal/kafkaproc/...
#   bash scripts/test.sh -run TestCluster ./internal/...
#
# With arguments, they replace "./..." (so pass the packages too).
# KAVARI_TEST_NODES=3 runs the shared cluster with 3 nodes instead of 1.
# Needs Go, a JDK 17+ and Maven; the Kafka jars are fetched once into
# .cache/kafka/ (see internal/kafkaproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A fresh Debian/Ubuntu machine may lack Java or Maven: install them when we
# can (root + apt-get), otherwise say what is missing.
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing a JDK and Maven (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends default-jdk-headless maven >/dev/null
  else
    echo "test.sh: java and mvn are required (JDK 17+, Maven 3.6+)" >&2
    exit 1
  fi
fi

if [ "$#" -gt 0 ]; then
  exec go run ./internal/kafkaproc/cmd/kafkactl run -nodes "${KAVARI_TEST_NODES:-1}" -- go test -race -count=1 "$@"
fi

# The whole suite against the real broker...
go run ./internal/kafkaproc/cmd/kafkactl run -nodes "${KAVARI_TEST_NODES:-1}" -- go test -race -count=1 ./...
# ...then a short fuzzing run of record decoding (no broker needed).
echo "test.sh: fuzzing record decoding for ${KAVARI_FUZZTIME:-20s}" >&2
go test -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime "${KAVARI_FUZZTIME:-20s}" .
