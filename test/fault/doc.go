// Package fault is kavari's fault suite (issue #4): tests that break the
// brokers and the consumers on purpose — SIGKILLed and restarted brokers, a
// killed partition leader in a 3-node cluster, consumer processes killed
// mid-processing, a rebalance storm, graceful and ungraceful stops, poison
// records — and prove that no acknowledged message is lost.
//
// Every test keeps a ledger (package ledger): for every message id it
// records sent, acknowledged, handled, handled more than once, never handled;
// it fails on any acknowledged message that was never handled and reports
// duplicates (delivery is at-least-once). With KAVARI_RELIABILITY_DIR set each
// test writes its row as JSON; `go run ./test/cmd/reliability` runs the suite
// against a real Apache Kafka and turns the rows into docs/reliability.md.
//
// The tests need a real Apache Kafka: run them with
//
//	bash scripts/test.sh ./test/fault/...
//
// which starts one and exports KAVARI_BROKERS and KAVARI_KAFKA_LIB. Tests that
// kill brokers start their own (internal/kafkaproc) and never touch the shared
// one. Without a broker they skip (CI=true: fail). KAVARI_LONG=1 runs the
// bigger variants (more messages, more rebalances). The consumer processes
// are test/fault/faultapp, built by the tests with "go build".
//
// A test that finds a library bug records it in its row (so the report
// shows it) and fails.
package fault
