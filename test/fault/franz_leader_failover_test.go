package fault

import (
	"testing"

	"github.com/kavari-go/kavari"
)

// TestLeaderKilledFranzGo is TestLeaderKilledInThreeNodeCluster on the
// franz-go transport, whose producer is idempotent: a write retried after
// its leader died is stored once, so the row's producer duplicates (ids
// stored at more than one offset) must be 0, where kafka-go's may not be.
func TestLeaderKilledFranzGo(t *testing.T) {
	inPassOf(t, "franz-go")
	parallelOwnCluster(t)
	row := leaderKilled(t, func(c *kavari.Config) { c.Transport = kavari.FranzGo })
	if row.ProducerDuplicates != 0 {
		t.Errorf("franz-go stored %d ids at more than one offset: its producer is idempotent", row.ProducerDuplicates)
	}
}
