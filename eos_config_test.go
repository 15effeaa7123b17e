package kavari_test

import (
	"testing"

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
