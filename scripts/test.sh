#!/usr/bin/env bash
# The project's test command. Without arguments, for every module of the
# workspace (go.work: the library, kavaritest, otel, contract, cmd/kavari,
# outbox with its tests outbox/test and its example outbox/example,
# examples, bench, test): gofmt, go vet, staticcheck, the module-graph check
# (scripts/modgraph.sh: also that no go.mod has a replace line), a build and
# vet of the library and of kavaritest with the oldest Go the library
# declares, and a build, vet and -short test with the newest supported
# release (Go 1.27); then it
# starts a
# real single-node Apache Kafka (KRaft) broker on 127.0.0.1 via kafkactl
# (inside a real PostgreSQL for the outbox, via pgctl), runs
# all the Go tests against it, and at the same time the broker tests on
# franz-go against a second broker and PostgreSQL (KAVARI_BROKERS,
# KAVARI_KAFKA_VERSION, KAVARI_KAFKA_LIB are exported), stops them, and
# fuzzes for 20 s.
#
#   bash scripts/test.sh                       # everything above
#   bash scripts/test.sh ./internal/kafkaproc/...
#   bash scripts/test.sh -run TestCluster ./internal/...
#   bash scripts/test.sh -run TestGracefulStop ./test/fault/
#
# With arguments, only go test -race -count=1 runs, with them as its arguments
# (so pass the packages too).
# KAVARI_TEST_NODES=3 runs the shared cluster with 3 nodes instead of 1.
# KAVARI_TRANSPORT=kafka-go|franz-go picks the transport of the broker tests
# (default kafka-go); without arguments both run.
# Needs Go, a JDK 17+ and Maven; the Kafka jars are fetched once into
# .cache/kafka/ (see internal/kafkaproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The workspace of this checkout, whatever GOWORK the caller has set.
export GOWORK="$PWD/go.work"
# staticcheck's release, pinned so CI does not change under us (v0.8.2
# supports Go 1.26).
STATICCHECK_VERSION=v0.8.2

# A fresh Debian/Ubuntu machine may lack Java or Maven: install them when we
# can (root + apt-get), otherwise say what is missing.
# (xz unpacks the PostgreSQL binaries of the outbox's tests.)
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1 || ! command -v xz >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing a JDK, Maven and xz (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends default-jdk-headless maven xz-utils >/dev/null
  else
    echo "test.sh: java, mvn and xz are required (JDK 17+, Maven 3.6+, xz-utils)" >&2
    exit 1
  fi
fi

# A real PostgreSQL for the outbox's tests (internal/pgproc: the
# binaries come through Maven into .cache/postgres/; the server runs on
# 127.0.0.1, as nobody when we are root) around the Kafka of kafkactl:
# pgctl exports KAVARI_PG_DSN and KAVARI_PG_HOME.
pgctl=(go run ./internal/pgproc/cmd/pgctl run --)

if [ "$#" -gt 0 ]; then
  exec "${pgctl[@]}" go run ./internal/kafkaproc/cmd/kafkactl run -nodes "${KAVARI_TEST_NODES:-1}" -- go test -race -count=1 -timeout 30m "$@"
fi

# Every module of the workspace: "./..." would stop at the nested go.mod files.
all=github.com/kavari-go/kavari/...
step() { echo "test.sh: $(date -u +%T) $*" >&2; }

step "gofmt"
unformatted="$(find . -name '*.go' -not -path './.cache/*' -not -path './.git/*' -print0 | xargs -0 gofmt -l)"
if [ -n "$unformatted" ]; then
  echo "test.sh: gofmt -l lists files to format:" >&2
  echo "$unformatted" >&2
  exit 1
fi
step "go vet"
go vet "$all"
step "staticcheck ${STATICCHECK_VERSION}"
go run "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}" "$all"
step "module graph of a program that imports only kavari"
bash scripts/modgraph.sh
# The library on the oldest Go its go.mod allows (GOTOOLCHAIN fetches it
# through the module proxy once), alone (GOWORK=off: its go.mod must suffice),
# then kavaritest, which needs the workspace (it requires the library at the
# version go.work ties to this checkout). Embedded broker (testenv runs
# kavaritest's in a child process, from the workspace): -short, CI unset.
kavaritest=github.com/kavari-go/kavari/kavaritest/...
gomin="go$(go mod edit -json go.mod | sed -n 's/^\t"Go": "\(.*\)",$/\1/p')"
case "$gomin" in go*.*.*) ;; *) gomin="$gomin.0" ;; esac # "go 1.26" means go1.26.0
# On the oldest Go, a build and vet (which compiles the tests) suffice: the
# tests run on a 1.26 release in the broker passes below, and patch releases
# add no API.
step "build and vet of the library and kavaritest with ${gomin}"
(
  export GOTOOLCHAIN="$gomin"
  unset CI
  GOWORK=off go build ./... && GOWORK=off go vet ./...
  go build "$kavaritest" && go vet "$kavaritest"
)
# ...and on the newest supported release (Go 1.27, whose encoding/json is the
# v2 implementation), the go line of go.mod staying the oldest.
gonew="${KAVARI_GO_NEWEST:-go1.27.3}"
step "build, vet and go test -short of the library and kavaritest with ${gonew}"
(
  export GOTOOLCHAIN="$gonew"
  unset CI
  GOWORK=off go build ./... && GOWORK=off go vet ./... && GOWORK=off go test -short -count=1 ./...
  go build "$kavaritest" && go vet "$kavaritest" && go test -short -count=1 "$kavaritest"
)

# The whole suite against a real broker on kafka-go (the default
# transport), and side by side with it, against a broker of its own, the
# broker tests once more on franz-go (every test that builds a Config reads
# KAVARI_TRANSPORT; the adapters' own suites run in the kafka-go pass). The
# passes mostly wait (session timeouts, outages, restarts: the machine is
# idle half of the time in one pass alone), and each is bound by its
# slowest package, test/fault, whose tests run one after the other: side by
# side they take little more than the longer one. The kafka-go pass prints
# as it goes; the franz-go pass's output follows it.
broker_pkgs=(. github.com/kavari-go/kavari/test/engine/... github.com/kavari-go/kavari/test/integration/... github.com/kavari-go/kavari/test/fault/...
  github.com/kavari-go/kavari/test/interop/... github.com/kavari-go/kavari/cmd/kavari/... github.com/kavari-go/kavari/otel/...
  github.com/kavari-go/kavari/outbox/...)
franz_log="$(mktemp -t kavari-franz-pass.XXXXXX)"
step "go test -race of every module against Apache Kafka (KAVARI_TRANSPORT=kafka-go), and of the broker tests against another broker (KAVARI_TRANSPORT=franz-go, output in $franz_log until it ends)"
KAVARI_TRANSPORT=franz-go "${pgctl[@]}" go run ./internal/kafkaproc/cmd/kafkactl run -nodes "${KAVARI_TEST_NODES:-1}" -- go test -race -count=1 -timeout 30m "${broker_pkgs[@]}" >"$franz_log" 2>&1 &
franz_pid=$!
kafkago_rc=0
KAVARI_TRANSPORT=kafka-go "${pgctl[@]}" go run ./internal/kafkaproc/cmd/kafkactl run -nodes "${KAVARI_TEST_NODES:-1}" -- go test -race -count=1 -timeout 30m "$all" || kafkago_rc=$?
step "kafka-go pass ended (exit ${kafkago_rc}); waiting for the franz-go pass"
franz_rc=0
wait "$franz_pid" || franz_rc=$?
step "franz-go pass ended (exit ${franz_rc}); its output:"
cat "$franz_log"
rm -f "$franz_log"
if [ "$kafkago_rc" != 0 ] || [ "$franz_rc" != 0 ]; then
  echo "test.sh: the broker tests failed: kafka-go pass exit ${kafkago_rc}, franz-go pass exit ${franz_rc}" >&2
  exit 1
fi
# ...then a short fuzzing run of record decoding (no broker needed). Each
# new corpus entry is minimised for at most 2 s (the default, 60 s, spent
# most of the 20 s minimising: about 18,000 execs instead of 45,000).
step "fuzzing record decoding for ${KAVARI_FUZZTIME:-20s}"
go test -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime "${KAVARI_FUZZTIME:-20s}" -fuzzminimizetime 2s .
