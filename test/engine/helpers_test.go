// Package engine holds kavari's engine tests that left the kavari module
// because they need franz-go's kfake in process (kavaritest's embedded broker
// with fault injection through its kfake cluster, SASL and TLS), which the
// kavari module does not require; the tests that also run on a real broker
// take it from testenv as those of the kavari package do.
package engine

import (
	"time"

	"github.com/kavari-go/kavari/internal/testkit"
)

// ktHangGuard (as in the kavari package's tests) bounds waits that should end
// long before it: it is a guard against hangs, never a performance assertion.
const ktHangGuard = 60 * time.Second

// The helpers the kavari package's tests share (internal/testkit).
var (
	testLogger = testkit.Logger
	newKavari  = testkit.NewClient
	eventually = testkit.Eventually
	readTopic  = testkit.ReadTopic
	header     = testkit.Header
)
