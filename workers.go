package kavari

import (
	"context"
	"sync"
	"time"
)

// workerIdle is how long an idle worker waits for a lane before it exits
// (consumer.workerIdle, taken at New).
var workerIdle = 10 * time.Second

// task is a lane to run: its first record j, then, when ordered, whatever
// queues behind it for key (the partition's lane when key is nil).
type task struct {
	e       *engine
	p       *partition
	key     []byte
	ordered bool
	j       *job
	u       *batchUnit // when not nil, a unit of a batch queue (batch.go) instead of a lane
}

// workerPool runs lanes on reused goroutines, at most max of them. Workers
// are reused because a fresh goroutine per record would spend much of its
// time growing its stack for JSON decoding, again for every record. The
// worker that became idle last gets the next lane: under a steady load the
// same few workers, their stacks grown and in cache, handle the records,
// and the others exit once idle for idleFor (reap: one ticker for the pool,
// not a timer per worker set each time it goes idle, once per record). As a dispatched lane holds a buffer
// slot, max (MaxBuffered) workers are enough; at the bound a lane waits in
// queue for the first worker done with its own, and submit never blocks.
type workerPool struct {
	max     int
	idleFor time.Duration
	wg      *sync.WaitGroup // one per worker goroutine

	// ids holds the goroutine ids of the running workers (int64 →
	// struct{}), so that Stop recognises a call from a handler
	// (Client.inHandler); nil: not recorded.
	ids *sync.Map

	mu     sync.Mutex
	idle   []*poolWorker // waiting for a lane, the last idle last
	queue  []task        // lanes waiting for a worker, at the bound
	n      int           // workers running
	closed bool
	// epoch counts the reaper's ticks; reaping says the reaper runs, and
	// closing done ends it.
	epoch   int64
	reaping bool
	done    chan struct{}
}

// poolWorker is one worker; next hands it a lane while it is idle, and is
// closed to end it. idleAt is the epoch it went idle in (under mu).
type poolWorker struct {
	next   chan task
	idleAt int64
}

func newWorkerPool(max int, idleFor time.Duration, wg *sync.WaitGroup) *workerPool {
	return &workerPool{max: max, idleFor: idleFor, wg: wg, done: make(chan struct{})}
}

// submit hands t to the last idle worker, or starts one, or, at the bound,
// queues it.
func (wp *workerPool) submit(t task) {
	wp.mu.Lock()
	if n := len(wp.idle); n > 0 {
		w := wp.idle[n-1]
		wp.idle[n-1] = nil
		wp.idle = wp.idle[:n-1]
		wp.mu.Unlock()
		w.next <- t // buffered and empty: an idle worker has no lane
		return
	}
	if wp.n < wp.max {
		wp.n++
		wp.wg.Add(1)
		wp.mu.Unlock()
		go wp.work(t)
		return
	}
	wp.queue = append(wp.queue, t)
	wp.mu.Unlock()
}

// work runs t's lane, then queued lanes, then waits idle for more, until
// the pool closes or no lane came for idleFor.
func (wp *workerPool) work(t task) {
	defer wp.wg.Done()
	if wp.ids != nil {
		id := goroutineID() // once per worker, which runs many lanes
		wp.ids.Store(id, struct{}{})
		defer wp.ids.Delete(id)
	}
	w := &poolWorker{next: make(chan task, 1)}
	for {
		if t.u != nil {
			t.e.runUnit(t.p, t.u)
		} else {
			t.e.runLane(t.p, t.key, t.ordered, t.j)
		}
		wp.mu.Lock()
		if len(wp.queue) > 0 {
			t = wp.queue[0]
			wp.queue[0] = task{}
			wp.queue = wp.queue[1:]
			wp.mu.Unlock()
			continue
		}
		if wp.closed {
			wp.n--
			wp.mu.Unlock()
			return
		}
		w.idleAt = wp.epoch
		wp.idle = append(wp.idle, w)
		if !wp.reaping {
			wp.reaping = true
			go wp.reap()
		}
		wp.mu.Unlock()
		var ok bool
		if t, ok = <-w.next; !ok {
			return // retired (reap) or the pool closed
		}
	}
}

// reap ends the workers idle for idleFor: every idleFor/2 it retires those
// that went idle two ticks ago or earlier (idle between idleFor/2 and
// idleFor), the first idle first. It ends when the pool closes or no worker
// is left (a worker going idle starts it again).
func (wp *workerPool) reap() {
	tick := time.NewTicker(max(wp.idleFor/2, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-wp.done:
			return
		}
		wp.mu.Lock()
		wp.epoch++
		kept := wp.idle[:0]
		for _, w := range wp.idle {
			if wp.epoch-w.idleAt >= 2 {
				close(w.next)
				wp.n--
				continue
			}
			kept = append(kept, w)
		}
		clear(wp.idle[len(kept):])
		wp.idle = kept
		if wp.n == 0 {
			wp.reaping = false
			wp.mu.Unlock()
			return
		}
		wp.mu.Unlock()
	}
}

// fit raises the bound to n when lower: called with the number of buffer
// slots held, so that a lane (which holds one) never waits in queue behind
// lanes whose handlers are stuck. The buffer may hold more than MaxBuffered
// (recordBuffer: every partition has its floor).
func (wp *workerPool) fit(n int) {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	wp.max = max(wp.max, n)
}

// close ends the idle workers and lets the busy ones end after their lane
// and the queued ones. Nothing is submitted after close (the feeders ended).
func (wp *workerPool) close() {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	if !wp.closed {
		close(wp.done)
	}
	wp.closed = true
	for _, w := range wp.idle {
		close(w.next)
		wp.n--
	}
	wp.idle = nil
}

// runSlots bounds how many handlers run at once (MaxInFlight): a record's
// handling holds a slot (take) and gives it back (give), also while it waits
// between retries; len is how many are held.
type runSlots chan struct{}

// take takes a run slot, waiting while every slot is held; false when ctx
// ended first.
func (s runSlots) take(ctx context.Context) bool {
	select { // without ctx first: a select on two channels locks both, and ctx's is shared by every handler of a partition
	case s <- struct{}{}:
		return true
	default:
	}
	select {
	case s <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// give gives back a slot take took.
func (s runSlots) give() { <-s }
