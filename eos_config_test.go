package kavari_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// The in-memory transport has no transactions: New refuses exactly-once on
// it, saying why, as on KafkaGo.
func TestExactlyOnceRefusedOnTheMemoryTransport(t *testing.T) {
	cfg := kavari.Config{Brokers: []string{"memory"}, Registry: kavari.NewRegistry(),
		Consume: kavari.ConsumeConfig{GroupID: "g", ExactlyOnce: kavari.ExactlyOnceConfig{TransactionalIDPrefix: "p"}}}
	_, err := kavari.NewOnTransport(cfg, engBroker(1).Transport(transport.Capabilities{}))
	require.ErrorContains(t, err, "Consume.ExactlyOnce")
	require.ErrorContains(t, err, "no transactional producer")
}

// Exactly-once and retry topics are not combined yet (a tier write would
// have to join the window's transaction and a failed attempt aborts the
// window): New refuses the pair, saying so, instead of running it untested.
func TestExactlyOnceWithRetryTopicsRefused(t *testing.T) {
	cfg := kavari.Config{Brokers: []string{"127.0.0.1:1"}, Transport: kavari.FranzGo, Registry: kavari.NewRegistry(),
		Consume: kavari.ConsumeConfig{GroupID: "g", ExactlyOnce: kavari.ExactlyOnceConfig{TransactionalIDPrefix: "p"},
			RetryTopics: []time.Duration{time.Second}}}
	_, err := kavari.New(cfg)
	require.ErrorContains(t, err, "Consume.ExactlyOnce")
	require.ErrorContains(t, err, "Consume.RetryTopics")
}
