package kavari_test

import "github.com/kavari-go/kavari/internal/testkit"

// The helpers the engine tests of the test module share (internal/testkit).
var (
	testLogger = testkit.Logger
	newKavari  = testkit.NewClient
	eventually = testkit.Eventually
)
