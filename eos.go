package kavari

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Exactly-once consume → process → publish (Config.Consume.ExactlyOnce).
//
// The engine runs in windows. While a window is open, records are
// dispatched and handled as always (concurrently per key); every write a
// handler makes with its context (Publish, PublishBatch, PublishAsync, and
// the dead letters of its record) goes into the window's Kafka
// transaction; its publishes are sent without waiting for their acks
// (send; a dead letter waits for its own). When the window's interval has
// passed, no new handler attempt starts and those running finish (shut);
// the offsets of every record finished so far are taken (the completed
// prefix of each partition, and the completed offsets beyond it in the
// commit metadata), and the next window opens at once: its attempts run
// while the transaction ends, and their writes wait (ready) until the next
// transaction begins. Meanwhile the window waits once for the acks of its
// writes (awaitAcks: a failed write aborts it), and the transaction
// commits with the offsets taken: a record's outputs and its offset become
// visible together, or, when the transaction aborts, neither does and the
// records are handed over again (the partitions are rewound, which also
// ends the next window's attempts on them). A record still queued when a
// window closes belongs to the next one.

// ctxTxnKey is the context key of the window a handler's context belongs to.
type ctxTxnKey struct{}

// ctxRecKey is the context key of the record a handler's attempt handles.
type ctxRecKey struct{}

// recID names a record across its deliveries.
type recID struct {
	tp     transport.TopicPartition
	offset int64
}

// txnOf returns the window ctx's handler writes into, nil outside
// exactly-once handlers.
func txnOf(ctx context.Context) *window {
	w, _ := ctx.Value(ctxTxnKey{}).(*window)
	return w
}

// window is the exactly-once state of an engine.
type window struct {
	tx       transport.Transactional
	interval time.Duration
	hooks    []HookTransaction

	mu      sync.Mutex
	open    bool          // handlers may start attempts
	pending bool          // open while the last transaction ends: writes wait (ready) until the next begins
	running int           // attempts running in the window
	reopen  chan struct{} // closed when the window opens again, and when its transaction begins
	idle    chan struct{} // closed when running drops to 0 while the window is shut
	health  TransactionHealth

	// epoch numbers the transactions (from 1): a record whose attempt
	// wrote into the open one has job.wroteIn == epoch. doomed is set
	// when one of them failed after writing (a transaction cannot take
	// back a write, so the window aborts and the record comes again),
	// with why. Under mu.
	epoch  uint64
	doomed error
	// redo counts, per record, the windows its failed attempts aborted,
	// with the last error: at Consume.Retry.MaxAttempts it is
	// dead-lettered without another attempt. Under mu.
	redo    map[recID]int
	redoErr map[recID]error
	// counted are the records whose redo was counted in the open window
	// (once per window, whether the handler failed or its write did).
	// Under mu.
	counted map[recID]bool

	// A handler's writes are sent without waiting for their acks (send):
	// sending counts the writes not yet acknowledged, acked is closed when
	// it drops to 0 while the window's end waits (awaitAcks), and
	// sendFailed holds the records whose writes failed, with the first
	// error. Under mu.
	sending    int
	acked      chan struct{}
	sendFailed map[recID]error

	committed, aborted atomic.Int64
	produced           atomic.Int64  // records written in the open transaction
	done               chan struct{} // closed when the window loop ended
	final              chan struct{} // closed by finish: commit what finished, open no more
	finalOnce          sync.Once
}

func newWindow(tx transport.Transactional, interval time.Duration, hooks []Hook) *window {
	w := &window{tx: tx, interval: interval, reopen: make(chan struct{}), done: make(chan struct{}), final: make(chan struct{}),
		epoch: 1, redo: map[recID]int{}, redoErr: map[recID]error{},
		counted: map[recID]bool{}, sendFailed: map[recID]error{}}
	w.health.State = "closed"
	for _, h := range hooks {
		if th, ok := h.(HookTransaction); ok {
			w.hooks = append(w.hooks, th)
		}
	}
	return w
}

// transactionalID is the id of this member's transactions.
func (c *Config) transactionalID() string {
	suffix := c.Consume.InstanceID
	if suffix == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		suffix = hex.EncodeToString(b[:])
	}
	return c.Consume.ExactlyOnce.TransactionalIDPrefix + "-" + suffix
}

// enter waits until the window is open and counts an attempt in it; false
// when ctx ended first (the partition was revoked or lost, or Stop).
func (w *window) enter(ctx context.Context) bool {
	for {
		w.mu.Lock()
		if w.open {
			w.running++
			w.mu.Unlock()
			return true
		}
		ch := w.reopen
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// leave ends an attempt counted by enter.
func (w *window) leave() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running--
	if w.running == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
}

// shut closes the window and waits for the running attempts to finish, or
// for ctx to end (then false).
func (w *window) shut(ctx context.Context) bool {
	w.mu.Lock()
	w.open = false
	w.health.State = "committing"
	if w.running == 0 {
		w.mu.Unlock()
		return true
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}

// openUp opens the window (a transaction has begun).
func (w *window) openUp() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open, w.pending = true, false
	w.health.State = "open"
	close(w.reopen)
	w.reopen = make(chan struct{})
}

// openPending opens the next window while the last transaction ends:
// attempts may start, and their writes wait (ready) until openUp.
func (w *window) openPending() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.open, w.pending = true, true
	close(w.reopen)
	w.reopen = make(chan struct{})
}

// ready waits until the window's transaction has begun, so that a write
// goes into the transaction of the attempt that makes it; ctx's cause
// when ctx ended first (the partition was revoked or lost, or Stop). Every
// write comes from a running attempt, which the next shut waits for, so the
// transaction cannot end between ready and the write.
func (w *window) ready(ctx context.Context) error {
	for {
		w.mu.Lock()
		if !w.pending {
			w.mu.Unlock()
			return nil
		}
		ch := w.reopen
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// state notes the window's state when it stays closed.
func (w *window) state(s string) {
	w.mu.Lock()
	w.health.State = s
	w.mu.Unlock()
}

// snapshot is Health.Transaction.
func (w *window) snapshot() TransactionHealth {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := w.health
	h.Committed, h.Aborted = w.committed.Load(), w.aborted.Load()
	return h
}

// produce writes recs into the open transaction: a handler's publishes and
// dead letters. A handler's publishes are sent without waiting for their
// acks (send: the window's end waits for them, and a write that failed
// aborts the window); a dead letter waits for its ack, since its writer
// needs the outcome (a dead letter too large is rebuilt smaller).
func (w *window) produce(ctx context.Context, recs []*transport.Record) []error {
	err := ctx.Err()
	if err == nil {
		err = w.ready(ctx)
	}
	if err != nil {
		// The record's partition was revoked or lost, or Stop cut its
		// handler (before or while it waited for its transaction): a write
		// now could land in a later window's transaction without the
		// record's offset.
		errs := make([]error, len(recs))
		for i := range errs {
			errs[i] = &transport.ProduceError{Kind: transport.Permanent, Err: fmt.Errorf("kavari: exactly-once: the handler's context ended: %w", err)}
		}
		return errs
	}
	j, ok := ctx.Value(ctxRecKey{}).(*job)
	if !ok {
		w.produced.Add(int64(len(recs)))
		return w.tx.Produce(ctx, recs)
	}
	w.send(ctx, j, recs, nil)
	for _, r := range recs { // not known until acknowledged: the receipt says -1
		r.Partition, r.Offset = -1, -1
	}
	return nil
}

// send writes recs, written by the handler of j's record, into the open
// transaction without waiting for their acks; after (when not nil) runs
// with each record's outcome. A write that fails dooms the window and
// counts a failed attempt of rec (awaitAcks).
func (w *window) send(ctx context.Context, j *job, recs []*transport.Record, after func(i int, partition int32, offset int64, err error)) {
	w.produced.Add(int64(len(recs)))
	rec := j.rec
	id := recID{transport.TopicPartition{Topic: rec.Topic, Partition: rec.Partition}, rec.Offset}
	w.mu.Lock()
	j.wroteIn = w.epoch
	w.sending += len(recs)
	w.mu.Unlock()
	// The handler's context ends when it returns (HandlerTimeout) while its
	// writes may still be buffered: they must not be cancelled then. A
	// revoke or Stop aborts the window instead.
	w.tx.Send(context.WithoutCancel(ctx), recs, func(i int, partition int32, offset int64, err error) {
		if after != nil {
			after(i, partition, offset, err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if _, seen := w.sendFailed[id]; !seen {
				w.sendFailed[id] = err
			}
		}
		w.sending--
		if w.sending == 0 && w.acked != nil {
			close(w.acked)
			w.acked = nil
		}
	})
}

// awaitAcks waits, once the window is shut, until every write sent in it
// was acknowledged or failed, and returns why the window is doomed when one
// failed (or ctx ended first). A record whose writes failed counts a failed
// attempt, as a handler that failed after writing does (failed), once per
// window (counted: the window's records counted so far): the window aborts
// and the record comes again, and after Consume.Retry.MaxAttempts such
// windows it is dead-lettered instead of aborting every window. No write of
// the next window is sent meanwhile: they wait for its transaction
// (ready).
func (w *window) awaitAcks(ctx context.Context, counted map[recID]bool) (doomed error) {
	w.mu.Lock()
	if w.sending > 0 {
		if w.acked == nil {
			w.acked = make(chan struct{})
		}
		acked := w.acked
		w.mu.Unlock()
		select {
		case <-acked:
		case <-ctx.Done():
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	if w.sending > 0 {
		doomed = fmt.Errorf("kavari: %d writes of the transaction were not acknowledged in time: %w", w.sending, context.Cause(ctx))
	}
	for id, err := range w.sendFailed {
		if doomed == nil {
			doomed = fmt.Errorf("kavari: a handler's write into the transaction failed (%s/%d@%d): %w", id.tp.Topic, id.tp.Partition, id.offset, err)
		}
		if !counted[id] {
			counted[id] = true
			w.redo[id]++
			w.redoErr[id] = err
		}
	}
	clear(w.sendFailed)
	return doomed
}

// finish makes the window loop end its transaction (committing what
// finished) and open no other, and waits for that, bounded by ctx.
func (w *window) finish(ctx context.Context) {
	w.finalOnce.Do(func() { close(w.final) })
	select {
	case <-w.done:
	case <-ctx.Done():
	}
}

// beginFailedLogEvery is how often the window loop logs that it still
// cannot begin a transaction.
const beginFailedLogEvery = 10 * time.Second

// windowLoop runs the windows until Stop: begin a transaction, open the
// window for Interval, shut it, commit. It replaces commitLoop under
// exactly-once.
func (e *engine) windowLoop() {
	w := e.eos
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	began := false
	var failing, logged time.Time // since when Begin fails, when that was last logged
	for {
		if !began {
			if err := w.tx.Begin(); err != nil {
				// No record is handled until a transaction begins: say so,
				// and why, at once and then every beginFailedLogEvery.
				w.state("closed")
				e.deps.health.note(err)
				now := time.Now()
				if failing.IsZero() {
					failing = now
				}
				if now.Sub(logged) >= beginFailedLogEvery { // a zero logged is long ago
					logged = now
					e.deps.log.Warn("kavari: exactly-once: cannot begin a transaction; no record is handled until one begins", "for", now.Sub(failing).Round(time.Second), "err", err)
				}
			} else {
				if !failing.IsZero() {
					e.deps.log.Info("kavari: exactly-once: transactions begin again", "after", time.Since(failing).Round(time.Second))
					failing, logged = time.Time{}, time.Time{}
				}
				began = true
				w.openUp()
			}
		}
		final := false
		select {
		case <-t.C:
		case <-w.final:
			final = true
		case <-e.runDone:
			final = true
		}
		if !began {
			if final {
				return
			}
			continue
		}
		// Stop's drain budget ends hardCtx: running handlers are cancelled.
		// Handlers still running then (they ignore their context) may
		// write into the transaction while it ends, without their
		// offsets: it aborts instead of committing.
		if !w.shut(e.deps.hardCtx) {
			w.mu.Lock()
			if w.doomed == nil {
				w.doomed = errors.New("kavari: handlers were still running when Stop's drain budget ended")
			}
			w.mu.Unlock()
			final = true
		}
		if !e.endWindow(final) {
			w.openUp() // nothing to commit: the transaction goes on
			continue
		}
		began = false
		if final {
			w.state("closed")
			return
		}
	}
}

// endWindow commits the window's transaction with the offsets of every
// record finished in it; when it cannot, the transaction aborts and the
// transport rewinds the partitions (Lost, then Assigned at the committed
// offsets), so their records are handled again. False when the window
// finished nothing and wrote nothing: the transaction stays open (an empty
// one is not worth a round trip to the coordinator), unless final.
func (e *engine) endWindow(final bool) bool {
	w := e.eos
	timeout := 30 * time.Second
	if final {
		timeout = max(e.deps.stopGrace(), time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The window is shut: every record it finished is finished, and no
	// attempt runs. Its offsets are taken now, before the next window's
	// attempts may finish records of their own.
	gen, ps := e.assigned()
	e.commitMu.Lock()
	var offsets []transport.Offset
	var moved []*partition
	for _, p := range ps {
		if o, ok := e.toCommit(p); ok {
			offsets = append(offsets, o)
			moved = append(moved, p)
		}
	}
	produced := w.produced.Load()
	if len(offsets) == 0 && produced > 0 {
		// Writes but no offset moved: commit the offsets as they are, so
		// that the transaction carries the group's offsets.
		for _, p := range ps {
			if p.committed >= 0 {
				offsets = append(offsets, transport.Offset{TopicPartition: p.tp, Offset: p.committed, Metadata: p.committedMeta})
				moved = append(moved, p)
			}
		}
	}
	e.commitMu.Unlock()
	w.mu.Lock()
	doomed := w.doomed
	w.doomed = nil
	w.epoch++ // what was written, was written in the transaction that ends now
	counted := w.counted
	w.counted = map[recID]bool{}
	sending := w.sending
	w.mu.Unlock()
	if doomed == nil && len(offsets) == 0 && produced == 0 && sending == 0 && !final {
		return false
	}
	if !final {
		w.openPending()
	}
	if err := w.awaitAcks(ctx, counted); doomed == nil {
		doomed = err
	}
	w.produced.Store(0)
	start := time.Now()
	// End calls Lost and Assigned after an abort: commitMu is not held.
	ok, err := w.tx.End(ctx, gen, offsets, doomed == nil)
	if !ok && err == nil {
		err = doomed
	}
	if ok {
		e.commitMu.Lock()
		for i, p := range moved {
			p.committed = offsets[i].Offset
			p.lag.committed.Store(p.committed)
			p.committedMeta = offsets[i].Metadata
			for len(p.inherited) > 0 && p.inherited[0].from+p.inherited[0].n <= p.committed {
				p.inherited = p.inherited[1:]
			}
		}
		e.commitMu.Unlock()
		w.mu.Lock()
		for i, p := range moved { // records committed need no count any more
			for id := range w.redo {
				if id.tp == p.tp && id.offset < offsets[i].Offset {
					delete(w.redo, id)
					delete(w.redoErr, id)
				}
			}
		}
		w.mu.Unlock()
		w.committed.Add(1)
		if len(offsets) > 0 {
			e.deps.health.committed()
		}
	} else {
		if err == nil {
			err = errors.New("kavari: transaction aborted")
		}
		w.aborted.Add(1)
		w.mu.Lock()
		w.health.LastAbort, w.health.LastAbortAt = err.Error(), time.Now()
		w.mu.Unlock()
		e.deps.health.note(err)
		e.deps.log.Warn("kavari: exactly-once transaction aborted; its records are handled again", "err", err)
	}
	if len(offsets) > 0 || !ok {
		e.deps.hooks.onCommitted(offsets, time.Since(start), err)
	}
	if len(w.hooks) > 0 {
		ev := TransactionEvent{Committed: ok, Offsets: offsetMap(offsets), Duration: time.Since(start), Err: err}
		for _, h := range w.hooks {
			h.OnTransaction(ev)
		}
	}
	return true
}

// checkExactlyOnce rejects what exactly-once cannot serve: batch handlers.
func checkExactlyOnce(table *routeTable) error {
	if len(table.batchTopics()) > 0 {
		return fmt.Errorf("kavari: Consume.ExactlyOnce: batch handlers (RegisterBatch) are not supported in exactly-once mode")
	}
	return nil
}

// revokedInWindow is Revoked under exactly-once: the open transaction holds
// outputs of the revoked partitions' records, and it cannot commit any more
// (the rebalance makes it abort), so their handlers are cancelled at once
// and nothing is committed: the next owner handles the records again, and
// their outputs here never become visible.
func (e *engine) revokedInWindow(ps []*partition) {
	for _, p := range ps {
		p.stopFetch()
		p.hardCancel()
	}
	for _, p := range ps {
		<-p.feederDone
	}
	e.release(ps)
	e.deps.hooks.onRevoked(ps, false)
}

// produce writes recs: into the window's transaction when ctx is an
// exactly-once handler's (its publishes and dead letters), else with the
// publisher's producer.
func (p *publisher) produce(ctx context.Context, recs []*transport.Record) []error {
	if w := txnOf(ctx); w != nil {
		return w.produce(ctx, recs)
	}
	return p.prod.Produce(ctx, recs)
}

// publishInWindow is PublishAsync with an exactly-once handler's context:
// the message is sent into the handler's transaction before it returns,
// and callback runs when it is acknowledged or failed (before the window
// ends), on a goroutine of the transactional client's.
func (k *Client) publishInWindow(ctx context.Context, msg Msg, callback func(Receipt, error)) {
	w := txnOf(ctx)
	src, ok := ctx.Value(ctxRecKey{}).(*job)
	if !ok || ctx.Err() != nil || k.pub.isClosed() {
		// Not a handler's attempt, or one that ended: Publish says why.
		r, err := k.Publish(ctx, msg)
		k.asyncDone(callback, r, err)
		return
	}
	rec, err := k.pub.encode(ctx, msg)
	if err != nil {
		k.asyncDone(callback, receiptOf(msg, nil, false), err)
		return
	}
	if err := w.ready(ctx); err != nil {
		err = publishErrorOf(&rec, &transport.ProduceError{Kind: transport.Permanent, Err: fmt.Errorf("kavari: exactly-once: the handler's context ended: %w", err)})
		k.asyncDone(callback, receiptOf(msg, &rec, false), err)
		return
	}
	start := time.Now()
	w.send(ctx, src, []*transport.Record{&rec}, func(_ int, partition int32, offset int64, err error) {
		rec.Partition, rec.Offset = partition, offset // rec is this callback's alone now
		if err != nil {
			err = publishErrorOf(&rec, err)
		}
		if k.pub.hooks != nil {
			k.pub.hooks.publishAfter(ctx, nil, []*transport.Record{&rec}, start, []error{err})
		}
		k.asyncDone(callback, receiptOf(msg, &rec, err == nil), err)
	})
}

// asyncDone runs an exactly-once PublishAsync's callback, or logs its
// failure when there is none.
func (k *Client) asyncDone(callback func(Receipt, error), r Receipt, err error) {
	if callback != nil {
		callback(r, err)
	} else if err != nil {
		k.log.Error("kavari: exactly-once PublishAsync failed", "err", err)
	}
}

// failed is called with each failed attempt's error: when the attempt's
// record wrote into the transaction, the window is doomed (its writes
// cannot be taken back) and the error becomes permanent, so the record is
// not retried in place: the transaction aborts and the record comes again.
func (w *window) failed(j *job, err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if j.wroteIn != w.epoch {
		return err
	}
	rec := j.rec
	if w.doomed == nil {
		w.doomed = fmt.Errorf("kavari: a handler failed after writing into the transaction (%s/%d@%d): %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	id := recID{transport.TopicPartition{Topic: rec.Topic, Partition: rec.Partition}, rec.Offset}
	if !w.counted[id] {
		w.counted[id] = true
		w.redo[id]++
		w.redoErr[id] = err
	}
	return &permanentError{err: err}
}

// dooms reports whether the failed attempt of j's record doomed the
// window.
func (w *window) dooms(j *job) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.doomed != nil && j.wroteIn == w.epoch
}

// eosGaveUp dead-letters j's record, without another attempt, once its
// failed attempts aborted Consume.Retry.MaxAttempts windows (the retries
// of a record whose attempts write before they fail). True when j is
// finished so.
func (e *engine) eosGaveUp(p *partition, j *job) bool {
	w := e.eos
	id := recID{p.tp, j.rec.Offset}
	w.mu.Lock()
	n, last := w.redo[id], w.redoErr[id]
	w.mu.Unlock()
	max := e.deps.cfg.Consume.Retry.MaxAttempts
	if n == 0 || max <= 0 || n < max {
		return false
	}
	herr := &HandlerError{Attempts: n, Err: last}
	e.deps.log.Error("kavari: handler failed after writing in every window it ran in, dead-lettering", "err", logErr(herr), "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset)
	// The count stays until a commit passes the record (endWindow): the
	// window of this dead letter may still abort.
	if !e.deadLetter(p, j, KindHandler, "", n, herr) {
		return true
	}
	e.deps.health.handled.Add(1)
	e.done(p, j)
	return true
}
