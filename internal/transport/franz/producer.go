package franz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari/internal/transport"
)

// recordTries is kgo's RecordRetries: 0, a record is failed back to kavari,
// whose retry policy decides, at its first failure (a failed metadata load,
// or an error answer). kgo enforces the limit only when it is safe for
// idempotence (the record was never sent, or its response arrived), so an
// in-flight record whose fate is unknown keeps being retried by kgo with the
// same sequence number: no duplicate and no reordering.
const recordTries = 0

// unknownTopicTries is kgo's UnknownTopicRetries: how many metadata loads may
// say a topic does not exist before its records fail (kgo's default is 4).
// Topics are created before they are used (CreateTopics waits for leaders),
// so one confirmation is enough and the error comes fast.
const unknownTopicTries = 1

// maxRetryBackoff bounds kgo's wait between two tries of a request or of a
// metadata load, and between two produce requests to a failing broker
// (kgo's default grows to 5 s). kgo's metadata loop counts its failures for
// the whole client, so once a cluster has been unreachable for a while
// every record waits the full bound before the next load: it is what one
// kavari attempt costs beyond the kafka-go transport's (a refused dial).
const maxRetryBackoff = 250 * time.Millisecond

// retryBackoff is kgo's RetryBackoffFn: 100 ms doubling per try, at most
// maxRetryBackoff.
func retryBackoff(tries int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < tries && d < maxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, maxRetryBackoff)
}

// writeTimeout bounds one attempt (one Produce call) when ctx has no
// earlier deadline, as the kafka-go transport's WriteTimeout does: records
// whose outcome kgo has not reported by then fail as retriable with
// MayHaveBeenWritten, and stay in transport.Record.InFlight for kavari's
// next attempt. A variable for tests.
var writeTimeout = 10 * time.Second

// NewProducer returns an idempotent producer: acks from all in-sync replicas,
// no linger, no compression (as the kafka-go transport; kgo's default is
// snappy), the configured partitioner.
//
// Config.BatchTimeout is not used as a linger: a synchronous Produce would
// wait for it. kgo batches on its own whatever is buffered while a request to
// the partition's leader is in flight (up to 5 per broker with idempotence),
// so concurrent publishers still share requests. Config.BatchBytes bounds a
// batch (kgo's ProducerBatchMaxBytes); Config.BatchSize has no kgo
// equivalent (kavari bounds what its async writers hand to Produce by it;
// New rejects a BatchTimeout set on FranzGo).
func (t *franzTransport) NewProducer(cfg transport.Config) (transport.Producer, error) {
	opts, err := clientOpts(cfg)
	if err != nil {
		return nil, err
	}
	h := newProducerHooks()
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(partitioner(cfg.Partitioner)),
		kgo.RecordRetries(recordTries),
		kgo.UnknownTopicRetries(unknownTopicTries),
		kgo.RetryBackoffFn(retryBackoff),
		kgo.WithHooks(h),
	)
	if cfg.BatchBytes > 0 {
		b := cfg.BatchBytes
		if b > 1<<30 {
			b = 1 << 30
		}
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(b)))
	}
	if cfg.AllowAutoCreate {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kavari: franz producer: %w", err)
	}
	return &producer{cl: cl, autoCreate: cfg.AllowAutoCreate, hooks: h}, nil
}

// producer is the franz-go transport's Producer: one idempotent kgo client.
//
// How a kavari attempt maps onto kgo:
//
// kavari retries a failed write itself, with Config.Publish.Retry, and the
// same policy must mean the same on both transports; an idempotent producer
// must not turn those retries into duplicates. Both hold because one kavari
// attempt is one wait on one kgo record, and a record kgo still holds is
// never produced again:
//
//   - An attempt hands each record to kgo once and waits for kgo's outcome
//     for at most writeTimeout (or until ctx ends). kgo fails an idempotent
//     record only when it knows it was not written (never sent, or answered
//     with an error); a sent record whose answer has not come is kept and
//     retried by kgo with the same producer id and sequence number, which
//     the broker deduplicates.
//   - When an attempt ends before kgo's outcome, the record fails as
//     retriable and MayHaveBeenWritten, but its kgo write is kept in
//     transport.Record.InFlight. kavari's next attempt at the same record
//     waits on that write again instead of producing a new record (a new
//     record would get a new sequence number: both would be stored). If kgo
//     has meanwhile failed it as not written, the attempt produces it anew.
//     When kavari gives up, kgo may still write the record, once: the error
//     says it may have been written.
//   - An attempt also ends, the same way, when kgo fails to connect to the
//     broker that leads the partition of a record still waiting (a broker
//     that is down refuses the dial): the kafka-go transport's attempt ends
//     at the same refused dial. kgo keeps the write and retries it when the
//     broker is back; kavari's next attempt waits for it again. A broker
//     that accepts connections but does not answer costs writeTimeout per
//     attempt, on both transports.
//   - kgo itself tries a record about once per kavari attempt, as the
//     kafka-go transport's writer does (MaxAttempts 1): no produce retries
//     of its own beyond what idempotence requires (recordTries), one failed
//     metadata load fails a record that was never sent, and kgo's wait
//     between two metadata loads, which grows with its failures and is
//     shared by every record of the client, is capped by maxRetryBackoff.
//     So an attempt against an unreachable cluster costs about one metadata
//     load, and a failed publish takes about what the retry policy says.
//
// Nothing here cancels a record kgo has sent: kgo's default (no
// AllowIdempotentProduceCancellation) is what keeps the sequence valid.
type producer struct {
	cl         *kgo.Client
	autoCreate bool
	closed     atomic.Bool
	hooks      *producerHooks
}

// write is one kgo produce of a record, kept in transport.Record.InFlight
// while its outcome is unknown. kr is the record kgo gets; it is the first
// field, so that the promise and the hooks find the write from it
// (writeOf) without a context value and a closure per record. The promise
// (settle) sets err, then closes done; kr's results and err are read only
// after done is closed. leader is the broker kgo queued it for (-1 until kgo
// partitioned it).
type write struct {
	kr     kgo.Record
	done   chan struct{}
	err    error
	leader atomic.Int32
}

// writesKey marks, in the context of every record Produce gives kgo (one
// value per call), that the record is the kr of a write.
type writesKey struct{}

// writeOf returns the write whose kr is kr, or nil when kr is not one
// (its context does not carry writesKey).
func writeOf(kr *kgo.Record) *write {
	if kr.Context == nil || kr.Context.Value(writesKey{}) == nil {
		return nil
	}
	return (*write)(unsafe.Pointer(kr)) // kr is the first field of a write
}

// settle is the promise of every write.
func settle(kr *kgo.Record, err error) {
	w := writeOf(kr)
	w.err = err
	close(w.done)
}

// producerHooks are the producer's kgo hooks: they note which broker each
// write was queued for, and count the failed dials of each broker, waking
// the Produce calls that wait.
type producerHooks struct {
	mu      sync.Mutex
	seq     uint64           // failed dials so far, all brokers
	last    map[int32]uint64 // per broker, seq at its last failed dial
	lastErr map[int32]error  // per broker, the error of that dial
	changed chan struct{}    // closed (and replaced) at each failed dial
}

func newProducerHooks() *producerHooks {
	return &producerHooks{last: map[int32]uint64{}, lastErr: map[int32]error{}, changed: make(chan struct{})}
}

// OnProduceRecordPartitioned implements kgo.HookProduceRecordPartitioned.
func (h *producerHooks) OnProduceRecordPartitioned(kr *kgo.Record, leader int32) {
	if w := writeOf(kr); w != nil {
		w.leader.Store(leader)
	}
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (h *producerHooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	h.last[meta.NodeID], h.lastErr[meta.NodeID] = h.seq, err
	close(h.changed)
	h.changed = make(chan struct{})
}

// state returns the failed-dial count and the channel closed at the next
// failed dial.
func (h *producerHooks) state() (uint64, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq, h.changed
}

// refusedSince returns the error of the last failed dial of broker node
// when it came after seq, else nil.
func (h *producerHooks) refusedSince(node int32, seq uint64) error {
	if node < 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last[node] > seq {
		return h.lastErr[node]
	}
	return nil
}

func (w *write) settled() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Produce is one attempt at recs: it waits for kgo's outcome of each record
// for at most writeTimeout, or until ctx ends. A record already in flight
// from an earlier attempt (rec.InFlight) is not produced again: its kgo
// write is waited on. A record whose outcome is still unknown at the end
// fails as retriable with MayHaveBeenWritten and keeps its write in
// InFlight (see producer).
func (p *producer) Produce(ctx context.Context, recs []*transport.Record) []error {
	if len(recs) == 0 {
		return nil
	}
	if p.closed.Load() {
		errs := make([]error, len(recs))
		for i := range errs {
			errs[i] = &transport.ProduceError{Kind: transport.Closed, Err: errors.New("kavari: franz producer: closed")}
		}
		return errs
	}
	// The attempt's context is kgo's record context too: when the attempt
	// ends, kgo fails the records it has not sent (safe) and keeps the
	// others until it knows their fate.
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > writeTimeout {
		ctx, cancel = context.WithTimeout(ctx, writeTimeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	rctx := context.WithValue(ctx, writesKey{}, true)
	start, _ := p.hooks.state()
	results := make([]error, len(recs))
	writes := make([]*write, len(recs))
	var ws []write // the new writes, made at the first
	for i, r := range recs {
		if w, ok := r.InFlight.(*write); ok {
			if !w.settled() || w.err == nil {
				writes[i] = w // wait for it (again), or take its success
				continue
			}
			if err := p.classify(w.err); transport.KindOf(err) != transport.Retriable {
				r.InFlight, results[i] = nil, err
				continue
			}
			// kgo failed it as not written: produce it anew.
		}
		if ws == nil {
			ws = make([]write, len(recs)-i)
		}
		w := &ws[0]
		ws = ws[1:]
		w.done = make(chan struct{})
		w.leader.Store(-1)
		setKgoRecord(&w.kr, r)
		w.kr.Context = rctx
		p.cl.Produce(ctx, &w.kr, settle)
		r.InFlight, writes[i] = w, w
	}
	refused := p.wait(ctx, writes, start)
	failed := false
	for i, w := range writes {
		r := recs[i]
		switch {
		case w == nil: // settled before this attempt with a definite error
		case !w.settled() && refused != nil:
			results[i] = &transport.ProduceError{Kind: transport.Retriable, MayHaveBeenWritten: true,
				Err: fmt.Errorf("kavari: franz producer: broker unreachable, the write stays in flight: %w", refused)}
		case !w.settled():
			results[i] = &transport.ProduceError{Kind: transport.Retriable, MayHaveBeenWritten: true,
				Err: fmt.Errorf("kavari: franz producer: no outcome yet, the write stays in flight: %w", context.Cause(ctx))}
		case w.err != nil:
			r.InFlight, results[i] = nil, p.classify(w.err)
		default:
			r.InFlight = nil
			r.Partition, r.Offset = w.kr.Partition, w.kr.Offset
			if r.Time.IsZero() {
				r.Time = w.kr.Timestamp
			}
		}
		failed = failed || results[i] != nil
	}
	if !failed {
		return nil
	}
	return results
}

// wait waits until every write has settled, ctx ends, or a dial to the
// broker of a write still waiting failed after seq (start of the attempt);
// it returns that dial's error in the last case.
func (p *producer) wait(ctx context.Context, writes []*write, seq uint64) error {
	from := 0 // the writes before it are settled (or nil): they stay so
	for {
		now, changed := p.hooks.state()
		var next *write
		for ; from < len(writes); from++ {
			if w := writes[from]; w != nil && !w.settled() {
				next = w
				break
			}
		}
		if next == nil {
			return nil
		}
		if now != seq { // a dial failed since seq: maybe a waiting write's broker
			for _, w := range writes[from:] {
				if w == nil || w.settled() {
					continue
				}
				if err := p.hooks.refusedSince(w.leader.Load(), seq); err != nil {
					return err
				}
			}
		}
		select {
		case <-next.done:
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// setKgoRecord sets kr, which must be zero, to r, converted for kgo. Only
// the fields kavari sets are written: assigning a whole kgo.Record copies
// every field, with a write barrier for each pointer while the GC runs.
// The headers are r's, seen as kgo's (asKgoHeaders: no room beyond their
// length): kgo only reads them, and kavari does not change a record's
// headers once it is handed to a producer.
func setKgoRecord(kr *kgo.Record, r *transport.Record) {
	kr.Topic, kr.Key, kr.Value, kr.Timestamp = r.Topic, r.Key, r.Value, r.Time
	if len(r.Headers) > 0 {
		kr.Headers = asKgoHeaders(r.Headers)
	}
}

// classify turns a failure kgo reports for one record into a ProduceError.
// kgo fails an idempotent record only when it knows the record was not
// written (never sent, or answered), so MayHaveBeenWritten is false except
// when the client was closed under it.
func (p *producer) classify(err error) error { return classifyProduce(err, p.autoCreate) }

// classifyProduce is producer.classify for a client that creates unknown
// topics when autoCreate.
func classifyProduce(err error, autoCreate bool) error {
	pe := &transport.ProduceError{Kind: transport.Retriable, Err: fmt.Errorf("kavari: franz producer: %w", err)}
	var ke *kerr.Error
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		pe.Kind, pe.MayHaveBeenWritten = transport.Closed, true
	case transport.HandshakeFailed(err):
		pe.Kind = transport.Permanent // the same certificates fail the same way again
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		pe.Kind = transport.TooLarge
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		if !autoCreate {
			pe.Kind = transport.UnknownTopic
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrRecordRetries):
		// Retriable; kgo gave up on a record it had not written.
	case errors.As(err, &ke):
		if !ke.Retriable {
			pe.Kind = transport.Permanent
		}
	}
	return pe
}

// Close fails what is still buffered and releases every connection.
func (p *producer) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cl.Close()
	return nil
}

// SetWriteTimeoutForTest sets the bound of one produce attempt and returns
// a function restoring the previous one. For tests only (kavari's own, in
// other packages): it is not safe while producers are in use.
func SetWriteTimeoutForTest(d time.Duration) (restore func()) {
	old := writeTimeout
	writeTimeout = d
	return func() { writeTimeout = old }
}
