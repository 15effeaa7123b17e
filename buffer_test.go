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
	b.setPartitions(16, 0) // floor 1, rest 16
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

// The retry tiers' partitions hold the few records that failed: they get a
// small floor, not a main partition's, so that their reserve does not cut
// the main partitions' room. With 3 main partitions and 3 tiers the mains
// together may hold all the buffer but the tiers' floors (it was 769 of
// 1,024: every tier partition reserved what a main one does), and a tier
// partition still has its floor while the mains hold everything else.
func TestRecordBufferTierFloors(t *testing.T) {
	b := newRecordBuffer(1024)
	mains := []*partition{{id: 0}, {id: 1}, {id: 2}}
	tiers := []*partition{{id: 0, tier: true}, {id: 1, tier: true}, {id: 2, tier: true}}
	b.setPartitions(len(mains), len(tiers))
	mainFloor, tierFloor := partitionFloor(1024, len(mains)), tierFloor(partitionFloor(1024, len(mains)))
	require.Equal(t, 170, mainFloor)
	require.Less(t, tierFloor, mainFloor)
	require.Positive(t, tierFloor)
	held := 0
	for progress := true; progress; {
		progress = false
		for _, p := range mains {
			if _, ok := b.tryAcquire(p); ok {
				held++
				progress = true
			}
		}
	}
	assert.Equal(t, 1024-len(tiers)*tierFloor, held, "the mains hold all but the tiers' floors")
	for _, p := range tiers {
		for i := range tierFloor {
			_, ok := b.tryAcquire(p)
			require.True(t, ok, "tier partition %d, slot %d of its floor", p.id, i)
		}
		assert.False(t, b.canTake(p), "nothing beyond its floor is left")
	}
	assert.Equal(t, 1024, b.inUse())
	// A main partition that gives back a slot it borrowed can take it again.
	b.release(mains[0])
	_, ok := b.tryAcquire(mains[0])
	assert.True(t, ok)
}
