package kafkago

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/transport"
	"github.com/kavari-go/kavari/internal/transport/conntrack"
)

// MessageWriter is what the producer needs of kafka-go's Writer; tests
// inject faults through it (NewProducerWith).
type MessageWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// Producer writes records with a kafka-go Writer configured for publishing:
// acks from all in-sync replicas, Murmur2 or CRC32, MaxAttempts 1 (kavari
// retries), bounded batches. Its connections are tracked, so Close cuts them
// even when a broker does not answer.
//
// A Produce call whose context is marked transport.WithoutLinger goes
// through a second Writer, configured alike but whose batches do not wait
// to fill: a kafka-go Writer waits BatchTimeout for each batch that is not
// full, and a write that holds a partition's commits (a retry-topic move)
// should not wait for records that are not coming. The two Writers share
// the Transport, so its connections.
type Producer struct {
	w         MessageWriter
	now       MessageWriter // for transport.WithoutLinger
	kw        *kafka.Writer
	tr        *kafka.Transport
	conns     *conntrack.Set
	closeOnce sync.Once
}

// NewProducer returns a Producer for cfg. It does not contact the brokers.
func (Adapter) NewProducer(cfg transport.Config) (transport.Producer, error) {
	conns := newConnSet()
	tr, err := newTransport(cfg, conns)
	if err != nil {
		return nil, err
	}
	p := &Producer{tr: tr, conns: conns}
	writer := func(batchTimeout time.Duration) *kafka.Writer {
		return &kafka.Writer{
			Addr:                   kafka.TCP(cfg.Brokers...),
			Balancer:               balancer(cfg.Partitioner),
			RequiredAcks:           kafka.RequireAll,
			MaxAttempts:            1, // kavari retries, per message, with its own policy
			BatchTimeout:           batchTimeout,
			BatchSize:              cfg.BatchSize,
			BatchBytes:             cfg.BatchBytes,
			WriteTimeout:           10 * time.Second,
			ReadTimeout:            10 * time.Second,
			AllowAutoTopicCreation: cfg.AllowAutoCreate,
			Transport:              tr,
			Completion:             complete,
		}
	}
	p.kw = writer(cfg.BatchTimeout)
	p.now = writer(time.Nanosecond) // kafka-go reads 0 as its default, a second
	p.w = p.kw
	return p, nil
}

// NewProducerWith returns a Producer writing through w instead of a Writer,
// for tests that inject faults; it classifies w's errors as the real one.
func NewProducerWith(w MessageWriter) *Producer {
	conns := newConnSet()
	return &Producer{w: w, now: w, conns: conns, tr: &kafka.Transport{Dial: conns.Dial}}
}

// Writer returns the kafka-go Writer (nil for NewProducerWith), for tests
// that check its configuration.
func (p *Producer) Writer() *kafka.Writer { return p.kw }

// complete is the Writer's Completion: it reports the partition and offset
// of each acknowledged record to the transport.Record it was written for.
func complete(msgs []kafka.Message, err error) {
	if err != nil {
		return
	}
	for i := range msgs {
		if r, ok := msgs[i].WriterData.(*transport.Record); ok {
			r.Partition, r.Offset = int32(msgs[i].Partition), msgs[i].Offset
		}
	}
}

// Produce writes recs and classifies each failure; see transport.Producer.
func (p *Producer) Produce(ctx context.Context, recs []*transport.Record) []error {
	msgs := make([]kafka.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: toHeaders(r.Headers), Time: r.Time, WriterData: r}
	}
	if err := ctx.Err(); err != nil {
		// kafka-go would queue the batch before looking at ctx: an ended
		// context sends nothing.
		return p.all(len(recs), &transport.ProduceError{Kind: transport.Permanent, Err: err})
	}
	w := p.w
	if transport.NoLinger(ctx) {
		w = p.now
	}
	werr := w.WriteMessages(ctx, msgs...)
	if werr == nil {
		return nil
	}
	var we kafka.WriteErrors
	if !errors.As(werr, &we) || len(we) != len(recs) {
		// One error for the whole call (a metadata lookup, a closed writer,
		// the context): it applies to every record.
		return p.all(len(recs), classify(ctx, werr))
	}
	errs := make([]error, len(recs))
	for i, e := range we {
		if e != nil {
			errs[i] = classify(ctx, e)
		}
	}
	return errs
}

func (p *Producer) all(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// Close closes the writer and cuts every connection the producer opened.
// It may be called more than once, and concurrently with Produce (which then
// fails).
func (p *Producer) Close() error {
	// Cut first: a Writer closing against a broker that does not answer
	// would wait out its timeouts.
	p.conns.Cut(true)
	p.closeOnce.Do(func() {
		_ = p.w.Close()
		if p.now != p.w {
			_ = p.now.Close()
		}
	})
	// The Writer does not close a Transport it was given: its connection
	// pools (a metadata poller and broker connections each) would outlive
	// every Stop.
	p.tr.CloseIdleConnections()
	return nil
}

// writeTimeout is a timeout of kafka-go's own request deadline (the Writer's
// WriteTimeout), not of the caller's context: the broker did not answer in
// time. It is retriable, and the write may have happened.
type writeTimeout struct{ err error }

func (e *writeTimeout) Error() string {
	return "kavari: no answer from the broker in time: " + e.err.Error()
}

func (e *writeTimeout) Unwrap() error { return e.err }

// classify turns a kafka-go write error into a *transport.ProduceError.
// kafka-go's request timeouts and the end of ctx both surface as
// context.DeadlineExceeded: only the first is retriable.
func classify(ctx context.Context, err error) *transport.ProduceError {
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return &transport.ProduceError{Kind: transport.Retriable, MayHaveBeenWritten: true, Err: &writeTimeout{err: err}}
	}
	pe := &transport.ProduceError{Err: err, MayHaveBeenWritten: mayHaveBeenWritten(err)}
	var tooLarge kafka.MessageTooLargeError
	switch {
	case errors.As(err, &tooLarge) || errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge):
		pe.Kind = transport.TooLarge
	case errors.Is(err, kafka.UnknownTopicOrPartition):
		pe.Kind = transport.UnknownTopic
	case errors.Is(err, io.ErrClosedPipe):
		pe.Kind = transport.Closed
	case retriable(err):
		pe.Kind = transport.Retriable
	default:
		pe.Kind = transport.Permanent
	}
	return pe
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
	if errors.As(err, &tooLarge) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNREFUSED) || transport.HandshakeFailed(err) {
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

// retriable reports whether a write error may succeed if retried. Leader,
// metadata, coordinator, network and timeout errors are retriable; size,
// authorization and invalid-request errors are permanent, and so is the end
// of the caller's context.
func retriable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller's context ended
	}
	if transport.HandshakeFailed(err) {
		return false // the same certificates fail the same way again
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
	// Network failures, and unknown ones (a broker restarting mid-request, a
	// metadata gap), are retried: kavari's policy bounds them.
	return true
}
