package kavari

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Handling one record on its lane: decode, each handler's attempts with the
// consumer RetryPolicy in place, dead letters that always fit, and what
// Health says of a record that cannot complete. This file exports nothing.

// process decodes and handles one record, retrying and dead-lettering as
// needed. The record is marked done only when it was handled, dead-lettered or
// deliberately skipped; otherwise it stays uncommitted and is redelivered.
//
// lane is the record's lane, when it runs on one (runLane): then a record
// whose last handler returned with messages of PublishAsync not yet
// acknowledged is parked instead of waited for (engine.park), and process
// returns true: the lane stays busy, and park goes on with it once the
// messages settled. r, when not nil, resumes a parked record whose messages
// failed: its last handler's first attempt failed with r.err.
func (e *engine) process(p *partition, j *job, lane *laneRef, r *resume) (parked bool) {
	own := true // false once a move to a retry tier (moveOn) or park took the record over
	defer func() {
		if own {
			e.deps.buf.release(p)
			p.inflight.Done()
		}
	}()
	if p.hard.Err() != nil {
		return
	}
	if w := e.eos; w != nil { // exactly-once: the attempts run in one window (eos.go)
		if !w.enter(p.hard) {
			return
		}
		defer w.leave()
	}
	// Records queued behind a busy key hold a buffer slot but no run slot,
	// so other keys keep all MaxInFlight handlers busy. A record waiting
	// between retries or for its move to a retry tier gives its run slot
	// back too (held says).
	if !e.deps.running.take(p.hard) {
		return
	}
	held := true
	defer func() {
		if held {
			e.deps.running.give()
		}
	}()
	// attempt runs one attempt of b, taking a run slot first if the
	// record gave its own back, and then waits, without a run slot, for
	// the messages the attempt published with PublishAsync and its
	// context: one that failed fails the attempt.
	// With mayPark, an attempt that succeeded with messages pending
	// returns errParked instead of waiting for them.
	attempt := func(b *binding, msg any, n int, mayPark bool) error {
		if !held {
			if !e.deps.running.take(p.hard) {
				return context.Cause(p.hard)
			}
			held = true
		}
		err := e.invoke(p, b, msg, j, n)
		if o := j.outs.Load(); o != nil {
			if o.pending() {
				e.deps.running.give() // the record waits, it does not run
				held = false
				if err == nil && mayPark {
					return errParked
				}
			}
			if oerr := o.wait(p.hard); err == nil && oerr != nil {
				err = oerr
			}
		}
		return err
	}
	var rs *retryState // nil unless the record is in a retry topic
	if p.tier {
		rs = e.retry.stateOf(j.rec)
	}
	var rt *route
	var msg any
	var err error
	if r != nil {
		rt, msg = r.rt, r.msg
	} else {
		rt, msg, err = e.table.decodeOn(j.rec, rs.topic(j.rec))
	}
	if err != nil {
		var de *DecodeError
		errors.As(err, &de)
		if de.Kind == KindUnknownType && e.deps.cfg.Consume.SkipUnknownTypes {
			e.deps.log.Info("kavari: skipping record of unknown type (Consume.SkipUnknownTypes)", "err", logErr(err))
			e.done(p, j)
			return
		}
		e.deps.log.Warn("kavari: poison record, dead-lettering", "err", logErr(err))
		if e.deadLetter(p, j, de.Kind, "", 1, err) {
			e.done(p, j)
		}
		return
	}
	if len(rt.bindings) == 0 {
		// A type declared without handlers: this service publishes it but
		// does not consume it.
		e.done(p, j)
		return
	}
	if e.eos != nil && e.eosGaveUp(p, j) {
		return
	}
	rs.keepHandlers(rt.bindings, e.deps.log)
	var failed []tierFailure // handlers whose failures go to a retry tier
	for i, b := range rt.bindings {
		if !rs.runs(b.name) {
			continue // a retry tier runs the handlers that failed only
		}
		if r != nil && i < r.idx {
			continue // ran before the record was parked
		}
		// The first attempt runs directly; the retry machinery is set up
		// only when it fails.
		start := time.Now()
		var first error
		if r != nil && i == r.idx {
			start, first = r.start, r.err
		} else {
			// Only the last handler parks: the others run after it.
			mayPark := lane != nil && rs == nil && e.eos == nil && i == len(rt.bindings)-1
			first = attempt(b, msg, rs.attempt(), mayPark)
			if first == errParked {
				own = false
				e.park(p, j, lane, resume{rt: rt, msg: msg, idx: i, start: start})
				return true
			}
		}
		if first == nil {
			continue
		}
		if rs != nil {
			// One attempt per retry tier.
			herr := &HandlerError{Handler: b.name, Attempts: rs.attempt(), Err: first}
			if retriableHandler(first) {
				failed = append(failed, tierFailure{handler: b.name, attempts: rs.attempt(), err: herr})
				continue
			}
			e.deps.log.Error("kavari: handler gave up, dead-lettering", "err", logErr(herr), "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset)
			if !e.deadLetter(p, j, KindHandler, b.name, rs.attempt(), herr) {
				return
			}
			continue
		}
		attempts := 0
		err := e.deps.cfg.Consume.Retry.retrySince(p.hard, start, func(n int) error {
			attempts = n
			if n == 1 {
				return first
			}
			return attempt(b, msg, n, false)
		}, retriableHandler, func(n int, err error, wait time.Duration) {
			e.deps.log.Warn("kavari: handler failed, retrying", "handler", b.name, "topic", j.rec.Topic,
				"partition", j.rec.Partition, "offset", j.rec.Offset, "attempt", n, "wait", wait, "err", logErr(err))
			if held {
				e.deps.running.give() // free while waiting; the lane keeps the key's order
				held = false
			}
			e.deps.health.retried.Add(1)
			e.deps.hooks.onRetry(j.rec, n, b.name, wait, err)
		})
		if err == nil {
			continue
		}
		if p.hard.Err() != nil {
			return // interrupted by revoke or Stop: leave it for redelivery
		}
		if e.eos != nil && e.eos.dooms(j) {
			return // its failed attempt wrote into the transaction: the window aborts, the record comes again
		}
		herr := &HandlerError{Handler: b.name, Attempts: attempts, Err: err}
		if e.retry != nil && !rt.inPlace && retriableHandler(err) {
			failed = append(failed, tierFailure{handler: b.name, attempts: attempts, err: herr})
			continue
		}
		e.deps.log.Error("kavari: handler gave up, dead-lettering", "err", logErr(herr), "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset)
		if !e.deadLetter(p, j, KindHandler, b.name, attempts, herr) {
			return
		}
	}
	if failed != nil {
		// The record leaves its key's order for a retry tier: its move
		// waits for a broker write beside the lane, which goes on with the
		// key's next record at once. The move keeps the record's buffer
		// slot and the partition's commits wait for it; it holds no run
		// slot (the write waits, it does not run).
		if held {
			e.deps.running.give()
			held = false
		}
		own = false
		go e.moveOn(p, j, rs, failed)
		return
	}
	e.deps.health.handled.Add(1)
	e.done(p, j)
	return false
}

// errParked is what process's attempt returns for an attempt that
// succeeded with messages still pending, when it may park.
var errParked = errors.New("kavari: parked")

// laneRef is the lane a record runs on (runLane): its key, and whether
// records of the key queue behind it.
type laneRef struct {
	key     []byte
	ordered bool
}

// resume is where a parked record goes on (process): its last handler's
// first attempt, which began at start, failed with err.
type resume struct {
	rt    *route
	msg   any
	idx   int // the handler's index in rt.bindings
	start time.Time
	err   error
}

// park takes over j's record, whose last handler returned with messages
// of PublishAsync pending (process returned true): no goroutine waits for
// them. When they are all acknowledged the record is done; when one
// failed, the handler's retries run on a worker (process with r); when
// p's handlers are cut (p.hard: the drain in feed calls cutParked) first,
// the record stays open. Each way, unpark then releases what process held
// for the record and goes on with its lane.
func (e *engine) park(p *partition, j *job, lane *laneRef, r resume) {
	p.mu.Lock()
	if p.parked == nil {
		p.parked = map[*job]parkedRec{}
	}
	p.parked[j] = parkedRec{lane: *lane, r: r}
	p.mu.Unlock()
	if p.hard.Err() != nil {
		e.unpark(p, j, nil, true) // cut before it was parked: cutParked may have run
	}
	j.outs.Load().then(func(err error) { e.unpark(p, j, err, false) })
}

// parkedRec is what park keeps of a parked record.
type parkedRec struct {
	lane laneRef
	r    resume
}

// unpark goes on with j's parked record, once: its messages settled with
// err (nil: all acknowledged), or its handlers were cut.
func (e *engine) unpark(p *partition, j *job, err error, cut bool) {
	p.mu.Lock()
	pr, ok := p.parked[j]
	delete(p.parked, j)
	p.mu.Unlock()
	if !ok {
		return
	}
	switch {
	case !cut && err != nil:
		r := pr.r
		r.err = err
		e.deps.pool.submit(task{e: e, p: p, key: pr.lane.key, ordered: pr.lane.ordered, j: j, r: &r})
		return // the worker releases the record and goes on with the lane
	case !cut:
		e.deps.health.handled.Add(1)
		e.done(p, j)
	}
	e.deps.buf.release(p)
	p.inflight.Done()
	e.nextInLane(p, &pr.lane)
}

// cutParked leaves p's parked records open: p's handlers were cut.
func (e *engine) cutParked(p *partition) {
	p.mu.Lock()
	js := make([]*job, 0, len(p.parked))
	for j := range p.parked {
		js = append(js, j)
	}
	p.mu.Unlock()
	for _, j := range js {
		e.unpark(p, j, nil, true)
	}
}

// nextInLane hands the record queued next on lane (ordered) to a worker,
// or ends the lane when none is.
func (e *engine) nextInLane(p *partition, lane *laneRef) {
	if !lane.ordered {
		return
	}
	lk := laneKey(lane.key)
	p.mu.Lock()
	q := p.lanes[lk]
	if len(q) == 0 {
		delete(p.lanes, lk)
		p.mu.Unlock()
		return
	}
	next := q[0]
	q[0] = nil
	p.lanes[lk] = q[1:]
	p.mu.Unlock()
	e.deps.pool.submit(task{e: e, p: p, key: lane.key, ordered: true, j: next})
}

// moveOn moves j's record on after its handlers failed it (retryLater) and
// finishes it once that was acknowledged; it releases what process held
// for the record (its buffer slot, the partition's count of records in
// flight). A move that did not succeed before the partition's drain budget
// ended leaves the record open: it comes again.
func (e *engine) moveOn(p *partition, j *job, rs *retryState, failed []tierFailure) {
	defer p.inflight.Done()
	defer e.deps.buf.release(p)
	ok, moved := e.retryLater(p, j, rs, failed)
	if !ok {
		return
	}
	if !moved { // dead-lettered after the last tier
		e.deps.health.handled.Add(1)
	}
	e.done(p, j) // a moved record counts as handled once it is finished in its tier
}

// invoke runs one attempt of handler b on msg, turning a panic into an error.
func (e *engine) invoke(p *partition, b *binding, msg any, j *job, attempt int) (err error) {
	if b.batch {
		return e.invokeBatchOf1(p, b, msg, j, attempt)
	}
	var ctx context.Context
	var mc *middlewareCtx
	if e.deps.middleware == nil {
		if attempt == 1 && (j.ctx.b == nil || j.ctx.b == b) {
			// The job's context serves its first handler's first attempt;
			// a later handler gets its own, so that a context the first one
			// kept keeps naming it.
			j.ctx.b = b
			ctx = &j.ctx
		} else {
			ctx = &handlerCtx{Context: p.hard, j: j, attempt: attempt, b: b}
		}
	} else {
		mc = &middlewareCtx{handlerCtx: handlerCtx{Context: p.hard, j: j, attempt: attempt, b: b}}
		ctx = mc
	}
	if t := e.deps.cfg.Consume.HandlerTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
		if err != nil && e.eos != nil {
			err = e.eos.failed(j, err)
		}
	}()
	h, err := e.deps.resolve(b)
	if err != nil {
		return err
	}
	// A handler that returned nil succeeded, even past HandlerTimeout: the
	// timeout only cancels its context.
	if mc != nil {
		mc.h = h
		return e.deps.middleware(ctx, msg)
	}
	return b.call(ctx, h, msg)
}

// invokeBatchOf1 runs one attempt of batch handler b on j's record alone (a
// record in a retry tier: tier partitions have no batch queue), in a batch
// of one; the error a BatchFailed of that record carries is the attempt's.
func (e *engine) invokeBatchOf1(p *partition, b *binding, msg any, j *job, attempt int) error {
	bj := &batchJob{msg: msg}
	bj.rec, bj.seq = j.rec, j.seq
	err := e.invokeBatch(p, b, []*batchJob{bj}, attempt)
	if i, ok, _, inner := batchFailure(err, 1); ok && i == 0 {
		return inner
	}
	return err
}

// handlerCtx is a handler's context: it answers RecordFromContext, building
// the Record only when a handler asks for it.
type handlerCtx struct {
	context.Context
	j       *job // the record's
	attempt int
	b       *binding // the handler of the attempt: Record.Handler
}

func (c *handlerCtx) Value(key any) any {
	switch key.(type) {
	case ctxRecKey: // exactly-once: whose writes (eos.go)
		return c.j
	case outsKey: // at-least-once: what the record waits for
		return c.j.outsOf()
	}
	if _, ok := key.(recordKey); ok {
		var name string
		if c.b != nil {
			name = c.b.name
		}
		return recordOf(c.j.rec, c.attempt, name)
	}
	return c.Context.Value(key)
}

func retriableHandler(err error) bool {
	var p *permanentError
	return !errors.As(err, &p)
}

// dlqRetry retries dead-letter writes until they succeed or the generation's
// drain budget ends: a record is never committed unless handled or dead-lettered.
var dlqRetry = RetryPolicy{Strategy: Exponential, BaseDelay: 200 * time.Millisecond, MaxDelay: 5 * time.Second, MaxAttempts: -1}

// deadLetter writes j's dead letter, retrying until it is acknowledged (true)
// or the drain budget ends (false). A dead letter the broker refuses as too
// large is rebuilt in the next smaller form (dlForm), never resent unchanged;
// when even the smallest is too large it returns false at once: the record
// stays open, so partition p holds there (it is redelivered to the next
// owner), and Health says why.
func (e *engine) deadLetter(p *partition, j *job, kind ErrorKind, handler string, attempts int, cause error) bool {
	src := e.retry.source(j.rec) // a retry topic's record: as its main topic's
	topic := src.Topic + e.deps.cfg.Topics.DeadLetterSuffix
	form := dlFull
	rec := deadLetterForm(src, topic, kind, handler, attempts, cause, form)
	// Known too large for the publisher: skip the forms it would refuse.
	for limit := e.deps.cfg.Publish.MaxMessageBytes; limit > 0 && form < dlSmallest && recordSize(&rec) > limit; {
		form++
		rec = deadLetterForm(src, topic, kind, handler, attempts, cause, form)
	}
	var last error
	err := dlqRetry.retry(p.hard, func(int) error {
		for {
			errs := e.deps.write(p.hard, []*transport.Record{&rec})
			if errs == nil {
				return nil
			}
			last = errs[0]
			if !tooLarge(last) {
				p.setStuck(j.rec.Offset, fmt.Sprintf("kavari: dead letter of offset %d cannot be written to %s: %s", j.rec.Offset, topic, logErr(last)))
				return last
			}
			if form == dlSmallest {
				return Permanent(last)
			}
			form++
			e.deps.log.Warn("kavari: dead letter too large, leaving out more of the record", "topic", topic, "offset", j.rec.Offset, "size", recordSize(&rec), "err", logErr(last))
			rec = deadLetterForm(src, topic, kind, handler, attempts, cause, form)
		}
	}, retriableHandler, func(attempt int, err error, wait time.Duration) {
		e.deps.log.Error("kavari: dead-letter write failed, retrying", "topic", topic, "attempt", attempt, "wait", wait, "err", logErr(err))
	})
	if err == nil {
		p.setStuck(j.rec.Offset, "")
		e.deps.health.deadLettered.Add(1)
		e.deps.hooks.onDeadLettered(j.rec, attempts, kind, handler, cause)
		return true
	}
	if !retriableHandler(err) {
		p.setStuck(j.rec.Offset, fmt.Sprintf("kavari: dead letter of offset %d is too large for %s even without value and original headers (%d bytes): the partition holds at this record until it is redelivered: %s",
			j.rec.Offset, topic, recordSize(&rec), logErr(last)))
		e.deps.log.Error("kavari: dead letter cannot be written; not committing past the record", "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset, "err", logErr(last))
	}
	return false
}

// asyncOuts counts the messages the handlers of one record published with
// PublishAsync and their context, at-least-once (under exactly-once they
// are in the transaction instead): the record completes only once they are
// acknowledged, and one that failed fails the attempt that published it
// (engine.process). A message published after the last attempt returned
// (from a goroutine the handler left running) is sent, but nothing waits
// for it.
type asyncOuts struct {
	mu   sync.Mutex
	n    int             // published, not settled
	err  error           // the first failure since the last wait
	wake chan struct{}   // closed when n reaches 0, while wait waits
	next func(err error) // called once when n reaches 0 (then), with err
}

// outsKey is the context key of the *asyncOuts a handler's PublishAsync
// counts its message in.
type outsKey struct{}

// outsOf returns the counter of j's messages, making it at the first.
func (j *job) outsOf() *asyncOuts {
	if o := j.outs.Load(); o != nil {
		return o
	}
	j.outs.CompareAndSwap(nil, &asyncOuts{})
	return j.outs.Load()
}

func (o *asyncOuts) add() {
	o.mu.Lock()
	o.n++
	o.mu.Unlock()
}

// settle notes the outcome of a message add counted.
func (o *asyncOuts) settle(err error) {
	o.mu.Lock()
	o.n--
	if err != nil && o.err == nil {
		o.err = err
	}
	if o.n > 0 {
		o.mu.Unlock()
		return
	}
	if o.wake != nil {
		close(o.wake)
		o.wake = nil
	}
	next := o.next
	o.next = nil
	if next == nil {
		o.mu.Unlock()
		return
	}
	err = o.take()
	o.mu.Unlock()
	next(err) // on the publisher's goroutine that settled the last message
}

// then calls next with what wait would return once every message counted
// so far settled: at once when none is pending. Instead of wait.
func (o *asyncOuts) then(next func(err error)) {
	o.mu.Lock()
	if o.n > 0 {
		o.next = next
		o.mu.Unlock()
		return
	}
	err := o.take()
	o.mu.Unlock()
	next(err)
}

// take returns and clears the first failure, as wait's error; under mu.
func (o *asyncOuts) take() error {
	err := o.err
	o.err = nil
	if err != nil {
		return fmt.Errorf("kavari: a message the handler published with PublishAsync was not written: %w", err)
	}
	return nil
}

func (o *asyncOuts) pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n > 0
}

// wait waits until every message counted so far settled and returns the
// first failure since the last wait, or the cause of
// ctx when it ended first (the record is then left open).
func (o *asyncOuts) wait(ctx context.Context) error {
	o.mu.Lock()
	if o.n > 0 {
		if o.wake == nil {
			o.wake = make(chan struct{})
		}
		wake := o.wake
		o.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		o.mu.Lock()
	}
	err := o.take()
	o.mu.Unlock()
	return err
}

// setStuck records why the record at offset cannot complete, for Health; an
// empty reason clears it.
func (p *partition) setStuck(offset int64, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if reason == "" {
		delete(p.stuck, offset)
		return
	}
	if p.stuck == nil {
		p.stuck = map[int64]string{}
	}
	p.stuck[offset] = reason
}

// stuckReason returns the reason recorded for the lowest offset, if any.
func (p *partition) stuckReason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	first, reason := int64(-1), ""
	for off, r := range p.stuck {
		if first < 0 || off < first {
			first, reason = off, r
		}
	}
	return reason
}
