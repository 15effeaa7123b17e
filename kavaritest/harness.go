package kavaritest

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kavari-go/kavari"
	"github.com/kavari-go/kavari/internal/testlink"
	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/memory"
)

// Harness runs a kavari client on an in-memory broker inside the test, for
// unit tests of handlers without Kafka: Deliver puts a message on its topic
// and returns once the consumer finished it, through the same engine as on
// Kafka (decoding, validation, ordering, handler retries, dead letters,
// commits); Published and DeadLetters show what the client wrote.
//
// The consumer starts at the first Deliver, so handlers may be registered
// after New, for example with the Harness's Client as their publisher; the
// registry is frozen from then on. Each Harness has its own broker and
// consumer group. Deliver and its variants must be called from the test's
// goroutine (they fail the test as t.Fatal does); Client, Published,
// PublishedTo and DeadLetters may be called from any goroutine.
type Harness struct {
	t      testing.TB
	client *kavari.Client
	feed   transport.Producer // writes delivered records; not recorded
	broker *memory.Broker
	suffix string // dead-letter topic suffix

	startOnce sync.Once
	startErr  error
	assigned  chan struct{} // closed when the consumer got its partitions

	mu      sync.Mutex
	written []Record               // what the client wrote, dead letters included, in order
	topics  map[string]bool        // topics the consumer was assigned
	records map[recordKey]*tracked // consumed records, by where they are
}

type recordKey struct {
	topic     string
	partition int32
	offset    int64
}

// tracked is what the consumer did with one record.
type tracked struct {
	attempts int
	dead     []deadLettered
	done     chan struct{} // closed when the consumer finished the record
}

type deadLettered struct {
	kind    kavari.ErrorKind
	handler string
	err     error
}

// New returns a Harness running a client built from cfg, as kavari.New
// would build it, on an in-memory broker; Stop is called when t ends (a Stop
// error fails t). New fails t where kavari.New returns an error, with the
// same error: cfg is checked against the Transport it selects (a field that
// Transport cannot honour is refused). Brokers may be empty, and the client
// runs in memory whatever Transport says, with what it can do (commit
// metadata, heartbeats during drains); every other field means what it means
// on Kafka. GroupID defaults to "kavaritest", Logger to one writing to t's
// log.
//
// The broker holds the topics a broker prepared for the application would:
// the topics of the registered and declared message types (Register,
// Registry.Declare) and their dead-letter topics, with
// Config.Topics.Partitions partitions, and those given to CreateTopics. Like
// a broker without topic auto-creation, it refuses any other topic: a
// handler publishing to it gets an error matching kavari.ErrUnknownTopic,
// and its record is dead-lettered, as in production. With
// Config.Publish.AllowAutoCreate set, any topic is created on first use,
// with one partition. Keys are partitioned by Config.Publish.Partitioner,
// so receipts and Outcome records name the partitions Kafka would.
//
// Handler retries wait as Config.Consume.Retry says. To keep tests fast,
// pass short delays (kavari.ConstantRetry(time.Millisecond, 3)), or call New
// inside a testing/synctest bubble: the waits then take no real time.
func New(t testing.TB, cfg kavari.Config) *Harness {
	t.Helper()
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{"kavaritest"}
	}
	if cfg.Consume.GroupID == "" {
		cfg.Consume.GroupID = "kavaritest"
	}
	h := &Harness{t: t, suffix: cfg.Topics.DeadLetterSuffix, assigned: make(chan struct{}),
		topics: map[string]bool{}, records: map[recordKey]*tracked{}}
	if h.suffix == "" {
		h.suffix = ".dlq"
	}
	var logs *testLog
	if cfg.Logger == nil {
		logs = &testLog{t: t}
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	cfg.Hooks = append(slices.Clip(cfg.Hooks), (*observer)(h))
	cfg.Middleware = append([]kavari.Middleware{h.countAttempts}, cfg.Middleware...)

	// The in-memory transport has the capabilities of the one cfg selects,
	// so that the client refuses what kavari.New refuses for it (with the
	// same check) and the engine runs as it would on it.
	caps, err := testlink.Capabilities(cfg)
	if err != nil {
		t.Fatalf("kavaritest: %v", err)
	}
	h.broker = memory.NewBroker()
	mem := h.broker.Transport(caps)
	feed, err := mem.NewProducer(transport.Config{Partitioner: transport.Partitioner(cfg.Publish.Partitioner)})
	if err != nil {
		t.Fatalf("kavaritest: %v", err)
	}
	c, err := testlink.NewClient(cfg, &recording{Adapter: mem, h: h}, h.finished)
	if err != nil {
		t.Fatalf("kavaritest: %v", err)
	}
	h.feed, h.client = feed, c.(*kavari.Client)
	testlink.ObserveBatches(c, h.batchAttempt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.client.Stop(ctx); err != nil {
			t.Errorf("kavaritest: stop: %v", err)
		}
		_ = h.feed.Close()
		logs.close()
	})
	return h
}

// CreateTopics creates topics (real names, as the broker knows them) with
// Config.Topics.Partitions partitions, as an operator would create the
// topics a handler publishes to that no registered or declared type names.
// It fails the test on error; it may be called from any goroutine.
func (h *Harness) CreateTopics(topics ...string) {
	h.t.Helper()
	_, partitions, err := testlink.Topics(h.client)
	if err != nil {
		h.t.Fatalf("kavaritest: create topics %v: %v", topics, err)
	}
	for _, t := range topics {
		h.broker.CreateTopic(t, partitions)
	}
}

// createRegistered creates the topics of the registered and declared types
// and their dead-letter topics that do not exist yet.
func (h *Harness) createRegistered() error {
	topics, partitions, err := testlink.Topics(h.client)
	for _, t := range topics {
		h.broker.CreateTopic(t, partitions)
	}
	return err
}

// Client returns the client, for handlers that publish and for code under
// test that takes one.
func (h *Harness) Client() *kavari.Client { return h.client }

// Deliver writes msg (a pointer to a kavari message struct) to its topic as
// the client would publish it, but without validating it (another producer
// may have written an invalid message, which the consumer then
// dead-letters), and returns once the consumer finished the record. It
// fails the test when msg is not a message, when no handler consumes its
// topic, or when ctx ends first.
func (h *Harness) Deliver(ctx context.Context, msg kavari.Msg) Outcome {
	h.t.Helper()
	return h.DeliverAll(ctx, msg)[0]
}

// DeliverAll writes msgs, in order, as Deliver does, and returns once the
// consumer finished all of them, with their outcomes in the same order.
// The consumer sees them together: records with different keys are
// handled concurrently, those with the same key one at a time in order
// (with the default Ordering). A type with a batch handler
// (kavari.RegisterBatch) gets them in batches per partition, as on Kafka
// (Config.Consume.MaxBatchRecords, MaxBatchBytes, MaxBatchWait), and each
// Outcome says what became of its record: Handled, or DeadLettered when
// the handler named it (kavari.BatchFailed) or kavari isolated it as the
// failing record; Attempts counts the batch calls that held the record,
// failed ones included. To test the poison path, deliver the poison record
// among healthy ones.
func (h *Harness) DeliverAll(ctx context.Context, msgs ...kavari.Msg) []Outcome {
	h.t.Helper()
	recs := make([]*transport.Record, len(msgs))
	for i, msg := range msgs {
		rec, err := testlink.Encode(h.client, ctx, msg)
		if err != nil {
			h.t.Fatalf("kavaritest: deliver %T: %v", msg, err)
		}
		recs[i] = &rec
	}
	return h.deliver(ctx, recs)
}

// DeliverRecord writes r (its Topic, Key, Value and Headers) as it is,
// such as a value no codec can read or a record without headers, and
// returns once the consumer finished it, as Deliver does.
func (h *Harness) DeliverRecord(ctx context.Context, r Record) Outcome {
	h.t.Helper()
	if r.Topic == "" {
		h.t.Fatal(errNoTopic)
	}
	return h.deliver(ctx, []*transport.Record{r.toTransport()})[0]
}

func (h *Harness) deliver(ctx context.Context, recs []*transport.Record) []Outcome {
	h.t.Helper()
	if err := h.start(ctx); err != nil {
		h.t.Fatalf("kavaritest: start the consumer: %v", err)
	}
	h.mu.Lock()
	for _, rec := range recs {
		if !h.topics[rec.Topic] {
			consumed := make([]string, 0, len(h.topics))
			for t := range h.topics {
				consumed = append(consumed, t)
			}
			slices.Sort(consumed)
			h.mu.Unlock()
			h.t.Fatalf("kavaritest: no handler consumes topic %q (consumed: %s)", rec.Topic, strings.Join(consumed, ", "))
		}
	}
	h.mu.Unlock()
	for i, err := range h.feed.Produce(ctx, recs) {
		if err != nil {
			h.t.Fatalf("kavaritest: write to %s: %v", recs[i].Topic, err)
		}
	}
	out := make([]Outcome, len(recs))
	for i, rec := range recs {
		tr := h.track(rec.Topic, rec.Partition, rec.Offset)
		select {
		case <-tr.done:
		case <-ctx.Done():
			h.t.Fatalf("kavaritest: record %s/%d@%d not finished: %v (a handler that does not return, or retries longer than the context allows?)",
				rec.Topic, rec.Partition, rec.Offset, context.Cause(ctx))
		}
		h.mu.Lock()
		o := Outcome{Record: h.recordOf(rec), Attempts: tr.attempts, Result: Skipped}
		if len(tr.dead) > 0 {
			o.Result, o.Kind, o.Handler, o.Err = DeadLettered, tr.dead[0].kind, tr.dead[0].handler, tr.dead[0].err
		} else if tr.attempts > 0 {
			o.Result = Handled
		}
		h.mu.Unlock()
		out[i] = o
	}
	return out
}

// start creates the topics, starts the consumer and waits until it has its
// partitions, once.
func (h *Harness) start(ctx context.Context) error {
	h.startOnce.Do(func() {
		if h.startErr = h.client.EnsureTopics(ctx); h.startErr != nil {
			return
		}
		if h.startErr = h.client.Start(ctx); h.startErr != nil {
			return
		}
		select {
		case <-h.assigned:
		case <-ctx.Done():
			h.startErr = context.Cause(ctx)
		}
	})
	return h.startErr
}

// Published returns every record the client wrote, in order, except dead
// letters: what Publish, PublishBatch and PublishAsync (from the test or
// from handlers) published. A PublishAsync message is listed once it was
// written, before its callback runs.
func (h *Harness) Published() []Record {
	return h.writtenWhere(func(r Record) bool { return !h.isDeadLetter(r) })
}

// PublishedTo returns the records of Published whose topic is topic.
func (h *Harness) PublishedTo(topic string) []Record {
	return h.writtenWhere(func(r Record) bool { return r.Topic == topic && !h.isDeadLetter(r) })
}

// DeadLetters returns the dead letters the consumer wrote, in order.
func (h *Harness) DeadLetters() []DeadLetter {
	var out []DeadLetter
	for _, r := range h.writtenWhere(h.isDeadLetter) {
		kind, _ := r.Header(kavari.HeaderErrorKind)
		handler, _ := r.Header(kavari.HeaderHandler)
		cause, _ := r.Header(kavari.HeaderOriginalError)
		out = append(out, DeadLetter{Record: r, Kind: kavari.ErrorKind(kind), Handler: handler, Error: cause})
	}
	return out
}

func (h *Harness) writtenWhere(keep func(Record) bool) []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Record
	for _, r := range h.written {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// isDeadLetter reports whether the client wrote r as a dead letter.
func (h *Harness) isDeadLetter(r Record) bool {
	_, ok := r.Header(kavari.HeaderErrorKind)
	return ok && strings.HasSuffix(r.Topic, h.suffix)
}

// track returns the state of the record at topic/partition@offset.
func (h *Harness) track(topic string, partition int32, offset int64) *tracked {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.trackLocked(recordKey{topic, partition, offset})
}

func (h *Harness) trackLocked(k recordKey) *tracked {
	tr := h.records[k]
	if tr == nil {
		tr = &tracked{done: make(chan struct{})}
		h.records[k] = tr
	}
	return tr
}

// finished is called by the engine when it finished rec.
func (h *Harness) finished(rec *transport.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tr := h.trackLocked(recordKey{rec.Topic, rec.Partition, rec.Offset})
	select {
	case <-tr.done: // redelivered and finished again
	default:
		close(tr.done)
	}
}

// batchAttempt counts an attempt of a batch handler that holds rec.
func (h *Harness) batchAttempt(rec *transport.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trackLocked(recordKey{rec.Topic, rec.Partition, rec.Offset}).attempts++
}

// countAttempts is the outermost middleware: it counts handler attempts.
func (h *Harness) countAttempts(next kavari.AttemptFunc) kavari.AttemptFunc {
	return func(ctx context.Context, msg any) error {
		if r, ok := kavari.RecordFromContext(ctx); ok {
			h.mu.Lock()
			h.trackLocked(recordKey{r.Topic, int32(r.Partition), r.Offset}).attempts++
			h.mu.Unlock()
		}
		return next(ctx, msg)
	}
}

// observer is the Harness's hook.
type observer Harness

// OnAssigned notes the consumed topics.
func (o *observer) OnAssigned(partitions map[string][]int) {
	h := (*Harness)(o)
	h.mu.Lock()
	defer h.mu.Unlock()
	for t := range partitions {
		h.topics[t] = true
	}
	select {
	case <-h.assigned:
	default:
		close(h.assigned)
	}
}

// OnDeadLettered notes a record's dead letter.
func (o *observer) OnDeadLettered(r *kavari.Record, kind kavari.ErrorKind, err error) {
	h := (*Harness)(o)
	h.mu.Lock()
	defer h.mu.Unlock()
	tr := h.trackLocked(recordKey{r.Topic, int32(r.Partition), r.Offset})
	tr.dead = append(tr.dead, deadLettered{kind, r.Handler, err})
}

// recording is the in-memory transport with producers that note what they
// wrote, and that find the registered and declared types' topics created.
type recording struct {
	transport.Adapter
	h *Harness
}

func (t *recording) NewProducer(cfg transport.Config) (transport.Producer, error) {
	p, err := t.Adapter.NewProducer(cfg)
	if err != nil {
		return nil, err
	}
	return &recordingProducer{Producer: p, h: t.h}, nil
}

type recordingProducer struct {
	transport.Producer
	h *Harness
}

func (p *recordingProducer) Produce(ctx context.Context, recs []*transport.Record) []error {
	// Types may be registered or declared until the consumer starts:
	// their topics exist from the first write on, also when it is made
	// while the client stops (a PublishAsync flushed by Stop).
	if p.h.client != nil {
		if err := p.h.createRegistered(); err != nil {
			errs := make([]error, len(recs))
			for i := range errs {
				errs[i] = &transport.ProduceError{Kind: transport.Permanent, Err: err}
			}
			return errs
		}
	}
	errs := p.Producer.Produce(ctx, recs)
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	for i, rec := range recs {
		if errs == nil || errs[i] == nil {
			p.h.written = append(p.h.written, p.h.recordOf(rec))
		}
	}
	return errs
}

// testLog writes the client's log to t's log, until the Harness stopped (a
// line logged after the test ended would panic).
type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}
