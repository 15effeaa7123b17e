// Package kavari makes Kafka publish/subscribe typed, validated and safe.
//
// A message is a Go struct that embeds kavari.Message; its tag names the topic
// and the field holding the partition key, and `validate` tags (from
// go-playground/validator) say what a valid message is:
//
//	type OrderPlaced struct {
//		kavari.Message `kavari:"topic=orders,key=OrderID"`
//		OrderID string `json:"order_id" validate:"required"`
//		Amount  int64  `json:"amount"   validate:"gt=0"`
//	}
//
// Handlers are registered per message type, and a Kavari publishes and
// consumes:
//
//	kavari.RegisterFunc(&OrderPlaced{}, func(ctx context.Context, m *OrderPlaced) error { ... })
//	k, err := kavari.New(kavari.Config{Brokers: brokers, GroupID: "billing"})
//	err = k.Start(ctx)                // consume in the background
//	err = k.Publish(ctx, &OrderPlaced{OrderID: "o-1", Amount: 10})
//	err = k.Stop(ctx)                 // drain, commit, leave the group, flush
//
// Guarantees: a published message is acknowledged by all in-sync replicas
// before Publish returns. A consumed record is committed only after every
// handler returned nil for it or it was written to the dead-letter topic, so
// delivery is at-least-once; records with the same key on one partition are
// handled one at a time in offset order (Ordering PerKey).
package kavari

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kavari publishes and consumes typed messages. Create it with New; it is safe
// for concurrent use.
type Kavari struct {
	cfg Config
	log *slog.Logger
	reg *Registry
	pub *publisher

	provider atomic.Pointer[Provider]
	sem      chan struct{} // records fetched and not finished (MaxBuffered)
	running  chan struct{} // records being handled (MaxInFlight)
	health   health

	startOnce  sync.Once
	started    atomic.Bool
	stopping   atomic.Bool
	stopOnce   sync.Once
	stopGrace  atomic.Int64 // how long cancelled handlers get to return when stopping
	drainTimer *time.Timer  // cancels handlers a reserve before Stop's deadline
	stopDone   chan struct{}
	stopErr    error

	tasks   chan task      // lanes handed to idle workers (submit)
	workers sync.WaitGroup // the worker goroutines

	nworkers   atomic.Int64  // workers running, at most MaxBuffered
	workerIdle time.Duration // an idle worker exits after this long

	group      *kafka.ConsumerGroup
	runCtx     context.Context // ends when Stop begins
	runCancel  context.CancelFunc
	hardCtx    context.Context // ends when Stop's deadline passes: handlers are cancelled
	hardCancel context.CancelFunc
	loopDone   chan struct{}
}

// New checks cfg and returns a Kavari ready to publish. It does not contact
// the brokers: a Kafka that is down at boot does not stop the application.
// Call Stop when done with it, whether or not Start was called: Stop
// releases the publisher's goroutines and broker connections, which
// otherwise live as long as the process.
func New(cfg Config) (*Kavari, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	k := &Kavari{
		cfg:      cfg,
		log:      cfg.Logger,
		reg:      cfg.Registry,
		sem:      make(chan struct{}, cfg.MaxBuffered),
		running:  make(chan struct{}, cfg.MaxInFlight),
		stopDone: make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	k.workerIdle = workerIdle
	k.runCtx, k.runCancel = context.WithCancel(context.Background())
	k.hardCtx, k.hardCancel = context.WithCancel(context.Background())
	k.pub = newPublisher(&k.cfg, newEncoder(cfg.Source, cfg.MaxMessageBytes, cfg.Clock.Now))
	return k, nil
}

// Publish validates msg (a pointer to a kavari message struct), sends it and
// returns once all in-sync replicas acknowledged it, retrying retriable
// failures with Config.PublishRetry. An invalid message returns an error
// matching ErrInvalid and is not sent. A topic the brokers do not know
// (with AllowAutoCreate off) fails after a few attempts with an error
// matching ErrUnknownTopic. When ctx ends during a write, or an attempt
// failed after its request may have reached the broker, the error is a
// *PublishError whose MayHaveBeenWritten is true.
func (k *Kavari) Publish(ctx context.Context, msg any) error {
	if errs := k.pub.publish(ctx, []any{msg}); errs != nil {
		return errs[0]
	}
	return nil
}

// PublishBatch publishes msgs together. If any message is invalid, none is
// sent. Otherwise each message is retried on its own. The error is a
// *BatchError listing one *PublishError per message that failed (its Index
// says which) and whether the batch was refused whole.
func (k *Kavari) PublishBatch(ctx context.Context, msgs ...any) error {
	errs := k.pub.publish(ctx, msgs)
	if errs == nil {
		return nil
	}
	be := &BatchError{}
	for i, e := range errs {
		if e == nil {
			continue
		}
		pe, ok := e.(*PublishError)
		if ok {
			pe.Index = i
		} else {
			pe = &PublishError{Index: i, Err: e}
			if !errors.Is(e, ErrClosed) && !errors.Is(e, errBatchRefused) {
				be.Refused = true // encoding failed: nothing was sent
			}
		}
		be.Failed = append(be.Failed, pe)
	}
	return be
}

// PublishAsync validates msg and queues it for publishing; callback (which may
// be nil) runs exactly once with msg and the outcome, nil when acknowledged.
// Messages with the same key are written in call order (a retried write can
// still land after later ones, as with concurrent Publish calls).
// When the queue (Config.AsyncQueue) is full, PublishAsync blocks until there
// is room; TryPublishAsync returns ErrQueueFull instead. An invalid message,
// or one published after Stop, gets its callback before PublishAsync returns.
//
// Callbacks run one at a time, in order, on the goroutine of the async writer
// that wrote the message: while one runs, that writer writes nothing. A
// callback may call Publish, PublishBatch, PublishAsync and TryPublishAsync:
// a PublishAsync from a callback never waits for room (it is queued beyond
// Config.AsyncQueue when the queue is full), so it cannot deadlock the
// writer. A callback should not block for long (a Publish from it holds its
// writer for a round trip), must not wait for other goroutines that publish
// with PublishAsync, and must not call Stop.
func (k *Kavari) PublishAsync(msg any, callback func(msg any, err error)) {
	k.pub.enqueue(msg, callback)
}

// TryPublishAsync is PublishAsync without waiting: when msg's queue is full
// it returns ErrQueueFull. It returns msg's validation or encoding error,
// and ErrClosed after Stop. When it returns an error nothing was queued and
// callback is never called; when it returns nil, callback (which may be nil)
// runs exactly once, as for PublishAsync.
func (k *Kavari) TryPublishAsync(msg any, callback func(msg any, err error)) error {
	return k.pub.tryEnqueue(msg, callback)
}

// SetProvider sets the function that resolves handler instances, such as a DI
// container's resolve method; see Provider. It may be called at any time.
func (k *Kavari) SetProvider(p Provider) {
	if p == nil {
		k.provider.Store(nil)
		return
	}
	k.provider.Store(&p)
}

// Start begins consuming every topic that has a registered handler, in the
// background, and freezes the registry. ctx bounds only the start-up work
// (creating topics when Config.CreateTopics is set); the consumer runs until
// Stop. Start fails when there is no GroupID or no handler; a broker that is
// down is not an error: the consumer keeps trying and Health shows it.
func (k *Kavari) Start(ctx context.Context) error {
	if k.stopping.Load() {
		return ErrClosed
	}
	err := ErrStarted
	k.startOnce.Do(func() { err = k.start(ctx) })
	return err
}

func (k *Kavari) start(ctx context.Context) error {
	if k.cfg.GroupID == "" {
		return ErrNoGroupID
	}
	if len(k.reg.table().subscribed()) == 0 {
		return ErrNoHandlers
	}
	table := k.reg.freeze()
	topics := table.subscribed()
	if k.cfg.CreateTopics {
		if err := k.EnsureTopics(ctx); err != nil {
			return err
		}
	}
	start := kafka.FirstOffset
	if k.cfg.AutoOffsetReset == Latest {
		start = kafka.LastOffset
	}
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    k.cfg.GroupID,
		Brokers:               k.cfg.Brokers,
		Dialer:                k.cfg.dialer(),
		Topics:                topics,
		HeartbeatInterval:     k.cfg.Heartbeat,
		SessionTimeout:        k.cfg.SessionTimeout,
		RebalanceTimeout:      k.cfg.RebalanceTimeout,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           start,
		Timeout:               10 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			k.log.Debug("kavari: group: " + fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("kavari: consumer group: %w", err)
	}
	k.group = group
	k.started.Store(true)
	k.health.start(topics)
	k.tasks = make(chan task) // workers start on demand (submit)
	go k.consumeLoop(group, table)
	return nil
}

// Stop shuts kavari down: it stops fetching, lets in-flight handlers finish
// until ctx's deadline, then cancels their contexts; commits what completed;
// leaves the group; and flushes queued PublishAsync messages and closes the
// publisher. Work that did not complete is redelivered to the next owner of
// its partition. Stop returns by ctx's deadline even when the brokers are
// gone (the error then says what was left undone). It is idempotent: later
// calls wait for the first and return its result.
func (k *Kavari) Stop(ctx context.Context) error {
	k.stopOnce.Do(func() {
		k.planStop(ctx)
		k.stopping.Store(true)
		go k.stop(ctx)
	})
	select {
	case <-k.stopDone:
		return k.stopErr
	case <-ctx.Done():
		select {
		case <-k.stopDone: // finished at the deadline: its own error says more
			return k.stopErr
		default:
		}
		return fmt.Errorf("kavari: stop: not finished by the deadline (work not committed will be redelivered): %w", context.Cause(ctx))
	}
}

// planStop splits the first Stop's time budget: handlers may run until a
// reserve before ctx's deadline; the reserve is for cancelled handlers to
// return, the final commit, leaving the group and flushing. Without the
// reserve the commit would come after Stop returned, and a process that exits
// then would lose it (found by the graceful-stop fault test).
func (k *Kavari) planStop(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	if !ok {
		k.stopGrace.Store(int64(time.Second))
		return
	}
	reserve := min(max(time.Until(deadline)/4, 100*time.Millisecond), 2*time.Second)
	k.stopGrace.Store(int64(reserve / 2))
	k.drainTimer = time.AfterFunc(time.Until(deadline.Add(-reserve)), k.hardCancel)
}

// stop does the shutdown for the first Stop call, whose ctx sets the deadline.
func (k *Kavari) stop(ctx context.Context) {
	// Past the drain budget (planStop) or when ctx ends, handlers are cancelled.
	stopAfter := context.AfterFunc(ctx, k.hardCancel)
	defer stopAfter()
	if k.drainTimer != nil {
		defer k.drainTimer.Stop()
	}
	var errs []error
	if k.started.Load() {
		k.runCancel()
		closed := make(chan struct{})
		go func() {
			_ = k.group.Close()
			<-k.loopDone
			// Every fetcher has returned: nothing dispatches any more.
			close(k.tasks)
			k.workers.Wait() // handlers that ignore cancellation keep Stop waiting until ctx ends
			close(closed)
		}()
		select {
		case <-closed:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("kavari: stop: consumer did not finish in time: %w", context.Cause(ctx)))
		}
	}
	if err := k.pub.close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kavari: stop: publisher did not flush in time: %w", err))
	}
	k.hardCancel()
	k.health.stop()
	k.stopErr = errors.Join(errs...)
	close(k.stopDone)
}

// EnsureTopics creates every registered topic and its dead-letter topic with
// Config.TopicPartitions and Config.ReplicationFactor, leaving existing
// topics as they are, and waits until the brokers know them. After Stop it
// returns ErrClosed.
func (k *Kavari) EnsureTopics(ctx context.Context) error {
	var names []string
	for _, t := range k.reg.Topics() {
		names = append(names, t, t+k.cfg.DeadLetterSuffix)
	}
	return k.ensureTopics(ctx, names)
}

func (k *Kavari) ensureTopics(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if k.pub.isClosed() {
		return ErrClosed // its transport is closed: a new connection would outlive Stop
	}
	client := &kafka.Client{Addr: kafka.TCP(k.cfg.Brokers...), Transport: k.pub.tr, Timeout: 30 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: k.cfg.TopicPartitions, ReplicationFactor: k.cfg.ReplicationFactor})
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("kavari: create topics: %w", err)
	}
	for name, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return fmt.Errorf("kavari: create topic %s: %w", name, e)
		}
	}
	// Wait until metadata lists every topic with leaders.
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		if err == nil {
			ready := 0
		topics:
			for _, t := range md.Topics {
				if t.Error != nil || len(t.Partitions) == 0 {
					continue
				}
				for _, p := range t.Partitions {
					if p.Error != nil || p.Leader.Host == "" {
						continue topics
					}
				}
				ready++
			}
			if ready == len(names) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kavari: topics not ready: %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// acquire takes a buffer slot, waiting while MaxBuffered records are open.
func (k *Kavari) acquire(ctx context.Context) bool {
	select {
	case k.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (k *Kavari) release() { <-k.sem }

// run takes a run slot, waiting while MaxInFlight handlers run; ran gives it
// back.
func (k *Kavari) run(ctx context.Context) bool {
	select {
	case k.running <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (k *Kavari) ran() { <-k.running }

// resolve returns the handler instance for binding b: from the Provider when
// one is set and b names a handler type, else from b's factory.
func (k *Kavari) resolve(b *binding) (any, error) {
	if p := k.provider.Load(); p != nil && b.handlerType != nil {
		h, err := (*p)(b.handlerType)
		if err != nil {
			return nil, fmt.Errorf("kavari: provider failed for %s: %w", b.handlerType, err)
		}
		if h == nil {
			return nil, fmt.Errorf("kavari: provider returned nil for %s", b.handlerType)
		}
		return h, nil
	}
	if b.build == nil {
		return nil, fmt.Errorf("kavari: %s is registered for a provider, but no provider is set (SetProvider)", b.name)
	}
	return b.build()
}
