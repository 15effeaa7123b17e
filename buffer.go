package kavari

import (
	"context"
	"sync"
)

// recordBuffer bounds the records dispatched to lanes and not yet finished
// (running, or queued behind a busy key or partition), Consume.MaxBuffered
// all partitions together, so that stuck partitions can never take the room
// of the others. Each of the n assigned partitions has a guaranteed
// minimum, floor (partitionFloor: half the buffer split evenly, at least
// one record); beyond its floor a partition borrows from the rest of the
// buffer (MaxBuffered − n × floor), and only while some of it is left. A
// partition below its floor always gets a slot at once: whatever the
// others hold (stuck handlers and the records queued behind them), a
// healthy partition keeps going. Each partition is bounded besides by its
// share of open records (partitionShare).
//
// With more partitions than MaxBuffered every partition still has its one
// record, so up to n records are buffered; after a rebalance that adds
// partitions, what the partitions kept had borrowed may exceed the new
// rest until it finishes (nothing more is borrowed meanwhile). Safe for
// concurrent use.
type recordBuffer struct {
	max int // Consume.MaxBuffered

	mu       sync.Mutex
	floor    int                // slots reserved to each assigned partition
	pool     int                // slots beyond the floors: max − n × floor, at least 0
	used     int                // slots held, all partitions
	borrowed int                // slots held beyond their partition's floor
	held     map[*partition]int // slots held per partition (also by partitions released since)
	waiters  int                // acquire calls waiting for changed
	changed  chan struct{}      // closed (and replaced) when a slot is freed or the floors change, if waiters
}

func newRecordBuffer(max int) *recordBuffer {
	b := &recordBuffer{max: max, held: map[*partition]int{}, changed: make(chan struct{})}
	b.setPartitions(1)
	return b
}

// partitionFloor is the number of buffer slots reserved to each of n
// partitions: half of maxBuffered split evenly, at least 1.
func partitionFloor(maxBuffered, n int) int {
	return max(maxBuffered/(2*max(n, 1)), 1)
}

// setPartitions sets the number of assigned partitions, which the floors
// and the borrowable rest follow.
func (b *recordBuffer) setPartitions(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.floor = partitionFloor(b.max, n)
	b.pool = max(b.max-max(n, 1)*b.floor, 0)
	b.borrowed = 0
	for _, h := range b.held {
		b.borrowed += max(h-b.floor, 0)
	}
	b.wakeLocked()
}

// canTakeLocked reports whether p may take a slot now; under mu.
func (b *recordBuffer) canTakeLocked(p *partition) bool {
	if b.held[p] < b.floor {
		return true
	}
	return b.borrowed < b.pool && b.used < b.max
}

// canTake reports whether p may take a slot without waiting.
func (b *recordBuffer) canTake(p *partition) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.canTakeLocked(p)
}

// acquire takes a slot for p, waiting while it may not; false when ctx
// ended first. It returns how many slots are held, all partitions.
func (b *recordBuffer) acquire(ctx context.Context, p *partition) (int, bool) {
	b.mu.Lock()
	for !b.canTakeLocked(p) {
		b.waiters++
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			b.mu.Lock()
			b.waiters--
			b.mu.Unlock()
			return 0, false
		}
		b.mu.Lock()
		b.waiters--
	}
	h := b.held[p]
	if h >= b.floor {
		b.borrowed++
	}
	b.held[p] = h + 1
	b.used++
	used := b.used
	b.mu.Unlock()
	return used, true
}

// release gives back a slot p took.
func (b *recordBuffer) release(p *partition) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.held[p]
	if h <= 0 {
		return
	}
	if h > b.floor {
		b.borrowed--
	}
	if h == 1 {
		delete(b.held, p)
	} else {
		b.held[p] = h - 1
	}
	b.used--
	b.wakeLocked()
}

// inUse returns how many slots are held, all partitions.
func (b *recordBuffer) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// wakeLocked wakes the waiting acquire calls; under mu.
func (b *recordBuffer) wakeLocked() {
	if b.waiters > 0 {
		close(b.changed)
		b.changed = make(chan struct{})
	}
}
