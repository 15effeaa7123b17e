package kavari_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A partition with nothing to fetch shows its lag soon after it is
// assigned (0 here: the group committed everything before), not only once
// a record flows or the periodic refresh comes round.
func TestLagOfIdlePartitionAfterAssignment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		for n := range 4 {
			b.Append(engRecord(0, "k", n))
		}
		first := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil })
		require.NoError(t, first.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		require.NoError(t, stopNow(t, first))
		require.Equal(t, int64(4), memCommitted(b, "g", 0))

		k := memKavari(t, b, transport.Capabilities{}, "g", func(context.Context, *engMsg) error { return nil })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(2 * time.Second) // well under the 10 s refresh
		synctest.Wait()
		pos := k.Health().Positions
		require.Len(t, pos, 1)
		assert.Equal(t, kavari.PartitionHealth{Topic: engTopic, Partition: 0, Committed: 4, HighWatermark: 4, Lag: 0, OldestOffset: -1}, pos[0])
		require.NoError(t, stopNow(t, k))
	})
}
