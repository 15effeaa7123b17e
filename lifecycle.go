package kavari

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// The consumer's lifecycle, behind Client.Start and Client.Stop: Start's
// checks and start-up work (prepare), launching the engine (launch), and
// Stop's shutdown in the order that loses nothing: stop fetching, drain
// within the budget (planStop), final commit, leave the group, flush the
// publisher, cut the connections (shutdown). This file exports nothing.

// consumer is what Start launches and Stop shuts down, and the bounds the
// engine shares with Health. The bounds are made by New; the rest is set
// by launch, under lifecycle.mu, and read after it.
type consumer struct {
	buf       *recordBuffer // records fetched and not finished (MaxBuffered), buffer.go
	running   runSlots      // handlers running (MaxInFlight), workers.go
	metaLimit metaLimiter   // bounds commit metadata; shrinks when the brokers refuse it as too long

	cons     transport.Consumer
	eng      atomic.Pointer[engine]
	loopDone chan struct{} // closed when the engine's run returned

	pool       *workerPool    // runs lanes (workers.go)
	workerIDs  sync.Map       // goroutine ids of the pool's workers (workerPool.ids)
	workers    sync.WaitGroup // the worker goroutines
	workerIdle time.Duration  // an idle worker exits after this long

	dlqUnchecked []string // dead-letter topics Start could not check; the engine checks them once joined
}

// lifecycle orders Start against Stop and carries Stop's time budget and
// outcome.
type lifecycle struct {
	mu       sync.Mutex    // orders Start against Stop
	starting chan struct{} // closed when the Start under way returns; nil when none, under mu
	started  atomic.Bool   // the consumer runs: a Start succeeded
	stopping atomic.Bool   // Stop was called; set under mu
	stopOnce sync.Once     // the first Stop plans and starts the shutdown

	runCtx     context.Context // ends when Stop begins
	runCancel  context.CancelFunc
	hardCtx    context.Context // ends when Stop's drain budget is spent: handlers are cancelled
	hardCancel context.CancelFunc
	stopGrace  atomic.Int64 // how long cancelled handlers get to return when stopping
	drainTimer *time.Timer  // cancels handlers a reserve before Stop's deadline
	inStop     atomic.Int64 // handlers waiting in Stop (stopFromHandler)

	stopDone chan struct{} // closed when the shutdown is over; stopErr is then its result
	stopErr  error

	stopMu     sync.Mutex
	stopErrs   []error // what the consumer left undone while stopping (abandoned handlers); under stopMu
	abandoned  bool    // handlers ignored cancellation at Stop: do not wait for their workers; under stopMu
	lostCommit error   // the failed final commit of the last revoke, until partitions are assigned again; under stopMu
}

// start is Start: it prepares the consumer (prepare) and launches it
// (launch) under lifecycle.mu, unless a Stop came first.
func (k *Client) start(ctx context.Context) error {
	k.life.mu.Lock()
	if k.life.stopping.Load() {
		k.life.mu.Unlock()
		return ErrClosed
	}
	if k.life.starting != nil || k.life.started.Load() {
		k.life.mu.Unlock()
		return errStarted
	}
	done := make(chan struct{})
	k.life.starting = done
	k.life.mu.Unlock()

	// Stop cancels the start-up work.
	sctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(k.life.runCtx, func() { cancel(ErrClosed) })
	table, err := k.prepare(sctx)
	unhook()
	cancel(nil)

	k.life.mu.Lock()
	defer k.life.mu.Unlock()
	defer func() { k.life.starting = nil; close(done) }()
	if k.life.stopping.Load() {
		if err == nil {
			k.reg.thaw()
		}
		return ErrClosed
	}
	if err != nil {
		return err
	}
	if err := k.launch(table); err != nil {
		k.reg.thaw()
		return err
	}
	return nil
}

// prepare does Start's checks and start-up work and freezes the registry;
// when it fails, the registry is as it was.
func (k *Client) prepare(ctx context.Context) (*routeTable, error) {
	if k.cfg.Consume.GroupID == "" {
		return nil, errNoGroupID
	}
	if len(k.reg.table().subscribed()) == 0 {
		return nil, errNoHandlers
	}
	table, err := k.names.route(k.reg.freeze())
	if err != nil {
		k.reg.thaw()
		return nil, err
	}
	err = k.checkHandlers(table)
	if err == nil && k.cfg.Topics.Create {
		err = k.EnsureTopics(ctx)
	} else if err == nil {
		err = k.checkDeadLetterTopics(ctx, table.subscribed())
	}
	if err != nil {
		k.reg.thaw()
		return nil, err
	}
	return table, nil
}

// checkDeadLetterTopics makes sure the dead-letter topic of every subscribed
// topic exists: without it a poison record would hold its partition's
// commits forever. Missing ones are created when Config.Publish.AllowAutoCreate is
// set; otherwise Start fails naming them. Brokers that cannot be asked are
// not an error (the consumer waits for them); that is logged.
func (k *Client) checkDeadLetterTopics(ctx context.Context, subscribed []string) error {
	names := make([]string, len(subscribed))
	for i, t := range subscribed {
		names[i] = t + k.cfg.Topics.DeadLetterSuffix
	}
	names = append(names, k.cfg.retryTopicsOf(subscribed)...) // Consume.RetryTopics
	k.consumer.dlqUnchecked = nil
	missing, err := k.missingTopics(ctx, names)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kavari: start: %w", context.Cause(ctx))
		}
		k.log.Warn("kavari: cannot check that the dead-letter topics exist; starting anyway, checking once the group is joined", "topics", names, "err", err)
		k.consumer.dlqUnchecked = names
		return nil
	}
	if len(missing) == 0 {
		return nil
	}
	if k.cfg.Publish.AllowAutoCreate {
		return k.ensureTopics(ctx, missing)
	}
	return &MissingTopicsError{Topics: missing}
}

// recheckDeadLetterTopics is checkDeadLetterTopics for a consumer whose
// brokers could not be asked at Start, run once the group is joined. It can
// no longer fail Start: a missing topic is created when allowed, otherwise
// logged as an error and shown in Health.
func (k *Client) recheckDeadLetterTopics(names []string) {
	missing, err := k.missingTopics(k.life.runCtx, names)
	if err == nil && len(missing) > 0 && k.cfg.Publish.AllowAutoCreate {
		err = k.ensureTopics(k.life.runCtx, missing)
	} else if err == nil && len(missing) > 0 {
		err = &MissingTopicsError{Topics: missing}
	}
	if err != nil && k.life.runCtx.Err() == nil {
		k.log.Error("kavari: dead-letter topics: a poison record will hold its partition's commits", "err", err)
		k.health.note(err)
	}
}

// missingTopics returns the names the brokers do not know.
func (k *Client) missingTopics(ctx context.Context, names []string) ([]string, error) {
	return k.admin.MissingTopics(ctx, names...)
}

// launch creates the consumer and starts its goroutines. Called under
// lifecycle.mu, after prepare.
func (k *Client) launch(table *routeTable) error {
	topics := append(table.subscribed(), k.cfg.retryTopicsOf(table.subscribed())...)
	tc := k.cfg.transportConfig(topics)
	if eo := k.cfg.Consume.ExactlyOnce; eo.enabled() {
		if err := checkExactlyOnce(table); err != nil {
			return err
		}
		tc.TransactionalID, tc.TransactionTimeout = k.cfg.transactionalID(), eo.TransactionTimeout
	}
	cons, err := k.tr.NewConsumer(tc)
	if err != nil {
		return fmt.Errorf("kavari: consumer: %w", err)
	}
	k.consumer.cons = cons
	k.life.started.Store(true)
	k.health.start(topics)
	k.health.setTopicNames(table.real)
	if k.cfg.Topics.Name != nil {
		k.log.Info("kavari: topic names (Config.Topics.Name)", "topics", describeTopicNames(table.real))
	}
	k.consumer.pool = newWorkerPool(k.cfg.Consume.MaxBuffered, k.consumer.workerIdle, &k.consumer.workers) // workers start on demand
	k.consumer.pool.ids = &k.consumer.workerIDs
	deps := k.engineDeps()
	var w *window
	if k.cfg.Consume.ExactlyOnce.enabled() {
		tx, ok := cons.(transport.Transactional)
		if !ok {
			return errors.New("kavari: Consume.ExactlyOnce: the transport's consumer is not transactional")
		}
		w = newWindow(tx, k.cfg.Consume.ExactlyOnce.Interval, k.cfg.Hooks)
		deps.hardCtx = context.WithValue(deps.hardCtx, ctxTxnKey{}, w) // every handler's context, and its dead letters'
	}
	e := newEngine(deps, table, cons, k.tr.Capabilities())
	e.eos = w
	e.retry = newRetryTiers(&k.cfg, table.subscribed())
	k.consumer.eng.Store(e)
	go e.run()
	return nil
}

// engineDeps is what the engine uses of k: launch builds it once, after
// the pool.
func (k *Client) engineDeps() engineDeps {
	return engineDeps{
		cfg:        &k.cfg,
		log:        k.log,
		hooks:      k.hooks,
		health:     &k.health,
		middleware: k.middleware,
		resolve:    k.resolve,
		write:      k.pub.write,
		admin:      k.admin,

		buf:       k.consumer.buf,
		running:   k.consumer.running,
		pool:      k.consumer.pool,
		metaLimit: &k.consumer.metaLimit,

		runCtx:     k.life.runCtx,
		hardCtx:    k.life.hardCtx,
		loopDone:   k.consumer.loopDone,
		stopping:   k.life.stopping.Load,
		stopGrace:  func() time.Duration { return time.Duration(k.life.stopGrace.Load()) },
		stopFailed: k.life.stopFailed,
		commitLost: k.life.commitLost,

		dlqUnchecked: k.consumer.dlqUnchecked,
		recheckDLQ:   k.recheckDeadLetterTopics,
	}
}

// stop is Stop: the first call plans the time budget (planStop) and starts
// the shutdown (shutdown); every call waits for it, or for its own ctx.
func (k *Client) stop(ctx context.Context) error {
	inHandler := k.inHandler(ctx)
	sctx := ctx // bounds the shutdown
	if inHandler {
		// The shutdown outlives the calling handler, whose return it
		// waits for: it keeps ctx's deadline, not its cancellation (a
		// handler's context, or one it cancels when it returns).
		sctx = context.WithoutCancel(ctx)
		if d, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			sctx, cancel = context.WithDeadline(sctx, d)
			defer func() {
				go func() { <-k.life.stopDone; cancel() }()
			}()
		}
	}
	first := false
	k.life.stopOnce.Do(func() {
		first = true
		k.life.mu.Lock()
		k.planStop(sctx)
		k.life.stopping.Store(true)
		starting := k.life.starting
		k.life.mu.Unlock()
		k.life.runCancel() // also cancels a Start under way
		go k.shutdown(sctx, starting)
	})
	if inHandler {
		return k.stopFromHandler(ctx)
	}
	select {
	case <-k.life.stopDone:
		return k.life.stopErr
	case <-ctx.Done():
		select {
		case <-k.life.stopDone: // finished at the deadline: its own error says more
			return k.life.stopErr
		default:
		}
		if !first {
			// The first Stop's ctx bounds the shutdown, not this one's: cutting
			// the connections here would fail the first Stop's flush and
			// commit.
			return fmt.Errorf("kavari: stop: the Stop under way did not finish by this call's deadline (it goes on): %w", context.Cause(ctx))
		}
		k.cutConnections() // what is still running ends now, see cutConnections
		k.life.stopMu.Lock()
		errs := append([]error{fmt.Errorf("kavari: stop: not finished by the deadline (work not committed will be redelivered): %w", context.Cause(ctx))}, k.life.stopErrs...)
		k.life.stopMu.Unlock()
		if err := k.uncommitted(ctx, true); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// ctxClientKey is the key of the Client whose handler a context belongs to
// (every handler's context derives from lifecycle.hardCtx, which carries it).
type ctxClientKey struct{}

// inHandler reports whether ctx, or the calling goroutine, is one of k's
// handlers': ctx derives from a handler's context, or the caller runs on a
// worker (a handler's own goroutine).
func (k *Client) inHandler(ctx context.Context) bool {
	if c, _ := ctx.Value(ctxClientKey{}).(*Client); c == k {
		return true
	}
	_, worker := k.consumer.workerIDs.Load(goroutineID())
	return worker
}

// stopFromHandler is Stop called from a handler, the shutdown under way: it
// does not wait for the calling handler (the drain does, and commits its
// outcome), only for every other handler to finish. It returns nil then;
// the shutdown's error when it finished first (it cannot, unless the
// calling handler was abandoned); ctx's error when ctx ended first, the
// shutdown going on in the background.
func (k *Client) stopFromHandler(ctx context.Context) error {
	k.life.inStop.Add(1)
	defer k.life.inStop.Add(-1)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// Handlers blocked in Stop hold a run slot each; any other slot
		// is a handler still running.
		if len(k.consumer.running) <= int(k.life.inStop.Load()) {
			return nil
		}
		select {
		case <-k.life.stopDone:
			return k.life.stopErr
		case <-ctx.Done():
			return fmt.Errorf("kavari: stop (called from a handler): other handlers still running when ctx ended; the shutdown goes on: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// planStop splits the first Stop's time budget: handlers may run until a
// reserve before ctx's deadline; the reserve is for cancelled handlers to
// return, the final commit, leaving the group and flushing. Without the
// reserve the commit would come after Stop returned, and a process that exits
// then would lose it (found by the graceful-stop fault test).
func (k *Client) planStop(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	if !ok {
		k.life.stopGrace.Store(int64(time.Second))
		return
	}
	reserve := min(max(time.Until(deadline)/4, 100*time.Millisecond), 2*time.Second)
	k.life.stopGrace.Store(int64(reserve / 2))
	k.life.drainTimer = time.AfterFunc(time.Until(deadline.Add(-reserve)), k.life.hardCancel)
}

// shutdown does the shutdown for the first Stop call, whose ctx sets the
// deadline. starting, when not nil, is closed when a Start under way has
// returned.
func (k *Client) shutdown(ctx context.Context, starting <-chan struct{}) {
	// Past the drain budget (planStop) or when ctx ends, handlers are cancelled.
	stopAfter := context.AfterFunc(ctx, k.life.hardCancel)
	defer stopAfter()
	if k.life.drainTimer != nil {
		defer k.life.drainTimer.Stop()
	}
	var errs []error
	late := false // the consumer did not finish by the deadline
	if starting != nil {
		// Start sees that Stop was called and launches nothing.
		select {
		case <-starting:
		case <-ctx.Done():
		}
	}
	if k.life.started.Load() {
		closed := make(chan struct{})
		go func() {
			// Exactly-once: the last window commits what finished first.
			if e := k.consumer.eng.Load(); e != nil && e.eos != nil {
				e.eos.finish(ctx)
			}
			// The transport revokes every partition (drain, final
			// commit), leaves the group and returns from Run.
			_ = k.consumer.cons.Close(ctx)
			<-k.consumer.loopDone
			// The transport returned from Run: every feeder has ended, nothing dispatches any more.
			k.consumer.pool.close()
			k.life.stopMu.Lock()
			abandoned := k.life.abandoned
			k.life.stopMu.Unlock()
			if !abandoned {
				k.consumer.workers.Wait() // the workers are idle or finishing their last record
			}
			close(closed)
		}()
		select {
		case <-closed:
		case <-ctx.Done():
			late = true
			errs = append(errs, fmt.Errorf("kavari: stop: consumer did not finish in time: %w", context.Cause(ctx)))
		}
	}
	k.life.stopMu.Lock()
	errs = append(errs, k.life.stopErrs...)
	k.life.stopMu.Unlock()
	if err := k.pub.close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kavari: stop: publisher did not flush in time: %w", err))
	}
	k.life.hardCancel()
	k.cutConnections()
	if err := k.uncommitted(ctx, late); err != nil {
		errs = append(errs, err)
	}
	k.health.stop()
	k.life.stopErr = errors.Join(errs...)
	close(k.life.stopDone)
}

// cutConnections closes every broker connection kavari opened, through
// the transport. After a clean Stop only idle connections are left; after a
// Stop that hit its deadline (brokers that do not answer) this is what ends
// the group's close, the fetches and their requests at once, instead of
// waiting out the client's own timeouts.
func (k *Client) cutConnections() {
	if k.life.started.Load() {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		_ = k.consumer.cons.Close(done)
	}
	_ = k.pub.prod.Close()
	_ = k.admin.Close()
}

// uncommitted returns the *CommitError Stop reports, if any: the last
// revoke's failed final commit (lostCommit) or, when Stop ran out of time
// (late), what completed and is not known to be committed, as the final
// commit was not answered (or not sent) by the deadline. Called after the
// connections were cut.
func (k *Client) uncommitted(ctx context.Context, late bool) error {
	var unanswered error
	if e := k.consumer.eng.Load(); late && e != nil {
		// Looked at before lostCommit: a revoke records its failed commit
		// there before it releases its partitions.
		if offsets := e.uncommitted(); len(offsets) > 0 {
			unanswered = &CommitError{Offsets: offsets, MayHaveBeenApplied: true, Err: fmt.Errorf("kavari: final commit not answered by Stop's deadline: %w", context.Cause(ctx))}
		}
	}
	k.life.stopMu.Lock()
	defer k.life.stopMu.Unlock()
	if k.life.lostCommit != nil {
		return k.life.lostCommit
	}
	return unanswered
}

// stopFailed records something the consumer left undone while stopping; Stop
// returns it.
func (l *lifecycle) stopFailed(err error) {
	l.stopMu.Lock()
	defer l.stopMu.Unlock()
	l.stopErrs = append(l.stopErrs, err)
	l.abandoned = l.abandoned || errors.Is(err, ErrHandlersAbandoned)
}

// commitLost records the failed final commit of a revoke (nil: partitions
// were assigned again, whose owners get those records again). Stop returns
// it: the completed records it covered are redelivered.
func (l *lifecycle) commitLost(err error) {
	l.stopMu.Lock()
	defer l.stopMu.Unlock()
	l.lostCommit = err
}
