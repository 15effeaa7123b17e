package memory_test

import (
	"testing"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
	"github.com/kavari-go/kavari/internal/transport/transporttest"
)

// TestConformanceStart runs the conformance cases the in-memory transport
// can: where a group with no committed offset starts.
func TestConformanceStart(t *testing.T) {
	transporttest.RunStart(t, memory.NewBroker().Transport(transport.Capabilities{}), nil)
}
