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
// Handlers are registered per message type, and a Client publishes and
// consumes:
//
//	kavari.RegisterFunc(&OrderPlaced{}, func(ctx context.Context, m *OrderPlaced) error { ... })
//	k, err := kavari.New(kavari.Config{Brokers: brokers, Consume: kavari.ConsumeConfig{GroupID: "billing"}})
//	err = k.Start(ctx)                // consume in the background
//	r, err := k.Publish(ctx, &OrderPlaced{OrderID: "o-1", Amount: 10}) // r: topic, partition, offset, ce_id
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
	"sync/atomic"
	"time"

	"github.com/kavari-go/kavari/internal/transport"
)

// Client publishes and consumes typed messages. Create it with New; it is safe
// for concurrent use.
type Client struct {
	// Set by New, then read only (testlink.go may add a hook before Start).
	cfg        Config
	log        *slog.Logger // Config.Logger
	reg        *Registry    // Config.Registry
	names      *topicNames  // tag topics to real ones (Config.Topics.Name), cached
	hooks      *hooks       // Config.Hooks by capability; nil when none
	middleware AttemptFunc  // Config.Middleware composed; nil when none
	tr         transport.Adapter
	admin      transport.Admin
	pub        *publisher

	provider atomic.Pointer[Provider] // SetProvider
	health   health                   // what Health reports; the engine writes it

	consumer consumer  // what Start launches and Stop shuts down (lifecycle.go)
	life     lifecycle // Start against Stop, Stop's budget and outcome (lifecycle.go)
}

// New checks cfg and returns a Client ready to publish. It does not contact
// the brokers: a Kafka that is down at boot does not stop the application.
// Call Stop when done with it, whether or not Start was called: Stop
// releases the publisher's goroutines and broker connections, which
// otherwise live as long as the process.
func New(cfg Config) (*Client, error) {
	return newWith(cfg, nil)
}

// newWith is New on transport tr, or on Config.Transport's when tr is nil.
func newWith(cfg Config, tr transport.Adapter) (*Client, error) {
	given := cfg // before defaults: what the user set
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	names := newTopicNames(cfg.Topics.Name, cfg.Topics.DeadLetterSuffix)
	if n := len(cfg.Consume.RetryTopics); n > 0 {
		names.tier = cfg.retryTopic("", n) // the longest tier name checked with the others
	}
	if err := names.checkConfig(cfg.Registry.Topics()); err != nil {
		return nil, err
	}
	if tr == nil {
		var err error
		if tr, err = cfg.adapter(); err != nil {
			return nil, err
		}
	}
	caps := tr.Capabilities()
	if err := given.checkTransport(caps); err != nil {
		return nil, err
	}
	hs, err := newHooks(cfg.Hooks)
	if err != nil {
		return nil, err
	}
	tcfg := cfg.transportConfig(nil)
	prod, err := tr.NewProducer(tcfg)
	if err != nil {
		return nil, fmt.Errorf("kavari: producer: %w", err)
	}
	admin, err := tr.NewAdmin(tcfg)
	if err != nil {
		_ = prod.Close()
		return nil, fmt.Errorf("kavari: admin: %w", err)
	}
	k := &Client{
		cfg:        cfg,
		log:        cfg.Logger,
		reg:        cfg.Registry,
		names:      names,
		hooks:      hs,
		middleware: chain(cfg.Middleware),
		tr:         tr,
		admin:      admin,
		consumer: consumer{
			buf:        newRecordBuffer(cfg.Consume.MaxBuffered),
			running:    make(runSlots, cfg.Consume.MaxInFlight),
			loopDone:   make(chan struct{}),
			workerIdle: workerIdle,
		},
		life: lifecycle{stopDone: make(chan struct{})},
	}
	if hb := caps.HeartbeatsDuringDrain; cfg.Consume.DrainTimeout > cfg.drainBound(hb) {
		// Drains are cut at the bound (engine.drainBudget).
		if hb {
			k.log.Warn("kavari: Consume.DrainTimeout is longer than RebalanceTimeout allows with a reserve for the final commit; drains are cut earlier",
				"DrainTimeout", cfg.Consume.DrainTimeout, "cut", cfg.drainBound(hb), "RebalanceTimeout", cfg.Consume.RebalanceTimeout)
		} else {
			k.log.Warn("kavari: Consume.DrainTimeout is longer than the session timeout allows without heartbeats; drains are cut earlier",
				"DrainTimeout", cfg.Consume.DrainTimeout, "cut", cfg.drainBound(hb), "SessionTimeout", cfg.Consume.SessionTimeout, "HeartbeatInterval", cfg.Consume.HeartbeatInterval)
		}
	}
	k.life.runCtx, k.life.runCancel = context.WithCancel(context.Background())
	k.life.hardCtx, k.life.hardCancel = context.WithCancel(context.WithValue(context.Background(), ctxClientKey{}, k))
	k.pub = newPublisher(&k.cfg, newEncoder(cfg.CloudEventsSource, cfg.Publish.MaxMessageBytes, time.Now).withRegistry(cfg.Registry).withNames(names), prod)
	k.pub.hooks = hs
	return k, nil
}

// Publish validates msg, sends it and returns once all in-sync replicas
// acknowledged it, retrying retriable failures with Config.Publish.Retry. The
// receipt says where it was stored (see Receipt). An invalid message returns
// an error matching ErrInvalid and is not sent. A topic the brokers do not
// know (with Publish.AllowAutoCreate off) fails after a few attempts with an error
// matching ErrUnknownTopic. When ctx ends during a write, or an attempt
// failed after its request may have reached the broker, the error is a
// *PublishError whose MayHaveBeenWritten is true.
func (k *Client) Publish(ctx context.Context, msg Msg) (Receipt, error) {
	return k.pub.publishOne(ctx, msg)
}

// PublishBatch publishes msgs together and returns one receipt per message,
// in order. If any message is invalid, none is sent. Otherwise each message
// is retried on its own. The error is a *BatchError listing one
// *PublishError per message that failed (its Index says which) and whether
// the batch was refused whole.
func (k *Client) PublishBatch(ctx context.Context, msgs ...Msg) ([]Receipt, error) {
	receipts, errs := k.pub.publish(ctx, msgs)
	if errs == nil {
		return receipts, nil
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
	return receipts, be
}

// PublishAsync validates msg and queues it for publishing; callback (which
// may be nil) runs exactly once with msg's receipt and the outcome, nil when
// acknowledged. When callback is nil, a failure is logged at error level
// (with the topic and ce_id) and counted in Health.AsyncFailedNoCallback. ctx is the message's as Publish's would be: its headers
// (WithHeaders) and trace context go with the message, hooks see it, and
// when it ends before the message was written the message is not sent and
// the callback gets a *PublishError wrapping ctx's error. Once a write has
// begun, ctx no longer stops it (messages are written in batches).
//
// Messages with the same key are written in call order (a retried write can
// still land after later ones, as with concurrent Publish calls). When the
// queue (Config.Publish.AsyncQueue) is full, PublishAsync blocks until there is room
// or ctx ends; TryPublishAsync returns ErrQueueFull instead. An invalid
// message, or one published after Stop, gets its callback before
// PublishAsync returns.
//
// Callbacks run one at a time, in order, on the goroutine of the async writer
// that wrote the message: while one runs, that writer writes nothing. A
// callback may call Publish, PublishBatch, PublishAsync and TryPublishAsync:
// a PublishAsync from a callback never waits for room (it is queued beyond
// Config.Publish.AsyncQueue when the queue is full), so it cannot deadlock the
// writer. A callback should not block for long (a Publish from it holds its
// writer for a round trip), must not wait for other goroutines that publish
// with PublishAsync, and must not call Stop. A callback that panics is
// recovered and logged.
func (k *Client) PublishAsync(ctx context.Context, msg Msg, callback func(Receipt, error)) {
	if txnOf(ctx) != nil {
		k.publishInWindow(ctx, msg, callback)
		return
	}
	if o, ok := ctx.Value(outsKey{}).(*asyncOuts); ok {
		// A handler's: its record completes once this is acknowledged.
		k.pub.enqueueFor(ctx, msg, k.pub.tie(o, callback), true)
		return
	}
	k.pub.enqueueFor(ctx, msg, callback, false)
}

// TryPublishAsync is PublishAsync without waiting: when msg's queue is full
// it returns ErrQueueFull. It returns msg's validation or encoding error,
// and ErrClosed after Stop. When it returns an error nothing was queued and
// callback is never called; when it returns nil, callback (which may be nil)
// runs exactly once, as for PublishAsync.
func (k *Client) TryPublishAsync(ctx context.Context, msg Msg, callback func(Receipt, error)) error {
	if txnOf(ctx) != nil {
		k.publishInWindow(ctx, msg, callback)
		return nil
	}
	if o, ok := ctx.Value(outsKey{}).(*asyncOuts); ok {
		err := k.pub.tryEnqueue(ctx, msg, k.pub.tie(o, callback), true)
		if err != nil {
			o.settle(nil) // not queued: the caller has the error
		}
		return err
	}
	return k.pub.tryEnqueue(ctx, msg, callback, false)
}

// SetProvider sets the function that resolves handler instances, such as a DI
// container's resolve method; see Provider. It may be called at any time.
func (k *Client) SetProvider(p Provider) {
	if p == nil {
		k.provider.Store(nil)
		return
	}
	k.provider.Store(&p)
}

// Start begins consuming every topic that has a registered handler, in the
// background, and freezes the registry. ctx bounds only the start-up work;
// the consumer runs until Stop. Start fails when there is no Consume.GroupID or no
// handler, when a handler type cannot be built through the Provider (a
// *HandlerResolveError), and when a dead-letter topic is missing and may not
// be created (a *MissingTopicsError); with Config.Topics.Create it creates the
// topics first. A broker that is down is otherwise not an error: the consumer
// keeps trying and Health shows it. A Start that failed leaves the Client
// startable again and the registry writable.
//
// Start and Stop may be called in any order, from any goroutine: a Stop
// called before or during Start wins, and Start then returns ErrClosed with
// nothing left running. A second Start while one runs or succeeded is an
// error.
func (k *Client) Start(ctx context.Context) error { return k.start(ctx) }

// Stop shuts kavari down: it stops fetching, lets in-flight handlers finish
// until ctx's deadline, then cancels their contexts; commits what completed;
// leaves the group; and flushes queued PublishAsync messages and closes the
// publisher. Work that did not complete is redelivered to the next owner of
// its partition. It is idempotent: later calls wait for the first and return
// its result. A later call never shortens the first one's shutdown: when its
// own ctx ends first, it returns an error wrapping ctx's cause while the
// first Stop goes on under the first ctx (flushing, committing) and returns
// its own result.
//
// On KafkaGo the drain is also cut at SessionTimeout − HeartbeatInterval − a reserve
// (see Config.Consume.DrainTimeout): kafka-go sends no heartbeats while Stop drains,
// and a longer drain would get the member expelled and its final commit
// refused.
// A deadline much longer than that only helps flushing PublishAsync.
//
// Stop returns by ctx's deadline even when the brokers are gone, and returns
// an error whenever it left work undone: errors.Is(err, ErrCommitFailed) when
// completed work could not be committed (it will be redelivered), also when
// the last revoke's final commit failed before Stop (the brokers went away)
// or was not answered by the deadline (a frozen broker may still apply it
// when it resumes), and when partitions were lost (the member's session
// ended) with completed records not committed; ErrHandlersAbandoned when handlers ignored the
// cancellation of their context; and a deadline error when it ran out of
// time. When Stop returns,
// every broker connection kavari opened is closed, so the goroutines it
// started (consumer group, partition readers, workers, publisher) end within
// moments (measured: under 100 ms with the broker frozen; the fault suite
// allows 2 s); only handlers that ignore their context outlive it, until
// they return.
//
// A handler may call Stop (with its own context, one derived from it, or any
// other on its goroutine): that call does not wait for the calling handler,
// which the drain waits for, but only until every other handler finished
// (or ctx ended), and then returns nil. The shutdown goes on in the
// background, bounded by ctx's deadline but not by its cancellation; the
// calling handler's result, once it returns, decides its record as usual
// (committed when it returned nil). A later Stop waits for the shutdown and
// returns its result. A goroutine a handler started and waits for is not
// recognised unless it passes a context derived from the handler's.
func (k *Client) Stop(ctx context.Context) error { return k.stop(ctx) }

// EnsureTopics creates every registered topic and its dead-letter topic with
// Config.Topics.Partitions and Config.Topics.ReplicationFactor, leaving existing
// topics as they are, and waits until the brokers know them. After Stop it
// returns ErrClosed.
func (k *Client) EnsureTopics(ctx context.Context) error {
	names, err := k.registeredTopics()
	if err != nil {
		return err
	}
	return k.ensureTopics(ctx, names)
}

// registeredTopics returns the real names of the registered types' topics,
// each followed by its dead-letter topic.
func (k *Client) registeredTopics() ([]string, error) {
	var names []string
	seen := map[string]bool{} // Config.Topics.Name may map several tag topics onto one
	for _, t := range k.reg.Topics() {
		real, err := k.names.of(t)
		if err != nil {
			return nil, err
		}
		if !seen[real] {
			seen[real] = true
			names = append(names, real, real+k.cfg.Topics.DeadLetterSuffix)
			names = append(names, k.cfg.retryTopicsOf([]string{real})...)
		}
	}
	return names, nil
}

func (k *Client) ensureTopics(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if k.pub.isClosed() {
		return ErrClosed // its transport is closed: a new connection would outlive Stop
	}
	return k.admin.CreateTopics(ctx, k.cfg.Topics.Partitions, k.cfg.Topics.ReplicationFactor, names...)
}
