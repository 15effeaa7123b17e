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

// Health describes a partition one way, whichever list it is in: the entry
// of a partition with open records in Partitions is its entry in Positions,
// with the position (committed, high watermark, lag) and the oldest open
// record both filled in; an idle partition's oldest offset is -1.
func TestHealthDescribesAPartitionOneWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		for n := range 2 {
			b.Append(engRecord(0, "k", n))
			b.Append(engRecord(1, "j", n))
		}
		release := make(chan struct{})
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			if m.Key == "k" && m.N == 1 {
				<-release
			}
			return nil
		})
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(2 * time.Second)
		synctest.Wait()

		h := k.Health()
		require.Len(t, h.Partitions, 1)
		require.Len(t, h.Positions, 2)
		var pos []kavari.PartitionHealth = h.Positions
		byID := map[int]kavari.PartitionHealth{}
		for _, p := range pos {
			byID[p.Partition] = p
		}
		p0 := h.Partitions[0]
		assert.Equal(t, byID[0], p0)
		assert.Equal(t, int64(1), p0.Committed)
		assert.Equal(t, int64(2), p0.HighWatermark)
		assert.Equal(t, int64(1), p0.Lag)
		assert.Equal(t, 1, p0.Open)
		assert.Equal(t, int64(1), p0.OldestOffset)
		assert.Equal(t, "k", p0.OldestKey)
		p1 := byID[1]
		assert.Equal(t, int64(2), p1.Committed)
		assert.Equal(t, 0, p1.Open)
		assert.Equal(t, int64(-1), p1.OldestOffset)
		assert.Empty(t, p1.OldestKey)

		close(release)
		require.NoError(t, stopNow(t, k))
	})
}
