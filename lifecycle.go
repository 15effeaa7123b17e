package kavari

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The consumer's lifecycle, behind Client.Start and Client.Stop: Start's
// checks and start-up work (prepare), launching the engine (launch), and
// Stop's shutdown in the order that loses nothing: stop fetching, drain
// within the budget (planStop), final commit, leave the group, flush the
// publisher, cut the connections (shutdown). This file exports nothing.

// start is Start: it prepares the consumer (prepare) and launches it
// (launch) under lifeMu, unless a Stop came first.
func (k *Client) start(ctx context.Context) error {
	k.lifeMu.Lock()
	if k.stopping.Load() {
		k.lifeMu.Unlock()
		return ErrClosed
	}
	if k.starting != nil || k.started.Load() {
		k.lifeMu.Unlock()
		return ErrStarted
	}
	done := make(chan struct{})
	k.starting = done
	k.lifeMu.Unlock()

	// Stop cancels the start-up work.
	sctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(k.runCtx, func() { cancel(ErrClosed) })
	table, err := k.prepare(sctx)
	unhook()
	cancel(nil)

	k.lifeMu.Lock()
	defer k.lifeMu.Unlock()
	defer func() { k.starting = nil; close(done) }()
	if k.stopping.Load() {
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
		return nil, ErrNoGroupID
	}
	if len(k.reg.table().subscribed()) == 0 {
		return nil, ErrNoHandlers
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
	k.dlqUnchecked = nil
	missing, err := k.missingTopics(ctx, names)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kavari: start: %w", context.Cause(ctx))
		}
		k.log.Warn("kavari: cannot check that the dead-letter topics exist; starting anyway, checking once the group is joined", "topics", names, "err", err)
		k.dlqUnchecked = names
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
	missing, err := k.missingTopics(k.runCtx, names)
	if err == nil && len(missing) > 0 && k.cfg.Publish.AllowAutoCreate {
		err = k.ensureTopics(k.runCtx, missing)
	} else if err == nil && len(missing) > 0 {
		err = &MissingTopicsError{Topics: missing}
	}
	if err != nil && k.runCtx.Err() == nil {
		k.log.Error("kavari: dead-letter topics: a poison record will hold its partition's commits", "err", err)
		k.health.note(err)
	}
}

// missingTopics returns the names the brokers do not know.
func (k *Client) missingTopics(ctx context.Context, names []string) ([]string, error) {
	return k.admin.MissingTopics(ctx, names...)
}

// launch creates the consumer and starts its goroutines. Called under
// lifeMu, after prepare.
func (k *Client) launch(table *routeTable) error {
	topics := table.subscribed()
	cons, err := k.tr.NewConsumer(k.cfg.transportConfig(topics))
	if err != nil {
		return fmt.Errorf("kavari: consumer: %w", err)
	}
	k.cons = cons
	k.started.Store(true)
	k.health.start(topics)
	k.health.setTopicNames(table.real)
	if k.cfg.Topics.Name != nil {
		k.log.Info("kavari: topic names (Config.Topics.Name)", "topics", describeTopicNames(table.real))
	}
	k.pool = newWorkerPool(k.cfg.Consume.MaxBuffered, k.workerIdle, &k.workers) // workers start on demand
	k.pool.ids = &k.workerIDs
	e := newEngine(k.engineDeps(), table, cons, k.tr.Capabilities())
	k.eng.Store(e)
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

		buf:       k.buf,
		running:   k.running,
		pool:      k.pool,
		metaLimit: &k.metaLimit,

		runCtx:     k.runCtx,
		hardCtx:    k.hardCtx,
		loopDone:   k.loopDone,
		stopping:   k.stopping.Load,
		stopGrace:  func() time.Duration { return time.Duration(k.stopGrace.Load()) },
		stopFailed: k.stopFailed,
		commitLost: k.commitLost,

		dlqUnchecked: k.dlqUnchecked,
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
				go func() { <-k.stopDone; cancel() }()
			}()
		}
	}
	first := false
	k.stopOnce.Do(func() {
		first = true
		k.lifeMu.Lock()
		k.planStop(sctx)
		k.stopping.Store(true)
		starting := k.starting
		k.lifeMu.Unlock()
		k.runCancel() // also cancels a Start under way
		go k.shutdown(sctx, starting)
	})
	if inHandler {
		return k.stopFromHandler(ctx)
	}
	select {
	case <-k.stopDone:
		return k.stopErr
	case <-ctx.Done():
		select {
		case <-k.stopDone: // finished at the deadline: its own error says more
			return k.stopErr
		default:
		}
		if !first {
			// The first Stop's ctx bounds the shutdown, not this one's: cutting
			// the connections here would fail the first Stop's flush and
			// commit.
			return fmt.Errorf("kavari: stop: the Stop under way did not finish by this call's deadline (it goes on): %w", context.Cause(ctx))
		}
		k.cutConnections() // what is still running ends now, see cutConnections
		k.stopMu.Lock()
		errs := append([]error{fmt.Errorf("kavari: stop: not finished by the deadline (work not committed will be redelivered): %w", context.Cause(ctx))}, k.stopErrs...)
		k.stopMu.Unlock()
		if err := k.uncommitted(ctx, true); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// ctxClientKey is the key of the Client whose handler a context belongs to
// (every handler's context derives from Client.hardCtx, which carries it).
type ctxClientKey struct{}

// inHandler reports whether ctx, or the calling goroutine, is one of k's
// handlers': ctx derives from a handler's context, or the caller runs on a
// worker (a handler's own goroutine).
func (k *Client) inHandler(ctx context.Context) bool {
	if c, _ := ctx.Value(ctxClientKey{}).(*Client); c == k {
		return true
	}
	_, worker := k.workerIDs.Load(goroutineID())
	return worker
}

// stopFromHandler is Stop called from a handler, the shutdown under way: it
// does not wait for the calling handler (the drain does, and commits its
// outcome), only for every other handler to finish. It returns nil then;
// the shutdown's error when it finished first (it cannot, unless the
// calling handler was abandoned); ctx's error when ctx ended first, the
// shutdown going on in the background.
func (k *Client) stopFromHandler(ctx context.Context) error {
	k.inStop.Add(1)
	defer k.inStop.Add(-1)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// Handlers blocked in Stop hold a run slot each; any other slot
		// is a handler still running.
		if len(k.running) <= int(k.inStop.Load()) {
			return nil
		}
		select {
		case <-k.stopDone:
			return k.stopErr
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
		k.stopGrace.Store(int64(time.Second))
		return
	}
	reserve := min(max(time.Until(deadline)/4, 100*time.Millisecond), 2*time.Second)
	k.stopGrace.Store(int64(reserve / 2))
	k.drainTimer = time.AfterFunc(time.Until(deadline.Add(-reserve)), k.hardCancel)
}

// shutdown does the shutdown for the first Stop call, whose ctx sets the
// deadline. starting, when not nil, is closed when a Start under way has
// returned.
func (k *Client) shutdown(ctx context.Context, starting <-chan struct{}) {
	// Past the drain budget (planStop) or when ctx ends, handlers are cancelled.
	stopAfter := context.AfterFunc(ctx, k.hardCancel)
	defer stopAfter()
	if k.drainTimer != nil {
		defer k.drainTimer.Stop()
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
	if k.started.Load() {
		closed := make(chan struct{})
		go func() {
			// The transport revokes every partition (drain, final
			// commit), leaves the group and returns from Run.
			_ = k.cons.Close(ctx)
			<-k.loopDone
			// The transport returned from Run: every feeder has ended, nothing dispatches any more.
			k.pool.close()
			k.stopMu.Lock()
			abandoned := k.abandoned
			k.stopMu.Unlock()
			if !abandoned {
				k.workers.Wait() // the workers are idle or finishing their last record
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
	k.stopMu.Lock()
	errs = append(errs, k.stopErrs...)
	k.stopMu.Unlock()
	if err := k.pub.close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kavari: stop: publisher did not flush in time: %w", err))
	}
	k.hardCancel()
	k.cutConnections()
	if err := k.uncommitted(ctx, late); err != nil {
		errs = append(errs, err)
	}
	k.health.stop()
	k.stopErr = errors.Join(errs...)
	close(k.stopDone)
}

// cutConnections closes every broker connection kavari opened, through
// the transport. After a clean Stop only idle connections are left; after a
// Stop that hit its deadline (brokers that do not answer) this is what ends
// the group's close, the fetches and their requests at once, instead of
// waiting out the client's own timeouts.
func (k *Client) cutConnections() {
	if k.started.Load() {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		_ = k.cons.Close(done)
	}
	_ = k.pub.prod.Close()
	_ = k.admin.Close()
}

// stopFailed records something the consumer left undone while stopping; Stop
// returns it.
func (k *Client) stopFailed(err error) {
	k.stopMu.Lock()
	defer k.stopMu.Unlock()
	k.stopErrs = append(k.stopErrs, err)
	k.abandoned = k.abandoned || errors.Is(err, ErrHandlersAbandoned)
}

// uncommitted returns the *CommitError Stop reports, if any: the last
// revoke's failed final commit (lostCommit) or, when Stop ran out of time
// (late), what completed and is not known to be committed, as the final
// commit was not answered (or not sent) by the deadline. Called after the
// connections were cut.
func (k *Client) uncommitted(ctx context.Context, late bool) error {
	var unanswered error
	if e := k.eng.Load(); late && e != nil {
		// Looked at before lostCommit: a revoke records its failed commit
		// there before it releases its partitions.
		if offsets := e.uncommitted(); len(offsets) > 0 {
			unanswered = &CommitError{Offsets: offsets, MayHaveBeenApplied: true, Err: fmt.Errorf("kavari: final commit not answered by Stop's deadline: %w", context.Cause(ctx))}
		}
	}
	k.stopMu.Lock()
	defer k.stopMu.Unlock()
	if k.lostCommit != nil {
		return k.lostCommit
	}
	return unanswered
}

// commitLost records the failed final commit of a revoke (nil: partitions
// were assigned again, whose owners get those records again). Stop returns
// it: the completed records it covered are redelivered.
func (k *Client) commitLost(err error) {
	k.stopMu.Lock()
	defer k.stopMu.Unlock()
	k.lostCommit = err
}
