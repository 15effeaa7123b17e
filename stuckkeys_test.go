package kavari_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// A stuck key stalls only its own partition, for any number of partitions
// and of stuck keys (fewer than MaxInFlight: a stuck handler holds its run
// slot): the first `stuck` of n partitions each get 40 records of a key whose
// handler hangs, which queue behind it (PerKey) or behind the partition's
// head (PerPartition); then 60 records with other keys go to the other
// partitions, and all 60 are handled. Before, each partition's share was
// raised to MaxInFlight, so with more partitions than MaxBuffered ÷
// MaxInFlight the stuck partitions took every buffer slot and the healthy
// ones handled nothing (16 partitions, 4 stuck, MaxInFlight 8, MaxBuffered
// 32: 0 of 60).
func TestStuckKeysStallOnlyTheirPartitions(t *testing.T) {
	cases := []struct{ partitions, stuck, inFlight, buffered int }{
		{16, 1, 8, 32},
		{16, 4, 8, 32},
		{16, 15, 16, 32}, // n−1 stuck: MaxInFlight must exceed them
		{40, 4, 8, 32},   // more partitions than MaxBuffered
		{4, 3, 4, 16},
	}
	for _, ord := range []kavari.Ordering{kavari.PerKey, kavari.PerPartition} {
		for _, c := range cases {
			name := fmt.Sprintf("%s/%d-of-%d-stuck/inflight-%d-buffered-%d", ord, c.stuck, c.partitions, c.inFlight, c.buffered)
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					const perStuck, healthy = 40, 60
					b := engBroker(c.partitions)
					var hung, handled atomic.Int64
					k := memKavari(t, b, transport.Capabilities{}, "g-stuck", func(ctx context.Context, m *engMsg) error {
						if strings.HasPrefix(m.Key, "stuck") {
							hung.Add(1)
							<-ctx.Done()
							return ctx.Err()
						}
						handled.Add(1)
						return nil
					}, func(cfg *kavari.Config) {
						cfg.Consume.Ordering = ord
						cfg.Consume.MaxInFlight, cfg.Consume.MaxBuffered = c.inFlight, c.buffered
					})
					n := 0
					for p := range c.stuck {
						for range perStuck {
							b.Append(engRecord(int32(p), "stuck"+strconv.Itoa(p), n))
							n++
						}
					}
					require.NoError(t, k.Start(context.Background()))
					fakeTry(t, func() bool { return hung.Load() == int64(c.stuck) },
						func() string { return fmt.Sprintf("%d of %d stuck handlers started", hung.Load(), c.stuck) })
					synctest.Wait() // the stuck partitions took what they could
					for i := range healthy {
						p := c.stuck + i%(c.partitions-c.stuck)
						b.Append(engRecord(int32(p), "h"+strconv.Itoa(i), n))
						n++
					}
					fakeTry(t, func() bool { return handled.Load() == healthy },
						func() string {
							return fmt.Sprintf("%d of %d records on healthy partitions handled in 10 minutes while %d of %d partitions are stuck (Health.InFlight %d)",
								handled.Load(), healthy, c.stuck, c.partitions, k.Health().InFlight)
						})
					// Health shows every stuck partition paused (at its share or
					// waiting for room in the buffer), with the key it waits for.
					synctest.Wait()
					paused := 0
					for _, ph := range k.Health().Partitions {
						if ph.OldestKey == "stuck"+strconv.Itoa(ph.Partition) && ph.Paused {
							paused++
						}
					}
					assert.Equal(t, c.stuck, paused, "stuck partitions shown paused: %+v", k.Health().Partitions)
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_ = k.Stop(ctx) // cancels the stuck handlers
				})
			})
		}
	}
}

// The buffer's reserved part never exceeds half of it while there are
// fewer partitions than that, and is at least one record per partition.
func TestPartitionFloor(t *testing.T) {
	for _, c := range []struct{ buffered, n, want int }{
		{1024, 1, 512}, {1024, 2, 256}, {1024, 100, 5}, {32, 16, 1}, {32, 40, 1}, {16, 4, 2},
	} {
		got := kavari.PartitionFloor(c.buffered, c.n)
		assert.Equal(t, c.want, got, "MaxBuffered %d, %d partitions", c.buffered, c.n)
	}
}
