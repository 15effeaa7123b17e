package kavari

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kavari-go/kavari/internal/transport"
)

// Dispatch: the engine's state and its dependencies (engineDeps), the
// transport's group callbacks (Assigned, Revoked, Lost, Records, Error),
// each partition's feeder and the lanes that keep per-key or per-partition
// order. Handling a record is in handle.go, commits in commit.go,
// back-pressure in buffer.go, run slots and the worker pool in workers.go,
// Health's lag in lag.go. The engine files never see the Client: what they
// use of it is in engineDeps, which launch (lifecycle.go) builds once
// (TestEngineFilesDoNotReachTheClient). This file exports nothing but the
// methods of transport.GroupHandler.

// engine is the consumer: the transport's consumer calls it as its
// transport.GroupHandler. Per assigned partition it runs a feeder that takes
// the records the transport delivered, in offset order, and hands them to
// lanes; it tracks offsets, commits the completed prefix fenced by the
// generation, drains revoked partitions and abandons lost ones. It sees the
// transport only through cons and caps (never a client library's types),
// and the client it runs on only through deps.
type engine struct {
	deps  engineDeps
	table *routeTable
	cons  transport.Consumer
	caps  transport.Capabilities

	mu    sync.Mutex
	gen   transport.Generation // the member's current generation
	parts map[transport.TopicPartition]*partition
	// failingSince and lastLog rate-limit the log of group failures.
	failingSince, lastLog time.Time
	// dlqUnchecked are the dead-letter topics Start could not check; the
	// first Assigned has them checked (deps.recheckDLQ) and clears it.
	dlqUnchecked []string

	commitMu sync.Mutex    // serialises commits so offsets never go backwards
	runDone  chan struct{} // closed when the transport's Run returned
	// sending holds the offsets of the commit under way, until it is accepted.
	sending atomic.Pointer[[]transport.Offset]
	// batchTopics are the topics with a batch handler: their partitions
	// queue records for batches (batch.go); nil when none has one.
	batchTopics map[string]bool
	// retry are the retry topics' tiers (retrytopic.go); nil without
	// Consume.RetryTopics. Set before run.
	retry *retryTiers
	// eos runs the exactly-once windows (eos.go); nil in at-least-once mode.
	eos *window
}

// engineDeps is everything the engine uses of the client it runs on:
// configuration, logging, hooks, Health, handlers, the bounds it shares with
// Health, and the lifecycle's signals. launch builds it once; the funcs are
// the few ways the engine calls back into the client.
type engineDeps struct {
	cfg        *Config      // read only
	log        *slog.Logger // Config.Logger
	hooks      *hooks       // nil when none
	health     *health      // what Health reports
	middleware AttemptFunc  // Config.Middleware composed; nil when none
	// resolve returns the handler instance for one record (the Provider's,
	// else the registered one).
	resolve func(*binding) (any, error)
	// write writes dead letters: one attempt, all in-sync replicas
	// acknowledging, an error per record that failed (the publisher's).
	write func(context.Context, []*transport.Record) []error
	admin transport.Admin // end offsets, for Health's lag

	buf       *recordBuffer // records fetched and not finished (MaxBuffered)
	running   runSlots      // handlers running (MaxInFlight)
	pool      *workerPool   // runs the lanes
	metaLimit *metaLimiter  // bound of the commit metadata

	runCtx  context.Context // ends when Stop begins: the transport's Run returns
	hardCtx context.Context // parent of every handler's context: ends when Stop's drain budget is spent
	// loopDone is closed when run returned (the transport's Run and the
	// partitions' drains are over).
	loopDone chan struct{}
	// stopping reports whether Stop was called; stopGrace is how long
	// cancelled handlers then get to return before they are abandoned.
	stopping  func() bool
	stopGrace func() time.Duration
	// stopFailed records what the consumer left undone while stopping
	// (abandoned handlers); commitLost records a revoke's or a loss's failed
	// final commit (nil: partitions were assigned again). Stop returns them.
	stopFailed func(error)
	commitLost func(error)
	// dlqUnchecked are the dead-letter topics Start could not check;
	// recheckDLQ checks them once the group is joined.
	dlqUnchecked []string
	recheckDLQ   func(names []string)
}

func newEngine(deps engineDeps, table *routeTable, cons transport.Consumer, caps transport.Capabilities) *engine {
	return &engine{deps: deps, table: table, cons: cons, caps: caps, dlqUnchecked: deps.dlqUnchecked,
		parts: map[transport.TopicPartition]*partition{}, runDone: make(chan struct{}), batchTopics: table.batchTopics()}
}

// run consumes until Stop: the transport joins the group and calls e. It
// never returns because of a broker failure: the transport rejoins with
// backoff, and errors are logged and shown in Health.
func (e *engine) run() {
	defer close(e.deps.loopDone)
	defer e.retry.waitMoves() // retry topics' writes (retrytopic.go)
	if e.eos != nil {
		go e.windowLoop()
		defer func() { <-e.eos.done }()
	} else {
		go e.commitLoop()
	}
	go e.lagLoop()
	_ = e.cons.Run(e.deps.runCtx, e)
	close(e.runDone)
}

// partition is one assigned partition.
type partition struct {
	tp        transport.TopicPartition
	topic     string
	id        int
	tracker   *offsetTracker
	committed int64 // last committed offset, under engine.commitMu
	// committedMeta is the metadata committed with it (completed offsets
	// beyond it), under engine.commitMu.
	committedMeta string
	// inherited are the completed offsets listed in the metadata of the
	// commit p was assigned with, beyond the committed offset: every commit
	// carries them until the committed offset passes them (carryDone), also
	// those the feeder has not reached. Under engine.commitMu.
	inherited []offsetRun
	// skip are the offsets the previous owner completed beyond the
	// committed one (from the commit's metadata): the feeder marks them
	// done without handling them. Only the feeder touches it.
	skip []offsetRun
	mu   sync.Mutex
	// lanes holds, per key being handled, the records queued behind the
	// one in hand (an empty queue: the key is busy, nothing waits).
	lanes    map[string][]*job
	inflight sync.WaitGroup
	// bq queues the records for batches when the topic has a batch
	// handler (batch.go); nil otherwise, and then lanes take every record.
	bq *batchQueue
	// tier: the partition is of a retry topic (Consume.RetryTopics), whose
	// records wait until due and carry a retryState; looked up once here
	// rather than for every record.
	tier bool

	// stuck says, by offset, why records cannot complete, when kavari knows
	// (a dead letter that cannot be written); Health shows the first. Under mu.
	stuck map[int64]string

	// share bounds the partition's open records (fetched, not yet
	// committable): at the bound its feeder waits (waiting) until records
	// complete (room, roomAt), and the transport stops fetching the
	// partition (paused; with WaitsForBacklog once it waited stallPause),
	// so one stuck key or partition cannot take the whole of MaxBuffered
	// from the others.
	share   atomic.Int64
	waiting atomic.Bool
	room    chan struct{}
	// bufferFull says the feeder waits for a slot of MaxBuffered: the
	// partition holds its reserved part and none of the rest is left
	// (recordBuffer). Its fetching is paused too.
	bufferFull atomic.Bool
	// bufHeld is how many slots of MaxBuffered the partition holds; under
	// recordBuffer.mu.
	bufHeld int

	// pending holds the records the transport delivered that the feeder has
	// not dispatched yet; paused says the transport was asked to stop
	// fetching the partition. Under mu. Pending is bounded by the share
	// plus one delivery (with WaitsForBacklog, plus one fetch): at the
	// share, the transport is asked to pause the partition, or, when it
	// waits for backlogs (Capabilities.WaitsForBacklog), it is given
	// backlog (Backlog) and, once it delivered what its client had
	// already fetched (kgo: one fetch per broker), delivers nothing more
	// to anyone until the feeder took pending down to half the share (or
	// paused the partition, or ended), for at most stallPause: then the
	// partition is paused (pauseBacklog).
	pending []*transport.Record
	// fetched says when the pending records were delivered: each entry
	// covers the pending records up to its offset (one clock read per
	// delivery, not per record). Under mu.
	fetched []fetchStamp
	paused  bool
	backlog chan struct{} // closed by clearBacklogLocked
	wake    chan struct{} // records were added to pending
	// stall pauses the partition once its feeder waited stallPause for
	// room (with WaitsForBacklog); only the feeder uses it.
	stall *time.Timer

	// fetch ends the feeder (revoke, loss); hard is the context of handlers
	// and dead-letter writes, ended when the drain budget is spent.
	fetch      context.Context
	stopFetch  context.CancelFunc
	hard       context.Context
	hardCancel context.CancelFunc
	feederDone chan struct{}

	lag lagState // for Health

	// parked holds the records whose messages of PublishAsync are
	// pending (engine.park); under mu.
	parked map[*job]parkedRec
}

// fetchStamp is when the records up to offset last were delivered.
type fetchStamp struct {
	last int64
	at   time.Time
}

// job is one dispatched record.
type job struct {
	rec *transport.Record
	seq int64
	// ctx is the context of the record's first handler attempt, allocated
	// with the job and never changed (a handler may keep it).
	ctx handlerCtx
	// wroteIn is, under exactly-once, the window (window.epoch) in which
	// an attempt of the record last wrote into the transaction; 0: none.
	// Under window.mu.
	wroteIn uint64
	// outs counts the messages its handlers published with PublishAsync
	// and their context (at-least-once), made at the first (handle.go).
	outs atomic.Pointer[asyncOuts]
}

// Assigned starts the partitions parts in generation gen: their state,
// their feeders, their lanes.
func (e *engine) Assigned(gen transport.Generation, parts []transport.Assignment) {
	d := &e.deps
	e.mu.Lock()
	e.gen = gen
	var started, fresh []*partition
	for _, a := range parts {
		if e.parts[a.TopicPartition] != nil {
			continue // kept across a cooperative rebalance
		}
		p := &partition{
			tp: a.TopicPartition, topic: a.Topic, id: int(a.Partition), tracker: newOffsetTracker(),
			committed: max(a.Offset, -1), lanes: map[string][]*job{},
			room: make(chan struct{}, 1), wake: make(chan struct{}, 1), feederDone: make(chan struct{}),
		}
		p.lag.init(a.Offset)
		if e.batchTopics[a.Topic] {
			p.bq = &batchQueue{busy: map[string]int{}}
		}
		p.tier = e.retry.isTier(a.Topic)
		if a.Offset < 0 && a.Start >= 0 {
			// No committed offset: the group's position is where the
			// transport starts.
			p.lag.init(a.Start)
			if d.cfg.Consume.AutoOffsetReset == Latest {
				p.tracker.startAt(a.Start)
				fresh = append(fresh, p)
			}
		}
		if e.caps.CommitMetadata {
			p.committedMeta = a.Metadata
			p.skip = decodeDoneOffsets(a.Offset, a.Metadata)
			p.inherited = slices.Clone(p.skip)
		}
		p.fetch, p.stopFetch = context.WithCancel(context.Background())
		p.hard, p.hardCancel = context.WithCancel(d.hardCtx)
		e.parts[a.TopicPartition] = p
		started = append(started, p)
	}
	// The share is split among the main topics' partitions only: a retry
	// tier's partition holds a small part of the traffic (the records that
	// failed), and counting it would cut every main partition's share
	// (3 partitions and 3 tiers: 256 open records each instead of 341).
	main := e.mainPartsLocked()
	share := partitionShare(d.cfg.Consume.MaxBuffered, d.cfg.Consume.MaxInFlight, main)
	for _, p := range e.parts {
		p.share.Store(int64(share))
		if e.retry != nil {
			p.tracker.setSpanCap(movingSpan * share)
		}
	}
	d.buf.setPartitions(main, len(e.parts)-main)
	assigned := e.assignedLocked()
	since := e.failingSince
	e.failingSince = time.Time{}
	e.mu.Unlock()
	d.commitLost(nil) // what an earlier revoke left uncommitted is the new owners' now

	if !since.IsZero() {
		d.log.Info("kavari: consumer group available again", "group", d.cfg.Consume.GroupID, "after", time.Since(since).Round(time.Second))
	}
	d.health.joined(e, gen, assigned) // clears Health.LastError
	if names := e.dlqUnchecked; names != nil {
		// After joined: a missing topic the check reports must not be
		// cleared by it.
		e.dlqUnchecked = nil
		go d.recheckDLQ(names) // ends with runCtx
	}
	d.log.Info("kavari: joined group", "group", d.cfg.Consume.GroupID, "generation", gen.ID, "partitions", assigned)
	d.hooks.onAssigned(assigned)
	if len(fresh) > 0 {
		e.commitStarts(gen, fresh)
	}
	for _, p := range started {
		go e.feed(p)
	}
}

// Revoked drains partitions tps and commits them in gen: their feeders
// stop, in-flight handlers finish within the drain budget (then their
// contexts are cancelled), the completed prefix is committed, and the
// partitions are released.
func (e *engine) Revoked(gen transport.Generation, tps []transport.TopicPartition) {
	ps := e.take(tps)
	if len(ps) == 0 {
		return
	}
	if e.eos != nil {
		e.revokedInWindow(ps)
		return
	}
	for _, p := range ps {
		p.stopFetch()
	}
	cut := time.AfterFunc(e.drainBudget(), func() {
		for _, p := range ps {
			p.hardCancel()
		}
	})
	for _, p := range ps {
		<-p.feederDone
	}
	cut.Stop()
	if err := e.commit(gen, ps); err != nil {
		e.deps.log.Error("kavari: final commit failed; completed records will be redelivered", "err", err)
		e.deps.health.commitFailed(err)
		// Stop reports it, also when the generation ended before Stop (the
		// brokers went away), unless partitions are assigned again first.
		e.deps.commitLost(err)
	}
	e.release(ps)
	e.deps.hooks.onRevoked(ps, false)
}

// Lost abandons partitions tps: their handlers are cancelled and nothing is
// committed; another member owns them already. Completed records that were
// not committed are redelivered to it: Stop reports them (ErrCommitFailed),
// as it does a revoke's failed final commit, unless partitions are assigned
// again first.
func (e *engine) Lost(gen transport.Generation, tps []transport.TopicPartition) {
	ps := e.take(tps)
	for _, p := range ps {
		p.stopFetch()
		p.hardCancel()
	}
	for _, p := range ps {
		<-p.feederDone
	}
	e.commitMu.Lock() // a commit under way settles p.committed first
	var offsets []transport.Offset
	for _, p := range ps {
		if o, ok := e.toCommit(p); ok {
			offsets = append(offsets, o)
		}
	}
	e.commitMu.Unlock()
	// Under exactly-once what was not committed was in a transaction that
	// aborts (Lost is also how an aborted window rewinds): nothing to report.
	if len(offsets) > 0 && e.eos == nil {
		err := &CommitError{Offsets: offsetMap(offsets), Err: fmt.Errorf("kavari: partitions lost (the member's session ended) before their completed records were committed")}
		e.deps.log.Error("kavari: partitions lost; completed records not committed will be redelivered", "err", err)
		e.deps.health.commitFailed(err)
		e.deps.commitLost(err)
	}
	e.release(ps)
	e.deps.hooks.onRevoked(ps, true)
}

// take returns the partitions of tps that are assigned.
func (e *engine) take(tps []transport.TopicPartition) []*partition {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ps []*partition
	for _, tp := range tps {
		if p := e.parts[tp]; p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// release forgets partitions ps, after their drain.
func (e *engine) release(ps []*partition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range ps {
		p.hardCancel()
		if e.parts[p.tp] == p {
			delete(e.parts, p.tp)
		}
	}
	main := e.mainPartsLocked()
	e.deps.buf.setPartitions(main, len(e.parts)-main)
}

// mainPartsLocked returns how many of the assigned partitions are of main
// topics (not of retry tiers); under e.mu.
func (e *engine) mainPartsLocked() int {
	n := 0
	for _, p := range e.parts {
		if !p.tier {
			n++
		}
	}
	return n
}

// drainBudget is how long a revoke (or Stop) lets in-flight handlers run:
// what the group protocol allows (without heartbeats during the drain, what
// the session timeout leaves, Config.protocolDrain; with them, the rebalance
// timeout), and DrainTimeout on a revoke.
func (e *engine) drainBudget() time.Duration {
	cfg := e.deps.cfg
	budget := cfg.drainBound(e.caps.HeartbeatsDuringDrain)
	if !e.deps.stopping() {
		budget = min(budget, cfg.Consume.DrainTimeout)
	}
	return budget
}

// Records queues recs for partition tp's feeder. It never blocks: when the
// partition has its share of records waiting, the transport is asked to
// pause it.
func (e *engine) Records(tp transport.TopicPartition, recs []*transport.Record, hw int64) {
	e.mu.Lock()
	p := e.parts[tp]
	e.mu.Unlock()
	if p == nil || len(recs) == 0 {
		return // revoked meanwhile: the next owner reads them
	}
	p.noteFetched(recs, hw)
	e.deps.hooks.onFetched(tp, recs, hw)
	p.mu.Lock()
	p.pending = append(p.pending, recs...)
	p.fetched = append(p.fetched, fetchStamp{last: recs[len(recs)-1].Offset, at: time.Now()})
	if !p.paused && int64(len(p.pending)) >= p.share.Load() {
		switch {
		case !e.caps.WaitsForBacklog:
			p.paused = true
			e.cons.Pause(tp)
		case p.backlog == nil && p.fetch.Err() == nil: // an ended feeder clears no more
			p.backlog = make(chan struct{})
			ch := p.backlog
			time.AfterFunc(stallPause, func() { e.pauseBacklog(p, ch) })
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Backlog returns a channel closed once partition tp's feeder took its
// pending records down to half its share, paused the partition or ended;
// nil when tp may take records now (transport.Backlogger).
func (e *engine) Backlog(tp transport.TopicPartition) <-chan struct{} {
	e.mu.Lock()
	p := e.parts[tp]
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.backlog == nil {
		return nil // a nil chan stays nil in the interface's result
	}
	return p.backlog
}

// pauseBacklog pauses partition p if its backlog ch still stands: a
// backlog holds the transport back, every partition of it, for at most
// stallPause. Its feeder may not drain it sooner: a slow key at the head of
// the window frees room a few records at a time, each within stallPause
// of the last, and the feeder's own stall (waitRoomStall) never fires. The
// others' records would wait at the slow key's pace. Pausing makes the
// client drop what it fetched for p, fetched again on resume. Under p.mu,
// so it happens before the feeder's end (which clears the backlog) and so
// before a revoke lets the transport unpause p.
func (e *engine) pauseBacklog(p *partition, ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.backlog != ch {
		return // drained, paused or ended meanwhile
	}
	p.clearBacklogLocked()
	if !p.paused {
		p.paused = true
		e.cons.Pause(p.tp)
	}
}

// clearBacklogLocked lets the transport deliver again; under p.mu.
func (p *partition) clearBacklogLocked() {
	if p.backlog != nil {
		close(p.backlog)
		p.backlog = nil
	}
}

// Error reports a group or fetch error: in a generation it is noted for
// Health; between generations the member is not in the group, which Health
// shows and the log says once a minute.
func (e *engine) Error(err error) {
	e.mu.Lock()
	if len(e.parts) > 0 {
		e.mu.Unlock()
		e.deps.health.note(err)
		return
	}
	now := time.Now()
	log := e.failingSince.IsZero() || now.Sub(e.lastLog) >= time.Minute
	if e.failingSince.IsZero() {
		e.failingSince = now
	}
	since := e.failingSince
	if log {
		e.lastLog = now
	}
	e.mu.Unlock()
	if e.deps.runCtx.Err() != nil {
		return
	}
	e.deps.health.fail(err)
	if log {
		e.deps.log.Warn("kavari: consumer group unavailable, retrying", "group", e.deps.cfg.Consume.GroupID,
			"for", now.Sub(since).Round(time.Second), "err", err)
	}
}

// next returns p's next record and when it was delivered, waiting for one;
// false when p's fetching ended. While none is waiting and the partition is
// paused, it resumes the partition as soon as the partition has room.
func (e *engine) next(p *partition) (*transport.Record, time.Time, bool) {
	for {
		p.mu.Lock()
		if len(p.pending) > 0 {
			rec := p.pending[0]
			p.pending[0] = nil
			p.pending = p.pending[1:]
			for len(p.fetched) > 1 && p.fetched[0].last < rec.Offset {
				p.fetched = p.fetched[1:]
			}
			at := p.fetched[0].at
			if p.backlog != nil && int64(len(p.pending)) <= p.share.Load()/2 {
				p.clearBacklogLocked()
			}
			p.mu.Unlock()
			return rec, at, true
		}
		p.pending = nil
		p.fetched = p.fetched[:0]
		paused := p.paused
		p.mu.Unlock()
		if paused {
			if !e.waitRoom(p.fetch, p) {
				return nil, time.Time{}, false
			}
			p.mu.Lock()
			if p.paused && len(p.pending) == 0 {
				p.paused = false
				e.cons.Resume(p.tp)
			}
			p.mu.Unlock()
			continue
		}
		select {
		case <-p.wake:
		case <-p.fetch.Done():
			return nil, time.Time{}, false
		}
	}
}

// feed dispatches partition p's records until its fetching ends, then waits
// for its in-flight records within the drain budget.
func (e *engine) feed(p *partition) {
	defer close(p.feederDone)
	defer func() {
		p.mu.Lock()
		p.clearBacklogLocked()
		p.mu.Unlock()
	}()
	ctx := p.fetch
	for {
		rec, at, ok := e.next(p)
		if !ok {
			break
		}
		if p.skipped(rec.Offset) {
			p.tracker.done(p.tracker.add(rec.Offset, at))
			continue
		}
		if !e.awaitDue(p, rec) { // a retry tier's record waits for its due time
			break
		}
		// The common case first: room, and a slot to take at once.
		if int64(p.tracker.window()) < p.share.Load() {
			if used, ok := e.deps.buf.tryAcquire(p); ok {
				e.dispatchNext(p, rec, at, used)
				continue
			}
		}
		// A buffer slot is taken once a record is in hand, so idle
		// partitions hold none; while all are taken, or this partition has
		// its share open, the partition is paused and its feeder waits with
		// one record in hand. A record not dispatched is not tracked, so
		// not committed. With WaitsForBacklog a partition at its share is
		// paused only once it waited stallPause for room: pausing drops
		// what kgo fetched for it, and handlers catching up with the feeder
		// free room within microseconds; meanwhile its backlog holds the
		// transport back.
		stall := false
		if !e.hasRoom(p) {
			if p.bq != nil {
				e.flushBatches(p) // they cannot grow while the partition waits
			}
			if e.caps.WaitsForBacklog {
				stall = true
			} else {
				e.pause(p)
			}
		}
		if !e.waitRoomStall(ctx, p, stall) {
			break
		}
		used, ok := e.deps.buf.tryAcquire(p)
		if !ok {
			// Every slot this partition may take is held: pause it and
			// wait (with WaitsForBacklog, pause it once it waited
			// stallPause: the slots of records just completed are given
			// back a moment after they stop counting as open). bufferFull
			// is set before waiting and only then, so Health never shows a
			// waiting feeder as fetching.
			p.bufferFull.Store(true)
			if p.bq != nil {
				e.flushBatches(p)
			}
			if e.caps.WaitsForBacklog {
				sctx, cancel := context.WithTimeout(ctx, stallPause)
				used, ok = e.deps.buf.acquire(sctx, p)
				cancel()
			}
			if !ok && ctx.Err() == nil {
				e.pause(p)
				used, ok = e.deps.buf.acquire(ctx, p)
			}
			p.bufferFull.Store(false)
			if !ok {
				break
			}
		}
		e.dispatchNext(p, rec, at, used)
	}
	if p.bq != nil {
		e.closeBatches(p)
	}
	// Revoked or stopping: let in-flight work finish within the drain
	// budget, which ends p.hard (Revoked's timer, or Stop's deadline).
	grace := e.deps.cfg.drainReserve() / 2
	if e.deps.stopping() {
		grace = min(grace, e.deps.stopGrace())
	}
	drained := make(chan struct{})
	go func() { p.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-p.hard.Done():
		// Handlers were cancelled; give them a moment to return, then leave
		// any that ignore their context behind. Their records stay uncommitted,
		// as do those parked for their messages.
		e.cutParked(p)
		select {
		case <-drained:
		case <-time.After(grace):
			e.deps.log.Error("kavari: handlers ignored cancellation; their records will be redelivered", "topic", p.topic, "partition", p.id)
			if e.deps.stopping() {
				e.deps.stopFailed(fmt.Errorf("%w: %s/%d", ErrHandlersAbandoned, p.topic, p.id))
			}
		}
	}
}

// skipped reports whether the previous owner of p completed the record at
// offset (it is listed in the metadata of the commit p was assigned with).
// Offsets arrive in increasing order, so runs behind offset are dropped.
func (p *partition) skipped(offset int64) bool {
	for len(p.skip) > 0 && p.skip[0].from+p.skip[0].n <= offset {
		p.skip = p.skip[1:]
	}
	return len(p.skip) > 0 && p.skip[0].from <= offset
}

// done marks j complete and wakes p's feeder if it waits for room and
// there is enough (roomAt).
func (e *engine) done(p *partition, j *job) {
	window := p.tracker.finish(j.seq)
	e.deps.hooks.onFinished(j.rec)
	e.roomMade(p, window)
}

// roomMade wakes p's feeder if it waits for room and its window of window
// records leaves enough (roomAt).
func (e *engine) roomMade(p *partition, window int) {
	if p.waiting.Load() && int64(window) <= roomAt(p.share.Load()) {
		select {
		case p.room <- struct{}{}:
		default:
		}
	}
}

// movingSpan × its share is how many open records a partition may have
// while records of its window are moving to a retry tier (offsetTracker's
// spanCap): the records after a moving one keep coming while its write is
// answered, up to that many.
const movingSpan = 4

// moving marks j's record moving to a retry tier (on: its write is under
// way) or not (its write failed: the partition holds at it again).
func (e *engine) moving(p *partition, j *job, on bool) {
	e.roomMade(p, p.tracker.setMoving(j.seq, on))
}

// dispatchNext hands rec, delivered at fetched, for which a buffer slot was
// taken (used slots held, all partitions), to its batch queue or its lane.
func (e *engine) dispatchNext(p *partition, rec *transport.Record, fetched time.Time, used int) {
	e.deps.pool.fit(used) // a lane holds a slot: as many workers as slots held never queue a lane
	if p.bq != nil {
		e.enqueue(p, rec)
	} else {
		e.dispatch(p, rec, fetched)
	}
}

// dispatch hands rec, delivered at fetched, to its lane: behind an earlier
// record with the same key (PerKey) or partition (PerPartition), or straight
// to a goroutine.
func (e *engine) dispatch(p *partition, rec *transport.Record, fetched time.Time) {
	j := &job{rec: rec, seq: p.tracker.addKey(rec.Offset, rec.Key, fetched)}
	j.ctx = handlerCtx{Context: p.hard, j: j, attempt: 1}
	p.inflight.Add(1)
	var key []byte
	switch e.deps.cfg.Consume.Ordering {
	case Unordered:
		e.deps.pool.submit(task{e: e, p: p, j: j})
		return
	case PerKey:
		if rec.Key == nil {
			e.deps.pool.submit(task{e: e, p: p, j: j}) // no key, no order to keep
			return
		}
		key = rec.Key
	}
	lk := laneKey(key)
	p.mu.Lock()
	if q, busy := p.lanes[lk]; busy {
		p.lanes[lk] = append(q, j)
		p.mu.Unlock()
		return
	}
	p.lanes[lk] = nil
	p.mu.Unlock()
	e.deps.pool.submit(task{e: e, p: p, key: key, ordered: true, j: j})
}

// runLane handles j, then, when ordered, every record queued behind it for
// key; it counts each record it starts in beat and returns how many it
// handled.
func (e *engine) runLane(p *partition, key []byte, ordered bool, j *job, r *resume, beat *atomic.Uint64) int {
	lk := laneKey(key)
	lane := laneRef{key: key, ordered: ordered} // park copies it: it stays on the stack
	for n := 1; ; n++ {
		beat.Add(1)
		if e.process(p, j, &lane, r) {
			return n // parked: park goes on with the lane
		}
		r = nil
		if !ordered {
			return n
		}
		p.mu.Lock()
		q := p.lanes[lk]
		if len(q) == 0 {
			delete(p.lanes, lk)
			p.mu.Unlock()
			return n
		}
		j = q[0]
		q[0] = nil
		p.lanes[lk] = q[1:]
		p.mu.Unlock()
	}
}

// laneKey is key as a lane's map key, without a copy: a map assignment with
// string(key) would copy it every time. The string shares the record's key
// bytes, which nothing changes: it keeps the first record of a lane in
// memory until the lane empties.
func laneKey(key []byte) string {
	if len(key) == 0 {
		return ""
	}
	return unsafe.String(&key[0], len(key))
}

// assigned returns the member's generation and its assigned partitions,
// in no order.
func (e *engine) assigned() (transport.Generation, []*partition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := make([]*partition, 0, len(e.parts))
	for _, p := range e.parts {
		ps = append(ps, p)
	}
	return e.gen, ps
}

// partitions returns the assigned partitions, ordered by topic and partition.
func (e *engine) partitions() []*partition {
	_, ps := e.assigned()
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].topic != ps[j].topic {
			return ps[i].topic < ps[j].topic
		}
		return ps[i].id < ps[j].id
	})
	return ps
}

// assignedLocked lists the assigned partitions by topic; under e.mu.
func (e *engine) assignedLocked() map[string][]int {
	m := map[string][]int{}
	for _, p := range e.parts {
		m[p.topic] = append(m[p.topic], p.id)
	}
	for _, ids := range m {
		sort.Ints(ids)
	}
	return m
}

// oldest returns the number of open records and the fetch time of the oldest.
func (e *engine) oldest() (open int, at time.Time) {
	for _, p := range e.partitions() {
		_, n, t := p.tracker.committable()
		open += n
		if n > 0 && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return open, at
}

// partitionHealth describes the partitions that have open records.
func (e *engine) partitionHealth() []PartitionHealth {
	var out []PartitionHealth
	now := time.Now()
	for _, p := range e.partitions() {
		if ph, open := p.health(now); open {
			out = append(out, ph)
		}
	}
	return out
}

// positions describes every assigned partition.
func (e *engine) positions() []PartitionHealth {
	ps := e.partitions()
	out := make([]PartitionHealth, 0, len(ps))
	now := time.Now()
	for _, p := range ps {
		ph, _ := p.health(now)
		out = append(out, ph)
	}
	return out
}
