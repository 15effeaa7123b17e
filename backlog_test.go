package kavari_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// Backpressure on a transport that waits for backlogs (franz-go): pausing a
// partition makes kgo drop what it fetched for it, so the engine pauses only
// a partition whose feeder is stuck; a full queue of records to dispatch
// holds the transport back instead (Backlog).

// Deliveries far larger than the partition's share, handlers keeping up:
// everything is handled and the partition is never paused.
func TestEngineBacklogInsteadOfPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Batch = 64
		const n = 500
		for i := 0; i < n; i++ {
			b.Append(engRecord(0, "k"+strconv.Itoa(i), i))
		}
		var handled atomic.Int64
		caps := transport.Capabilities{WaitsForBacklog: true}
		k := memKavari(t, b, caps, "g", func(context.Context, *engMsg) error {
			handled.Add(1)
			return nil
		}, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 4, 16 })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int64(n), handled.Load())
		assert.Equal(t, int64(n), memCommitted(b, "g", 0))
		tp := transport.TopicPartition{Topic: engTopic, Partition: 0}
		assert.Zero(t, b.Pauses(tp), "a partition whose handlers keep up is not paused")
		assert.Equal(t, int64(n), b.Delivered(tp), "nothing delivered twice")
		require.NoError(t, stopNow(t, k))
	})
}

// A stuck key on partition 0 with a transport that waits for backlogs: its
// backlog holds the transport back only until the feeder has waited
// stallPause for room; then partition 0 is paused and partition 1's records
// are all handled and committed, and partition 0 holds no more than its
// share open, one record in hand, a share pending and one delivery.
func TestEngineBacklogStuckKeyDoesNotStallOtherPartitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(2)
		b.Batch = 4
		for n := 0; n < 40; n++ {
			b.Append(engRecord(0, "stuck", n))
		}
		for n := 0; n < 40; n++ {
			b.Append(engRecord(1, "k"+strconv.Itoa(n), n))
		}
		var others atomic.Int64
		caps := transport.Capabilities{WaitsForBacklog: true}
		k := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
			if m.Key == "stuck" {
				<-ctx.Done()
				return ctx.Err()
			}
			others.Add(1)
			return nil
		}, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 4, 16 })
		require.NoError(t, k.Start(context.Background()))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int64(40), others.Load())
		assert.Equal(t, int64(40), memCommitted(b, "g", 1))
		h := k.Health()
		require.Len(t, h.Partitions, 1)
		assert.Equal(t, 8, h.Partitions[0].Open, "partition 0 holds its share (16/2) of the buffer")
		assert.True(t, h.Partitions[0].Paused)
		tp0 := transport.TopicPartition{Topic: engTopic, Partition: 0}
		assert.Equal(t, int64(1), b.Pauses(tp0), "the stuck partition is paused")
		assert.LessOrEqual(t, b.Delivered(tp0), int64(8+1+8+4))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
}
