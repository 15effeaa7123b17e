package franz_test

import (
	"os"
	"testing"

	"github.com/kavari-go/kavari/internal/testenv"
	"github.com/kavari-go/kavari/internal/transport/franz"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

func TestConformance(t *testing.T) {
	brokers, kind := testenv.Brokers(t)
	transporttest.RunWith(t, franz.New(), brokers, transporttest.Options{Embedded: kind == testenv.Embedded})
}

// TestConformanceKIP848 runs the suite with the KIP-848 consumer group
// protocol; it needs Apache Kafka 4.0 or later. scripts/test.sh runs 4.1.1
// unless KAVARI_KAFKA_FETCH_VERSION says otherwise; it passes on 4.1.1,
// 4.3.0 and 4.4.0 (the newest release; kgo recommends 4.3 or later for
// KIP-848):
//
//	KAVARI_KAFKA_FETCH_VERSION=4.4.0 bash scripts/test.sh -run TestConformance ./internal/transport/franz/
func TestConformanceKIP848(t *testing.T) {
	brokers := testenv.RequireReal(t)
	if v := os.Getenv("KAVARI_KAFKA_VERSION"); v != "" && v < "4" {
		t.Skipf("Kafka %s has no KIP-848 consumer groups", v)
	}
	transporttest.RunWith(t, franz.New(franz.ConsumerGroupProtocol()), brokers, transporttest.Options{MemberEpochs: true})
}
