package kavari

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Retry topics (Consume.RetryTopics): non-blocking retries. A record whose
// handlers still fail after the in-place attempts is written to the next
// delay tier's topic, with its due time and history in headers, and only
// once that write is acknowledged is it marked done (so committed); a
// failed write holds the partition, as a dead letter that cannot be written
// does. The same engine consumes the tier topics: a tier partition's feeder
// holds the head record until it is due, with the partition paused (a
// feeder is not a worker: no handler slot, no buffer slot and no other
// partition waits for it), then dispatches it like any record. After the
// last tier the record is dead-lettered under its main topic's name. This
// file exports nothing.

// retryTopic is the topic of tier n (from 1) of real topic real.
func (c *Config) retryTopic(real string, n int) string {
	return real + c.Topics.RetrySuffix + "." + strconv.Itoa(n)
}

// retryTopicsOf returns the tier topics of each of the real topics, in
// tier order per topic; nil without Consume.RetryTopics.
func (c *Config) retryTopicsOf(reals []string) []string {
	var out []string
	for _, t := range reals {
		for n := 1; n <= len(c.Consume.RetryTopics); n++ {
			out = append(out, c.retryTopic(t, n))
		}
	}
	return out
}

// validateRetryTopics checks Consume.RetryTopics and Topics.RetrySuffix.
func (c *Config) validateRetryTopics() error {
	var errs []error
	if len(c.Consume.RetryTopics) > maxRetryTiers {
		errs = append(errs, fmt.Errorf("Consume.RetryTopics has %d tiers: at most %d", len(c.Consume.RetryTopics), maxRetryTiers))
	}
	for i, d := range c.Consume.RetryTopics {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("Consume.RetryTopics[%d] is %v: each tier's delay must be positive", i, d))
		}
	}
	if len(c.Consume.RetryTopics) > 0 {
		if err := checkTopicName("t" + c.Topics.RetrySuffix + ".1"); err != nil {
			errs = append(errs, fmt.Errorf("Topics.RetrySuffix %q: %w", c.Topics.RetrySuffix, err))
		}
		if c.Topics.RetrySuffix == c.Topics.DeadLetterSuffix {
			errs = append(errs, fmt.Errorf("Topics.RetrySuffix %q is Topics.DeadLetterSuffix", c.Topics.RetrySuffix))
		}
	}
	return errors.Join(errs...)
}

// retryTiers is the engine's view of the retry topics: which topics are
// tiers, of which main topic, and the records their feeders hold until due
// (for Health). A nil *retryTiers is "no retry topics".
type retryTiers struct {
	cfg    *Config
	delays []time.Duration
	tiers  map[string]tierRef // tier topic -> its main topic and tier

	mu      sync.Mutex
	holding map[transport.TopicPartition]time.Time // a feeder holds its head record until then

	moves mover // the tier writes
}

// tierRef says which tier of which main topic a topic is.
type tierRef struct {
	main string
	n    int
}

// newRetryTiers returns the tiers of the subscribed (real) topics; nil
// without Consume.RetryTopics.
func newRetryTiers(cfg *Config, subscribed []string) *retryTiers {
	if len(cfg.Consume.RetryTopics) == 0 {
		return nil
	}
	r := &retryTiers{cfg: cfg, delays: cfg.Consume.RetryTopics, tiers: map[string]tierRef{}, holding: map[transport.TopicPartition]time.Time{}}
	for _, t := range subscribed {
		for n := 1; n <= len(r.delays); n++ {
			r.tiers[cfg.retryTopic(t, n)] = tierRef{main: t, n: n}
		}
	}
	return r
}

// retryState is what a record in a tier topic carries from its earlier
// failures. A nil *retryState is a record of a main topic.
type retryState struct {
	main      string   // the main topic
	tier      int      // the tier the record is in, from 1
	partition int32    // the main topic's record
	offset    int64    // the main topic's record
	handlers  []string // the handlers to run; nil: all
	attempts  int      // handler attempts before this tier's
	history   string   // HeaderRetryHistory
}

// isTier says whether topic is a retry tier's topic.
func (r *retryTiers) isTier(topic string) bool {
	if r == nil {
		return false
	}
	_, ok := r.tiers[topic]
	return ok
}

// stateOf returns rec's retry state: nil when rec is not in a tier topic.
// Headers that are missing or garbled (a record written to a tier topic by
// something else) take what rec itself says.
func (r *retryTiers) stateOf(rec *transport.Record) *retryState {
	if r == nil {
		return nil
	}
	ref, ok := r.tiers[rec.Topic]
	if !ok {
		return nil
	}
	s := &retryState{main: ref.main, tier: ref.n, partition: rec.Partition, offset: rec.Offset}
	for _, h := range rec.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderOriginalPartition:
			if n, err := strconv.ParseInt(v, 10, 32); err == nil {
				s.partition = int32(n)
			}
		case HeaderOriginalOffset:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				s.offset = n
			}
		case HeaderAttempts:
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				s.attempts = n
			}
		case HeaderRetryHandlers:
			if v != "" {
				s.handlers = strings.Split(v, ",")
			}
		case HeaderRetryHistory:
			s.history = v
		}
	}
	return s
}

// topic is the topic whose types rec is decoded as: its main topic.
func (s *retryState) topic(rec *transport.Record) string {
	if s == nil {
		return rec.Topic
	}
	return s.main
}

// attempt is the number of the record's next handler attempt: 1 on its
// main topic, one more than its attempts so far in a tier.
func (s *retryState) attempt() int {
	if s == nil {
		return 1
	}
	return s.attempts + 1
}

// runs reports whether handler name runs on the record.
func (s *retryState) runs(name string) bool {
	if s == nil || s.handlers == nil {
		return true
	}
	for _, h := range s.handlers {
		if h == name {
			return true
		}
	}
	return false
}

// keepHandlers makes a record whose failed handlers are none of bs (they
// were renamed or removed since it moved) run every handler of bs:
// duplicates rather than a record nobody handles.
func (s *retryState) keepHandlers(bs []*binding, log *slog.Logger) {
	if s == nil || s.handlers == nil {
		return
	}
	for _, b := range bs {
		if s.runs(b.name) {
			return
		}
	}
	log.Warn("kavari: the handlers that failed a retried record are not registered; running every handler of its type", "handlers", s.handlers, "topic", s.main)
	s.handlers = nil
}

// source returns the record a dead letter of rec describes: rec, or for a
// record in a tier topic, rec as its main topic's record (topic, partition
// and offset), so that the dead letter goes to the main topic's
// dead-letter topic and names the record first consumed.
func (r *retryTiers) source(rec *transport.Record) *transport.Record {
	s := r.stateOf(rec)
	if s == nil {
		return rec
	}
	src := *rec
	src.Topic, src.Partition, src.Offset = s.main, s.partition, s.offset
	return &src
}

// retryDue returns the due time rec carries; false when it has none.
func retryDue(rec *transport.Record) (time.Time, bool) {
	v, ok := headerValue(rec.Headers, HeaderRetryDue)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	return t, err == nil
}

// stampMs formats the times of the retry headers.
const stampMs = "2006-01-02T15:04:05.000Z07:00"

// dueLead is how long before a held record is due its partition fetches
// again: the records after it are fetched meanwhile (a resumed partition
// waits for the next fetch request, up to the fetch wait, 500 ms on both
// transports, and kgo drops what it had fetched for a paused partition), so
// that they are on hand when they are due.
const dueLead = time.Second

// awaitDue holds rec, the next record of partition p, until it is due when
// p is a tier partition: the partition is paused meanwhile, until dueLead
// before that (or, when it is paused for back-pressure too, until the
// feeder took what was fetched, see next). False when p's fetching ended
// first (revoke, loss, Stop): rec was not dispatched, so it is not
// committed and is delivered again.
func (e *engine) awaitDue(p *partition, rec *transport.Record) bool {
	if !p.tier {
		return true
	}
	r := e.retry
	due, ok := retryDue(rec)
	if !ok {
		return true
	}
	wait := time.Until(due)
	if wait <= 0 {
		return true
	}
	r.mu.Lock()
	r.holding[p.tp] = due
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.holding, p.tp)
		r.mu.Unlock()
	}()
	if wait > dueLead {
		e.pause(p)
		if !sleepCtx(p.fetch, wait-dueLead) {
			return false
		}
		p.mu.Lock()
		if p.paused && int64(len(p.pending)) < p.share.Load() {
			p.paused = false
			e.cons.Resume(p.tp)
		}
		p.mu.Unlock()
		wait = time.Until(due)
	}
	// Fetching meanwhile: records delivered wait in pending. At the share,
	// a transport that waits for backlogs would hold every partition back
	// until this feeder takes them (Backlog): pause this one instead, also
	// when that happened before the record was held (the delivery that
	// filled the share may be the one next was woken for).
	full := func() {
		p.mu.Lock()
		full := p.backlog != nil || int64(len(p.pending)) >= p.share.Load()
		p.mu.Unlock()
		if full {
			e.pause(p)
		}
	}
	full()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-p.fetch.Done():
			return false
		case <-p.wake:
			full()
		}
	}
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// tierFailure is one handler that failed a record in its last attempt
// before a tier move.
type tierFailure struct {
	handler  string
	attempts int // handler attempts, all tiers
	err      error
}

// retryLater moves j's record on after the handlers failed it, retriably:
// to the next tier's topic (moved), or after the last tier, or when it is
// too large for its tier, to the dead-letter topic (a dead letter per
// failed handler). It returns ok once that was written and acknowledged;
// false when the write did not succeed before p's drain budget ended: the
// record stays open, the partition holds there, and Health says why.
func (e *engine) retryLater(p *partition, j *job, rs *retryState, failed []tierFailure) (ok, moved bool) {
	r := e.retry
	next := 1
	main := j.rec.Topic
	if rs != nil {
		next, main = rs.tier+1, rs.main
	}
	if next > len(r.delays) {
		for _, f := range failed {
			e.deps.log.Error("kavari: handler gave up after the last retry tier, dead-lettering", "err", logErr(f.err), "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset, "attempts", f.attempts)
			if !e.deadLetter(p, j, KindHandler, f.handler, f.attempts, f.err) {
				return false, false
			}
		}
		return true, false
	}
	topic := e.deps.cfg.retryTopic(main, next)
	delay := r.delays[next-1]
	now := time.Now()
	rec := tierRecord(j.rec, rs, topic, next, now.Add(delay), now, failed)
	if limit := e.deps.cfg.Publish.MaxMessageBytes; limit > 0 && recordSize(&rec) > limit {
		return e.tooLargeForTier(p, j, topic, failed, fmt.Errorf("%d bytes, over Publish.MaxMessageBytes", recordSize(&rec))), false
	}
	var last error
	err := dlqRetry.retry(p.hard, func(int) error {
		// While the write is under way the records after this one keep
		// coming (the window); the commits wait for it.
		e.moving(p, j, true)
		last = r.moves.move(p.hard, &rec, e.deps.write)
		if last == nil {
			return nil
		}
		e.moving(p, j, false) // the partition holds at it again
		if tooLarge(last) {
			return Permanent(last)
		}
		p.setStuck(j.rec.Offset, fmt.Sprintf("kavari: offset %d cannot be written to retry topic %s: %s; the partition holds at this record", j.rec.Offset, topic, logErr(last)))
		return last
	}, retriableHandler, func(attempt int, err error, wait time.Duration) {
		e.deps.log.Error("kavari: retry-topic write failed, retrying", "topic", topic, "offset", j.rec.Offset, "attempt", attempt, "wait", wait, "err", logErr(err))
	})
	if err != nil {
		if !retriableHandler(err) {
			return e.tooLargeForTier(p, j, topic, failed, last), false
		}
		return false, false
	}
	p.setStuck(j.rec.Offset, "")
	for _, f := range failed {
		e.deps.log.Warn("kavari: handler failed, record moved to a retry topic", "handler", f.handler, "topic", j.rec.Topic,
			"partition", j.rec.Partition, "offset", j.rec.Offset, "to", topic, "due", now.Add(delay).UTC().Format(stampMs), "err", logErr(f.err))
		e.deps.health.retried.Add(1)
		e.deps.hooks.onRetryTier(j.rec, f.attempts, f.handler, next, delay, f.err)
	}
	return true, true
}

// mover writes the records that move to a tier. The partition's commits
// wait for each such write, so the moves pending at a moment go out as one
// write (kafka-go sends a partition's records of one write in one request,
// but its requests for a partition one after the other: a write per move
// would queue behind the one under way), and without waiting for a batch
// to fill (transport.WithoutLinger: kafka-go's BatchTimeout). A flush
// goroutine runs while moves are pending: it takes every pending move,
// writes them together, answers each, and goes on while more came
// meanwhile. Each write ends when it is answered or when every mover
// waiting for it gave up (their partitions' contexts ended); a mover gives
// up on its own context's end without waiting for the write, which may
// still store its record (the record stays open and comes again: a
// duplicate in the tier, never a loss). The zero value is ready.
type mover struct {
	mu      sync.Mutex
	pending []*moveReq
	busy    bool           // a flush goroutine runs
	wg      sync.WaitGroup // the flush goroutine
}

// moveReq is one move waiting for its write.
type moveReq struct {
	ctx  context.Context
	rec  *transport.Record
	err  error         // set before done is closed
	done chan struct{} // closed once rec's write was answered
}

// move writes rec with write (the publisher's), together with the other
// moves pending; nil once it was acknowledged, else its error, or ctx's
// cause when ctx ended first.
func (m *mover) move(ctx context.Context, rec *transport.Record, write func(context.Context, []*transport.Record) []error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx) // also: no flush goroutine after the engine's end
	}
	r := &moveReq{ctx: ctx, rec: rec, done: make(chan struct{})}
	m.mu.Lock()
	m.pending = append(m.pending, r)
	if !m.busy {
		m.busy = true
		m.wg.Add(1)
		go m.flush(write)
	}
	m.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// flush writes the pending moves, a write at a time, until none is left.
func (m *mover) flush(write func(context.Context, []*transport.Record) []error) {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		reqs := m.pending
		m.pending = nil
		if len(reqs) == 0 {
			m.busy = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		// The write ends when every mover waiting for it gave up.
		ctx, cancel := context.WithCancel(transport.WithoutLinger(context.Background()))
		var waiting atomic.Int64
		waiting.Store(int64(len(reqs)))
		recs := make([]*transport.Record, len(reqs))
		stops := make([]func() bool, len(reqs))
		for i, r := range reqs {
			recs[i] = r.rec
			stops[i] = context.AfterFunc(r.ctx, func() {
				if waiting.Add(-1) == 0 {
					cancel()
				}
			})
		}
		errs := write(ctx, recs)
		for i, r := range reqs {
			stops[i]()
			if errs != nil {
				r.err = errs[i]
			}
			close(r.done)
		}
		cancel()
	}
}

// wait waits until no flush goroutine runs: once every partition's
// context ended, its write ends too.
func (m *mover) wait() { m.wg.Wait() }

// waitMoves is mover.wait for the engine's retry tiers, if any.
func (r *retryTiers) waitMoves() {
	if r != nil {
		r.moves.wait()
	}
}

// tooLargeForTier dead-letters a record that does not fit in its retry
// topic: its dead letter degrades in steps (deadLetter), a retry must carry
// the whole record.
func (e *engine) tooLargeForTier(p *partition, j *job, topic string, failed []tierFailure, why error) bool {
	e.deps.log.Warn("kavari: record too large for its retry topic, dead-lettering", "topic", topic, "offset", j.rec.Offset, "err", logErr(why))
	for _, f := range failed {
		if !e.deadLetter(p, j, KindHandler, f.handler, f.attempts, f.err) {
			return false
		}
	}
	return true
}

// tierRecord builds the record that moves rec (in state rs: nil on its
// main topic) to tier n's topic, due at due, after failed at now: rec's key,
// value and headers, with the retry headers replaced.
func tierRecord(rec *transport.Record, rs *retryState, topic string, n int, due, now time.Time, failed []tierFailure) transport.Record {
	origTopic, origPart, origOff, history := rec.Topic, rec.Partition, rec.Offset, ""
	if rs != nil {
		origTopic, origPart, origOff, history = rs.main, rs.partition, rs.offset, rs.history
	}
	if history != "" {
		history += ","
	}
	history += rec.Topic + "/" + strconv.Itoa(int(rec.Partition)) + "/" + strconv.FormatInt(rec.Offset, 10) + "@" + now.UTC().Format(stampMs)
	handlers := make([]string, len(failed))
	attempts := 0
	for i, f := range failed {
		handlers[i] = f.handler
		attempts = max(attempts, f.attempts)
	}
	last := failed[len(failed)-1].err
	add := []transport.Header{
		{Key: HeaderOriginalError, Value: []byte(clipText(last.Error(), MaxErrorText))},
		{Key: HeaderOriginalTopic, Value: []byte(origTopic)},
		{Key: HeaderOriginalPartition, Value: strconv.AppendInt(nil, int64(origPart), 10)},
		{Key: HeaderOriginalOffset, Value: strconv.AppendInt(nil, origOff, 10)},
		{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
		{Key: HeaderRetryTier, Value: strconv.AppendInt(nil, int64(n), 10)},
		{Key: HeaderRetryDue, Value: []byte(due.UTC().Format(stampMs))},
		{Key: HeaderRetryHandlers, Value: []byte(strings.Join(handlers, ","))},
		{Key: HeaderRetryHistory, Value: []byte(history)},
	}
	hs := make([]transport.Header, 0, len(rec.Headers)+len(add))
outer:
	for _, h := range rec.Headers {
		for _, a := range add {
			if a.Key == h.Key {
				continue outer
			}
		}
		hs = append(hs, h)
	}
	return transport.Record{Topic: topic, Key: rec.Key, Value: rec.Value, Headers: append(hs, add...)}
}

// heldUntil returns, per tier partition whose feeder holds its head record,
// when it is due.
func (r *retryTiers) heldUntil() map[transport.TopicPartition]time.Time {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[transport.TopicPartition]time.Time, len(r.holding))
	for tp, t := range r.holding {
		out[tp] = t
	}
	return out
}

// retryHealth describes the tiers of which partitions are assigned, from
// their positions (Health.Positions).
func (e *engine) retryHealth(positions []PartitionHealth) []RetryTierHealth {
	r := e.retry
	if r == nil {
		return nil
	}
	held := r.heldUntil()
	var out []RetryTierHealth
	at := map[string]int{} // topic -> index in out
	for _, ph := range positions {
		ref, ok := r.tiers[ph.Topic]
		if !ok {
			continue
		}
		i, ok := at[ph.Topic]
		if !ok {
			i = len(out)
			at[ph.Topic] = i
			out = append(out, RetryTierHealth{Topic: ph.Topic, Main: ref.main, Tier: ref.n, Delay: r.delays[ref.n-1]})
		}
		t := &out[i]
		switch {
		case ph.Lag < 0 || t.Waiting < 0:
			t.Waiting = -1
		default:
			t.Waiting += ph.Lag
		}
		if due, ok := held[transport.TopicPartition{Topic: ph.Topic, Partition: int32(ph.Partition)}]; ok && (t.OldestDue.IsZero() || due.Before(t.OldestDue)) {
			t.OldestDue = due
		}
	}
	return out
}
