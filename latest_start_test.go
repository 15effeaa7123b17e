package kavari_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/transport"
)

// With AutoOffsetReset Latest, a partition with no committed offset starts
// at the log end found when it was assigned, and that start is committed
// at once: when the partition is lost before the member completed (and
// committed) anything, its next owner starts there, not at the then
// current end. Before, the next owner started at Latest again and skipped
// the records published between the two assignments.
func TestEngineLatestStartIsCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := engBroker(1)
		b.Append(engRecord(0, "old", 0)) // before the group: skipped
		var mu sync.Mutex
		handled := map[int]int{} // n -> handlings that returned nil
		block := true
		k := memKavari(t, b, transport.Capabilities{}, "g", func(ctx context.Context, m *engMsg) error {
			mu.Lock()
			blocking := block
			mu.Unlock()
			if blocking {
				<-ctx.Done() // a slow handler: nothing completes before the loss
				return ctx.Err()
			}
			mu.Lock()
			handled[m.N]++
			mu.Unlock()
			return nil
		}, func(c *kavari.Config) {
			c.Consume.AutoOffsetReset = kavari.Latest
			c.Consume.CommitInterval = time.Hour
		})
		require.NoError(t, k.Start(context.Background()))
		synctest.Wait()
		require.Equal(t, map[string][]int{engTopic: {0}}, k.Health().Assigned)
		assert.Equal(t, int64(1), memCommitted(b, "g", 0), "the start (the log end at assignment) is committed when the partition is assigned")

		for n := 1; n <= 3; n++ {
			b.Append(engRecord(0, "k", n))
		}
		synctest.Wait()
		// The session ends before anything completed: no commit of the
		// member's own; the partition is assigned again, as to a new
		// owner, from what is committed.
		mu.Lock()
		block = false
		mu.Unlock()
		b.Expire("g")
		synctest.Wait()
		mu.Lock()
		got := map[int]int{}
		for n, c := range handled {
			got[n] = c
		}
		mu.Unlock()
		assert.Equal(t, map[int]int{1: 1, 2: 1, 3: 1}, got, "the records published after the first assignment are handled by the next owner")
		require.NoError(t, stopNow(t, k))
		assert.Equal(t, int64(4), memCommitted(b, "g", 0))
	})
}
