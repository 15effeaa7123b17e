package kavari

import (
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"github.com/kavari-go/kavari/internal/transport"
)

// Batch handlers (RegisterBatch): on a partition whose topic has a type
// with a batch handler, the feeder queues every record in the partition's
// batchQueue instead of a lane (enqueue), and the queue hands out units to
// the worker pool: a batch (records of one type at the same handler, in
// offset order, bounded by Consume.MaxBatchRecords and MaxBatchBytes, handed
// out when full or when its first record waited MaxBatchWait), a record
// alone (a single handler of a type that also has batch handlers, or a
// record isolated from a failed batch), or a record of a type without batch
// handlers (engine.process, as on a lane). Under PerKey a record is handed
// out only when no earlier record of its key is open outside its unit (the
// queue is in offset order, busy counts the keys of units handed out), so
// a key's records stay in offset order also across batches, retries and
// isolation; under PerPartition one unit is out at a time and a batch is a
// run of consecutive records. A failed batch is settled in runBatch:
// BatchFailed(i) isolates record i, else the batch is retried with
// Consume.Retry, then bisected until the failing records are alone; records
// that come again (after the failed one, or at a later handler of the type)
// go back in the queue. A partition without batch handlers has no queue and
// its records take the lanes of dispatch.go unchanged. This file exports
// nothing.

// batchQueue holds a partition's records that wait for a unit.
type batchQueue struct {
	mu      sync.Mutex
	items   []*batchJob    // waiting, in offset order
	busy    map[string]int // PerKey: records per key in the units handed out
	running int            // units handed out and not ended
	// added counts records queued since the queue was last looked at
	// (form): once MaxBatchRecords came, a batch may be full.
	added  int
	closed bool // the feeder ended: nothing more is handed out
	flush  bool // form hands out batches that are not full (flushBatches)
	timer  *time.Timer
	due    time.Time // when timer fires; zero: not armed
}

// batchJob is a record on a partition with batch handlers, from the feeder
// to its completion.
type batchJob struct {
	job
	rt    *route    // the record's type when it has batch handlers; nil: engine.process handles it
	stage int       // index in rt.bindings of the handler it goes to next
	at    time.Time // when it was queued
	size  int       // key and value bytes
	msg   any       // the decoded message; nil until decoded
	// alone says it runs by itself (isolated from a failed batch); cause,
	// when not nil, is the failure that isolated it, counted as its first
	// attempt.
	alone bool
	cause error
	// failed are the handlers that gave up on it retriably, with retry
	// topics: once its last handler ran it moves to the first tier
	// (retryLater), and it is complete only once that write is
	// acknowledged.
	failed []tierFailure
}

// batchUnit is what the queue hands to a worker: a batch, or one record.
type batchUnit struct {
	jobs []*batchJob
}

// inBatch reports whether bj goes to a batch (its next handler takes
// batches and it is not isolated).
func (bj *batchJob) inBatch() bool {
	return bj.rt != nil && !bj.alone && bj.rt.bindings[bj.stage].batch
}

// batchKey returns bj's key for PerKey ordering; false when its order does
// not matter (no key, or another Ordering). The string shares the record's
// key bytes, which nothing changes once fetched, so the queue's maps take
// no copy of it.
func (e *engine) batchKey(bj *batchJob) (string, bool) {
	k := bj.rec.Key
	if e.deps.cfg.Consume.Ordering != PerKey || k == nil {
		return "", false
	}
	if len(k) == 0 {
		return "", true
	}
	return unsafe.String(&k[0], len(k)), true
}

// enqueue tracks rec (as dispatch does) and queues it in p's batchQueue.
func (e *engine) enqueue(p *partition, rec *transport.Record) {
	now := time.Now()
	bj := &batchJob{at: now, size: len(rec.Key) + len(rec.Value)}
	bj.rec = rec
	bj.seq = p.tracker.addKey(rec.Offset, rec.Key, now)
	bj.ctx = handlerCtx{Context: p.hard, j: &bj.job, attempt: 1}
	p.inflight.Add(1)
	if name, ok := headerValue(rec.Headers, HeaderMsgType); ok {
		if rt := e.table.lookup(rec.Topic, string(name)); rt != nil && rt.hasBatch() {
			bj.rt = rt
		}
	}
	bq := p.bq
	bq.mu.Lock()
	bq.items = append(bq.items, bj)
	bq.added++
	var units []*batchUnit
	if !bj.inBatch() || bq.added >= e.deps.cfg.Consume.MaxBatchRecords {
		units = e.formLocked(p, now)
	} else {
		e.armLocked(p, bj.at.Add(e.deps.cfg.Consume.MaxBatchWait))
	}
	bq.mu.Unlock()
	e.handOut(p, units)
}

// armLocked makes the queue look again at at, unless it will earlier; under bq.mu.
func (e *engine) armLocked(p *partition, at time.Time) {
	bq := p.bq
	if !bq.due.IsZero() && !at.Before(bq.due) {
		return
	}
	bq.due = at
	if bq.timer == nil {
		bq.timer = time.AfterFunc(time.Until(at), func() { e.lingered(p) })
		return
	}
	bq.timer.Reset(time.Until(at))
}

// lingered hands out the batches whose wait is over.
func (e *engine) lingered(p *partition) {
	bq := p.bq
	bq.mu.Lock()
	bq.due = time.Time{}
	units := e.formLocked(p, time.Now())
	bq.mu.Unlock()
	e.handOut(p, units)
}

// flushBatches hands out what may go now, full or not: p's feeder waits
// for room (the partition has its share of MaxBuffered open, or no buffer
// slot is left), so the waiting batches cannot grow until some go.
func (e *engine) flushBatches(p *partition) {
	bq := p.bq
	bq.mu.Lock()
	bq.flush = true
	units := e.formLocked(p, time.Now())
	bq.flush = false
	bq.mu.Unlock()
	e.handOut(p, units)
}

// formLocked takes from p's queue the units that may be handed out now and
// accounts for them (running, busy); under bq.mu. It walks the queue in
// offset order: a record whose key is busy, or has an earlier record still
// waiting, stays; a record of a type without batch handlers, or alone, is
// a unit of its own; the first record of a batch gathers the later ones of
// its type and handler (skipping keys that must wait) up to the bounds,
// and the batch is handed out when full, when its first record waited
// MaxBatchWait, or when the partition can take no more records
// (flushBatches), else the queue looks again then.
func (e *engine) formLocked(p *partition, now time.Time) []*batchUnit {
	bq := p.bq
	bq.added = 0
	if bq.closed || len(bq.items) == 0 {
		return nil
	}
	c := &e.deps.cfg.Consume
	perPartition := c.Ordering == PerPartition
	var units []*batchUnit
	var blocked map[string]bool        // keys with a record passed over in this walk
	var tried map[*binding]bool        // batches not full yet
	out := make([]bool, len(bq.items)) // handed out in this walk
	var next time.Time
	busy := func(k string) bool { return blocked[k] || bq.busy[k] > 0 }
	block := func(k string) {
		if blocked == nil {
			blocked = map[string]bool{}
		}
		blocked[k] = true
	}
	for i, bj := range bq.items {
		if perPartition && bq.running > 0 {
			break
		}
		if out[i] {
			continue
		}
		k, keyed := e.batchKey(bj)
		if keyed && busy(k) {
			continue
		}
		if !bj.inBatch() {
			out[i] = true
			units = append(units, e.handLocked(bq, []*batchJob{bj}))
			continue
		}
		b := bj.rt.bindings[bj.stage]
		if tried[b] {
			if keyed {
				block(k)
			}
			if perPartition {
				break
			}
			continue
		}
		sel := make([]int, 1, min(c.MaxBatchRecords, len(bq.items)-i))
		sel[0] = i
		n, size := 1, bj.size
		full := n >= c.MaxBatchRecords || size >= c.MaxBatchBytes
		var skip map[string]bool // keys passed over while gathering
		for j := i + 1; j < len(bq.items) && !full; j++ {
			if out[j] {
				continue
			}
			o := bq.items[j]
			same := o.inBatch() && o.rt == bj.rt && o.rt.bindings[o.stage] == b
			if perPartition {
				if !same {
					break
				}
			} else if ok, okKeyed := e.batchKey(o); okKeyed && (busy(ok) || skip[ok]) {
				continue
			} else if !same {
				if okKeyed {
					if skip == nil {
						skip = map[string]bool{}
					}
					skip[ok] = true
				}
				continue
			}
			if size+o.size > c.MaxBatchBytes {
				full = true
				break
			}
			sel = append(sel, j)
			n, size = n+1, size+o.size
			full = n >= c.MaxBatchRecords || size >= c.MaxBatchBytes
		}
		if full || bq.flush || now.Sub(bj.at) >= c.MaxBatchWait {
			jobs := make([]*batchJob, len(sel))
			for x, j := range sel {
				out[j] = true
				jobs[x] = bq.items[j]
			}
			units = append(units, e.handLocked(bq, jobs))
			continue
		}
		// Not full: wait for more records, or for its wait to end.
		if tried == nil {
			tried = map[*binding]bool{}
		}
		tried[b] = true
		if keyed {
			block(k)
		}
		if due := bj.at.Add(c.MaxBatchWait); next.IsZero() || due.Before(next) {
			next = due
		}
		if perPartition {
			break
		}
	}
	if len(units) > 0 {
		kept := bq.items[:0]
		for i, bj := range bq.items {
			if !out[i] {
				kept = append(kept, bj)
			}
		}
		clear(bq.items[len(kept):])
		bq.items = kept
	}
	if !next.IsZero() {
		e.armLocked(p, next)
	}
	return units
}

// handLocked accounts for a unit of jobs handed out; under bq.mu.
func (e *engine) handLocked(bq *batchQueue, jobs []*batchJob) *batchUnit {
	bq.running++
	for _, bj := range jobs {
		if k, ok := e.batchKey(bj); ok {
			bq.busy[k]++
		}
	}
	return &batchUnit{jobs: jobs}
}

// handOut gives units to the worker pool.
func (e *engine) handOut(p *partition, units []*batchUnit) {
	for _, u := range units {
		e.deps.pool.submit(task{e: e, p: p, u: u})
	}
}

// unitEnded returns u's keys, queues again the records in again (in
// offset order) and hands out what may go now.
func (e *engine) unitEnded(p *partition, u *batchUnit, again []*batchJob) {
	bq := p.bq
	bq.mu.Lock()
	bq.running--
	for _, bj := range u.jobs {
		if k, ok := e.batchKey(bj); ok {
			if bq.busy[k]--; bq.busy[k] <= 0 {
				delete(bq.busy, k)
			}
		}
	}
	if bq.closed {
		bq.mu.Unlock()
		for _, bj := range again {
			e.abandon(p, bj)
		}
		return
	}
	if len(again) > 0 {
		bq.items = mergeBySeq(bq.items, again)
	}
	units := e.formLocked(p, time.Now())
	bq.mu.Unlock()
	e.handOut(p, units)
}

// mergeBySeq returns the jobs of a and b (each in any order of its own)
// in offset order.
func mergeBySeq(a, b []*batchJob) []*batchJob {
	all := append(a, b...)
	// Insertion from the end: the jobs coming again are few and early.
	for i := len(a); i < len(all); i++ {
		for j := i; j > 0 && all[j].seq < all[j-1].seq; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	return all
}

// closeBatches ends p's queue when its feeder ended: the records still
// waiting are left open (redelivered to the partition's next owner), and
// none is handed out any more; units out finish within the drain budget.
func (e *engine) closeBatches(p *partition) {
	bq := p.bq
	bq.mu.Lock()
	bq.closed = true
	items := bq.items
	bq.items = nil
	if bq.timer != nil {
		bq.timer.Stop()
	}
	bq.mu.Unlock()
	for _, bj := range items {
		e.abandon(p, bj)
	}
}

// finishJob marks bj complete (handled, dead-lettered): it may be committed.
func (e *engine) finishJob(p *partition, bj *batchJob) {
	e.done(p, &bj.job)
	e.deps.buf.release(p)
	p.inflight.Done()
}

// abandon leaves bj open: it is not committed, and is redelivered.
func (e *engine) abandon(p *partition, bj *batchJob) {
	e.deps.buf.release(p)
	p.inflight.Done()
}

// advance moves bj past the handler it was at: to the next handler of its
// type (appended to again, returned), or complete. With handlers that
// failed it (retry topics), completing it is moving it to the first tier,
// beside the unit (moveJob): the record has left its key's order, and its
// write waits without a run slot.
func (e *engine) advance(p *partition, bj *batchJob, again []*batchJob) []*batchJob {
	bj.stage++
	bj.alone, bj.cause = false, nil
	if bj.stage < len(bj.rt.bindings) {
		return append(again, bj)
	}
	if bj.failed != nil {
		go e.moveJob(p, bj)
		return again
	}
	e.deps.health.handled.Add(1)
	e.finishJob(p, bj)
	return again
}

// moveJob moves bj to the first tier (retryLater) and completes it once
// that write was acknowledged; when the write does not succeed it stays
// open, and the partition holds there.
func (e *engine) moveJob(p *partition, bj *batchJob) {
	ok, moved := e.retryLater(p, &bj.job, nil, bj.failed)
	switch {
	case !ok:
		e.abandon(p, bj)
		return
	case !moved: // dead-lettered after the last tier
		e.deps.health.handled.Add(1)
	}
	e.finishJob(p, bj) // a moved record counts as handled once it is finished in its tier
}

// runUnit runs u on a worker.
func (e *engine) runUnit(p *partition, u *batchUnit) {
	var again []*batchJob
	first := u.jobs[0]
	switch {
	case first.rt == nil:
		e.process(p, &first.job, nil, nil)
	case len(u.jobs) == 1:
		again = e.runAlone(p, first)
	default:
		again = e.runBatch(p, u.jobs)
	}
	e.unitEnded(p, u, again)
}

// decodeJob decodes bj's record; false when it cannot be decoded: then it
// was dead-lettered and completed, or left open when its dead letter could
// not be written.
func (e *engine) decodeJob(p *partition, bj *batchJob) bool {
	msg, err := bj.rt.decode(bj.rec) // routed by enqueue
	if err == nil {
		bj.msg = msg
		return true
	}
	var de *DecodeError
	errors.As(err, &de)
	e.deps.log.Warn("kavari: poison record, dead-lettering", "err", logErr(err))
	if e.deadLetter(p, &bj.job, de.Kind, "", 1, err) {
		e.finishJob(p, bj)
	} else {
		e.abandon(p, bj)
	}
	return false
}

// runAlone runs bj's next handler on bj alone, with Consume.Retry, then
// dead-letters it when the handler gave up; it returns bj when it goes on
// to another handler of its type.
func (e *engine) runAlone(p *partition, bj *batchJob) []*batchJob {
	if p.hard.Err() != nil || !e.deps.running.take(p.hard) {
		e.abandon(p, bj)
		return nil
	}
	held := true
	defer func() {
		if held {
			e.deps.running.give()
		}
	}()
	if bj.msg == nil && !e.decodeJob(p, bj) {
		return nil
	}
	b := bj.rt.bindings[bj.stage]
	start := time.Now()
	attempts := 0
	first := bj.cause
	err := e.deps.cfg.Consume.Retry.retrySince(p.hard, start, func(attempt int) error {
		attempts = attempt
		if attempt == 1 && first != nil {
			return first
		}
		if !held {
			if !e.deps.running.take(p.hard) {
				return context.Cause(p.hard)
			}
			held = true
		}
		if !b.batch {
			return e.invoke(p, b, bj.msg, &bj.job, attempt)
		}
		err := e.invokeBatch(p, b, []*batchJob{bj}, attempt)
		if i, ok, _, inner := batchFailure(err, 1); ok && i == 0 {
			return inner
		}
		return err
	}, retriableHandler, func(attempt int, err error, wait time.Duration) {
		e.deps.log.Warn("kavari: handler failed, retrying", "handler", b.name, "topic", bj.rec.Topic,
			"partition", bj.rec.Partition, "offset", bj.rec.Offset, "attempt", attempt, "wait", wait, "err", logErr(err))
		e.deps.running.give()
		held = false
		e.deps.health.retried.Add(1)
		e.deps.hooks.onRetry(bj.rec, attempt, b.name, wait, err)
	})
	if err != nil {
		if p.hard.Err() != nil {
			e.abandon(p, bj)
			return nil
		}
		herr := &HandlerError{Handler: b.name, Attempts: attempts, Err: err}
		if e.retry != nil && !bj.rt.inPlace && retriableHandler(err) {
			// To a retry tier once its other handlers ran (advance).
			bj.failed = append(bj.failed, tierFailure{handler: b.name, attempts: attempts, err: herr})
			return e.advance(p, bj, nil)
		}
		e.deps.log.Error("kavari: handler gave up, dead-lettering", "err", logErr(herr), "topic", bj.rec.Topic, "partition", bj.rec.Partition, "offset", bj.rec.Offset)
		if !e.deadLetter(p, &bj.job, KindHandler, b.name, attempts, herr) {
			e.abandon(p, bj)
			return nil
		}
	}
	return e.advance(p, bj, nil)
}

// runBatch runs the batch handler of jobs (two or more records at the same
// handler) with Consume.Retry. When it fails, the records before the one
// BatchFailed names are done, that one is isolated and the rest come again;
// on any other failure the batch is bisected (settle). It returns the
// records to queue again.
func (e *engine) runBatch(p *partition, jobs []*batchJob) []*batchJob {
	if p.hard.Err() != nil || !e.deps.running.take(p.hard) {
		for _, bj := range jobs {
			e.abandon(p, bj)
		}
		return nil
	}
	held := true
	defer func() {
		if held {
			e.deps.running.give()
		}
	}()
	valid := make([]*batchJob, 0, len(jobs))
	for _, bj := range jobs {
		if bj.msg == nil && !e.decodeJob(p, bj) {
			continue // poison: dead-lettered before the batch is handed over
		}
		valid = append(valid, bj)
	}
	if len(valid) == 0 {
		return nil
	}
	b := valid[0].rt.bindings[valid[0].stage]
	var last error
	err := e.deps.cfg.Consume.Retry.retrySince(p.hard, time.Now(), func(attempt int) error {
		if !held {
			if !e.deps.running.take(p.hard) {
				return context.Cause(p.hard)
			}
			held = true
		}
		last = e.invokeBatch(p, b, valid, attempt)
		return last
	}, func(err error) bool {
		if _, ok, _, _ := batchFailure(err, len(valid)); ok {
			return false // the handler named the record: isolate it, no retry of the batch
		}
		return retriableHandler(err)
	}, func(attempt int, err error, wait time.Duration) {
		e.deps.log.Warn("kavari: batch handler failed, retrying the batch", "handler", b.name, "topic", p.topic,
			"partition", p.id, "records", len(valid), "first_offset", valid[0].rec.Offset, "attempt", attempt, "wait", wait, "err", logErr(err))
		e.deps.running.give()
		held = false
		e.deps.health.retried.Add(1)
	})
	if err == nil {
		var again []*batchJob
		for _, bj := range valid {
			again = e.advance(p, bj, again)
		}
		return again
	}
	if p.hard.Err() != nil || last == nil {
		for _, bj := range valid {
			e.abandon(p, bj)
		}
		return nil
	}
	return e.settle(p, b, valid, last, true, &held)
}

// settle handles the failure err of a call of b on batch s: with
// BatchFailed(i) the records before i are done, record i is isolated and
// the rest come again; any other error bisects s: called (direct) says the
// error came from a call on exactly s, else s is only known to hold a
// failing record. It returns the records to queue again.
func (e *engine) settle(p *partition, b *binding, s []*batchJob, err error, called bool, held *bool) []*batchJob {
	var again []*batchJob
	var i int
	var inner error
	var ok, outside bool
	if called {
		i, ok, outside, inner = batchFailure(err, len(s))
	}
	if outside {
		e.deps.log.Warn("kavari: batch handler returned BatchFailed with an index outside its batch; treating it as a failure of the whole batch",
			"handler", b.name, "topic", p.topic, "partition", p.id, "records", len(s), "err", logErr(err))
	}
	if ok {
		for _, bj := range s[:i] {
			again = e.advance(p, bj, again)
		}
		s[i].alone, s[i].cause = true, inner
		return append(append(again, s[i]), s[i+1:]...)
	}
	if len(s) == 1 {
		s[0].alone = true
		if called {
			s[0].cause = err
		}
		return append(again, s[0])
	}
	// Bisect: call the first half once; when it succeeds, the failure is
	// in the second half, which is split in turn without calling it whole;
	// when it fails, it is split, and the second half comes again.
	h := len(s) / 2
	a, rest := s[:h], s[h:]
	if !*held {
		if !e.deps.running.take(p.hard) {
			for _, bj := range s {
				e.abandon(p, bj)
			}
			return nil
		}
		*held = true
	}
	errA := e.invokeBatch(p, b, a, 1)
	if p.hard.Err() != nil {
		for _, bj := range s {
			e.abandon(p, bj)
		}
		return nil
	}
	if errA == nil {
		for _, bj := range a {
			again = e.advance(p, bj, again)
		}
		return append(again, e.settle(p, b, rest, err, false, held)...)
	}
	return append(e.settle(p, b, a, errA, true, held), rest...)
}

// batchFailure finds the BatchFailed errors in err (a batch handler's for
// a batch of n records) and returns the lowest index and its error (made
// Permanent when err is); ok false when there is none, or when one names
// an index outside the batch (outside).
func batchFailure(err error, n int) (index int, ok, outside bool, inner error) {
	var found *BatchFailure
	var walk func(error)
	walk = func(err error) {
		for err != nil {
			if f, is := err.(*BatchFailure); is {
				if f.Index < 0 || f.Index >= n {
					outside = true
				} else if found == nil || f.Index < found.Index {
					found = f
				}
				return
			}
			switch x := err.(type) {
			case interface{ Unwrap() []error }:
				for _, e := range x.Unwrap() {
					walk(e)
				}
				return
			case interface{ Unwrap() error }:
				err = x.Unwrap()
			default:
				return
			}
		}
	}
	walk(err)
	if found == nil || outside {
		return 0, false, outside, nil
	}
	inner = found.Err
	if inner == nil {
		inner = errors.New("kavari: the batch handler named the record as failed (BatchFailed with a nil error)")
	}
	if !retriableHandler(err) && retriableHandler(inner) {
		inner = Permanent(inner)
	}
	return found.Index, true, false, inner
}

// invokeBatch runs one attempt of batch handler b on jobs, turning a panic
// into an error, and reports it to HookBatchAttempt.
func (e *engine) invokeBatch(p *partition, b *binding, jobs []*batchJob, attempt int) error {
	if !e.deps.hooks.batchObserved() {
		return e.callBatch(p, b, jobs, attempt)
	}
	a := BatchAttempt{Handler: b.name, Topic: p.topic, Partition: p.id, Offsets: make([]int64, len(jobs)), Attempt: attempt, Start: time.Now()}
	for i, bj := range jobs {
		a.Offsets[i] = bj.rec.Offset
	}
	a.Err = e.callBatch(p, b, jobs, attempt)
	a.Took = time.Since(a.Start)
	e.deps.hooks.onBatchAttempt(a)
	return a.Err
}

// callBatch runs one attempt of batch handler b on jobs, turning a panic
// into an error.
//
// The messages the attempt publishes with PublishAsync and its context
// are waited for before it counts (holding the run slot: one wait for the
// whole batch); one that failed fails the attempt, as for a handler of one
// record (asyncOuts).
func (e *engine) callBatch(p *partition, b *binding, jobs []*batchJob, attempt int) (err error) {
	outs := &asyncOuts{}
	var ctx context.Context = &batchCtx{Context: p.hard, jobs: jobs, attempt: attempt, b: b, outs: outs}
	defer func() {
		if oerr := outs.wait(p.hard); err == nil && oerr != nil {
			err = oerr
		}
	}()
	if t := e.deps.cfg.Consume.HandlerTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	h, err := e.deps.resolve(b)
	if err != nil {
		return err
	}
	msgs := make([]any, len(jobs))
	for i, bj := range jobs {
		msgs[i] = bj.msg
		e.deps.hooks.observeBatchRecord(bj.rec)
	}
	if e.deps.middleware != nil {
		mc := &batchMiddlewareCtx{batchCtx: batchCtx{Context: ctx, jobs: jobs, attempt: attempt, b: b, outs: outs}, h: h}
		return e.deps.middleware(mc, b.batchOf(msgs))
	}
	return b.callBatch(ctx, h, b.batchOf(msgs))
}

// batchMiddlewareCtx is a batch handler's context when middleware is
// installed: it also carries what the innermost call needs.
type batchMiddlewareCtx struct {
	batchCtx
	h any // the handler instance
}

func (c *batchMiddlewareCtx) Value(key any) any {
	switch key.(type) {
	case attemptKey:
		return c
	case batchKey:
		return &c.batchCtx
	case outsKey:
		return c.outs
	}
	return c.batchCtx.Context.Value(key)
}

// batchCtx is a batch handler's context: it answers BatchRecordFromContext.
type batchCtx struct {
	context.Context
	jobs    []*batchJob
	attempt int
	b       *binding
	outs    *asyncOuts // the attempt's PublishAsync messages
}

func (c *batchCtx) Value(key any) any {
	switch key.(type) {
	case batchKey:
		return c
	case outsKey:
		return c.outs
	}
	return c.Context.Value(key)
}
