package kafkago_test

import (
	"testing"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport/kafkago"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

// TestConformance runs the adapter suite on kafka-go; what kafka-go cannot
// do (cooperative rebalances, static membership, commit metadata, heartbeats
// during drains) is skipped by its Capabilities.
func TestConformance(t *testing.T) {
	brokers, kind := testenv.Brokers(t)
	transporttest.RunWith(t, kafkago.New(), brokers, transporttest.Options{Embedded: kind == testenv.Embedded})
}
