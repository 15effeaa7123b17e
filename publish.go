package kavari

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// recordWriter is what the publisher needs of kafka-go's Writer; tests
// inject faults through it.
type recordWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// publisher owns the kafka-go Writer and the PublishAsync queue.
type publisher struct {
	cfg    *Config
	enc    *encoder
	w      recordWriter
	kw     *kafka.Writer    // the Writer behind w
	tr     *kafka.Transport // kw's transport, shared with admin calls; closed by close
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
}

type asyncItem struct {
	msg any
	rec kafka.Message
	cb  func(msg any, err error)
}

func newPublisher(cfg *Config, enc *encoder) *publisher {
	tr := cfg.transport()
	kw := &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Balancer:               cfg.balancer(),
		RequiredAcks:           kafka.RequireAll,
		MaxAttempts:            1, // kavari retries, per message, with its own policy
		BatchTimeout:           cfg.BatchTimeout,
		BatchSize:              cfg.BatchSize,
		BatchBytes:             cfg.BatchBytes,
		WriteTimeout:           10 * time.Second,
		ReadTimeout:            10 * time.Second,
		AllowAutoTopicCreation: cfg.AllowAutoCreate,
		Transport:              tr,
	}
	p := &publisher{
		cfg: cfg,
		enc: enc,
		w:   kw,
		kw:  kw,
		tr:  tr,
		log: func(msg string, args ...any) { cfg.Logger.Warn(msg, args...) },
	}
	p.bg, p.abort = context.WithCancel(context.Background())
	per := max(1, cfg.AsyncQueue/cfg.AsyncWorkers)
	p.writers.ids = make([]atomic.Int64, cfg.AsyncWorkers)
	for i := 0; i < cfg.AsyncWorkers; i++ {
		q := newAsyncQueue(per)
		p.queues = append(p.queues, q)
		p.wg.Add(1)
		go p.asyncLoop(q, &p.writers.ids[i])
	}
	return p
}

// publish encodes, validates and writes msgs, retrying each failed one with
// the publish retry policy. It returns one error per message (nil when
// acknowledged) or nil when all were.
func (p *publisher) publish(ctx context.Context, msgs []any) []error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if len(msgs) == 1 && !closed {
		// Publish: no batch bookkeeping.
		rec, err := p.enc.encode(ctx, msgs[0])
		if err != nil {
			return []error{err}
		}
		return p.write(ctx, []kafka.Message{rec})
	}
	errs := make([]error, len(msgs))
	if closed {
		for i := range errs {
			errs[i] = ErrClosed
		}
		return errs
	}
	recs := make([]kafka.Message, 0, len(msgs))
	idx := make([]int, 0, len(msgs))
	failed := false
	for i, m := range msgs {
		rec, err := p.enc.encode(ctx, m)
		if err != nil {
			errs[i], failed = err, true
			continue
		}
		recs = append(recs, rec)
		idx = append(idx, i)
	}
	if failed {
		// Nothing leaves the process when any message of a batch is invalid.
		for _, i := range idx {
			errs[i] = errBatchRefused
		}
		return errs
	}
	if werrs := p.write(ctx, recs); werrs != nil {
		for j, e := range werrs {
			errs[idx[j]] = e
		}
		return errs
	}
	return nil
}

// errBatchRefused is the error of a valid message of a batch that was not
// sent because another message is invalid.
var errBatchRefused = errors.New("kavari: not sent: another message of the batch is invalid")

// write sends recs and retries the failed ones. It returns nil when all were
// acknowledged, else one error (*PublishError or nil) per record.
func (p *publisher) write(ctx context.Context, recs []kafka.Message) []error {
	// Fast path: the first attempt needs none of the retry bookkeeping.
	start := time.Now()
	if ctx.Err() != nil {
		return p.retryWrite(ctx, start, recs, nil)
	}
	werr := p.w.WriteMessages(ctx, recs...)
	if werr == nil {
		return nil
	}
	return p.retryWrite(ctx, start, recs, werr)
}

// retryWrite finishes a write whose first attempt failed with first (or, when
// first is nil, that has not been tried because ctx had ended), retrying the
// failed records with the publish retry policy. start is when the first
// attempt began.
func (p *publisher) retryWrite(ctx context.Context, start time.Time, recs []kafka.Message, first error) []error {
	errs := make([]error, len(recs))
	// unsure[i]: an attempt at recs[i] failed in a way that leaves its
	// outcome unknown (it may have reached the broker). It is never reset:
	// a later attempt failing otherwise does not undo an earlier write.
	unsure := make([]bool, len(recs))
	pending := make([]int, len(recs))
	for i := range pending {
		pending[i] = i
	}
	batch := make([]kafka.Message, 0, len(recs))
	var we kafka.WriteErrors
	err := p.cfg.PublishRetry.retrySince(ctx, start, func(attempt int) error {
		batch = batch[:0]
		for _, i := range pending {
			batch = append(batch, recs[i])
		}
		var werr error
		if attempt == 1 && first != nil {
			werr = first // the fast path's attempt
		} else {
			if err := ctx.Err(); err != nil {
				// kafka-go would queue the batch before looking at ctx: an
				// ended context sends nothing.
				return err
			}
			werr = p.w.WriteMessages(ctx, batch...)
		}
		if werr == nil {
			pending = pending[:0]
			return nil
		}
		if !errors.As(werr, &we) || len(we) != len(batch) {
			// One error for the whole call (a metadata lookup, a closed
			// writer, the context): it applies to every record.
			we = we[:0]
			for range batch {
				we = append(we, werr)
			}
		}
		var retry error
		still := pending[:0]
		for j, e := range we {
			i := pending[j]
			if e == nil {
				continue
			}
			e = p.classify(ctx, e)
			if mayHaveBeenWritten(e) {
				unsure[i] = true
			}
			switch {
			case attempt >= unknownTopicAttempts && !p.cfg.AllowAutoCreate && errors.Is(e, kafka.UnknownTopicOrPartition):
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
		r := &recs[i]
		id, _ := headerValue(r.Headers, HeaderID)
		pe := &PublishError{Index: i, Topic: r.Topic, Key: string(r.Key), ID: string(id), Err: e, MayHaveBeenWritten: unsure[i]}
		var tooLarge kafka.MessageTooLargeError
		switch {
		case errors.As(e, &tooLarge) || errors.Is(e, kafka.MessageSizeTooLarge):
			pe.Err = errors.Join(ErrTooLarge, e)
		case errors.Is(e, kafka.UnknownTopicOrPartition):
			pe.Err = &unknownTopicError{err: e}
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
	return e.err.Error() + " (create it with EnsureTopics or Config.CreateTopics)"
}

func (e *unknownTopicError) Unwrap() []error { return []error{ErrUnknownTopic, e.err} }

// writeTimeout is a timeout of kafka-go's own request deadline (the Writer's
// WriteTimeout), not of the caller's context: the broker did not answer in
// time. It is retriable, and the write may have happened.
type writeTimeout struct{ err error }

func (e *writeTimeout) Error() string {
	return "kavari: no answer from the broker in time: " + e.err.Error()
}

func (e *writeTimeout) Unwrap() error { return e.err }

// classify tells kafka-go's request timeouts from the end of ctx: both
// surface as context.DeadlineExceeded.
func (p *publisher) classify(ctx context.Context, e error) error {
	if ctx.Err() == nil && errors.Is(e, context.DeadlineExceeded) {
		return &writeTimeout{err: e}
	}
	return e
}

// mayHaveBeenWritten reports whether a failed attempt may nonetheless have
// stored the record: the request may have reached the broker before the
// failure (a connection broken or timed out mid-request, the caller's
// context ending while kafka-go held the batch, or the broker's own
// request timeout or after-append replica error), or when the failure is
// one kavari cannot place. A refused or failed dial, a closed writer, a
// message too large to send and a broker error that rejects the request
// are not.
func mayHaveBeenWritten(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		// The broker answered: only these answers leave the record stored.
		return ke == kafka.RequestTimedOut || ke == kafka.NotEnoughReplicasAfterAppend
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNREFUSED) || handshakeFailed(err) {
		return false // refused before sending
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false // never connected
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return false
	}
	// Broken or timed-out connections, and failures kavari cannot place:
	// the request may have been sent.
	return true
}

// handshakeFailed reports whether err is a failed TLS handshake: the
// broker's certificate was not verified (unknown CA, wrong host name,
// expired) or the broker refused the client's with an alert. No request was
// sent on that connection, and retrying with the same tls.Config fails the
// same way.
func handshakeFailed(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &alert) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// unknownTopicAttempts is how many attempts an unknown topic gets when the
// broker does not auto-create topics. A few, not one: kafka-go's metadata
// cache learns of a topic created elsewhere only on refresh, and a restarting
// broker briefly answers "unknown" for topics it has not loaded yet.
const unknownTopicAttempts = 3

// retriablePublish reports whether a write error may succeed if retried.
// Leader, metadata, coordinator, network and timeout errors are retriable;
// size, authorization and invalid-request errors are permanent, and so is
// the end of the caller's context. An unknown topic is retriable here;
// write gives up on it after unknownTopicAttempts.
func retriablePublish(err error) bool {
	if err == nil {
		return false
	}
	var timeout *writeTimeout
	if errors.As(err, &timeout) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller's context ended
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return false
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord, kafka.InvalidTopic,
			kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed, kafka.GroupAuthorizationFailed,
			kafka.SASLAuthenticationFailed, kafka.UnsupportedSASLMechanism, kafka.UnsupportedVersion,
			kafka.InvalidRequiredAcks, kafka.InvalidMessageSize:
			return false
		}
		return ke.Temporary() || ke.Timeout() || ke == kafka.BrokerNotAvailable || ke == kafka.ReplicaNotAvailable
	}
	if errors.Is(err, io.ErrClosedPipe) {
		return false // the writer was closed
	}
	if handshakeFailed(err) {
		return false // the same certificates fail the same way again
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// Unknown failures (a broker restarting mid-request, a metadata gap) are
	// retried: the policy's attempts and elapsed time bound them.
	return true
}

// enqueue puts one message on the async queue, blocking while it is full
// (unless called from a callback), and reports failures to cb.
func (p *publisher) enqueue(msg any, cb func(any, error)) {
	if cb == nil {
		cb = func(any, error) {}
	}
	if err := p.push(msg, cb, pushWait); err != nil {
		cb(msg, err)
	}
}

// tryEnqueue is enqueue without waiting: a full queue returns
// ErrQueueFull. When it returns an error, cb is not called.
func (p *publisher) tryEnqueue(msg any, cb func(any, error)) error {
	if cb == nil {
		cb = func(any, error) {}
	}
	return p.push(msg, cb, pushTry)
}

func (p *publisher) push(msg any, cb func(any, error), mode pushMode) error {
	rec, err := p.enc.encode(context.Background(), msg)
	if err != nil {
		return err
	}
	return p.queueFor(rec.Key).push(asyncItem{msg: msg, rec: rec, cb: cb}, mode, p.writers.has)
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
	items := make([]asyncItem, 0, p.cfg.BatchSize)
	recs := make([]kafka.Message, 0, p.cfg.BatchSize)
	for {
		var ok bool
		items, ok = queue.take(items[:0], p.cfg.BatchSize)
		if !ok {
			return
		}
		recs = recs[:0]
		for _, it := range items {
			recs = append(recs, it.rec)
		}
		errs := p.write(p.bg, recs)
		for i, it := range items {
			var err error
			if errs != nil {
				err = errs[i]
			}
			p.callback(it, err)
		}
		clear(items) // release the messages
	}
}

func (p *publisher) callback(it asyncItem, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.cfg.Logger.Error("kavari: PublishAsync callback panicked", "panic", r)
		}
	}()
	it.cb(it.msg, err)
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
		_ = p.w.Close()
		// The Writer does not close a Transport it was given: its
		// connection pools (a metadata poller and broker connections each)
		// would outlive every Stop.
		p.tr.CloseIdleConnections()
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
