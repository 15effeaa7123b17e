package kavari

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordBuffer: stuck partitions take their floor and the shared rest, and
// never the floor of another partition; a waiting acquire gets the first
// slot it may take, and one whose ctx ends takes none.
func TestRecordBuffer(t *testing.T) {
	b := newRecordBuffer(32)
	b.setPartitions(16) // floor 1, rest 16
	ps := make([]*partition, 16)
	for i := range ps {
		ps[i] = &partition{id: i}
	}
	ctx := context.Background()
	// Four stuck partitions take what they can.
	for _, p := range ps[:4] {
		for b.canTake(p) {
			_, ok := b.acquire(ctx, p)
			require.True(t, ok)
		}
	}
	assert.Equal(t, 4+16, b.inUse(), "four floors and the shared rest")
	// Every other partition still has its floor.
	for _, p := range ps[4:] {
		require.True(t, b.canTake(p), "partition %d", p.id)
		_, ok := b.acquire(ctx, p)
		require.True(t, ok)
		assert.False(t, b.canTake(p), "nothing beyond the floor is left")
	}
	// A waiting acquire gets the slot a stuck partition gives back...
	got := make(chan bool, 1)
	go func() { _, ok := b.acquire(ctx, ps[5]); got <- ok }()
	for {
		b.mu.Lock()
		n := len(b.waiting)
		b.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.release(ps[0])
	assert.True(t, <-got)
	// ...and one whose ctx ends takes nothing.
	cctx, cancel := context.WithCancel(ctx)
	go func() { _, ok := b.acquire(cctx, ps[6]); got <- ok }()
	cancel()
	assert.False(t, <-got)
	used := b.inUse()
	b.release(ps[1])
	assert.Equal(t, used-1, b.inUse())
	b.mu.Lock()
	assert.Empty(t, b.waiting)
	b.mu.Unlock()
}
