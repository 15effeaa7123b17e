package kavari_test

import (
	"context"
	"fmt"
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

// A slow key (not a stuck one) on partition 0: its records take 20 ms each,
// one in four of the partition's, so the window's head frees room a few
// records at a time, each time within stallPause, and the feeder never
// waited stallPause at once. Partition 1's records, handled at once, must
// not wait at the slow key's pace. Before, partition 0's backlog held the
// transport back until the feeder took its pending records down to half
// the share: partition 1 finished when the slow key had 16 of its 100
// records left (1.68 s of 2 s); with a transport that pauses instead, and
// now with one that waits for backlogs, it finishes while the slow key has
// most of them left.
func TestEngineBacklogSlowKeyDoesNotThrottleOtherPartitions(t *testing.T) {
	for _, caps := range []transport.Capabilities{{}, {WaitsForBacklog: true}} {
		t.Run(fmt.Sprintf("WaitsForBacklog=%v", caps.WaitsForBacklog), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := engBroker(2)
				const slowN, healthy = 100, 4000
				for n := range 4 * slowN {
					key := "k" + strconv.Itoa(n)
					if n%4 == 0 {
						key = "slow"
					}
					b.Append(engRecord(0, key, n))
				}
				for n := range healthy {
					b.Append(engRecord(1, "k"+strconv.Itoa(n), n))
				}
				var slow, others, slowAtOthersDone atomic.Int64
				k := memKavari(t, b, caps, "g", func(ctx context.Context, m *engMsg) error {
					if m.Key == "slow" {
						time.Sleep(20 * time.Millisecond)
						slow.Add(1)
						return nil
					}
					if r, _ := kavari.RecordFromContext(ctx); r.Partition == 1 && others.Add(1) == healthy {
						slowAtOthersDone.Store(slow.Load())
					}
					return nil
				}, func(c *kavari.Config) { c.Consume.MaxInFlight, c.Consume.MaxBuffered = 16, 64 })
				require.NoError(t, k.Start(context.Background()))
				time.Sleep(10 * time.Second)
				synctest.Wait()
				require.Equal(t, int64(healthy), others.Load())
				require.Equal(t, int64(slowN), slow.Load())
				assert.Less(t, slowAtOthersDone.Load(), int64(slowN/2), "slow-key records handled when partition 1 was done")
				assert.Equal(t, int64(4*slowN), memCommitted(b, "g", 0))
				assert.Equal(t, int64(healthy), memCommitted(b, "g", 1))
				require.NoError(t, stopNow(t, k))
			})
		})
	}
}
