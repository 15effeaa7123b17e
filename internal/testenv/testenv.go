// Package testenv chooses the Kafka that a test runs against, in the order
// the architecture gives: KAVARI_BROKERS (an external cluster, or the Apache
// Kafka that scripts/test.sh starts), then the embedded kfake broker. The test
// log says which one ran. With CI=true a missing KAVARI_BROKERS fails the test
// instead of silently falling back to the fake.
//
// The embedded broker is kavaritest's, run as a child process (see
// StartEmbedded): the kavari module does not require kfake, so that a program
// importing kavari does not get it in its module graph.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// Kind names the broker a test got.
type Kind string

const (
	RealKafka Kind = "kafka"    // KAVARI_BROKERS
	Embedded  Kind = "embedded" // kavaritest's kfake, in a child process
)

// Brokers returns bootstrap addresses for t and the kind of broker behind them.
func Brokers(t testing.TB) ([]string, Kind) {
	t.Helper()
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		addrs := strings.Split(env, ",")
		t.Logf("broker: Apache Kafka %s at %s (KAVARI_BROKERS)", os.Getenv("KAVARI_KAFKA_VERSION"), env)
		return addrs, RealKafka
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but KAVARI_BROKERS is not set: run the tests through scripts/test.sh so they use a real Apache Kafka")
	}
	b := NewEmbedded(t)
	t.Logf("broker: embedded kfake at %v (set KAVARI_BROKERS or run scripts/test.sh for real Kafka)", b.Addrs())
	return b.Addrs(), Embedded
}

// RequireReal skips t unless a real Apache Kafka is available; with CI=true
// it fails instead.
func RequireReal(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv("KAVARI_BROKERS"); env != "" {
		t.Logf("broker: Apache Kafka %s at %s", os.Getenv("KAVARI_KAFKA_VERSION"), env)
		return strings.Split(env, ",")
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but KAVARI_BROKERS is not set")
	}
	t.Skip("needs a real Apache Kafka: run through scripts/test.sh or set KAVARI_BROKERS")
	return nil
}

// ID returns a short random identifier for group ids and run markers, so
// tests sharing one broker do not see each other's records.
func ID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Transport names the transport broker tests run on: KAVARI_TRANSPORT,
// "kafka-go" (the default, also when unset) or "franz-go". scripts/test.sh
// runs the broker tests once per transport. Another value panics.
func Transport() string {
	switch v := os.Getenv("KAVARI_TRANSPORT"); v {
	case "", "kafka-go":
		return "kafka-go"
	case "franz-go":
		return "franz-go"
	default:
		panic("testenv: KAVARI_TRANSPORT=" + v + ": want kafka-go or franz-go")
	}
}
