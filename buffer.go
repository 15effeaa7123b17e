package kavari

import (
	"context"
	"sync"
	"time"
)

// recordBuffer bounds the records dispatched to lanes and not yet finished
// (running, or queued behind a busy key or partition), Consume.MaxBuffered
// all partitions together, so that stuck partitions can never take the room
// of the others. Each of the n assigned main partitions has a guaranteed
// minimum, floor (partitionFloor: half the buffer split evenly among them,
// at least one record), and each of the t partitions of retry tiers a
// smaller one, tierFloor (a tier holds the few records that failed: with
// a main partition's floor, 3 partitions and 3 tiers would leave the main
// ones 769 of 1,024 slots). Beyond its floor a partition borrows from the
// rest of the buffer (MaxBuffered − n × floor − t × tierFloor), and only
// while some of it is left. A partition below its floor always gets a slot
// at once: whatever the others hold (stuck handlers and the records queued
// behind them), a healthy partition keeps going. Each partition is bounded
// besides by its share of open records (partitionShare).
//
// With more partitions than MaxBuffered every partition still has its one
// record, so up to n + t records are buffered; after a rebalance that adds
// partitions, what the partitions kept had borrowed may exceed the new
// rest until it finishes (nothing more is borrowed meanwhile). Safe for
// concurrent use.
type recordBuffer struct {
	max int // Consume.MaxBuffered

	mu       sync.Mutex
	floor    int                     // slots reserved to each assigned main partition
	tier     int                     // slots reserved to each assigned tier partition
	pool     int                     // slots beyond the floors: max − n × floor − t × tier, at least 0
	used     int                     // slots held, all partitions
	borrowed int                     // slots held beyond their partition's floor
	holding  map[*partition]struct{} // partitions holding slots (also partitions released since), each p.bufHeld of them
	waiting  []*bufferWaiter         // acquire calls waiting for a slot, in arrival order
}

func newRecordBuffer(max int) *recordBuffer {
	b := &recordBuffer{max: max, holding: map[*partition]struct{}{}}
	b.setPartitions(1, 0)
	return b
}

// partitionFloor is the number of buffer slots reserved to each of n
// partitions: half of maxBuffered split evenly, at least 1.
func partitionFloor(maxBuffered, n int) int {
	return max(maxBuffered/(2*max(n, 1)), 1)
}

// tierFloor is the number of buffer slots reserved to each partition of a
// retry tier when each main partition has floor: an eighth of it, at least 1.
func tierFloor(floor int) int {
	return max(floor/8, 1)
}

// setPartitions sets the number of assigned partitions, n of main topics
// and tiers of retry tiers, which the floors and the borrowable rest follow.
func (b *recordBuffer) setPartitions(n, tiers int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.floor = partitionFloor(b.max, n)
	b.tier = tierFloor(b.floor)
	b.pool = max(b.max-max(n, 1)*b.floor-tiers*b.tier, 0)
	b.borrowed = 0
	for p := range b.holding {
		b.borrowed += max(p.bufHeld-b.floorOf(p), 0)
	}
	b.grantLocked()
}

// floorOf is the number of slots reserved to p; under mu.
func (b *recordBuffer) floorOf(p *partition) int {
	if p.tier {
		return b.tier
	}
	return b.floor
}

// canTakeLocked reports whether p may take a slot now; under mu.
func (b *recordBuffer) canTakeLocked(p *partition) bool {
	if p.bufHeld < b.floorOf(p) {
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

// tryAcquire takes a slot for p if it may take one now, and returns how
// many slots are held, all partitions; false when it may not.
func (b *recordBuffer) tryAcquire(p *partition) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.canTakeLocked(p) {
		return 0, false
	}
	return b.takeLocked(p), true
}

// acquire takes a slot for p, waiting while it may not; false when ctx
// ended first. It returns how many slots are held, all partitions.
func (b *recordBuffer) acquire(ctx context.Context, p *partition) (int, bool) {
	b.mu.Lock()
	if b.canTakeLocked(p) {
		used := b.takeLocked(p)
		b.mu.Unlock()
		return used, true
	}
	w := &bufferWaiter{p: p, ready: make(chan struct{})}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return w.used, true
	case <-ctx.Done():
	}
	b.mu.Lock()
	if w.granted { // at the same time as ctx ended: give it back
		b.mu.Unlock()
		b.release(p)
		return 0, false
	}
	for i, x := range b.waiting {
		if x == w {
			b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
			break
		}
	}
	b.mu.Unlock()
	return 0, false
}

// bufferWaiter is an acquire call waiting for a slot; grantLocked gives it
// one and closes ready.
type bufferWaiter struct {
	p       *partition
	ready   chan struct{}
	granted bool // under recordBuffer.mu
	used    int  // set before ready is closed
}

// takeLocked takes a slot for p and returns the slots held; under mu.
func (b *recordBuffer) takeLocked(p *partition) int {
	h := p.bufHeld
	if h >= b.floorOf(p) {
		b.borrowed++
	}
	if h == 0 {
		b.holding[p] = struct{}{}
	}
	p.bufHeld = h + 1
	b.used++
	return b.used
}

// release gives back a slot p took.
func (b *recordBuffer) release(p *partition) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := p.bufHeld
	if h <= 0 {
		return
	}
	if h > b.floorOf(p) {
		b.borrowed--
	}
	if h == 1 {
		delete(b.holding, p)
	}
	p.bufHeld = h - 1
	b.used--
	b.grantLocked()
}

// grantLocked gives a slot to each waiting acquire call, in order, that may
// take one now; under mu.
func (b *recordBuffer) grantLocked() {
	for i := 0; i < len(b.waiting); {
		w := b.waiting[i]
		if !b.canTakeLocked(w.p) {
			i++
			continue
		}
		w.used, w.granted = b.takeLocked(w.p), true
		close(w.ready)
		b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
	}
}

// inUse returns how many slots are held, all partitions.
func (b *recordBuffer) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Back-pressure per partition: a partition may have its share of open
// records (partitionShare); at the share, or when it may take no buffer slot,
// its feeder pauses fetching and waits (waitRoom) until a record completes.

// pause asks the transport to stop fetching p; what p has pending no more
// holds back the transport (Backlog).
func (e *engine) pause(p *partition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBacklogLocked()
	if !p.paused {
		p.paused = true
		e.cons.Pause(p.tp)
	}
}

// stallPause is how long a feeder waits for room before its partition is
// paused, when the transport waits for backlogs (WaitsForBacklog), and how
// long a partition's backlog may hold the transport back (pauseBacklog).
const stallPause = 100 * time.Millisecond

// hasRoom reports whether p may open a record now without waiting.
func (e *engine) hasRoom(p *partition) bool {
	return int64(p.tracker.window()) < p.share.Load() && e.deps.buf.canTake(p)
}

// partitionShare is how many open records one of n partitions may have: all
// of maxBuffered when it is alone, else its even share, raised to
// maxInFlight (a single busy partition can keep every handler busy) but never
// more than half the buffer.
func partitionShare(maxBuffered, maxInFlight, n int) int {
	if n <= 1 {
		return maxBuffered
	}
	return max(maxBuffered/n, min(maxInFlight, maxBuffered/2), 1)
}

// waitRoom waits while partition p has its share of open records; false when
// ctx ended first.
func (e *engine) waitRoom(ctx context.Context, p *partition) bool {
	return e.waitRoomStall(ctx, p, false)
}

// roomAt is how many open records a partition of share share may have
// when its feeder, which waited at the share, goes on: a quarter of the
// share below it, so that the feeder dispatches records in runs, not one
// per completed record (each time a wake-up of the feeder and a worker).
func roomAt(share int64) int64 {
	return share - max(share/4, 1)
}

// waitRoomStall is waitRoom that, with stall, pauses p once it waited
// stallPause (only p's feeder calls it with stall).
func (e *engine) waitRoomStall(ctx context.Context, p *partition, stall bool) bool {
	if int64(p.tracker.window()) < p.share.Load() {
		return true
	}
	var stalled <-chan time.Time
	for {
		p.waiting.Store(true)
		if int64(p.tracker.window()) <= roomAt(p.share.Load()) { // completed meanwhile
			p.waiting.Store(false)
			return true
		}
		if stall && stalled == nil {
			if p.stall == nil {
				p.stall = time.NewTimer(stallPause)
			} else {
				p.stall.Reset(stallPause)
			}
			stalled = p.stall.C
			defer p.stall.Stop()
		}
		select {
		case <-p.room:
		case <-stalled:
			stall, stalled = false, nil
			e.pause(p)
		case <-ctx.Done():
			p.waiting.Store(false)
			return false
		}
	}
}
