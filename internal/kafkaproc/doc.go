// Package kafkaproc runs real Apache Kafka brokers as local processes for
// tests, benchmarks and CI.
//
// It has two halves:
//
//   - [Fetch] materialises the Kafka server jars (Kafka 4.x, KRaft only) plus
//     their runtime dependencies and a log4j2 backend into a cache directory,
//     using Maven (mvn) to resolve them. Nothing has to be installed by hand
//     besides a JDK (17+) and Maven; re-runs reuse the cache.
//   - [Start] launches a 1- or 3-node KRaft cluster (every node is a combined
//     broker+controller) bound to 127.0.0.1 on free ports, waits until every
//     broker answers metadata requests, and returns a [Cluster] that can kill,
//     restart and stop individual nodes.
//
// Every node runs in its own process group; on Linux the JVMs also get a
// parent-death signal (SIGKILL), so a crashed test binary does not leave
// Java processes behind.
//
// The companion command internal/kafkaproc/cmd/kafkactl wraps a command
// (typically "go test ./...") with a running cluster and exports
// KAVARI_BROKERS, KAVARI_KAFKA_VERSION and KAVARI_KAFKA_LIB to it; see
// [EnvBrokers], [EnvVersion] and [EnvLib]. Tests that need their own cluster
// (for example to kill nodes) call [Start] with an empty [Options.LibDir],
// which is then taken from KAVARI_KAFKA_LIB.
package kafkaproc

import (
	"os"
	"strings"
)

// Environment variables exported by kafkactl to the command it runs.
const (
	// EnvBrokers holds the comma-separated host:port list of the shared
	// cluster started by kafkactl.
	EnvBrokers = "KAVARI_BROKERS"
	// EnvVersion holds the Kafka version of that cluster, e.g. "4.1.1".
	EnvVersion = "KAVARI_KAFKA_VERSION"
	// EnvLib holds the directory of Kafka jars returned by [Fetch]; it lets
	// tests start further clusters with [Start].
	EnvLib = "KAVARI_KAFKA_LIB"

	// With kafkactl -secure (see [Security]): the PEM file of the CA that
	// signed the brokers' certificate, the addresses of the SSL,
	// SASL_PLAINTEXT and SASL_SSL listeners, and a SASL user (PLAIN,
	// SCRAM-SHA-256 and SCRAM-SHA-512) with its password.
	EnvTLSCA          = "KAVARI_TLS_CA"
	EnvSSLBrokers     = "KAVARI_SSL_BROKERS"
	EnvSASLBrokers    = "KAVARI_SASL_BROKERS"
	EnvSASLSSLBrokers = "KAVARI_SASL_SSL_BROKERS"
	EnvSASLUser       = "KAVARI_SASL_USER"
	EnvSASLPassword   = "KAVARI_SASL_PASSWORD"
)

// BrokersFromEnv returns the brokers listed in KAVARI_BROKERS, or nil when
// the variable is unset or empty.
func BrokersFromEnv() []string {
	v := strings.TrimSpace(os.Getenv(EnvBrokers))
	if v == "" {
		return nil
	}
	var out []string
	for _, b := range strings.Split(v, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
