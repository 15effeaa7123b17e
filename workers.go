package kavari

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long an idle worker waits for a lane before it exits
// (consumer.workerIdle, taken at New).
var workerIdle = 10 * time.Second

// workerSlowRecord, workerWatch and workerProbe steer how many workers run
// lanes at once (workerPool.canStartLocked): while most records take less
// than workerSlowRecord, at most GOMAXPROCS workers run lanes, besides those
// the pool saw blocked for a workerWatch tick; while most take longer, each
// lane gets a worker at once. Every workerProbe the pool forgets what it
// measured and measures again from the capped way: a lane's time is wall
// time, so with a worker for every lane, CPU-bound records that wait for a
// core look slow too.
var (
	workerSlowRecord = 50 * time.Microsecond
	workerWatch      = 200 * time.Microsecond
	workerProbe      = 100 * time.Millisecond
)

// workerSample: a worker times one lane in workerSample for the pool's
// average record time.
const workerSample = 8

// workerWatchQuiet is how many ticks the watcher goes on with no lane
// waiting before it ends (a lane waiting starts it again).
const workerWatchQuiet = 50

// task is a lane to run: its first record j, then, when ordered, whatever
// queues behind it for key (the partition's lane when key is nil).
type task struct {
	e       *engine
	p       *partition
	key     []byte
	ordered bool
	j       *job
	r       *resume    // when not nil, j is a parked record going on (process)
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
//
// Waking an idle worker for every lane costs more than a quick handler (a
// parked goroutine made runnable, often a thread woken to run it), so while
// records are quick (fewer than half of the timed lanes took more than
// workerSlowRecord per record: slow) at most base (GOMAXPROCS) workers run
// lanes and the others queue: a worker done with its lane takes the next
// without parking.
// A watcher, running while lanes wait, counts the workers that handled no
// new record for a whole workerWatch tick (blocked on I/O, or stuck) and lets
// as many more run, so a lane never waits long behind blocked handlers. Slow
// records (I/O-bound handlers) get a worker each at once, as waking one costs
// little beside the handler.
type workerPool struct {
	max     atomic.Int64 // raised by fit without the lock, once per record
	base    int          // workers running quick lanes at once, besides blocked ones
	idleFor time.Duration
	wg      *sync.WaitGroup // one per worker goroutine

	// ids holds the goroutine ids of the running workers (int64 →
	// struct{}), so that Stop recognises a call from a handler
	// (Client.inHandler); nil: not recorded.
	ids *sync.Map

	// slow is a moving average, in 1/1024ths, of how many timed lanes took
	// more than workerSlowRecord per record (each worker updates it after a
	// timed lane); probeAt (Unix ns) is when it is next reset.
	slow    atomic.Int32
	probeAt atomic.Int64

	mu     sync.Mutex
	all    []*poolWorker // every running worker
	idle   []*poolWorker // waiting for a lane, the last idle last
	queue  []task        // lanes waiting for a worker
	n      int           // workers running (len(all))
	closed bool
	// blocked is how many busy workers started no record during the
	// watcher's last tick; watching says the watcher runs.
	blocked  int
	watching bool
	// epoch counts the reaper's ticks; reaping says the reaper runs, and
	// closing done ends it.
	epoch   int64
	reaping bool
	done    chan struct{}
}

// poolWorker is one worker; next hands it a lane while it is idle, and is
// closed to end it. Under the pool's mu: idleAt is the epoch it went idle
// in, idle says it is, at is its index in all, seen is beat at the
// watcher's last tick. beat counts the records it started.
type poolWorker struct {
	next   chan task
	idleAt int64
	idle   bool
	at     int
	seen   uint64
	beat   atomic.Uint64
	lanes  int // lanes run, for workerSample; only the worker uses it
}

func newWorkerPool(max int, idleFor time.Duration, wg *sync.WaitGroup) *workerPool {
	wp := &workerPool{base: runtime.GOMAXPROCS(0), idleFor: idleFor, wg: wg, done: make(chan struct{})}
	wp.max.Store(int64(max))
	return wp
}

// submit runs t on a worker when one may start (canStartLocked), else
// queues it.
func (wp *workerPool) submit(t task) {
	wp.mu.Lock()
	if len(wp.queue) == 0 && wp.canStartLocked() {
		s := wp.takeLocked(t)
		wp.mu.Unlock()
		wp.hand(s)
		return
	}
	wp.queue = append(wp.queue, t)
	var buf [4]handoff
	more := buf[:0]
	for len(wp.queue) > 1 && len(more) < len(buf) && wp.canStartLocked() {
		more = append(more, wp.takeLocked(wp.popLocked())) // records turned slow since they queued
	}
	if !wp.watching {
		wp.watching = true
		for _, w := range wp.all {
			w.seen = w.beat.Load()
		}
		wp.wg.Add(1) // Stop waits for it as for the workers
		go wp.watch()
	}
	wp.mu.Unlock()
	for _, s := range more {
		wp.hand(s)
	}
}

// canStartLocked reports whether a worker may start a lane now: one is idle
// or fewer than max run, and records are slow or fewer than base workers
// run lanes besides the blocked ones. Under mu.
func (wp *workerPool) canStartLocked() bool {
	if len(wp.idle) == 0 && int64(wp.n) >= wp.max.Load() {
		return false
	}
	if wp.slow.Load() > slowHalf {
		return true
	}
	return wp.n-len(wp.idle)-wp.blocked < wp.base
}

// handoff is a lane given to a worker: w runs t, a new worker when fresh.
type handoff struct {
	w     *poolWorker
	t     task
	fresh bool
}

// takeLocked gives t to the last idle worker, or to a new one; hand, after
// mu is released, hands it over (waking or starting a goroutine under the
// lock would make every worker and feeder wait for it). Under mu.
func (wp *workerPool) takeLocked(t task) handoff {
	if n := len(wp.idle); n > 0 {
		w := wp.idle[n-1]
		wp.idle[n-1] = nil
		wp.idle = wp.idle[:n-1]
		w.idle = false // no longer idle: neither reap nor close touches w.next now
		return handoff{w: w, t: t}
	}
	w := &poolWorker{next: make(chan task, 1), at: len(wp.all)}
	wp.all = append(wp.all, w)
	wp.n++
	wp.wg.Add(1)
	return handoff{w: w, t: t, fresh: true}
}

// hand hands over what takeLocked took. Not under mu.
func (wp *workerPool) hand(s handoff) {
	if s.fresh {
		go wp.work(s.w, s.t)
		return
	}
	s.w.next <- s.t // buffered and empty: an idle worker has no lane
}

// popLocked takes the first queued lane. Under mu.
func (wp *workerPool) popLocked() task {
	t := wp.queue[0]
	wp.queue[0] = task{}
	wp.queue = wp.queue[1:]
	return t
}

// removeLocked forgets w, which ends. Under mu.
func (wp *workerPool) removeLocked(w *poolWorker) {
	last := wp.all[len(wp.all)-1]
	wp.all[w.at] = last
	last.at = w.at
	wp.all[len(wp.all)-1] = nil
	wp.all = wp.all[:len(wp.all)-1]
	wp.n--
}

// work runs t's lane, then queued lanes, then waits idle for more, until
// the pool closes or no lane came for idleFor.
func (wp *workerPool) work(w *poolWorker, t task) {
	defer wp.wg.Done()
	if wp.ids != nil {
		id := goroutineID() // once per worker, which runs many lanes
		wp.ids.Store(id, struct{}{})
		defer wp.ids.Delete(id)
	}
	for {
		if wp.slow.Load() > slowHalf {
			wp.runLanes(w, t) // returns holding mu, with no lane queued
		} else {
			wp.runLanesPadded(w, t) // likewise
		}
		if wp.closed {
			wp.removeLocked(w)
			wp.mu.Unlock()
			return
		}
		w.idleAt = wp.epoch
		w.idle = true
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

// runLanesPadded is runLanes with workerStackPad of stack below it, for
// quick records: a worker runs them one after the other, and its stack
// stays grown while it is busy; an idle worker, back in work, holds none, so
// the collector shrinks the stacks of the idle ones. Slow records skip it:
// a worker per lane would zero and grow it for every lane, for a stack copy
// that costs little beside a slow record.
func (wp *workerPool) runLanesPadded(w *poolWorker, t task) {
	var pad [workerStackPad]byte
	keepStack(&pad)
	wp.runLanes(w, t)
}

// runLanes runs t's lane, then the queued lanes, and returns holding mu
// once none is queued.
func (wp *workerPool) runLanes(w *poolWorker, t task) {
	for ; ; w.lanes++ {
		// Every workerSample-th lane is timed, for the average (a clock
		// read costs about as much as a tenth of a quick record).
		var start time.Time
		timed := w.lanes%workerSample == 0
		if timed {
			start = time.Now()
		}
		n := 1
		if t.u != nil {
			w.beat.Add(1)
			t.e.runUnit(t.p, t.u)
		} else {
			n = t.e.runLane(t.p, t.key, t.ordered, t.j, t.r, &w.beat)
		}
		if timed {
			wp.timed(start, n)
		}
		wp.mu.Lock()
		if len(wp.queue) == 0 {
			return
		}
		t = wp.popLocked()
		wp.mu.Unlock()
	}
}

// slowHalf is half of workerPool.slow's scale.
const slowHalf = 512

// timed notes a lane of n records that started at start.
func (wp *workerPool) timed(start time.Time, n int) {
	now := time.Now()
	if at := now.UnixNano(); at >= wp.probeAt.Load() {
		wp.probeAt.Store(at + int64(workerProbe))
		wp.slow.Store(0)
		return
	}
	var x int32
	if now.Sub(start) > workerSlowRecord*time.Duration(n) {
		x = 2 * slowHalf
	}
	v := wp.slow.Load()
	wp.slow.Store(v + (x-v)/16) // lost updates between workers do no harm
}

// workerStackPad is stack a busy worker holds below its lanes, so that the
// garbage collector does not shrink its stack between records (it halves a
// stack that is less than a quarter used) for the next record's JSON decode
// to grow it again: without it, copying grown stacks took about 6 % of the
// consumer's CPU.
const workerStackPad = 4 << 10

// keepStack makes pad a real part of its caller's frame.
//
//go:noinline
func keepStack(pad *[workerStackPad]byte) { pad[0] = 1 }

// watch runs while lanes wait: every workerWatch it counts the busy workers
// that started no record since its last tick (blocked), and starts queued
// lanes as far as canStartLocked allows with them discounted. It ends when
// no lane waited for workerWatchQuiet ticks, or none waits once the pool
// closed (the lanes queued at close still get workers beside blocked ones).
func (wp *workerPool) watch() {
	defer wp.wg.Done()
	tick := time.NewTimer(workerWatch)
	defer tick.Stop()
	done := wp.done
	quiet := 0
	var starts []handoff
	for {
		ticked := false
		select {
		case <-tick.C:
			ticked = true
			tick.Reset(workerWatch)
		case <-done:
			done = nil // ticks only from now on
		}
		wp.mu.Lock()
		if ticked && len(wp.queue) == 0 {
			quiet++
		} else if ticked {
			quiet = 0
		}
		if quiet >= workerWatchQuiet || wp.closed && len(wp.queue) == 0 {
			wp.watching = false
			wp.blocked = 0
			wp.mu.Unlock()
			return
		}
		if ticked {
			blocked := 0
			for _, w := range wp.all {
				b := w.beat.Load()
				if !w.idle && b == w.seen {
					blocked++
				}
				w.seen = b
			}
			wp.blocked = blocked
			for len(wp.queue) > 0 && wp.canStartLocked() {
				starts = append(starts, wp.takeLocked(wp.popLocked()))
			}
		}
		wp.mu.Unlock()
		for i, s := range starts {
			wp.hand(s)
			starts[i] = handoff{}
		}
		starts = starts[:0]
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
				wp.removeLocked(w)
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
	for m := wp.max.Load(); int64(n) > m; m = wp.max.Load() {
		if wp.max.CompareAndSwap(m, int64(n)) {
			return
		}
	}
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
		wp.removeLocked(w)
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
