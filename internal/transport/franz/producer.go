package franz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kavari-go/kavari/internal/transport"
)

// recordTries is kgo's RecordRetries: a record is tried this many times more
// after its first failure before kgo fails it back to kavari, whose retry
// policy then decides. kgo enforces the limit only when it is safe for
// idempotence (the record was never sent, or its response arrived), so an
// in-flight record whose fate is unknown keeps being retried by kgo with the
// same sequence number: no duplicate and no reordering. Produce itself
// returns at ctx's end with MayHaveBeenWritten in that case.
const recordTries = 2

// unknownTopicTries is kgo's UnknownTopicRetries: how many metadata loads may
// say a topic does not exist before its records fail (kgo's default is 4).
// Topics are created before they are used (CreateTopics waits for leaders),
// so one confirmation is enough and the error comes fast.
const unknownTopicTries = 1

// maxRetryBackoff bounds kgo's wait between two tries of a request or of a
// metadata load (kgo's default grows to 5 s). kgo counts a record's metadata
// tries (RecordRetries) only at the end of each wait, so with the default a
// publish to an unreachable cluster took 15 s per attempt once the waits had
// grown, and kavari's own retry policy could not keep its schedule.
const maxRetryBackoff = time.Second

// retryBackoff is kgo's RetryBackoffFn: 100 ms doubling per try, at most
// maxRetryBackoff.
func retryBackoff(tries int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < tries && d < maxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, maxRetryBackoff)
}

// writeTimeout bounds one Produce call when ctx has no earlier deadline, as
// the kafka-go transport's WriteTimeout does: records still in flight then
// fail as retriable with MayHaveBeenWritten (kgo keeps them and settles them
// later; with idempotence it would otherwise wait for their outcome without
// bound, and a publish to a frozen broker would never return). A variable
// for tests.
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
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(partitioner(cfg.Partitioner)),
		kgo.RecordRetries(recordTries),
		kgo.UnknownTopicRetries(unknownTopicTries),
		kgo.RetryBackoffFn(retryBackoff),
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
	return &producer{cl: cl, autoCreate: cfg.AllowAutoCreate}, nil
}

type producer struct {
	cl         *kgo.Client
	autoCreate bool
	closed     atomic.Bool
}

// Produce writes recs and waits for each one's acknowledgement or failure,
// or for ctx's end (at most writeTimeout): a record still in flight then fails with
// MayHaveBeenWritten (kgo keeps it until its outcome is known, so its
// idempotent sequence stays valid).
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
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > writeTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, writeTimeout)
		defer cancel()
	}
	var (
		mu      sync.Mutex
		results = make([]error, len(recs))
		settled = make([]bool, len(recs))
		left    = len(recs)
		done    = make(chan struct{})
	)
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		kr := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Timestamp: r.Time}
		if len(r.Headers) > 0 {
			kr.Headers = make([]kgo.RecordHeader, len(r.Headers))
			for j, h := range r.Headers {
				kr.Headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
			}
		}
		krs[i] = kr
	}
	for i, kr := range krs {
		p.cl.Produce(ctx, kr, func(kr *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if settled[i] {
				return // Produce already returned for this record (ctx ended)
			}
			settled[i] = true
			if err != nil {
				results[i] = p.classify(err)
			} else {
				recs[i].Partition, recs[i].Offset = kr.Partition, kr.Offset
				if recs[i].Time.IsZero() {
					recs[i].Time = kr.Timestamp
				}
			}
			if left--; left == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		for i := range settled {
			if !settled[i] {
				settled[i] = true
				results[i] = &transport.ProduceError{Kind: transport.Retriable, MayHaveBeenWritten: true,
					Err: fmt.Errorf("kavari: franz producer: %w", ctx.Err())}
			}
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range results {
		if err != nil {
			return append([]error(nil), results...)
		}
	}
	return nil
}

// classify turns a failure kgo reports for one record into a ProduceError.
// kgo fails an idempotent record only when it knows the record was not
// written (never sent, or answered), so MayHaveBeenWritten is false except
// when the client was closed under it.
func (p *producer) classify(err error) error {
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
		if !p.autoCreate {
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
