package kavari

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// consumeLoop joins the group and runs one generation after another until
// Stop. It never returns because of a broker failure: errors are logged, shown
// in Health, and the group is joined again (kafka-go backs off between tries).
func (k *Kavari) consumeLoop(group *kafka.ConsumerGroup, table *routeTable) {
	defer close(k.loopDone)
	var failingSince, lastLog time.Time
	for {
		gen, err := group.Next(k.runCtx)
		if err != nil {
			if k.runCtx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			k.health.fail(err)
			// Log the first failure and then one line a minute, not one per try.
			if now := time.Now(); failingSince.IsZero() || now.Sub(lastLog) >= time.Minute {
				if failingSince.IsZero() {
					failingSince = now
				}
				lastLog = now
				k.log.Warn("kavari: consumer group unavailable, retrying", "group", k.cfg.GroupID,
					"for", now.Sub(failingSince).Round(time.Second), "err", err)
			}
			continue
		}
		if !failingSince.IsZero() {
			k.log.Info("kavari: consumer group available again", "group", k.cfg.GroupID, "after", time.Since(failingSince).Round(time.Second))
			failingSince = time.Time{}
		}
		if names := k.dlqUnchecked; names != nil {
			k.dlqUnchecked = nil
			go k.recheckDeadLetterTopics(names) // ends with runCtx
		}
		k.inGen.Add(1) // until commitLoop's final commit
		g := newGeneration(k, gen, table)
		k.health.joined(g)
		k.log.Info("kavari: joined group", "group", k.cfg.GroupID, "generation", gen.ID, "partitions", g.assigned())
		g.start()
	}
}

// generation is the work of one consumer group generation: a fetcher per
// assigned partition, their handler goroutines, and the committer.
type generation struct {
	k     *Kavari
	gen   *kafka.Generation
	table *routeTable
	parts []*partition

	// hard is the context of handlers and dead-letter writes. It ends when the
	// drain budget is spent: DrainTimeout after a revoke, or Stop's deadline.
	hard       context.Context
	hardCancel context.CancelFunc

	fetchers sync.WaitGroup // one per partition, done when drained
	commitMu sync.Mutex     // serialises commits so offsets never go backwards
}

// partition is one assigned partition of a generation.
type partition struct {
	topic     string
	id        int
	start     int64 // assigned offset (or FirstOffset/LastOffset)
	tracker   *offsetTracker
	committed int64 // last committed offset, under generation.commitMu
	mu        sync.Mutex
	lanes     map[string]*lane
	inflight  sync.WaitGroup

	// stuck says, by offset, why records cannot complete, when kavari knows
	// (a dead letter that cannot be written); Health shows the first. Under mu.
	stuck map[int64]string

	// share bounds the partition's open records (fetched, not yet
	// committable): at the bound its fetcher waits (waiting) until a record
	// completes (room), so one stuck key or partition cannot take the whole
	// of MaxBuffered from the others.
	share   int
	waiting atomic.Bool
	room    chan struct{}
}

// lane holds the records waiting behind the one being handled for a key.
type lane struct{ queue []*job }

type job struct {
	rec kafka.Message
	seq int64
}

func newGeneration(k *Kavari, gen *kafka.Generation, table *routeTable) *generation {
	g := &generation{k: k, gen: gen, table: table}
	g.hard, g.hardCancel = context.WithCancel(k.hardCtx)
	topics := make([]string, 0, len(gen.Assignments))
	for t := range gen.Assignments {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		for _, a := range gen.Assignments[t] {
			g.parts = append(g.parts, &partition{
				topic: t, id: a.ID, start: a.Offset, tracker: newOffsetTracker(),
				committed: max(a.Offset, -1), lanes: map[string]*lane{},
				room: make(chan struct{}, 1),
			})
		}
	}
	share := partitionShare(k.cfg.MaxBuffered, k.cfg.MaxInFlight, len(g.parts))
	for _, p := range g.parts {
		p.share = share
	}
	return g
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
func (g *generation) waitRoom(ctx context.Context, p *partition) bool {
	for {
		if _, open, _ := p.tracker.committable(); open < p.share {
			return true
		}
		p.waiting.Store(true)
		if _, open, _ := p.tracker.committable(); open < p.share { // completed meanwhile
			p.waiting.Store(false)
			return true
		}
		select {
		case <-p.room:
			p.waiting.Store(false)
		case <-ctx.Done():
			p.waiting.Store(false)
			return false
		}
	}
}

// done marks j complete and wakes p's fetcher if it waits for room.
func (g *generation) done(p *partition, j *job) {
	p.tracker.done(j.seq)
	if p.waiting.Load() {
		select {
		case p.room <- struct{}{}:
		default:
		}
	}
}

func (g *generation) assigned() map[string][]int {
	m := map[string][]int{}
	for _, p := range g.parts {
		m[p.topic] = append(m[p.topic], p.id)
	}
	return m
}

func (g *generation) start() {
	g.fetchers.Add(len(g.parts))
	for _, p := range g.parts {
		g.gen.Start(func(ctx context.Context) { g.fetch(ctx, p) })
	}
	g.gen.Start(g.commitLoop)
}

// fetch reads partition p from its assigned offset and dispatches each record
// until the generation ends, then waits for its in-flight records.
func (g *generation) fetch(ctx context.Context, p *partition) {
	defer g.fetchers.Done()
	cfg := g.k.cfg
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        cfg.Brokers,
		Topic:          p.topic,
		Partition:      p.id,
		Dialer:         g.k.dialer(),
		MinBytes:       1,
		MaxBytes:       10 << 20,
		MaxWait:        500 * time.Millisecond,
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: 2 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			g.k.health.note(fmt.Errorf(msg, args...))
			g.k.log.Debug("kavari: fetch: "+fmt.Sprintf(msg, args...), "topic", p.topic, "partition", p.id)
		}),
	})
	if err := r.SetOffset(p.start); err != nil {
		g.k.log.Error("kavari: cannot position reader", "topic", p.topic, "partition", p.id, "offset", p.start, "err", err)
	}
	for {
		rec, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			g.k.health.note(err)
			g.k.log.Warn("kavari: fetch failed", "topic", p.topic, "partition", p.id, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		// The slot is taken after the fetch, so idle partitions hold none;
		// while all are taken, or this partition has its share open, this
		// fetcher waits with one record in hand. A record not dispatched is
		// not tracked, so not committed.
		if !g.waitRoom(ctx, p) || !g.k.acquire(ctx) {
			break
		}
		g.dispatch(p, rec)
	}
	// Revoked or stopping: close the reader, let in-flight work finish within
	// the drain budget.
	readerClosed := make(chan struct{})
	go func() { _ = r.Close(); close(readerClosed) }()
	defer func() {
		select {
		case <-readerClosed:
		case <-time.After(5 * time.Second):
			g.k.log.Warn("kavari: partition reader did not close in time", "topic", p.topic, "partition", p.id)
		}
	}()
	// The drain budget (commitLoop's timer, or Stop's deadline) ends g.hard.
	grace := cfg.drainReserve() / 2
	if g.k.stopping.Load() {
		grace = min(grace, time.Duration(g.k.stopGrace.Load()))
	}
	drained := make(chan struct{})
	go func() { p.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-g.hard.Done():
		// Handlers were cancelled; give them a moment to return, then leave
		// any that ignore their context behind. Their records stay uncommitted.
		select {
		case <-drained:
		case <-time.After(grace):
			g.k.log.Error("kavari: handlers ignored cancellation; their records will be redelivered", "topic", p.topic, "partition", p.id)
			if g.k.stopping.Load() {
				g.k.stopFailed(fmt.Errorf("%w: %s/%d", ErrHandlersAbandoned, p.topic, p.id))
			}
		}
	}
}

// dispatch hands rec to its lane: behind an earlier record with the same key
// (PerKey) or partition (PerPartition), or straight to a goroutine.
func (g *generation) dispatch(p *partition, rec kafka.Message) {
	j := &job{rec: rec, seq: p.tracker.addKey(rec.Offset, rec.Key, time.Now())}
	p.inflight.Add(1)
	var key string
	switch g.k.cfg.Ordering {
	case Unordered:
		g.k.submit(task{g: g, p: p, j: j})
		return
	case PerKey:
		if rec.Key == nil {
			g.k.submit(task{g: g, p: p, j: j}) // no key, no order to keep
			return
		}
		key = string(rec.Key)
	}
	p.mu.Lock()
	if l := p.lanes[key]; l != nil {
		l.queue = append(l.queue, j)
		p.mu.Unlock()
		return
	}
	l := &lane{}
	p.lanes[key] = l
	p.mu.Unlock()
	g.k.submit(task{g: g, p: p, key: key, l: l, j: j})
}

// task is a lane to run: its first record j, then whatever queues behind it.
type task struct {
	g   *generation
	p   *partition
	key string
	l   *lane // nil: j alone, no order to keep
	j   *job
}

// submit hands t to an idle worker, or starts one. Workers are reused: a
// fresh goroutine per record would spend much of its time growing its stack
// for JSON decoding, again for every record. There are at most MaxBuffered
// workers, and as a dispatched lane holds a buffer slot, at the bound one of
// them is idle or about to be; the lane may then wait for one of the
// MaxInFlight run slots.
func (k *Kavari) submit(t task) {
	select {
	case k.tasks <- t:
		return
	default:
	}
	if k.nworkers.Add(1) <= int64(k.cfg.MaxBuffered) {
		k.workers.Add(1)
		go k.worker(t)
		return
	}
	k.nworkers.Add(-1)
	// At the bound: wait for a worker, looking again now and then in case
	// the idle ones exited meanwhile.
	tick := time.NewTicker(k.workerIdle / 4)
	defer tick.Stop()
	for {
		select {
		case k.tasks <- t:
			return
		case <-tick.C:
			if k.nworkers.Add(1) <= int64(k.cfg.MaxBuffered) {
				k.workers.Add(1)
				go k.worker(t)
				return
			}
			k.nworkers.Add(-1)
		}
	}
}

// worker runs t's lane, then others until the task channel closes or no lane
// came for k.workerIdle.
func (k *Kavari) worker(t task) {
	defer k.workers.Done()
	defer k.nworkers.Add(-1)
	idle := time.NewTimer(k.workerIdle)
	defer idle.Stop()
	for {
		t.g.runLane(t.p, t.key, t.l, t.j)
		idle.Reset(k.workerIdle)
		var ok bool
		select {
		case t, ok = <-k.tasks:
			if !ok {
				return
			}
		case <-idle.C:
			return
		}
	}
}

// runLane handles j, then every record queued behind it on lane l.
func (g *generation) runLane(p *partition, key string, l *lane, j *job) {
	for {
		g.process(p, j)
		if l == nil {
			return
		}
		p.mu.Lock()
		if len(l.queue) == 0 {
			delete(p.lanes, key)
			p.mu.Unlock()
			return
		}
		j = l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		p.mu.Unlock()
	}
}

// process decodes and handles one record, retrying and dead-lettering as
// needed. The record is marked done only when it was handled, dead-lettered or
// deliberately skipped; otherwise it stays uncommitted and is redelivered.
func (g *generation) process(p *partition, j *job) {
	defer p.inflight.Done()
	defer g.k.release()
	if g.hard.Err() != nil {
		return
	}
	// Records queued behind a busy key hold a buffer slot but no run slot,
	// so other keys keep all MaxInFlight handlers busy. A record waiting
	// between retries gives its run slot back too (held says).
	if !g.k.run(g.hard) {
		return
	}
	held := true
	defer func() {
		if held {
			g.k.ran()
		}
	}()
	rt, msg, err := g.table.decode(&j.rec)
	if err != nil {
		var de *DecodeError
		errors.As(err, &de)
		if de.Kind == KindUnknownType && g.k.cfg.Relaxed {
			g.k.log.Info("kavari: skipping record of unknown type (Relaxed)", "err", logErr(err))
			g.done(p, j)
			return
		}
		g.k.log.Warn("kavari: poison record, dead-lettering", "err", logErr(err))
		if g.deadLetter(p, j, de.Kind, "", 1, err) {
			g.done(p, j)
		}
		return
	}
	if len(rt.bindings) == 0 {
		// A type declared without handlers: this service publishes it but
		// does not consume it.
		g.done(p, j)
		return
	}
	for _, b := range rt.bindings {
		// The first attempt runs directly; the retry machinery is set up
		// only when it fails.
		start := time.Now()
		first := g.invoke(b, msg, j, 1)
		if first == nil {
			continue
		}
		attempts := 0
		err := g.k.cfg.ConsumerRetry.retrySince(g.hard, start, func(attempt int) error {
			attempts = attempt
			if attempt == 1 {
				return first
			}
			if !held {
				if !g.k.run(g.hard) {
					return context.Cause(g.hard)
				}
				held = true
			}
			return g.invoke(b, msg, j, attempt)
		}, retriableHandler, func(attempt int, err error, wait time.Duration) {
			g.k.log.Warn("kavari: handler failed, retrying", "handler", b.name, "topic", j.rec.Topic,
				"partition", j.rec.Partition, "offset", j.rec.Offset, "attempt", attempt, "wait", wait, "err", logErr(err))
			g.k.ran() // free while waiting; the lane keeps the key's order
			held = false
		})
		if err == nil {
			continue
		}
		if g.hard.Err() != nil {
			return // interrupted by revoke or Stop: leave it for redelivery
		}
		herr := &HandlerError{Handler: b.name, Attempts: attempts, Err: err}
		g.k.log.Error("kavari: handler gave up, dead-lettering", "err", logErr(herr), "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset)
		if !g.deadLetter(p, j, KindHandler, b.name, attempts, herr) {
			return
		}
	}
	g.done(p, j)
}

// invoke runs one attempt of handler b on msg, turning a panic into an error.
func (g *generation) invoke(b *binding, msg any, j *job, attempt int) (err error) {
	var ctx context.Context = &handlerCtx{Context: g.hard, rec: &j.rec, attempt: attempt}
	if t := g.k.cfg.HandlerTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	h, err := g.k.resolve(b)
	if err != nil {
		return err
	}
	// A handler that returned nil succeeded, even past HandlerTimeout: the
	// timeout only cancels its context.
	return b.call(ctx, h, msg)
}

// handlerCtx is a handler's context: it answers RecordFromContext, building
// the Record only when a handler asks for it.
type handlerCtx struct {
	context.Context
	rec     *kafka.Message
	attempt int
}

func (c *handlerCtx) Value(key any) any {
	if _, ok := key.(recordKey); ok {
		return recordOf(c.rec, c.attempt)
	}
	return c.Context.Value(key)
}

// Permanent wraps err so that kavari does not retry the handler: the record
// goes straight to the dead-letter topic.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

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
func (g *generation) deadLetter(p *partition, j *job, kind ErrorKind, handler string, attempts int, cause error) bool {
	topic := j.rec.Topic + g.k.cfg.DeadLetterSuffix
	form := dlFull
	rec := deadLetterForm(&j.rec, topic, kind, handler, attempts, cause, form)
	// Known too large for the publisher: skip the forms it would refuse.
	for limit := g.k.cfg.MaxMessageBytes; limit > 0 && form < dlSmallest && recordSize(&rec) > limit; {
		form++
		rec = deadLetterForm(&j.rec, topic, kind, handler, attempts, cause, form)
	}
	var last error
	err := dlqRetry.retry(g.hard, func(int) error {
		for {
			errs := g.k.pub.write(g.hard, []kafka.Message{rec})
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
			g.k.log.Warn("kavari: dead letter too large, leaving out more of the record", "topic", topic, "offset", j.rec.Offset, "size", recordSize(&rec), "err", logErr(last))
			rec = deadLetterForm(&j.rec, topic, kind, handler, attempts, cause, form)
		}
	}, retriableHandler, func(attempt int, err error, wait time.Duration) {
		g.k.log.Error("kavari: dead-letter write failed, retrying", "topic", topic, "attempt", attempt, "wait", wait, "err", logErr(err))
	})
	if err == nil {
		p.setStuck(j.rec.Offset, "")
		return true
	}
	if !retriableHandler(err) {
		p.setStuck(j.rec.Offset, fmt.Sprintf("kavari: dead letter of offset %d is too large for %s even without value and original headers (%d bytes): the partition holds at this record until it is redelivered: %s",
			j.rec.Offset, topic, recordSize(&rec), logErr(last)))
		g.k.log.Error("kavari: dead letter cannot be written; not committing past the record", "topic", j.rec.Topic, "partition", j.rec.Partition, "offset", j.rec.Offset, "err", logErr(last))
	}
	return false
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

// commitLoop commits the completed prefix of every partition every
// CommitInterval, and once more after the partitions drained at the end of
// the generation. The generation ends when kafka-go stops heartbeating, so
// the drain is bounded by what the session timeout leaves
// (Config.protocolDrain), and by DrainTimeout on a revoke.
func (g *generation) commitLoop(ctx context.Context) {
	defer g.k.inGen.Add(-1)
	t := time.NewTicker(g.k.cfg.CommitInterval)
	defer t.Stop()
	drained := make(chan struct{})
	go func() {
		<-ctx.Done() // returning earlier would end the generation
		budget := g.k.cfg.protocolDrain()
		if !g.k.stopping.Load() {
			budget = min(budget, g.k.cfg.DrainTimeout)
		}
		cut := time.AfterFunc(budget, g.hardCancel)
		g.fetchers.Wait()
		cut.Stop()
		close(drained)
	}()
	for {
		select {
		case <-t.C:
			_ = g.commit()
		case <-drained:
			if err := g.commit(); err != nil {
				g.k.log.Error("kavari: final commit failed; completed records will be redelivered", "err", err)
				g.k.health.commitFailed(err)
				if g.k.stopping.Load() {
					g.k.stopFailed(err)
				}
			}
			g.hardCancel()
			return
		}
	}
}

// commit commits every partition whose completed prefix moved forward.
func (g *generation) commit() error {
	g.commitMu.Lock()
	defer g.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partition
	for _, p := range g.parts {
		next, _, _ := p.tracker.committable()
		if next > p.committed {
			if offsets[p.topic] == nil {
				offsets[p.topic] = map[int]int64{}
			}
			offsets[p.topic][p.id] = next
			moved = append(moved, p)
		}
	}
	if len(moved) == 0 {
		return nil
	}
	if err := g.gen.CommitOffsets(offsets); err != nil {
		g.k.health.note(err)
		g.k.log.Warn("kavari: commit failed", "err", err)
		return &CommitError{Offsets: offsets, Err: err}
	}
	for _, p := range moved {
		p.committed = offsets[p.topic][p.id]
	}
	g.k.health.committed()
	return nil
}

// oldest returns the number of open records and the fetch time of the oldest.
func (g *generation) oldest() (open int, at time.Time) {
	for _, p := range g.parts {
		_, n, t := p.tracker.committable()
		open += n
		if n > 0 && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return open, at
}

// workerIdle is how long an idle worker waits for a lane before it exits
// (Kavari.workerIdle, taken at New).
var workerIdle = 10 * time.Second

// partitionHealth describes the partitions that have open records.
func (g *generation) partitionHealth() []PartitionHealth {
	var out []PartitionHealth
	now := time.Now()
	for _, p := range g.parts {
		open, offset, key, at, ok := p.tracker.oldest()
		if !ok {
			continue
		}
		ph := PartitionHealth{Topic: p.topic, Partition: p.id, Open: open, Paused: p.waiting.Load(),
			OldestOffset: offset, OldestKey: clipText(string(key), 256), OldestAge: now.Sub(at)}
		ph.Stuck = p.stuckReason()
		out = append(out, ph)
	}
	return out
}
