package kavari

import (
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// publisher writes through the transport's Producer and owns the
// PublishAsync queue.
type publisher struct {
	cfg    *Config
	enc    *encoder
	prod   transport.Producer
	log    func(msg string, args ...any)
	mu     sync.Mutex // guards closed
	closed bool
	// queues feed the async writers, one each; a key always goes to the
	// same writer so that its messages stay in order.
	queues  []*asyncQueue
	writers writerIDs     // the writers' goroutine ids
	next    atomic.Uint64 // round robin for messages without a key
	wg      sync.WaitGroup
	// bg is the context of async writes; abort ends it when close gives up.
	bg    context.Context
	abort context.CancelFunc
	hooks *hooks // nil when none is installed
	// failedNoCallback counts the async messages that failed with a nil
	// callback (Health.AsyncFailedNoCallback).
	failedNoCallback atomic.Int64
}

type asyncItem struct {
	ctx context.Context
	msg Msg
	rec transport.Record
	cb  func(Receipt, error)
}

func newPublisher(cfg *Config, enc *encoder, prod transport.Producer) *publisher {
	p := &publisher{
		cfg:  cfg,
		enc:  enc,
		prod: prod,
		log:  func(msg string, args ...any) { cfg.Logger.Warn(msg, args...) },
	}
	p.bg, p.abort = context.WithCancel(context.Background())
	per := max(1, cfg.Publish.AsyncQueue/cfg.Publish.AsyncWorkers)
	p.writers.ids = make([]atomic.Int64, cfg.Publish.AsyncWorkers)
	for i := 0; i < cfg.Publish.AsyncWorkers; i++ {
		q := newAsyncQueue(per)
		p.queues = append(p.queues, q)
		p.wg.Add(1)
		go p.asyncLoop(q, &p.writers.ids[i])
	}
	return p
}

// publishOne encodes, validates and writes msg, retrying with the publish
// retry policy.
func (p *publisher) publishOne(ctx context.Context, msg Msg) (Receipt, error) {
	if p.isClosed() {
		return receiptOf(msg, nil, false), ErrClosed
	}
	rec, err := p.encode(ctx, msg)
	if err != nil {
		return receiptOf(msg, nil, false), err
	}
	if errs := p.writeObserved(ctx, nil, []*transport.Record{&rec}); errs != nil {
		return receiptOf(msg, &rec, false), errs[0]
	}
	return receiptOf(msg, &rec, true), nil
}

// publish encodes, validates and writes msgs, retrying each failed one with
// the publish retry policy. It returns one receipt per message, and one
// error per message (nil when acknowledged) or nil when all were.
func (p *publisher) publish(ctx context.Context, msgs []Msg) ([]Receipt, []error) {
	receipts := make([]Receipt, len(msgs))
	for i, m := range msgs {
		receipts[i] = receiptOf(m, nil, false)
	}
	errs := make([]error, len(msgs))
	if p.isClosed() {
		for i := range errs {
			errs[i] = ErrClosed
		}
		return receipts, errs
	}
	recs := make([]*transport.Record, 0, len(msgs))
	slab := make([]transport.Record, len(msgs)) // one allocation for the records
	idx := make([]int, 0, len(msgs))
	failed := false
	for i, m := range msgs {
		rec, err := p.enc.encode(ctx, m)
		if err != nil {
			errs[i], failed = err, true
			continue
		}
		r := &slab[len(recs)]
		*r = rec
		recs = append(recs, r)
		idx = append(idx, i)
	}
	if failed {
		// Nothing leaves the process when any message of a batch is invalid,
		// and the hooks see none of them: a HookPublishBefore call would
		// have no HookPublishAfter call to match it.
		for _, i := range idx {
			errs[i] = errBatchRefused
		}
		return receipts, errs
	}
	if p.hooks != nil {
		for j, rec := range recs {
			rec.Headers = p.hooks.publishBefore(ctx, msgs[idx[j]], rec.Headers)
		}
	}
	werrs := p.writeObserved(ctx, nil, recs)
	for j, rec := range recs {
		ok := werrs == nil || werrs[j] == nil
		receipts[idx[j]] = receiptOf(msgs[idx[j]], rec, ok)
		if !ok {
			errs[idx[j]] = werrs[j]
		}
	}
	if werrs != nil {
		return receipts, errs
	}
	return receipts, nil
}

// errBatchRefused is the error of a valid message of a batch that was not
// sent because another message is invalid.
var errBatchRefused = errors.New("kavari: not sent: another message of the batch is invalid")

// encode encodes and validates msg, then adds the headers of the
// HookPublishBefore hooks.
func (p *publisher) encode(ctx context.Context, msg Msg) (transport.Record, error) {
	rec, err := p.enc.encode(ctx, msg)
	if err == nil && p.hooks != nil {
		rec.Headers = p.hooks.publishBefore(ctx, msg, rec.Headers)
	}
	return rec, err
}

// writeObserved is write, reporting each record's outcome to the
// HookPublishAfter hooks with its own context (ctxs[i]; ctx when ctxs is
// nil).
func (p *publisher) writeObserved(ctx context.Context, ctxs []context.Context, recs []*transport.Record) []error {
	if p.hooks == nil || len(p.hooks.pubAfter) == 0 {
		return p.write(ctx, recs)
	}
	start := time.Now()
	errs := p.write(ctx, recs)
	p.hooks.publishAfter(ctx, ctxs, recs, start, errs)
	return errs
}

// write sends recs and retries the failed ones. It returns nil when all were
// acknowledged, else one error (*PublishError or nil) per record.
func (p *publisher) write(ctx context.Context, recs []*transport.Record) []error {
	// Fast path: the first attempt needs none of the retry bookkeeping.
	start := time.Now()
	if ctx.Err() != nil {
		return p.retryWrite(ctx, start, recs, nil)
	}
	errs := p.produce(ctx, recs)
	if errs == nil {
		return nil
	}
	return p.retryWrite(ctx, start, recs, errs)
}

// retryWrite finishes a write whose first attempt failed with first (one
// error per record) or, when first is nil, that has not been tried because
// ctx had ended, retrying the failed records with the publish retry policy.
// start is when the first attempt began.
func (p *publisher) retryWrite(ctx context.Context, start time.Time, recs []*transport.Record, first []error) []error {
	errs := make([]error, len(recs))
	// unsure[i]: an attempt at recs[i] failed in a way that leaves its
	// outcome unknown (it may have reached the broker). It is never reset:
	// a later attempt failing otherwise does not undo an earlier write.
	unsure := make([]bool, len(recs))
	pending := make([]int, len(recs))
	for i := range pending {
		pending[i] = i
	}
	batch := make([]*transport.Record, 0, len(recs))
	err := p.cfg.Publish.Retry.retrySince(ctx, start, func(attempt int) error {
		batch = batch[:0]
		for _, i := range pending {
			batch = append(batch, recs[i])
		}
		var we []error
		if attempt == 1 && first != nil {
			we = first // the fast path's attempt
		} else {
			if err := ctx.Err(); err != nil {
				return err // an ended context sends nothing
			}
			we = p.produce(ctx, batch)
		}
		if we == nil {
			pending = pending[:0]
			return nil
		}
		var retry error
		still := pending[:0]
		for j, e := range we {
			i := pending[j]
			if e == nil {
				continue
			}
			var pe *transport.ProduceError
			if errors.As(e, &pe) && pe.MayHaveBeenWritten {
				unsure[i] = true
			}
			switch {
			case attempt >= unknownTopicAttempts && !p.cfg.Publish.AllowAutoCreate && transport.KindOf(e) == transport.UnknownTopic:
				errs[i] = e // given up early; marked below
			case retriablePublish(e):
				still = append(still, i)
				retry = e
			default:
				errs[i] = e
			}
		}
		pending = still
		return retry
	}, retriablePublish, func(attempt int, err error, wait time.Duration) {
		p.log("kavari: publish failed, retrying", "attempt", attempt, "wait", wait, "pending", len(pending), "err", err)
	})
	for _, i := range pending {
		errs[i] = err
	}
	any := false
	for i, e := range errs {
		if e == nil {
			continue
		}
		any = true
		pe := publishErrorOf(recs[i], e)
		pe.Index, pe.MayHaveBeenWritten = i, unsure[i]
		var tpe *transport.ProduceError
		if errors.As(e, &tpe) {
			switch tpe.Kind {
			case transport.TooLarge:
				pe.Err = errors.Join(ErrTooLarge, e)
			case transport.UnknownTopic:
				pe.Err = &unknownTopicError{err: e}
			}
		}
		errs[i] = pe
	}
	if !any {
		return nil
	}
	return errs
}

// unknownTopicError marks a publish error as ErrUnknownTopic and says how
// to fix it, keeping the underlying error for errors.Is.
type unknownTopicError struct{ err error }

func (e *unknownTopicError) Error() string {
	return e.err.Error() + " (create it with EnsureTopics or Config.Topics.Create)"
}

func (e *unknownTopicError) Unwrap() []error { return []error{ErrUnknownTopic, e.err} }

// unknownTopicAttempts is how many attempts an unknown topic gets when the
// broker does not auto-create topics. A few, not one: kafka-go's metadata
// cache learns of a topic created elsewhere only on refresh, and a restarting
// broker briefly answers "unknown" for topics it has not loaded yet.
const unknownTopicAttempts = 3

// retriablePublish reports whether a write error may succeed if retried:
// the transport classified it Retriable, or UnknownTopic (write gives up on
// it after unknownTopicAttempts). The end of the caller's context is not.
func retriablePublish(err error) bool {
	if err == nil {
		return false
	}
	var pe *transport.ProduceError
	if !errors.As(err, &pe) {
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	return pe.Kind == transport.Retriable || pe.Kind == transport.UnknownTopic
}

// enqueue puts one message on the async queue, blocking while it is full
// (unless called from a callback) and ctx lasts, and reports failures to cb.
func (p *publisher) enqueue(ctx context.Context, msg Msg, cb func(Receipt, error)) {
	p.enqueueFor(ctx, msg, cb, false)
}

// enqueueFor is enqueue; a tied message (a handler's, see tie) is sent even
// when ctx ends after it was queued: its record waits for it, and a
// handler's context ends when the handler returns if Consume.HandlerTimeout
// is set.
func (p *publisher) enqueueFor(ctx context.Context, msg Msg, cb func(Receipt, error), tied bool) {
	if cb == nil {
		cb = p.noCallback
	}
	if rec, err := p.push(ctx, msg, cb, pushWait, tied); err != nil {
		cb(receiptOf(msg, rec, false), err)
	}
}

// tie returns the callback of a message a handler published with
// PublishAsync and its context: cb (or, when nil, noCallback), then o
// notes the outcome. o counts the message from now on.
func (p *publisher) tie(o *asyncOuts, cb func(Receipt, error)) func(Receipt, error) {
	if cb == nil {
		cb = p.noCallback
	}
	o.add()
	return func(r Receipt, err error) {
		defer o.settle(err) // also when cb panics (callback recovers)
		cb(r, err)
	}
}

// noCallback is the callback of an async message given none: a failure,
// which nobody else would hear of, is logged and counted
// (Health.AsyncFailedNoCallback).
func (p *publisher) noCallback(r Receipt, err error) {
	if err == nil {
		return
	}
	p.failedNoCallback.Add(1)
	p.cfg.Logger.Error("kavari: PublishAsync message failed and has no callback", "topic", r.Topic, "ce_id", r.ID, "err", err)
}

// tryEnqueue is enqueue without waiting: a full queue returns
// ErrQueueFull. When it returns an error, cb is not called.
func (p *publisher) tryEnqueue(ctx context.Context, msg Msg, cb func(Receipt, error), tied bool) error {
	if cb == nil {
		cb = p.noCallback
	}
	_, err := p.push(ctx, msg, cb, pushTry, tied)
	return err
}

// push encodes msg and queues it. On failure it returns the encoded record,
// or nil when msg could not be encoded. ctx bounds the wait for room; the
// queued message keeps it (its values, and its end unless tied).
func (p *publisher) push(ctx context.Context, msg Msg, cb func(Receipt, error), mode pushMode, tied bool) (*transport.Record, error) {
	rec, err := p.encode(ctx, msg)
	if err != nil {
		return nil, err
	}
	ictx := ctx
	if tied {
		ictx = context.WithoutCancel(ctx)
	}
	if err := p.queueFor(rec.Key).push(ctx, asyncItem{ctx: ictx, msg: msg, rec: rec, cb: cb}, mode, p.writers.has); err != nil {
		p.notSent(ctx, &rec, err)
		return &rec, err
	}
	return nil, nil
}

// notSent reports to the HookPublishAfter hooks a record that their
// HookPublishBefore counterparts saw but that was never sent: it was not
// queued, or its context ended while it was.
func (p *publisher) notSent(ctx context.Context, rec *transport.Record, err error) {
	if p.hooks == nil || len(p.hooks.pubAfter) == 0 {
		return
	}
	p.hooks.publishAfter(ctx, nil, []*transport.Record{rec}, time.Now(), []error{err})
}

// queueFor picks the async writer of a key: always the same one, so one
// key's messages are written in the order PublishAsync was called.
func (p *publisher) queueFor(key []byte) *asyncQueue {
	if len(p.queues) == 1 {
		return p.queues[0]
	}
	if key == nil {
		return p.queues[p.next.Add(1)%uint64(len(p.queues))]
	}
	h := fnv.New32a()
	_, _ = h.Write(key)
	return p.queues[h.Sum32()%uint32(len(p.queues))]
}

// asyncLoop writes the messages of queue in batches until it is closed and
// empty, then runs their callbacks, in order, on this goroutine. id receives
// the goroutine's id, so that a callback's publishes are recognised.
func (p *publisher) asyncLoop(queue *asyncQueue, id *atomic.Int64) {
	defer p.wg.Done()
	id.Store(goroutineID())
	items := make([]asyncItem, 0, p.cfg.Publish.BatchSize)
	recs := make([]*transport.Record, 0, p.cfg.Publish.BatchSize)
	ctxs := make([]context.Context, 0, p.cfg.Publish.BatchSize)
	for {
		var ok bool
		items, ok = queue.take(items[:0], p.cfg.Publish.BatchSize)
		if !ok {
			return
		}
		// A message whose context ended while it was queued is not sent.
		live := items[:0]
		for _, it := range items {
			if it.ctx.Err() != nil {
				err := p.expired(it)
				p.notSent(it.ctx, &it.rec, err)
				p.callback(it, err, false)
				continue
			}
			live = append(live, it)
		}
		clear(items[len(live):])
		items = live
		recs, ctxs = recs[:0], ctxs[:0]
		for i := range items {
			recs = append(recs, &items[i].rec)
			ctxs = append(ctxs, items[i].ctx)
		}
		var errs []error
		if len(recs) > 0 {
			errs = p.writeObserved(p.bg, ctxs, recs)
		}
		for i, it := range items {
			var err error
			if errs != nil {
				err = errs[i]
			}
			p.callback(it, err, err == nil)
		}
		clear(items) // release the messages
		clear(recs)
		clear(ctxs)
	}
}

// callback runs it's callback with its receipt (stored when ok) and err.
func (p *publisher) callback(it asyncItem, err error, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p.cfg.Logger.Error("kavari: PublishAsync callback panicked", "panic", r)
		}
	}()
	it.cb(receiptOf(it.msg, &it.rec, ok), err)
}

// expired is the error of a queued message whose context ended before it
// was written: nothing was sent.
func (p *publisher) expired(it asyncItem) error {
	return publishErrorOf(&it.rec, context.Cause(it.ctx))
}

// publishErrorOf is the *PublishError of rec, an encoded record, failed
// with err.
func publishErrorOf(rec *transport.Record, err error) *PublishError {
	id, _ := headerValue(rec.Headers, HeaderID)
	return &PublishError{Topic: rec.Topic, Key: string(rec.Key), ID: string(id), Err: err}
}

// isClosed reports whether close was called.
func (p *publisher) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// close stops accepting messages, flushes the async queue (each callback runs)
// and closes the writer, or gives up when ctx ends.
func (p *publisher) close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	for _, q := range p.queues {
		q.close() // blocked PublishAsync calls give up; the writers drain
	}
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		_ = p.prod.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Give up: queued messages fail fast, each callback still runs once.
		p.abort()
		return context.Cause(ctx)
	}
}
